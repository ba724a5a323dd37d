"""CutPaste and CutPaste-Scar (Li, Sohn, Yoon, Pfister, CVPR 2021) as stateless ops.

``cutpaste``: cut a rectangle of area ``U[0.02, 0.15]`` of the image, aspect ratio (h / w)
log-uniform in ``[0.3, 3.3]``, colour-jitter it (brightness, contrast, saturation, hue 0.1) and
paste it at another uniformly random position. ``scar``: the same with a thin, long rectangle
rotated by ``U[-45, 45]`` degrees, width ``U[2, 16]`` and length ``U[10, 25]`` pixels at 256 px
(scaled by ``max(size, 128) / 256``, so at 32-64 px patches a scar is 1-8 px wide and 5-12.5 px
long). Both are training-only (identity in test mode) and driven by the stateless seed like
every other op, so a view is a deterministic function of ``(image, seed)``.

Implementation: the source region is brought onto the target region by an integer ``tf.roll``
of the whole image; the source is sampled so that it lies inside the image, so the roll never
wraps inside the pasted region. The pasted pixels are a boolean mask (an axis-aligned rectangle,
or a rotated one for the scar), evaluated on pixel centres.
"""

from __future__ import annotations

import math

import tensorflow as tf

from deep_representation_one_class.augment.ops import AUG_OPS, Op, _check_size, _split, _uniform
from deep_representation_one_class.augment.photometric import jitter

__all__ = ["cutpaste_image", "scar_image"]

AREA_RATIO = (0.02, 0.15)
ASPECT_RATIO = (0.3, 3.3)
SCAR_WIDTH = (2.0, 16.0)
SCAR_LENGTH = (10.0, 25.0)
SCAR_ANGLE = 45.0
PATCH_JITTER = 0.1


def _uniform_int(seed, low, high):
    """int32 in [low, high] inclusive (``high`` >= ``low``; tensors allowed)."""
    return tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high + 1, dtype=tf.int32)


def _paste(image, shifted, mask, jitter_op, seed):
    """``image`` with ``jitter(shifted)`` where ``mask`` ([H, W] bool) is True."""
    patch = jitter_op(shifted, seed) if jitter_op is not None else shifted
    return tf.where(mask[..., tf.newaxis], patch, image)


def cutpaste_image(image: tf.Tensor, seed: tf.Tensor, jitter_op: Op | None = None) -> tf.Tensor:
    """One CutPaste of ``image`` [H, W, C] float32 in [0, 1]; returns the same shape.

    The rectangle's sides are clipped to ``[1, H - 1]`` x ``[1, W - 1]`` so that a source and a
    different target always fit.
    """
    shape = tf.shape(image)
    h_img, w_img = shape[0], shape[1]
    s = _split(tf.cast(seed, tf.int64), 7)
    area = _uniform(s[0], *AREA_RATIO) * tf.cast(h_img * w_img, tf.float32)
    log_ratio = _uniform(s[1], math.log(ASPECT_RATIO[0]), math.log(ASPECT_RATIO[1]))
    ratio = tf.exp(log_ratio)
    h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), 1, h_img - 1)
    w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), 1, w_img - 1)
    sy, sx = _uniform_int(s[2], 0, h_img - h), _uniform_int(s[3], 0, w_img - w)
    ty, tx = _uniform_int(s[4], 0, h_img - h), _uniform_int(s[5], 0, w_img - w)
    shifted = tf.roll(image, shift=tf.stack([ty - sy, tx - sx]), axis=[0, 1])
    rows = tf.range(h_img)
    cols = tf.range(w_img)
    mask = ((rows >= ty) & (rows < ty + h))[:, None] & ((cols >= tx) & (cols < tx + w))[None, :]
    return _paste(image, shifted, mask, jitter_op, s[6])


def scar_image(
    image: tf.Tensor, seed: tf.Tensor, scale: float = 1.0, jitter_op: Op | None = None
) -> tf.Tensor:
    """One CutPaste-Scar of ``image`` [H, W, C] float32; ``scale`` multiplies the pixel ranges."""
    shape = tf.shape(image)
    h_img, w_img = shape[0], shape[1]
    hf, wf = tf.cast(h_img, tf.float32), tf.cast(w_img, tf.float32)
    s = _split(tf.cast(seed, tf.int64), 8)
    width = tf.maximum(_uniform(s[0], *SCAR_WIDTH) * scale, 1.0)
    length = tf.maximum(_uniform(s[1], *SCAR_LENGTH) * scale, 2.0)
    theta = _uniform(s[2], -SCAR_ANGLE, SCAR_ANGLE) * (math.pi / 180.0)
    # Centres at least the half-diagonal from the border keep the whole scar inside the image
    # (when the image is smaller than the scar, the centre is simply the middle).
    radius = 0.5 * tf.sqrt(width**2 + length**2)

    def centre(seed_y, seed_x):
        lo_y, hi_y = tf.minimum(radius, hf / 2), tf.maximum(hf - radius, hf / 2)
        lo_x, hi_x = tf.minimum(radius, wf / 2), tf.maximum(wf - radius, wf / 2)
        return _uniform(seed_y, 0.0, 1.0) * (hi_y - lo_y) + lo_y, (
            _uniform(seed_x, 0.0, 1.0) * (hi_x - lo_x) + lo_x
        )

    cy_s, cx_s = centre(s[3], s[4])
    cy_t, cx_t = centre(s[5], s[6])
    dy = tf.cast(tf.round(cy_t - cy_s), tf.int32)
    dx = tf.cast(tf.round(cx_t - cx_s), tf.int32)
    cy_t, cx_t = cy_s + tf.cast(dy, tf.float32), cx_s + tf.cast(dx, tf.float32)
    shifted = tf.roll(image, shift=tf.stack([dy, dx]), axis=[0, 1])
    yy = tf.range(hf)[:, None] + 0.5 - cy_t
    xx = tf.range(wf)[None, :] + 0.5 - cx_t
    along = yy * tf.sin(theta) + xx * tf.cos(theta)
    across = yy * tf.cos(theta) - xx * tf.sin(theta)
    mask = (tf.abs(along) <= length / 2) & (tf.abs(across) <= width / 2)
    return _paste(image, shifted, mask, jitter_op, s[7])


def scar_scale(size: int) -> float:
    """The factor on the paper's 256-px scar sizes for ``size``-px images (>= 0.5)."""
    return max(int(size), 128) / 256.0


def _patch_jitter(size: int) -> Op:
    return jitter(size, True, PATCH_JITTER, PATCH_JITTER, PATCH_JITTER, PATCH_JITTER)[0]


@AUG_OPS.register("cutpaste")
def cutpaste(size: int, training: bool) -> list[Op]:
    """CutPaste: a jittered rectangle of the image pasted elsewhere; test: identity."""
    _check_size(size)
    if not training:
        return []
    jitter_op = _patch_jitter(size)
    return [lambda image, seed: cutpaste_image(image, seed, jitter_op)]


@AUG_OPS.register("scar")
def scar(size: int, training: bool) -> list[Op]:
    """CutPaste-Scar: a thin rotated jittered strip pasted elsewhere; test: identity."""
    _check_size(size)
    if not training:
        return []
    jitter_op = _patch_jitter(size)
    scale = scar_scale(size)
    return [lambda image, seed: scar_image(image, seed, scale, jitter_op)]
