"""Localisation metrics of the MVTec AD benchmark: pixel AUROC, AUPR, F1-max and AU-PRO.

Both take ground-truth masks ``[T, H, W]`` (1 = defect) and anomaly maps of the same shape
(higher = more anomalous) and return percentages, like ``evaluation.metrics.auroc``.

PRO (per-region overlap; Bergmann et al., "Uninformed Students", CVPR 2020, and the MVTec AD
IJCV 2021 paper) weights every connected defect region equally, so that a large defect cannot
hide missed small ones, which pixel AUROC does. For a threshold t, with P_t = {map >= t}:
``FPR(t)`` = |P_t ∩ normal pixels| / |normal pixels| over the whole test set, and ``PRO(t)`` =
the mean over all ground-truth regions C (connected components, 8-connectivity, of each image's
mask) of |P_t ∩ C| / |C|. The score is the area under the PRO-vs-FPR curve for FPR in
[0, max_fpr] (0.3 in the benchmark), divided by max_fpr. Every distinct map value is a threshold,
so the curve is exact: sorting the pixels once and accumulating per-pixel weights (1/|normal| for
normal pixels, 1/(|C|·#regions) for pixels of region C) gives FPR and PRO at every threshold
(implementations that sample a fixed number of thresholds over the score range only approximate
this curve). The same sort gives the ROC curve, so pixel AUROC over millions of pixels costs about
a second instead of sklearn's several, and the precision-recall curve: pixel AUPR (step-wise
average precision, as ``sklearn.metrics.average_precision_score``) and pixel F1-max (the best
F1 over all thresholds). The package's ``pro`` key is this AU-PRO up to FPR 0.3, normalised by
0.3 (the MVTec AD convention: 100 = perfect).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from deep_representation_one_class.evaluation.scorers import EvaluationInputError

__all__ = [
    "area_up_to",
    "localization_metrics",
    "localization_metrics_any_size",
    "pixel_auroc",
    "pro_curve",
    "pro_score",
    "region_labels",
]


def _masks_and_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.ndim == 2 and a.ndim == 2:  # a single image
        m, a = m[None], a[None]
    if m.ndim != 3 or m.shape != a.shape:
        raise EvaluationInputError(
            f"masks and maps must both be [T, H, W] of one shape, got {m.shape} and {a.shape}"
        )
    if not np.all(np.isin(np.unique(m), (0, 1))):
        raise EvaluationInputError("masks must be binary (0 = normal, 1 = defect)")
    if not np.all(np.isfinite(a)):
        raise EvaluationInputError("anomaly maps contain NaN/inf; only finite maps can be scored")
    m = m.astype(bool)
    if not m.any() or m.all():
        raise EvaluationInputError(
            "masks must contain both defect (1) and normal (0) pixels to score localisation"
        )
    return m, a


def region_labels(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected components of one [H, W] mask: (int32 labels, 0 = background; count)."""
    if connectivity not in (4, 8):
        raise EvaluationInputError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


def _region_weights(m: np.ndarray, connectivity: int) -> np.ndarray:
    """[T, H, W] float64: 1 / (|C| · #regions) on each pixel of region C, 0 elsewhere."""
    weights = np.zeros(m.shape, np.float64)
    regions = 0
    for i in range(m.shape[0]):
        if not m[i].any():
            continue
        labels, count = region_labels(m[i], connectivity)
        sizes = np.bincount(labels.reshape(-1))
        inside = labels > 0
        weights[i][inside] = 1.0 / sizes[labels[inside]]
        regions += count
    return weights / regions


