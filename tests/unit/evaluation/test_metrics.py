"""Tests of AUROC, threshold statistics, overkill/escape and ``evaluate_features``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from deep_representation_one_class import catalog
from deep_representation_one_class.evaluation import metrics as m

LABELS = np.array([0, 0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.4, 0.4, 0.9, 0.35, 0.8, 2.0])


def test_auroc_by_hand():
    # Pairs (outlier, inlier) ranked correctly: 0.35 beats 0.1 only (1 of 4); 0.8 beats
    # 0.1, 0.4, 0.4 (3); 2.0 beats all (4) -> 8 of 12.
    assert m.auroc(LABELS, SCORES) == pytest.approx(100 * 8 / 12)
    assert m.auroc([0, 1], [0.0, 1.0]) == 100.0
    assert m.auroc([True, False], [0.0, 1.0]) == 0.0
    assert m.auroc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 50.0  # ties count one half


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "only inliers"),
        ([1, 1], [0.1, 0.2], "only outliers"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1, 1], [0.1, 0.2], "one score per label"),
        ([0, 2], [0.1, 0.2], "binary"),
    ],
)
def test_auroc_rejects_bad_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        m.auroc(labels, scores)


def test_threshold_stats_by_hand():
    st = m.threshold_stats(LABELS, SCORES, 0.8)
    # Flagged (>= 0.8): 0.9 (inlier), 0.8 and 2.0 (outliers).
    assert (st["tp"], st["fp"], st["tn"], st["fn"]) == (2, 1, 3, 1)
    assert st["tpr"] == pytest.approx(2 / 3) and st["recall"] == st["tpr"]
    assert st["fpr"] == pytest.approx(1 / 4)
    assert st["fnr"] == pytest.approx(1 / 3)
    assert st["tnr"] == pytest.approx(3 / 4)
    assert st["precision"] == pytest.approx(2 / 3)
    assert st["f1"] == pytest.approx(2 / 3)
    nothing = m.threshold_stats(LABELS, SCORES, 5.0)
    assert nothing["precision"] == 0.0 and nothing["f1"] == 0.0 and nothing["fnr"] == 1.0
    assert math.isnan(m.threshold_stats([0, 0], [1.0, 2.0], 1.5)["tpr"])


def test_overkill_escape_by_hand():
    rates = m.overkill_escape(LABELS, SCORES, 0.4)
    # Flagged: 0.4, 0.4, 0.9 (3 of 4 inliers) and 0.8, 2.0 (2 of 3 outliers).
    assert rates.overkill == pytest.approx(3 / 4)
    assert rates.escape == pytest.approx(1 / 3)
    assert m.overkill_escape(LABELS, SCORES, -1.0) == (1.0, 0.0)
    assert m.overkill_escape(LABELS, SCORES, 3.0) == (0.0, 1.0)


def test_escape_at_overkill_by_hand():
    # Zero overkill allowed: threshold just above the top inlier 0.9 -> only 2.0 flagged.
    point = m.operating_point_at_overkill(LABELS, SCORES, 0.0)
    assert point["overkill"] == 0.0 and point["escape"] == pytest.approx(2 / 3)
    assert 0.9 < point["threshold"] <= 2.0
    # 25% of 4 inliers = 1 may be flagged: threshold just above 0.4 -> 0.8 and 2.0 caught.
    assert m.escape_at_overkill(LABELS, SCORES, 0.25) == pytest.approx(1 / 3)
    # 50% -> 2 inliers allowed, but the 2nd/3rd largest tie at 0.4: flagging either flags both,
    # so the best threshold still sits above 0.4.
    point = m.operating_point_at_overkill(LABELS, SCORES, 0.5)
    assert point["overkill"] == pytest.approx(1 / 4) and point["escape"] == pytest.approx(1 / 3)
    assert m.operating_point_at_overkill(LABELS, SCORES, 1.0) == {
        "threshold": -math.inf,
        "overkill": 1.0,
        "escape": 0.0,
    }
    with pytest.raises(ValueError, match="overkill_rate"):
        m.escape_at_overkill(LABELS, SCORES, 1.5)


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.1, 0.29, 0.5, 0.99])
def test_escape_at_overkill_equals_brute_force(rate):
    rng = np.random.default_rng(int(rate * 100))
    labels = np.r_[np.zeros(100, int), np.ones(40, int)]
    scores = np.round(rng.normal(size=140) + labels, 1)  # rounding creates ties
    point = m.operating_point_at_overkill(labels, scores, rate)
    best = min(
        st["fnr"]
        for t in itertools.chain(np.unique(scores), [np.inf])
        if (st := m.threshold_stats(labels, scores, t))["fpr"] <= rate + 1e-12
    )
    assert point["escape"] == pytest.approx(best)
    assert point["overkill"] <= rate + 1e-12


@pytest.fixture(scope="module")
def features() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    dim = 6
    mean_in, mean_out = np.eye(dim)[0] * 4, np.eye(dim)[1] * 4
    pool_train = rng.normal(size=(120, dim)) + mean_in
    pool_test = np.r_[rng.normal(size=(60, dim)) + mean_in, rng.normal(size=(40, dim)) + mean_out]
    # "embed" carries no signal: train and test come from one distribution.
    embed_train = rng.normal(size=(120, 4)) + 3.0
    embed_test = rng.normal(size=(100, 4)) + 3.0
    return {
        "train": {"pool": pool_train, "embed": embed_train, "logits": np.ones((120, 2))},
        "test": {"pool": pool_test, "embed": embed_test},
        "labels": np.r_[np.zeros(60, int), np.ones(40, int)],
    }


def test_evaluate_features_keys_values_timings_and_scores(features):
    timings: dict[str, float] = {}
    results, scores = m.evaluate_features(
        features["train"],
        features["test"],
        features["labels"],
        return_scores=True,
        timings=timings,
    )
    expected = {f"{f}.{s}" for f in ("pool", "embed") for s in catalog.default_scorers()}
    assert set(results) == expected == set(timings) == set(scores)
    for key, value in results.items():
        assert 0.0 <= value <= 100.0
        assert scores[key].shape == (100,)
        assert timings[key] >= 0.0
        if key.startswith("pool."):
            assert value > 95.0, key
        else:
            assert 25.0 < value < 75.0, key
        assert value == pytest.approx(m.auroc(features["labels"], scores[key]))


def test_evaluate_features_aliases_kwargs_and_errors(features):
    results = m.evaluate_features(
        {"pool": features["train"]["pool"]},
        {"pool": features["test"]["pool"]},
        features["labels"],
        scorers=("nn_cosine", "AUC", "ocsvm_linear"),
        scorer_kwargs={"nn_cosine": {"chunk_size": 3}},
    )
    assert list(results) == ["pool.auc", "pool.locsvm"]
    with pytest.raises(ValueError, match="both"):
        m.evaluate_features({"a": np.ones((3, 2))}, {"b": np.ones((3, 2))}, [0, 1, 1])
    with pytest.raises(ValueError, match="aligned"):
        m.evaluate_features(features["train"], features["test"], features["labels"][:-1])
    with pytest.raises(KeyError):
        m.evaluate_features(features["train"], features["test"], features["labels"], ("svm",))


def test_evaluate_features_on_error_nan_keeps_other_results(features):
    train = {"pool": features["train"]["pool"], "embed": np.ones((120, 4))}  # collapsed head
    test = {"pool": features["test"]["pool"], "embed": np.ones((100, 4))}
    with pytest.raises(ValueError, match="zero variance"):
        m.evaluate_features(train, test, features["labels"], scorers=("kde",))
    results, scores = m.evaluate_features(
        train, test, features["labels"], scorers=("kde",), return_scores=True, on_error="nan"
    )
    assert results["pool.kde"] > 95.0
    assert math.isnan(results["embed.kde"]) and np.all(np.isnan(scores["embed.kde"]))


def test_evaluate_rotation_keys():
    labels = np.array([0, 0, 1, 1])
    logits = np.zeros((4, 4, 4))
    for k in range(4):
        logits[k, :2, k] = 5.0  # inliers: rotations recognised
        logits[k, 2:, (k + 1) % 4] = 5.0  # outliers: rotations confused
    assert m.evaluate_rotation(logits, labels) == {"logit.auc": 100.0, "dscore.auc": 100.0}
