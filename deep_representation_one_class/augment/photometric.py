"""Photometric augmentation ops: colour jitter, grayscale and Gaussian blur (``AUG_OPS``).

Same contract as ``ops.py``: factories ``factory(size, training, **params) -> list[Op]``,
stateless randomness from the ``seed`` argument, identities in test mode.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deep_representation_one_class.augment.ops import (
    AUG_OPS,
    Op,
    _bernoulli,
    _channels,
    _check,
    _check_prob,
    _check_size,
    _split,
    _uniform,
)

__all__ = ["blur_radius", "gaussian_blur", "gaussian_kernel1d"]


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
    reference_order: int | None = None,
) -> list[Op]:
    """Colour jitter: brightness, contrast, saturation and hue in a random per-sample order.

    Token ``jitter_b<B>_c<C>_s<S>_h<H>``. Brightness adds ``delta ~ U[-B, B)`` (additive, as the
    reference; SimCLR v2 multiplies); contrast and saturation scale by ``U[1-C, 1+C)`` and
    ``U[1-S, 1+S)``; hue shifts by ``U[-min(H, 0.5), min(H, 0.5))``. A zero component is skipped.
    Applied with probability 1, as in the reference. On one-channel images saturation and hue
    are skipped (a grey image has neither). Test mode: identity.

    ``reference_order`` (an int, set by ``--augment_as_reference``) reproduces the reference:
    the components run in one order for every sample, drawn once from this number, and the
    image is not clipped between them (values may leave [0, 1]).
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
            out = components[j](x, seeds[1 + j])
            if reference_order is not None:
                return out  # Reference behaviour: no clipping.
            # Fix of reference bug: the reference never clipped, so jitter could leave [0, 1]
            # (and feed out-of-range values to the HSV conversions). Clip after each component.
            return tf.clip_by_value(out, 0.0, 1.0)

        if n == 1:
            return apply(0, image)
        if reference_order is not None:
            # Reference behaviour: one order for the whole run (per view).
            for j in np.random.default_rng(reference_order).permutation(n):
                image = apply(int(j), image)
            return image
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
