"""Decision thresholds for one-class scores: inlier-score quantiles measured on held-out inliers.

An anomaly score only becomes a decision with a threshold, and a threshold means something only
in terms of how often it flags normal images. For every feature type and classifier this module
stores the quantiles ``q50 … q99.5`` and the maximum of the scores of inliers that the
classifier was *not* fit on, so that flagging ``score >= q95`` flags about 5% of new normal
images. Where those inliers come from is recorded in ``source``:

* ``validation_inliers``: the run used ``--is_validation``; its held-out 10% inliers (the
  inliers of its evaluation set) are scored by classifiers fit on all classifier-train features.
* ``cls_holdout``: a seeded 10% of the classifier-train features is held out; the classifiers
  are fit on the other 90% and the quantiles are taken on the held-out 10%. A detector that uses
  these thresholds fits its classifiers on the same 90% (``holdout_split`` reproduces it): the
  scale of the KDE and RBF OC-SVM scores depends on the size of the fit set (the OC-SVM's dual
  coefficients sum to ``nu * N``), so quantiles from a 90% fit do not transfer to a 100% fit.
* ``in_sample``: too few inliers to hold any out; the classifiers are fit on all of them and
  scored on the same rows. Those scores are lower than those of new inliers, so such thresholds
  flag new normal images more often than their level says.

In every case the representation itself was trained on these inliers (except for the
validation inliers), which makes the quantiles slightly optimistic. ``write_run_thresholds``
also reports TPR/FPR/precision/F1 on the run's test set at one threshold, and writes everything
to ``<run>/thresholds.json``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.utils import io

logger = logging.getLogger(__name__)

FILENAME = "thresholds.json"
VERSION = 1
# Quantile name -> level; "max" (the largest held-out score) is stored as well.
QUANTILES: dict[str, float] = {
    "q50": 0.50,
    "q80": 0.80,
    "q90": 0.90,
    "q95": 0.95,
    "q99": 0.99,
    "q99.5": 0.995,
}
LEVEL_NAMES = (*QUANTILES, "max")
DEFAULT_SPEC = "q95"
HOLDOUT_FRACTION = 0.1
# Fewer held-out (or fit) rows than this and the in-sample fallback is used.
MIN_ROWS = 5
# Stream id of the hold-out generator, distinct from the dataset module's split streams.
_STREAM_HOLDOUT = 3
# Score types that are not fit on features (rotation classifier): no quantiles can be computed.
_FEATURELESS = ("logit", "dscore")


class ThresholdError(ValueError):
    """A threshold cannot be resolved; the message says what is valid."""


def holdout_split(
    num_rows: int, seed: int, fraction: float = HOLDOUT_FRACTION
) -> tuple[np.ndarray, np.ndarray] | None:
    """The seeded fit / hold-out partition of the classifier-train rows.

    Args:
      num_rows: number of classifier-train rows N.
      seed: the run seed (the partition is a pure function of ``(N, seed, fraction)``).
      fraction: share of rows held out, in (0, 1).

    Returns:
      ``(fit_rows, holdout_rows)``: disjoint sorted int64 index arrays covering ``range(N)``,
      with ``round(fraction * N)`` held-out rows; or None when either part would have fewer
      than ``MIN_ROWS`` rows (use the in-sample fallback then).
    """
    if not 0.0 < fraction < 1.0:
        raise ThresholdError(f"hold-out fraction must be in (0, 1), got {fraction}")
    n_hold = round(fraction * num_rows)
    if n_hold < MIN_ROWS or num_rows - n_hold < MIN_ROWS:
        return None
    rng = np.random.default_rng([int(seed) % (2**63), _STREAM_HOLDOUT])
    perm = rng.permutation(num_rows)
    return np.sort(perm[n_hold:]).astype(np.int64), np.sort(perm[:n_hold]).astype(np.int64)


def score_quantiles(scores: Any) -> dict[str, float]:
    """Quantiles (linear interpolation) and maximum of a score sample.

    Args:
      scores: ``[n]`` finite anomaly scores of inliers.

    Returns:
      ``{"q50": …, "q80": …, "q90": …, "q95": …, "q99": …, "q99.5": …, "max": …, "n": n}``.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ThresholdError("quantiles need a non-empty sample of finite scores")
    out = {name: float(np.quantile(s, level)) for name, level in QUANTILES.items()}
    out["max"] = float(s.max())
    out["n"] = int(s.size)
    return out


