"""Exact resumption after a crash, and run folders that a crash or a rerun cannot damage.

The central test kills a real training process with SIGKILL in the middle of an epoch,
restarts it with the same command and checks that the final checkpoint (weights, BatchNorm
statistics, optimizer slots, step) and the evaluation metrics are bit-identical to those of a
run that was never interrupted. That holds because the data order and every augmentation
draw are pure functions of (seed, global step) and ``--deterministic`` pins the kernels.
"""

from __future__ import annotations

import os
import signal

import _reliability as rel
import conftest
import numpy as np
import pytest
import tensorflow as tf

from deep_representation_one_class import config as config_lib
from deep_representation_one_class.datasets import pipeline
from deep_representation_one_class.errors import NonFiniteLossError, RunError
from deep_representation_one_class.training import build, run_dir, runner
from deep_representation_one_class.utils import io, run_folder


# ----------------------------------------------------------------------------- the data stream
def _index_views(image, seed):
    """Two 'views' that expose which image and which augmentation seed produced them."""
    value = tf.cast(image[0, 0, 0], tf.float32)
    noise = tf.random.stateless_uniform([], seed=seed)
    return (tf.fill([2, 2, 1], value), tf.fill([2, 2, 1], noise))


def _stream(ds) -> list[tuple[np.ndarray, ...]]:
    return [tuple(v.numpy() for v in batch) for batch in ds]


@pytest.fixture(scope="module")
def ten_images() -> np.ndarray:
    return np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)


@pytest.mark.parametrize("start", [1, 2, 3, 5, 7])
def test_stream_from_any_step_equals_the_uninterrupted_stream(ten_images, start):
    # 10 images, batch 4: 2 steps per epoch, so odd starts resume mid-epoch.
    full = _stream(pipeline.make_train_dataset(ten_images, _index_views, 4, 3, total_steps=8))
    resumed = pipeline.make_train_dataset(
        ten_images, _index_views, 4, 3, start_step=start, total_steps=8
    )
    got = _stream(resumed)
    assert len(full) == 8 and len(got) == 8 - start
    for a, b in zip(full[start:], got):
        np.testing.assert_array_equal(a[0], b[0])  # same images
        np.testing.assert_array_equal(a[1], b[1])  # same augmentation seeds


def test_epochs_reshuffle_and_visit_every_image(ten_images):
    batches = _stream(pipeline.make_train_dataset(ten_images, _index_views, 5, 0, total_steps=4))
    epochs = [np.concatenate([b[0][:, 0, 0, 0] for b in batches[i : i + 2]]) for i in (0, 2)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(10))
    assert epochs[0].tolist() != epochs[1].tolist()


@pytest.mark.parametrize("shards,out_batch", [(2, None), (2, 2), (4, 1), (1, 2)])
def test_shards_partition_every_global_batch_in_order(ten_images, shards, out_batch):
    full = _stream(pipeline.make_train_dataset(ten_images, _index_views, 4, 1, 1, 6))
    parts = [
        _stream(
            pipeline.make_train_dataset(
                ten_images, _index_views, 4, 1, 1, 6, shards, k, out_batch=out_batch
            )
        )
        for k in range(shards)
    ]
    per_step = len(parts[0]) // len(full)
    for step, batch in enumerate(full):
        pieces = [p[step * per_step + j] for p in parts for j in range(per_step)]
        for view in range(2):
            np.testing.assert_array_equal(np.concatenate([q[view] for q in pieces]), batch[view])


def test_bad_shards_are_refused(ten_images):
    with pytest.raises(ValueError, match="shard"):
        pipeline.make_train_dataset(ten_images, _index_views, 6, 0, num_shards=4)
    with pytest.raises(ValueError, match="per-replica batch"):
        pipeline.make_train_dataset(ten_images, _index_views, 8, 0, num_shards=2, out_batch=3)


