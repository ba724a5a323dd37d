"""Metrics over anomaly scores: AUROC, AUPR, F1-max, threshold statistics, overkill/escape rates.

Labels are 1 (or True) for outliers/defects and 0 for inliers, and scores follow the package
convention (higher = more anomalous; a sample is flagged when ``score >= threshold``). AUROC is
reported in percent, as in the reference (``100 · roc_auc_score``); rates are fractions in
[0, 1]. ``evaluate_features`` runs every registered scorer on every feature type and names the
results ``"{feature}.{scorer}"``, the reference's ``summary.json`` keys (e.g. ``pool.kde``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from deep_representation_one_class import catalog
from deep_representation_one_class.evaluation.scorers import (
    SCORERS,
    EvaluationInputError,
    make_scorer,
    rotation_scores,
)

logger = logging.getLogger(__name__)


def _binary_labels(labels: Any) -> np.ndarray:
    """``[N]`` bool outlier mask from 0/1 or boolean labels."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] == 0:
        raise EvaluationInputError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if y.dtype != np.bool_:
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isin(y, (0, 1))):
            raise EvaluationInputError(
                "labels must be binary: 1 (or True) for outliers, 0 (or False) for inliers; "
                f"got values {np.unique(y)[:5].tolist()}"
            )
        y = y == 1
    return y


def _scores_like(scores: Any, num: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != num:
        raise EvaluationInputError(
            f"scores must be a 1-D array with one score per label ({num}), got shape {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise EvaluationInputError(
            f"scores contain {int(np.sum(~np.isfinite(s)))} NaN/inf values; "
            "AUROC and thresholds need finite scores"
        )
    return s


def _require_both_classes(y: np.ndarray) -> None:
    if y.all() or not y.any():
        only = "outliers (1)" if y.all() else "inliers (0)"
        raise EvaluationInputError(
            f"labels hold only {only}; AUROC needs both inliers (0) and outliers (1)"
        )


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve in percent, outliers as the positive class.

    Args:
      labels: ``[N]`` 0/1 or bool, 1 = outlier.
      scores: ``[N]`` finite anomaly scores, higher = more anomalous.

    Returns:
      ``100 · sklearn.metrics.roc_auc_score(labels, scores)`` in [0, 100]; 50 is chance.

    Raises:
      EvaluationInputError: if only one class is present, the scores are not finite, or the
        shapes differ.
    """
    y = _binary_labels(labels)
    s = _scores_like(scores, y.shape[0])
    _require_both_classes(y)
    return 100.0 * float(roc_auc_score(y, s))


def aupr(labels: Any, scores: Any) -> float:
    """Area under the precision-recall curve in percent, outliers as the positive class.

    The step-wise average precision, ``100 · sklearn.metrics.average_precision_score`` (no
    interpolation between operating points), the AUPR of anomalib and most MVTec AD tables.
    Chance is the outlier fraction, not 50. Arguments and errors as for ``auroc``.
    """
    y = _binary_labels(labels)
    s = _scores_like(scores, y.shape[0])
    _require_both_classes(y)
    return 100.0 * float(average_precision_score(y, s))


def f1_max(labels: Any, scores: Any) -> float:
    """The best F1 over all thresholds ``score >= t``, in percent (outliers positive).

    The "F1-max" of anomaly-detection tables: an optimistic operating point (chosen on the test
    labels), useful to compare methods, not a threshold to deploy. Arguments and errors as for
    ``auroc``.
    """
    y = _binary_labels(labels)
    s = _scores_like(scores, y.shape[0])
    _require_both_classes(y)
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return 100.0 * float(f1.max())


def per_type_auroc(
    class_ids: Any, class_names: Sequence[str], scores: Any, normal: int = 0
) -> dict[str, float]:
    """Image AUROC of each defect type against the normal images, in percent.

    Args:
      class_ids: ``[N]`` ids into ``class_names`` (MVTec layout: the test sub-folders).
      class_names: the names of the ids.
      scores: ``[N]`` anomaly scores.
      normal: the id of the normal class (``good``).

    Returns:
      ``{type name: AUROC of normal vs that type}`` for every type present; the normal images
      are the negatives of every entry. Empty when there are no normal images.
    """
    ids = np.asarray(class_ids).reshape(-1)
    s = _scores_like(scores, ids.shape[0])
    is_normal = ids == normal
    if not is_normal.any():
        return {}
    out = {}
    for cid in sorted(set(ids[~is_normal].tolist())):
        rows = is_normal | (ids == cid)
        out[str(class_names[cid])] = auroc(ids[rows] != normal, s[rows])
    return out


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def threshold_stats(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Confusion counts and rates when flagging ``score >= threshold`` as anomalous.

    Args:
      labels: ``[N]`` 0/1 or bool, 1 = outlier.
      scores: ``[N]`` finite anomaly scores.
      threshold: decision threshold (inclusive).

    Returns:
      Dict with counts ``tp, fp, tn, fn`` and fractions ``tpr`` (= recall), ``fpr`` (=
      overkill), ``fnr`` (= escape), ``tnr``, ``precision`` and ``f1``. A rate whose
      denominator is zero (e.g. ``fpr`` without inliers) is NaN; precision and F1 are 0 when
      nothing is flagged (sklearn's ``zero_division=0``).
    """
    y = _binary_labels(labels)
    s = _scores_like(scores, y.shape[0])
    flagged = s >= threshold
    tp = int(np.sum(flagged & y))
    fp = int(np.sum(flagged & ~y))
    tn = int(np.sum(~flagged & ~y))
    fn = int(np.sum(~flagged & y))
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "tpr": _ratio(tp, tp + fn),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, tp + fn),
        "tnr": _ratio(tn, fp + tn),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }


