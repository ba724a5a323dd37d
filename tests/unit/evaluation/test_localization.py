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


# ----------------------------------------------------------------------------- AUPR, F1-max


def naive_f1_max(labels, scores) -> float:
    """Best F1 of ``score >= t`` over every distinct score, by explicit counting."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel()
    best = 0.0
    for t in set(scores.tolist()):
        pred = scores >= t
        tp = int((pred & labels).sum())
        if tp:
            precision, recall = tp / pred.sum(), tp / labels.sum()
            best = max(best, 2 * precision * recall / (precision + recall))
    return 100.0 * best


@pytest.mark.parametrize("seed", range(6))
def test_pixel_aupr_and_f1_max_match_sklearn_and_naive(seed):
    from sklearn.metrics import average_precision_score

    masks, maps = random_case(seed, levels=4 + seed)
    got = M.localization_metrics(masks, maps)
    want_ap = 100 * average_precision_score(masks.ravel(), maps.ravel())
    assert got["pixel_aupr"] == pytest.approx(want_ap)
    assert got["pixel_f1_max"] == pytest.approx(naive_f1_max(masks, maps))


def test_pixel_pr_metrics_use_only_the_valid_pixels():
    from sklearn.metrics import average_precision_score

    masks, maps = random_case(4, shape=(3, 9, 9))
    valid = np.ones(masks.shape, bool)
    valid[:, :, 7:] = False  # canvas padding: masks are 0 there, maps arbitrary
    masks[~valid] = 0
    maps = maps.copy()
    maps[~valid] = 100.0  # would be false positives if counted
    got = M.localization_metrics(masks, maps, valid=valid)
    want = 100 * average_precision_score(masks[valid], maps[valid])
    assert got["pixel_aupr"] == pytest.approx(want)
    assert got["pixel_f1_max"] == pytest.approx(naive_f1_max(masks[valid], maps[valid]))


def test_perfect_and_hand_computed_pr_metrics():
    masks = np.zeros((1, 2, 3), np.uint8)
    masks[0, 0, :2] = 1  # two defect pixels among six
    perfect = M.localization_metrics(masks, masks.astype(float))
    assert perfect["pixel_aupr"] == pytest.approx(100.0)
    assert perfect["pixel_f1_max"] == pytest.approx(100.0)
    # Scores: defect 0.9, 0.5; normal 0.7, 0.1, 0.1, 0.1. Thresholds 0.9: P=1, R=1/2;
    # 0.7: P=1/2, R=1/2; 0.5: P=2/3, R=1 (F1 0.8); AP = 0.5 * 1 + 0.5 * 2/3.
    maps = np.array([[[0.9, 0.5, 0.1], [0.7, 0.1, 0.1]]])
    got = M.localization_metrics(masks, maps)
    assert got["pixel_aupr"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    assert got["pixel_f1_max"] == pytest.approx(80.0)


def test_au_pro_is_normalised_by_the_fpr_limit():
    # One region of 4 pixels; the map finds half of it at FPR 0 and the rest only with every
    # pixel (FPR 1): the curve (0, 0) -> (0, 0.5) -> (1, 1) is 0.65 at FPR 0.3, so the area up
    # to 0.3 is 0.3 * (0.5 + 0.65) / 2 and AU-PRO@0.3 = 100 * 0.575 (un-normalised: 17.25).
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, :2, :2] = 1
    maps = np.zeros((1, 4, 4))
    maps[0, 0, :2] = 1.0
    assert M.localization_metrics(masks, maps)["pro"] == pytest.approx(57.5)


def test_image_aupr_f1_max_and_per_type_auroc():
    from sklearn.metrics import average_precision_score

    from deep_representation_one_class.evaluation import metrics

    rng = np.random.default_rng(0)
    ids = np.array([0] * 8 + [1] * 5 + [2] * 4)
    scores = rng.integers(0, 6, ids.size) + (ids > 0) * rng.integers(0, 3, ids.size)
    labels = ids > 0
    assert metrics.aupr(labels, scores) == pytest.approx(
        100 * average_precision_score(labels, scores)
    )
    assert metrics.f1_max(labels, scores) == pytest.approx(naive_f1_max(labels, scores))
    per_type = metrics.per_type_auroc(ids, ("good", "crack", "scratch"), scores)
    assert set(per_type) == {"crack", "scratch"}
    for cid, name in ((1, "crack"), (2, "scratch")):
        rows = (ids == 0) | (ids == cid)
        want = 100 * roc_auc_score(ids[rows] == cid, scores[rows])
        assert per_type[name] == pytest.approx(want)
    assert metrics.per_type_auroc(np.array([1, 2]), ("good", "a", "b"), [0.1, 0.2]) == {}


def test_patch_detection_reports_every_metric_kind():
    from types import SimpleNamespace

    from deep_representation_one_class.tasks import patch_dense

    rng = np.random.default_rng(1)
    ids = np.array([0, 0, 0, 1, 1, 2])
    masks = np.zeros((6, 16, 16), np.uint8)
    masks[3:, 4:9, 4:9] = 1
    ys = xs = np.array([0, 4, 8])
    patch = rng.random((6, 3, 3)).astype(np.float32) + 0.5 * (ids > 0)[:, None, None]
    cfg = SimpleNamespace(patch_size=8, patch_agg="max", smooth_sigma=1.0)
    scores = {("pool", "gde"): patch}
    args = (scores, ys, xs, (ids > 0).astype(int), cfg)
    got, _, _ = patch_dense.detection(
        *args, masks=masks, shape=(16, 16), full=True, classes=(ids, ("good", "a", "b"))
    )
    for kind in patch_dense.METRIC_KINDS:
        assert np.isfinite(got[f"pool.gde.{kind}"]), kind
    assert {"pool.gde.image_auroc.a", "pool.gde.image_auroc.b"} <= set(got)
    plain, _, _ = patch_dense.detection(*args, masks=masks, shape=(16, 16))
    assert "pool.gde.image_aupr" not in plain and "pool.gde.pixel_aupr" not in plain
    assert plain["pool.gde.pro"] == got["pool.gde.pro"]


def test_console_table_keeps_the_new_metrics_out_of_the_auroc_rows():
    from deep_representation_one_class import cli

    metrics = {
        "pool.gde": 90.0,
        "pool.gde.image_auroc": 90.0,
        "pool.gde.pixel_auroc": 95.0,
        "pool.gde.image_aupr": 97.0,
        "pool.gde.pixel_f1_max": 40.0,
        "pool.gde.image_auroc.crack": 99.0,
    }
    table = cli.format_table(metrics)
    rows = [line.split()[0] for line in table.splitlines() if line.strip()]
    assert rows.count("pool") == 2  # the AUROC row and the pixel AUROC row, nothing else
    assert "crack" not in table and "97.00" not in table and "99.00" not in table
