"""The Table 7 baselines (random ResNet-18, ImageNet ResNet-50, RotNet, denoising AE) run through
the real ``runner.run`` on the tiny synthetic dataset, write a summary.json with their own
method name, and are labelled as the paper's rows by the aggregation."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import resolve
from deep_representation_one_class.augment.grammar import ROTATIONS
from deep_representation_one_class.methods import METHODS, denoising, imagenet
from deep_representation_one_class.reports import run_records
from deep_representation_one_class.training import build, distribute, loop, runner

SHAPE = (16, 16, 3)  # smaller than the defaults: every run here is tracing-bound


def tiny(root, method, name=None, **kw) -> config_lib.Config:
    base = dict(
        method=method,
        dataset="fake",
        category="0",
        input_shape=SHAPE,
        net_type="resnet10",
        net_width=0.0625,
        batch_size=8,
        num_epoch=METHODS.get(method).defaults.get("num_epoch", 1),
        num_batch=2,
        strategy="default",
        classifiers=("kde", "auc"),  # cheap; GDE on 2048-d ResNet-50 features is not
        eval_batch_size=64,
        report=False,
    )
    base.update(kw)
    return resolve.build(**base).replace(model_dir=str(root / (name or method)))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Randomly initialised ResNet-50 weights, saved the way a user's local file would be."""
    path = tmp_path_factory.mktemp("weights") / "resnet50_random.weights.h5"
    keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_shape=(32, 32, 3)
    ).save_weights(str(path))
    return str(path)


@pytest.fixture(scope="module")
def baseline_runs(tmp_path_factory, weights_file):
    """One finished run folder per baseline; returns {name: (config, RunResult)}."""
    root = tmp_path_factory.mktemp("baselines")
    configs = {
        "random": tiny(root, "contrastive", "random", head_dims=(), num_epoch=0),
        # Plain rotations: the colour/crop ops add tracing time and are tested elsewhere.
        "rotnet": tiny(root, "rotnet", aug_list="x" + ROTATIONS),
        "denoising": tiny(root, "denoising"),
        "imagenet": tiny(root, "imagenet", imagenet_weights=weights_file),
    }
    # ResNet-50 at 224x224 is too slow for a CPU unit test; the weights do not depend on the
    # input size, so the smallest size Keras accepts (32) exercises the same code.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(imagenet, "IMAGE_SIZE", 32)
        runs = {name: (cfg, runner.run(cfg)) for name, cfg in configs.items()}
    return root, runs


def _summary(cfg):
    with open(os.path.join(cfg.model_dir, "summary.json")) as f:
        return json.load(f)


@pytest.mark.parametrize(
    "name,method,steps",
    [
        ("random", "contrastive", 0),
        ("rotnet", "rotnet", 2),
        ("denoising", "denoising", 2),
        ("imagenet", "imagenet", 0),
    ],
)
def test_each_baseline_writes_its_summary(baseline_runs, name, method, steps):
    _, runs = baseline_runs
    cfg, result = runs[name]
    assert result.status == "complete" and result.global_step == steps
    summary = _summary(cfg)
    assert summary["config"]["method"] == method
    assert summary["run"]["complete"] is True
    assert {"pool.kde", "pool.auc"} <= set(summary["metrics"])
    for value in summary["metrics"].values():
        assert 0.0 <= value <= 100.0
    # Horizontal vs vertical stripes: even an untrained network's features separate them.
    assert summary["metrics"]["pool.auc"] > 90, summary["metrics"]


def test_aggregate_labels_the_baselines_as_table7_rows(baseline_runs):
    root, _ = baseline_runs
    runs, unfinished, _ = run_records.scan_runs([str(root)])
    assert not unfinished
    labels = {os.path.basename(r.path): r.representation for r in runs}
    assert labels == {
        "random": "ResNet-18 (random)",
        "rotnet": "RotNet",
        "denoising": "Denoising",
        "imagenet": "ResNet-50 (ImageNet)",
    }


def test_rotnet_scores_with_its_rotation_classifier_on_pools(baseline_runs):
    _, runs = baseline_runs
    cfg, result = runs["rotnet"]
    assert {"logit.auc", "dscore.auc"} <= set(result.metrics)
    emb = np.load(os.path.join(cfg.model_dir, "embeddings.npz"))
    # No MLP head: the embedding is the pooled trunk output itself.
    np.testing.assert_array_equal(emb["test_pool"], emb["test_embed"])
    assert emb["test_view_logits"].shape[-1] == 4


def test_imagenet_features_are_resnet50_pools(baseline_runs):
    _, runs = baseline_runs
    cfg, _ = runs["imagenet"]
    emb = np.load(os.path.join(cfg.model_dir, "embeddings.npz"))
    assert emb["test_pool"].shape == (32, 2048)
    assert np.isfinite(emb["test_pool"]).all() and emb["test_pool"].std() > 0
    # Nothing was trained, but the weights are saved so that the run can be served.
    from deep_representation_one_class.serving.detector import Detector

    assert os.listdir(os.path.join(cfg.model_dir, "checkpoints"))
    assert Detector.load(cfg.model_dir, ["kde"]).classifiers == ["kde"]


