"""Stateless image augmentation ops, registered by name in ``AUG_OPS``.

Every registered entry is a factory ``factory(size, training, **params) -> list[Op]``; an ``Op``
maps ``(image [H, W, C] float32 in [0, 1], seed int32/int64 [2]) -> image float32``. A factory
returns a short list so that one token can expand to several steps (``shift`` is resize then
shift), and an empty list means the identity. All randomness goes through the stateless RNG
(``tf.random.stateless_*``, ``tf.image.stateless_random_*``) driven by the ``seed`` argument, so
the same ``(image, seed)`` gives the same output eagerly, under ``tf.function`` and inside
``tf.data.Dataset.map``; the reference drew from the global RNG inside ``map`` and so could not be
replayed. In test mode (``training=False``) every random op is the identity and the crop-type
ops reduce to a resize, as in the reference's test pipeline. Op semantics follow the reference
(``data/augment.py``) unless a comment says "Fix of reference bug" or "Reference behaviour".
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import tensorflow as tf

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.registry import Registry

__all__ = [
    "AUG_OPS",
    "AugmentError",
    "Op",
    "OpFactory",
    "factory_params",
    "sample_crop_side",
]

Op = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
OpFactory = Callable[..., list[Op]]

AUG_OPS: Registry[OpFactory] = Registry("augmentation op")

# Arguments every factory receives from the builder; they are not grammar parameters.
_BUILDER_ARGS = ("size", "training", "reference_blur", "reference_order")


class AugmentError(UserError, ValueError):
    """An augmentation string or op parameter is invalid."""


def factory_params(name: str) -> dict[str, object]:
    """Returns the grammar parameters of a registered op and their defaults.

    Args:
      name: A registered op name or alias.

    Returns:
      ``{param: default}`` in signature order, without the builder arguments (``size``,
      ``training``, ``reference_blur``, ``reference_order``); a required parameter maps to
      ``inspect.Parameter.empty``.
    """
    sig = inspect.signature(AUG_OPS.get(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in _BUILDER_ARGS and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


# ----------------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------------


def _split(seed: tf.Tensor, num: int) -> tf.Tensor:
    """Splits a [2] seed into ``num`` independent [2] seeds (shape [num, 2])."""
    return tf.random.experimental.stateless_split(seed, num=num)


def _uniform(seed: tf.Tensor, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
    """A float32 scalar ~ U[minval, maxval)."""
    return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval)


def _uniform_int(seed: tf.Tensor, minval, maxval) -> tf.Tensor:
    """An int32 scalar ~ UniformInt[minval, maxval) (``maxval`` exclusive, may be a tensor)."""
    return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval, dtype=tf.int32)


def _channels(image: tf.Tensor) -> int:
    """Static channel count; the ops need it to build kernels and to pick colour transforms."""
    channels = image.shape[-1]
    if channels is None:
        raise AugmentError(
            "augmentation needs a static channel dimension; call image.set_shape([None, None, C])"
        )
    return int(channels)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize to ``size x size`` (no antialias, as the reference); no-op when already so.

    Reference behaviour: ``Resize`` returned its input unchanged in test mode. Here it always
    resizes, which is the identity at the native size (half-pixel centres at scale 1 sample the
    pixels exactly) and otherwise guarantees the ``[size, size, C]`` output contract.
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.image.resize(image, (size, size), method="bilinear")


def _random_crop(image: tf.Tensor, height, width, seed: tf.Tensor) -> tf.Tensor:
    """Crops ``height x width`` at a uniformly random valid offset (sizes may be tensors)."""
    shape = tf.shape(image)
    seeds = _split(seed, 2)
    top = _uniform_int(seeds[0], 0, shape[0] - height + 1)
    left = _uniform_int(seeds[1], 0, shape[1] - width + 1)
    # Python slicing (strided_slice) keeps the static channel dimension, which the later
    # depthwise kernels and colour ops need; tf.slice with a tensor size would lose it.
    return image[top : top + height, left : left + width, :]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AugmentError(message)


def _check_prob(op: str, p: float) -> None:
    _check(0.0 <= p <= 1.0, f"{op}: probability must be in [0, 1], got {p}")


def _check_size(size: int) -> None:
    _check(isinstance(size, int) and size > 0, f"image size must be a positive int, got {size!r}")


def _bernoulli(seed: tf.Tensor, p: float) -> tf.Tensor:
    """A scalar bool that is True with probability ``p``."""
    return _uniform(seed) < p


# ----------------------------------------------------------------------------------------------
# Geometric ops.
# ----------------------------------------------------------------------------------------------


@AUG_OPS.register("resize")
def resize(size: int, training: bool) -> list[Op]:
    """Bilinear resize to ``size x size`` (both modes)."""
    _check_size(size)
    del training
    return [lambda image, seed: _resize(image, size)]


def _crop_ops(size: int, training: bool, crop_size: int) -> list[Op]:
    """Resize, then (training only) a random ``crop_size`` square crop."""
    if not training:
        return resize(size, training)

    def crop_op(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        out = _random_crop(image, crop_size, crop_size, seed)
        return tf.ensure_shape(out, [crop_size, crop_size, _channels(image)])

    return [*resize(size, training), crop_op]


@AUG_OPS.register("base")
def base(size: int, training: bool) -> list[Op]:
    """Resize, then a random crop of ``floor(0.875 * size)`` (a smaller output); test: resize."""
    _check_size(size)
    return _crop_ops(size, training, max(1, math.floor(0.875 * size)))


@AUG_OPS.register("crop")
def crop(size: int, training: bool, crop_size: int) -> list[Op]:
    """Resize, then a random ``crop_size`` square crop (output is smaller); test: resize."""
    _check_size(size)
    crop_size = int(crop_size)
    _check(
        0 < crop_size <= size,
        f"crop: crop size must be in [1, {size}] for {size}px images, got {crop_size}",
    )
    return _crop_ops(size, training, crop_size)


@AUG_OPS.register("shift")
def shift(size: int, training: bool) -> list[Op]:
    """Resize, reflect-pad by ``floor(0.125 * size)`` and randomly crop back (±4 px at 32 px)."""
    _check_size(size)
    pad = math.floor(0.125 * size)
    if not training or pad == 0:
        return resize(size, training)

    def shift_op(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        out = _random_crop(padded, size, size, seed)
        return tf.ensure_shape(out, [size, size, _channels(image)])

    return [*resize(size, training), shift_op]


def sample_crop_side(seed: tf.Tensor, size: int, min_scale: float) -> tf.Tensor:
    """Samples the ``cnr`` crop side ``s ~ UniformInt[floor(min_scale * size), size]``.

    Args:
      seed: int32/int64 [2] stateless seed.
      size: target image side H.
      min_scale: smallest side as a fraction of ``size``, in (0, 1].

    Returns:
      int32 scalar in ``[max(1, floor(min_scale * size)), size]`` (both ends inclusive); uniform
      in side length, so the area fraction is not uniform (0.25-1 at ``min_scale=0.5``).
    """
    # The epsilon stops float error from flooring e.g. 0.29 * 100 = 28.999... to 28.
    low = max(1, math.floor(min_scale * size + 1e-9))
    return _uniform_int(seed, low, size + 1)


@AUG_OPS.register("cnr", "crop_and_resize")
def crop_and_resize(size: int, training: bool, min_scale: float = 0.5) -> list[Op]:
    """Random square crop with side ``~UniformInt[floor(min_scale*H), H]``, resized back to H x H.

    Reference behaviour: an aspect ratio of 1 and a side uniform in length (not SimCLR's
    Inception crop). The square is clipped to the image (``min(s, h, w)``) so that inputs smaller
    than ``size`` still work. Test mode: resize only.
    """
    _check_size(size)
    _check(0.0 < min_scale <= 1.0, f"cnr: min scale must be in (0, 1], got {min_scale}")
    if not training:
        return resize(size, training)

    def cnr_op(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        seeds = _split(seed, 2)
        shape = tf.shape(image)
        side = tf.minimum(
            sample_crop_side(seeds[0], size, min_scale), tf.minimum(*tf.unstack(shape[:2]))
        )
        out = _random_crop(image, side, side, seeds[1])
        return tf.ensure_shape(
            tf.image.resize(out, (size, size), method="bilinear"), [size, size, _channels(image)]
        )

    return [cnr_op]


@AUG_OPS.register("hflip")
def hflip(size: int, training: bool) -> list[Op]:
    """Left-right flip with p = 0.5; test: identity."""
    _check_size(size)
    if not training:
        return []
    return [lambda image, seed: tf.image.stateless_random_flip_left_right(image, seed)]


@AUG_OPS.register("vflip")
def vflip(size: int, training: bool) -> list[Op]:
    """Up-down flip with p = 0.5; test: identity."""
    _check_size(size)
    if not training:
        return []
    return [lambda image, seed: tf.image.stateless_random_flip_up_down(image, seed)]


def _rotate_factory(k: int) -> OpFactory:
    def rotate(size: int, training: bool) -> list[Op]:
        # Deterministic, so it is applied in both modes (test views such as "x,+rotate90").
        _check_size(size)
        del training
        return [lambda image, seed: tf.image.rot90(image, k=k)]

    rotate.__name__ = f"rotate{90 * k}"
    rotate.__doc__ = f"Counter-clockwise rotation by {90 * k} degrees (``tf.image.rot90``, k={k})."
    return rotate


for _k in (1, 2, 3):
    AUG_OPS.add(f"rotate{90 * _k}", _rotate_factory(_k))


# ----------------------------------------------------------------------------------------------
# Photometric ops.
# ----------------------------------------------------------------------------------------------


@AUG_OPS.register("cutout")
def cutout(size: int, training: bool, scale: float = 0.3) -> list[Op]:
    """Fills a square of side ``round(scale * size)`` at a random centre with grey 0.5.

    Reference behaviour: the reference's default ``--aug_list`` named ``cutout`` but never
    registered it. The square is clipped to the image. Test mode: identity.
    """
    _check_size(size)
    _check(0.0 < scale <= 1.0, f"cutout: scale must be in (0, 1], got {scale}")
    side = math.floor(scale * size + 0.5)  # round half up, not Python's round-half-even
    if not training or side == 0:
        return []

    def cutout_op(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(image)
        seeds = _split(seed, 2)
        top = _uniform_int(seeds[0], 0, shape[0]) - side // 2
        left = _uniform_int(seeds[1], 0, shape[1]) - side // 2
        rows = tf.range(shape[0])
        cols = tf.range(shape[1])
        in_rows = (rows >= top) & (rows < top + side)
        in_cols = (cols >= left) & (cols < left + side)
        mask = (in_rows[:, tf.newaxis] & in_cols[tf.newaxis, :])[..., tf.newaxis]
        return tf.where(mask, tf.constant(0.5, image.dtype), image)

    return [cutout_op]