# ----------------------------------------------------------------------------- SIGKILL + resume
@pytest.mark.slow  # two real training processes, about 30 s
def test_sigkill_mid_epoch_then_rerun_matches_uninterrupted_run(tmp_path):
    # 3 epochs x 8 steps; checkpoints every 3 steps only, so every checkpoint before the
    # end is in the middle of an epoch.
    flags = ["--deterministic", "--num_epoch=3", "--ckpt_steps=3", "--ckpt_epoch=0"]
    ref_dir, crash_dir = str(tmp_path / "ref"), str(tmp_path / "crash")
    ref = rel.start(*flags, f"--model_dir={ref_dir}")
    victim = rel.start(*flags, f"--model_dir={crash_dir}")
    try:
        killed_after = rel.wait_for_checkpoint(victim, crash_dir, 3)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    resume_from = rel.latest_step(crash_dir)
    assert resume_from is not None and resume_from % 8 and resume_from < 24, resume_from
    assert not os.path.exists(os.path.join(crash_dir, "summary.json"))

    resumed = rel.run(*flags, f"--model_dir={crash_dir}")
    _, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed from {crash_dir}" in resumed.stderr and killed_after >= 3

    want, got = rel.load_checkpoint(ref_dir), rel.load_checkpoint(crash_dir)
    assert set(want) == set(got)
    assert any("optimizer" in k for k in want) and any("moving_mean" in k for k in want)
    differ = [k for k in want if not np.array_equal(want[k], got[k])]
    assert not differ, differ[:5]
    ref_summary = rel.read_json(os.path.join(ref_dir, "summary.json"))
    got_summary = rel.read_json(os.path.join(crash_dir, "summary.json"))
    assert got_summary["metrics"] == ref_summary["metrics"]
    assert got_summary["run"]["global_step"] == ref_summary["run"]["global_step"] == 24


# ----------------------------------------------------------------------------- run folders
def _eval_only_config(tmp_path, **kw) -> config_lib.Config:
    base = dict(
        num_epoch=0,
        strategy="default",
        classifiers=("auc",),
        model_dir=str(tmp_path / "run"),
        eval_batch_size=64,
    )
    return conftest.tiny_config(**{**base, **kw})


def test_finished_run_is_never_overwritten_and_force_init_restarts(tmp_path):
    cfg = _eval_only_config(tmp_path)
    assert runner.run(cfg).status == "complete"
    summary = os.path.join(cfg.model_dir, "summary.json")
    with open(summary, "rb") as f:
        before = f.read()
    stamp = os.stat(summary).st_mtime_ns
    again = runner.run(cfg)
    assert again.status == "already_complete"
    with open(summary, "rb") as f:
        assert f.read() == before
    assert os.stat(summary).st_mtime_ns == stamp
    # --force_init on a marked run folder deletes what the run wrote and reruns; a file the
    # user put there stays.
    notes = os.path.join(cfg.model_dir, "NOTES.txt")
    with open(notes, "w") as f:
        f.write("x")
    assert runner.run(cfg.replace(force_init=True)).status == "complete"
    with open(notes) as f:
        assert f.read() == "x"
    with open(summary, "rb") as f:
        assert f.read() != before  # rewritten (its timings differ)
    assert os.path.exists(os.path.join(cfg.model_dir, run_folder.MARKER))


def test_force_init_refuses_a_folder_without_the_marker(tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("do not delete")
    cfg = _eval_only_config(tmp_path, model_dir=str(folder), force_init=True)
    with pytest.raises(RunError, match="not a run folder"):
        runner.run(cfg)
    assert (folder / "thesis.tex").read_text() == "do not delete"
    assert sorted(os.listdir(folder)) == ["thesis.tex"]


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "summary.json")
    io.write_json(path, {"metrics": {"pool.kde": 90.0}})
    with pytest.raises(TypeError):
        io.write_json(path, {"metrics": {"pool.kde": 91.0}, "bad": object()})
    assert io.read_json(path) == {"metrics": {"pool.kde": 90.0}}
    npz = str(tmp_path / "embeddings.npz")
    io.write_npz(npz, a=np.arange(3))

    class Exploding:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.write_npz(npz, a=np.arange(5), b=Exploding())
    np.testing.assert_array_equal(np.load(npz)["a"], np.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["embeddings.npz", "summary.json"]  # no temp files


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    cfg = _eval_only_config(tmp_path, num_epoch=1)
    model = build.make_model(cfg)
    saver = run_dir.Checkpoints(model, str(tmp_path), chief=True)
    assert saver.save(1).endswith("ckpt-1")
    assert saver.save(1).endswith("ckpt-1")  # same step: not written twice
    model.weights[0].assign(np.full(model.weights[0].shape, np.inf, np.float32))
    with pytest.raises(NonFiniteLossError, match=r"NaN/Inf by step 2.*ckpt-1"):
        saver.save(2)
    assert rel.latest_step(str(tmp_path)) == 1
