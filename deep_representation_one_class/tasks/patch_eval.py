"""Dense evaluation of patch-level runs: patch scores, image-level detection, localisation maps.

Training views are random ``--patch_size`` windows of the resized images
(``patch_grid.patch_view_fn``); the network sees P x P patches. The evaluation protocol
(spec §9.3/§13.2; the paper's MVTec code was not released, so the details marked ASSUMPTION
follow the Patch-SVDD-style protocol the spec recalls):

1. Patch bank: ``patch_bank`` windows (P x P, the training patch size) drawn without replacement,
   with a seeded generator, from the dense grid (stride S) of the classifier-train images.
   ASSUMPTION: the bank size and the use of grid (not random) positions.
2. Each one-class scorer (``gde``, ``kde``, ``auc`` = 1-NN; the OC-SVMs are skipped, being
   quadratic in the bank size) is fit ONCE on the bank's ``pools`` and ``embeds`` features,
   optionally after a greedy coreset subsample of the bank (``--patch_coreset``, PatchCore).
3. Every test image is cut into the same dense grid; its patches are embedded in chunks of test
   images (peak memory bounded by ``_CHUNK_PATCHES`` windows) and scored.
4. Image score = aggregation of the image's patch scores (``patch_agg``: max, mean or topK, the
   mean of the K largest). ASSUMPTION: max (Patch-SVDD) as the default.
5. Anomaly map: each pixel averages the scores of all patches covering it (computed as
   ``Aᵧᵀ S Aₓ / counts`` with 0/1 coverage matrices, exact at full resolution), then a Gaussian
   filter of ``smooth_sigma`` pixels. ASSUMPTION: averaging and sigma = 4.
6. Metrics per feature and scorer: image AUROC, pixel AUROC and PRO (FPR <= 0.3), all x100;
   for the test set also image and pixel AUPR and F1-max and the image AUROC per defect type.

7. Padded canvases (``--resize_policy`` fit/same_scale): only windows whose centre lies in the
   image content count for the image score, and pixel metrics use the content pixels only.
8. Synthetic-anomaly validation (``patch_synthetic.py``): the held-out normal training images and
   corrupted copies of them are scored the same way: ``synthetic.<feature>.<scorer>`` (image
   AUROC over the headline kinds) and per kind ``synthetic.<feature>.<scorer>.<kind>``.
9. Baselines (``baselines.py``, ``--baselines``): raw pixels and the untrained network
   through the same protocol: ``baseline_pixels.<scorer>[.<kind>]``,
   ``baseline_random.pool.<scorer>[.<kind>]`` and their ``synthetic.`` scores; pretrained runs
   also the from-scratch recipe trained ``--scratch_steps`` steps (``scratch.py``):
   ``baseline_scratch.pool.<scorer>[.<kind>]``.

Metric keys: ``<feature>.<scorer>.image_auroc``, ``.pixel_auroc``, ``.pro`` (AU-PRO up to FPR 0.3,
normalised by 0.3), ``.image_aupr``, ``.image_f1_max``, ``.pixel_aupr``, ``.pixel_f1_max`` and
``.image_auroc.<defect type>`` (that type against the good images), plus the plain
``<feature>.<scorer>`` = the image AUROC again, the key the summary tables and the aggregation
read. PNG panels of every test image for the main scorer go to ``<run>/maps/``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from deep_representation_one_class.reports import maps as visualize
from deep_representation_one_class.tasks import baselines as baselines_lib
from deep_representation_one_class.tasks import patch_cache, patch_serving
from deep_representation_one_class.tasks import patch_grid as patches_lib
from deep_representation_one_class.tasks import patch_synthetic as synthetic_lib
from deep_representation_one_class.tasks import scratch as scratch_lib
from deep_representation_one_class.tasks.patch_dense import (
    CHUNK_PATCHES,
    METRIC_KINDS,
    DenseScorer,
    Embedder,
    PatchEvalError,
    _SimilarityScorer,
    aggregate,
    detection,
    metric_key,
    parse_agg,
    patch_scorers,
    sample_bank,
)
from deep_representation_one_class.utils import progress
from deep_representation_one_class.utils import run_folder as rf

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURES",
    "METRIC_KINDS",
    "PatchEvalError",
    "_SimilarityScorer",
    "aggregate",
    "evaluate_patches",
    "memory_estimate",
    "metric_key",
    "parse_agg",
    "patch_scorers",
    "sample_bank",
]

FEATURES = ("pool", "embed")
_MAX_TB_IMAGES = 6


def _synthetic_metrics(scorer: DenseScorer, synth, cfg, prefix: str, per_kind: bool):
    """``synthetic.<prefix><feature>.<scorer>`` AUROCs (headline kinds; per kind) of a scorer."""
    # Each corrupted copy differs from its normal in one region: only the windows over it are
    # embedded, the others share the normal's scores (about 4x fewer windows at stride 8).
    scores, ys, xs = scorer.score(
        synth.x, desc=f"synthetic-check windows{_label(prefix)}", same_as=synthetic_sources(synth)
    )
    shape = synth.x.shape[1:3]
    normal = synth.kind == "normal"
    subsets = {"": normal | np.isin(synth.kind, synthetic_lib.HEADLINE_KINDS)}
    if per_kind:
        subsets.update({f".{k}": normal | (synth.kind == k) for k in synthetic_lib.KINDS})
    out = {}
    for suffix, rows in subsets.items():
        if rows.sum() == normal.sum():
            continue
        m, _, _ = detection(
            {k: v[rows] for k, v in scores.items()},
            ys,
            xs,
            synth.y[rows],
            cfg,
            sizes=synth.sizes[rows],
            shape=shape,
        )
        for k, v in m.items():
            if not k.endswith(".image_auroc"):
                out[f"synthetic.{prefix}{k}{suffix}"] = v
    return out


def _label(prefix: str) -> str:
    """`` (raw pixels)`` etc. for progress lines of the baselines; "" for the run's own."""
    return {
        "baseline_": " (raw pixels)",
        "baseline_random.": " (untrained network)",
        f"{scratch_lib.NAME}.": " (from scratch)",
    }.get(prefix, "")