def fit_rows(thresholds: Mapping[str, Any] | None, num_rows: int) -> np.ndarray | None:
    """The classifier-train rows a detector must fit on to match ``thresholds``.

    Returns:
      An index array for ``cls_holdout`` thresholds, None (all rows) otherwise.

    Raises:
      ThresholdError: the thresholds were computed for a different number of rows.
    """
    if not thresholds or thresholds.get("source") != "cls_holdout":
        return None
    expected = int(thresholds["num_cls"])
    if expected != num_rows:
        raise ThresholdError(
            f"thresholds were computed on {expected} classifier-train rows but embeddings.npz "
            f"has {num_rows}; delete {FILENAME} to recompute them"
        )
    split = holdout_split(num_rows, int(thresholds["seed"]), float(thresholds["holdout_fraction"]))
    if split is None:  # pragma: no cover - cls_holdout is only written when a split exists
        raise ThresholdError(f"{FILENAME} says cls_holdout but {num_rows} rows cannot be split")
    return split[0]


def _canonical_one(name: str) -> str:
    try:
        return scorers_lib.SCORERS.canonical(name)
    except KeyError:
        return name.lower()


def _canonical(classifiers: Sequence[str]) -> list[str]:
    names: list[str] = []
    for name in classifiers:
        try:
            key = scorers_lib.SCORERS.canonical(name)
        except KeyError as e:
            raise ThresholdError(str(e.args[0])) from None
        if key not in names:
            names.append(key)
    return names


def compute_thresholds(
    cls_feats: Mapping[str, Any],
    classifiers: Sequence[str],
    seed: int = 0,
    *,
    heldout_feats: Mapping[str, Any] | None = None,
    fraction: float = HOLDOUT_FRACTION,
) -> dict[str, Any]:
    """Inlier-score quantiles of every classifier on every feature type.

    Args:
      cls_feats: feature name (``"pool"``, ``"embed"``) -> ``[N, D]`` classifier-train inlier
        features (the ``cls_*`` arrays of ``embeddings.npz``).
      classifiers: scorer keys or aliases (``kde``, ``gde``, ``kocsvm``, ``auc``, ``locsvm``);
        rotation-classifier names (``logit``, ``dscore``) are skipped.
      seed: seeds the 10% hold-out.
      heldout_feats: feature name -> ``[M, D]`` features of held-out inliers (validation mode).
        When given, the classifiers are fit on all of ``cls_feats`` and the quantiles are taken
        on these rows instead of a hold-out of ``cls_feats``.
      fraction: hold-out share when ``heldout_feats`` is None.

    Returns:
      A JSON-ready dict: ``source`` (``validation_inliers``, ``cls_holdout`` or ``in_sample``),
      ``note``, ``seed``, ``holdout_fraction``, ``num_cls`` and ``quantiles``:
      ``{"pool.kde": {"q50": …, …, "max": …, "n": …}, …}``. A classifier that fails on the data
      (e.g. zero-variance features) is logged and left out.
    """
    names = [n for n in classifiers if n.lower() not in _FEATURELESS]
    names = _canonical(names)
    feats = {
        k: scorers_lib.as_features(v, f"{k} classifier-train features")
        for k, v in cls_feats.items()
    }
    if not feats:
        raise ThresholdError("compute_thresholds needs at least one feature type in cls_feats")
    num_cls = {v.shape[0] for v in feats.values()}
    if len(num_cls) != 1:
        raise ThresholdError(f"all feature types need the same number of rows, got {num_cls}")
    n = num_cls.pop()
    split = None
    if heldout_feats is not None:
        source = "validation_inliers"
        note = "held-out validation inliers scored by classifiers fit on all classifier-train rows"
    else:
        split = holdout_split(n, seed, fraction)
        if split is None:
            source = "in_sample"
            note = (
                f"only {n} classifier-train rows: scored in-sample (classifiers fit and scored on "
                "the same rows), so new inliers exceed these quantiles more often than stated"
            )
        else:
            source = "cls_holdout"
            note = (
                f"classifiers fit on a seeded {1 - fraction:.0%} of the classifier-train rows and "
                f"scored on the other {fraction:.0%}; the representation was trained on all of "
                "them, so the quantiles are slightly optimistic"
            )
    quantiles: dict[str, dict[str, float]] = {}
    for feat, x in feats.items():
        if heldout_feats is not None:
            if feat not in heldout_feats:
                continue
            fit_x, eval_x = x, heldout_feats[feat]
        elif split is None:
            fit_x = eval_x = x
        else:
            fit_x, eval_x = x[split[0]], x[split[1]]
        for name in names:
            key = f"{feat}.{name}"
            try:
                scorer = scorers_lib.make_scorer(name).fit(fit_x)
                quantiles[key] = score_quantiles(scorer.score(eval_x))
            except ValueError as err:
                logger.warning("No thresholds for %s: %s", key, err)
    return {
        "version": VERSION,
        "source": source,
        "note": note,
        "seed": int(seed),
        "holdout_fraction": float(fraction),
        "num_cls": int(n),
        "quantiles": quantiles,
    }


