"""Tests of scripts/sweep.sh: dry runs, skip/resume, sharding, failures (with a fake trainer)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = str(pathlib.Path(__file__).resolve().parents[2])
SWEEP = os.path.join(REPO, "scripts", "sweep.sh")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# Stands in for `python train_and_eval_loop.py ...`: records its argv, fails for the category in
# $FAKE_FAIL_CATEGORY, writes nothing for $FAKE_NO_SUMMARY, else writes summary.json.
FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["-m"]:  # a module of the package (the catalog's category lists): the real one
    os.execv(sys.executable, [sys.executable, *args])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
flags = dict(a[2:].split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
if flags["category"] == os.environ.get("FAKE_FAIL_CATEGORY"):
    print("boom", file=sys.stderr)
    sys.exit(3)
os.makedirs(flags["model_dir"], exist_ok=True)
if not os.environ.get("FAKE_NO_SUMMARY"):
    with open(os.path.join(flags["model_dir"], "summary.json"), "w") as f:
        summary = {{"metrics": {{"pool.kde": 90.0}}, "config": flags, "run": {{"complete": True}}}}
        json.dump(summary, f)
"""


@pytest.fixture
def fake(tmp_path):
    """Returns a function running sweep.sh with the fake python; it returns (proc, calls)."""
    python = tmp_path / "fake_python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    trainer = tmp_path / "trainer.py"
    trainer.write_text("")
    log = tmp_path / "calls.jsonl"

    def run(*args, env=None):
        log.write_text("")
        cmd = ["bash", SWEEP, "--python", str(python), "--trainer", str(trainer), *args]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "FAKE_LOG": str(log), **(env or {})},
            timeout=60,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return proc, calls

    return run


# Job-array variables of the schedulers --shard=auto reads; the tests set them explicitly.
ARRAY_VARS = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
)


