"""Several replicas and several machines compute what one replica computes.

* The training stream is split so that global replica ``r`` gets rows ``[r*b, (r+1)*b)`` of
  every global batch (worker-major, as MultiWorkerMirroredStrategy numbers replicas).
* One vs two mirrored replicas through the real data path give the same losses and weights.
* Feature extraction keeps the sample order with two replicas and four test-time views.
* Two worker processes on localhost (``--strategy=multi_worker``) match one process on the
  same global batch; only the chief writes the run folder.

The comparisons use the un-augmented contrastive views ``x,x``: with the default strong
augmentation, the tiny test network is so ill-conditioned on the stripe images that float32
summation order alone (one vs two replicas) moves the first update by a few percent, which
would hide real bugs behind a loose tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import types

import _reliability as rel
import conftest
import numpy as np
import pytest
import tensorflow as tf
from conftest import mirrored

from deep_representation_one_class import config as config_lib
from deep_representation_one_class.datasets import pipeline
from deep_representation_one_class.evaluation import features
from deep_representation_one_class.training import build, distribute, loop


def _two_cpus() -> None:
    if len(tf.config.list_logical_devices("CPU")) < 2:
        conftest.require_two_replicas()


def _mirrored(n: int) -> tf.distribute.Strategy:
    return mirrored(n)


def _cfg(method: str = "contrastive", **kw) -> config_lib.Config:
    return conftest.tiny_config(method, **{"sync_bn": True, "weight_decay": 1e-3, **kw})


def _tagged_views(image, seed):
    return (tf.cast(image, tf.float32), tf.cast(image, tf.float32) + 1000.0)


def test_each_replica_gets_its_contiguous_rows():
    _two_cpus()
    images = np.arange(16, dtype=np.uint8).reshape(16, 1, 1, 1)
    full = pipeline.make_train_dataset(images, _tagged_views, 8, 5, total_steps=2)
    full = [b[0].numpy().ravel() for b in full]
    strategy = _mirrored(2)
    dist = loop.distributed_train_dataset(strategy, images, _tagged_views, 8, 5, 0, 2)
    for step, batch in enumerate(dist):
        views = [strategy.experimental_local_results(v) for v in batch]
        assert [r.shape[0] for r in views[0]] == [4, 4]
        np.testing.assert_array_equal(
            np.concatenate([r.numpy().ravel() for r in views[0]]), full[step]
        )
        np.testing.assert_array_equal(views[1][1].numpy(), views[0][1].numpy() + 1000.0)


def test_one_vs_two_replicas_through_the_real_data_path():
    _two_cpus()
    cfg = _cfg(aug_list="x,x")
    data = build.load_data(cfg)
    view_fn, _, n_views, _ = build.make_views(cfg)
    runs = {}
    for n in (1, 2):
        strategy = _mirrored(n)
        tf.keras.utils.set_random_seed(0)
        trainer = loop.Trainer(cfg, strategy, n_views, build.StepPlan(8, 10, 2))
        init = trainer.model.get_weights()
        it = iter(loop.distributed_train_dataset(strategy, data.train_x, view_fn, 8, 0))
        losses = [trainer.train_fn()(it, tf.constant(1, tf.int64))[0].numpy() for _ in range(2)]
        runs[n] = (np.array(losses), trainer.model.get_weights(), init)
    (l1, w1, i1), (l2, w2, i2) = runs[1], runs[2]
    for a, b in zip(i1, i2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(l1[:, :3], l2[:, :3], rtol=1e-4)
    moved = np.sqrt(sum(np.sum((a - c) ** 2) for a, c in zip(w1, i1)))
    apart = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(w1, w2)))
    assert moved > 1e-2 and apart / moved < 1e-3, (moved, apart)


def test_feature_extraction_keeps_sample_order_with_two_replicas_and_four_views():
    _two_cpus()
    cfg = _cfg("rotation")
    _, test_fn, _, n_test_views = build.make_views(cfg)
    assert n_test_views == 4
    with _mirrored(2).scope():
        model = build.make_model(cfg)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(11, 32, 32, 3), dtype=np.uint8)
    got = features.extract(model, images, test_fn, batch_size=4, with_logits=True)
    assert got["pool"].shape[0] == got["embed"].shape[0] == 11
    assert got["view_logits"].shape[:2] == (4, 11)
    for i, image in enumerate(images):
        views = test_fn(tf.constant(image), tf.constant([0, 0], tf.int32))
        outs = [model(v[None], training=False) for v in views]
        np.testing.assert_allclose(got["pool"][i], outs[0]["pools"][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["embed"][i], outs[0]["embeds"][0], rtol=1e-4, atol=1e-5)
        for v, out in enumerate(outs):
            np.testing.assert_allclose(
                got["view_logits"][v, i], out["logits"][0], rtol=1e-4, atol=1e-5
            )
    # The views really differ (a mix-up of views would not go unnoticed).
    assert not np.allclose(got["view_logits"][0], got["view_logits"][1])


def _resolver(tf_config: dict) -> types.SimpleNamespace:
    os.environ["TF_CONFIG"] = json.dumps(tf_config)
    try:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        # Read everything now: the resolver reads TF_CONFIG lazily.
        spec = resolver.cluster_spec()
        task = (resolver.task_type, resolver.task_id)
    finally:
        del os.environ["TF_CONFIG"]
    fixed = types.SimpleNamespace(cluster_spec=lambda: spec, task_type=task[0], task_id=task[1])
    return types.SimpleNamespace(cluster_resolver=fixed)


def test_chief_and_worker_count_from_tf_config():
    workers = ["127.0.0.1:1", "127.0.0.1:2"]
    w0 = _resolver({"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}})
    w1 = _resolver({"cluster": {"worker": workers}, "task": {"type": "worker", "index": 1}})
    assert distribute.is_chief(w0) and not distribute.is_chief(w1)
    assert distribute.num_workers(w0) == 2 and distribute.worker_name(w1) == "worker:1"
    with_chief = {"chief": ["127.0.0.1:3"], "worker": workers}
    c = _resolver({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    w = _resolver({"cluster": with_chief, "task": {"type": "worker", "index": 0}})
    assert distribute.is_chief(c) and not distribute.is_chief(w)
    assert distribute.num_workers(c) == 3
    local = tf.distribute.get_strategy()
    assert distribute.is_chief(local) and distribute.num_workers(local) == 1
    assert distribute.any_worker_fn(local)(True) is True


# ----------------------------------------------------------------------------- two processes
@pytest.mark.slow
def test_two_workers_match_one_worker(tmp_path):
    flags = [
        "--aug_list=x,x",
        "--num_epoch=1",
        "--num_batch=2",
        "--ckpt_steps=1",
        "--ckpt_epoch=0",
        "--sync_bn",
        "--weight_decay=1e-3",
        "--classifiers=auc",
    ]
    ports = rel.free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    procs = {}
    temps = {}
    for i in range(2):
        temps[i] = tmp_path / f"tmp{i}"
        temps[i].mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs[f"worker{i}"] = rel.start(
            *flags,
            "--strategy=multi_worker",
            f"--model_dir={multi}",
            TF_CONFIG=tf_config,
            TMPDIR=str(temps[i]),
        )
    procs["single"] = rel.start(*flags, "--strategy=default", f"--model_dir={single}")
    outs = {}
    try:
        for name, proc in procs.items():
            outs[name] = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        pytest.fail("a multi-worker process hung")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outs[name][1][-3000:])
    assert "worker done" in outs["worker1"][0]

    # Only the chief wrote the run folder; the other worker's checkpoints went to its
    # temporary folder, which is gone.
    assert sorted(os.listdir(multi)) == sorted(os.listdir(single))
    assert {".droc_run", "checkpoints", "config.json", "summary.json", "tb"} <= set(
        os.listdir(multi)
    )
    assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == sorted(
        os.listdir(os.path.join(single, "checkpoints"))
    )
    assert not os.listdir(temps[1]) and not os.listdir(temps[0])
    assert rel.read_json(os.path.join(multi, "summary.json"))["run"]["num_replicas"] == 2
    assert rel.read_json(os.path.join(single, "summary.json"))["run"]["num_replicas"] == 1

    def model_vars(path):
        return {k: v for k, v in rel.load_checkpoint(path).items() if k.startswith("model/")}

    ckpts = {
        (name, step): model_vars(os.path.join(d, "checkpoints", f"ckpt-{step}"))
        for name, d in (("multi", multi), ("single", single))
        for step in (1, 2)
    }
    keys = sorted(ckpts["single", 2])
    assert keys == sorted(ckpts["multi", 2]) and len(keys) > 20

    def dist(a, b):
        return np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in keys))

    step2 = dist(ckpts["single", 2], ckpts["single", 1])  # size of one update
    assert step2 > 1e-2
    for step in (1, 2):
        assert dist(ckpts["multi", step], ckpts["single", step]) / step2 < 1e-3, step
