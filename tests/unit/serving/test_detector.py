"""Detector, thresholds and plots: a tiny real run on the fake dataset, plus synthetic features."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import FAKE_RUN_CLASSIFIERS as CLASSIFIERS
from PIL import Image

from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import metrics, scorers, thresholds
from deep_representation_one_class.reports import plots


@pytest.fixture(scope="module")
def run_dir(fake_run):
    return fake_run


@pytest.fixture(scope="module")
def det(run_dir):
    from deep_representation_one_class.serving.detector import Detector

    return Detector.load(run_dir)


@pytest.fixture(scope="module")
def arrays(run_dir):
    with np.load(os.path.join(run_dir, "embeddings.npz")) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def test_images(det):
    from deep_representation_one_class.training import build

    return build.load_data(det.config).test_x


# ----------------------------------------------------------------------------- Detector
def test_detector_reproduces_the_runs_features(det, arrays, test_images):
    feats = det.features(test_images)
    np.testing.assert_allclose(feats, arrays["test_pool"], rtol=1e-5, atol=1e-5)


def test_scores_use_the_threshold_fit_rows(det, arrays, test_images):
    n = arrays["cls_pool"].shape[0]
    assert det.thresholds["source"] == "cls_holdout"
    split = classifiers_lib.split_rows(n, det.config.seed, det.config.cls_holdout)
    fit, hold = split.fit_rows, split.holdout_rows
    assert len(hold) == round(0.1 * n)
    scores = det.score(test_images)
    assert list(scores) == list(CLASSIFIERS)
    for name in CLASSIFIERS:
        ref = scorers.make_scorer(name).fit(arrays["cls_pool"][fit]).score(arrays["test_pool"])
        np.testing.assert_allclose(scores[name], ref, rtol=1e-6, atol=1e-9)
    # Scores separate the fake classes (stripes vs. stripes rotated) better than chance.
    assert metrics.auroc(arrays["test_y"], scores["gde"]) > 60


def test_float_resized_and_gray_inputs(det, test_images):
    base = det.score(test_images[:4])["kde"]
    as_float = det.score(test_images[:4].astype(np.float32) / 255.0)["kde"]
    np.testing.assert_allclose(as_float, base, rtol=1e-6)
    big = np.repeat(np.repeat(test_images[:4], 2, axis=1), 2, axis=2)  # 64x64
    assert det.prepare(big).shape == (4, 32, 32, 3)
    assert np.isfinite(det.score(big)["kde"]).all()
    gray = test_images[:4, :, :, 0]  # [N, H, W] is accepted as grayscale
    assert det.prepare(gray).shape == (4, 32, 32, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        det.score(test_images[:2].astype(np.float32))  # 0..255 floats


def test_decide_with_quantile_number_and_mapping(det, test_images):
    scores = det.score(test_images)
    q95 = det.thresholds["quantiles"]["pool.kde"]["q95"]
    assert det.threshold("kde", "q95") == pytest.approx(q95)
    np.testing.assert_array_equal(det.decide(scores)["kde"], scores["kde"] >= q95)
    mid = float(np.median(scores["gde"]))
    flags = det.decide(scores, {name: "max" for name in scores} | {"gde": mid})
    assert flags["gde"].sum() == int((scores["gde"] >= mid).sum())
    assert flags["kde"].sum() == int(
        (scores["kde"] >= det.thresholds["quantiles"]["pool.kde"]["max"]).sum()
    )


def test_load_rejects_bad_requests(run_dir, tmp_path):
    from deep_representation_one_class.serving.detector import Detector, DetectorError

    with pytest.raises(DetectorError, match="not a run folder"):
        Detector.load(str(tmp_path))
    with pytest.raises(DetectorError, match="unknown classifier 'svm'"):
        Detector.load(run_dir, ["svm"])
    with pytest.raises(DetectorError, match="unknown feature"):
        Detector.load(run_dir, feature="logits")
    os.makedirs(tmp_path / "half")
    with open(os.path.join(run_dir, "config.json")) as f:
        (tmp_path / "half" / "config.json").write_text(f.read())
    with pytest.raises(DetectorError, match=r"no saved classifiers.*evaluate --model_dir"):
        Detector.load(str(tmp_path / "half"))


def test_embed_feature(run_dir, arrays, test_images):
    from deep_representation_one_class.serving.detector import Detector

    d = Detector.load(run_dir, ["gde"], feature="embed")
    np.testing.assert_allclose(
        d.features(test_images[:8]), arrays["test_embed"][:8], rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- images
def _write_images(folder):
    rng = np.random.default_rng(0)
    os.makedirs(folder / "sub", exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA").save(
        folder / "sub" / "rgba.png"
    )
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert("P").save(
        folder / "palette.bmp"
    )
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "c.JPG")
    (folder / "notes.txt").write_text("not an image")


def test_load_images_modes_and_sources(tmp_path):
    from deep_representation_one_class.serving.detector import DetectorError, load_images

    _write_images(tmp_path)
    x, paths = load_images(tmp_path, (16, 16, 3))
    names = [os.path.relpath(p, tmp_path) for p in paths]
    assert names == ["c.JPG", "gray.png", "palette.bmp", "rgb.png", os.path.join("sub", "rgba.png")]
    assert x.shape == (5, 16, 16, 3) and x.dtype == np.uint8
    gray = x[names.index("gray.png")]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # tiled grey
    x1, _ = load_images(str(tmp_path / "*.png"), (8, 8, 1))
    assert x1.shape == (2, 8, 8, 1)
    same, _ = load_images([tmp_path / "rgb.png", tmp_path / "c.JPG"])  # native 32x32
    assert same.shape == (2, 32, 32, 3)
    with pytest.raises(DetectorError, match="different sizes"):
        load_images(tmp_path)
    with pytest.raises(DetectorError, match="no such image file"):
        load_images(tmp_path / "missing.png")
    with pytest.raises(DetectorError, match="no image files"):
        load_images(str(tmp_path / "*.tif"))


# ----------------------------------------------------------------------------- thresholds
def _blobs(n=1000, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + 3.0


def _fitted(x, names, seed=0, fraction=0.1):
    split = classifiers_lib.split_rows(len(x), seed, fraction)
    return classifiers_lib.fit({"pool": x}, names, split, on_error="raise")


def test_holdout_split_is_a_seeded_partition():
    split = classifiers_lib.split_rows(1000, seed=7)
    fit, hold = split.fit_rows, split.holdout_rows
    assert len(hold) == 100 and len(fit) == 900
    assert not set(fit) & set(hold) and set(fit) | set(hold) == set(range(1000))
    np.testing.assert_array_equal(classifiers_lib.split_rows(1000, seed=7).holdout_rows, hold)
    assert not np.array_equal(classifiers_lib.split_rows(1000, seed=8).holdout_rows, hold)
    assert classifiers_lib.split_rows(30, seed=0).source == "in_sample"  # 3 held out: too few


def test_thresholds_reproduce_the_stated_quantiles_on_their_data():
    x = _blobs()
    cset = _fitted(x, ["kde", "gde", "ocsvm_rbf"], seed=3)
    labels = np.r_[np.zeros(5), np.ones(5)]
    result = thresholds.run_thresholds(cset, {"pool": x}, labels, {})
    assert result["source"] == "cls_holdout" and result["num_cls"] == 1000
    hold = cset.split.holdout_rows
    for name in ("kde", "gde", "kocsvm"):
        stored = result["quantiles"][f"pool.{name}"]
        # The held-out scores of the very fit the run saved (not a refit).
        held = cset.scorers[f"pool.{name}"].score(x[hold])
        ref = scorers.make_scorer(name).fit(x[cset.split.fit_rows]).score(x[hold])
        np.testing.assert_allclose(held, ref, rtol=1e-9)
        assert stored["n"] == 100
        assert stored["max"] == pytest.approx(held.max())
        for level_name, level in thresholds.QUANTILES.items():
            assert stored[level_name] == pytest.approx(np.quantile(held, level))
        # The stated level is the share of held-out inliers below the threshold.
        assert np.mean(held < stored["q95"]) == pytest.approx(0.95, abs=0.011)
        assert np.mean(held < stored["q80"]) == pytest.approx(0.80, abs=0.011)
        q = [stored[k] for k in thresholds.LEVEL_NAMES]
        assert q == sorted(q)


def test_thresholds_in_sample_source():
    x = _blobs(n=40)
    cset = _fitted(x, ["gde"])
    small = thresholds.run_thresholds(cset, {"pool": x}, np.r_[0, 1], {})
    assert small["source"] == "in_sample" and "in-sample" in small["note"]
    in_sample = scorers.make_scorer("gde").fit(x).score(x)
    assert small["quantiles"]["pool.gde"]["q50"] == pytest.approx(np.median(in_sample))
    # --cls_holdout=0 is the reference's protocol: every row fit, thresholds in-sample.
    assert _fitted(_blobs(), ["gde"], fraction=0.0).split.source == "in_sample"
    # Rotation scores have no feature-based classifier and are skipped, not an error.
    assert set(_fitted(x, ["dscore", "kde"]).scorers) == {"pool.kde"}


def test_resolve_threshold_specs():
    table = {"quantiles": {"pool.kde": {"q95": 1.5, "max": 2.0}}}
    assert thresholds.resolve_threshold(table, "kde", "q95") == 1.5
    assert thresholds.resolve_threshold(table, "pool.kde", "MAX") == 2.0
    assert thresholds.resolve_threshold(table, "kde", 0.25) == 0.25
    assert thresholds.resolve_threshold(None, "gde", "-3e2") == -300.0
    with pytest.raises(thresholds.ThresholdError, match="neither a quantile"):
        thresholds.resolve_threshold(table, "kde", "q97")
    with pytest.raises(thresholds.ThresholdError, match=r"no quantile thresholds for 'pool\.gde'"):
        thresholds.resolve_threshold(table, "gde", "q95")
    with pytest.raises(thresholds.ThresholdError, match="finite"):
        thresholds.resolve_threshold(table, "kde", float("nan"))
    with pytest.raises(classifiers_lib.ClassifierError, match="svm"):
        _fitted(_blobs(n=20), ["svm"])


def test_run_thresholds_report_and_detector_reuse(run_dir, arrays, det):
    from deep_representation_one_class.serving.detector import Detector

    with open(os.path.join(run_dir, thresholds.FILENAME)) as f:
        stored = json.load(f)
    assert set(stored["quantiles"]) == {f"{f}.{c}" for f in ("pool", "embed") for c in CLASSIFIERS}
    # The quantiles are those of the saved classifiers on the saved hold-out rows.
    cset = classifiers_lib.ClassifierSet.load(run_dir)
    for key, scorer in cset.scorers.items():
        held = scorer.score(arrays[f"cls_{key.split('.')[0]}"][cset.split.holdout_rows])
        assert stored["quantiles"][key]["q95"] == pytest.approx(np.quantile(held, 0.95))
    report = stored["test_report"]
    assert report["evaluated_on"] == "test" and report["spec"] == "q95"
    y = arrays["test_y"]
    for key in ("pool.kde", "embed.gde"):
        stats = report[key]
        assert stats["tp"] + stats["fn"] == int(y.sum())
        assert stats["fp"] + stats["tn"] == int((1 - y).sum())
        assert stats["threshold"] == pytest.approx(stored["quantiles"][key]["q95"])
    # The detector's thresholds are the ones written to the file.
    assert det.thresholds["quantiles"]["pool.gde"] == pytest.approx(stored["quantiles"]["pool.gde"])
    again = Detector.load(run_dir, ["gde"])
    assert again.thresholds["test_report"]["spec"] == "q95"  # read from thresholds.json
    # The reported rates are those of the detector's own scores at that threshold.
    ref = metrics.threshold_stats(
        y, again.score_features(arrays["test_pool"])["gde"], again.threshold("gde")
    )
    assert report["pool.gde"]["tpr"] == pytest.approx(ref["tpr"])
    assert report["pool.gde"]["fpr"] == pytest.approx(ref["fpr"])


# ----------------------------------------------------------------------------- plots
def test_write_run_plots(tmp_path):
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60), np.ones(40)].astype(int)
    s = np.r_[rng.normal(0, 1, 60), rng.normal(2, 1, 40)]
    scores = {
        "pool.kde": s,
        "pool.gde": s + rng.normal(0, 1, 100),
        "dscore.auc": -s,
        "embed.gde": np.full(100, np.nan),
    }
    thresholds = {
        "quantiles": {"pool.kde": {"q95": 1.5}},
        "test_report": {"spec": "q95", "pool.kde": {"tpr": 0.6, "fpr": 0.05}},
    }
    paths = plots.write_run_plots(str(tmp_path), y, scores, thresholds)
    names = sorted(os.path.basename(p) for p in paths)
    # One ROC figure per feature (every classifier in it), one histogram per score.
    assert names == [
        "hist_dscore_auc.png",
        "hist_pool_gde.png",
        "hist_pool_kde.png",
        "roc_pool.png",
        "roc_rotation.png",
    ]
    for p in paths:
        assert os.path.dirname(p) == str(tmp_path / "plots")
        with Image.open(p) as img:
            assert img.size == plots.SIZE
            # Not a blank canvas: the curves/bars put colour on it.
            arr = np.asarray(img.convert("RGB")).astype(int)
            assert (np.abs(arr[..., 0] - arr[..., 2]) > 60).sum() > 200

    # The threshold line: a dashed black vertical line only in the histogram that has one.
    def dark_columns(name):
        arr = np.asarray(Image.open(tmp_path / "plots" / name).convert("L")).astype(int)
        return int(((arr < 40).sum(axis=0) > 0.3 * arr.shape[0]).sum())

    assert dark_columns("hist_pool_kde.png") > dark_columns("hist_pool_gde.png")
    assert plots.write_run_plots(str(tmp_path), np.zeros(5), {"pool.kde": np.arange(5.0)}) == []
