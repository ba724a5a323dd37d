"""Tests of the augmentation-string grammar: golden parses, errors and the view-function builder."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import tensorflow as tf

from deep_representation_one_class.augment import (
    AUG_OPS,
    AugmentError,
    OpSpec,
    ViewSpec,
    build_view_fn,
    format_views,
    grammar,
    parse,
    valid_tokens,
    view_names,
)

CNR = OpSpec("cnr", (("min_scale", 0.5),))
HFLIP = OpSpec("hflip")
JITTER_04 = OpSpec(
    "jitter", (("brightness", 0.4), ("contrast", 0.4), ("saturation", 0.4), ("hue", 0.4))
)
JITTER_DEFAULT = OpSpec(
    "jitter", (("brightness", 0.125), ("contrast", 0.4), ("saturation", 0.4), ("hue", 0.0))
)
GRAY = OpSpec("gray", (("p", 0.2),))
BLUR = OpSpec("blur", (("p", 0.5),))
RESIZE = OpSpec("resize")
ROT = {k: OpSpec(f"rotate{k}") for k in (90, 180, 270)}
CONTRASTIVE_VIEW = (CNR, HFLIP, JITTER_04, GRAY, BLUR)

# The augmentation strings used by the reference's scripts and defaults, with their parses.
GOLDEN = {
    "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5,+rotate90,+rotate180,+rotate270": (
        ViewSpec(CONTRASTIVE_VIEW),
        ViewSpec((*CONTRASTIVE_VIEW, ROT[90])),
        ViewSpec((*CONTRASTIVE_VIEW, ROT[180])),
        ViewSpec((*CONTRASTIVE_VIEW, ROT[270])),
    ),
    "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5,+": (
        ViewSpec(CONTRASTIVE_VIEW),
        ViewSpec(CONTRASTIVE_VIEW),
    ),
    "cnr0.5+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5,+": (
        ViewSpec((CNR, JITTER_04, GRAY, BLUR)),
        ViewSpec((CNR, JITTER_04, GRAY, BLUR)),
    ),
    "x,+rotate90,+rotate180,+rotate270": (
        ViewSpec((RESIZE,)),
        ViewSpec((RESIZE, ROT[90])),
        ViewSpec((RESIZE, ROT[180])),
        ViewSpec((RESIZE, ROT[270])),
    ),
    "x": (ViewSpec((RESIZE,)),),
    "hflip+jitter,hflip+jitter+cutout0.3": (
        ViewSpec((HFLIP, JITTER_DEFAULT)),
        ViewSpec((HFLIP, JITTER_DEFAULT, OpSpec("cutout", (("scale", 0.3),)))),
    ),
}


@pytest.mark.parametrize("aug_list", list(GOLDEN))
def test_golden_parses(aug_list):
    assert parse(aug_list) == GOLDEN[aug_list]


@pytest.mark.parametrize("aug_list", list(GOLDEN))
def test_format_round_trips(aug_list):
    views = parse(aug_list)
    assert parse(format_views(views)) == views
    assert view_names(aug_list) == tuple(format_views(views).split(","))


def test_view_names_are_canonical():
    assert view_names("crop_and_resize+hflip,+rotate90") == (
        "cnr0.5+hflip",
        "cnr0.5+hflip+rotate90",
    )
    assert view_names("jitter_h0.1_b0.2") == ("jitter_b0.2_c0.4_s0.4_h0.1",)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("crop_and_resize0.5", "cnr0.5"),
        ("cnr", "cnr0.5"),  # defaults are filled in
        ("CNR.5+HFlip", "cnr0.5+hflip"),  # case-insensitive; ".5" is a number
        (" cnr0.5 + hflip ,+ rotate90", "cnr0.5+hflip,cnr0.5+hflip+rotate90"),
        ("hflip++vflip+", "hflip+vflip"),  # empty tokens are dropped
        ("jitter_h0.1_b0.2", "jitter_b0.2_h0.1"),  # any key order
        ("jitter_b0.125_c0.4_s0.4_h0", "jitter"),
        ("gray", "gray0.2"),
        ("blur", "blur0.5"),
        ("cutout", "cutout0.3"),
        ("crop24", "crop24"),
        ("cnr0.5+hflip+x+vflip", "resize+vflip"),  # x resets the chain
        ("cnr0.5,+x", "cnr0.5,resize"),
        ("hflip,+,+vflip", "hflip,hflip,hflip+vflip"),
    ],
)
def test_equivalent_spellings(left, right):
    assert parse(left) == parse(right)


def test_crop_size_is_int_and_specs_are_hashable():
    (view,) = parse("crop24+gray0.3")
    assert view.ops[0].kwargs == {"crop_size": 24}
    assert isinstance(view.ops[0].kwargs["crop_size"], int)
    assert len({view, parse("crop24+gray0.3")[0]}) == 1


def test_grammar_tables_match_factory_signatures():
    tables = dict(grammar._SUFFIX_PARAMS)
    tables.update({n: v for n, keys in grammar._KEYED_PARAMS.items() for v in keys.values()})
    for name, (param, _) in tables.items():
        assert param in inspect.signature(AUG_OPS.get(name)).parameters, (name, param)


@pytest.mark.parametrize(
    ("aug_list", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("+hflip", "first view"),
        ("hflip,,vflip", "view 1 is empty"),
        ("hflip,", "view 1 is empty"),
        ("+", "first view"),
        ("cutot0.3", "unknown augmentation op 'cutot0.3'"),
        ("rotate45", "unknown augmentation op 'rotate45'"),
        ("cnr0.5x", "decimal number"),
        ("cnr1.5", r"min_scale must be in \(0, 1\]"),
        ("cnr0", r"min_scale must be in \(0, 1\]"),
        ("crop0", "positive integer"),
        ("crop2.5", "positive integer"),
        ("crop", "needs a parameter"),
        ("gray1.2", r"probability in \[0, 1\]"),
        ("gray-0.1", "decimal number"),
        ("blur2", "probability"),
        ("hflip0.5", "takes no parameter"),
        ("x0.5", "unknown augmentation op"),
        ("jitter0.4", "_b<number>"),
        ("jitter_q0.4", "bad jitter parameter"),
        ("jitter_b", "bad jitter parameter"),
        ("jitter_b0.1_b0.2", "given twice"),
        ("jitter_c1.5", r"contrast \('_c'\) must be in \[0, 1\]"),
        ("cutout0", "scale"),
    ],
)
def test_parse_errors(aug_list, match):
    with pytest.raises(AugmentError, match=match):
        parse(aug_list)


def test_unknown_op_error_lists_valid_ops_and_is_a_value_error():
    with pytest.raises(ValueError) as info:
        parse("cnr0.5+sharpen")
    message = str(info.value)
    assert "\n" not in message
    listed = message.split("valid ops: ")[1].split(" (")[0].split(", ")
    assert set(listed) >= {"cnr", "crop_and_resize", "hflip", "jitter", "gray", "blur", "x"}
    assert set(valid_tokens()) >= {"x", "cnr", "rotate270", "shift", "base", "crop"}


def test_parse_rejects_non_strings():
    with pytest.raises(AugmentError, match="string"):
        parse(["x"])  # type: ignore[arg-type]


# ---------------------------------------------------------------- build_view_fn


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(32, 32, 3)).astype(np.float32)


def test_reference_contrastive_views_in_dataset_map():
    fn = build_view_fn(parse(next(iter(GOLDEN))), size=32, training=True)
    images = np.stack([_image(i) for i in range(4)])
    seeds = np.stack([np.arange(4), np.full(4, 9)], -1).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, seeds)).map(fn).batch(4)
    views = [v.numpy() for v in ds.get_single_element()]
    assert len(views) == 4
    for view in views:
        assert view.shape == (4, 32, 32, 3) and view.dtype == np.float32
        assert view.min() >= 0.0 and view.max() <= 1.0
    # Same image and seed: eager and tf.data agree.
    eager = fn(tf.constant(images[2]), tf.constant(seeds[2]))
    for view, one in zip(views, eager):
        np.testing.assert_allclose(view[2], one.numpy(), atol=1e-5)


def test_views_get_independent_seeds_and_are_deterministic():
    fn = build_view_fn(parse("cnr0.5+hflip+jitter,+"), size=32, training=True)
    image, seed = tf.constant(_image()), tf.constant([4, 2], tf.int32)
    first, second = fn(image, seed)
    assert not np.allclose(first.numpy(), second.numpy())  # "+" copies the ops, not the draws
    again = fn(image, seed)
    np.testing.assert_array_equal(first.numpy(), again[0].numpy())
    other = fn(image, tf.constant([5, 2], tf.int32))
    assert not np.allclose(first.numpy(), other[0].numpy())
    int64_seed = fn(image, tf.constant([4, 2], tf.int64))
    np.testing.assert_array_equal(first.numpy(), int64_seed[0].numpy())


def test_rotation_test_views_are_exact_rotations_of_uint8_input():
    image = (np.random.default_rng(1).uniform(size=(32, 32, 3)) * 255).astype(np.uint8)
    fn = build_view_fn(parse("x,+rotate90,+rotate180,+rotate270"), size=32, training=True)
    views = fn(tf.constant(image), tf.constant([0, 0], tf.int32))
    expected = image.astype(np.float32) / 255.0
    for k, view in enumerate(views):
        np.testing.assert_allclose(view.numpy(), np.rot90(expected, k), atol=1e-7)


def test_test_mode_drops_random_ops_but_keeps_rotations():
    fn = build_view_fn(parse(next(iter(GOLDEN))), size=32, training=False)
    image = _image(3)
    views = fn(tf.constant(image), tf.constant([7, 7], tf.int32))
    for k, view in enumerate(views):
        np.testing.assert_array_equal(view.numpy(), np.rot90(image, k))


def test_x_resizes_to_size():
    image = np.random.default_rng(0).uniform(size=(48, 40, 3)).astype(np.float32)
    (view,) = build_view_fn("x", size=32, training=True)(tf.constant(image), tf.constant([1, 1]))
    assert view.shape == (32, 32, 3)


def test_reference_blur_reaches_only_blur():
    image = tf.constant(_image())
    seed = tf.constant([1, 3], tf.int32)
    (as_reference,) = build_view_fn("blur1", 32, True, reference_blur=True)(image, seed)
    np.testing.assert_array_equal(as_reference.numpy(), image.numpy())
    (intended,) = build_view_fn("blur1", 32, True)(image, seed)
    assert not np.allclose(intended.numpy(), image.numpy())
    # Other ops do not receive the flag (they would raise TypeError if they did).
    (view,) = build_view_fn("cnr+gray+hflip", 32, True, reference_blur=True)(image, seed)
    assert view.shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("views", "size", "match"),
    [
        ("crop40", 32, "crop size"),
        ("x", 0, "positive int"),
        ((), 32, "non-empty"),
        ("jitter", 32.0, "positive int"),
    ],
)
def test_build_errors_are_raised_at_build_time(views, size, match):
    with pytest.raises(AugmentError, match=match):
        build_view_fn(views, size, training=True)


def test_build_rejects_integer_non_uint8_images():
    fn = build_view_fn("x", 32, training=True)
    with pytest.raises(AugmentError, match="uint8 or float"):
        fn(tf.zeros([32, 32, 3], tf.int32), tf.constant([0, 0]))
