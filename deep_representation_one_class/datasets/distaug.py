"""Distribution augmentation (DA): offline, deterministic expansion of the training inliers.

Each transformed copy (a rotation by k*90 degrees and/or a horizontal flip) becomes an extra
training *instance* with no transform label, so that a contrastive objective treats the copies
as negatives of each other and they act as synthetic outliers (spec section 6). Only the
representation-learning set is expanded: the classifier-fitting and test sets never are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deep_representation_one_class.datasets.base import DataError

__all__ = ["distaug_factor", "expand_distaug", "validate_distaug"]

# The k-way DA of the reference (k in 1..8) takes the first k entries of this list. Each entry
# maps [N, H, W, C] -> [N, H', W', C]; rotations are counter-clockwise in the image plane,
# which is what np.rot90(axes=(1, 2)) and tf.image.rot90 both do.
_ORDERED_TRANSFORMS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda x: x,
    lambda x: x[:, :, ::-1],
    lambda x: np.rot90(x, 1, axes=(1, 2)),
    lambda x: np.rot90(x, 1, axes=(1, 2))[:, :, ::-1],
    lambda x: np.rot90(x, 2, axes=(1, 2)),
    lambda x: np.rot90(x, 2, axes=(1, 2))[:, :, ::-1],
    lambda x: np.rot90(x, 3, axes=(1, 2)),
    lambda x: np.rot90(x, 3, axes=(1, 2))[:, :, ::-1],
)

_NAMED: dict[str, tuple[Callable[[np.ndarray], np.ndarray], ...]] = {
    "rot": (
        lambda x: x,
        lambda x: np.rot90(x, 1, axes=(1, 2)),
        lambda x: np.rot90(x, 2, axes=(1, 2)),
        lambda x: np.rot90(x, 3, axes=(1, 2)),
    ),
    "hflip": (lambda x: x, lambda x: x[:, :, ::-1]),
    "vflip": (lambda x: x, lambda x: x[:, ::-1]),
}

_NOOP_SPELLINGS = ("", "1", "none")
_VALID_TEXT = "'rot', 'hflip', 'vflip', an integer 1..8, or '' / 'none' (= 1, no augmentation)"
# Transforms that swap H and W need square images to be concatenated with the originals.
_ROTATING = {"rot", "3", "4", "5", "6", "7", "8"}


def validate_distaug(distaug_type: str | int | None) -> str:
    """Returns the canonical DA name: 'rot', 'hflip', 'vflip' or '1'..'8' ('1' = no-op).

    Args:
      distaug_type: a name (case-insensitive), an int or a digit string; '', 'none' and None
        mean no augmentation, as in the reference where '' disables DA.

    Raises:
      DataError: for anything else, listing the valid values.
    """
    if distaug_type is None:
        return "1"
    if isinstance(distaug_type, bool):  # bool is an int subclass; True would silently mean 1.
        raise DataError(f"invalid distaug_type {distaug_type!r}; valid: {_VALID_TEXT}")
    text = str(distaug_type).strip().lower()
    if text in _NOOP_SPELLINGS:
        return "1"
    if text in _NAMED:
        return text
    if text.isdigit() and 1 <= int(text) <= len(_ORDERED_TRANSFORMS):
        return str(int(text))
    raise DataError(f"invalid distaug_type {distaug_type!r}; valid: {_VALID_TEXT}")


def _transforms(canonical: str) -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    if canonical in _NAMED:
        return _NAMED[canonical]
    return _ORDERED_TRANSFORMS[: int(canonical)]


def distaug_factor(distaug_type: str | int | None) -> int:
    """How many times DA multiplies the training set (1, 2, 4 or k)."""
    return len(_transforms(validate_distaug(distaug_type)))


def expand_distaug(x: np.ndarray, distaug_type: str | int | None) -> np.ndarray:
    """Concatenates the DA copies of ``x`` along the batch axis.

    The copies are stacked block-wise, ``[t0(x); t1(x); ...]``, so copy ``j`` of image ``i`` is
    row ``j * N + i``. Reference behaviour: the copies carry no transform label and are simply
    more instances; the training pipeline's full shuffle mixes them.

    Args:
      x: [N, H, W, C] images (any dtype; uint8 in practice).
      distaug_type: 'rot' (x4: 0, 90, 180, 270 degrees counter-clockwise), 'hflip' (x2),
        'vflip' (x2), or k in 1..8 (the first k of [x, hf(x), r90, hf(r90), r180, hf(r180),
        r270, hf(r270)]). '', 'none' and '1' return ``x`` itself (no copy).

    Returns:
      [N * factor, H, W, C] array of the same dtype (a new, contiguous array unless no-op).

    Raises:
      DataError: unknown ``distaug_type``, ``x`` not 4-D, or a rotating DA on non-square images.
    """
    canonical = validate_distaug(distaug_type)
    if canonical == "1":
        return x
    if x.ndim != 4:
        raise DataError(f"expand_distaug expects [N, H, W, C] images, got shape {x.shape}")
    if canonical in _ROTATING and x.shape[1] != x.shape[2]:
        raise DataError(
            f"distaug_type '{canonical}' rotates by 90 degrees and needs square images, "
            f"got {x.shape[1]}x{x.shape[2]}; use 'hflip', 'vflip' or '2'"
        )
    return np.concatenate([t(x) for t in _transforms(canonical)], axis=0)
