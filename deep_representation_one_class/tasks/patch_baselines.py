"""Honest baselines of every defect run: raw pixels and the untrained network, same scorers.

A learnt representation is only worth its training if it beats features that need none. Every
patch-level run therefore also scores its test set (and its synthetic-anomaly set) with

* ``baseline_pixels``: each window block-averaged to 8 x 8 pixels (``PIXEL_SIDE``), centred
  (minus 0.5) and flattened (192 values for RGB), and
* ``baseline_random``: the run's own backbone and head with the same seed but no training
  (its ``pool`` features),

through the same dense grid, bank sampling, scorers, aggregation and metrics. Their cost is
bounded: a bank of at most ``BASELINE_BANK`` windows and a grid stride of at least half a
patch (``baseline_stride``). Metric keys: ``baseline_pixels.<scorer>[.<kind>]`` and
``baseline_random.pool.<scorer>[.<kind>]``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deep_representation_one_class.models import build_model

__all__ = ["BASELINE_BANK", "PIXEL_SIDE", "baseline_stride", "pixel_embedder", "random_model"]

BASELINE_BANK = 4000
PIXEL_SIDE = 8


def baseline_stride(patch_size: int, stride: int) -> int:
    """The baselines' grid stride: the run's, but at least half a patch."""
    return max(int(stride), int(patch_size) // 2)


def pixel_embedder(size: int):
    """``fn(windows [K, P, P, C] uint8) -> {"pixels": [K, 8·8·C] float32}`` (area downsampling)."""
    side = min(PIXEL_SIDE, int(size))

    def embed(windows: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(windows, np.float32) / 255.0
        if size % side == 0:
            k = size // side
            x = x.reshape(len(x), side, k, side, k, x.shape[-1]).mean(axis=(2, 4))
        else:
            x = tf.image.resize(x, (side, side), method="area").numpy()
        return {"pixels": (x - 0.5).reshape(len(x), -1)}

    return embed


def random_model(cfg, input_shape) -> keras.Model:
    """The run's backbone + head, freshly initialised with the run's seed (never trained)."""
    keras.utils.set_random_seed(int(cfg.seed))
    return build_model(
        cfg.net_type,
        cfg.net_width,
        input_shape,
        cfg.head_dims,
        cfg.latent_dim,
        float32_stages=cfg.float32_stages,
    )
