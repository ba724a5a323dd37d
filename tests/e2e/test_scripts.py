"""Tests of the reproduction scripts (run_*.sh, run_baselines.sh, cpu_preset.sh, gpu_check.sh,
precision_parity.sh):
syntax, the trainer commands they build (DRY_RUN and a fake python that records its argv), and
agreement of the paper settings with scripts/sweep.sh."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = str(pathlib.Path(__file__).resolve().parents[2])
SCRIPTS = os.path.join(REPO, "scripts")
RUN_SCRIPTS = ("run_rotation.sh", "run_contrastive.sh", "run_contrastive_da.sh")
OWN_SCRIPTS = (
    *RUN_SCRIPTS,
    "run_baselines.sh",
    "cpu_preset.sh",
    "gpu_check.sh",
    "precision_parity.sh",
    "select_recipes.sh",
)

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# Stands in for python: records `train_and_eval_loop.py` calls and writes a summary.json from
# their flags (failing for $FAKE_FAIL_METHOD); GPU queries answer 0; anything else (python -m
# ..., python - <<script) runs the real interpreter.
FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
if not args or not args[0].endswith("train_and_eval_loop.py"):
    if args[:1] == ["-c"] and "list_physical_devices" in args[1]:
        print(0)
        sys.exit(0)
    os.execv(sys.executable, [sys.executable, *args])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
config = {{"distaug_type": "1", "precision": "float32", "jit_compile": False,
          "net_type": "resnet18", "net_width": 0.25, "batch_size": 32, "num_epoch": 8}}
for a in args[1:]:
    key, eq, value = a[2:].partition("=")
    for cast in (int, float):
        try:
            value = cast(value)
            break
        except ValueError:
            pass
    config[key] = value if eq else True
if config.get("method") == os.environ.get("FAKE_FAIL_METHOD"):
    sys.exit(3)
os.makedirs(config["model_dir"], exist_ok=True)
summary = {{
    "metrics": {{"pool.kde": 96.0, "pool.gde": 95.5, "pool.kocsvm": 95.0, "dscore.auc": 90.0}},
    "config": config,
    "run": {{"complete": True, "train_seconds": 300.0, "eval_seconds": 60.0, "steps_per_epoch": 4,
            "total_steps": 8, "num_replicas": 1}},
}}
with open(os.path.join(config["model_dir"], "summary.json"), "w") as f:
    json.dump(summary, f)
"""


@pytest.fixture
def fake_python(tmp_path):
    """Returns (env, read_calls): env runs scripts with the fake python; calls are argv lists."""
    python = tmp_path / "fake_python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.write_text("")
    env = {**os.environ, "PYTHON": str(python), "FAKE_LOG": str(log)}
    env.pop("DRY_RUN", None)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()]

    return env, calls


def run(script, *args, env=None, cwd=REPO, timeout=60):
    return subprocess.run(
        ["bash", os.path.join(SCRIPTS, script), *args],
        capture_output=True,
        text=True,
        env=env or os.environ,
        cwd=cwd,
        timeout=timeout,
    )