def _baseline(name: str, model_shape, data, cfg, clfs, synth, model=None) -> dict[str, float]:
    """Metrics of one baseline (``pixels``: raw pixels, ``random``: the untrained network,
    ``scratch``: ``model``, the from-scratch recipe), through the run's protocol at a bounded
    cost (smaller bank, stride >= half a patch)."""
    size = int(cfg.patch_size)
    stride = baselines_lib.baseline_stride(size, cfg.patch_stride)
    bank = min(int(cfg.patch_bank), baselines_lib.BASELINE_BANK)
    channels = data.test_x.shape[-1]
    if name == "pixels":
        # The pixel embedder's one feature is named "pixels": keys baseline_pixels.<scorer>.
        prefix, embed = "baseline_", baselines_lib.pixel_embedder(size)
    elif name == "scratch":
        prefix = f"{scratch_lib.NAME}."
        embed = Embedder(model, size, channels, cfg.eval_batch_size, ("pool",))
    else:
        untrained = baselines_lib.random_model(cfg, model_shape)
        prefix = "baseline_random."
        embed = Embedder(untrained, size, channels, cfg.eval_batch_size, ("pool",))
    label = _label(prefix)
    scorer = DenseScorer(embed, clfs, size, stride)
    scorer.fit_features(
        scorer.bank_features(data.cls_x, bank, cfg.seed, desc=f"bank windows{label}"), cfg.seed
    )
    scores, ys, xs = scorer.score(data.test_x, desc=f"test windows{label}")
    metrics, _, _ = detection(
        scores,
        ys,
        xs,
        data.test_y,
        cfg,
        masks=data.test_masks,
        sizes=data.test_sizes,
        shape=data.test_x.shape[1:3],
        prefix=prefix,
        desc=f"maps and metrics{label}",
    )
    if synth is not None:
        metrics.update(_synthetic_metrics(scorer, synth, cfg, prefix, per_kind=False))
    return metrics