def parse_spec(spec: str | float) -> str | float:
    """Normalises a threshold spec: a quantile name (``'q95'``, ``'max'``) or a number."""
    if isinstance(spec, bool):
        raise ThresholdError(f"threshold must be a quantile name or a number, got {spec!r}")
    if isinstance(spec, (int, float, np.integer, np.floating)):
        value = float(spec)
    else:
        text = str(spec).strip().lower()
        if text in LEVEL_NAMES:
            return text
        try:
            value = float(text)
        except ValueError:
            raise ThresholdError(
                f"threshold '{spec}' is neither a quantile ({', '.join(LEVEL_NAMES)}) nor a number"
            ) from None
    if not math.isfinite(value):
        raise ThresholdError(f"threshold must be finite, got {spec!r}")
    return value


def resolve_threshold(
    thresholds: Mapping[str, Any] | None,
    classifier: str,
    spec: str | float = DEFAULT_SPEC,
    feature: str = "pool",
) -> float:
    """The numeric threshold of one classifier.

    Args:
      thresholds: the dict of ``compute_thresholds`` (or ``thresholds.json``); may be None when
        ``spec`` is a number.
      classifier: ``"kde"`` (combined with ``feature``) or a full key ``"pool.kde"``.
      spec: a quantile name (``q50``, ``q80``, ``q90``, ``q95``, ``q99``, ``q99.5``, ``max``) or
        a number (float or numeric string), used as is.
      feature: feature type when ``classifier`` has no ``feature.`` prefix.

    Returns:
      The threshold; flag a sample as anomalous when ``score >= threshold``.

    Raises:
      ThresholdError: unknown spec, or no quantiles stored for that classifier.
    """
    value = parse_spec(spec)
    if isinstance(value, float):
        return value
    key = classifier if "." in classifier else f"{feature}.{_canonical_one(classifier)}"
    table = (thresholds or {}).get("quantiles", {})
    if key not in table:
        have = ", ".join(sorted(table)) or "none"
        raise ThresholdError(
            f"no quantile thresholds for '{key}' (available: {have}); pass a numeric threshold"
        )
    return float(table[key][value])


def report_at_threshold(
    thresholds: Mapping[str, Any],
    test_labels: Any,
    test_scores: Mapping[str, Any],
    spec: str | float = DEFAULT_SPEC,
) -> dict[str, Any]:
    """TPR/FPR/precision/F1 of each classifier on a labelled set at one threshold.

    Args:
      thresholds: the dict of ``compute_thresholds``.
      test_labels: ``[M]`` 0/1, 1 = outlier.
      test_scores: ``"pool.kde"``-style key -> ``[M]`` scores *from the classifiers the
        thresholds belong to*; keys without thresholds or with non-finite scores are skipped.
      spec: the threshold (see ``resolve_threshold``).

    Returns:
      ``{"spec": spec, "pool.kde": {threshold, tp, fp, tn, fn, tpr, fpr, precision, f1, …}}``.
    """
    report: dict[str, Any] = {"spec": spec}
    for key, scores in test_scores.items():
        s = np.asarray(scores, dtype=np.float64)
        if key not in thresholds.get("quantiles", {}) and isinstance(parse_spec(spec), str):
            continue
        if not np.all(np.isfinite(s)):
            continue
        threshold = resolve_threshold(thresholds, key, spec)
        report[key] = metrics_lib.threshold_stats(test_labels, s, threshold)
    return report


