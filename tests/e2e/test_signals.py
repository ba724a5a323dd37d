"""Interruptions and divergence: SIGTERM/SIGINT save and exit cleanly, NaN stops the run.

* A preempted run (SIGTERM from a cluster manager, Ctrl-C) writes a checkpoint at the step it
  reached, says how to resume and exits with 128 + the signal number; the same command then
  finishes the run.
* A run whose loss turns NaN/Inf stops with one ``error:`` line naming the step, exit code 2,
  no traceback, and the newest checkpoint on disk is the last one from before the divergence.
"""

from __future__ import annotations

import os
import signal

import _reliability as rel
import conftest
import numpy as np
import pytest
import tensorflow as tf

from deep_representation_one_class import cli
from deep_representation_one_class import config as config_lib
from deep_representation_one_class.datasets import pipeline
from deep_representation_one_class.training import runner

RUN = ["--num_epoch=4", "--ckpt_steps=2", "--ckpt_epoch=0"]  # 32 steps


@pytest.mark.slow  # four real training processes, about 30 s
def test_sigterm_and_sigint_checkpoint_exit_and_the_rerun_finishes(tmp_path):
    dirs = {sig: str(tmp_path / sig.name) for sig in (signal.SIGTERM, signal.SIGINT)}
    procs = {sig: rel.start(*RUN, f"--model_dir={d}") for sig, d in dirs.items()}
    errs = {}
    try:
        for sig, proc in procs.items():
            rel.wait_for_checkpoint(proc, dirs[sig], 2)
            proc.send_signal(sig)
        for sig, proc in procs.items():
            errs[sig] = proc.communicate(timeout=120)[1]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for sig, proc in procs.items():
        err = errs[sig]
        assert proc.returncode == 128 + sig, (sig, proc.returncode, err)
        assert f"{sig.name} received" in err and "Rerun the same command to resume" in err
        assert "Traceback" not in err
        step = rel.latest_step(dirs[sig])
        assert step is not None and 2 <= step < 32
        assert f"at step {step}." in err  # the message names the saved step
        assert not os.path.exists(os.path.join(dirs[sig], "summary.json"))

    # The same command resumes from the saved step and finishes the run.
    d = dirs[signal.SIGTERM]
    done = rel.run(*RUN, f"--model_dir={d}")
    assert done.returncode == 0, done.stderr
    assert f"Resumed from {d}" in done.stderr
    summary = rel.read_json(os.path.join(d, "summary.json"))
    assert summary["run"]["complete"] and summary["run"]["global_step"] == 32


# ----------------------------------------------------------------------------- NaN / Inf
def _tiny(tmp_path, **kw) -> config_lib.Config:
    base = dict(
        num_epoch=2,
        strategy="default",
        classifiers=("auc",),
        model_dir=str(tmp_path / "run"),
        eval_batch_size=64,
        ckpt_steps=2,
        ckpt_epoch=0,
    )
    return conftest.tiny_config(**{**base, **kw})


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    poison_from = 5  # batches 0..4 are clean: steps 1..5 train, step 6 sees NaN inputs
    real = pipeline.make_train_dataset

    def poisoned(*args, **kwargs):
        start = kwargs.get("start_step", 0)
        ds = real(*args, **kwargs)

        def poison(i, views):
            bad = i + start >= poison_from
            return tuple(tf.where(bad, float("nan"), v) for v in views)

        return ds.enumerate().map(lambda i, views: poison(i, views))

    monkeypatch.setattr(pipeline, "make_train_dataset", poisoned)
    cfg = _tiny(tmp_path)
    code = cli.guard(lambda: runner.run(cfg))
    err = capsys.readouterr().err
    lines = rel.error_lines(err)
    assert code == cli.EXIT_USAGE
    assert len(lines) == 1 and "NaN" in lines[0] and "step 6" in lines[0], err
    assert "ckpt-4" in lines[0] and "Traceback" not in err
    assert rel.latest_step(cfg.model_dir) == 4
    weights = rel.load_checkpoint(os.path.join(cfg.model_dir, "checkpoints", "ckpt-4"))
    assert all(np.isfinite(v).all() for v in weights.values() if v.dtype.kind == "f")
    assert not os.path.exists(os.path.join(cfg.model_dir, "summary.json"))


@pytest.mark.slow  # a real training process, about 11 s
def test_diverging_run_exits_nonzero_without_traceback(tmp_path):
    # A learning rate of 1e30 makes the weights non-finite after the first update; with a
    # checkpoint due after every step, the save itself must refuse them.
    run_dir = str(tmp_path / "run")
    proc = rel.run(
        "--learning_rate=1e30", "--ckpt_steps=1", "--num_epoch=1", f"--model_dir={run_dir}"
    )
    lines = rel.error_lines(proc.stderr)
    assert proc.returncode == cli.EXIT_USAGE, proc.stderr
    assert len(lines) == 1 and "NaN" in lines[0] and "step" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    for name in os.listdir(os.path.join(run_dir, "checkpoints")):
        if name.endswith(".index"):
            path = os.path.join(run_dir, "checkpoints", name[: -len(".index")])
            for v in rel.load_checkpoint(path).values():
                if v.dtype.kind == "f":
                    assert np.isfinite(v).all(), name
    assert not os.path.exists(os.path.join(run_dir, "summary.json"))
