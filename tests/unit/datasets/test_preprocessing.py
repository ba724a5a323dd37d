"""The run's preprocessing spec: written at the start, typed, applied by serving (served ==
evaluated for every resize policy), and derived or refused for older run folders."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from deep_representation_one_class.datasets import preprocessing as prep
from deep_representation_one_class.evaluation import metrics


def _cfg(dataset="folder", shape=(32, 32, 3), policy="squash"):
    return SimpleNamespace(dataset=dataset, input_shape=shape, resize_policy=policy)


def test_spec_round_trip_and_typed_errors(tmp_path):
    spec = prep.from_config(_cfg(policy="same_scale"), scale=0.25)
    assert spec.resize_policy == "same_scale" and spec.scale == 0.25 and spec.task == "image"
    prep.write(str(tmp_path), spec)
    assert prep.read(str(tmp_path)) == spec
    d = json.loads((tmp_path / prep.FILENAME).read_text())
    assert d["channels"] == 3 and d["value_range"] == [0.0, 1.0] and d["version"] == 1
    for bad, match in (
        ({**d, "resize_policy": "stretch"}, "unknown resize_policy"),
        ({**d, "input_shape": [32, 32]}, "input_shape"),
        ({**d, "scale": None}, "positive scale"),
        ({**d, "version": 9}, "version"),
        ({**d, "colour": 1}, "unknown keys"),
        ({**d, "input_shape": [32.5, 32, 3]}, "integer"),
    ):
        with pytest.raises(prep.PreprocessingError, match=match):
            prep.PreprocessingSpec.from_dict(bad)
    # Datasets that ignore --resize_policy record squash; their own steps are recorded.
    assert prep.from_config(_cfg("cifar10ood", policy="fit")).resize_policy == "squash"
    assert prep.from_config(_cfg("fmnistood")).native_pad == (28, 28, 2)
    celeba = prep.from_config(_cfg("celeba", (64, 64, 3)))
    assert celeba.crop == (10, 40, 10, 20) and celeba.resample == "bicubic"
    assert prep.from_config(_cfg("mvtec", (64, 64, 3), "fit")).task == "patches"


def test_fashion_mnist_native_size_is_padded_not_resized():
    from deep_representation_one_class.serving.detector import fit_to_input

    x = np.full((2, 28, 28), 200, np.uint8)
    out = fit_to_input(x, prep.from_config(_cfg("fmnistood")))
    assert out.shape == (2, 32, 32, 3)
    assert (out[:, :2] == 0).all() and (out[:, 2:30, 2:30] == 200).all()
    resized = fit_to_input(x, prep.from_config(_cfg("cifar10ood")))
    assert (resized == 200).all()


def test_policies_match_the_loader_geometry():
    from deep_representation_one_class.datasets import images
    from deep_representation_one_class.serving.image_input import prepare_batch

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)
    for policy, scale in (("fit", None), ("same_scale", 0.5), ("squash", None)):
        spec = prep.from_config(_cfg(policy=policy), scale=scale)
        canvases, sizes, own = prepare_batch([wide, tall], spec)
        for img, canvas, size in zip((wide, tall), canvases, sizes):
            ref, ref_size = images.place_image(Image.fromarray(img), (32, 32, 3), policy, scale)
            np.testing.assert_array_equal(canvas, ref)
            assert tuple(size) == ref_size
        assert own.tolist() == [[20, 40], [40, 20]]
        # Float input: the same geometry, values within a few grey levels.
        as_float, fsizes, _ = prepare_batch([wide / 255.0, tall / 255.0], spec)
        np.testing.assert_array_equal(fsizes, sizes)
        assert as_float.dtype == np.float32 and as_float.shape == canvases.shape
    fit = prep.from_config(_cfg(policy="fit"))
    assert prep.content_size(fit, (20, 40)) == (16, 32)
    # same_scale: an image larger than the run's largest is shrunk to fit, aspect kept.
    same = prep.from_config(_cfg(policy="same_scale"), scale=1.0)
    assert prep.content_size(same, (20, 10)) == (20, 10)
    assert prep.content_size(same, (128, 64)) == (32, 16)
    canvas, content = prep.prepare_image(Image.fromarray(np.zeros((128, 64), np.uint8)), same)
    assert content == (32, 16) and canvas.shape == (32, 32, 3)


def test_old_run_folder_derives_or_says_how_to_upgrade(tmp_path):
    from deep_representation_one_class.serving.detector import DetectorError, read_preprocessing

    cfg = tiny_config(dataset="folder", root=str(tmp_path), category="a", resize_policy="fit")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    spec = read_preprocessing(str(tmp_path))
    assert spec.resize_policy == "fit" and spec.source == "config.json"
    raw = cfg.to_dict()
    del raw["resize_policy"]  # a run from before the flag: squashed
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert read_preprocessing(str(tmp_path)).resize_policy == "squash"
    raw["resize_policy"] = "same_scale"  # the factor depended on the data: not derivable
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(DetectorError, match=r"same_scale.*evaluate --model_dir=.* --reextract"):
        read_preprocessing(str(tmp_path))


def _folder_data(root, seed=0):
    """normal = smooth horizontal gradients, anomalous = checkerboards; two aspect ratios."""
    rng = np.random.default_rng(seed)

    def normal(h, w):
        ramp = np.linspace(40, 200, w)[None, :, None] + rng.normal(0, 6, (h, w, 3))
        return np.clip(ramp + rng.uniform(-30, 30), 0, 255).astype(np.uint8)

    def anomalous(h, w):
        yy, xx = np.mgrid[0:h, 0:w]
        board = ((yy // 4 + xx // 4) % 2 * 160 + 40)[..., None] + rng.normal(0, 6, (h, w, 3))
        return np.clip(board, 0, 255).astype(np.uint8)

    def save(folder, name, arr):
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(arr).save(os.path.join(folder, name))

    sizes = ((24, 48), (48, 28))
    for i in range(24):
        save(root / "train" / "part", f"{i:02d}.png", normal(*sizes[i % 2]))
    for i in range(8):
        save(root / "test" / "part", f"{i:02d}.png", normal(*sizes[i % 2]))
        save(root / "test" / "defect", f"{i:02d}.png", anomalous(*sizes[(i + 1) % 2]))


def test_fit_policy_folder_run_is_served_as_evaluated(tmp_path):
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.training import runner

    _folder_data(tmp_path / "data")
    cfg = tiny_config(
        dataset="folder",
        root=str(tmp_path / "data"),
        category="part",
        resize_policy="fit",
        input_shape=(32, 32, 3),
        cache_dir="",
        strategy="default",
        num_batch=2,
        baselines=False,
        classifiers=("kde", "gde", "auc"),
        model_dir=str(tmp_path / "run"),
    )
    assert runner.run(cfg).status == "complete"
    spec = json.loads((tmp_path / "run" / prep.FILENAME).read_text())
    assert spec["resize_policy"] == "fit" and spec["input_shape"] == [32, 32, 3]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]
    det = Detector.load(cfg.model_dir)
    files = sorted((tmp_path / "data" / "test").rglob("*.png"))
    images, paths = det.load_images([str(p) for p in files])
    labels = np.array(["defect" in p for p in paths], np.int64)
    scores = det.score(images)
    for name, s in scores.items():
        assert abs(metrics.auroc(labels, s) - summary[f"pool.{name}"]) < 1.0, name
    # Stronger: the served features are the evaluated ones (same files, same order).
    with np.load(tmp_path / "run" / "embeddings.npz") as npz:
        np.testing.assert_allclose(det.features(images), npz["test_pool"], rtol=1e-5, atol=1e-5)
    # Squashing (what serving did before the spec) would prepare other canvases.
    squash = prep.from_config(_cfg(policy="squash"))
    assert not np.array_equal(det.load_images(str(files[0]))[0], _squashed(files[0], squash))


def _squashed(path, spec):
    from deep_representation_one_class.serving.image_input import load_images

    return load_images(str(path), spec)[0]
