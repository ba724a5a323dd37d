"""Beyond one machine: TF_CONFIG of a scheduler's worker (scripts/tf_config.py) and the example
Slurm / Kubernetes job files under docs/cluster/."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from deep_representation_one_class.training import distribute

REPO = str(pathlib.Path(__file__).resolve().parents[3])
SCRIPT = os.path.join(REPO, "scripts", "tf_config.py")
CLUSTER = os.path.join(REPO, "docs", "cluster")
_INDEX_VARS = ("SLURM_PROCID", "JOB_COMPLETION_INDEX")


def tf_config(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in _INDEX_VARS}
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, env={**base, **env}
    )


@pytest.mark.parametrize(
    ("args", "env", "index"),
    [
        (["--hosts", "node1\nnode2\nnode3"], {"SLURM_PROCID": "2"}, 2),  # scontrol's output
        (["--hosts", "droc-0.droc droc-1.droc"], {"JOB_COMPLETION_INDEX": "1"}, 1),
        (["--hosts", "a:2222,b:2222", "--index", "0"], {"SLURM_PROCID": "1"}, 0),
    ],
)
def test_tf_config_of_a_scheduler_worker(args, env, index):
    proc = tf_config(*args, **env)
    assert proc.returncode == 0, proc.stderr
    conf = distribute.check_tf_config(proc.stdout)  # what --strategy=multi_worker accepts
    assert conf["task"] == {"type": "worker", "index": index}
    workers = conf["cluster"]["worker"]
    assert len(workers) in (2, 3) and all(re.fullmatch(r"[\w.-]+:\d+", w) for w in workers)
    if "--port" not in args and ":" not in args[1]:
        assert all(w.endswith(":12345") for w in workers)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--hosts", "a b"], {}, "no worker index"),
        (["--hosts", "a b"], {"SLURM_PROCID": "2"}, "worker index 2 (from SLURM_PROCID)"),
        (["--hosts", "a b"], {"JOB_COMPLETION_INDEX": "x"}, "must be a non-negative integer"),
        (["--hosts", "a a"], {"SLURM_PROCID": "0"}, "lists a worker twice"),
        (["--hosts", " "], {"SLURM_PROCID": "0"}, "--hosts is empty"),
    ],
)
def test_tf_config_errors(args, env, message):
    proc = tf_config(*args, **env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("tf_config.py: ") and message in proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_example_job_files():
    for name in ("slurm_sweep.sbatch", "slurm_multi_worker.sbatch"):
        assert subprocess.run(["bash", "-n", os.path.join(CLUSTER, name)]).returncode == 0
    with open(os.path.join(CLUSTER, "slurm_sweep.sbatch")) as f:
        assert "scripts/sweep.sh --shard=auto " in f.read()
    with open(os.path.join(CLUSTER, "k8s_sweep_job.yaml")) as f:
        text = f.read()
    # The shard count must equal the Job's completions, or some shards never run.
    completions = re.search(r"completions: (\d+)", text).group(1)
    assert f'"--shard=auto/{completions}"' in text and "completionMode: Indexed" in text
