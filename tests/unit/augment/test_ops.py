"""Tests of the augmentation ops: contracts eagerly and inside tf.data, statistics, test mode."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from deep_representation_one_class.augment import ops, photometric
from deep_representation_one_class.augment.ops import AUG_OPS, AugmentError

SIZE = 32

# One case per registered op: (name, params, expected training-mode output side).
OP_CASES = [
    ("resize", {}, SIZE),
    ("base", {}, 28),
    ("crop", {"crop_size": 24}, 24),
    ("shift", {}, SIZE),
    ("cnr", {"min_scale": 0.5}, SIZE),
    ("hflip", {}, SIZE),
    ("vflip", {}, SIZE),
    ("rotate90", {}, SIZE),
    ("rotate180", {}, SIZE),
    ("rotate270", {}, SIZE),
    ("jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.4}, SIZE),
    ("gray", {"p": 0.5}, SIZE),
    ("blur", {"p": 1.0}, SIZE),
    ("cutout", {"scale": 0.3}, SIZE),
    ("cutpaste", {}, SIZE),
    ("scar", {}, SIZE),
]
CASE_IDS = [case[0] for case in OP_CASES]
DETERMINISTIC = {"resize", "rotate90", "rotate180", "rotate270"}


def _image(h: int = SIZE, w: int = SIZE, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(h, w, c)).astype(np.float32)


def _coord_image(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """Channel 0 encodes the column, channel 1 the row (both scaled to [0, 1])."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([xs / (w - 1), ys / (h - 1), np.full((h, w), 0.5)], -1).astype(np.float32)


def _seeds(n: int) -> np.ndarray:
    return np.stack([np.arange(n), 7 * np.arange(n) + 3], -1).astype(np.int32)


def _chain(op_list):
    """Composes a factory's op list, splitting the seed like the grammar builder does."""

    def fn(image, seed):
        if not op_list:
            return image
        seeds = tf.random.experimental.stateless_split(seed, len(op_list))
        for i, op in enumerate(op_list):
            image = op(image, seeds[i])
        return image

    return fn


def _make(name, params=None, training=True, size=SIZE, **extra):
    return _chain(AUG_OPS.get(name)(size=size, training=training, **(params or {}), **extra))


def _eager(fn, image, seed) -> np.ndarray:
    return fn(tf.constant(image), tf.constant(seed)).numpy()


def _map_many(fn, image, seeds) -> np.ndarray:
    """Applies ``fn(image, seed)`` for each seed inside tf.data.Dataset.map; returns [N, ...]."""
    image = tf.constant(image)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: fn(image, s))
    return ds.batch(len(seeds)).get_single_element().numpy()


def test_cases_cover_every_registered_op():
    assert sorted(CASE_IDS) == AUG_OPS.names()


@pytest.mark.parametrize(("name", "params", "side"), OP_CASES, ids=CASE_IDS)
def test_op_contract_eager_and_in_dataset_map(name, params, side):
    fn = _make(name, params)
    image = _image()
    seed = np.array([11, 5], np.int32)
    eager = _eager(fn, image, seed)
    assert eager.shape == (side, side, 3)
    assert eager.dtype == np.float32
    assert eager.min() >= -1e-6 and eager.max() <= 1 + 1e-6
    np.testing.assert_array_equal(_eager(fn, image, seed), eager)  # same seed, same output

    mapped = _map_many(fn, image, seed[None])[0]
    np.testing.assert_allclose(mapped, eager, atol=1e-5)


@pytest.mark.parametrize(("name", "params", "side"), OP_CASES, ids=CASE_IDS)
def test_op_with_unknown_spatial_shape_in_dataset(name, params, side):
    fn = _make(name, params)
    image = _image(seed=1)
    seed = np.array([3, 4], np.int32)
    ds = tf.data.Dataset.from_generator(
        lambda: iter([image]), output_signature=tf.TensorSpec([None, None, 3], tf.float32)
    )
    out = ds.map(lambda x: fn(x, tf.constant(seed))).get_single_element().numpy()
    assert out.shape == (side, side, 3)
    np.testing.assert_allclose(out, _eager(fn, image, seed), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [(n, p) for n, p, _ in OP_CASES if n not in DETERMINISTIC],
    ids=[n for n in CASE_IDS if n not in DETERMINISTIC],
)
def test_random_ops_vary_across_seeds(name, params):
    outputs = _map_many(_make(name, params), _image(), _seeds(16))
    distinct = {out.tobytes() for out in outputs}
    assert len(distinct) >= 2


