"""One replica vs two replicas on the same global batch: same loss, same updated weights.

This is the class of bug the reference had (spec §11 item 3: the contrastive loss divided by
the local batch, so two GPUs took a twice-too-large step). BatchNorm is synchronised here,
because unsynchronised BN computes statistics over half the batch on each replica and is
therefore *meant* to differ (see docs/operations.md).
"""

from __future__ import annotations

import conftest
import numpy as np
import pytest
import tensorflow as tf
from conftest import mirrored

from deep_representation_one_class import config as config_lib
from deep_representation_one_class.training import build, loop


def _cfg(method: str, **kw) -> config_lib.Config:
    return conftest.tiny_config(method, **{"sync_bn": True, "weight_decay": 1e-3, **kw})


def _strategy(n: int) -> tf.distribute.Strategy:
    return mirrored(n)


def _step(cfg, n_replicas, views, init_weights=None):
    strategy = _strategy(n_replicas)
    n_views = len(views)
    trainer = loop.Trainer(cfg, strategy, n_views, build.StepPlan(10, 10, 1))
    if init_weights is not None:
        trainer.model.set_weights(init_weights)
    ds = tf.data.Dataset.from_tensors(tuple(tf.constant(v) for v in views)).repeat()
    it = iter(strategy.experimental_distribute_dataset(ds))
    stats, bad = trainer.train_fn()(it, tf.constant(1, tf.int64))
    assert int(bad) == -1
    return stats.numpy(), trainer.model.get_weights()


@pytest.mark.parametrize(
    "method,kw", [("contrastive", {}), ("contrastive", {"symmetric_loss": True}), ("rotation", {})]
)
def test_one_vs_two_replicas(method, kw):
    conftest.require_two_replicas()
    cfg = _cfg(method, **kw)
    n_views = build.make_views(cfg).num_train
    rng = np.random.default_rng(0)
    views = [rng.uniform(size=(8, 16, 16, 3)).astype(np.float32) for _ in range(n_views)]
    tf.keras.utils.set_random_seed(0)
    init = loop.Trainer(cfg, _strategy(1), n_views, build.StepPlan(10, 10, 1)).model.get_weights()
    stats1, w1 = _step(cfg, 1, views, init_weights=init)
    stats2, w2 = _step(cfg, 2, views, init_weights=init)
    np.testing.assert_allclose(stats1[:3], stats2[:3], rtol=2e-4, atol=1e-6)  # loss, xe, l2
    np.testing.assert_allclose(stats1[3], stats2[3], atol=1e-6)  # accuracy
    changed = 0
    for a, b, c in zip(w1, w2, init):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)
        changed += int(not np.allclose(a, c))
    assert changed > len(w1) // 3  # the step really updated the weights
