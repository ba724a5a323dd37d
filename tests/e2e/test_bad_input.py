"""Bad input never ends in a traceback: one ``error: ...`` line on stderr and a non-zero exit.

The table runs each case through the real command-line path (absl flag parsing, then
``main.main`` under ``cli.guard``) inside this process, resetting the flags between cases, so
that dozens of cases cost seconds. A few cases also run as true subprocesses to pin the real
exit code. Every case names a fragment of the message it must produce, so a case cannot pass
by failing for an unrelated reason.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import _reliability as rel
import numpy as np
import pytest
from absl import flags
from PIL import Image

from deep_representation_one_class import cli, datasets, main
from deep_representation_one_class.datasets import celeba, images
from deep_representation_one_class.datasets.base import DataError
from deep_representation_one_class.serving import explain_run, export, score
from deep_representation_one_class.training import rescore

np_core = getattr(np, "_core", None) or np.core

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
    # Schedules (issue #13, item 10): refused instead of a learning rate jumping to 0.
    ("sched-level-99", ["--sched_level=99"], "sched_level"),
    ("sched-level-0", ["--sched_level=0"], "sched_level"),
    ("sched-gamma-negative", ["--sched_gamma=-1"], "sched_gamma"),
    ("sched-gamma-zero", ["--sched_gamma=0"], "sched_gamma"),
    ("sched-gamma-above-one", ["--sched_gamma=1.5"], "sched_gamma"),
    ("sched-step-size-zero", ["--sched_step_size=0"], "sched_step_size"),
    ("sched-min-rate", ["--sched_min_rate=2"], "sched_min_rate"),
    ("shape-not-square", ["--input_shape=16,40,3"], "square"),
    ("shape-too-small", ["--input_shape=4,4,3"], "at least 8x8"),
    ("cls-holdout", ["--cls_holdout=0.6"], "cls_holdout"),
    ("eval-every-negative", ["--eval_every=-1"], "eval_every"),
    # Op parameters that only fail at the image size are checked before anything is written.
    ("aug-crop-too-large", ["--aug_list=crop999999,+"], "crop size must be in [1, 32]"),
    ("aug-crop-zero", ["--aug_list=crop0,+"], "crop"),
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
    before = rel.snapshot(tmp_path)
    code, err = _cli(argv, capsys)
    _assert_one_line_error(code, err, fragment)
    assert rel.snapshot(tmp_path) == before  # nothing touched, nothing left behind


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
@pytest.mark.slow  # a dozen real command processes, about 25 s
def test_real_processes_exit_codes(malicious_cifar, fake_run, tmp_path):
    root, marker = malicious_cifar
    file_path = tmp_path / "a_file"
    file_path.write_text("x")
    data = Path(rel.image_folder(tmp_path / "data"))
    os.mkfifo(data / "train/good/pipe.png")
    finished = tmp_path / "finished"
    shutil.copytree(fake_run, finished)
    (finished / "NOTES.txt").write_text("notes\n")
    folder = ["--dataset=folder", f"--root={data}", "--category=good", "--input_shape=16,16,3"]
    cases = {
        "flag": (["--optim_type=bogus"], "optim_type"),
        "augment": (["--aug_list=+hflip,x"], "must not start with '+'"),
        "pickle": (["--dataset=cifar10ood", f"--root={root}"], "refusing to unpickle"),
        "model_dir": ([f"--model_dir={file_path}/sub"], "cannot write to --model_dir"),
        "fifo": (folder, "pipe.png"),
        "force_init": (
            [f"--model_dir={finished}", "--force_init", "--aug_list=crop999999,+"],
            "crop size",
        ),
    }
    before = rel.snapshot(tmp_path)
    procs = {}
    env = rel.env(DROC_CACHE_DIR=f"{tmp_path}_cache")
    for name, (extra, _) in cases.items():
        cmd = [sys.executable, rel.SCRIPT, *rel.TINY, f"--model_dir={tmp_path / name}", *extra]
        procs[name] = subprocess.Popen(
            cmd, cwd=rel.REPO, env=env, stderr=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    with rel.FifoGuard([data / "train/good/pipe.png"], timeout=200) as guard:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == cli.EXIT_USAGE, (name, err)
            _assert_one_line_error(proc.returncode, err, cases[name][1])
    assert not guard.hung
    assert not marker.exists()
    assert rel.snapshot(tmp_path) == before


# ============================================================================= files and folders
# Issue #13: every case ends in exit 2 and ONE error line naming the culprit (file or flag),
# with the workspace (finished run, data, outputs, the default runs/ folder) byte-identical.
# Each case gets a fresh workspace ``ws`` (the current directory while it runs); ``setup``
# builds its files; decoded-image caches go to a folder outside ``ws``.
@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    cmd: str  # train | score | export | evaluate | explain
    argv: tuple[str, ...]
    fragments: tuple[str, ...]  # every one must appear in the error line
    setup: Callable[[Ctx], None] | None = None
    env: tuple[tuple[str, str], ...] = ()
    fifos: tuple[str, ...] = ()  # ws-relative pipes a regression could block on


@dataclasses.dataclass
class Ctx:
    ws: Path
    run_src: str
    subs: dict
    procs: list


def train(*flags: str) -> tuple[str, ...]:
    return (*rel.TINY, "--num_epoch=1", *flags)


def _in_run(ctx: Ctx) -> Path:
    """A copy of the finished tiny run at ws/run, plus a file of the user's (NOTES.txt)."""
    run = ctx.ws / "run"
    if not run.exists():
        shutil.copytree(ctx.run_src, run)
        (run / "NOTES.txt").write_text("notes\n")
    return run