def sweep(*args, env=None):
    base = {k: v for k, v in os.environ.items() if k not in ARRAY_VARS}
    return subprocess.run(
        ["bash", SWEEP, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def flag_values(words, name):
    return [w.split("=", 1)[1] for w in words if w.startswith(f"--{name}=")]


def model_dirs(stdout):
    return [
        flag_values(line.split(), "model_dir")[0] for line in stdout.splitlines() if "--" in line
    ]


def test_syntax():
    subprocess.run(["bash", "-n", SWEEP], check=True)


def test_dry_run_commands(tmp_path):
    out = tmp_path / "runs"
    # Lists may be space- or comma-separated.
    options = "--methods rotation,contrastive_da --datasets fmnistood --categories 0,1 --seeds 1,2"
    proc = sweep(
        "--out", str(out), *options.split(), "--dry_run", "--", "--num_epoch=3", "--root=d"
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines() if "--model_dir=" in line]
    assert len(lines) == 8
    assert not out.exists()  # a dry run creates nothing
    rotation, da = lines[0], lines[-1]
    assert flag_values(rotation, "method") == ["rotation"]
    assert flag_values(rotation, "model_dir") == [f"{out}/rotation/fmnistood/c0/s1"]
    assert flag_values(rotation, "head_dims") == [",".join(["512"] * 8)]
    assert flag_values(rotation, "latent_dim") == ["4"]
    assert flag_values(rotation, "batch_size") == ["64"]
    assert flag_values(rotation, "aug_list_for_test") == ["x,+rotate90,+rotate180,+rotate270"]
    assert flag_values(da, "method") == ["contrastive"]
    assert flag_values(da, "distaug_type") == ["rot"]
    assert flag_values(da, "head_dims") == [",".join(["512"] * 8 + ["128"])]
    assert flag_values(da, "temperature") == ["0.2"]
    assert flag_values(da, "batch_size") == ["32"]
    assert flag_values(da, "model_dir") == [f"{out}/contrastive_da/fmnistood/c1/s2"]
    # The extra flags come last, so they override the paper's (absl keeps the last value).
    assert flag_values(da, "num_epoch") == ["2048", "3"]
    assert da[-2:] == ["--num_epoch=3", "--root=d"]
    assert "would run 8, skipped 0" in proc.stdout

    options = "--methods contrastive --datasets cifar10ood --categories 5 --seeds 1"
    bare = sweep("--out", str(out), *options.split(), "--dry_run", "--no_paper_flags")
    (line,) = [line.split() for line in bare.stdout.splitlines() if "--model_dir=" in line]
    assert line[2:] == [
        "--method=contrastive",
        "--distaug_type=1",
        "--dataset=cifar10ood",
        "--category=5",
        "--seed=1",
        f"--model_dir={out}/contrastive/cifar10ood/c5/s1",
    ]


@pytest.mark.parametrize(
    ("dataset", "categories"),
    [
        ("cifar10ood", [str(i) for i in range(10)]),
        ("cifar20ood", [str(i) for i in range(20)]),
        ("cifar100ood", [str(i) for i in range(100)]),
        ("dogvscatood", ["0", "1"]),
        ("celeba", ["Eyeglasses"]),
    ],
)
def test_all_categories(tmp_path, dataset, categories):
    options = f"--methods contrastive --datasets {dataset} --categories all --seeds 1 --dry_run"
    proc = sweep("--out", str(tmp_path), *options.split())
    assert proc.returncode == 0, proc.stderr
    got = [d.split("/")[-2] for d in model_dirs(proc.stdout)]
    assert got == [f"c{c}" for c in categories]
    shape = flag_values(proc.stdout.splitlines()[0].split(), "input_shape")
    assert shape == (["64,64,3"] if dataset in ("dogvscatood", "celeba") else [])


def test_shards_partition_the_combinations(tmp_path):
    options = "--methods rotation,contrastive --datasets dogvscatood,fmnistood --seeds 1,2"
    common = ["--out", str(tmp_path), *options.split(), "--categories", "all", "--dry_run"]
    everything = model_dirs(sweep(*common).stdout)
    assert len(everything) == 2 * (2 + 10) * 2
    shards = [model_dirs(sweep(*common, "--shard", f"{i}/3").stdout) for i in range(3)]
    union = [d for shard in shards for d in shard]
    assert sorted(union) == sorted(everything)  # union = all, and no duplicates
    for i, shard in enumerate(shards):
        assert shard == everything[i::3]  # index mod n == i, in the sweep's fixed order


@pytest.mark.parametrize(
    ("env", "shard", "expected"),
    [
        # Slurm `--array=0-2`: ids 0..2, count 3 from SLURM_ARRAY_TASK_COUNT.
        (
            {
                "SLURM_ARRAY_TASK_ID": "2",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "auto",
            2,
        ),
        # Slurm `--array=1-3`: ids start at 1.
        (
            {
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "auto",
            0,
        ),
        # Slurm `--array=0-4:2`: ids 0, 2, 4.
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "auto",
            2,
        ),
        # Kubernetes Indexed Job with completions: 3.
        ({"JOB_COMPLETION_INDEX": "1"}, "auto/3", 1),
    ],
)
def test_shard_auto_reads_the_job_array_index(tmp_path, env, shard, expected):
    options = "--methods rotation,contrastive --datasets fmnistood --seeds 1,2"
    common = ["--out", str(tmp_path), *options.split(), "--dry_run"]
    explicit = sweep(*common, "--shard", f"{expected}/3")
    auto = sweep(*common, "--shard", shard, env=env)
    assert auto.returncode == 0, auto.stderr
    assert model_dirs(auto.stdout) == model_dirs(explicit.stdout) != []
    assert f"shard {expected}/3 (from " in auto.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "needs SLURM_ARRAY_TASK_ID (Slurm job array) or JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "1"}, "pass --shard=auto/N"),
        ({"JOB_COMPLETION_INDEX": "x"}, "must be an integer"),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3"}, "needs 0 <= i < n"),
    ],
)
def test_shard_auto_errors(env, message):
    args = "--out x --methods rotation --datasets fmnistood --seeds 1 --shard auto --dry_run"
    proc = sweep(*args.split(), env=env)
    assert proc.returncode == 2
    assert "sweep.sh: " in proc.stderr and message in proc.stderr


def test_runs_then_skips_finished_and_resumes_unfinished(tmp_path, fake):
    out = tmp_path / "runs"
    options = "--methods contrastive --datasets dogvscatood --categories all --seeds"
    args = ("--out", str(out), *options.split(), "1 2")
    done = out / "contrastive" / "dogvscatood" / "c0" / "s1"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    unfinished = out / "contrastive" / "dogvscatood" / "c1" / "s1"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text("{}")

    proc, calls = fake(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"skip {done}" in proc.stdout
    called = sorted(flag_values(c, "model_dir")[0] for c in calls)
    expected = [out / "contrastive" / "dogvscatood" / d for d in ("c0/s2", "c1/s1", "c1/s2")]
    assert called == [str(d) for d in expected]
    assert all(c[0].endswith("trainer.py") for c in calls)
    assert (unfinished / "summary.json").exists()
    assert len(list((out / "logs").iterdir())) == 3
    assert "ran 3, skipped 1, failed 0" in proc.stdout

    again, calls = fake(*args)
    assert again.returncode == 0
    assert calls == []
    assert again.stdout.count("skip ") == 4


def test_failures_are_reported_and_the_sweep_continues(tmp_path, fake):
    options = "--methods rotation --datasets cifar10ood --seeds 1 --categories"
    args = ("--out", str(tmp_path / "runs"), *options.split(), "0 1 2")
    proc, calls = fake(*args, env={"FAKE_FAIL_CATEGORY": "1"})
    assert proc.returncode == 1
    assert len(calls) == 3  # the runs after the failing one still ran
    assert "FAILED (exit 3)" in proc.stderr
    assert "rotation/cifar10ood/c1/s1 (exit 3)" in proc.stderr
    assert "ran 3, skipped 0, failed 1" in proc.stdout
    assert (tmp_path / "runs" / "rotation" / "cifar10ood" / "c2" / "s1" / "summary.json").exists()

    quiet, _ = fake(*args, env={"FAKE_NO_SUMMARY": "1"})  # exit 0 without a summary is a failure
    assert quiet.returncode == 1
    assert "wrote no summary.json" in quiet.stderr


@pytest.mark.parametrize(
    "args",
    [
        "--methods rotation --datasets cifar10ood --seeds 1",  # no --out
        "--out x --datasets cifar10ood --seeds 1",  # no --methods
        "--out x --methods rotation --datasets cifar10ood --seeds a",
        "--out x --methods rotation --datasets cifar10ood --seeds 1 --shard 2/2",
        "--out x --methods rotation --datasets mnist --seeds 1",  # no class list for "all"
        "--out x --methods rotation --datasets cifar10ood --seeds 1 --bogus 1",
        "--out x --methods rotation --datasets cifar10ood --seeds",  # option without a value
        "--out x stray",
    ],
)
def test_usage_errors(args):
    proc = sweep(*args.split(), "--dry_run")
    assert proc.returncode == 2
    assert proc.stderr.startswith("sweep.sh: ")