def _scratch_baseline(data, cfg, clfs, synth, cache, trainer) -> dict[str, Any]:
    """``{"metrics", "record"}`` of the from-scratch baseline: the recipe trained on the run's
    training images (resuming from its checkpoints in the phase cache), then ``_baseline``."""
    done = cache.load_metrics(scratch_lib.NAME)
    if done is None:
        t0, cpu0 = time.time(), time.process_time()
        trained = trainer(cfg, data.train_x, scratch_lib.work_dir(cache))
        metrics = _baseline("scratch", None, data, cfg, clfs, synth, trained.model)
        done = {"metrics": metrics, "record": scratch_lib.finish_record(trained.record, t0, cpu0)}
        cache.save_metrics(scratch_lib.NAME, done)
    return done


def synthetic_sources(synth) -> np.ndarray:
    """[M] index of the held-out normal each synthetic image was made from (-1: a normal).

    Found by content (the normal with the fewest differing pixels), so it holds whatever the
    order of the set; a copy that differs from every normal in most pixels counts as its own.
    """
    normals = np.flatnonzero(synth.kind == "normal")
    out = np.full(len(synth.x), -1, np.int64)
    for t in np.flatnonzero(synth.kind != "normal"):
        diff = [np.count_nonzero(np.any(synth.x[t] != synth.x[i], axis=-1)) for i in normals]
        best = int(np.argmin(diff))
        if diff[best] < 0.5 * synth.x.shape[1] * synth.x.shape[2]:
            out[t] = normals[best]
    return out


def synthetic_set(data, seed: int):
    """The synthetic-anomaly set of the run's held-out normals, or None without a hold-out."""
    if data.holdout_x is None or len(data.holdout_x) < 2:
        return None
    return synthetic_lib.synthesize(data.holdout_x, data.holdout_sizes, seed)