@pytest.mark.parametrize(("name", "params", "side"), OP_CASES, ids=CASE_IDS)
def test_test_mode_is_identity_at_native_size(name, params, side):
    del side
    image = _image(seed=2)
    out = _eager(_make(name, params, training=False), image, np.array([1, 2], np.int32))
    if name.startswith("rotate"):  # deterministic ops apply in both modes
        np.testing.assert_array_equal(out, np.rot90(image, int(name[6:]) // 90))
    else:
        np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("name", ["resize", "base", "crop", "shift", "cnr"])
def test_test_mode_crop_type_ops_reduce_to_resize(name):
    params = {"crop_size": 24} if name == "crop" else {}
    image = _image(48, 40)
    out = _eager(_make(name, params, training=False), image, np.array([1, 2], np.int32))
    expected = tf.image.resize(image, (SIZE, SIZE), method="bilinear").numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_cnr_resizes_larger_non_square_inputs_to_size():
    out = _eager(_make("cnr"), _image(64, 48), np.array([0, 9], np.int32))
    assert out.shape == (SIZE, SIZE, 3)


# ---------------------------------------------------------------- crop and resize statistics


def test_crop_side_sampler_covers_inclusive_range_uniformly():
    seeds = _seeds(600)
    sides = _map_many(lambda _, s: ops.sample_crop_side(s, 10, 0.3), np.zeros([1]), seeds)
    counts = np.bincount(sides, minlength=11)
    assert sides.min() == 3 and sides.max() == 10
    # 8 equally likely values, 75 expected each; a loose band well outside sampling noise.
    assert counts[3:].min() > 40 and counts[3:].max() < 115


def test_cnr_crops_are_squares_with_side_in_range():
    outputs = _map_many(_make("cnr", {"min_scale": 0.5}), _coord_image(), _seeds(400))
    # Bilinear resize with half-pixel centres samples exactly from the first to the last
    # cropped pixel, so the coordinate extent of the output is side - 1.
    width = np.rint((outputs[..., 0].max((1, 2)) - outputs[..., 0].min((1, 2))) * 31) + 1
    height = np.rint((outputs[..., 1].max((1, 2)) - outputs[..., 1].min((1, 2))) * 31) + 1
    np.testing.assert_array_equal(width, height)
    assert width.min() == 16 and width.max() == 32
    assert abs(width.mean() - 24.0) < 1.0  # uniform side on {16..32}; sd of the mean ~0.25
    # The crop location varies: small crops start at several different columns.
    lefts = np.rint(outputs[width <= 20][..., 0].min((1, 2)) * 31)
    assert len(np.unique(lefts)) >= 4


def test_cnr_rejects_bad_scale_and_has_alias():
    with pytest.raises(AugmentError, match="min scale"):
        AUG_OPS.get("cnr")(size=SIZE, training=True, min_scale=0.0)
    assert AUG_OPS.get("crop_and_resize") is AUG_OPS.get("cnr")


def test_shift_moves_by_at_most_pad():
    outputs = _map_many(_make("shift"), _coord_image(), _seeds(300))
    # Reflect padding keeps the interior pixel at (16, 16) within +-4 px of its origin.
    dx = np.rint(outputs[:, 16, 16, 0] * 31) - 16
    dy = np.rint(outputs[:, 16, 16, 1] * 31) - 16
    assert set(np.unique(dx)) == set(range(-4, 5))
    assert set(np.unique(dy)) == set(range(-4, 5))


# ---------------------------------------------------------------- flips, rotations


@pytest.mark.parametrize(("name", "flip"), [("hflip", np.fliplr), ("vflip", np.flipud)])
def test_flip_rate_and_exactness(name, flip):
    image = _coord_image()
    outputs = _map_many(_make(name), image, _seeds(400))
    flipped = np.array([np.array_equal(o, flip(image)) for o in outputs])
    unchanged = np.array([np.array_equal(o, image) for o in outputs])
    assert np.all(flipped ^ unchanged)
    assert 0.4 < flipped.mean() < 0.6


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotations_match_numpy_rot90(k):
    image = _image(32, 24)  # non-square, so a wrong axis order would change the shape
    fn = _make(f"rotate{90 * k}")
    np.testing.assert_array_equal(_eager(fn, image, np.array([0, 0], np.int32)), np.rot90(image, k))
    np.testing.assert_array_equal(_map_many(fn, image, _seeds(1))[0], np.rot90(image, k))


# ---------------------------------------------------------------- photometric ops


def test_random_permutation_draws_every_order():
    perms = _map_many(
        lambda _, s: photometric._random_permutation(s, 4), np.zeros([1]), _seeds(400)
    )
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms.tolist())
    assert {tuple(p) for p in perms.tolist()} == set(itertools.permutations(range(4)))


def test_jitter_brightness_is_additive_within_bound():
    image = 0.3 + 0.4 * _image()  # in [0.3, 0.7], so +-0.2 never clips
    params = {"brightness": 0.2, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    outputs = _map_many(_make("jitter", params), image, _seeds(200))
    deltas = outputs - image
    per_sample = deltas.reshape(len(deltas), -1)
    np.testing.assert_allclose(
        per_sample, np.broadcast_to(per_sample[:, :1], per_sample.shape), atol=1e-6
    )  # one delta per sample
    assert np.abs(per_sample[:, 0]).max() <= 0.2
    assert per_sample[:, 0].min() < -0.15 and per_sample[:, 0].max() > 0.15


def test_jitter_clips_and_handles_gray_images():
    params = {"brightness": 0.9, "contrast": 0.9, "saturation": 0.9, "hue": 0.5}
    outputs = _map_many(_make("jitter", params), _image(), _seeds(50))
    assert outputs.min() >= 0.0 and outputs.max() <= 1.0
    gray = _eager(_make("jitter", params), _image(c=1), np.array([1, 1], np.int32))
    assert gray.shape == (SIZE, SIZE, 1)


def test_jitter_all_zero_is_identity():
    params = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    image = _image()
    np.testing.assert_array_equal(_eager(_make("jitter", params), image, _seeds(1)[0]), image)


def test_gray_rate_and_output():
    image = _image()
    outputs = _map_many(_make("gray", {"p": 0.2}), image, _seeds(400))
    expected_gray = np.repeat(tf.image.rgb_to_grayscale(image).numpy(), 3, axis=-1)
    is_gray = np.array([np.allclose(o, expected_gray, atol=1e-6) for o in outputs])
    unchanged = np.array([np.array_equal(o, image) for o in outputs])
    assert np.all(is_gray ^ unchanged)
    assert 0.13 < is_gray.mean() < 0.27


def _numpy_blur(image: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, [(0, 0), (radius, radius), (0, 0)], mode="reflect")
    horizontal = sum(kernel[i] * padded[:, i : i + image.shape[1]] for i in range(2 * radius + 1))
    padded = np.pad(horizontal, [(radius, radius), (0, 0), (0, 0)], mode="reflect")
    return sum(kernel[i] * padded[i : i + image.shape[0]] for i in range(2 * radius + 1))


def test_blur_kernel_sizes():
    assert [2 * photometric.blur_radius(s) + 1 for s in (32, 64)] == [3, 7]
    assert photometric.blur_radius(16) == 0
    assert AUG_OPS.get("blur")(size=16, training=True, p=1.0) == []
    kernel = photometric.gaussian_kernel1d(1.0, 3).numpy()
    assert kernel.shape == (7,)
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(kernel, kernel[::-1])


@pytest.mark.parametrize(("sigma", "radius"), [(0.5, 1), (1.7, 3)])
def test_gaussian_blur_matches_numpy_reflect_convolution(sigma, radius):
    image = _image(20, 24)
    out = photometric.gaussian_blur(tf.constant(image), sigma, radius).numpy()
    np.testing.assert_allclose(out, _numpy_blur(image, sigma, radius), atol=1e-5)


def test_blur_changes_image_keeps_mean_and_constants():
    image = _image()
    outputs = _map_many(_make("blur", {"p": 1.0}), image, _seeds(40))

    def variation(x):
        return np.abs(np.diff(x, axis=-2)).mean((-1, -2, -3))

    # sigma ~ U(0.1, 2): near 0.1 the 3-tap kernel is almost a delta, so only most samples
    # change visibly, but every sample is at least as smooth as the input.
    assert np.mean(np.abs(outputs - image).max((1, 2, 3)) > 0.05) > 0.6
    assert np.all(variation(outputs) <= variation(image) + 1e-6)
    np.testing.assert_allclose(outputs.mean((1, 2, 3)), image.mean(), atol=2e-3)
    constant = np.full((SIZE, SIZE, 3), 0.6, np.float32)
    np.testing.assert_allclose(
        _map_many(_make("blur", {"p": 1.0}), constant, _seeds(5)), 0.6, atol=1e-6
    )


def test_blur_rate_and_reference_flag():
    image = _image()
    outputs = _map_many(_make("blur", {"p": 0.5}), image, _seeds(300))
    blurred = np.array([not np.array_equal(o, image) for o in outputs])
    assert 0.4 < blurred.mean() < 0.6
    assert AUG_OPS.get("blur")(size=SIZE, training=True, p=1.0, reference_blur=True) == []


# ---------------------------------------------------------------- cutout


def test_cutout_fills_one_clipped_square_with_grey():
    image = _image() * 0.4  # in [0, 0.4], so grey 0.5 pixels are unambiguous
    outputs = _map_many(_make("cutout", {"scale": 0.3}), image, _seeds(200))
    masks = np.all(outputs == 0.5, axis=-1)
    np.testing.assert_array_equal(outputs[~masks], np.broadcast_to(image, outputs.shape)[~masks])
    areas = masks.sum((1, 2))
    assert areas.max() == 100  # round(0.3 * 32) = 10 px side when fully inside
    assert areas.min() >= 25  # a centre in the image keeps at least a 5 x 5 corner
    for mask in masks:
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert mask.sum() == len(rows) * len(cols)  # the filled region is a rectangle


# ---------------------------------------------------------------- parameter validation


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("crop", {"crop_size": 40}, "crop size"),
        ("crop", {"crop_size": 0}, "crop size"),
        ("gray", {"p": 1.5}, "probability"),
        ("blur", {"p": -0.1}, "probability"),
        ("cutout", {"scale": 0.0}, "scale"),
        ("jitter", {"contrast": 1.5}, "contrast"),
        ("jitter", {"hue": -1.0}, "hue"),
    ],
)
def test_factories_reject_bad_params(name, params, match):
    with pytest.raises(AugmentError, match=match):
        AUG_OPS.get(name)(size=SIZE, training=True, **params)


