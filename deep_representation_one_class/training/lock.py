"""The run folder's lock file: one process trains or evaluates a run at a time.

``.droc_lock`` holds the owner's pid, host, kernel start time and since-when. A second command
on the same folder is refused at once, naming the holder; a lock left behind by a killed
process (same host, pid gone or reused by another process) is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any

from deep_representation_one_class.errors import RunError

LOCK = ".droc_lock"


class Lock:
    """The run folder's lock file: one process trains or evaluates a run at a time."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK)
        self.held = False

    @staticmethod
    def _me() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def _holder(self) -> dict[str, Any] | None:
        """The live holder's record, or None (no lock, or a stale one)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                rec = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable or half-written: treat as stale
        if not isinstance(rec, dict):
            return None
        if rec.get("host") != socket.gethostname():
            return rec  # cannot tell whether a process on another machine is alive
        pid = rec.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return None
        if rec.get("start") is not None and rec.get("start") != _process_start(pid):
            return None  # the pid was reused by another process
        return rec

    def check(self) -> None:
        """Raises RunError when another live process holds the lock."""
        rec = self._holder()
        if rec is not None and rec.get("pid") != os.getpid():
            raise RunError(
                f"{os.path.dirname(self.path)} is in use by process {rec.get('pid')} on "
                f"{rec.get('host')} since {rec.get('since')}; wait for it to finish or stop it "
                f"(if that process is gone, delete {self.path})"
            )

    def acquire(self) -> None:
        """Takes the lock (atomically), replacing a stale one; RunError when it is held."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.check()
                # Stale: remove it and try again (another process may win the race).
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._me(), f)
            self.held = True
            return
        self.check()
        raise RunError(f"cannot take the lock {self.path}; try again")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # Field 22; the command name (field 2) may contain spaces, so split after ')'.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
