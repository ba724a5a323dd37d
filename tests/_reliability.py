"""Helpers shared by the reliability tests: tiny command lines, subprocess runs, checkpoints.

Every run here uses the synthetic ``fake`` dataset (64 training images per class) and a
ResNet-10 at width 1/16, so a whole training run takes seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "train_and_eval_loop.py")

# 64 inliers / batch 8 = 8 steps per epoch.
TINY = [
    "--dataset=fake",
    "--category=0",
    "--method=contrastive",
    "--net_type=resnet10",
    "--net_width=0.0625",
    "--head_dims=16,8",
    "--batch_size=8",
    "--strategy=default",
    "--eval_batch_size=64",
    "--classifiers=auc,kde",
    "--precision=float32",
    "--noreport",  # tests/unit/reports/test_report.py covers report.html
]


def env(**extra: str) -> dict[str, str]:
    """The subprocess environment: quiet TensorFlow, the repository importable."""
    out = dict(os.environ)
    out["TF_CPP_MIN_LOG_LEVEL"] = "2"
    out["PYTHONPATH"] = REPO + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("TF_CONFIG", None)
    out.update(extra)
    return out


def command(*flags: str, script: str = SCRIPT) -> list[str]:
    return [sys.executable, script, *TINY, *flags]


def start(*flags: str, script: str = SCRIPT, **env_extra: str) -> subprocess.Popen:
    """Starts a run in the background; its output goes to pipes (read them with communicate)."""
    return subprocess.Popen(
        command(*flags, script=script),
        cwd=REPO,
        env=env(**env_extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*flags: str, timeout: float = 240, **env_extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*flags),
        cwd=REPO,
        env=env(**env_extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def latest_step(run_dir: str) -> int | None:
    """Step of the newest checkpoint recorded in ``run_dir/checkpoints`` (None if none)."""
    state = os.path.join(run_dir, "checkpoints", "checkpoint")
    try:
        with open(state) as f:
            first = f.readline()
    except OSError:
        return None
    if "ckpt-" not in first:
        return None
    return int(first.rsplit("ckpt-", 1)[1].strip().strip('"'))


def wait_for_checkpoint(
    proc: subprocess.Popen, run_dir: str, min_step: int, timeout: float = 240
) -> int:
    """Polls until a checkpoint of step >= ``min_step`` is recorded; returns its step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        step = latest_step(run_dir)
        if step is not None and step >= min_step:
            return step
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(
                f"run ended (code {proc.returncode}) before step {min_step}:\n{err}"
            )
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint of step >= {min_step} within {timeout} s")


def load_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Every saved tensor of a checkpoint (model, optimizer slots, step), by key."""
    import tensorflow as tf

    if os.path.isdir(path):
        path = tf.train.latest_checkpoint(os.path.join(path, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if "save_counter" not in key and "CHECKPOINTABLE_OBJECT_GRAPH" not in key
    }


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ----------------------------------------------------------------------------- bad-input matrix
def snapshot(root) -> dict[str, str]:
    """Every entry under ``root`` (symlinks not followed, pipes never opened) -> its content.

    Regular files map to their SHA-256, folders to 'dir', symlinks to their target, other
    entries to their kind, so that two snapshots are equal only when nothing was created,
    deleted or rewritten. Names are kept as bytes-faithful strings (surrogateescape).
    """
    import hashlib
    import stat as stat_lib

    out: dict[str, str] = {}
    root = os.fspath(root)
    if not os.path.lexists(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat_lib.S_ISLNK(st.st_mode):
                out[rel] = "link->" + os.readlink(path)
            elif stat_lib.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat_lib.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[rel] = f"special:{stat_lib.S_IFMT(st.st_mode)}"
    return out


class FifoGuard:
    """Unblocks a reader stuck on a named pipe after ``timeout`` seconds (a regression would
    otherwise hang the suite): opening the write end and closing it gives the reader EOF.
    ``hung`` tells whether that was needed."""

    def __init__(self, fifos, timeout: float = 60.0):
        import threading

        self.fifos = [os.fspath(p) for p in fifos]
        self.hung = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(timeout,), daemon=True)

    def _watch(self, timeout: float) -> None:
        if self._done.wait(timeout):
            return
        while not self._done.is_set():
            for path in self.fifos:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue  # nobody is reading it
                self.hung = True
                os.close(fd)
            time.sleep(0.2)

    def __enter__(self) -> FifoGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(5)


def save_png(path, size=(12, 12), seed=0, mode="RGB") -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels if channels == 3 else pixels[..., 0])
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    img.save(path)


def image_folder(root) -> str:
    """root/train/good (4), root/test/good (2), root/test/bad (2): a valid folder dataset."""
    for sub, n in (("train/good", 4), ("test/good", 2), ("test/bad", 2)):
        for i in range(n):
            save_png(os.path.join(root, sub, f"{i}.png"), seed=hash((sub, i)) % 1000)
    return os.fspath(root)


def huge_png(path, side: int = 12000) -> None:
    """A 16-bit grayscale PNG of side x side zeros: a few hundred KB on disk, 144 MP decoded."""
    import struct
    import zlib

    row = b"\x00" + b"\x00\x00" * side
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data))
        f.write(chunk(b"IEND", b""))


def cifar_batches(root, data=None, labels=None, overrides=None) -> str:
    """The six CIFAR-10 pickles in ``root`` (10 images each unless ``data``/``labels``);
    ``overrides`` maps a file name to the raw bytes it should hold instead."""
    import pickle

    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(10, 3072), dtype=np.uint8) if data is None else data
        y = list(range(10)) if labels is None else labels
        raw = pickle.dumps({b"data": x, b"labels": y}, protocol=2)
        with open(os.path.join(root, name), "wb") as f:
            f.write((overrides or {}).get(name, raw))
    return os.fspath(root)


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file (uint8) of ``arr``."""
    import struct

    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def fmnist_files(root, overrides=None) -> str:
    """The four gzipped Fashion-MNIST IDX files (30 train / 20 test images, labels 0..9);
    ``overrides`` maps a file name to the raw (already compressed) bytes it should hold."""
    import gzip

    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(30) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(20) % 10,
    }
    for name, arr in files.items():
        raw = (overrides or {}).get(name)
        with open(os.path.join(root, name), "wb") as f:
            f.write(raw if raw is not None else gzip.compress(idx_bytes(arr)))
    return os.fspath(root)


def live_process() -> subprocess.Popen:
    """A process that stays alive (holds a lock in the lock tests); kill it when done."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def lock_record(pid: int, host: str | None = None) -> str:
    """The JSON a run-folder lock holds for process ``pid``."""
    start = None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        pass
    rec = {"pid": pid, "host": host or socket.gethostname(), "start": start, "since": "now"}
    return json.dumps(rec)
