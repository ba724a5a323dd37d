"""Mean-shifted contrastive fine-tuning: the loss against a numpy rewrite, the fixed centre,
the refusal of a backbone without pretrained weights, and a tiny end-to-end run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import tiny_config

from deep_representation_one_class import resolve
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.methods import mean_shifted


def _np_nt_xent(s1, s2, tau):
    """SimCLR's symmetric NT-Xent, written out: anchor i of view a, positive i of view b, and
    every other row of both views as negatives."""
    b = len(s1)
    both = np.concatenate([s1, s2])
    sim = both @ both.T / tau
    np.fill_diagonal(sim, -np.inf)
    pos = np.concatenate([np.arange(b, 2 * b), np.arange(b)])
    logz = np.log(np.exp(sim).sum(1))
    return logz - sim[np.arange(2 * b), pos]


def test_the_loss_is_shifted_nt_xent_plus_the_angular_term(lite0_cache):
    from deep_representation_one_class.training import build, distribute, loop

    cfg = tiny_config("mean_shifted", head_dims=(), msc_center_examples=4, batch_size=4)
    n_views = build.make_views(cfg)[2]
    trainer = loop.Trainer(
        cfg, distribute.make_strategy("default"), n_views, build.StepPlan(1, 1, 1)
    )
    model = trainer.model
    rng = np.random.default_rng(0)
    x1, x2 = (rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32) for _ in range(2))
    method = trainer.method
    loss, _ = method.per_example(model, (x1, x2), training=True)
    buf = model.get_layer(mean_shifted.CENTER_LAYER)
    # The first batch (4 examples) fills the centre; it is then fixed.
    assert float(buf.count.numpy()) == 4.0
    pools = model(np.concatenate([x1, x2]), training=False)["pools"].numpy().astype(np.float64)
    z = pools / np.linalg.norm(pools, axis=1, keepdims=True)
    np.testing.assert_allclose(buf.center.numpy(), z[:4].mean(0), rtol=1e-4, atol=1e-5)
    c = z[:4].mean(0)
    s = (z - c) / np.linalg.norm(z - c, axis=1, keepdims=True)
    want = _np_nt_xent(s[:4], s[4:], cfg.msc_temperature) + ((z - c) ** 2).sum(1)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-3, atol=1e-3)
    method.per_example(model, (x2, x1), training=True)
    assert float(buf.count.numpy()) == 4.0, "the centre must stay fixed once it is estimated"
    np.testing.assert_allclose(buf.center.numpy(), c, rtol=1e-4, atol=1e-5)
    assert any(w is buf.center for w in model.non_trainable_weights)  # checkpointed


def test_a_backbone_without_pretrained_weights_is_refused():
    with pytest.raises(ConfigError, match="mean_shifted fine-tunes pretrained features"):
        resolve.validate(resolve.build(method="mean_shifted", backbone="resnet18"))


@pytest.mark.slow  # about 2 minutes on 2 cores: the network runs at 128 px
def test_a_tiny_run_end_to_end(lite0_cache, tmp_path):
    from deep_representation_one_class.training import runner

    cfg = tiny_config(
        "mean_shifted",
        head_dims=(),
        train_steps=3,
        msc_center_examples=8,
        model_dir=str(tmp_path / "run"),
        classifiers=("gde", "auc"),
    )
    runner.run(cfg)
    with open(os.path.join(tmp_path, "run", "summary.json")) as f:
        summary = json.load(f)
    assert summary["config"]["method"] == "mean_shifted"
    assert summary["backbone"]["name"] == "efficientnet_lite0"
    assert 0.0 <= summary["metrics"]["pool.gde"] <= 100.0
