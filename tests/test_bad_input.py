"""Bad input never ends in a traceback: one ``error: ...`` line on stderr and a non-zero exit.

The table runs each case through the real command-line path (absl flag parsing, then
``main.main`` under ``cli.guard``) inside this process, resetting the flags between cases, so
that dozens of cases cost seconds. A few cases also run as true subprocesses to pin the real
exit code. Every case names a fragment of the message it must produce, so a case cannot pass
by failing for an unrelated reason.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import _reliability as rel
import numpy as np
import pytest
from absl import flags
from PIL import Image

from deep_representation_one_class import cli, main

FLAGS = flags.FLAGS


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    """Runs the command line in-process; returns (exit code, stderr)."""
    FLAGS.unparse_flags()
    capsys.readouterr()
    try:
        code = cli.guard(lambda: main.main(main.parse_flags(["droc-train", *argv])))
    finally:
        FLAGS.unparse_flags()
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, fragment: str) -> str:
    lines = rel.error_lines(err)
    assert code != 0, err
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- data fixtures
class _RunsCode:
    """Unpickling this object would run a shell command (the attack a pickle can carry)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def malicious_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    marker = root / "PWNED"
    payload = pickle.dumps({b"data": _RunsCode(str(marker)), b"labels": [0]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(payload)
    return root, marker


@pytest.fixture(scope="module")
def corrupt_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for sub in ("train/good", "test/good", "test/bad"):
        (root / sub).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / sub / f"{i}.png")
    (root / "train/good/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


BIG_BATCH = ["--batch_size=100", "--num_epoch=1"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny run to misuse (changed settings, another model, no config.json).

    Its batch of 100 is larger than fake's 64 training inliers: allowed on purpose (small
    folders, MVTec categories), the pipeline cycles 2 virtual copies, like the reference's
    ``repeat()``, so an epoch is 1 step.
    """
    run_dir = str(tmp_path_factory.mktemp("trained") / "run")
    FLAGS.unparse_flags()
    argv = ["droc-train", *rel.TINY, *BIG_BATCH, f"--model_dir={run_dir}"]
    code = cli.guard(lambda: main.main(main.parse_flags(argv)))
    FLAGS.unparse_flags()
    assert code == 0
    return run_dir


# ----------------------------------------------------------------------------- the matrix
# (id, extra flags, fragment of the expected error line). {tmp} is a fresh folder per case.
CASES = [
    # Flag parsing (absl): enums, numbers, unknown flags.
    ("enum-optimizer", ["--optim_type=rmsprop"], "optim_type"),
    ("enum-precision", ["--precision=float8"], "precision"),
    ("enum-strategy", ["--strategy=tpu"], "strategy"),
    ("enum-sched-freq", ["--sched_freq=weekly"], "sched_freq"),
    ("int-letters", ["--batch_size=abc"], "batch_size"),
    ("float-letters", ["--learning_rate=fast"], "learning_rate"),
    ("unknown-flag", ["--no_such_flag=1"], "no_such_flag"),
    ("positional", ["extra_arg"], "unexpected arguments"),
    # Names resolved through the registries.
    ("method", ["--method=nope"], "valid: contrastive"),
    ("dataset", ["--dataset=imagenet"], "imagenet"),
    ("network", ["--net_type=resnet11"], "resnet11"),
    ("schedule", ["--sched_type=exp"], "sched_type"),
    ("classifier", ["--classifiers=auc,svm9"], "svm9"),
    ("category", ["--category=7"], "unknown category '7'"),
    ("distaug", ["--distaug_type=rot7"], "invalid distaug_type 'rot7'"),
    ("distaug-count", ["--distaug_type=9"], "invalid distaug_type '9'"),
    ("patch-agg", ["--patch_agg=median"], "patch_agg"),
    # Augmentation strings.
    ("aug-unknown-op", ["--aug_list=bogus_op,x"], "unknown augmentation op 'bogus_op'"),
    ("aug-bad-number", ["--aug_list=cnr0.5x,x"], "0.5x"),
    ("aug-bad-jitter", ["--aug_list=jitter_b0.4_c,x"], "jitter"),
    ("aug-leading-plus", ["--aug_list=+hflip,x"], "must not start with '+'"),
    ("aug-empty-view", ["--aug_list=x,,x"], "view 1 is empty"),
    ("aug-empty-list", ["--aug_list="], "empty"),
    ("aug-test-views", ["--aug_list_for_test=rotate45"], "rotate45"),
    ("aug-three-views", ["--aug_list=x,x,x"], "exactly 2 views"),
    # Shapes and sizes.
    ("shape-two-values", ["--input_shape=32,32"], "input_shape"),
    ("shape-zero", ["--input_shape=0,32,3"], "input_shape"),
    ("shape-letters", ["--input_shape=a,b,c"], "input_shape"),
    ("shape-4-channels", ["--input_shape=32,32,4"], "channels"),
    ("head-letters", ["--head_dims=16,x"], "head_dims"),
    ("rotation-latent", ["--method=rotation", "--latent_dim=3"], "latent_dim"),
    ("latent-negative", ["--latent_dim=-1"], "latent_dim"),
    ("epochs-negative", ["--num_epoch=-1"], "num_epoch"),
    ("batch-zero", ["--batch_size=0"], "batch_size"),
    ("batch-negative", ["--batch_size=-8"], "batch_size"),
    ("eval-batch-zero", ["--eval_batch_size=0"], "eval_batch_size"),
    ("width-zero", ["--net_width=0"], "net_width"),
    ("steps-per-call", ["--steps_per_call=0"], "steps_per_call"),
    ("ckpt-steps", ["--ckpt_steps=-1"], "ckpt_steps"),
    ("max-cls", ["--max_cls=0"], "max_cls"),
    # Optimisation values.
    ("temperature-zero", ["--temperature=0"], "temperature"),
    ("temperature-negative", ["--temperature=-0.5"], "temperature"),
    ("momentum-one", ["--momentum=1"], "momentum"),
    ("momentum-negative", ["--momentum=-0.1"], "momentum"),
    ("lr-zero", ["--learning_rate=0"], "learning_rate"),
    ("weight-decay", ["--weight_decay=-1"], "weight_decay"),
    # Data locations.
    ("folder-no-root", ["--dataset=folder", "--category=good"], "needs root="),
    ("folder-missing-root", ["--dataset=folder", "--root={tmp}/nope"], "does not exist"),
    ("cifar-missing-root", ["--dataset=cifar10ood", "--root={tmp}/nope"], "does not exist"),
    # Run folders.
    ("model-dir-under-file", ["--model_dir={file}/sub"], "cannot write to --model_dir"),
    ("model-dir-is-file", ["--model_dir={file}"], "cannot write to --model_dir"),
    ("model-dir-foreign", ["--model_dir={foreign}"], "not a run folder"),
    ("force-init-foreign", ["--model_dir={foreign}", "--force_init"], "refuses to delete"),
]


@pytest.mark.parametrize("flags_,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_flag_is_one_error_line(flags_, fragment, tmp_path, capsys):
    file_path = tmp_path / "a_file"
    file_path.write_text("not a folder")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    subs = {"tmp": str(tmp_path), "file": str(file_path), "foreign": str(foreign)}
    argv = [*rel.TINY, "--num_epoch=1", f"--model_dir={tmp_path / 'run'}"]
    argv += [f.format(**subs) for f in flags_]
    code, err = _cli(argv, capsys)
    _assert_one_line_error(code, err, fragment)
    assert (foreign / "notes.txt").read_text() == "mine"  # nobody's files are touched


def test_multi_worker_needs_a_valid_tf_config(tmp_path, capsys, monkeypatch):
    argv = [*rel.TINY, "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}"]
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _assert_one_line_error(*_cli(argv, capsys), "needs the TF_CONFIG environment variable")
    monkeypatch.setenv("TF_CONFIG", "{'cluster': ")
    _assert_one_line_error(*_cli(argv, capsys), "not valid JSON")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps"}}')
    _assert_one_line_error(*_cli(argv, capsys), "'chief' or 'worker'")


def test_corrupt_image_in_folder_dataset(corrupt_folder, tmp_path, capsys):
    argv = [
        *rel.TINY,
        "--dataset=folder",
        f"--root={corrupt_folder}",
        "--category=good",
        "--input_shape=16,16,3",
        f"--cache_dir={tmp_path / 'cache'}",
        f"--model_dir={tmp_path / 'run'}",
    ]
    line = _assert_one_line_error(*_cli(argv, capsys), "broken.png")
    assert line.startswith("error: ")


def test_pickle_that_runs_code_is_refused(malicious_cifar, tmp_path, capsys):
    root, marker = malicious_cifar
    argv = [*rel.TINY, "--dataset=cifar10ood", f"--root={root}", f"--model_dir={tmp_path / 'r'}"]
    _assert_one_line_error(*_cli(argv, capsys), "refusing to unpickle")
    assert not marker.exists()  # the payload never ran


def test_misused_run_folders(trained_run, tmp_path, capsys):
    # Same folder, other settings: refused, names the changed flag.
    argv = [*rel.TINY, *BIG_BATCH, f"--model_dir={trained_run}"]
    line = _assert_one_line_error(*_cli([*argv, "--learning_rate=0.5"], capsys), "different")
    assert "learning_rate" in line
    line = _assert_one_line_error(*_cli([*argv, "--net_width=0.125"], capsys), "net_width")
    # config.json deleted by hand: the finished run's summary still guards the folder.
    no_cfg = str(tmp_path / "no_config")
    shutil.copytree(trained_run, no_cfg)
    os.remove(os.path.join(no_cfg, "config.json"))
    other = [*rel.TINY, *BIG_BATCH, "--net_width=0.125", f"--model_dir={no_cfg}"]
    _assert_one_line_error(*_cli(other, capsys), "net_width")
    # Crashed before the summary and config.json lost: only the checkpoint is left, and it
    # belongs to another model.
    os.remove(os.path.join(no_cfg, "summary.json"))
    line = _assert_one_line_error(*_cli(other, capsys), "does not match this model")
    assert "--force_init" in line
    # The original run is untouched by all of the above and still reports as complete.
    code, err = _cli([*argv], capsys)
    assert code == 0, err


def test_batch_larger_than_the_data_cycles_the_images(trained_run):
    summary = rel.read_json(os.path.join(trained_run, "summary.json"))
    assert summary["run"]["complete"]
    assert summary["run"]["global_step"] == 1 and summary["run"]["steps_per_epoch"] == 1
    assert summary["run"]["train_examples"] == 64


# ----------------------------------------------------------------------------- real processes
def test_real_processes_exit_codes(malicious_cifar, tmp_path):
    root, marker = malicious_cifar
    file_path = tmp_path / "a_file"
    file_path.write_text("x")
    cases = {
        "flag": (["--optim_type=bogus"], "optim_type"),
        "augment": (["--aug_list=+hflip,x"], "must not start with '+'"),
        "pickle": (["--dataset=cifar10ood", f"--root={root}"], "refusing to unpickle"),
        "model_dir": ([f"--model_dir={file_path}/sub"], "cannot write to --model_dir"),
    }
    procs = {}
    for name, (extra, _) in cases.items():
        cmd = [sys.executable, rel.SCRIPT, *rel.TINY, f"--model_dir={tmp_path / name}", *extra]
        procs[name] = subprocess.Popen(
            cmd, cwd=rel.REPO, env=rel.env(), stderr=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == cli.EXIT_USAGE, (name, err)
        _assert_one_line_error(proc.returncode, err, cases[name][1])
    assert not marker.exists()