def _curves(
    m: np.ndarray, a: np.ndarray, connectivity: int | None, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(FPR, TPR, PRO or None, precision) at every distinct threshold, from (0, 0, 0, 1).

    One descending sort of all pixels; cumulative sums of per-pixel weights then give each rate
    at every threshold. Only the last index of each run of equal scores is kept: a threshold
    admits all tied pixels at once, so intermediate points would be unreachable. ``keep``
    ([T, H, W] bool) drops the other pixels (canvas padding) from every count.
    """
    scores = a.reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if keep is not None:
        order = order[keep.reshape(-1)[order]]
    sorted_scores = scores[order]
    last = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    pos = m.reshape(-1)[order]
    tp = np.cumsum(pos)[last]
    fp = np.cumsum(~pos)[last]
    fpr = fp / max(int(fp[-1]), 1)
    tpr = tp / max(int(tp[-1]), 1)
    # tp + fp >= 1 at every kept point (each holds at least one pixel); precision 1 at recall 0.
    precision = np.concatenate([[1.0], tp / (tp + fp)])
    pro = None
    if connectivity is not None:
        pro = np.cumsum(_region_weights(m, connectivity).reshape(-1)[order])[last]
        # The cumulative sum can overshoot 1 by rounding.
        np.minimum(pro, 1.0, out=pro)
        pro = np.concatenate([[0.0], pro])
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]), pro, precision


def _pr_metrics(tpr: np.ndarray, precision: np.ndarray) -> tuple[float, float]:
    """(average precision, F1-max), fractions, from the curve points of ``_curves``."""
    ap = float(np.sum(np.diff(tpr) * precision[1:]))
    denom = precision + tpr
    f1 = np.divide(2 * precision * tpr, denom, out=np.zeros_like(denom), where=denom > 0)
    return ap, float(f1.max())


def pixel_auroc(masks: Any, maps: Any) -> float:
    """AUROC in percent over all pixels of all images (defect pixels are the positives).

    Equal to ``100 · sklearn.metrics.roc_auc_score(masks.ravel(), maps.ravel())`` (ties count
    one half), computed from one sort so that millions of pixels take about a second.

    Args:
      masks: [T, H, W] (or [H, W]) 0/1 ground truth.
      maps: anomaly maps of the same shape, finite, higher = more anomalous.

    Returns:
      100 · ROC AUC of the flattened pixels, in [0, 100].

    Raises:
      EvaluationInputError: shape mismatch, non-binary masks, non-finite maps, one class only.
    """
    m, a = _masks_and_maps(masks, maps)
    fpr, tpr, _, _ = _curves(m, a, None)
    return 100.0 * area_up_to(fpr, tpr, 1.0)


def pro_curve(masks: Any, maps: Any, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO-vs-FPR curve, one point per distinct map value, from (0, 0) to (1, 1).

    Args:
      masks: [T, H, W] 0/1 ground truth.
      maps: [T, H, W] finite anomaly maps.
      connectivity: 8 (the benchmark's choice) or 4 for the defect regions.

    Returns:
      (fpr, pro): float64 arrays of equal length, both non-decreasing, fpr[0] = pro[0] = 0
      (threshold above every score) and fpr[-1] = pro[-1] = 1 (threshold at the lowest score).
    """
    m, a = _masks_and_maps(masks, maps)
    fpr, _, pro, _ = _curves(m, a, connectivity)
    return fpr, pro


def localization_metrics(
    masks: Any, maps: Any, max_fpr: float = 0.3, connectivity: int = 8, valid: Any = None
) -> dict[str, float]:
    """Pixel AUROC, AUPR, F1-max and AU-PRO (all in percent) from a single sort of the pixels.

    Same values as :func:`pixel_auroc` and :func:`pro_score`, and as sklearn's
    ``average_precision_score`` and the best F1 of ``precision_recall_curve`` on the flattened
    pixels; see those for the arguments. ``valid`` ([T, H, W] bool, optional) restricts all of
    them to the image content of padded canvases (``--resize_policy`` fit/same_scale); masks
    are zero outside it.

    Returns:
      ``{"pixel_auroc", "pro", "pixel_aupr", "pixel_f1_max"}``; ``pro`` is the AU-PRO up to
      ``max_fpr``, normalised by ``max_fpr``.
    """
    _check_max_fpr(max_fpr)
    m, a = _masks_and_maps(masks, maps)
    keep = None if valid is None else np.asarray(valid, bool).reshape(m.shape)
    fpr, tpr, pro, precision = _curves(m, a, connectivity, keep)
    ap, f1 = _pr_metrics(tpr, precision)
    return {
        "pixel_auroc": 100.0 * area_up_to(fpr, tpr, 1.0),
        "pro": 100.0 * area_up_to(fpr, pro, max_fpr) / max_fpr,
        "pixel_aupr": 100.0 * ap,
        "pixel_f1_max": 100.0 * f1,
    }


def localization_metrics_any_size(
    masks: list[np.ndarray], maps: list[np.ndarray], max_fpr: float = 0.3
) -> dict[str, float]:
    """``localization_metrics`` over per-image maps and masks of different sizes (served maps
    come at each image's own resolution): each pair is placed top-left on a common canvas and
    the padding is left out of every metric."""
    h = max(m.shape[0] for m in maps)
    w = max(m.shape[1] for m in maps)
    big_maps = np.zeros((len(maps), h, w), np.float32)
    big_masks = np.zeros((len(maps), h, w), np.uint8)
    valid = np.zeros((len(maps), h, w), bool)
    for i, (a, m) in enumerate(zip(maps, masks)):
        big_maps[i, : a.shape[0], : a.shape[1]] = a
        big_masks[i, : m.shape[0], : m.shape[1]] = m
        valid[i, : a.shape[0], : a.shape[1]] = True
    return localization_metrics(big_masks, big_maps, max_fpr=max_fpr, valid=valid)


def _check_max_fpr(max_fpr: float) -> None:
    if not 0.0 < max_fpr <= 1.0:
        raise EvaluationInputError(f"max_fpr must be in (0, 1], got {max_fpr}")


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under the polyline (x, y) for x in [x[0], x_max].

    ``x`` must be non-decreasing. When ``x_max`` falls between two points, y is interpolated
    linearly there, so the area does not depend on where the curve happens to have points.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = int(np.searchsorted(x, x_max, side="right"))
    xs, ys = x[:n], y[:n]
    if n < x.size and (n == 0 or xs[-1] < x_max):
        x0, y0 = (x[n - 1], y[n - 1]) if n > 0 else (x[0], y[0])
        x1, y1 = x[n], y[n]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0) if x1 > x0 else y1
        xs = np.append(xs, x_max)
        ys = np.append(ys, y_at)
    if xs.size < 2:
        return 0.0
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def pro_score(masks: Any, maps: Any, max_fpr: float = 0.3, connectivity: int = 8) -> float:
    """Normalised area under the PRO curve up to ``max_fpr``, in percent.

    Args:
      masks: [T, H, W] 0/1 ground truth (good images: all zeros).
      maps: [T, H, W] finite anomaly maps, higher = more anomalous.
      max_fpr: the FPR limit of the integral, in (0, 1]; 0.3 in the MVTec AD benchmark.
      connectivity: 8 or 4 for the defect regions.

    Returns:
      100 · (area under PRO(FPR) on [0, max_fpr]) / max_fpr, in [0, 100]; a perfect map gives
      100 and a random one about 100 · max_fpr / 2 (15 for 0.3).

    Raises:
      EvaluationInputError: bad shapes or values, or ``max_fpr`` outside (0, 1].
    """
    _check_max_fpr(max_fpr)
    fpr, pro = pro_curve(masks, maps, connectivity)
    return 100.0 * area_up_to(fpr, pro, max_fpr) / max_fpr