def evaluate_patches(
    model,
    data,
    cfg,
    run_dir: str | None,
    writer=None,
    step: int | None = None,
    model_shape: tuple[int, int, int] | None = None,
    records: dict[str, Any] | None = None,
    scratch_trainer: scratch_lib.ScratchTrainer | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, float]]:
    """Scores every test image densely and measures detection and localisation.

    Args:
      model: maps [B, P, P, C] float32 in [0, 1] to {"pools", "embeds", ...}.
      data: a patch-task ``OneClassData`` (uint8 images; ``test_masks`` the ground truth, or
        None: image-level metrics only; ``test_sizes`` the content of padded canvases;
        ``holdout_x`` the normals of the synthetic check, or None).
      cfg: uses patch_size, patch_stride, patch_bank, patch_coreset, patch_agg, smooth_sigma,
        baselines, classifiers, eval_batch_size, seed and the model settings (baselines).
      run_dir: PNG panels go to ``<run_dir>/maps/``, the fitted bank classifiers to
        ``classifiers.npz`` and the serving thresholds to ``thresholds.json`` (None: nothing
        is written).
      writer: a ``tf.summary`` writer for a few panels (None: no TensorBoard images).
      step: the TensorBoard step of those images (default: the writer's current step or 0).
      model_shape: the model input (P, P, C) of the untrained baseline (None: no baselines).
      records: receives the from-scratch baseline's ``summary.json`` record
        (``baseline_scratch``: recipe, steps, seconds) when it ran.
      scratch_trainer: trains the from-scratch recipe (``training.scratch.train``; None: no
        from-scratch baseline).

    Returns:
      (metrics, arrays, timings): metrics as in the module docstring (percent); arrays for
      ``embeddings.npz`` (image and patch scores per feature/scorer, the main scorer's maps as
      float16, the masks, labels and grid); timings in seconds plus patch throughput.
    """
    t_start = time.time()
    size, stride = int(cfg.patch_size), int(cfg.patch_stride)
    n_test, height, width, channels = data.test_x.shape
    parse_agg(cfg.patch_agg)  # fail before the expensive part
    clfs = patch_scorers(tuple(cfg.classifiers))
    timings: dict[str, float] = {}
    logger.info(
        "Patch evaluation sizes: %s.",
        ", ".join(f"{k} {v:.0f}" for k, v in memory_estimate(cfg, len(data.cls_x), n_test).items()),
    )
    # Finished phases of an interrupted evaluation of the same weights and settings are reused.
    cache = patch_cache.PhaseCache(run_dir, patch_cache.fingerprint(model, cfg, data))

    # 1-2. The bank and the scorers, fit once (no hold-out: patch runs have no thresholds).
    main = DenseScorer(Embedder(model, size, channels, cfg.eval_batch_size), clfs, size, stride)
    with progress.phase("Patch bank: embedding and fitting", timings, "bank_and_fit", logger):
        feats = cache.load_arrays("bank")
        if feats is None:
            feats = main.bank_features(
                data.cls_x, cfg.patch_bank, cfg.seed, float(cfg.patch_coreset)
            )
            cache.save_arrays("bank", feats)
        main.fit_features(feats, cfg.seed)
        if run_dir is not None:
            main.cset.save(run_dir)
    logger.info(
        "Patch bank: %d windows of %dx%d from %d images (stride %d%s); scorers %s.",
        main.bank_size,
        size,
        size,
        len(data.cls_x),
        stride,
        f", coreset {cfg.patch_coreset:g}" if cfg.patch_coreset < 1 else "",
        ", ".join(clfs),
    )

    # 3. Dense test scores.
    with progress.phase("Test windows: embedding and scoring", timings, "score_test", logger):
        cached = cache.load_arrays("test_scores")
        if cached is None:
            scores, ys, xs = main.score(data.test_x, desc="test windows")
            cache.save_arrays(
                "test_scores",
                {rf.GRID_Y: ys, rf.GRID_X: xs, **{f"{f}.{c}": v for (f, c), v in scores.items()}},
            )
        else:
            ys, xs = cached[rf.GRID_Y], cached[rf.GRID_X]
            scores = {key: cached[".".join(key)] for key in main.fitted}
    grid = len(ys) * len(xs)
    timings["patches_per_sec"] = (main.bank_size + n_test * grid) / max(
        timings["score_test"] + timings["bank_and_fit"], 1e-9
    )

    # 4-6. Aggregation, maps and metrics.
    masks = data.test_masks
    if masks is None or not masks.any():
        logger.warning("No defect masks: pixel AUROC and PRO are skipped (image AUROC only).")
    # The maps, panels and the summary's headline come from the first listed classifier.
    primary = ("pool", clfs[0]) if ("pool", clfs[0]) in main.fitted else next(iter(main.fitted))
    with progress.phase("Maps and metrics", timings, "metrics", logger):
        metrics, image_scores, primary_maps = detection(
            scores,
            ys,
            xs,
            data.test_y,
            cfg,
            masks=masks,
            sizes=data.test_sizes,
            shape=(height, width),
            keep_maps=primary,
            full=True,
            classes=(data.test_class, data.class_names),
            desc="maps and metrics",
        )
    arrays: dict[str, np.ndarray] = {
        rf.TEST_LABELS: data.test_y,
        rf.TEST_CLASS: data.test_class,
        rf.TEST_MASKS: masks if masks is not None else np.zeros((n_test, height, width), np.uint8),
        rf.GRID_Y: ys,
        rf.GRID_X: xs,
        **image_scores,
        **{rf.patch_scores_key(f"{f}.{c}"): s for (f, c), s in scores.items()},
    }
    if data.test_sizes is not None:
        arrays[rf.TEST_SIZES] = data.test_sizes
    if primary_maps is not None:
        arrays[rf.anomaly_map_key(".".join(primary))] = primary_maps.astype(np.float16)

    # 8. Synthetic anomalies on held-out normals.
    synth = synthetic_set(data, cfg.seed)
    with progress.phase("Synthetic-anomaly check", timings, "synthetic", logger):
        if synth is None:
            logger.warning(
                "No held-out normal images (--synthetic_holdout=0 or too few training images): "
                "no synthetic-anomaly validation score."
            )
        else:
            done = cache.load_metrics("synthetic")
            if done is None:
                done = _synthetic_metrics(main, synth, cfg, "", per_kind=True)
                cache.save_metrics("synthetic", done)
            metrics.update(done)
    if run_dir is not None:
        # Image and pixel thresholds of the held-out normals, for serving (patch_serving.py).
        patch_serving.write_thresholds(run_dir, main, data, cfg, image_scores)

    # 9. Baselines.
    if cfg.baselines and model_shape is not None:
        for name in ("pixels", "random"):
            label = {"pixels": "raw pixels", "random": "untrained network"}[name]
            with progress.phase(f"Baseline: {label}", timings, f"baseline_{name}", logger):
                done = cache.load_metrics(f"baseline_{name}")
                if done is None:
                    done = _baseline(name, model_shape, data, cfg, clfs, synth)
                    cache.save_metrics(f"baseline_{name}", done)
                metrics.update(done)
        if scratch_trainer is not None and scratch_lib.applies(cfg):
            with progress.phase("Baseline: from scratch", timings, scratch_lib.NAME, logger):
                done = _scratch_baseline(data, cfg, clfs, synth, cache, scratch_trainer)
            metrics.update(done["metrics"])
            if records is not None:
                records[scratch_lib.NAME] = done["record"]

    # Panels of the main scorer.
    f, c = primary
    with progress.phase("Map panels", timings, "panels", logger):
        if primary_maps is not None and run_dir is not None:
            visualize.write_panels(
                data,
                arrays[rf.TEST_MASKS],
                primary_maps,
                arrays[rf.image_score_key(f"{f}.{c}")],
                f"{f}.{c} {cfg.patch_agg}",
                run_dir,
                writer,
                step,
                tag=f"mvtec/anomaly_maps_{f}_{c}",
                max_tb_images=_MAX_TB_IMAGES,
            )
    timings["total"] = time.time() - t_start
    timings["reused_phases"] = float(len(cache.reused))
    cache.clear()  # everything is in the returned values now
    logger.info(
        "Patch evaluation: %s.",
        ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())),
    )
    return metrics, arrays, timings


