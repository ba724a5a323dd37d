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
    "--noreport",  # tests/test_report.py covers report.html
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