class OverkillEscape(NamedTuple):
    """Inspection rates at one threshold (fractions in [0, 1])."""

    overkill: float  # inliers (good parts) flagged as anomalous: the false positive rate
    escape: float  # outliers (defects) not flagged: the false negative rate


def overkill_escape(labels: Any, scores: Any, threshold: float) -> OverkillEscape:
    """Overkill and escape rates when flagging ``score >= threshold``.

    Fix of reference bug (spec §11 item 9): the reference's ``util/metric.py`` applied Python
    ``not``/``and`` to arrays (a ``ValueError`` for more than one sample) and counted true
    negatives as false positives. Here ``overkill = FP / (FP + TN)`` over inliers and
    ``escape = FN / (FN + TP)`` over outliers. Unlike the reference, the arguments are
    ``(labels, scores)`` in sklearn order and the scores are thresholded here.

    Args:
      labels: ``[N]`` 0/1 or bool, 1 = outlier (defect).
      scores: ``[N]`` finite anomaly scores.
      threshold: decision threshold (inclusive).

    Returns:
      ``OverkillEscape(overkill, escape)``; a rate is NaN when its class is absent.
    """
    stats = threshold_stats(labels, scores, threshold)
    return OverkillEscape(overkill=stats["fpr"], escape=stats["fnr"])


def operating_point_at_overkill(
    labels: Any, scores: Any, overkill_rate: float = 0.01
) -> dict[str, float]:
    """The lowest-escape threshold whose overkill does not exceed ``overkill_rate``.

    With ``n`` inliers at most ``k = ⌊overkill_rate · n⌋`` of them may be flagged, so the
    threshold is placed just above the ``(k+1)``-th largest inlier score (ties included): every
    lower threshold flags more than ``k`` inliers, and every higher one flags no more outliers.
    This matches the reference's ``escape_at_overkill`` (which flagged ``score > s_(k+1)``)
    once its array bugs are fixed; the returned threshold is ``nextafter(s_(k+1), +inf)`` so it
    obeys this module's inclusive ``score >= threshold`` convention. With ``k = n`` every sample
    is flagged (threshold ``-inf``).

    Args:
      labels: ``[N]`` 0/1 or bool with both classes present, 1 = outlier.
      scores: ``[N]`` finite anomaly scores.
      overkill_rate: allowed fraction of flagged inliers, in [0, 1].

    Returns:
      ``{"threshold", "overkill", "escape"}``: the threshold and the realised rates (fractions;
      the realised overkill is ``<= overkill_rate``).
    """
    y = _binary_labels(labels)
    s = _scores_like(scores, y.shape[0])
    _require_both_classes(y)
    if not 0.0 <= overkill_rate <= 1.0:
        raise EvaluationInputError(f"overkill_rate must be in [0, 1], got {overkill_rate}")
    inlier_desc = np.sort(s[~y])[::-1]
    # The epsilon absorbs float error in the product (e.g. 0.29 * 100 = 28.999999999999996).
    allowed = min(math.floor(overkill_rate * inlier_desc.shape[0] + 1e-9), inlier_desc.shape[0])
    if allowed == inlier_desc.shape[0]:
        threshold = -math.inf
    else:
        threshold = float(np.nextafter(inlier_desc[allowed], math.inf))
    rates = overkill_escape(y, s, threshold)
    return {"threshold": threshold, "overkill": rates.overkill, "escape": rates.escape}


def escape_at_overkill(labels: Any, scores: Any, overkill_rate: float = 0.01) -> float:
    """Escape rate (FNR) at the best threshold whose overkill (FPR) is ``<= overkill_rate``.

    See ``operating_point_at_overkill`` for the threshold choice and the reference bug fixed.

    Returns:
      The escape rate, a fraction in [0, 1].
    """
    return operating_point_at_overkill(labels, scores, overkill_rate)["escape"]