def memory_estimate(cfg: Any, num_train: int, num_test: int) -> dict[str, float]:
    """Rough sizes of the evaluation's big arrays (``*_mb`` in MB; the others are counts).

    The dominant terms: the uint8 window chunk (fixed by ``CHUNK_PATCHES``), the KDE/1-NN
    similarity block (512 rows x bank, float32, twice), the per-scorer patch scores and
    pixel maps (linear in test images x H x W), and the single sort behind pixel AUROC and PRO
    (about 48 bytes per test pixel: indices, scores, cumulative counts and region weights).
    """
    h, w, c = (int(v) for v in cfg.input_shape)
    size = int(cfg.patch_size)
    ys, xs = patches_lib.grid_positions(h, w, size, int(cfg.patch_stride))
    grid = len(ys) * len(xs)
    chunk = max(1, CHUNK_PATCHES // grid) * grid
    bank = min(int(cfg.patch_bank), num_train * grid)
    mb = 1.0 / 2**20
    return {
        "grid_windows_per_image": float(grid),
        "bank_windows": float(bank),
        "window_chunk_mb": chunk * size * size * c * mb,
        "similarity_block_mb": 2 * 512 * bank * 4 * mb,
        "patch_scores_mb": num_test * grid * 4 * mb,
        "maps_per_scorer_mb": num_test * h * w * 4 * mb,
        "pixel_sort_mb": num_test * h * w * 48 * mb,
    }
