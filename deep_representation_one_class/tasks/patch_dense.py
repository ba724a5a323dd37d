"""Dense patch scoring, shared by a run's own evaluation, its baselines and its synthetic check.

``DenseScorer`` pairs a window embedder (``fn(uint8 windows [K, P, P, C]) -> {feature: [K, D]}``:
the trained network, the untrained one, raw pixels) with the one-class scorers fit ONCE on a
seeded bank of training windows, and scores every window of a dense grid of any images.
``detection`` then turns window scores into image scores (``patch_agg`` over the windows whose
centre lies in the image content) and, with masks, pixel maps and localisation metrics computed
on the content only (padded canvases of ``--resize_policy`` fit/same_scale).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from deep_representation_one_class import catalog
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import localization as loc_metrics
from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.tasks import patch_grid as patches_lib
from deep_representation_one_class.tasks.patch_similarity import (
    _share_similarities,
    _SimilarityScorer,
)
from deep_representation_one_class.utils import progress, run_folder

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_KINDS",
    "DenseScorer",
    "PatchEvalError",
    "aggregate",
    "changed_windows",
    "coreset",
    "detection",
    "metric_key",
    "parse_agg",
    "patch_scorers",
    "sample_bank",
    "valid_pixels",
    "valid_windows",
]

METRIC_KINDS = (
    "image_auroc",
    "pixel_auroc",
    "pro",
    "image_aupr",
    "image_f1_max",
    "pixel_aupr",
    "pixel_f1_max",
)
# The detection/localisation numbers besides the AUROCs and PRO (``detection(full=True)``).
_PR_KINDS = ("pixel_aupr", "pixel_f1_max")
# Windows per chunk of images: 8192 uint8 32x32x3 windows are 25 MB, their float32 batch and
# features a few MB more.
CHUNK_PATCHES = 8192
_STREAM_BANK = 0xBA4C
_STREAM_CORESET = 0xC05E
# Dimension of the random projection the greedy coreset measures distances in (PatchCore).
_CORESET_DIM = 128


class PatchEvalError(UserError, ValueError):
    """A patch-evaluation option is unusable; the message says which and what is valid."""


def metric_key(feature: str, scorer: str, kind: str | None = None) -> str:
    """``pool.gde.image_auroc`` etc. for a kind in ``METRIC_KINDS``; ``pool.gde`` for None."""
    if kind is None:
        return f"{feature}.{scorer}"
    if kind not in METRIC_KINDS:
        raise PatchEvalError(f"unknown metric kind '{kind}'; valid: {', '.join(METRIC_KINDS)}")
    return f"{feature}.{scorer}.{kind}"


def parse_agg(name: str) -> tuple[str, int]:
    """``'max'`` -> ('max', 1), ``'mean'`` -> ('mean', 0), ``'top10'`` -> ('top', 10).

    Raises:
      PatchEvalError: anything else (``top`` needs a positive count).
    """
    text = str(name).strip().lower()
    if text == "max":
        return "max", 1
    if text == "mean":
        return "mean", 0
    match = re.fullmatch(r"top_?(\d+)", text)
    if match and int(match.group(1)) > 0:
        return "top", int(match.group(1))
    raise PatchEvalError(
        f"unknown --patch_agg '{name}'; valid: max, mean or topK with K >= 1 (e.g. top10)"
    )


def aggregate(patch_scores: np.ndarray, agg: str, valid: np.ndarray | None = None) -> np.ndarray:
    """Image scores from per-patch scores.

    Args:
      patch_scores: [T, n] (or [T, gh, gw]) patch anomaly scores.
      agg: ``max``, ``mean`` or ``topK`` (the mean of the K largest; K is capped at the number
        of windows).
      valid: same shape as ``patch_scores``, bool: the windows that count (None = all); every
        image needs at least one.

    Returns:
      [T] float64.
    """
    kind, k = parse_agg(agg)
    s = np.asarray(patch_scores, np.float64).reshape(len(patch_scores), -1)
    if valid is None:
        v = np.ones(s.shape, bool)
    else:
        v = np.asarray(valid, bool).reshape(s.shape)
    if kind == "mean":
        return np.where(v, s, 0.0).sum(axis=1) / np.maximum(v.sum(axis=1), 1)
    masked = np.where(v, s, -np.inf)
    if kind == "max":
        return masked.max(axis=1)
    k = np.minimum(k, v.sum(axis=1))
    top = -np.sort(-masked, axis=1)
    keep = np.arange(s.shape[1])[None] < k[:, None]
    return np.where(keep, top, 0.0).sum(axis=1) / np.maximum(k, 1)


def patch_scorers(classifiers: tuple[str, ...]) -> tuple[str, ...]:
    """The requested classifiers usable on patches, canonical and in order; the catalog's patch
    defaults if none.

    The scorers that serve the patch task (``tasks`` in their description) stay cheap with
    ~10^4 bank patches and ~10^5 test patches (linear in both)."""
    usable = catalog.scorers_for("patches")
    fallback = catalog.default_scorers("patches")
    chosen: list[str] = []
    for name in classifiers:
        key = scorers_lib.SCORERS.canonical(name)
        if key in usable and key not in chosen:
            chosen.append(key)
    skipped = sorted({scorers_lib.SCORERS.canonical(c) for c in classifiers} - set(chosen))
    if skipped:
        logger.info(
            "Patch evaluation skips %s (cost quadratic in the patch bank); it runs %s.",
            ", ".join(skipped),
            ", ".join(chosen or fallback),
        )
    return tuple(chosen) or fallback


def sample_bank(
    num_images: int, ys: np.ndarray, xs: np.ndarray, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``size`` distinct (image, y, x) grid windows, drawn uniformly without replacement.

    Returns:
      (index, y, x), each [K] int64 with K = min(size, num_images · gh · gw), sorted by image
      (so windows of one image are cut together).
    """
    per_image = len(ys) * len(xs)
    total = num_images * per_image
    rng = np.random.default_rng([int(seed) % (2**63), _STREAM_BANK])
    flat = np.sort(rng.choice(total, size=min(int(size), total), replace=False))
    index, rest = np.divmod(flat, per_image)
    iy, ix = np.divmod(rest, len(xs))
    return index.astype(np.int64), ys[iy], xs[ix]


