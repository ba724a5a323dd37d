"""Patch sampling for patch-level tasks: random training patches and the dense test grid.

Training (``patch_view_fn``): each example first draws one random P x P window of the already
resized image from the stateless seed, then every view augments that same window with its own
chain built at size P. Sharing the window makes the contrastive positives two augmentations of
one patch (as for whole images) and the rotation views rotations of one patch. Evaluation
(``grid_positions``, ``gather_patches``): windows on a regular grid of stride S whose last row
and column touch the image border, cut out of uint8 images without copying the whole image set;
``anomaly_maps`` turns the grid's window scores back into smoothed per-pixel maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from scipy import ndimage

from deep_representation_one_class.augment import grammar
from deep_representation_one_class.tasks.image import reference_behaviour

if TYPE_CHECKING:
    from deep_representation_one_class.config import Config

__all__ = [
    "anomaly_maps",
    "gather_patches",
    "grid_positions",
    "patch_view_fn",
    "random_patch",
]


def random_patch(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """A uniformly placed ``size`` x ``size`` window of ``image`` (every position equally likely).

    Args:
      image: [H, W, C] with H, W >= size (any dtype).
      size: the patch side P.
      seed: [2] int stateless seed.

    Returns:
      [P, P, C] tensor of ``image``'s dtype.
    """
    shape = tf.shape(image)
    tf.debugging.assert_greater_equal(
        tf.minimum(shape[0], shape[1]), size, message="image smaller than the patch size"
    )
    # maxval is exclusive: top-left corners 0 .. H - P inclusive, exactly uniform.
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    corner = [
        tf.random.stateless_uniform(
            [], seed=seeds[k], minval=0, maxval=shape[k] - size + 1, dtype=tf.int32
        )
        for k in (0, 1)
    ]
    patch = tf.slice(image, tf.stack([corner[0], corner[1], 0]), tf.stack([size, size, shape[2]]))
    channels = image.shape[-1]
    return tf.ensure_shape(patch, [size, size, channels])


def patch_view_fn(train_views: Sequence[grammar.ViewSpec], cfg: Config):
    """The training view function of patch tasks: one random window, then the views' chains.

    Args:
      train_views: parsed ``--aug_list`` views.
      cfg: uses ``patch_size`` (P) and the reference-augmentation switches.

    Returns:
      ``fn(image [H, W, C] uint8, seed int32 [2]) -> tuple`` of ``len(train_views)`` views,
      each [P, P, C] float32 in [0, 1]; a deterministic function of ``(image, seed)``.
    """
    size = int(cfg.patch_size)
    inner = grammar.build_view_fn(
        tuple(train_views), size, training=True, **reference_behaviour(cfg)
    )

    def fn(image: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        patch = random_patch(tf.convert_to_tensor(image), size, seeds[0])
        views = inner(patch, seeds[1])
        # Chains without a resize-type op keep the input size, which is already P.
        return tuple(tf.ensure_shape(v, [size, size, v.shape[-1]]) for v in views)

    return fn


def grid_positions(height: int, width: int, size: int, stride: int) -> tuple[np.ndarray, ...]:
    """Top-left corners of the dense grid: (ys [gh], xs [gw]) int64.

    Positions are 0, S, 2S, ... plus ``H - P`` (resp. ``W - P``) when the stride does not land
    there, so that every pixel is covered by at least one window.

    Raises:
      ValueError: the patch does not fit in the image or the stride is not positive.
    """
    if size > min(height, width) or stride < 1:
        raise ValueError(
            f"patch size {size} / stride {stride} do not fit a {height}x{width} image; use "
            "--patch_size <= the image side and --patch_stride >= 1"
        )

    def axis(n: int) -> np.ndarray:
        pos = np.arange(0, n - size + 1, stride, dtype=np.int64)
        return pos if pos[-1] == n - size else np.append(pos, n - size)

    return axis(height), axis(width)


def gather_patches(
    images: np.ndarray, index: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int
) -> np.ndarray:
    """Cuts windows out of uint8 images without materialising all of them.

    Args:
      images: [N, H, W, C] uint8.
      index, ys, xs: [K] image index and top-left corner of each window.
      size: the patch side P.

    Returns:
      [K, P, P, C] uint8 (a copy of just these K windows).
    """
    windows = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(1, 2))
    # windows: [N, H-P+1, W-P+1, C, P, P], a view; indexing copies only the K windows asked for.
    return np.ascontiguousarray(windows[index, ys, xs].transpose(0, 2, 3, 1))


def _coverage(positions: np.ndarray, size: int, length: int) -> np.ndarray:
    """[g, length] float64: row i is 1 on the pixels window i covers along one axis."""
    pix = np.arange(length)
    return ((pix[None] >= positions[:, None]) & (pix[None] < positions[:, None] + size)).astype(
        np.float64
    )


def anomaly_maps(
    patch_scores: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    size: int,
    shape: tuple[int, int],
    sigma: float,
) -> np.ndarray:
    """Pixel maps: the mean score of the windows covering each pixel, Gaussian-smoothed.

    Args:
      patch_scores: [T, gh, gw] scores of the windows at ``ys`` x ``xs``.
      ys, xs: [gh], [gw] top-left corners (``grid_positions``).
      size: window side P.
      shape: (H, W) of the images.
      sigma: Gaussian sigma in pixels (0 = no smoothing).

    Returns:
      [T, H, W] float32.
    """
    ay = _coverage(ys, size, shape[0])  # [gh, H]
    ax = _coverage(xs, size, shape[1])  # [gw, W]
    counts = np.outer(ay.sum(axis=0), ax.sum(axis=0))  # windows per pixel, >= 1 on the grid
    s = np.asarray(patch_scores, np.float64)
    sums = np.einsum("gh,tgk,kw->thw", ay, s, ax, optimize=True)
    maps = (sums / counts).astype(np.float32)
    if sigma > 0:
        for t in range(maps.shape[0]):
            maps[t] = ndimage.gaussian_filter(maps[t], sigma=sigma, mode="nearest")
    return maps
