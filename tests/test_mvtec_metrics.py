"""MVTec localisation metrics against naive reference implementations on tiny hand-made arrays.

The references loop over every threshold, label regions with their own flood fill and
integrate with explicit loops, so they share no code with ``evaluation.localization``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deep_representation_one_class.evaluation import localization as M
from deep_representation_one_class.evaluation.scorers import EvaluationInputError

# ----------------------------------------------------------------------------- references


def naive_regions(mask: np.ndarray, eight: bool = True) -> list[set[tuple[int, int]]]:
    """Connected components of a 2-D 0/1 mask by flood fill."""
    h, w = mask.shape
    seen: set[tuple[int, int]] = set()
    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    if not eight:
        steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    regions = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and (y, x) not in seen:
                stack, region = [(y, x)], set()
                seen.add((y, x))
                while stack:
                    cy, cx = stack.pop()
                    region.add((cy, cx))
                    for dy, dx in steps:
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            stack.append((ny, nx))
                regions.append(region)
    return regions


def naive_pro(masks, maps, max_fpr=0.3, eight=True) -> float:
    regions = [(i, r) for i in range(len(masks)) for r in naive_regions(masks[i], eight)]
    normal = masks == 0
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        overlaps = [sum(pred[i][y, x] for y, x in r) / len(r) for i, r in regions]
        points.append((float(fpr), float(np.mean(overlaps))))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the last segment at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return 100.0 * area / max_fpr


def naive_auroc(masks, maps) -> float:
    pos = maps[masks == 1].ravel()
    neg = maps[masks == 0].ravel()
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return 100.0 * wins / (len(pos) * len(neg))


def random_case(seed: int, shape=(3, 7, 8), levels=6):
    rng = np.random.default_rng(seed)
    masks = np.zeros(shape, np.uint8)
    for i in range(1, shape[0]):  # image 0 stays defect-free, like a "good" image
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, shape[1] - 2), rng.integers(0, shape[2] - 2)
            masks[i, y : y + rng.integers(1, 3), x : x + rng.integers(1, 4)] = 1
        if rng.random() < 0.5:  # a lone diagonal neighbour: a separate 4-region, same 8-region
            masks[i, -1, -1] = 1
            masks[i, -2, -2] = 1
    # Few distinct values -> many ties; defects score higher on average.
    maps = rng.integers(0, levels, size=shape) + 2 * masks * rng.integers(0, 2, size=shape)
    return masks, maps.astype(np.float32)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_pro_matches_naive(seed, max_fpr):
    masks, maps = random_case(seed)
    assert M.pro_score(masks, maps, max_fpr) == pytest.approx(naive_pro(masks, maps, max_fpr))


@pytest.mark.parametrize("seed", range(3))
def test_pro_four_connectivity_matches_naive(seed):
    masks, maps = random_case(seed + 10)
    got = M.pro_score(masks, maps, connectivity=4)
    assert got == pytest.approx(naive_pro(masks, maps, eight=False))


@pytest.mark.parametrize("seed", range(6))
def test_pixel_auroc_matches_naive_and_sklearn(seed):
    masks, maps = random_case(seed)
    got = M.pixel_auroc(masks, maps)
    assert got == pytest.approx(naive_auroc(masks, maps))
    assert got == pytest.approx(100 * roc_auc_score(masks.ravel(), maps.ravel()))


def test_localization_metrics_equal_the_separate_functions():
    masks, maps = random_case(3, shape=(4, 16, 16), levels=50)
    both = M.localization_metrics(masks, maps, max_fpr=0.2)
    assert both["pixel_auroc"] == pytest.approx(M.pixel_auroc(masks, maps))
    assert both["pro"] == pytest.approx(M.pro_score(masks, maps, 0.2))


def test_pro_weights_regions_equally_unlike_pixel_auroc():
    # A 20-pixel defect found perfectly and a 1-pixel defect missed entirely.
    masks = np.zeros((1, 10, 10), np.uint8)
    masks[0, 0:4, 0:5] = 1
    masks[0, 8, 8] = 1
    maps = np.full((1, 10, 10), 0.5, np.float32)
    maps[0, 0:4, 0:5] = 1.0
    maps[0, 8, 8] = 0.0
    # Curve: (0, 0) -> (0, 0.5) -> (1, 0.5) -> (1, 1): half of the regions at every FPR < 1.
    assert M.pro_score(masks, maps) == pytest.approx(50.0)
    assert M.pixel_auroc(masks, maps) == pytest.approx(100 * 20 / 21)


def test_pro_extremes():
    masks, _ = random_case(1)
    assert M.pro_score(masks, masks.astype(float)) == pytest.approx(100.0)
    assert M.pro_score(masks, -masks.astype(float)) == pytest.approx(0.0)
    # All pixels tied: the curve is the diagonal (0, 0) -> (1, 1); area 0.045 / 0.3.
    assert M.pro_score(masks, np.zeros(masks.shape)) == pytest.approx(15.0)
    assert M.pixel_auroc(masks, np.zeros(masks.shape)) == pytest.approx(50.0)


def test_pro_curve_shape():
    masks, maps = random_case(2)
    fpr, pro = M.pro_curve(masks, maps)
    assert fpr[0] == pro[0] == 0.0
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    # One point per distinct score value, plus the start.
    assert len(fpr) == len(np.unique(maps)) + 1


def test_area_up_to_interpolates_at_the_limit():
    assert M.area_up_to(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.3) == pytest.approx(0.045)
    x, y = np.array([0.0, 0.0, 0.2, 0.6]), np.array([0.0, 1.0, 1.0, 0.0])
    # Rectangle 0.2 x 1, then a trapezoid from (0.2, 1) to (0.3, 0.75).
    assert M.area_up_to(x, y, 0.3) == pytest.approx(0.2 + 0.1 * (1 + 0.75) / 2)


def test_region_labels_connectivity():
    mask = np.array([[1, 0], [0, 1]], np.uint8)
    assert M.region_labels(mask, 8)[1] == 1
    assert M.region_labels(mask, 4)[1] == 2
    with pytest.raises(EvaluationInputError, match="connectivity"):
        M.region_labels(mask, 6)


def test_single_image_arrays_are_accepted():
    masks, maps = random_case(4)
    assert M.pro_score(masks[1], maps[1]) == pytest.approx(naive_pro(masks[1:2], maps[1:2]))


@pytest.mark.parametrize(
    "masks,maps,match",
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "one shape"),
        (np.full((1, 4, 4), 2), np.zeros((1, 4, 4)), "binary"),
        (np.eye(4)[None], np.full((1, 4, 4), np.nan), "NaN"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), "both defect"),
    ],
)
def test_bad_inputs_raise(masks, maps, match):
    with pytest.raises(EvaluationInputError, match=match):
        M.pro_score(masks, maps)
    with pytest.raises(EvaluationInputError, match=match):
        M.pixel_auroc(masks, maps)


def test_bad_max_fpr():
    masks, maps = random_case(0)
    with pytest.raises(EvaluationInputError, match="max_fpr"):
        M.pro_score(masks, maps, max_fpr=0.0)
