"""Dense evaluation of patch-level runs: patch scores, image-level detection, localisation maps.

Training views are random ``--patch_size`` windows of the resized images
(``patch_grid.patch_view_fn``); the network sees P x P patches. The evaluation protocol
(spec §9.3/§13.2; the paper's MVTec code was not released, so the details marked ASSUMPTION
follow the Patch-SVDD-style protocol the spec recalls):

1. Patch bank: ``patch_bank`` windows (P x P, the training patch size) drawn without replacement,
   with a seeded generator, from the dense grid (stride S) of the classifier-train images.
   ASSUMPTION: the bank size and the use of grid (not random) positions.
2. Each one-class scorer (``gde``, ``kde``, ``auc`` = 1-NN; the OC-SVMs are skipped, being
   quadratic in the bank size) is fit ONCE on the bank's ``pools`` and ``embeds`` features.
3. Every test image is cut into the same dense grid; its patches are embedded in chunks of test
   images (peak memory bounded by ``_CHUNK_PATCHES`` windows) and scored.
4. Image score = aggregation of the image's patch scores (``patch_agg``: max, mean or topK, the
   mean of the K largest). ASSUMPTION: max (Patch-SVDD) as the default.
5. Anomaly map: each pixel averages the scores of all patches covering it (computed as
   ``Aᵧᵀ S Aₓ / counts`` with 0/1 coverage matrices, exact at full resolution), then a Gaussian
   filter of ``smooth_sigma`` pixels. ASSUMPTION: averaging and sigma = 4.
6. Metrics per feature and scorer: image AUROC, pixel AUROC and PRO (FPR <= 0.3), all x100.

Metric keys: ``<feature>.<scorer>.image_auroc``, ``.pixel_auroc`` and ``.pro``, plus the plain
``<feature>.<scorer>`` = the image AUROC again, the key the summary tables and the aggregation
read. PNG panels of every test image for the main scorer go to ``<run>/maps/``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np
import tensorflow as tf

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import localization as loc_metrics
from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.reports import maps as visualize
from deep_representation_one_class.tasks import patch_grid as patches_lib

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURES",
    "METRIC_KINDS",
    "PATCH_SCORERS",
    "PatchEvalError",
    "aggregate",
    "evaluate_patches",
    "memory_estimate",
    "metric_key",
    "parse_agg",
    "patch_scorers",
    "sample_bank",
]

FEATURES = ("pool", "embed")
# Scorers that stay cheap with ~10^4 bank patches and ~10^5 test patches (linear in both).
PATCH_SCORERS = ("gde", "kde", "auc")
# Windows per chunk of test images: 8192 uint8 32x32x3 windows are 25 MB, their float32 batch
# and features a few MB more.
_CHUNK_PATCHES = 8192
# Test rows per similarity block of KDE/1-NN: [rows, bank] float32, 40 MB for a 20k bank.
_SCORER_ROWS = 512
_STREAM_BANK = 0xBA4C
_MAX_TB_IMAGES = 6


class PatchEvalError(UserError, ValueError):
    """A patch-evaluation option is unusable; the message says which and what is valid."""


METRIC_KINDS = ("image_auroc", "pixel_auroc", "pro")


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


def aggregate(patch_scores: np.ndarray, agg: str) -> np.ndarray:
    """Image scores from per-patch scores.

    Args:
      patch_scores: [T, n] (or [T, gh, gw]) patch anomaly scores.
      agg: ``max``, ``mean`` or ``topK`` (the mean of the K largest; K is capped at n).

    Returns:
      [T] float64.
    """
    kind, k = parse_agg(agg)
    s = np.asarray(patch_scores, np.float64).reshape(len(patch_scores), -1)
    if kind == "max":
        return s.max(axis=1)
    if kind == "mean":
        return s.mean(axis=1)
    k = min(k, s.shape[1])
    return np.partition(s, s.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def patch_scorers(classifiers: tuple[str, ...]) -> tuple[str, ...]:
    """The requested classifiers usable on patches, canonical and in order; gde+kde if none."""
    chosen: list[str] = []
    for name in classifiers:
        key = scorers_lib.SCORERS.canonical(name)
        if key in PATCH_SCORERS and key not in chosen:
            chosen.append(key)
    skipped = sorted({scorers_lib.SCORERS.canonical(c) for c in classifiers} - set(chosen))
    if skipped:
        logger.info(
            "Patch evaluation skips %s (cost quadratic in the patch bank); it runs %s.",
            ", ".join(skipped),
            ", ".join(chosen) or "gde, kde",
        )
    return tuple(chosen) or ("gde", "kde")


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


class _SimilarityScorer:
    """KDE and 1-NN scores from a fitted registry scorer's ``state()``, in float32 TensorFlow.

    The registry's numpy versions compute the [test, bank] cosine block in float64, which for
    ~10^5 test windows against a 10^4-window bank is the slowest step of the evaluation; a
    float32 matmul and ``reduce_logsumexp`` (multi-threaded) give the same scores to about 1e-5
    relative error, ~10x faster. Formulas as in ``evaluation.scorers``: KDE
    ``-(1/γ)·logsumexp_j(2γ⟨z̄, z̄_j⟩)``, 1-NN ``1 - max_j ⟨z̄, z̄_j⟩``.
    """

    def __init__(self, kind: str, scorer: scorers_lib.Scorer):
        state = scorer.state()
        self.kind = kind
        self.bank = tf.constant(np.asarray(state["bank"], np.float32))
        self.gamma = float(state["gamma"]) if kind == "kde" else 0.0
        self._block = tf.function(self._block_fn, reduce_retracing=True)

    def _block_fn(self, x):
        sims = tf.matmul(
            tf.math.l2_normalize(x, axis=1, epsilon=1e-24), self.bank, transpose_b=True
        )
        if self.kind == "kde":
            return -tf.reduce_logsumexp((2.0 * self.gamma) * sims, axis=1) / self.gamma
        return 1.0 - tf.reduce_max(sims, axis=1)

    def score(self, feats: np.ndarray) -> np.ndarray:
        x = np.asarray(feats, np.float32)
        out = [self._block(x[i : i + _SCORER_ROWS]).numpy() for i in range(0, len(x), _SCORER_ROWS)]
        return np.concatenate(out).astype(np.float64)


class _Embedder:
    """Runs the model on uint8 windows in fixed-size batches; one trace for any batch size."""

    def __init__(self, model, size: int, channels: int, batch: int):
        self.batch = int(batch)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, channels], tf.uint8)])
        def forward(x):
            out = model(tf.cast(x, tf.float32) / 255.0, training=False)
            return out["pools"], out["embeds"]

        self._forward = forward

    def __call__(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        pools, embeds = [], []
        for start in range(0, len(windows), self.batch):
            p, e = self._forward(windows[start : start + self.batch])
            pools.append(p.numpy())
            embeds.append(e.numpy())
        return {"pool": np.concatenate(pools), "embed": np.concatenate(embeds)}


def evaluate_patches(
    model, data, cfg, run_dir: str | None, writer=None, step: int | None = None
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, float]]:
    """Scores every test image densely and measures detection and localisation.

    Args:
      model: maps [B, P, P, C] float32 in [0, 1] to {"pools", "embeds", ...}.
      data: a patch-task ``OneClassData`` (uint8 images; ``test_masks`` the ground truth, or
        None: image-level metrics only).
      cfg: uses patch_size, patch_stride, patch_bank, patch_agg, smooth_sigma, classifiers,
        eval_batch_size, seed, root and input_shape.
      run_dir: PNG panels go to ``<run_dir>/maps/`` and the fitted bank classifiers to
        ``classifiers.npz`` (None: nothing is written).
      writer: a ``tf.summary`` writer for a few panels (None: no TensorBoard images).
      step: the TensorBoard step of those images (default: the writer's current step or 0).

    Returns:
      (metrics, arrays, timings): metrics as in the module docstring (percent); arrays for
      ``embeddings.npz`` (image and patch scores per feature/scorer, the main scorer's maps as
      float16, the masks, labels and grid); timings in seconds plus patch throughput.
    """
    t_start = time.time()
    size, stride = int(cfg.patch_size), int(cfg.patch_stride)
    n_test, height, width, channels = data.test_x.shape
    parse_agg(cfg.patch_agg)  # fail before the expensive part
    ys, xs = patches_lib.grid_positions(height, width, size, stride)
    grid = len(ys) * len(xs)
    clfs = patch_scorers(tuple(cfg.classifiers))
    embedder = _Embedder(model, size, channels, cfg.eval_batch_size)
    timings: dict[str, float] = {}
    logger.info(
        "Patch evaluation sizes: %s.",
        ", ".join(f"{k} {v:.0f}" for k, v in memory_estimate(cfg, len(data.cls_x), n_test).items()),
    )

    # 1-2. The bank and the scorers, fit once.
    t0 = time.time()
    bi, by, bx = sample_bank(len(data.cls_x), ys, xs, cfg.patch_bank, cfg.seed)
    bank = {f: [] for f in FEATURES}
    for start in range(0, len(bi), _CHUNK_PATCHES):
        sl = slice(start, start + _CHUNK_PATCHES)
        feats = embedder(patches_lib.gather_patches(data.cls_x, bi[sl], by[sl], bx[sl], size))
        for f in FEATURES:
            bank[f].append(feats[f])
    bank = {f: np.concatenate(v) for f, v in bank.items()}
    timings["extract_bank"] = time.time() - t0
    t0 = time.time()
    # Every scorer is fit once, on the whole bank (no hold-out: patch runs have no thresholds).
    cset = classifiers_lib.fit(
        bank, clfs, classifiers_lib.split_rows(len(bi), cfg.seed, 0.0), on_error="raise"
    )
    if run_dir is not None:
        cset.save(run_dir)
    fitted = {}
    for key, scorer in cset.scorers.items():
        f, c = key.split(".", 1)
        fitted[f, c] = _SimilarityScorer(c, scorer) if c in ("kde", "auc") else scorer
    timings["fit"] = time.time() - t0
    logger.info(
        "Patch bank: %d windows of %dx%d from %d images (grid %dx%d, stride %d); scorers %s.",
        len(bi),
        size,
        size,
        len(data.cls_x),
        len(ys),
        len(xs),
        stride,
        ", ".join(clfs),
    )

    # 3. Dense test scores, chunk by chunk of images.
    per_chunk = max(1, _CHUNK_PATCHES // grid)
    scores = {key: np.empty((n_test, len(ys), len(xs)), np.float32) for key in fitted}
    gi = np.repeat(np.arange(per_chunk), grid)
    gy = np.tile(np.repeat(ys, len(xs)), per_chunk)
    gx = np.tile(np.tile(xs, len(ys)), per_chunk)
    t_extract = t_score = 0.0
    for start in range(0, n_test, per_chunk):
        stop = min(n_test, start + per_chunk)
        k = (stop - start) * grid
        t0 = time.time()
        feats = embedder(
            patches_lib.gather_patches(data.test_x[start:stop], gi[:k], gy[:k], gx[:k], size)
        )
        t_extract += time.time() - t0
        t0 = time.time()
        for (f, c), scorer in fitted.items():
            scores[f, c][start:stop] = scorer.score(feats[f]).reshape(-1, len(ys), len(xs))
        t_score += time.time() - t0
    timings["extract_test"] = t_extract
    timings["score"] = t_score
    timings["patches_per_sec_extract"] = (len(bi) + n_test * grid) / max(
        t_extract + timings["extract_bank"], 1e-9
    )

    # 4-6. Aggregation, maps and metrics.
    t0 = time.time()
    masks = data.test_masks
    if masks is None:
        masks = np.zeros((n_test, height, width), np.uint8)
    has_defects = bool(masks.any())
    if not has_defects:
        logger.warning("No defect masks: pixel AUROC and PRO are skipped (image AUROC only).")
    primary = ("pool", "gde") if ("pool", "gde") in fitted else next(iter(fitted))
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {
        "test_y": data.test_y,
        "test_class": data.test_class,
        "test_masks": masks,
        "grid_y": ys,
        "grid_x": xs,
    }
    primary_maps = None
    for (f, c), patch_scores in scores.items():
        image_scores = aggregate(patch_scores, cfg.patch_agg)
        metrics[metric_key(f, c)] = metrics_lib.auroc(data.test_y, image_scores)
        metrics[metric_key(f, c, "image_auroc")] = metrics[metric_key(f, c)]
        arrays[f"{f}_{c}_image_score"] = image_scores
        arrays[f"{f}_{c}_patch_scores"] = patch_scores
        if has_defects or (f, c) == primary:
            maps = patches_lib.anomaly_maps(
                patch_scores, ys, xs, size, (height, width), cfg.smooth_sigma
            )
            if has_defects:
                loc = loc_metrics.localization_metrics(masks, maps, max_fpr=0.3)
                metrics[metric_key(f, c, "pixel_auroc")] = loc["pixel_auroc"]
                metrics[metric_key(f, c, "pro")] = loc["pro"]
            if (f, c) == primary:
                primary_maps = maps
                arrays[f"{f}_{c}_anomaly_map"] = maps.astype(np.float16)
    timings["metrics"] = time.time() - t0

    # Panels of the main scorer.
    t0 = time.time()
    f, c = primary
    if primary_maps is not None and run_dir is not None:
        visualize.write_panels(
            data,
            masks,
            primary_maps,
            arrays[f"{f}_{c}_image_score"],
            f"{f}.{c} {cfg.patch_agg}",
            run_dir,
            writer,
            step,
            tag=f"mvtec/anomaly_maps_{f}_{c}",
            max_tb_images=_MAX_TB_IMAGES,
        )
    timings["panels"] = time.time() - t0
    timings["total"] = time.time() - t_start
    logger.info(
        "Patch evaluation: %s.",
        ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())),
    )
    return metrics, arrays, timings


def memory_estimate(cfg: Any, num_train: int, num_test: int) -> dict[str, float]:
    """Rough sizes of the evaluation's big arrays (``*_mb`` in MB; the others are counts).

    The dominant terms: the uint8 window chunk (fixed by ``_CHUNK_PATCHES``), the KDE/1-NN
    similarity block (``_SCORER_ROWS`` x bank, float32, twice), the per-scorer patch scores and
    pixel maps (linear in test images x H x W), and the single sort behind pixel AUROC and PRO
    (about 48 bytes per test pixel: indices, scores, cumulative counts and region weights).
    """
    h, w, c = (int(v) for v in cfg.input_shape)
    size = int(cfg.patch_size)
    ys, xs = patches_lib.grid_positions(h, w, size, int(cfg.patch_stride))
    grid = len(ys) * len(xs)
    chunk = max(1, _CHUNK_PATCHES // grid) * grid
    bank = min(int(cfg.patch_bank), num_train * grid)
    mb = 1.0 / 2**20
    return {
        "grid_windows_per_image": float(grid),
        "bank_windows": float(bank),
        "window_chunk_mb": chunk * size * size * c * mb,
        "similarity_block_mb": 2 * _SCORER_ROWS * bank * 4 * mb,
        "patch_scores_mb": num_test * grid * 4 * mb,
        "maps_per_scorer_mb": num_test * h * w * 4 * mb,
        "pixel_sort_mb": num_test * h * w * 48 * mb,
    }
