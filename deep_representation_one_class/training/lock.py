"""The run folder's lock file: one process trains or evaluates a run at a time.

``.droc_lock`` holds the owner's pid, host, kernel start time and since-when. A second command
on the same folder is refused at once, naming the holder; a lock left behind by a killed
process (same host, pid gone or reused by another process) is taken over.

Atomicity: the record is written to a private temporary file first and the lock name appears
with ``os.link`` (fails if the name exists), so a reader never sees an empty or half-written
lock. Checking a lock and taking a stale one over is a read-then-replace, so it runs under an
exclusive ``fcntl.flock`` on the run folder itself: of several processes that start at the
same instant exactly one holds the lock, with or without a stale lock present. A file
system without ``flock`` on folders (some network mounts) still gets the atomic ``link``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
from typing import Any

from deep_representation_one_class.errors import RunError
from deep_representation_one_class.utils import run_folder

LOCK = run_folder.LOCK
# A lock file younger than this that cannot be read is another version's lock being written;
# older, it is the debris of a crash and is taken over.
_UNREADABLE_GRACE_S = 10.0


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
            # Never half-written by this version (it links a complete file into place); an
            # older version writes in place, so a fresh unreadable lock is still being written.
            try:
                age = time.time() - os.stat(self.path).st_mtime
            except OSError:
                return None
            if age < _UNREADABLE_GRACE_S:
                return {"pid": "unknown", "host": "this machine", "since": "just now"}
            return None
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
        folder = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=f"{LOCK}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._me(), f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            with _folder_mutex(folder):
                for _ in range(2):
                    try:
                        os.link(tmp, self.path)  # the name appears with the whole record
                    except FileExistsError:
                        self.check()  # a live holder: RunError naming it
                        # Stale (its process is gone): under the mutex nobody else can be
                        # replacing it now, so removing it cannot remove a fresh lock.
                        with contextlib.suppress(FileNotFoundError):
                            os.remove(self.path)
                        continue
                    except OSError as e:
                        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                            raise
                        _create_exclusive(self.path, tmp)  # no hard links on this mount
                    self.held = True
                    return
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        self.check()
        raise RunError(f"cannot take the lock {self.path}; try again")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self.held = False


@contextlib.contextmanager
def _folder_mutex(folder: str):
    """An exclusive ``flock`` on the folder for the check-and-take of the lock (held for
    microseconds; released by the kernel if the process dies). Where folders cannot be
    flocked it is a no-op and the atomic ``link`` alone decides."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _create_exclusive(path: str, source: str) -> None:
    """``O_CREAT | O_EXCL`` creation of ``path`` holding ``source``'s bytes, for mounts without
    hard links (the record is written right after the name appears; readers give a fresh
    unreadable lock ``_UNREADABLE_GRACE_S``)."""
    with open(source, "rb") as f:
        data = f.read()
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


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
