"""The one-class split protocol on class labels (spec 7.1/7.2), in pure numpy.

Fix of reference bug: the reference reseeds the *global* numpy RNG (``np.random.seed(1)``) for
the validation split; here the global RNG state is never touched.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deep_representation_one_class.errors import UserError

__all__ = ["DataError", "SplitIndices", "one_class_indices"]

# Stream ids for the seed-derived generators, so that the validation split and the classifier
# subsample are independent draws even for the same seed.
_STREAM_VALIDATION = 1
_STREAM_CLS_CAP = 2


class DataError(UserError, ValueError):
    """Bad data location, layout or option; the message says what was expected where."""


def _rng(seed: int, stream: int) -> np.random.Generator:
    # SeedSequence needs non-negative entropy; fold negative seeds instead of failing.
    return np.random.default_rng([int(seed) % (2**63), stream])


@dataclasses.dataclass(frozen=True)
class SplitIndices:
    """Row indices of a one-class task into the source arrays.

    ``train`` and ``cls`` index the source train arrays. ``test`` indexes the source test
    arrays, or the source train arrays when ``test_from_train`` (validation mode).
    ``test_y`` is 1 for outliers, 0 for inliers.
    """

    train: np.ndarray
    cls: np.ndarray
    test: np.ndarray
    test_y: np.ndarray
    test_from_train: bool


def one_class_indices(
    train_y: np.ndarray,
    test_y: np.ndarray,
    inlier: int,
    *,
    is_validation: bool = False,
    seed: int = 0,
    max_cls: int | None = 20000,
) -> SplitIndices:
    """Applies the one-class protocol to class labels; pure numpy, global RNG untouched.

    Normal mode (spec 7.1): train = training rows with label == ``inlier``; test = every test
    row, labelled 0 if its class is ``inlier`` else 1.
    Validation mode (spec 7.2): the training inliers are permuted; the first 90% (``9N // 10``)
    are the training set, the other 10% the validation inliers, and as many validation outliers
    are drawn without replacement from the training rows of the other classes (all of them if
    there are fewer). The validation set replaces the test set.
    The classifier set is the training set, or a seeded random ``max_cls`` of its rows (kept in
    their original order) when it is larger. Reference behaviour: the cap is 20,000 and only
    CelebA reaches it.

    Args:
      train_y: [N] int class ids of the source train rows.
      test_y: [T] int class ids of the source test rows.
      inlier: the class id of the normal category.
      is_validation: use the validation split instead of the test set.
      seed: derives the generators of the validation split and of the cap.
      max_cls: the classifier-set cap; None or <= 0 disables it.

    Raises:
      DataError: there is no training inlier, or (validation) no outlier to draw from.
    """
    train_y = np.asarray(train_y).reshape(-1)
    test_y = np.asarray(test_y).reshape(-1)
    train = np.flatnonzero(train_y == inlier)
    if train.size == 0:
        raise DataError(f"no training images of category id {inlier} in the source data")
    if is_validation:
        rng = _rng(seed, _STREAM_VALIDATION)
        perm = rng.permutation(train)
        n_train = (9 * train.size) // 10
        pool = np.flatnonzero(train_y != inlier)
        if pool.size == 0:
            raise DataError(
                "validation mode needs training images of other classes to draw outliers from; "
                "the source has only the inlier class"
            )
        val_in = np.sort(perm[n_train:])
        val_out = np.sort(rng.permutation(pool)[: val_in.size])
        train = np.sort(perm[:n_train])
        test = np.concatenate([val_in, val_out])
        labels = np.concatenate([np.zeros(val_in.size), np.ones(val_out.size)])
        from_train = True
    else:
        test = np.arange(test_y.size)
        labels = test_y != inlier
        from_train = False
    cls = train
    if max_cls is not None and max_cls > 0 and train.size > max_cls:
        pick = _rng(seed, _STREAM_CLS_CAP).permutation(train.size)[:max_cls]
        cls = train[np.sort(pick)]
    return SplitIndices(
        train=train.astype(np.int64),
        cls=cls.astype(np.int64),
        test=test.astype(np.int64),
        test_y=np.asarray(labels, dtype=np.int64),
        test_from_train=from_train,
    )