def dry(script, *args, extra_env=None):
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": "python", **(extra_env or {})}
    proc = run(script, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def flags_of(argv):
    """Flags after the trainer path as a dict; the last value wins, as absl does."""
    start = next(i for i, a in enumerate(argv) if a.endswith("train_and_eval_loop.py")) + 1
    out = {}
    for a in argv[start:]:
        assert a.startswith("--"), a
        key, eq, value = a[2:].partition("=")
        out[key] = value if eq else True
    return out


@pytest.mark.parametrize("script", OWN_SCRIPTS)
def test_syntax_strict_mode_and_paper_header(script):
    path = os.path.join(SCRIPTS, script)
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    text = pathlib.Path(path).read_text()
    assert "set -euo pipefail" in text and "PREFIX" not in text
    assert os.access(path, os.X_OK)
    if shutil.which("shellcheck"):
        assert subprocess.run(["shellcheck", "-S", "warning", path]).returncode == 0


@pytest.mark.parametrize(
    "script,headline,expected",
    [
        (
            "run_rotation.sh",
            "91.3 ± 0.3",
            {"method": "rotation", "batch_size": "64", "latent_dim": "4"},
        ),
        (
            "run_contrastive.sh",
            "89.0 ± 0.7",
            {
                "method": "contrastive",
                "batch_size": "32",
                "distaug_type": "1",
                "temperature": "0.2",
            },
        ),
        (
            "run_contrastive_da.sh",
            "92.5 ± 0.6",
            {"method": "contrastive", "batch_size": "32", "distaug_type": "rot"},
        ),
    ],
)
def test_run_scripts_build_the_paper_command(script, headline, expected):
    assert headline in pathlib.Path(SCRIPTS, script).read_text()
    proc = dry(
        script,
        "--dataset=fmnistood",
        "--category=3",
        "--root=/data dir",
        "--seed=2",
        "--blur_as_reference",
    )
    argv = shlex.split(proc.stdout)
    assert argv[0] == "python" and argv[1] == os.path.join(REPO, "train_and_eval_loop.py")
    flags = flags_of(argv)
    for key, value in expected.items():
        assert flags[key] == value
    assert flags["num_epoch"] == "2048" and flags["learning_rate"] == "0.01"
    assert flags["weight_decay"] == "3e-4" and flags["net_width"] == "1"
    assert flags["head_dims"].split(",")[:8] == ["512"] * 8
    # The user's flags come last, so they override the script's defaults.
    assert (flags["dataset"], flags["category"], flags["root"]) == ("fmnistood", "3", "/data dir")
    assert flags["blur_as_reference"] is True
    assert argv[-1] == "--blur_as_reference"


@pytest.mark.parametrize(
    "script,sweep_method",
    [
        ("run_rotation.sh", "rotation"),
        ("run_contrastive.sh", "contrastive"),
        ("run_contrastive_da.sh", "contrastive_da"),
    ],
)
def test_run_scripts_agree_with_sweep(tmp_path, script, sweep_method):
    sweep = run(
        "sweep.sh",
        "--dry_run",
        "--out",
        str(tmp_path),
        "--methods",
        sweep_method,
        "--datasets",
        "cifar10ood",
        "--categories",
        "0",
        "--seeds",
        "1",
        env={**os.environ, "PYTHON": "python"},
    )
    assert sweep.returncode == 0, sweep.stderr
    sweep_flags = flags_of(shlex.split(sweep.stdout.splitlines()[0]))
    mine = flags_of(
        shlex.split(dry(script, "--seed=1", f"--model_dir={sweep_flags['model_dir']}").stdout)
    )
    assert mine == sweep_flags


@pytest.mark.parametrize("baseline", ["rotnet", "denoising"])
def test_baselines_agree_with_sweep(tmp_path, baseline):
    sweep = run(
        "sweep.sh",
        "--dry_run",
        "--out",
        str(tmp_path),
        "--methods",
        baseline,
        "--datasets",
        "fmnistood",
        "--categories",
        "2",
        "--seeds",
        "3",
        env={**os.environ, "PYTHON": "python"},
    )
    assert sweep.returncode == 0, sweep.stderr
    assert "no paper settings" not in sweep.stderr
    mine = dry(
        "run_baselines.sh",
        f"--baselines={baseline}",
        "--dataset=fmnistood",
        "--category=2",
        "--seeds=3",
        f"--out={tmp_path}",
    )
    assert flags_of(shlex.split(mine.stdout)) == flags_of(shlex.split(sweep.stdout.splitlines()[0]))


def test_run_script_execs_the_trainer(fake_python, tmp_path):
    env, calls = fake_python
    proc = run("run_contrastive_da.sh", "--dataset=fake", f"--model_dir={tmp_path}/r", env=env)
    assert proc.returncode == 0, proc.stderr
    (argv,) = calls()
    assert flags_of(argv)["distaug_type"] == "rot"
    assert os.path.isfile(tmp_path / "r" / "summary.json")


def test_baselines_dry_run_commands():
    proc = dry(
        "run_baselines.sh",
        "--dataset=fmnistood",
        "--category=3",
        "--seeds=1 2",
        "--out=/o",
        "--root=/r",
        "--num_epoch=5",
    )
    cmds = [flags_of(shlex.split(line)) for line in proc.stdout.splitlines()]
    assert "skip imagenet" in proc.stderr  # no weights given
    by = {(c["method"], c["seed"]): c for c in cmds}
    assert set(by) == {(m, s) for m in ("contrastive", "rotnet", "denoising") for s in "12"}
    for c in cmds:
        assert (c["dataset"], c["category"], c["root"]) == ("fmnistood", "3", "/r")
    random = by[("contrastive", "1")]
    assert random["num_epoch"] == "0" and random["head_dims"] == "none"
    assert random["model_dir"] == "/o/random/fmnistood/c3/s1"
    rotnet = by[("rotnet", "2")]
    assert rotnet["head_dims"] == "none" and rotnet["latent_dim"] == "4"
    assert rotnet["batch_size"] == "64" and rotnet["num_epoch"] == "5"  # user flag wins
    denoise = by[("denoising", "1")]
    assert denoise["aug_list"] == "x" and denoise["learning_rate"] == "0.01"


def test_baselines_imagenet_once_and_eval_only():
    proc = dry(
        "run_baselines.sh",
        "--baselines=imagenet random",
        "--seeds=1 2",
        "--num_epoch=7",
        extra_env={"IMAGENET_WEIGHTS": "/w/r50.h5"},
    )
    cmds = [flags_of(shlex.split(line)) for line in proc.stdout.splitlines()]
    assert [c["method"] for c in cmds] == ["imagenet", "contrastive", "contrastive"]
    assert cmds[0]["imagenet_weights"] == "/w/r50.h5"
    assert all(c["num_epoch"] == "0" for c in cmds)  # forced after the user's --num_epoch=7


def test_baselines_bad_usage_and_failures(fake_python, tmp_path):
    env, calls = fake_python
    proc = run("run_baselines.sh", "--model_dir=/x", env=env)
    assert proc.returncode == 2 and "--out=DIR" in proc.stderr
    proc = run("run_baselines.sh", "--baselines=nope", env=env)
    assert proc.returncode == 2 and "unknown baseline 'nope'" in proc.stderr
    proc = run(
        "run_baselines.sh",
        "--dataset=fake",
        f"--out={tmp_path}/b",
        env={**env, "FAKE_FAIL_METHOD": "rotnet"},
    )
    assert proc.returncode == 1 and "rotnet/fake/c0/s1 (exit 3)" in proc.stderr
    assert [flags_of(c)["method"] for c in calls()] == ["contrastive", "rotnet", "denoising"]
    assert os.path.isfile(tmp_path / "b" / "denoising" / "fake" / "c0" / "s1" / "summary.json")


def test_cpu_preset_dry_run(tmp_path):
    out = str(tmp_path / "cpu_preset")
    proc = run("cpu_preset.sh", "--dry_run", f"--out={out}", env={**os.environ, "PYTHON": "python"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    cmds = [flags_of(shlex.split(x)) for x in lines if "train_and_eval_loop.py" in x]
    assert [c["category"] for c in cmds] == [str(i) for i in range(10)]
    for c in cmds:
        # The quick defaults plus the preset's 8 epochs in float32.
        assert set(c) == {
            "method",
            "dataset",
            "category",
            "seed",
            "model_dir",
            "num_epoch",
            "precision",
        }
        assert (c["method"], c["dataset"], c["seed"]) == ("rotation", "fmnistood", "0")
        assert (c["num_epoch"], c["precision"]) == ("8", "float32")
        assert c["model_dir"].endswith(f"cpu_preset/rotation/fmnistood/c{c['category']}/s0")
    assert "deep_representation_one_class.aggregate" in lines[-1]
    assert "results/cpu_preset_fmnist" in lines[-1]


@pytest.mark.slow  # the preset through the sweep, about 12 s
def test_cpu_preset_runs_and_aggregates(fake_python, tmp_path):
    env, calls = fake_python
    results = tmp_path / "res" / "preset"
    proc = run(
        "cpu_preset.sh",
        "--categories=0 1",
        f"--out={tmp_path}/runs",
        f"--results={results}",
        "--num_epoch=1",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [flags_of(c)["num_epoch"] for c in calls()] == ["1", "1"]
    table = (tmp_path / "res" / "preset.md").read_text()
    assert "Rotation prediction" in table and "f-MNIST" in table
    assert os.path.isfile(tmp_path / "res" / "preset.csv")
    mean = [line for line in proc.stdout.splitlines() if line.strip().startswith("mean")]
    assert mean and "96.00" in mean[0] and "(2 classes" in mean[0]
    assert "Command: scripts/cpu_preset.sh --preset=fmnist" in table
    assert run("cpu_preset.sh", "--method=contrastive", env=env).returncode == 2


def test_cpu_preset_cifar10_dry_run_and_refusals(tmp_path):
    env = {**os.environ, "PYTHON": "python"}
    proc = run("cpu_preset.sh", "--preset=cifar10", "--dry_run", f"--out={tmp_path}/o", env=env)
    assert proc.returncode == 2 and "needs --root" in proc.stderr
    root = tmp_path / "pickles"
    proc = run(
        "cpu_preset.sh",
        "--preset=cifar10",
        "--dry_run",
        f"--out={tmp_path}/o",
        f"--root={root}",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    cmds = [flags_of(shlex.split(x)) for x in lines if "train_and_eval_loop.py" in x]
    assert [(c["method"], c.get("distaug_type")) for c in cmds[::10]] == [
        ("rotation", None),
        ("contrastive", "rot"),
    ]
    assert len(cmds) == 20 and {c["root"] for c in cmds} == {str(root)}
    assert {c["train_steps"] for c in cmds} == {"1500"}
    assert [c.get("precision") for c in cmds[::10]] == ["float32", None]  # auto for contrastive
    assert [c.get("baselines") for c in cmds[::10]] == [True, None]
    assert "results/cpu_preset_cifar10" in lines[-1] and "--where dataset=cifar10ood" in lines[-1]
    proc = run("cpu_preset.sh", "--preset=fmnist", f"--root={root}", "--dry_run", env=env)
    assert proc.returncode == 2 and "drop --root" in proc.stderr
    proc = run("cpu_preset.sh", "--preset=nope", env=env)
    assert proc.returncode == 2 and "unknown --preset" in proc.stderr


def test_gpu_check_quick_with_fake_trainer(fake_python, tmp_path):
    env, calls = fake_python
    report = tmp_path / "report"
    proc = run(
        "gpu_check.sh",
        env={**env, "QUICK": "1", "OUT": str(report), "JIT": "1", "RUN_DIR": str(tmp_path / "run")},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (argv,) = calls()
    flags = flags_of(argv)
    assert flags["method"] == "contrastive" and flags["dataset"] == "fake"
    assert flags["jit_compile"] is True and flags["net_width"] == "0.125"
    text = (report / "gpu_check.txt").read_text()
    assert "steps/s" in text and "projected 2048 epochs" in text and "pool.kde 96.00" in text


# Wraps the fake python: `-m deep_representation_one_class.evaluate --model_dir=D --reextract
# --precision=P` records the call and rewrites D/summary.json as a re-extraction would.
FAKE_EVALUATE = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:2] != ["-m", "deep_representation_one_class.evaluate"]:
    os.execv("{fake}", ["{fake}", *args])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
flags = dict(a[2:].partition("=")[::2] for a in args[2:])
path = os.path.join(flags["model_dir"], "summary.json")
summary = json.load(open(path))
summary["eval_precision"] = flags["precision"]
summary["metrics"] = {{k: v - 0.25 for k, v in summary["metrics"].items()}}
json.dump(summary, open(path, "w"))
"""


def test_precision_parity_runs_pairs_and_tabulates(fake_python, tmp_path):
    env, calls = fake_python
    wrapper = tmp_path / "fake_eval_python"
    wrapper.write_text(FAKE_EVALUATE.format(python=sys.executable, fake=env["PYTHON"]))
    wrapper.chmod(0o755)
    env = {**env, "PYTHON": str(wrapper)}
    results = tmp_path / "res" / "parity.md"
    args = ("--seeds=0 1", f"--out={tmp_path}/runs", f"--results={results}", "--num_epoch=1")
    proc = run("precision_parity.sh", *args, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    trains = [flags_of(c) for c in calls() if c[0].endswith("train_and_eval_loop.py")]
    variants = [(c["seed"], c["precision"], c.get("float32_stages")) for c in trains]
    assert variants == [
        (seed, precision, stages)
        for seed in ("0", "1")
        for precision, stages in (
            ("float32", None),
            ("mixed_bfloat16", None),
            ("mixed_bfloat16", ""),
        )
    ]
    assert all(c["method"] == "contrastive" and c["num_epoch"] == "1" for c in trains)
    evals = [c for c in calls() if c[:2] == ["-m", "deep_representation_one_class.evaluate"]]
    assert len(evals) == 2 and all("--precision=float32" in c for c in evals)
    table = results.read_text()
    # The fake scores every run 95.5 on pool.gde; the re-extracted copy 0.25 lower.
    row = next(line for line in table.splitlines() if line.startswith("| pool.gde |"))
    assert "95.50 ± 0.00" in row and "+0.00 ± 0.00" in row and "-0.25 ± 0.00" in row
    assert "2 paired seeds (0, 1)" in table
    # The all-bfloat16 run keeps its own summary; a rerun skips everything.
    bf16 = json.loads((tmp_path / "runs/mixed_bfloat16_all/s0/summary.json").read_text())
    assert "eval_precision" not in bf16
    before = len(calls())
    assert run("precision_parity.sh", *args, env=env, timeout=120).returncode == 0
    assert len(calls()) == before
    assert run("precision_parity.sh", "--seeds=a", env=env).returncode == 2


def test_select_recipes_dry_run_and_table(fake_python, tmp_path):
    env = {**os.environ, "PYTHON": "python"}
    proc = run("select_recipes.sh", "--plan=fmnist", "--dry_run", f"--out={tmp_path}/s", env=env)
    assert proc.returncode == 0, proc.stderr
    cmds = [flags_of(shlex.split(x)) for x in proc.stdout.splitlines() if "train_and_eval" in x]
    assert len(cmds) == 6 and all(c["is_validation"] is True for c in cmds)
    assert [c.get("train_steps") for c in cmds[::2]] == [None, "1250", "1500"]
    assert run("select_recipes.sh", "--plan=budget_small", env=env).returncode == 2
    assert run("select_recipes.sh", "--plan=fmnist", "--is_validation", env=env).returncode == 2

    fake_env, _ = fake_python
    results = tmp_path / "res"
    proc = run(
        "select_recipes.sh",
        "--plan=fmnist",
        f"--out={tmp_path}/runs",
        f"--results={results}",
        env=fake_env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    table = (results / "fmnist.md").read_text()
    assert (
        "| contrastive_1250 | 8 | float32 |" in table
        and "| pool.gde | 95.50 | 95.50 | 95.50 |" in table
    )
    assert str(tmp_path) not in table
    # A test-set run among the selection runs is refused.
    summary = next((tmp_path / "runs").rglob("summary.json"))
    data = json.loads(summary.read_text())
    data["config"]["is_validation"] = False
    summary.write_text(json.dumps(data))
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(SCRIPTS, "selection_table.py"),
            str(tmp_path / "runs" / "fmnist"),
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "not an --is_validation run" in proc.stderr


@pytest.mark.slow  # a run and the script, about 11 s
def test_eval_precision_cost_measures_both_precisions_of_one_checkpoint(tmp_path):
    """scripts/eval_precision_cost.py on a tiny mixed-bfloat16 run: a row per precision with
    its timings and the run's AUROCs, the table written atomically, the run folder untouched."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from conftest import tiny_config

    from deep_representation_one_class.training import runner

    cfg = tiny_config(
        strategy="default",
        model_dir=str(tmp_path / "run"),
        classifiers=("gde", "kde", "auc"),
        precision="mixed_bfloat16",
    )
    runner.run(cfg)
    before = sorted(os.listdir(cfg.model_dir))
    out = tmp_path / "cost.md"
    proc = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "eval_precision_cost.py"),
         f"--model_dir={cfg.model_dir}", "--rounds=1", f"--out={out}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| float32", "| mixed_bfloat16"]
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("| ").split(" | ")]
        assert all(float(c) > 0 for c in cells[1:4]), row
        # pool.gde, pool.kde, pool.auc measured; pool.kocsvm was not among the classifiers.
        assert all(0 <= float(c) <= 100 for c in cells[4:7]) and cells[7] == "–", row
    assert sorted(os.listdir(cfg.model_dir)) == before


def test_preset_summary_writes_wall_and_cpu_minutes(tmp_path):
    for cat, cpu in (("0", 120.0), ("1", 240.0)):
        run_dir = tmp_path / "runs" / "imagenet" / "cifar10ood" / f"c{cat}" / "s0"
        run_dir.mkdir(parents=True)
        summary = {
            "config": {"category": cat},
            "metrics": {"pool.gde": 90.0 + int(cat)},
            "run": {
                "train_seconds": 6.0,
                "eval_seconds": 594.0,
                "train_cpu_seconds": 0.0,
                "eval_cpu_seconds": cpu,
            },
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "minutes.md"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "preset_summary.py"),
            str(tmp_path / "runs"),
            "imagenet",
            "cifar10ood",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {
        line.split()[0]: line.split()
        for line in out.read_text().splitlines()
        if line.strip() and line.split()[0] in ("0", "1", "mean")
    }
    # class, wall minutes, CPU minutes, pool.gde
    assert rows["0"][1:4] == ["10.0", "2.0", "90.00"]
    assert rows["1"][1:4] == ["10.0", "4.0", "91.00"]
    assert rows["mean"][1:4] == ["10.0", "3.0", "90.50"]