def test_factories_reject_bad_size_and_channels():
    with pytest.raises(AugmentError, match="positive int"):
        AUG_OPS.get("hflip")(size=0, training=True)
    with pytest.raises(AugmentError, match="channels"):
        _eager(_make("gray", {"p": 1.0}), _image(c=4), np.array([0, 1], np.int32))


def test_reference_jitter_fixes_one_order_per_view_and_does_not_clip():
    # --augment_as_reference: the reference's jitter ran its components in one order for the
    # whole run (per view) and never clipped to [0, 1].
    image = tf.constant(np.random.default_rng(0).uniform(size=(8, 8, 3)), tf.float32)
    b, c, s, h = 0.9, 0.9, 0.9, 0.1
    op = photometric.jitter(8, True, b, c, s, h, reference_order=7)[0]
    order = np.random.default_rng(7).permutation(4)
    components = [
        lambda x, sd: tf.image.stateless_random_brightness(x, b, sd),
        lambda x, sd: tf.image.stateless_random_contrast(x, 1 - c, 1 + c, sd),
        lambda x, sd: tf.image.stateless_random_saturation(x, 1 - s, 1 + s, sd),
        lambda x, sd: tf.image.stateless_random_hue(x, h, sd),
    ]
    left = False
    for k in range(20):
        seed = tf.constant([k, 5])
        seeds = photometric._split(seed, 5)
        want = image
        for j in order:  # the same order for every sample, no clipping in between
            want = components[j](want, seeds[1 + j])
        got = op(image, seed)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
        left |= float(tf.reduce_min(got)) < 0.0 or float(tf.reduce_max(got)) > 1.0
    assert left  # brightness 0.9 leaves [0, 1] when nothing clips
    # The default (fixed) behaviour clips after every component.
    ours = photometric.jitter(8, True, b, c, s, h)[0]
    for k in range(20):
        out = ours(image, tf.constant([k, 5]))
        assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0
    # The config switch reaches the view builder (blur and jitter), the older blur switch only
    # the blur.
    import conftest

    from deep_representation_one_class.tasks.image import reference_behaviour

    both = reference_behaviour(conftest.tiny_config(augment_as_reference=True))
    assert both == {"reference_blur": True, "reference_jitter": True}
    blur = reference_behaviour(conftest.tiny_config(blur_as_reference=True))
    assert blur == {"reference_blur": True, "reference_jitter": False}
