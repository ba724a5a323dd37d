"""What serving a patch-level run needs beyond its fitted scorers: thresholds at both levels.

The scorers a patch run fits on its bank are saved by the evaluation (``classifiers.npz`` and
``classifiers.json``, arrays and JSON only, the image-level design); the patch geometry
(``patch_size``, ``patch_stride``, ``patch_agg``, ``smooth_sigma``) is in ``config.json`` and
the image preparation in ``preprocessing.json``. This module adds ``thresholds.json``: for
every (feature, scorer), quantiles of the image scores and of the map pixels of the normal
training images the run held out of training and of the bank (``--synthetic_holdout``, the
normals of the synthetic check). ``score`` flags an image when its score reaches the image
threshold and outlines the map pixels that reach the pixel threshold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.tasks import patch_grid as patches_lib
from deep_representation_one_class.tasks.patch_dense import (
    aggregate,
    valid_pixels,
    valid_windows,
)
from deep_representation_one_class.utils import run_folder

logger = logging.getLogger(__name__)

__all__ = ["LEVEL", "holdout_thresholds", "write_thresholds"]

LEVEL = "patches"
# Map pixels per held-out image kept for the pixel quantiles (a seeded subsample bounds memory
# for large canvases; 64 K pixels x 16 images estimate q99.5 to well under 1%).
_PIXELS_PER_IMAGE = 1 << 16


def holdout_thresholds(scorer, holdout_x, holdout_sizes, cfg, seed: int = 0) -> dict[str, Any]:
    """Image- and pixel-level quantiles of the held-out normals for every fitted scorer.

    Args:
      scorer: the run's fitted ``DenseScorer``.
      holdout_x: [n, H, W, C] uint8 held-out normal canvases (n >= 2).
      holdout_sizes: [n, 2] content sizes, or None (every canvas is content).
      cfg: uses ``patch_size``, ``patch_agg`` and ``smooth_sigma``.

    Returns:
      ``{"quantiles": {"pool.auc": {...}}, "pixel_quantiles": {...}, "num_holdout": n}``.
    """
    n, height, width = holdout_x.shape[:3]
    scores, ys, xs = scorer.score(holdout_x, desc="held-out normal windows")
    size = int(cfg.patch_size)
    valid = valid_windows(holdout_sizes, n, ys, xs, size)
    pixels = valid_pixels(holdout_sizes, (height, width))
    rng = np.random.default_rng([int(seed) % (2**63), 0x7E5])
    image_q, pixel_q = {}, {}
    for (f, c), patch_scores in scores.items():
        key = f"{f}.{c}"
        image_q[key] = thresholds_lib.score_quantiles(aggregate(patch_scores, cfg.patch_agg, valid))
        maps = patches_lib.anomaly_maps(
            patch_scores, ys, xs, size, (height, width), cfg.smooth_sigma
        )
        values = []
        for i in range(n):
            v = maps[i][pixels[i]] if pixels is not None else maps[i].reshape(-1)
            if v.size > _PIXELS_PER_IMAGE:
                v = rng.choice(v, _PIXELS_PER_IMAGE, replace=False)
            values.append(v)
        pixel_q[key] = thresholds_lib.score_quantiles(np.concatenate(values))
    return {"quantiles": image_q, "pixel_quantiles": pixel_q, "num_holdout": int(n)}


def write_thresholds(run_dir: str, scorer, data, cfg, image_scores=None) -> dict | None:
    """Writes ``<run>/thresholds.json`` of a patch run (None, and nothing written, without
    held-out normals: then only numeric or F1 thresholds can be served).

    Args:
      run_dir: the run folder.
      scorer: the fitted ``DenseScorer``.
      data: the task data (``holdout_x``/``holdout_sizes``, ``test_y``).
      cfg: the run's config.
      image_scores: ``{f"{feature}_{scorer}_image_score": [T]}`` of the test set, for the test
        report at q95 (None: no report).
    """
    if data.holdout_x is None or len(data.holdout_x) < 2:
        logger.warning(
            "No held-out normal images (--synthetic_holdout < 2): the run has no image or "
            "pixel thresholds; serve it with a numeric threshold or --threshold=f1."
        )
        return None
    table = holdout_thresholds(scorer, data.holdout_x, data.holdout_sizes, cfg, cfg.seed)
    result = {
        "version": thresholds_lib.VERSION,
        "level": LEVEL,
        "source": "holdout_normals",
        "note": (
            f"scores of {table['num_holdout']} normal training images held out of training and "
            "of the patch bank (--synthetic_holdout); image quantiles of the image scores, "
            "pixel quantiles of their anomaly-map pixels"
        ),
        "seed": int(cfg.seed),
        **table,
    }
    if image_scores is not None:
        scores = {
            key: v for k, v in image_scores.items() if (key := run_folder.parse_image_score_key(k))
        }
        result["test_report"] = thresholds_lib.report_at_threshold(result, data.test_y, scores)
    run_folder.write_json(run_dir, run_folder.THRESHOLDS, result)
    return result
