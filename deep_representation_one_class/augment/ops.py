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

from deep_representation_one_class.registry import Registry

__all__ = [
    "AUG_OPS",
    "AugmentError",
    "Op",
    "OpFactory",
    "blur_radius",
    "factory_params",
    "gaussian_blur",
    "gaussian_kernel1d",
    "sample_crop_side",
]

Op = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
OpFactory = Callable[..., list[Op]]

AUG_OPS: Registry[OpFactory] = Registry("augmentation op")

# Arguments every factory receives from the builder; they are not grammar parameters.
_BUILDER_ARGS = ("size", "training", "reference_blur")


class AugmentError(ValueError):
    """An augmentation string or op parameter is invalid."""


def factory_params(name: str) -> dict[str, object]:
    """Returns the grammar parameters of a registered op and their defaults.

    Args:
      name: A registered op name or alias.

    Returns:
      ``{param: default}`` in signature order, without the builder arguments (``size``,
      ``training``, ``reference_blur``); a required parameter maps to ``inspect.Parameter.empty``.
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


def _random_permutation(seed: tf.Tensor, n: int) -> tf.Tensor:
    """A uniformly random permutation of ``range(n)`` (int32 [n]) from a stateless seed."""
    return tf.argsort(tf.random.stateless_uniform([n], seed=seed))


@AUG_OPS.register("jitter")
def jitter(
    size: int,
    training: bool,
    brightness: float = 0.125,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.0,
) -> list[Op]:
    """Colour jitter: brightness, contrast, saturation and hue in a random per-sample order.

    Token ``jitter_b<B>_c<C>_s<S>_h<H>``. Brightness adds ``delta ~ U[-B, B)`` (additive, as the
    reference; SimCLR v2 multiplies); contrast and saturation scale by ``U[1-C, 1+C)`` and
    ``U[1-S, 1+S)``; hue shifts by ``U[-min(H, 0.5), min(H, 0.5))``. A zero component is skipped.
    Applied with probability 1, as in the reference. On one-channel images saturation and hue
    are skipped (a grey image has neither). Test mode: identity.
    """
    _check_size(size)
    _check(brightness >= 0.0, f"jitter: brightness must be >= 0, got {brightness}")
    _check(0.0 <= contrast <= 1.0, f"jitter: contrast must be in [0, 1], got {contrast}")
    _check(0.0 <= saturation <= 1.0, f"jitter: saturation must be in [0, 1], got {saturation}")
    _check(hue >= 0.0, f"jitter: hue must be >= 0, got {hue}")
    if not training:
        return []
    # Reference behaviour: tf.image.random_hue accepts at most 0.5 (a half turn of the hue wheel).
    hue = min(hue, 0.5)

    def _brightness(image, seed):
        return tf.image.stateless_random_brightness(image, brightness, seed)

    def _contrast(image, seed):
        return tf.image.stateless_random_contrast(image, 1.0 - contrast, 1.0 + contrast, seed)

    def _saturation(image, seed):
        return tf.image.stateless_random_saturation(image, 1.0 - saturation, 1.0 + saturation, seed)

    def _hue(image, seed):
        return tf.image.stateless_random_hue(image, hue, seed)

    all_components = [
        (brightness, False, _brightness),
        (contrast, False, _contrast),
        (saturation, True, _saturation),
        (hue, True, _hue),
    ]

    def jitter_op(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        channels = _channels(image)
        _check(
            channels in (1, 3), f"jitter: expects 1 or 3 channels, got a {channels}-channel image"
        )
        components = [
            fn
            for value, colour, fn in all_components
            if value > 0 and (channels == 3 or not colour)
        ]
        n = len(components)
        if n == 0:
            return image
        seeds = _split(seed, n + 1)

        def apply(j: int, x: tf.Tensor) -> tf.Tensor:
            # Fix of reference bug: the reference never clipped, so jitter could leave [0, 1]
            # (and feed out-of-range values to the HSV conversions). Clip after each component.
            return tf.clip_by_value(components[j](x, seeds[1 + j]), 0.0, 1.0)

        if n == 1:
            return apply(0, image)
        # Fix of reference bug: the reference shuffled the component order once at trace time,
        # so a whole run used one order per view. Here the order is drawn per sample: position
        # i runs component order[i], selected with switch_case so the graph stays static.
        order = _random_permutation(seeds[0], n)
        for position in range(n):
            branches = [lambda j=j, x=image: apply(j, x) for j in range(n)]
            image = tf.switch_case(order[position], branches)
        return image

    return [jitter_op]


def _to_gray(image: tf.Tensor) -> tf.Tensor:
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


@AUG_OPS.register("gray")
def gray(size: int, training: bool, p: float = 0.2) -> list[Op]:
    """With probability ``p`` convert to grayscale and back to 3 channels; test: identity.

    Fix of reference bug: the reference's RandomGrayScale ignored the mode flag and stayed random
    in test mode.
    """
    _check_size(size)
    _check_prob("gray", p)
    if not training or p == 0.0:
        return []

    def gray_op(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        channels = _channels(image)
        if channels == 1:
            return image
        _check(channels == 3, f"gray: expects 1 or 3 channels, got a {channels}-channel image")
        return tf.where(_bernoulli(seed, p), _to_gray(image), image)

    return [gray_op]


def blur_radius(size: int) -> int:
    """Gaussian blur radius for ``size`` px images: ``(size // 10) // 2`` (1 at 32 px, 3 at 64 px).

    The kernel has ``2 * radius + 1`` taps, i.e. 3 taps at 32 px and 7 at 64 px, following
    SimCLR's ``kernel_size = H // 10`` as the reference intended.
    """
    return (size // 10) // 2


def gaussian_kernel1d(sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """A normalised 1-D Gaussian, float32 [2 * radius + 1], summing to 1."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.cast(sigma, tf.float32)
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    return kernel / tf.reduce_sum(kernel)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """Separable Gaussian blur of an [H, W, C] float32 image (horizontal, then vertical).

    REFLECT padding followed by VALID convolutions keeps a constant image exactly constant and
    the mean close to unchanged; SAME zero padding (SimCLR's choice) darkens a frame of
    ``radius`` pixels, which is a large share of a 32 px image.

    Args:
      image: [H, W, C] float32, H and W > radius.
      sigma: float scalar standard deviation in pixels.
      radius: kernel radius; 0 returns the image unchanged.

    Returns:
      [H, W, C] float32.
    """
    if radius == 0:
        return image
    channels = _channels(image)
    kernel = gaussian_kernel1d(sigma, radius)
    taps = 2 * radius + 1
    horizontal = tf.tile(tf.reshape(kernel, [1, taps, 1, 1]), [1, 1, channels, 1])
    vertical = tf.tile(tf.reshape(kernel, [taps, 1, 1, 1]), [1, 1, channels, 1])
    x = image[tf.newaxis]
    x = tf.pad(x, [[0, 0], [0, 0], [radius, radius], [0, 0]], mode="REFLECT")
    x = tf.nn.depthwise_conv2d(x, horizontal, strides=[1, 1, 1, 1], padding="VALID")
    x = tf.pad(x, [[0, 0], [radius, radius], [0, 0], [0, 0]], mode="REFLECT")
    x = tf.nn.depthwise_conv2d(x, vertical, strides=[1, 1, 1, 1], padding="VALID")
    return x[0]


@AUG_OPS.register("blur")
def blur(size: int, training: bool, p: float = 0.5, reference_blur: bool = False) -> list[Op]:
    """With probability ``p`` a Gaussian blur with ``sigma ~ U(0.1, 2.0)``; test: identity.

    Fix of reference bug: the reference's RandomBlur returned early when ``is_training`` was set,
    so the blur never ran in training although every script lists ``blur0.5``.
    ``reference_blur=True`` reproduces that (the op is the identity) to match runs made with the
    reference; the default applies the blur as intended. Images under 20 px get a radius of 0,
    so the op is the identity there.
    """
    _check_size(size)
    _check_prob("blur", p)
    radius = blur_radius(size)
    if not training or reference_blur or p == 0.0 or radius == 0:
        return []

    def blur_op(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        seeds = _split(seed, 2)
        sigma = _uniform(seeds[1], 0.1, 2.0)
        return tf.cond(
            _bernoulli(seeds[0], p),
            lambda: gaussian_blur(image, sigma, radius),
            lambda: tf.identity(image),
        )

    return [blur_op]


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