def fitted_scores(
    cls_feats: Mapping[str, Any],
    eval_feats: Mapping[str, Any],
    thresholds: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Scores of ``eval_feats`` by classifiers fit the way ``thresholds`` were measured.

    Returns:
      ``"pool.kde"``-style key -> ``[M]`` float64 scores, for every key of
      ``thresholds["quantiles"]`` whose feature is in both dicts.
    """
    out: dict[str, np.ndarray] = {}
    for key in thresholds.get("quantiles", {}):
        feat, name = key.split(".", 1)
        if feat not in cls_feats or feat not in eval_feats:
            continue
        x = np.asarray(cls_feats[feat])
        rows = fit_rows(thresholds, x.shape[0])
        fit_x = x if rows is None else x[rows]
        out[key] = scorers_lib.make_scorer(name).fit(fit_x).score(eval_feats[feat])
    return out


def run_thresholds(
    arrays: Mapping[str, Any],
    classifiers: Sequence[str],
    seed: int = 0,
    *,
    is_validation: bool = False,
    spec: str | float = DEFAULT_SPEC,
) -> dict[str, Any]:
    """Thresholds and test report of a finished run, from its ``embeddings.npz`` arrays.

    Args:
      arrays: ``cls_pool``, ``cls_embed``, ``test_pool``, ``test_embed``, ``test_y`` (the
        arrays ``train_lib.evaluate_model`` returns / ``embeddings.npz`` holds).
      classifiers: the run's ``config.classifiers``.
      seed: the run's seed.
      is_validation: the run used ``--is_validation`` (its test set is the validation split, so
        its inliers are held-out inliers).
      spec: threshold reported on the test set.

    Returns:
      ``compute_thresholds``'s dict plus ``test_report`` (see ``report_at_threshold``; its
      ``evaluated_on`` says which set).
    """
    feats = [f for f in ("pool", "embed") if f"cls_{f}" in arrays]
    cls = {f: np.asarray(arrays[f"cls_{f}"]) for f in feats}
    test = {f: np.asarray(arrays[f"test_{f}"]) for f in feats if f"test_{f}" in arrays}
    labels = np.asarray(arrays["test_y"]).reshape(-1)
    heldout = None
    if is_validation:
        heldout = {f: v[labels == 0] for f, v in test.items()}
    result = compute_thresholds(cls, classifiers, seed, heldout_feats=heldout)
    report = report_at_threshold(result, labels, fitted_scores(cls, test, result), spec)
    report["evaluated_on"] = "validation" if is_validation else "test"
    result["test_report"] = report
    return result


def write_run_thresholds(
    run_dir: str,
    arrays: Mapping[str, Any],
    classifiers: Sequence[str],
    seed: int = 0,
    *,
    is_validation: bool = False,
    spec: str | float = DEFAULT_SPEC,
) -> dict[str, Any]:
    """Computes ``run_thresholds`` and writes it atomically to ``<run_dir>/thresholds.json``.

    Returns:
      The dict written.
    """
    result = run_thresholds(arrays, classifiers, seed, is_validation=is_validation, spec=spec)
    io.write_json(os.path.join(run_dir, FILENAME), result)
    for key, stats in result["test_report"].items():
        if isinstance(stats, dict):
            logger.info(
                "%s at %s (%.4g): TPR %.3f FPR %.3f precision %.3f F1 %.3f on the %s set",
                key,
                spec,
                stats["threshold"],
                stats["tpr"],
                stats["fpr"],
                stats["precision"],
                stats["f1"],
                result["test_report"]["evaluated_on"],
            )
    return result


def load_thresholds(run_dir: str) -> dict[str, Any] | None:
    """``<run_dir>/thresholds.json`` as a dict, or None if the run has none."""
    path = os.path.join(run_dir, FILENAME)
    if not os.path.exists(path):
        return None
    return io.read_json(path)
