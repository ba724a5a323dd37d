"""The run-folder lock under simultaneous starts: exactly one holder, with or without a stale
lock left by a killed process, and a lock file never seen empty or half-written.

Six worker processes are started once; in every trial they block on opening the same named
pipe, and the test opening its write end releases all of them at the same instant, so that
their ``Lock.acquire`` calls race for real. Each worker imports only the lock module (no
TensorFlow), so the whole test takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _reliability as rel
import pytest

from deep_representation_one_class.errors import RunError
from deep_representation_one_class.training.lock import LOCK, Lock

WORKERS = 6
TRIALS = 12  # per kind: no lock, a stale lock

_WORKER = r"""
import os, sys, time
from deep_representation_one_class.errors import RunError
from deep_representation_one_class.training.lock import Lock
base, trials, me = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for t in range(trials):
    trial = os.path.join(base, f"t{t}")
    open(os.path.join(trial, f"ready.{me}"), "w").close()
    os.close(os.open(os.path.join(trial, "go"), os.O_RDONLY))  # blocks until the go signal
    lock = Lock(os.path.join(trial, "run"))
    try:
        lock.acquire()
        result = "held"
    except RunError as e:
        result = "refused " + str(e)
    with open(os.path.join(trial, f"tmp.{me}"), "w") as f:
        f.write(result)
    os.replace(os.path.join(trial, f"tmp.{me}"), os.path.join(trial, f"result.{me}"))
    while not os.path.exists(os.path.join(trial, "done")):
        time.sleep(0.002)
    lock.release()
"""


def _wait_for(paths, timeout=60.0):
    deadline = time.time() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.time() > deadline:
            raise AssertionError(f"workers did not reach {paths[0]} in time")
        time.sleep(0.002)


def test_simultaneous_starts_give_exactly_one_holder(tmp_path):
    stale = rel.live_process()
    stale.kill()
    stale.wait()
    for t in range(2 * TRIALS):
        trial = tmp_path / f"t{t}"
        (trial / "run").mkdir(parents=True)
        os.mkfifo(trial / "go")
        if t % 2:  # every other trial: the lock of a SIGKILLed run is already there
            (trial / "run" / LOCK).write_text(rel.lock_record(stale.pid))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), str(2 * TRIALS), str(w)],
            cwd=rel.REPO,
            env=rel.env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    holders = []
    try:
        for t in range(2 * TRIALS):
            trial = tmp_path / f"t{t}"
            _wait_for([trial / f"ready.{w}" for w in range(WORKERS)])
            time.sleep(0.05)  # every worker is blocked in open() by now
            fd = os.open(trial / "go", os.O_WRONLY)  # releases all of them at once
            _wait_for([trial / f"result.{w}" for w in range(WORKERS)])
            os.close(fd)
            results = [(trial / f"result.{w}").read_text() for w in range(WORKERS)]
            held = [w for w, r in enumerate(results) if r == "held"]
            holders.append(len(held))
            assert len(held) == 1, (t, results)
            record = json.loads((trial / "run" / LOCK).read_text())
            assert record["pid"] == procs[held[0]].pid, (record, results)
            refused = [r for r in results if r != "held"]
            assert all(" is in use by process " in r for r in refused), refused
            (trial / "done").touch()
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            p.kill()
    assert holders == [1] * (2 * TRIALS), holders
    # Every holder released its lock and left nothing behind (no temporary record files).
    for t in range(2 * TRIALS):
        assert os.listdir(tmp_path / f"t{t}" / "run") == []


def test_a_fresh_unreadable_lock_is_not_taken_over(tmp_path):
    """An empty lock file just created by another (older) writer is not removed; one left
    long ago by a crash is taken over."""
    (tmp_path / LOCK).write_text("")
    before = rel.snapshot(tmp_path)
    with pytest.raises(RunError, match="is in use by process"):
        Lock(str(tmp_path)).acquire()
    assert rel.snapshot(tmp_path) == before
    old = time.time() - 3600
    os.utime(tmp_path / LOCK, (old, old))
    lock = Lock(str(tmp_path))
    lock.acquire()
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    assert sorted(os.listdir(tmp_path)) == []


def test_the_lock_file_appears_complete(tmp_path, monkeypatch):
    """The name appears by ``link`` of a complete temporary file: at the instant it exists it
    already holds the whole record."""
    seen = []
    real_link = os.link

    def spy(src, dst, *a, **k):
        seen.append(Path(src).read_text())
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", spy)
    lock = Lock(str(tmp_path))
    lock.acquire()
    assert json.loads(seen[0])["pid"] == os.getpid()
    lock.release()