def coreset(features: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Greedy k-centre subsample (PatchCore's coreset): ``count`` row indices, sorted.

    Starting from a seeded random row, repeatedly adds the row farthest (Euclidean, after a
    seeded Gaussian projection to 128 dimensions as in PatchCore) from the rows chosen so far,
    so that the kept bank covers the feature space with the smallest maximal gap.
    """
    x = np.asarray(features, np.float32)
    n = len(x)
    count = int(min(max(count, 1), n))
    if count >= n:
        return np.arange(n)
    rng = np.random.default_rng([int(seed) % (2**63), _STREAM_CORESET])
    if x.shape[1] > _CORESET_DIM:
        proj = rng.normal(size=(x.shape[1], _CORESET_DIM)).astype(np.float32)
        x = x @ (proj / np.sqrt(_CORESET_DIM))
    chosen = np.empty(count, np.int64)
    chosen[0] = rng.integers(n)
    dist = np.sum((x - x[chosen[0]]) ** 2, axis=1)
    for i in range(1, count):
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, np.sum((x - x[chosen[i]]) ** 2, axis=1))
    return np.sort(chosen)


def valid_windows(
    sizes: np.ndarray | None, n: int, ys: np.ndarray, xs: np.ndarray, size: int
) -> np.ndarray | None:
    """[n, gh, gw] bool: windows whose centre lies in the content (None: all windows count).

    An image whose content is smaller than one stride keeps the windows that overlap it.
    """
    if sizes is None:
        return None
    h = np.asarray(sizes, np.int64)[:, 0, None, None]
    w = np.asarray(sizes, np.int64)[:, 1, None, None]
    cy = (ys + size / 2.0)[None, :, None]
    cx = (xs + size / 2.0)[None, None, :]
    valid = (cy <= h) & (cx <= w)
    overlap = (ys[None, :, None] < h) & (xs[None, None, :] < w)
    empty = ~valid.reshape(n, -1).any(axis=1)
    valid[empty] = overlap[empty]
    return valid


def valid_pixels(sizes: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """[n, H, W] bool: the content pixels of each canvas (None when there is no padding)."""
    if sizes is None:
        return None
    sizes = np.asarray(sizes, np.int64)
    rows = np.arange(shape[0])[None, :, None] < sizes[:, 0, None, None]
    cols = np.arange(shape[1])[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


class Embedder:
    """Runs a model on uint8 windows in fixed-size batches; one trace for any batch size."""

    def __init__(self, model, size: int, channels: int, batch: int, features=("pool", "embed")):
        self.batch = int(batch)
        self.features = tuple(features)
        outputs = {"pool": "pools", "embed": "embeds"}

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, channels], tf.uint8)])
        def forward(x):
            out = model(tf.cast(x, tf.float32) / 255.0, training=False)
            return tuple(out[outputs[f]] for f in self.features)

        self._forward = forward

    def __call__(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        parts: list[list[np.ndarray]] = [[] for _ in self.features]
        for start in range(0, len(windows), self.batch):
            for k, out in enumerate(self._forward(windows[start : start + self.batch])):
                parts[k].append(out.numpy())
        return {f: np.concatenate(p) for f, p in zip(self.features, parts)}


class DenseScorer:
    """An embedder plus the scorers fit once on a bank of training windows.

    Args:
      embed: ``fn(windows [K, P, P, C] uint8) -> {feature: [K, D] float}``.
      classifiers: canonical patch scorers (``PATCH_SCORERS``).
      size, stride: window side P and grid stride S.
    """

    def __init__(self, embed, classifiers: tuple[str, ...], size: int, stride: int):
        self.embed = embed
        self.classifiers = tuple(classifiers)
        self.size, self.stride = int(size), int(stride)
        self.cset: classifiers_lib.ClassifierSet | None = None
        self.fitted: dict[tuple[str, str], object] = {}
        self.bank_size = 0

    def fit(self, images: np.ndarray, bank: int, seed: int, coreset_ratio: float = 1.0):
        """Fits every scorer once on ``bank`` seeded grid windows of ``images`` (uint8)."""
        return self.fit_features(self.bank_features(images, bank, seed, coreset_ratio), seed)

    def bank_features(
        self,
        images: np.ndarray,
        bank: int,
        seed: int,
        coreset_ratio: float = 1.0,
        desc: str = "bank windows",
    ) -> dict[str, np.ndarray]:
        """{feature: [K, D]} of ``bank`` seeded grid windows of ``images`` (after the coreset)."""
        _, height, width, _ = images.shape
        ys, xs = patches_lib.grid_positions(height, width, self.size, self.stride)
        bi, by, bx = sample_bank(len(images), ys, xs, bank, seed)
        parts: dict[str, list[np.ndarray]] = {}
        starts = range(0, len(bi), CHUNK_PATCHES)
        sizes = [min(CHUNK_PATCHES, len(bi) - s) for s in starts]
        for start in progress.track(starts, len(bi), desc, "windows", sizes, logger):
            sl = slice(start, start + CHUNK_PATCHES)
            windows = patches_lib.gather_patches(images, bi[sl], by[sl], bx[sl], self.size)
            for f, v in self.embed(windows).items():
                parts.setdefault(f, []).append(v)
        feats = {f: np.concatenate(v) for f, v in parts.items()}
        if coreset_ratio < 1.0:
            first = next(iter(feats.values()))
            keep = coreset(first, round(coreset_ratio * len(first)), seed)
            feats = {f: v[keep] for f, v in feats.items()}
        return feats

    def fit_features(self, feats: dict[str, np.ndarray], seed: int):
        """Fits every scorer once on the bank's features (``bank_features``)."""
        self.bank_size = len(next(iter(feats.values())))
        cset = classifiers_lib.fit(
            feats,
            self.classifiers,
            classifiers_lib.split_rows(self.bank_size, seed, 0.0),
            on_error="raise",
        )
        return self.use(cset)

    def use(self, cset: classifiers_lib.ClassifierSet):
        """Scores with already fitted scorers (``fit``'s, or a run's saved ``classifiers.npz``
        for serving: nothing is refit)."""
        self.cset = cset
        self.fitted = {}
        for key, scorer in cset.scorers.items():
            f, c = key.split(".", 1)
            self.fitted[f, c] = _SimilarityScorer(c, scorer) if c in ("kde", "auc") else scorer
        self._shared = _share_similarities(self.fitted)
        return self

    def score(
        self, images: np.ndarray, desc: str = "test windows", same_as: np.ndarray | None = None
    ) -> tuple[dict, np.ndarray, np.ndarray]:
        """({(feature, scorer): [T, gh, gw] float32}, ys, xs): every grid window of ``images``.

        ``same_as[t] = r`` (r >= 0, an image embedded in full) says that image t is image r
        changed in a region (a synthetic anomaly of a held-out normal): only t's windows that
        overlap a changed pixel are embedded; the others are r's windows, pixel for pixel, and
        take r's scores. -1 (or None for all): every window is embedded.
        """
        n, height, width, _ = images.shape
        ys, xs = patches_lib.grid_positions(height, width, self.size, self.stride)
        out = {key: np.empty((n, len(ys), len(xs)), np.float32) for key in self.fitted}
        todo = np.ones((n, len(ys), len(xs)), bool)
        derived = []
        for t, r in enumerate(np.full(n, -1) if same_as is None else same_as):
            if 0 <= r < n and r != t and same_as[r] < 0:
                todo[t] = changed_windows(images[t], images[r], ys, xs, self.size)
                derived.append((t, int(r)))
        ti, iy, ix = np.nonzero(todo)  # image-major, then rows, then columns
        starts = range(0, len(ti), CHUNK_PATCHES)
        sizes = [min(CHUNK_PATCHES, len(ti) - s) for s in starts]
        for start in progress.track(starts, len(ti), desc, "windows", sizes, logger):
            sl = slice(start, start + CHUNK_PATCHES)
            windows = patches_lib.gather_patches(images, ti[sl], ys[iy[sl]], xs[ix[sl]], self.size)
            for key, values in self._score_windows(windows).items():
                out[key][ti[sl], iy[sl], ix[sl]] = values
        for t, r in derived:
            same = ~todo[t]
            for values in out.values():
                values[t][same] = values[r][same]
        return out, ys, xs

    def _score_windows(self, windows: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
        feats = self.embed(windows)
        scores = {}
        for f, both in getattr(self, "_shared", {}).items():
            scores.update({(f, c): v for c, v in both.score(feats[f]).items()})
        for (f, c), scorer in self.fitted.items():
            if (f, c) not in scores:
                scores[f, c] = scorer.score(feats[f])
        return scores


def changed_windows(
    image: np.ndarray, source: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int
) -> np.ndarray:
    """[gh, gw] bool: grid windows in which ``image`` differs from ``source`` (same shape)."""
    diff = np.any(image != source, axis=-1)
    sat = np.zeros((diff.shape[0] + 1, diff.shape[1] + 1), np.int64)  # summed-area table
    sat[1:, 1:] = diff.cumsum(0).cumsum(1)
    y0, x0 = ys[:, None], xs[None, :]
    y1, x1 = y0 + size, x0 + size
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) > 0


def detection(
    scores: dict,
    ys: np.ndarray,
    xs: np.ndarray,
    labels: np.ndarray,
    cfg,
    *,
    masks: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
    shape: tuple[int, int] = (0, 0),
    prefix: str = "",
    keep_maps: tuple[str, str] | None = None,
    full: bool = False,
    classes: tuple[np.ndarray, Sequence[str]] | None = None,
    desc: str | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray | None]:
    """Image AUROC (and, with defect masks, pixel AUROC and PRO) of every (feature, scorer).

    Args:
      scores: ``DenseScorer.score`` output for T images.
      labels: [T] 1 = anomalous.
      cfg: uses ``patch_size``, ``patch_agg`` and ``smooth_sigma``.
      masks: [T, H, W] 0/1 ground truth, or None for image-level metrics only.
      sizes: [T, 2] content sizes of padded canvases (None: the whole canvas counts).
      shape: (H, W) of the canvas (for the maps).
      prefix: prepended to every metric key (``baseline_pixels.`` ...).
      keep_maps: the (feature, scorer) whose maps are returned.
      full: also image and pixel AUPR and F1-max (``image_aupr``, ``image_f1_max``,
        ``pixel_aupr``, ``pixel_f1_max``), the numbers MVTec AD tables compare.
      classes: (``[T]`` class ids, their names; id 0 = normal) for the image AUROC of each
        defect type against the normal images, key ``<feature>.<scorer>.image_auroc.<type>``.
      desc: shows progress over the scorers under this name (None: silent).

    Returns:
      (metrics x100, {f"{feature}_{scorer}_image_score": [T]}, maps [T, H, W] of ``keep_maps``
      or None).
    """
    size = int(cfg.patch_size)
    valid = valid_windows(sizes, len(labels), ys, xs, size)
    pixels = valid_pixels(sizes, shape)
    has_defects = masks is not None and bool(np.asarray(masks).any())
    metrics: dict[str, float] = {}
    image_scores: dict[str, np.ndarray] = {}
    kept = None
    items = list(scores.items())
    if desc is not None:
        items = progress.track(items, len(items), desc, "scorers", logger=logger)
    for (f, c), patch_scores in items:
        s = aggregate(patch_scores, cfg.patch_agg, valid)
        image_scores[run_folder.image_score_key(f"{f}.{c}")] = s
        key = prefix + metric_key(f, c)
        metrics[key] = metrics_lib.auroc(labels, s)
        metrics[prefix + metric_key(f, c, "image_auroc")] = metrics[key]
        if full:
            metrics[prefix + metric_key(f, c, "image_aupr")] = metrics_lib.aupr(labels, s)
            metrics[prefix + metric_key(f, c, "image_f1_max")] = metrics_lib.f1_max(labels, s)
        if classes is not None:
            per_type = metrics_lib.per_type_auroc(classes[0], classes[1], s)
            for name, value in per_type.items():
                metrics[f"{prefix}{metric_key(f, c, 'image_auroc')}.{name}"] = value
        if has_defects or (f, c) == keep_maps:
            maps = patches_lib.anomaly_maps(patch_scores, ys, xs, size, shape, cfg.smooth_sigma)
            if has_defects:
                loc = loc_metrics.localization_metrics(masks, maps, max_fpr=0.3, valid=pixels)
                metrics[prefix + metric_key(f, c, "pixel_auroc")] = loc["pixel_auroc"]
                metrics[prefix + metric_key(f, c, "pro")] = loc["pro"]
                if full:
                    for kind in _PR_KINDS:
                        metrics[prefix + metric_key(f, c, kind)] = loc[kind]
            if (f, c) == keep_maps:
                kept = maps
    return metrics, image_scores, kept
