"""Honest baselines of every defect run: raw pixels and the untrained network, same scorers.

A learnt representation is only worth its training if it beats features that need none. Every
patch-level run (``--baselines``, on by default for ``mvtec`` and ``folder``) therefore also
scores its test set (and its synthetic-anomaly set) with

* ``baseline_pixels``: each window block-averaged to 8 x 8 pixels (``PIXEL_SIDE``), centred
  (minus 0.5) and flattened (192 values for RGB), and
* ``baseline_random``: the run's own backbone and head with the same seed but no training
  (its ``pool`` features),

through the same dense grid, bank sampling, scorers, aggregation and metrics. Their cost is
bounded: a bank of at most ``BASELINE_BANK`` windows and a grid stride of at least half a
patch (``baseline_stride``). Metric keys: ``baseline_pixels.<scorer>[.<kind>]`` and
``baseline_random.pool.<scorer>[.<kind>]``.

Image-level runs (``folder`` datasets) get the same two rows from whole images
(``image_baselines``): ``PIXEL_SIDE_IMAGE`` x ``PIXEL_SIDE_IMAGE`` area-downsampled pixels, and
the untrained network's ``pool`` features of the test view, fit with the run's classifiers on
the same rows.

Pretrained runs add a third row, the from-scratch recipe trained ``--scratch_steps`` steps and
scored the same way (``scratch.py``): ``baseline_scratch.pool.<scorer>[.<kind>]``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deep_representation_one_class.evaluation import features as features_lib
from deep_representation_one_class.models import build_model
from deep_representation_one_class.registry import Option
from deep_representation_one_class.utils import run_folder as rf

__all__ = [
    "BASELINES_OPTION",
    "BASELINE_BANK",
    "PIXEL_SIDE",
    "PIXEL_SIDE_IMAGE",
    "baseline_stride",
    "image_baselines",
    "pixel_embedder",
    "random_model",
]

# Declared once, shared by the image and patch tasks; the mvtec and folder datasets turn it on.
BASELINES_OPTION = Option(
    "baselines",
    False,
    "Also score raw pixels and the untrained network with the run's protocol (baseline_* "
    "metrics); on by default for the defect datasets (mvtec, folder).",
)
BASELINE_BANK = 4000
PIXEL_SIDE = 8
PIXEL_SIDE_IMAGE = 16


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


def _thumbnails(images: np.ndarray, side: int) -> np.ndarray:
    """[N, side·side·C] float32: area-downsampled, centred pixels of whole images."""
    out = []
    for start in range(0, len(images), 512):
        x = tf.cast(images[start : start + 512], tf.float32) / 255.0
        out.append(tf.image.resize(x, (side, side), method="area").numpy() - 0.5)
    return np.concatenate(out).reshape(len(images), -1)


def image_baselines(cfg, data, test_fn, model_shape, fit_and_score) -> dict[str, float]:
    """Image-level baselines: ``baseline_pixels.<clf>`` and ``baseline_random.pool.<clf>``.

    Args:
      cfg: the run's config (seed, model settings, eval_batch_size).
      data: the run's ``OneClassData``.
      test_fn: the run's test view function (the untrained network sees what the trained saw).
      model_shape: the model input (H, W, C).
      fit_and_score: ``fn({"cls_<f>", "test_<f>", "test_y"} arrays) -> {"<f>.<clf>": AUROC}``,
        the run's own classifier protocol.
    """
    side = min(PIXEL_SIDE_IMAGE, int(data.test_x.shape[1]))
    pixels = rf.feature_arrays(
        {"pixels": _thumbnails(data.cls_x, side)},
        {"pixels": _thumbnails(data.test_x, side)},
        data.test_y,
    )
    metrics = {f"baseline_{k}": v for k, v in fit_and_score(pixels).items()}
    untrained = random_model(cfg, model_shape)
    batch = cfg.eval_batch_size
    feats = rf.feature_arrays(
        {"pool": features_lib.extract(untrained, data.cls_x, test_fn, batch)["pool"]},
        {"pool": features_lib.extract(untrained, data.test_x, test_fn, batch)["pool"]},
        data.test_y,
    )
    metrics.update({f"baseline_random.{k}": v for k, v in fit_and_score(feats).items()})
    return metrics


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
