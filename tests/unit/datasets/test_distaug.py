"""Distribution augmentation: canonical names, expansion factors and the exact transforms."""

from __future__ import annotations

import numpy as np
import pytest

from deep_representation_one_class.datasets import (
    DataError,
    distaug_factor,
    expand_distaug,
    validate_distaug,
)


def _images(n=3, h=4, w=4, c=3):
    return np.arange(n * h * w * c, dtype=np.uint8).reshape(n, h, w, c)


@pytest.mark.parametrize(
    "given, canonical, factor",
    [
        ("", "1", 1),
        (None, "1", 1),
        ("none", "1", 1),
        ("1", "1", 1),
        (1, "1", 1),
        ("ROT", "rot", 4),
        ("rot", "rot", 4),
        ("hflip", "hflip", 2),
        ("vflip", "vflip", 2),
        ("2", "2", 2),
        (4, "4", 4),
        ("8", "8", 8),
    ],
)
def test_canonical_names_and_factors(given, canonical, factor):
    assert validate_distaug(given) == canonical
    assert distaug_factor(given) == factor
    x = _images()
    assert expand_distaug(x, given).shape == (3 * factor, 4, 4, 3)


@pytest.mark.parametrize("bad", ["0", "9", "rotate", "cutout", "-1", "1.5", True])
def test_invalid_types_list_valid_values(bad):
    with pytest.raises(DataError, match="valid: 'rot', 'hflip', 'vflip'"):
        validate_distaug(bad)
    with pytest.raises(DataError):
        expand_distaug(_images(), bad)


def test_noop_returns_input_unchanged():
    x = _images()
    assert expand_distaug(x, "") is x
    assert expand_distaug(x, "1") is x


def test_rot_is_counter_clockwise_blocks():
    # A single marked pixel at the top-left corner of a 3x3 image.
    x = np.zeros((2, 3, 3, 1), np.uint8)
    x[0, 0, 0, 0] = 9
    x[1, 0, 2, 0] = 7  # top-right corner of the second image
    y = expand_distaug(x, "rot")
    assert y.shape == (8, 3, 3, 1)
    np.testing.assert_array_equal(y[:2], x)
    # 90 degrees counter-clockwise: top-left goes to bottom-left, top-right to top-left.
    assert y[2, 2, 0, 0] == 9
    assert y[3, 0, 0, 0] == 7
    # 180: top-left goes to bottom-right.
    assert y[4, 2, 2, 0] == 9
    # 270: top-left goes to top-right.
    assert y[6, 0, 2, 0] == 9
    for k in range(4):
        np.testing.assert_array_equal(y[2 * k : 2 * k + 2], np.rot90(x, k, axes=(1, 2)))


def test_hflip_and_vflip():
    x = _images(2, 3, 5, 2)  # non-square is fine for flips
    h = expand_distaug(x, "hflip")
    np.testing.assert_array_equal(h[:2], x)
    np.testing.assert_array_equal(h[2:], x[:, :, ::-1])
    v = expand_distaug(x, "vflip")
    np.testing.assert_array_equal(v[2:], x[:, ::-1])
    assert not np.array_equal(h[2:], v[2:])


def test_k_way_order_matches_reference_list():
    x = _images(2)
    y = expand_distaug(x, "8")

    def hf(a):
        return a[:, :, ::-1]

    r = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    expected = [x, hf(x), r[1], hf(r[1]), r[2], hf(r[2]), r[3], hf(r[3])]
    for j, e in enumerate(expected):
        np.testing.assert_array_equal(y[2 * j : 2 * j + 2], e)
    # k < 8 is a prefix of the same list.
    np.testing.assert_array_equal(expand_distaug(x, "3"), y[:6])


def test_rotation_needs_square_images():
    with pytest.raises(DataError, match="square"):
        expand_distaug(_images(1, 4, 6), "rot")
    assert expand_distaug(_images(1, 4, 6), "2").shape == (2, 4, 6, 3)


def test_expansion_does_not_modify_input():
    x = _images()
    before = x.copy()
    expand_distaug(x, "rot")[...] = 0
    np.testing.assert_array_equal(x, before)