def finished_run(ctx: Ctx) -> None:
    _in_run(ctx)


def write(rel_path: str, data: bytes | str, *, with_run: bool = True):
    """Setup: a finished run, then ``rel_path`` (ws-relative) replaced by ``data``."""

    def setup(ctx: Ctx) -> None:
        if with_run:
            _in_run(ctx)
        target = ctx.ws / rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            target.write_text(data)
        else:
            target.write_bytes(data)

    return setup


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def tampered_embeddings(change: Callable[[dict], dict]):
    def setup(ctx: Ctx) -> None:
        run = _in_run(ctx)
        with np.load(run / "embeddings.npz") as z:
            arrays = change({k: z[k] for k in z.files})
        (run / "embeddings.npz").write_bytes(npz_bytes(**arrays))

    return setup


def image_data(*extras: Callable[[Path], None], run: bool = False):
    """Setup: ws/data as a folder dataset (+ a finished run), then each extra(data root)."""

    def setup(ctx: Ctx) -> None:
        if run:
            _in_run(ctx)
        root = ctx.ws / "data"
        rel.image_folder(root)
        for extra in extras:
            extra(root)

    return setup


def fifo(rel_path: str):
    return lambda root: os.mkfifo(root / rel_path)


def symlink(rel_path: str, target: str):
    return lambda root: os.symlink(target, root / rel_path)


def raw_file(rel_path: str, data: bytes):
    return lambda root: (root / rel_path).write_bytes(data)


_HUGE: dict[str, bytes] = {}


def huge(rel_path: str):
    def make(root: Path) -> None:
        if "png" not in _HUGE:
            tmp = root / ".huge_tmp.png"
            rel.huge_png(tmp)
            _HUGE["png"] = tmp.read_bytes()
            tmp.unlink()
        (root / rel_path).write_bytes(_HUGE["png"])

    return make


def lock_by(host: str | None = None, dead: bool = False, with_run: bool = True):
    def setup(ctx: Ctx) -> None:
        folder = _in_run(ctx) if with_run else ctx.ws / "run"
        folder.mkdir(exist_ok=True)
        proc = rel.live_process()
        ctx.procs.append(proc)
        if dead:
            proc.kill()
            proc.wait()
        (folder / ".droc_lock").write_text(rel.lock_record(proc.pid, host))
        ctx.subs["pid"] = str(proc.pid)

    return setup


def cifar(**kw):
    return lambda ctx: rel.cifar_batches(ctx.ws / "cifar", **kw)


def fmnist(**overrides: bytes):
    return lambda ctx: rel.fmnist_files(ctx.ws / "fm", overrides)


def _pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


class _HugeArray:
    """Pickles as numpy's array constructor asked for 10^11 elements (~100 GB) in 175 bytes."""

    def __reduce__(self):
        return (np_core.multiarray._reconstruct, (np.ndarray, (10**11,), b"b"))


def _sparse(rel_path: str, size: int):
    def setup(ctx: Ctx) -> None:
        rel.cifar_batches(ctx.ws / "cifar")
        with open(ctx.ws / rel_path, "wb") as f:
            f.truncate(size)

    return setup


def mvtec_data(*extras):
    def setup(ctx: Ctx) -> None:
        base = ctx.ws / "mv" / "bottle"
        for sub, n in (("train/good", 3), ("test/good", 2), ("test/broken", 2)):
            for i in range(n):
                rel.save_png(base / sub / f"{i:03d}.png", seed=i)
        for i in range(2):
            rel.save_png(base / "ground_truth/broken" / f"{i:03d}_mask.png", mode="L", seed=i)
        for extra in extras:
            extra(base)

    return setup


def dogvscat_npz(**arrays):
    return write("dvc/dogs-vs-cats/train_64x64.npz", npz_bytes(**arrays), with_run=False)


def dogvscat_dir(*extras):
    def setup(ctx: Ctx) -> None:
        folder = ctx.ws / "dvc" / "train"
        for i, kind in enumerate(("cat", "cat", "dog", "dog")):
            rel.save_png(folder / f"x{i}.png", seed=i)
            (folder / f"x{i}.png").rename(folder / f"{kind}.{i}.jpg")
        for extra in extras:
            extra(folder)

    return setup


def celeba_prepared(names: str, attr_rows: int = 4):
    def setup(ctx: Ctx) -> None:
        base = ctx.ws / "celeba" / "celeba_npy"
        for split in ("train", "test"):
            (base / split).mkdir(parents=True)
            np.save(base / split / "image_64x64.npy", np.zeros((4, 64, 64, 3), np.uint8))
            np.save(base / split / "attr.npy", np.zeros((attr_rows, 40), np.uint8))
        (base / "attr_names.json").write_text(names)

    return setup


