"""One fit per classifier: saved by the run, loaded (never refit) by everything that serves it.

The run fits each (feature, classifier) once; ``summary.json``, ``thresholds.json``, the
``Detector``, the ``score`` CLI and the SavedModel export must all use that fit. A toy scorer
registered here, in one class, must show up in all of them without touching another module.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import conftest
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import metrics
from deep_representation_one_class.evaluation.scorers import SCORERS, Scorer
from deep_representation_one_class.serving import export, score
from deep_representation_one_class.serving.detector import Detector
from deep_representation_one_class.training import build, rescore, runner
from deep_representation_one_class.utils import io


def _summary(run_dir):
    return io.read_json(os.path.join(run_dir, "summary.json"))


def test_saved_classifiers_score_bit_identically(fake_run):
    arrays = io.load_npz(os.path.join(fake_run, "embeddings.npz"))
    cset = classifiers_lib.ClassifierSet.load(fake_run)
    assert set(cset.keys()) == {
        f"{f}.{c}" for f in ("pool", "embed") for c in conftest.FAKE_RUN_CLASSIFIERS
    }
    summary = _summary(fake_run)
    for key, scorer in cset.scorers.items():
        feature = key.split(".")[0]
        scores = scorer.score(arrays[f"test_{feature}"])
        # The summary's AUROC is the AUROC of exactly this fit.
        assert metrics.auroc(arrays["test_y"], scores) == summary["metrics"][key]
    meta = io.read_json(os.path.join(fake_run, "classifiers.json"))
    assert meta["split"]["source"] == "cls_holdout"
    assert meta["split"]["fit"] + meta["split"]["holdout"] == meta["split"]["num_rows"] == 64


def test_a_refit_on_the_same_rows_gives_the_same_state(fake_run):
    arrays = io.load_npz(os.path.join(fake_run, "embeddings.npz"))
    saved = classifiers_lib.ClassifierSet.load(fake_run)
    refit = classifiers_lib.fit(
        {"pool": arrays["cls_pool"]}, ["kde", "gde"], saved.split, on_error="raise"
    )
    for name in ("kde", "gde"):
        a, b = saved.scorers[f"pool.{name}"].state(), refit.scorers[f"pool.{name}"].state()
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_identical_arrays_are_stored_once(tmp_path):
    rng = np.random.default_rng(0)
    feats = {"pool": rng.normal(size=(40, 6))}
    split = classifiers_lib.split_rows(40, seed=0, fraction=0.1)
    cset = classifiers_lib.fit(feats, ["kde", "auc"], split)
    cset.save(str(tmp_path))
    with np.load(tmp_path / "classifiers.npz") as npz:
        banks = [k for k in npz.files if k.endswith("/train_features")]
        assert npz["pool.kde/train_features"].dtype == np.float64  # as given
    assert banks == ["pool.kde/train_features"]  # the 1-NN bank is the same array
    meta = io.read_json(str(tmp_path / "classifiers.json"))
    assert meta["classifiers"]["pool.auc"]["arrays"]["train_features"] == "pool.kde/train_features"
    loaded = classifiers_lib.ClassifierSet.load(str(tmp_path))
    test = rng.normal(size=(7, 6))
    for key in ("pool.kde", "pool.auc"):
        np.testing.assert_array_equal(
            loaded.scorers[key].score(test), cset.scorers[key].score(test)
        )


def test_split_is_seeded_and_falls_back_in_sample():
    a, b = classifiers_lib.split_rows(100, 3, 0.1), classifiers_lib.split_rows(100, 3, 0.1)
    np.testing.assert_array_equal(a.holdout_rows, b.holdout_rows)
    assert a.holdout_rows.size == 10 and a.source == "cls_holdout"
    assert not set(a.fit_rows) & set(a.holdout_rows)
    assert classifiers_lib.split_rows(30, 0, 0.1).source == "in_sample"  # 3 held out < 5
    assert classifiers_lib.split_rows(100, 0, 0.0).source == "in_sample"


def test_detector_loads_without_fitting(fake_run, monkeypatch):
    def no_fit(self, train):
        raise AssertionError("Detector.load must not fit a classifier")

    monkeypatch.setattr(Scorer, "fit", no_fit)
    det = Detector.load(fake_run, ["kde", "gde", "kocsvm"])
    assert det.classifiers == ["kde", "gde", "kocsvm"]


def test_old_run_without_saved_classifiers_says_how_to_reevaluate(fake_run, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "embeddings.npz", "summary.json", ".droc_run"):
        shutil.copy(os.path.join(fake_run, name), old / name)
    os.symlink(os.path.join(fake_run, "checkpoints"), old / "checkpoints")
    with pytest.raises(ValueError, match=r"evaluate --model_dir="):
        Detector.load(str(old))
    rescore.evaluate_run(str(old))
    assert Detector.load(str(old), ["kde"]).classifiers == ["kde"]


def _write_pngs(images, folder):
    folder.mkdir()
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:04d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


def test_score_cli_reproduces_the_summary_aurocs(fake_run, tmp_path):
    det = Detector.load(fake_run)
    data = build.load_data(det.config)
    _write_pngs(data.test_x, tmp_path / "imgs")
    out = tmp_path / "scores.csv"
    code = score.main(
        ["--model_dir", fake_run, "--images", str(tmp_path / "imgs"), "--out", str(out)]
    )
    assert code == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    summary = _summary(fake_run)["metrics"]
    for name in conftest.FAKE_RUN_CLASSIFIERS:
        got = metrics.auroc(data.test_y, np.array([float(r[f"{name}_score"]) for r in rows]))
        assert abs(got - summary[f"pool.{name}"]) <= 0.01, name


# ----------------------------------------------------------------------------- a toy scorer
class _L1Scorer(Scorer):
    """Mean absolute deviation from the fit mean, on normalised features (a toy)."""

    name = "toy_l1"
    tf_state = ("mean",)

    def _fit(self, train):
        self._set_state({"mean": train.mean(axis=0)})

    def _set_state(self, state):
        self._mean = np.asarray(state["mean"], np.float64)

    def _state_keys(self):
        return ("mean",)

    def _state(self):
        return {"mean": self._mean}

    def _score(self, test):
        return np.abs(test - self._mean).mean(axis=1)

    @staticmethod
    def tf_score(state, feats):
        z = tf.cast(feats, tf.float64)
        z = z / tf.maximum(tf.norm(z, axis=-1, keepdims=True), tf.constant(1e-12, tf.float64))
        return tf.reduce_mean(tf.abs(z - state["mean"]), axis=1)


@pytest.fixture
def toy_scorer():
    SCORERS.add("toy_l1", _L1Scorer)
    yield "toy_l1"
    SCORERS._items.pop("toy_l1")


def test_a_scorer_is_one_class(toy_scorer, tmp_path):
    run = str(tmp_path / "run")
    cfg = conftest.tiny_config(strategy="default", model_dir=run, classifiers=("gde", toy_scorer))
    runner.run(cfg)
    summary = _summary(run)
    assert {"pool.toy_l1", "embed.toy_l1"} <= set(summary["metrics"])
    thresholds = io.read_json(os.path.join(run, "thresholds.json"))
    assert "pool.toy_l1" in thresholds["quantiles"]
    det = Detector.load(run, [toy_scorer])
    arrays = io.load_npz(os.path.join(run, "embeddings.npz"))
    scores = det.score_features(arrays["test_pool"])[toy_scorer]
    assert metrics.auroc(arrays["test_y"], scores) == summary["metrics"]["pool.toy_l1"]

    images = build.load_data(det.config).test_x[:6]
    _write_pngs(images, tmp_path / "imgs")
    out = tmp_path / "s.csv"
    assert (
        score.main(["--model_dir", run, "--images", str(tmp_path / "imgs"), "--out", str(out)]) == 0
    )
    with open(out) as f:
        assert "toy_l1_score" in next(csv.reader(f))

    exported = export.export_saved_model(run, str(tmp_path / "exp"), [toy_scorer])
    loaded = tf.saved_model.load(exported)  # kept alive while it serves
    served = loaded.serve(tf.constant(images))
    np.testing.assert_allclose(served[toy_scorer].numpy(), det.score(images)[toy_scorer], rtol=1e-5)
    info = json.loads((tmp_path / "exp" / "assets.extra" / "droc_export.json").read_text())
    assert info["classifiers"] == [toy_scorer]