def evaluate_features(
    train_feats: Mapping[str, Any],
    test_feats: Mapping[str, Any],
    test_labels: Any,
    scorers: Sequence[str] | None = None,
    return_scores: bool = False,
    timings: dict[str, float] | None = None,
    *,
    scorer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    on_error: str = "raise",
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """AUROC of every scorer on every feature type present in both dicts.

    Args:
      train_feats: feature name (``"pool"``, ``"embed"``, ...) -> ``[N, D]`` training-inlier
        features.
      test_feats: feature name -> ``[M, D]`` test features, rows aligned with ``test_labels``.
        Only names present in both dicts are evaluated (others are logged and skipped).
      test_labels: ``[M]`` 0/1 or bool, 1 = outlier; both classes must be present.
      scorers: scorer keys or aliases; results use the canonical key (``"ocsvm_rbf"`` ->
        ``"kocsvm"``), duplicates are dropped. None: the catalog's training defaults.
      return_scores: also return the per-sample scores.
      timings: if given, ``timings[key]`` is set to the fit + score + AUROC seconds.
      scorer_kwargs: optional scorer key -> constructor kwargs (e.g. ``{"kde": {"chunk_size":
        256}}``).
      on_error: ``"raise"`` (default) or ``"nan"``: with ``"nan"`` a scorer that fails on the
        data with a ``ValueError`` (NaN features after divergence, a collapsed head with zero
        variance) is logged and recorded as NaN, so one degenerate feature type does not lose
        the other results.

    Returns:
      ``{"{feature}.{scorer}": AUROC in percent}``, or ``(metrics, scores)`` with ``scores`` the
      same keys -> ``[M]`` float64 anomaly scores (NaN-filled for failed scorers) when
      ``return_scores``.
    """
    if on_error not in ("raise", "nan"):
        raise EvaluationInputError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
    y = _binary_labels(test_labels)
    _require_both_classes(y)
    names: list[str] = []
    for name in catalog.default_scorers("train") if scorers is None else scorers:
        key = SCORERS.canonical(name)
        if key not in names:
            names.append(key)
    kwargs_by_name = {SCORERS.canonical(k): dict(v) for k, v in (scorer_kwargs or {}).items()}
    feats = [f for f in train_feats if f in test_feats]
    if not feats:
        raise EvaluationInputError(
            f"no feature name is in both train_feats {sorted(train_feats)} and test_feats "
            f"{sorted(test_feats)}; pass matching keys such as 'pool' and 'embed'"
        )
    skipped = sorted(set(train_feats) ^ set(test_feats))
    if skipped:
        logger.warning("Skipping features present in only one of train/test: %s", skipped)

    results: dict[str, float] = {}
    all_scores: dict[str, np.ndarray] = {}
    for feat in feats:
        test = test_feats[feat]
        # Misaligned rows are a caller bug and always raise; bad values (NaN) are checked by the
        # scorer inside the try block so that on_error="nan" covers them.
        shape = np.shape(test)
        if len(shape) < 1 or shape[0] != y.shape[0]:
            raise EvaluationInputError(
                f"test '{feat}' features have shape {shape} but there are {y.shape[0]} test "
                "labels; rows must be aligned with the labels"
            )
        for name in names:
            key = f"{feat}.{name}"
            start = time.perf_counter()
            try:
                scorer = make_scorer(name, **kwargs_by_name.get(name, {}))
                scores = scorer.fit(train_feats[feat]).score(test)
                value = auroc(y, scores)
            except ValueError as err:
                if on_error == "raise":
                    raise
                logger.warning("%s failed, recording NaN: %s", key, err)
                scores, value = np.full(y.shape[0], np.nan), math.nan
            results[key] = value
            all_scores[key] = scores
            if timings is not None:
                timings[key] = time.perf_counter() - start
    if return_scores:
        return results, all_scores
    return results


def evaluate_rotation(view_logits: Any, test_labels: Any) -> dict[str, float]:
    """AUROC of the rotation classifier's scores (reference keys ``logit.auc`` and ``dscore.auc``).

    Args:
      view_logits: ``[V, N, V]`` logits, see ``scorers.rotation_scores``.
      test_labels: ``[N]`` 0/1 or bool, 1 = outlier.

    Returns:
      ``{"logit.auc": AUROC %, "dscore.auc": AUROC %}``.
    """
    scores = rotation_scores(view_logits)
    return {f"{name}.auc": auroc(test_labels, s) for name, s in scores.items()}