FOLDER = ("--dataset=folder", "--root={ws}/data", "--category=good", "--input_shape=16,16,3")
RUN = ("--model_dir={ws}/run",)
SCORE = ("score", "--model_dir={ws}/run", "--images={ws}/data/test", "--out={ws}/scores.csv")
EVAL = ("evaluate", "--model_dir={ws}/run")
_ATTR_NAMES = json.dumps(list(celeba.ATTRIBUTES))

FILE_CASES = [
    # --- run folders: validation before any delete or write (items 1, 2, 11, 12) --------------
    Case(
        "force-init-bad-aug",
        "train",
        train(*RUN, "--force_init", "--aug_list=crop999999,+"),
        ("crop size",),
        finished_run,
    ),
    Case(
        "force-init-category-typo",
        "train",
        train(*RUN, "--force_init", *FOLDER[:2], "--category=goood", "--input_shape=16,16,3"),
        ("goood",),
        image_data(run=True),
    ),
    Case(
        "force-init-missing-root",
        "train",
        train(*RUN, "--force_init", "--dataset=folder", "--root={ws}/nope", "--category=good"),
        ("does not exist",),
        finished_run,
    ),
    Case(
        "force-init-broken-image",
        "train",
        train(*RUN, "--force_init", *FOLDER),
        ("broken.png",),
        image_data(raw_file("train/good/broken.png", b"\x89PNG\r\n\x1a\nno"), run=True),
    ),
    Case(
        "failed-start-new-folder",
        "train",
        train("--model_dir={ws}/new", "--aug_list=crop999999,+"),
        ("crop size",),
    ),
    Case(
        "failed-start-default-dir",
        "train",
        train(*FOLDER[:2], "--category=goood", "--input_shape=16,16,3"),
        ("goood",),
        image_data(),
    ),
    Case(
        "failed-start-empty-folder",
        "train",
        train("--model_dir={ws}/empty", *FOLDER[:2], "--category=goood"),
        ("goood",),
        lambda ctx: (image_data()(ctx), (ctx.ws / "empty").mkdir()),
    ),
    Case("lock-held", "train", train(*RUN), ("in use by process {pid}",), lock_by()),
    Case(
        "lock-held-empty-folder",
        "train",
        train(*RUN),
        ("in use by process {pid}",),
        lock_by(with_run=False),
    ),
    Case(
        "lock-other-host",
        "train",
        train(*RUN),
        ("in use by process {pid}", "elsewhere"),
        lock_by(host="elsewhere"),
    ),
    Case(
        "run-config-not-json",
        "train",
        train(*RUN),
        ("config.json", "not valid JSON"),
        write("run/config.json", "{"),
    ),
    Case(
        "run-config-list",
        "train",
        train(*RUN),
        ("config.json", "JSON list"),
        write("run/config.json", "[]"),
    ),
    Case(
        "run-other-settings",
        "train",
        train(*RUN, "--learning_rate=0.5"),
        ("different settings", "learning_rate"),
        finished_run,
    ),
    Case(
        "run-checkpoint-index-garbage",
        "train",
        train(*RUN),
        ("checkpoints/checkpoint", "--force_init"),
        lambda ctx: (
            write("run/checkpoints/checkpoint", "x{")(ctx),
            os.remove(ctx.ws / "run/summary.json"),
        ),
    ),
    Case(
        "run-marker-missing",
        "train",
        train(*RUN),
        ("not a run folder",),
        lambda ctx: os.remove(_in_run(ctx) / ".droc_run"),
    ),
    # --- data files (items 3, 6, 7, 8) ---------------------------------------------------------
    Case(
        "folder-fifo-train",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("pipe.png", "named pipe"),
        image_data(fifo("train/good/pipe.png")),
        fifos=("data/train/good/pipe.png",),
    ),
    Case(
        "folder-fifo-test",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("pipe.png", "named pipe"),
        image_data(fifo("test/bad/pipe.png")),
        fifos=("data/test/bad/pipe.png",),
    ),
    Case(
        "folder-dangling-link",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("gone.png", "dangling"),
        image_data(symlink("train/good/gone.png", "/nonexistent/x.png")),
    ),
    Case(
        "folder-link-loop",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("loop.png", "loop"),
        image_data(symlink("train/good/loop.png", "loop.png")),
    ),
    Case(
        "folder-huge-16bit-png",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("huge.png", "megapixels", "DROC_MAX_IMAGE_PIXELS"),
        image_data(huge("train/good/huge.png")),
    ),
    Case(
        "folder-pixel-cap",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("0.png", "decoding cap of 0.0001"),
        image_data(),
        env=(("DROC_MAX_IMAGE_PIXELS", "100"),),
    ),
    Case(
        "folder-pixel-cap-invalid",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("DROC_MAX_IMAGE_PIXELS", "'lots'"),
        image_data(),
        env=(("DROC_MAX_IMAGE_PIXELS", "lots"),),
    ),
    Case(
        "folder-broken-png",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("broken.png", "--skip_corrupt"),
        image_data(raw_file("train/good/broken.png", b"\x89PNG\r\n\x1a\nno")),
    ),
    Case(
        "folder-text-as-jpeg",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("notes.jpg",),
        image_data(raw_file("test/good/notes.jpg", b"hello")),
    ),
    Case(
        "folder-empty-image",
        "train",
        train("--model_dir={ws}/r", *FOLDER),
        ("empty.bmp",),
        image_data(raw_file("test/bad/empty.bmp", b"")),
    ),
    Case(
        "cifar-misaligned",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "20 images but 10 labels"),
        cifar(data=np.zeros((20, 3072), np.uint8)),
    ),
    Case(
        "cifar-not-3072",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "3072"),
        cifar(data=np.zeros((10, 3000), np.uint8)),
    ),
    Case(
        "cifar-flat-not-3072",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "3072"),
        cifar(data=np.zeros(5000, np.uint8)),
    ),
    Case(
        "cifar-huge-array",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "non-empty shape"),
        cifar(overrides={"data_batch_1": _pickle({b"data": _HugeArray(), b"labels": [0]})}),
    ),
    Case(
        "cifar-huge-file",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("test_batch", "larger than any CIFAR batch"),
        _sparse("cifar/test_batch", 2**31),
    ),
    Case(
        "cifar-label-range",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "0..9"),
        cifar(labels=[0, 1, 2, 3, 4, 5, 6, 7, 8, 12]),
    ),
    Case(
        "cifar-label-strings",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "integer class ids"),
        cifar(labels=["a"] * 10),
    ),
    Case(
        "cifar-data-list",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "expected a uint8 array"),
        cifar(data=[[0] * 3072] * 10),
    ),
    Case(
        "cifar-float-data",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_1", "float64"),
        cifar(data=np.full((10, 3072), np.nan)),
    ),
    Case(
        "cifar-truncated",
        "train",
        train("--model_dir={ws}/r", "--dataset=cifar10ood", "--root={ws}/cifar"),
        ("data_batch_3",),
        cifar(
            overrides={
                "data_batch_3": _pickle(
                    {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
                )[:300]
            }
        ),
    ),
    Case(
        "fmnist-zeros",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("train-images", "bad magic"),
        fmnist(**{"train-images-idx3-ubyte.gz": gzip.compress(bytes(4096))}),
    ),
    Case(
        "fmnist-huge-header",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("train-images", "header claims"),
        fmnist(
            **{
                "train-images-idx3-ubyte.gz": gzip.compress(
                    bytes([0, 0, 8, 3]) + struct.pack(">III", 60000, 3000, 3000)
                )
            }
        ),
    ),
    Case(
        "fmnist-truncated",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("t10k-images", "payload size"),
        fmnist(
            **{
                "t10k-images-idx3-ubyte.gz": gzip.compress(
                    rel.idx_bytes(np.zeros((20, 28, 28)))[:-5]
                )
            }
        ),
    ),
    Case(
        "fmnist-trailing-bytes",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("t10k-labels", "payload size"),
        fmnist(**{"t10k-labels-idx1-ubyte.gz": gzip.compress(rel.idx_bytes(np.zeros(20)) + b"x")}),
    ),
    Case(
        "fmnist-count-mismatch",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("train-labels", "30 images but", "12 labels"),
        fmnist(**{"train-labels-idx1-ubyte.gz": gzip.compress(rel.idx_bytes(np.zeros(12)))}),
    ),
    Case(
        "fmnist-wrong-size",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("train-images", "[N, 28, 28]"),
        fmnist(
            **{"train-images-idx3-ubyte.gz": gzip.compress(rel.idx_bytes(np.zeros((30, 32, 32))))}
        ),
    ),
    Case(
        "fmnist-label-range",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("t10k-labels", "class id 0..9"),
        fmnist(**{"t10k-labels-idx1-ubyte.gz": gzip.compress(rel.idx_bytes(np.full(20, 11)))}),
    ),
    Case(
        "fmnist-not-gzip",
        "train",
        train("--model_dir={ws}/r", "--dataset=fmnistood", "--root={ws}/fm"),
        ("train-labels", "cannot read IDX"),
        fmnist(**{"train-labels-idx1-ubyte.gz": b"not gzip at all"}),
    ),
    Case(
        "mvtec-fifo",
        "train",
        train(
            "--model_dir={ws}/r",
            "--dataset=mvtec",
            "--root={ws}/mv",
            "--category=bottle",
            "--input_shape=32,32,3",
            "--patch_size=16",
        ),
        ("003.png", "named pipe"),
        mvtec_data(lambda b: os.mkfifo(b / "test/broken/003.png")),
        fifos=("mv/bottle/test/broken/003.png",),
    ),
    Case(
        "dogvscat-fifo",
        "train",
        train(
            "--model_dir={ws}/r",
            "--dataset=dogvscatood",
            "--root={ws}/dvc",
            "--input_shape=16,16,3",
        ),
        ("cat.9.jpg", "named pipe"),
        dogvscat_dir(lambda f: os.mkfifo(f / "cat.9.jpg")),
        fifos=("dvc/train/cat.9.jpg",),
    ),
    Case(
        "dogvscat-npz-shape",
        "train",
        train("--model_dir={ws}/r", "--dataset=dogvscatood", "--root={ws}/dvc"),
        ("train_64x64.npz", "expected uint8"),
        dogvscat_npz(image=np.zeros((4, 64, 64), np.uint8), label=np.zeros(4, np.int64)),
    ),
    Case(
        "dogvscat-npz-labels",
        "train",
        train("--model_dir={ws}/r", "--dataset=dogvscatood", "--root={ws}/dvc"),
        ("train_64x64.npz", "'label'"),
        dogvscat_npz(image=np.zeros((4, 64, 64, 3), np.uint8), label=np.zeros(3, np.int64)),
    ),
    Case(
        "celeba-names-not-json",
        "train",
        train(
            "--model_dir={ws}/r", "--dataset=celeba", "--root={ws}/celeba", "--category=Eyeglasses"
        ),
        ("attr_names.json", "not valid JSON"),
        celeba_prepared("["),
    ),
    Case(
        "celeba-attr-rows",
        "train",
        train(
            "--model_dir={ws}/r", "--dataset=celeba", "--root={ws}/celeba", "--category=Eyeglasses"
        ),
        ("attr.npy", "one row per image"),
        celeba_prepared(_ATTR_NAMES, attr_rows=3),
    ),
    # --- score: outputs, image files, tampered run files (items 3, 4, 8, 9, 12) ---------------
    Case(
        "score-out-exists",
        "score",
        SCORE[1:],
        ("scores.csv", "--overwrite"),
        lambda ctx: (image_data(run=True)(ctx), (ctx.ws / "scores.csv").write_text("mine")),
    ),
    Case(
        "score-out-run-embeddings",
        "score",
        (*SCORE[1:3], "--out={ws}/run/embeddings.npz"),
        ("embeddings.npz", "run's own files"),
        image_data(run=True),
    ),
    Case(
        "score-out-run-embeddings-overwrite",
        "score",
        (*SCORE[1:3], "--out={ws}/run/embeddings.npz", "--overwrite"),
        ("embeddings.npz", "run's own files"),
        image_data(run=True),
    ),
    Case(
        "score-out-run-folder",
        "score",
        (*SCORE[1:3], "--out={ws}/run"),
        ("run's own files",),
        image_data(run=True),
    ),
    Case(
        "score-out-run-plots",
        "score",
        (*SCORE[1:3], "--out={ws}/run/plots/x.csv"),
        ("plots", "run's own files"),
        image_data(run=True),
    ),
    Case(
        "score-out-folder",
        "score",
        (*SCORE[1:3], "--out={ws}/data"),
        ("is a folder",),
        image_data(run=True),
    ),
    Case(
        "score-fifo",
        "score",
        SCORE[1:],
        ("pipe.png", "named pipe", "--skip_corrupt"),
        image_data(fifo("test/bad/pipe.png"), run=True),
        fifos=("data/test/bad/pipe.png",),
    ),
    Case(
        "score-fifo-direct",
        "score",
        (*SCORE[1:2], "--images={ws}/data/test/bad/pipe.png", SCORE[3]),
        ("pipe.png", "named pipe"),
        image_data(fifo("test/bad/pipe.png"), run=True),
        fifos=("data/test/bad/pipe.png",),
    ),
    Case(
        "score-fifo-glob",
        "score",
        (*SCORE[1:2], "--images={ws}/data/test/*/*.png", SCORE[3]),
        ("pipe.png", "named pipe"),
        image_data(fifo("test/bad/pipe.png"), run=True),
        fifos=("data/test/bad/pipe.png",),
    ),
    Case(
        "score-broken-image",
        "score",
        SCORE[1:],
        ("broken.png", "--skip_corrupt"),
        image_data(raw_file("test/bad/broken.png", b"GIF89a"), run=True),
    ),
    Case(
        "score-dangling-link",
        "score",
        SCORE[1:],
        ("gone.png", "dangling"),
        image_data(symlink("test/bad/gone.png", "/nonexistent.png"), run=True),
    ),
    Case(
        "score-link-loop",
        "score",
        SCORE[1:],
        ("loop.png", "loop"),
        image_data(symlink("test/bad/loop.png", "loop.png"), run=True),
    ),
    Case(
        "score-huge-png",
        "score",
        SCORE[1:],
        ("huge.png", "megapixels"),
        image_data(huge("test/bad/huge.png"), run=True),
    ),
    Case(
        "score-all-skipped",
        "score",
        (*SCORE[1:2], "--images={ws}/data/test/bad/broken.png", SCORE[3], "--skip_corrupt"),
        ("none of the 1 image", "broken.png"),
        image_data(raw_file("test/bad/broken.png", b"x"), run=True),
    ),
    Case(
        "score-no-images",
        "score",
        (*SCORE[1:2], "--images={ws}/data/nothing-*.png", SCORE[3]),
        ("no image files",),
        image_data(run=True),
    ),
    Case(
        "score-missing-images",
        "score",
        (*SCORE[1:2], "--images={ws}/nope", SCORE[3]),
        ("no such image file or folder",),
        image_data(run=True),
    ),
    Case(
        "score-thresholds-not-json",
        "score",
        SCORE[1:],
        ("thresholds.json", "not valid JSON"),
        lambda ctx: (image_data()(ctx), write("run/thresholds.json", "{x")(ctx)),
    ),
    Case(
        "score-thresholds-list",
        "score",
        SCORE[1:],
        ("thresholds.json", "JSON list"),
        lambda ctx: (image_data()(ctx), write("run/thresholds.json", "[1]")(ctx)),
    ),
    Case(
        "score-thresholds-values",
        "score",
        SCORE[1:],
        ("thresholds.json", "quantiles"),
        lambda ctx: (
            image_data()(ctx),
            write("run/thresholds.json", '{"quantiles": {"pool.kde": {"q95": "high"}}}')(ctx),
        ),
    ),
    Case(
        "score-classifiers-npz-truncated",
        "score",
        SCORE[1:],
        ("classifiers.npz",),
        lambda ctx: (image_data()(ctx), write("run/classifiers.npz", b"PK\x03\x04 truncated")(ctx)),
    ),
    Case(
        "score-classifiers-json-not-json",
        "score",
        SCORE[1:],
        ("classifiers.json",),
        lambda ctx: (image_data()(ctx), write("run/classifiers.json", "nope")(ctx)),
    ),
    Case(
        "score-classifiers-json-list",
        "score",
        SCORE[1:],
        ("classifiers.json", "JSON list"),
        lambda ctx: (image_data()(ctx), write("run/classifiers.json", "[]")(ctx)),
    ),
    Case(
        "score-config-not-json",
        "score",
        SCORE[1:],
        ("config.json", "not valid JSON"),
        lambda ctx: (image_data()(ctx), write("run/config.json", '{"batch_size": ')(ctx)),
    ),
    Case(
        "score-config-bad-value",
        "score",
        SCORE[1:],
        ("config.json",),
        lambda ctx: (
            image_data()(ctx),
            write("run/config.json", '{"batch_size": "many", "head_dims": 3}')(ctx),
        ),
    ),
    Case(
        "score-batch-size",
        "score",
        (*SCORE[1:], "--batch_size=0"),
        ("--batch_size",),
        image_data(run=True),
    ),
    Case(
        "score-threshold-spec",
        "score",
        (*SCORE[1:], "--threshold=q101"),
        ("q101",),
        image_data(run=True),
    ),
    Case(
        "score-not-a-run",
        "score",
        (*SCORE[1:], "--model_dir={ws}/data"),
        ("not a run folder",),
        image_data(run=True),
    ),
    # --- export (item 4) ----------------------------------------------------------------------
    Case(
        "export-out-file",
        "export",
        ("--model_dir={ws}/run", "--out={ws}/model.bin"),
        ("model.bin", "is a file"),
        lambda ctx: (finished_run(ctx), (ctx.ws / "model.bin").write_text("mine")),
    ),
    Case(
        "export-out-file-overwrite",
        "export",
        ("--model_dir={ws}/run", "--out={ws}/model.bin", "--overwrite"),
        ("model.bin", "is a file"),
        lambda ctx: (finished_run(ctx), (ctx.ws / "model.bin").write_text("mine")),
    ),
    Case(
        "export-out-run",
        "export",
        ("--model_dir={ws}/run", "--out={ws}/run"),
        ("run folder",),
        finished_run,
    ),
    Case(
        "export-out-run-checkpoints",
        "export",
        ("--model_dir={ws}/run", "--out={ws}/run/checkpoints"),
        ("run folder",),
        finished_run,
    ),
    Case(
        "export-out-foreign",
        "export",
        ("--model_dir={ws}/run", "--out={ws}/data", "--overwrite"),
        ("not an earlier export",),
        image_data(run=True),
    ),
    Case(
        "export-out-earlier",
        "export",
        ("--model_dir={ws}/run", "--out={ws}/exp"),
        ("earlier export", "--overwrite"),
        write("exp/assets.extra/droc_export.json", "{}"),
    ),
    # --- evaluate / explain: tampered embeddings (item 12) ------------------------------------
    Case(
        "evaluate-embeddings-not-npz",
        "evaluate",
        EVAL[1:],
        ("embeddings.npz", "not a readable .npz"),
        write("run/embeddings.npz", b"PK\x03\x04garbage"),
    ),
    Case(
        "evaluate-embeddings-text",
        "evaluate",
        EVAL[1:],
        ("embeddings.npz",),
        write("run/embeddings.npz", "hello"),
    ),
    Case(
        "evaluate-embeddings-no-labels",
        "evaluate",
        EVAL[1:],
        ("embeddings.npz", "test_y"),
        tampered_embeddings(lambda a: {k: v for k, v in a.items() if k != "test_y"}),
    ),
    Case(
        "evaluate-embeddings-short-labels",
        "evaluate",
        EVAL[1:],
        ("embeddings.npz", "inconsistent", "test_y"),
        tampered_embeddings(lambda a: {**a, "test_y": a["test_y"][:10]}),
    ),
    Case(
        "evaluate-embeddings-labels-values",
        "evaluate",
        EVAL[1:],
        ("embeddings.npz", "0/1"),
        tampered_embeddings(lambda a: {**a, "test_y": a["test_y"] + 5}),
    ),
    Case(
        "evaluate-embeddings-width",
        "evaluate",
        EVAL[1:],
        ("embeddings.npz", "pool features"),
        tampered_embeddings(lambda a: {**a, "test_pool": a["test_pool"][:, :3]}),
    ),
    Case(
        "evaluate-config-not-json",
        "evaluate",
        EVAL[1:],
        ("config.json", "not valid JSON"),
        write("run/config.json", "{{"),
    ),
    Case(
        "evaluate-config-bad-value",
        "evaluate",
        EVAL[1:],
        ("config.json",),
        write("run/config.json", '{"head_dims": 3}'),
    ),
    Case(
        "evaluate-not-a-run",
        "evaluate",
        ("--model_dir={ws}/data",),
        ("not a run folder",),
        image_data(),
    ),
    Case("evaluate-lock-held", "evaluate", EVAL[1:], ("in use by process {pid}",), lock_by()),
    Case(
        "explain-embeddings-short",
        "explain",
        ("--model_dir={ws}/run", "--out={ws}/expl", "--k=2", "--steps=2"),
        ("embeddings.npz", "inconsistent"),
        tampered_embeddings(lambda a: {**a, "test_y": a["test_y"][:3]}),
    ),
]