def test_rotnet_refuses_an_mlp_head(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="rotnet has no MLP head"):
        tiny(tmp_path, "rotnet", head_dims=(16,))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"backbone": "resnet50_imagenet"}, "needs --imagenet_weights"),
        ({"backbone": "resnet18"}, "no pretrained weights"),
        ({"imagenet_weights": "/nonexistent/r50.h5"}, "is not a file"),
        ({"num_epoch": 3, "imagenet_weights": __file__}, "use --num_epoch=0"),
    ],
)
def test_imagenet_config_errors_are_one_line(tmp_path, kw, match):
    with pytest.raises(config_lib.ConfigError, match=match) as err:
        tiny(tmp_path, "imagenet", **kw)
    assert "\n" not in str(err.value)


def test_imagenet_unreadable_weights_file(tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(config_lib.ConfigError, match="cannot load --imagenet_weights"):
        imagenet.build_imagenet_model(str(bad), size=32)


def test_imagenet_preprocessing_matches_keras():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, 8, 8, 3)).astype(np.float32)
    got = imagenet.ImageNetPreprocess(16)(x).numpy()
    want = keras.applications.resnet50.preprocess_input(
        tf.image.resize(x, (16, 16)).numpy() * 255.0
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    # Caffe-style: BGR order, ImageNet means removed (a black pixel is minus the means).
    black = imagenet.ImageNetPreprocess(4)(np.zeros((1, 4, 4, 1), np.float32)).numpy()
    np.testing.assert_allclose(black[0, 0, 0], [-103.939, -116.779, -123.68], atol=1e-3)


def test_denoising_trains_the_decoder(tmp_path):
    cfg = tiny(tmp_path, "denoising", weight_decay=0.0, learning_rate=0.5)
    trainer = loop.Trainer(cfg, distribute.make_strategy("default"), 1, build.StepPlan(1, 2, 2))
    decoder = [v for v in trainer.model.trainable_variables if "dec_" in v.path]
    assert decoder and all(any(v is w for w in trainer.model.trainable_variables) for v in decoder)
    images = tf.random.stateless_uniform([8, *SHAPE], seed=[1, 2])
    loss, acc = trainer.method.per_example(trainer.model, (images,), training=True)
    assert loss.shape == (8,) and acc.shape == (8,)
    assert np.all(loss.numpy() > 0) and np.all((acc.numpy() >= 0) & (acc.numpy() <= 1))
    before = [v.numpy().copy() for v in decoder]
    trainer.replica_step((images,))
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, decoder)]
    assert sum(changed) >= len(decoder) // 2


def test_denoising_decoder_shape_and_input_checks(tmp_path):
    fmap = keras.Input((3, 2, 32))
    out = denoising.build_decoder(fmap, 8, 1)
    assert tuple(out.shape) == (None, 24, 16, 1)
    assert denoising.trunk_stride(32) == 8 and denoising.trunk_stride(256) == 32
    with pytest.raises(config_lib.ConfigError, match="divisible by 8"):
        tiny(tmp_path, "denoising", input_shape=(20, 20, 3))
    with pytest.raises(config_lib.ConfigError, match="exactly 1 view"):
        tiny(tmp_path, "denoising", aug_list="x,+hflip")


def _cli_config(**flags):
    """``main.config_from_flags`` of a command line with these flags."""
    from deep_representation_one_class import main

    main.FLAGS.unparse_flags()
    main.FLAGS(["droc-train", *(f"--{k}={v}" for k, v in flags.items())])
    try:
        return main.config_from_flags()
    finally:
        main.FLAGS.unparse_flags()


def test_cli_defaults_of_the_baselines():
    cfg = _cli_config(method="rotnet")
    assert (cfg.method, cfg.head_dims, cfg.latent_dim) == ("rotnet", (), 4)
    cfg = _cli_config(method="imagenet", imagenet_weights=__file__)
    assert (cfg.method, cfg.num_epoch, cfg.train_steps) == ("imagenet", 0, 0)
    assert cfg.imagenet_weights == __file__
    cfg = _cli_config(method="denoising")
    assert (cfg.method, cfg.aug_list, cfg.head_dims) == ("denoising", "x", ())
    with pytest.raises(config_lib.ConfigError, match="needs --imagenet_weights"):
        _cli_config(method="imagenet", backbone="resnet50_imagenet")
    cfg = _cli_config(method="imagenet")  # offline: the packaged EfficientNet-Lite2, 224 px
    assert (cfg.backbone, cfg.pretrained_size) == ("efficientnet_lite2", 224)
    cfg = _cli_config(method="imagenet", backbone="efficientnet_lite0")  # small images: 128 px
    assert (cfg.backbone, cfg.pretrained_size) == ("efficientnet_lite0", 128)
