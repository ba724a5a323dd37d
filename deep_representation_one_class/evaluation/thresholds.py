"""Decision thresholds for one-class scores: inlier-score quantiles measured on held-out inliers.

An anomaly score only becomes a decision with a threshold, and a threshold means something only
in terms of how often it flags normal images. For every feature type and classifier the run
stores the quantiles ``q50 … q99.5`` and the maximum of the scores of inliers that the
classifier was *not* fit on (the ``--cls_holdout`` rows of the classifier-train features; see
``evaluation.classifiers``), so that flagging ``score >= q95`` flags about 5% of new normal
images. The thresholds belong to the run's one saved fit, the same one the detector serves.
Where the inliers come from is recorded in ``source``:

* ``cls_holdout``: a seeded share of the classifier-train rows, never seen by the classifiers.
  The representation was trained on them, which makes the quantiles slightly optimistic.
* ``in_sample``: too few inliers to hold any out (or ``--cls_holdout=0``); the classifiers were
  fit on all of them and scored on the same rows. Those scores are lower than those of new
  inliers, so such thresholds flag new normal images more often than their level says.

``run_thresholds`` also reports TPR/FPR/precision/F1 on the run's test set at one threshold;
the run writes everything to ``<run>/thresholds.json``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.utils import io, run_folder

logger = logging.getLogger(__name__)

FILENAME = run_folder.THRESHOLDS
VERSION = 2
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


class ThresholdError(UserError, ValueError):
    """A threshold cannot be resolved; the message says what is valid."""


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


def _canonical_one(name: str) -> str:
    try:
        return scorers_lib.SCORERS.canonical(name)
    except KeyError:
        return name.lower()


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


def run_thresholds(
    cset: classifiers_lib.ClassifierSet,
    cls_feats: Mapping[str, Any],
    test_labels: Any,
    test_scores: Mapping[str, Any],
    *,
    spec: str | float = DEFAULT_SPEC,
    evaluated_on: str = "test",
) -> dict[str, Any]:
    """Thresholds of a run's fitted classifiers and their test report.

    Args:
      cset: the run's fitted classifiers (one fit each).
      cls_feats: feature name -> ``[N, D]`` classifier-train features the split indexes.
      test_labels: ``[M]`` 0/1, 1 = outlier.
      test_scores: ``"pool.kde"``-style key -> ``[M]`` scores of ``cset`` on the test set.
      spec: the threshold reported on the test set.
      evaluated_on: ``"test"`` or ``"validation"`` (``--is_validation`` runs).

    Returns:
      A JSON-ready dict: ``source``, ``note``, ``seed``, ``holdout_fraction``, ``num_cls``,
      ``quantiles`` (``{"pool.kde": {"q50": …, "max": …, "n": …}}``) and ``test_report``.
    """
    split = cset.split
    rows = split.threshold_rows
    if split.source == "in_sample":
        note = (
            f"every one of the {split.num_rows} classifier-train rows was fit (too few rows, or "
            "--cls_holdout=0) and scored in-sample, so new inliers exceed these quantiles more "
            "often than stated"
        )
    else:
        note = (
            f"classifiers fit on a seeded {1 - split.fraction:.0%} of the classifier-train rows "
            f"and scored on the other {split.fraction:.0%}; the representation was trained on "
            "all of them, so the quantiles are slightly optimistic"
        )
    quantiles: dict[str, dict[str, float]] = {}
    for key, scorer in cset.scorers.items():
        feature = key.split(".", 1)[0]
        if feature in cls_feats:
            quantiles[key] = score_quantiles(scorer.score(np.asarray(cls_feats[feature])[rows]))
    result = {
        "version": VERSION,
        "source": split.source,
        "note": note,
        "seed": split.seed,
        "holdout_fraction": split.fraction,
        "num_cls": split.num_rows,
        "quantiles": quantiles,
    }
    report = report_at_threshold(result, test_labels, test_scores, spec)
    report["evaluated_on"] = evaluated_on
    result["test_report"] = report
    return result


def write_thresholds(run_dir: str, thresholds: Mapping[str, Any]) -> None:
    """Writes ``<run_dir>/thresholds.json`` atomically and logs the test report."""
    io.write_json(os.path.join(run_dir, FILENAME), thresholds)
    report = thresholds.get("test_report", {})
    for key, stats in report.items():
        if isinstance(stats, dict):
            logger.info(
                "%s at %s (%.4g): TPR %.3f FPR %.3f precision %.3f F1 %.3f on the %s set",
                key,
                report.get("spec"),
                stats["threshold"],
                stats["tpr"],
                stats["fpr"],
                stats["precision"],
                stats["f1"],
                report.get("evaluated_on"),
            )


def load_thresholds(run_dir: str) -> dict[str, Any] | None:
    """``<run_dir>/thresholds.json`` as a dict, or None if the run has none."""
    path = os.path.join(run_dir, FILENAME)
    if not os.path.exists(path):
        return None
    table = io.read_json(path, expect=dict)
    quantiles = table.get("quantiles", {})
    # Every stored threshold must be a number: a tampered file fails here, naming itself,
    # not later with a TypeError.
    if not isinstance(quantiles, dict) or not all(
        isinstance(q, dict)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in q.values())
        for q in quantiles.values()
    ):
        raise io.CorruptFileError(
            f"{path}: 'quantiles' must map each classifier to numbers; restore it or "
            "re-evaluate the run (python -m deep_representation_one_class.evaluate)"
        )
    for key, q in quantiles.items():
        for name, value in q.items():
            # NaN flags nothing, +Inf (or 1e400, read as Inf) nothing, -Inf everything.
            if not math.isfinite(value):
                raise io.CorruptFileError(
                    f"{path}: quantiles[{key!r}][{name!r}] is {value}, not a finite number; "
                    "restore it or re-evaluate the run (python -m "
                    "deep_representation_one_class.evaluate)"
                )
    return table