def _run_cmd(cmd: str, argv: list[str], capsys) -> tuple[int, str]:
    if cmd == "train":
        return _cli(argv, capsys)
    capsys.readouterr()
    entry = {
        "score": score.main,
        "export": export.main,
        "evaluate": rescore.main,
        "explain": explain_run.main,
    }[cmd]
    code = entry(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_bad_file_is_refused_and_nothing_changes(case, fake_run, tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)  # the default --model_dir (runs/...) would land here
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    ctx = Ctx(ws, fake_run, {"ws": str(ws)}, [])
    try:
        if case.setup is not None:
            case.setup(ctx)
        before = rel.snapshot(ws)
        argv = [a.format(**ctx.subs) for a in case.argv]
        with rel.FifoGuard([ws / f for f in case.fifos], timeout=60) as guard:
            code, err = _run_cmd(case.cmd, argv, capsys)
        assert not guard.hung, f"blocked on a named pipe:\n{err}"
        line = _assert_one_line_error(code, err, case.fragments[0].format(**ctx.subs))
        for fragment in case.fragments[1:]:
            assert fragment.format(**ctx.subs) in line, line
        assert code == cli.EXIT_USAGE, err
        assert rel.snapshot(ws) == before  # nothing deleted, rewritten or left behind
    finally:
        for proc in ctx.procs:
            proc.kill()
            proc.wait()


# ============================================================================= recoveries
# Cases of the matrix whose right outcome is exit 0: the bad input is skipped, rebuilt or
# taken over, with a warning naming it.
def _load_folder(root, cache, **kw):
    shape = (16, 16, 3)
    return datasets.load_one_class(
        "folder", root=str(root), category="good", input_shape=shape, cache_dir=str(cache), **kw
    )


def test_skip_corrupt_skips_pipes_links_and_huge_images(tmp_path, caplog):
    root = Path(rel.image_folder(tmp_path / "data"))
    os.mkfifo(root / "train/good/pipe.png")
    os.symlink("/nonexistent.png", root / "train/good/gone.png")
    os.symlink("loop.png", root / "test/bad/loop.png")
    huge("test/good/huge.png")(root)
    os.symlink(root / "train", root / "train/good/cycle")  # a folder loop is not followed
    with rel.FifoGuard([root / "train/good/pipe.png"]) as guard, caplog.at_level(logging.WARNING):
        data = _load_folder(root, tmp_path / "cache", skip_corrupt=True)
    assert not guard.hung
    assert len(data.train_x) == 4 and len(data.test_x) == 4
    for name in ("pipe.png", "loop.png", "huge.png"):
        assert name in caplog.text
    with rel.FifoGuard([root / "train/good/pipe.png"]) as guard, pytest.raises(DataError) as e:
        _load_folder(root, tmp_path / "cache")
    assert not guard.hung and "gone.png is a dangling symbolic link" in str(e.value)


def test_odd_file_names_and_symlinked_images_load(tmp_path):
    root = Path(rel.image_folder(tmp_path / "data"))
    odd = os.fsencode(root / "train/good") + b"/bad\xff\xfe.png"
    rel.save_png(odd.decode("utf-8", "surrogateescape"), seed=9)
    os.symlink(root / "train/good/0.png", root / "train/good/link.png")
    first = _load_folder(root, tmp_path / "cache")
    again = _load_folder(root, tmp_path / "cache")  # from the cache: same images
    assert len(first.train_x) == 6
    np.testing.assert_array_equal(first.train_x, again.train_x)


SCHEMA_BREAKERS = {
    "other-keys": lambda a: {"y": a["x"]},
    "wrong-shape": lambda a: {**a, "x": a["x"][:, :8]},
    "nan-float": lambda a: {**a, "x": np.full(a["x"].shape, np.nan)},
    "rows-mismatch": lambda a: {**a, "paths": a["paths"][:1]},
    "other-fingerprint": lambda a: {**a, "__fingerprint__": np.array("0" * 64)},
    "no-fingerprint": lambda a: {k: v for k, v in a.items() if k != "__fingerprint__"},
    "truncated": None,
}


@pytest.mark.parametrize("breaker", SCHEMA_BREAKERS, ids=list(SCHEMA_BREAKERS))
def test_bad_cache_entry_is_rebuilt_with_a_warning(breaker, tmp_path, caplog):
    root = rel.image_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    good = _load_folder(root, cache)
    entry = next(p for p in cache.iterdir() if p.name.startswith("folder-good-"))
    if SCHEMA_BREAKERS[breaker] is None:
        entry.write_bytes(entry.read_bytes()[:100])
    else:
        with np.load(entry) as z:
            arrays = SCHEMA_BREAKERS[breaker]({k: z[k] for k in z.files})
        entry.write_bytes(npz_bytes(**arrays))
    with caplog.at_level(logging.WARNING):
        again = _load_folder(root, cache)
    assert f"Ignoring the cache file {entry}" in caplog.text
    np.testing.assert_array_equal(again.train_x, good.train_x)
    with np.load(entry) as z:  # rewritten as a valid entry
        assert set(z.files) == {"x", "paths", "bad_paths", "bad_msgs", "aspects", "__fingerprint__"}


def test_16bit_decoding_stays_in_row_strips(tmp_path):
    """A 3000x3000 16-bit PNG: no float64 copy of the whole image (72 MB) is ever made."""
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((3000, 3000), 40000, np.uint16)).save(path)
    tracemalloc.start()
    try:
        arr = images.decode_image(str(path), (16, 16, 1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, peak
    assert int(arr[0, 0, 0]) == round(40000 / 257)


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path, monkeypatch):
    """Above REDUCE_ABOVE a JPEG is decoded at 1/2..1/8 scale, so the cap applies to that size;
    a PNG of the same size cannot be reduced while decoding and is refused."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (256, 256, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "REDUCE_ABOVE", 1000)
    monkeypatch.setenv("DROC_MAX_IMAGE_PIXELS", "5000")  # 256x256 = 65536 > 5000
    out = images.decode_image(str(tmp_path / "big.jpg"), (16, 16, 3))  # drafted to 32x32
    assert out.shape == (16, 16, 3)
    with pytest.raises(DataError, match=r"big\.png is 256x256"):
        images.decode_image(str(tmp_path / "big.png"), (16, 16, 3))


def test_score_skip_corrupt_lists_skipped_files_in_the_csv(fake_run, tmp_path, capsys):
    root = Path(rel.image_folder(tmp_path / "data")) / "test"
    (root / "bad/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nno")
    os.mkfifo(root / "bad/pipe.png")
    os.symlink("/nonexistent.png", root / "good/gone.png")
    odd = os.fsencode(root / "good") + b"/odd\xff.png"
    rel.save_png(odd.decode("utf-8", "surrogateescape"))
    out = tmp_path / "scores.csv"
    argv = [f"--model_dir={fake_run}", f"--images={root}", f"--out={out}", "--skip_corrupt"]
    with rel.FifoGuard([root / "bad/pipe.png"]) as guard:
        code = score.main(argv)
    err = capsys.readouterr().err
    assert not guard.hung and code == 0, err
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "path" and rows[0][-1] == "skipped"
    scored = [r for r in rows[1:] if not r[-1]]
    skipped = {os.path.basename(r[0]): r[-1] for r in rows[1:] if r[-1]}
    assert len(scored) == 5 and all(r[1] for r in scored)
    assert os.fsencode(scored[-1][0]).endswith(b"odd\xff.png")  # the exact bytes on disk
    assert set(skipped) == {"broken.png", "pipe.png", "gone.png"}
    assert "named pipe" in skipped["pipe.png"] and "dangling" in skipped["gone.png"]
    # --overwrite replaces the CSV (and only with it).
    one = [f"--model_dir={fake_run}", f"--images={root}/good/0.png", f"--out={out}"]
    assert score.main(one) == cli.EXIT_USAGE
    assert score.main([*one, "--overwrite"]) == 0
    with open(out, newline="") as f:
        assert len(list(csv.reader(f))) == 2


def test_stale_lock_and_metrics_less_summary_do_not_block_a_rerun(fake_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    proc = rel.live_process()
    proc.kill()
    proc.wait()
    (run / ".droc_lock").write_text(rel.lock_record(proc.pid))  # left by a SIGKILLed run
    argv = [*rel.TINY, "--num_epoch=1", f"--model_dir={run}"]
    code, err = _cli(argv, capsys)
    assert code == 0, err  # already complete: its results are printed
    summary = json.loads((run / "summary.json").read_text())
    del summary["metrics"]
    (run / "summary.json").write_text(json.dumps(summary))
    code, err = _cli(argv, capsys)
    assert code == 0, err  # evaluated again from the last checkpoint
    assert "pool.kde" in json.loads((run / "summary.json").read_text())["metrics"]
    assert not (run / ".droc_lock").exists()


def test_failed_start_leaves_nothing_and_the_corrected_command_runs(tmp_path, capsys):
    run = tmp_path / "run"
    argv = [*rel.TINY, *BIG_BATCH, f"--model_dir={run}"]
    _assert_one_line_error(*_cli([*argv, "--aug_list=crop999999,+"], capsys), "crop size")
    assert not run.exists()
    # Diverging before the first checkpoint: the folder holds no checkpoint, so the command
    # with a corrected learning rate is not refused as "a run with different settings".
    diverge = [*argv, "--learning_rate=1e30", "--num_epoch=3", "--ckpt_epoch=0", "--ckpt_steps=0"]
    _assert_one_line_error(*_cli(diverge, capsys), "NaN")
    assert not (run / "checkpoints").exists()
    code, err = _cli(argv, capsys)
    assert code == 0, err
