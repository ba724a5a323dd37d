"""Serving patch-level runs: ``Detector.load`` of an MVTec-layout run, image scores and maps at
each image's own resolution that reproduce the run's summary, thresholds at both levels, the
``score`` command with map PNGs, the SavedModel export and tiling (plus a slow bottle run)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from deep_representation_one_class.datasets import mvtec as mvtec_data
from deep_representation_one_class.evaluation import localization, metrics

SIZES = ((64, 64), (48, 64))  # (h, w): two image sizes in one part


def _texture(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 0.04 * np.sin(2 * np.pi * (yy + xx) / 8.0 + rng.uniform(0, 2 * np.pi))
    img = np.array([0.55, 0.5, 0.45]) + stripes[..., None] + rng.normal(0, 0.03, (h, w, 3))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _defect(rng, img):
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    side = int(rng.integers(8, 13))
    y, x = int(rng.integers(2, h - side - 2)), int(rng.integers(2, w - side - 2))
    yy, xx = np.mgrid[0:side, 0:side]
    blob = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= (side / 2) ** 2
    mask[y : y + side, x : x + side][blob] = 255
    img[mask > 0] = (150, 20, 20)
    return img, mask


def make_part(root: Path, category: str = "part", seed: int = 0, n_train: int = 20) -> Path:
    """An MVTec-layout part whose images come in two sizes (``SIZES``)."""
    rng = np.random.default_rng(seed)
    base = root / category

    def save(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    for i in range(n_train):
        save(base / "train" / "good" / f"{i:03d}.png", _texture(rng, *SIZES[i % 2]))
    for i in range(6):
        save(base / "test" / "good" / f"{i:03d}.png", _texture(rng, *SIZES[i % 2]))
        img, mask = _defect(rng, _texture(rng, *SIZES[(i + 1) % 2]))
        save(base / "test" / "stain" / f"{i:03d}.png", img)
        save(base / "ground_truth" / "stain" / f"{i:03d}_mask.png", mask)
    return base


def _train_patch_run(tmp_path_factory, **overrides):
    from deep_representation_one_class.training import runner

    tmp = tmp_path_factory.mktemp("patch_serving")
    make_part(tmp / "data")
    cfg = tiny_config(
        dataset="mvtec",
        category="part",
        root=str(tmp / "data"),
        input_shape=(64, 64, 3),
        cache_dir="",
        strategy="default",
        batch_size=16,
        num_batch=3,
        train_steps=0,
        classifiers=("auc", "kde"),
        patch_size=16,
        patch_stride=4,
        patch_bank=1000,
        smooth_sigma=2.0,
        synthetic_holdout=4,
        baselines=False,
        model_dir=str(tmp / "run"),
        **overrides,
    )
    assert runner.run(cfg).status == "complete"
    return tmp


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    return _train_patch_run(tmp_path_factory)


@pytest.fixture(scope="module")
def bf16_patch_run(tmp_path_factory):
    """The same run trained in mixed bfloat16 (evaluated and served in float32)."""
    return _train_patch_run(tmp_path_factory, precision="mixed_bfloat16")


def _test_files(base: Path) -> list[str]:
    return [str(p) for p in sorted((base / "test").rglob("*.png"))]


def own_masks(paths):
    out = []
    for p in paths:
        mp = mvtec_data.mask_path(p)
        with Image.open(p) as img:
            shape = (img.height, img.width)
        m = np.zeros(shape, np.uint8)
        if mp is not None:
            with Image.open(mp) as mimg:
                m = (np.asarray(mimg.convert("L")) > 127).astype(np.uint8)
        out.append(m)
    return out


def served_metrics(maps, masks, labels, scores):
    """Image AUROC, and pixel AUROC and PRO over maps of several sizes (padded, masked out)."""
    loc = localization.localization_metrics_any_size(masks, maps, max_fpr=0.3)
    return metrics.auroc(labels, scores), loc["pixel_auroc"], loc["pro"]


def test_patch_run_is_served_and_reproduces_its_summary(patch_run):
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.serving.patch_detector import PatchDetector

    run_dir = str(patch_run / "run")
    summary = json.loads((patch_run / "run" / "summary.json").read_text())["metrics"]
    det = Detector.load(run_dir)
    assert isinstance(det, PatchDetector) and det.classifiers == ["auc", "kde"]
    assert det.spec.resize_policy == "same_scale" and det.spec.scale == pytest.approx(1.0)
    paths = _test_files(patch_run / "data" / "part")
    images, _ = det.load_images(paths)
    assert {im.shape[:2] for im in images} == set(SIZES)
    labels = np.array(["/good/" not in p for p in paths], np.int64)
    masks = own_masks(paths)
    for name in det.classifiers:
        scores, maps = det.score_and_maps(images, name)
        assert [m.shape for m in maps] == [im.shape[:2] for im in images]
        image, pixel, pro = served_metrics(maps, masks, labels, scores[name])
        # Within 0.01 (AUROC and PRO as fractions; the summary holds percent).
        assert abs(image - summary[f"pool.{name}.image_auroc"]) < 1.0, (name, image)
        assert abs(pixel - summary[f"pool.{name}.pixel_auroc"]) < 1.0, (name, pixel)
        assert abs(pro - summary[f"pool.{name}.pro"]) < 1.0, (name, pro)
    # The image scores are the run's own (same windows, same scorers, same aggregation).
    with np.load(patch_run / "run" / "embeddings.npz") as npz:
        ref = npz["pool_auc_image_score"]
    np.testing.assert_allclose(det.score(images)["auc"], ref, rtol=1e-4, atol=1e-5)
    # Float input in [0, 1] and a single image of its own size work the same way.
    one = det.anomaly_map([images[1].astype(np.float32) / 255.0])
    assert one[0].shape == images[1].shape[:2]


def test_patch_thresholds_from_held_out_normals(patch_run):
    from deep_representation_one_class.serving.patch_detector import PatchDetector, normalize

    th = json.loads((patch_run / "run" / "thresholds.json").read_text())
    assert th["level"] == "patches" and th["source"] == "holdout_normals"
    assert th["num_holdout"] == 4 and "pool.auc" in th["pixel_quantiles"]
    det = PatchDetector.load(str(patch_run / "run"), ["auc"])
    q95 = det.threshold("auc")
    assert q95 == th["quantiles"]["pool.auc"]["q95"]
    assert det.pixel_threshold("auc", "q99") == th["pixel_quantiles"]["pool.auc"]["q99"]
    assert det.threshold("auc", 0.25) == 0.25
    ref = det.reference("auc")
    norm = normalize([q95, ref["max"] + 100, -1e9], q95, ref)
    assert norm.tolist() == [0.5, 1.0, 0.0]
    # The run's report says which thresholds `score` applies, at both levels.
    from deep_representation_one_class.reports import report

    page = Path(report.write_run_report(str(patch_run / "run"))).read_text()
    assert "pixel threshold (map outline)" in page and "4 held-out normal" in page
    assert f"{th['pixel_quantiles']['pool.auc']['q95']:.4g}" in page


def test_embed_feature_reproduces_its_image_aurocs(patch_run):
    from deep_representation_one_class.serving.patch_detector import PatchDetector

    summary = json.loads((patch_run / "run" / "summary.json").read_text())["metrics"]
    det = PatchDetector.load(str(patch_run / "run"), feature="embed")
    paths = _test_files(patch_run / "data" / "part")
    labels = np.array(["/good/" not in p for p in paths], np.int64)
    scores = det.score(det.load_images(paths)[0])
    for name, s in scores.items():
        assert abs(metrics.auroc(labels, s) - summary[f"embed.{name}"]) < 1.0, name


def _score_cli(argv):
    from deep_representation_one_class.serving import score

    return score.main(argv)


def test_score_command_writes_scores_decisions_and_map_pngs(patch_run, tmp_path, capsys):
    run_dir = str(patch_run / "run")
    part = patch_run / "data" / "part"
    out = tmp_path / "s.csv"
    rc = _score_cli(
        [f"--model_dir={run_dir}", f"--images={part / 'test'}", f"--out={out}",
         f"--maps={tmp_path / 'maps'}", "--normalized"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12
    assert {"auc_score", "auc_normalized", "auc_anomalous", "auc_threshold"} <= set(rows[0])
    assert rows[0]["threshold_rule"] == "q95 of 4 held-out normal images"
    th = json.loads((patch_run / "run" / "thresholds.json").read_text())
    for r in rows:
        s, t = float(r["auc_score"]), float(r["auc_threshold"])
        assert t == th["quantiles"]["pool.auc"]["q95"]
        assert int(r["auc_anomalous"]) == int(s >= t)
        assert (float(r["auc_normalized"]) >= 0.5) == (s >= t)
    pngs = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert len(pngs) == 12 and "stain_000.png" in pngs and "good_000.png" in pngs
    with Image.open(tmp_path / "maps" / "good_001.png") as img:  # a 48x64 image
        assert img.size == (3 * 64 + 4, 48 + 14)
    # Map PNGs are never written over silently, nor into the run's own files.
    again = [f"--model_dir={run_dir}", f"--images={part / 'test'}", f"--out={tmp_path / 'b.csv'}"]
    assert _score_cli([*again, f"--maps={tmp_path / 'maps'}"]) == 2
    assert "already holds PNG files" in capsys.readouterr().err
    assert _score_cli([*again, f"--maps={run_dir}/maps"]) == 2
    assert "run's own files" in capsys.readouterr().err
    # The defects are found: the stains score above the normals on average.
    stain = [float(r["auc_score"]) for r in rows if "/stain/" in r["path"]]
    good = [float(r["auc_score"]) for r in rows if "/good/" in r["path"]]
    assert np.mean(stain) > np.mean(good)


def test_f1_thresholds_on_labelled_images(patch_run, tmp_path, capsys):
    from deep_representation_one_class.serving.patch_detector import PatchDetector
    from deep_representation_one_class.serving.score_patches import f1_threshold, f1_thresholds

    t, f1 = f1_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert (t, round(f1, 4)) == (0.35, 0.8)
    val = make_part(tmp_path / "val", seed=5, n_train=2)
    det = PatchDetector.load(str(patch_run / "run"), ["auc"])
    th = f1_thresholds(det, str(val), "auc")
    assert th["n"] == 12 and th["pixel"] is not None and 0 < th["pixel_f1"] <= 1
    out = tmp_path / "f1.csv"
    rc = _score_cli(
        [f"--model_dir={patch_run / 'run'}", f"--images={val / 'test'}", f"--out={out}",
         "--threshold=f1", f"--val_images={val}", "--classifiers=auc"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["threshold_rule"].startswith("F1-optimal on 12 --val_images")
    assert float(rows[0]["auc_threshold"]) == th["image"]
    assert float(rows[0]["pixel_threshold"]) == th["pixel"]
    # Without --val_images, or on an image-level run, f1 is refused in one line.
    rc = _score_cli([f"--model_dir={patch_run / 'run'}", f"--images={val}", f"--out={out}x",
                     "--threshold=f1"])  # fmt: skip
    assert rc == 2 and "needs --val_images" in capsys.readouterr().err


def test_tiling_stitches_a_large_image(patch_run, tmp_path):
    from deep_representation_one_class.serving.patch_detector import PatchDetector
    from deep_representation_one_class.serving.tiling import score_tiled, tile_positions

    assert tile_positions(100, 40) == [0, 30, 60]
    assert tile_positions(30, 40) == [0]
    rng = np.random.default_rng(3)
    big = _texture(rng, 200, 300)  # a "large" image: 4.7x the canvas side
    big, mask = _defect(rng, big)
    det = PatchDetector.load(str(patch_run / "run"), ["auc"])
    scores, maps = score_tiled(det, [big], 64, "auc")
    assert maps[0].shape == (200, 300) and np.isfinite(maps[0]).all()
    # The defect is where the stitched map is high.
    assert maps[0][mask > 0].mean() > np.percentile(maps[0][mask == 0], 95)
    whole, _ = det.score_and_maps([big], "auc", with_maps=False)
    assert np.isfinite(scores["auc"]).all() and np.isfinite(whole["auc"]).all()
    out = tmp_path / "t.csv"
    Image.fromarray(big).save(tmp_path / "big.png")
    assert _score_cli([f"--model_dir={patch_run / 'run'}", f"--images={tmp_path / 'big.png'}",
                       f"--out={out}", "--tile=64", f"--maps={tmp_path / 'm'}"]) == 0  # fmt: skip
    with Image.open(tmp_path / "m" / f"{tmp_path.name}_big.png") as img:
        assert img.size == (3 * 300 + 4, 200 + 14)


def test_savedmodel_export_matches_in_process(patch_run, tmp_path):
    import tensorflow as tf
    from scipy import ndimage

    from deep_representation_one_class.serving import export
    from deep_representation_one_class.serving.export_patches import _smooth, gaussian_kernel
    from deep_representation_one_class.serving.patch_detector import PatchDetector

    rough = np.random.default_rng(0).normal(size=(2, 20, 30)).astype(np.float32)
    ref = np.stack([ndimage.gaussian_filter(r, 2.0, mode="nearest") for r in rough])
    np.testing.assert_allclose(_smooth(rough, gaussian_kernel(2.0)).numpy(), ref, atol=1e-5)
    out = export.export_saved_model(str(patch_run / "run"), str(tmp_path / "sm"))
    info = json.loads((tmp_path / "sm" / "assets.extra" / "droc_export.json").read_text())
    assert info["level"] == "patches" and info["classifiers"] == ["auc", "kde"]
    assert info["preprocessing"]["resize_policy"] == "same_scale"
    m = tf.saved_model.load(out)
    det = PatchDetector.load(str(patch_run / "run"))
    # 64x64 test images fill the canvas: the exported scores and maps are the in-process ones.
    paths = _test_files(patch_run / "data" / "part")
    images, _ = det.load_images(paths)
    full = [im for im in images if im.shape[:2] == (64, 64)]
    canvases, _, _ = det.prepare(full)
    got = m.signatures["serving_default"](images=tf.constant(canvases / np.float32(255.0)))
    scores, maps = det.score_and_maps(full, "auc")
    for name in ("auc", "kde"):
        np.testing.assert_allclose(got[f"{name}_score"].numpy(), scores[name], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got["anomaly_map"].numpy(), np.stack(maps), rtol=1e-3, atol=1e-4)


def test_older_patch_run_is_refused_with_the_upgrade_command(patch_run, tmp_path, capsys):
    import shutil

    from deep_representation_one_class.serving.detector import Detector, DetectorError
    from deep_representation_one_class.training import rescore

    old = tmp_path / "old"
    shutil.copytree(patch_run / "run", old)
    (old / "preprocessing.json").unlink()  # a run from before the spec (same_scale: not derivable)
    (old / "thresholds.json").unlink()
    with pytest.raises(DetectorError, match=r"same_scale.*evaluate --model_dir=.*--reextract"):
        Detector.load(str(old))
    # The command the message names records the spec and the serving thresholds.
    assert rescore.main([f"--model_dir={old}", "--reextract"]) == 0, capsys.readouterr().err
    assert (old / "preprocessing.json").is_file() and (old / "thresholds.json").is_file()
    assert Detector.load(str(old)).spec.resize_policy == "same_scale"


def _check_serving():
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "scripts" / "check_serving.py"
    spec = importlib.util.spec_from_file_location("check_serving", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_serving_script_on_a_generated_part(patch_run):
    result = _check_serving().check(str(patch_run / "run"))
    served = result["served_vs_run"]
    assert {"pool.auc", "pool.auc.pixel_auroc", "embed.kde.pro"} <= set(served)
    assert result["test_images"] == 12 and result["max_abs_diff"] < 1.0, served


@pytest.mark.slow
def test_real_bottle_scores_reproduce_the_run(shared_data, tmp_path):
    """A short bottle run; served scores and maps reproduce its image AUROC, pixel AUROC and
    PRO (every feature and scorer) within 0.01."""
    from deep_representation_one_class.training import runner

    root = shared_data / "mvtec_ad"
    if not (root / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle is absent under {root}")
    cfg = tiny_config(
        dataset="mvtec",
        category="bottle",
        root=str(root),
        input_shape=(256, 256, 3),
        cache_dir=str(tmp_path / "cache"),
        net_type="resnet18",
        net_width=0.25,
        head_dims=(512, 512, 128),
        batch_size=32,
        learning_rate=0.01,
        num_epoch=1,
        num_batch=100,
        train_steps=0,
        strategy="default",
        model_dir=str(tmp_path / "run"),
        classifiers=("auc", "kde"),
        patch_stride=16,
        patch_bank=2000,
        baselines=False,
    )
    assert runner.run(cfg).status == "complete"
    result = _check_serving().check(cfg.model_dir)
    print(json.dumps(result["served_vs_run"], indent=1))
    assert result["test_images"] == 83 and result["max_abs_diff"] < 1.0


@pytest.mark.parametrize("run", ["patch_run", "bf16_patch_run"])
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_converted_patch_export_matches_in_process(request, run, tmp_path, fmt):
    """TFLite and ONNX of a patch-level run, trained in float32 or in mixed bfloat16: image
    scores and anomaly maps as in-process."""
    if fmt == "onnx":
        pytest.importorskip("tf2onnx", reason="ONNX export needs the [export] extra (tf2onnx)")
        pytest.importorskip("onnxruntime", reason="ONNX parity needs the [export] extra")
    from deep_representation_one_class.serving import export, runtimes
    from deep_representation_one_class.serving.patch_detector import PatchDetector

    patch_run = request.getfixturevalue(run)
    out = export.export_model(str(patch_run / "run"), str(tmp_path / fmt), fmt=fmt)
    det = PatchDetector.load(str(patch_run / "run"))
    # Served in the precision it was evaluated in: float32, whatever it trained in.
    assert {layer.dtype_policy.name for layer in det.model._flatten_layers()} == {"float32"}
    paths = _test_files(patch_run / "data" / "part")
    images, _ = det.load_images(paths)
    full = [im for im in images if im.shape[:2] == (64, 64)][:6]
    canvases, _, _ = det.prepare(full)
    runtime = "onnxruntime" if fmt == "onnx" else fmt
    got = runtimes.load(runtime, out)((canvases / np.float32(255.0)).astype(np.float32))
    scores, maps = det.score_and_maps(full, "auc")
    for name in ("auc", "kde"):
        want = np.asarray(scores[name], np.float64)
        span = float(np.ptp(want)) or 1.0
        err = np.abs(np.asarray(got[f"{name}_score"], np.float64) - want) / span
        assert err.max() < 1e-3, (name, err.max())
    want_maps = np.stack(maps).astype(np.float64)
    err = np.abs(np.asarray(got["anomaly_map"], np.float64) - want_maps).max()
    assert err / (float(np.ptp(want_maps)) or 1.0) < 1e-3, err


@pytest.mark.slow
def test_real_bottle_pretrained_default_exports_match(shared_data, tmp_path):
    """Bottle with the --dataset=mvtec defaults (frozen EfficientNet-Lite0 patch features; a
    smaller bank and stride to keep it short): TFLite and ONNX exports give the in-process image
    scores and anomaly maps."""
    from deep_representation_one_class import resolve
    from deep_representation_one_class.serving import export, runtimes
    from deep_representation_one_class.serving.patch_detector import PatchDetector
    from deep_representation_one_class.training import runner

    root = shared_data / "mvtec_ad"
    if not (root / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle is absent under {root}")
    cfg = resolve.build(
        dataset="mvtec",
        category="bottle",
        root=str(root),
        cache_dir=str(tmp_path / "cache"),
        strategy="default",
        patch_stride=16,
        patch_bank=2000,
        baselines=False,
        report=False,
    ).replace(model_dir=str(tmp_path / "run"))
    assert cfg.method == "patchcore" and cfg.backbone == "efficientnet_lite0"
    assert runner.run(cfg).status == "complete"
    det = PatchDetector.load(cfg.model_dir)
    paths = sorted(str(p) for p in (root / "bottle" / "test").rglob("*.png"))[::20]
    images, _ = det.load_images(paths)
    canvases, sizes, _ = det.prepare(images)
    assert (sizes == canvases.shape[1:3]).all()  # bottle fills its canvas: no padding
    # The export maps the canvas; compare before the in-process maps go to the images' size.
    scores, maps = det._dense(canvases, sizes, det.classifiers, det.classifiers[:1])
    want_maps = np.asarray(maps[det.classifiers[0]], np.float64)
    formats = ["tflite"]
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401

        formats.append("onnx")
    except ImportError:
        print("ONNX export not checked: the [export] extra (tf2onnx, onnxruntime) is absent")
    for fmt in formats:
        out = export.export_model(cfg.model_dir, str(tmp_path / fmt), fmt=fmt)
        got = runtimes.load("onnxruntime" if fmt == "onnx" else fmt, out)(
            (canvases / np.float32(255.0)).astype(np.float32)
        )
        for name in det.classifiers:
            want = np.asarray(scores[name], np.float64)
            rel = np.abs(np.asarray(got[f"{name}_score"], np.float64) - want) / np.abs(want)
            assert rel.max() < 1e-3, (fmt, name, rel.max())
        err = np.abs(np.asarray(got["anomaly_map"], np.float64) - want_maps).max()
        assert err / float(np.ptp(want_maps)) < 1e-3, (fmt, err)
