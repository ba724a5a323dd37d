"""The scorer interface, its registry and shared helpers.

One-class scorers over fixed feature vectors (the classifiers of the reference's ``eval_embed``).

A scorer is fit on the features of training inliers, ``[N, D]``, and maps test features,
``[M, D]``, to a float64 anomaly score where HIGHER means MORE ANOMALOUS; this is the single sign
convention of the package, so AUROC is always computed with outliers as the positive class. The
registry keys are the reference's metric suffixes (``auc`` = 1-NN cosine, ``kde``, ``gde``,
``kocsvm``, ``locsvm``) with descriptive aliases. Every scorer except ``locsvm`` L2-normalises
features first (reference behaviour). ``Scorer.state()`` exposes the fitted parameters as plain
numpy arrays, enough to recompute ``score`` without sklearn; ``Scorer.from_state`` rebuilds a
fitted scorer from them and ``Scorer.tf_score`` computes the score in a TF graph (exports).
The rotation classifier's scores are not fit-based and are plain functions (``rotation_scores``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError

from deep_representation_one_class import catalog
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.registry import Registry


class EvaluationInputError(UserError, ValueError):
    """Arrays passed to a scorer or metric are unusable (shape, NaN/inf, sizes, labels)."""


def as_features(x: Any, what: str = "features") -> np.ndarray:
    """Validates and converts a feature matrix.

    Args:
      x: array-like ``[N, D]`` of real numbers (numpy array, list, or anything with
        ``__array__`` such as an eager ``tf.Tensor``).
      what: name used in error messages.

    Returns:
      ``[N, D]`` float64 array (no copy when ``x`` already is one).

    Raises:
      EvaluationInputError: if ``x`` is not 2-D, is empty, or holds NaN/inf.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise EvaluationInputError(
            f"{what} must be a 2-D [num_samples, dim] array, got shape {arr.shape}; "
            "flatten or pool them first"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EvaluationInputError(f"{what} must be non-empty, got shape {arr.shape}")
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise EvaluationInputError(
            f"{what} contain {bad} NaN/inf entries (did training diverge?); "
            "only finite features can be scored"
        )
    return arr


def l2_normalize(x: Any, eps: float = 1e-12) -> np.ndarray:
    """Scales each row to unit L2 norm.

    Args:
      x: ``[..., D]`` array-like.
      eps: lower bound on the norm, so an all-zero row stays all-zero instead of NaN.

    Returns:
      Array of the same shape, float64 unless ``x`` already is a floating dtype, with
      ``‖row‖₂ = 1`` for every row whose norm exceeds ``eps``.
    """
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    norm = np.linalg.norm(arr, axis=-1, keepdims=True)
    return arr / np.maximum(norm, eps)


def gamma_rule(train_normalized: Any, factor: float = 10.0) -> float:
    """RBF precision of the reference's KDE and RBF OC-SVM: ``factor / (Var · D)``.

    ``Var`` is the variance (ddof=0) of all ``N·D`` entries of the normalised train matrix, one
    scalar. With ``factor=1`` this is sklearn's ``gamma='scale'``; the reference uses 10x that.

    Args:
      train_normalized: ``[N, D]`` L2-normalised training features.
      factor: positive multiplier (10 in the reference).

    Returns:
      ``γ`` as a Python float (sklearn's parameter validation rejects numpy/TF scalars).

    Raises:
      EvaluationInputError: if the matrix is not 2-D or all its entries are equal (for example a
        collapsed head), which leaves the bandwidth undefined.
    """
    if not factor > 0:
        raise EvaluationInputError(f"gamma factor must be > 0, got {factor}")
    x = as_features(train_normalized, "train features")
    var = float(np.var(x))
    if not var > 0:
        raise EvaluationInputError(
            "train features have zero variance (all entries equal, e.g. a collapsed head); "
            "the RBF bandwidth factor / (Var * D) is undefined"
        )
    return float(factor / (var * x.shape[1]))


def _check_positive_int(value: Any, what: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise EvaluationInputError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _row_chunks(num_rows: int, chunk_size: int) -> Iterator[slice]:
    for start in range(0, num_rows, chunk_size):
        yield slice(start, min(num_rows, start + chunk_size))


def _subsample(x: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """Uniform row subsample without replacement, sorted so the original order is kept."""
    if max_rows is None or x.shape[0] <= max_rows:
        return x
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(x.shape[0], size=max_rows, replace=False))
    return x[idx]


class Scorer:
    """Base class: validation, optional L2 normalisation, and the fitted state as plain arrays.

    A scorer is one class in one file: described by the file's ``PLUGIN`` (``catalog.py``: its
    name, aliases, the tasks it serves and the default lists it is in), it is fit by the run's
    evaluation, saved with the run (``evaluation.classifiers``), served by ``Detector`` and
    ``score``, thresholded, and exported into SavedModels through its ``tf_score``, with no
    other module to touch.

    Subclasses set ``name``, ``normalize`` and ``tf_state`` and implement ``_fit``, ``_score``,
    ``_state`` and ``_set_state`` on already validated (and, if ``normalize``, normalised) float64
    matrices, plus ``tf_score`` to be exportable. ``_state()`` must hold exactly what
    ``_score`` reads, so that a scorer rebuilt by ``from_state(state())`` scores bit-identically.
    ``arrays()``/``from_arrays`` are the saved form, by default the state itself; scorers that
    keep the training features (KDE, 1-NN) save them as given (float32 from the network) and
    normalise again on loading, the same computation as at fit time, so the file is half the
    size and the scores are still bit-identical.
    """

    name: str = "scorer"  # set from the file's description
    normalize: bool = True
    #: the state arrays ``tf_score`` reads (what an export stores); empty = not exportable
    tf_state: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        entry = catalog.entry_for_class(cls, "scorer")
        if entry is not None:
            cls.name = entry.name

    def __init__(self) -> None:
        self._dim: int | None = None

    def params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-ready) that ``from_state`` passes back."""
        return {}

    def fit(self, train: Any) -> Scorer:
        """Fits the scorer on inlier features.

        Args:
          train: ``[N, D]`` finite float features of training inliers.

        Returns:
          ``self``.
        """
        x = as_features(train, f"{self.name} train features")
        given = np.asarray(train)
        # The features as given (float32 from the network): what ``arrays`` may save instead of
        # the float64 normalised copy, since normalising them again gives the same numbers.
        self._given = given if given.dtype in (np.float32, np.float64) else x
        if self.normalize:
            x = l2_normalize(x)
        self._fit(x)
        self._dim = x.shape[1]
        del self._given
        return self

    def score(self, test: Any) -> np.ndarray:
        """Anomaly scores of test features.

        Args:
          test: ``[M, D]`` finite float features, same ``D`` as in ``fit``.

        Returns:
          ``[M]`` float64 scores; higher means more anomalous.
        """
        dim = self._require_fitted()
        x = as_features(test, f"{self.name} test features")
        if x.shape[1] != dim:
            raise EvaluationInputError(
                f"{self.name} was fit on {dim}-dim features but got test features of shape "
                f"{x.shape}; score the same feature type it was fit on"
            )
        if self.normalize:
            x = l2_normalize(x)
        return np.asarray(self._score(x), dtype=np.float64).reshape(-1)

    @property
    def dim(self) -> int:
        """The feature dimension the scorer was fit on."""
        return self._require_fitted()

    def state(self) -> dict[str, np.ndarray]:
        """Fitted parameters as numpy arrays (scalars as 0-d arrays); see each subclass."""
        self._require_fitted()
        return {key: np.asarray(value) for key, value in self._state().items()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], params: Mapping[str, Any], dim: int) -> Scorer:
        """Rebuilds a fitted scorer from ``state()``, ``params()`` and its feature dimension.

        Raises:
          EvaluationInputError: a state array is missing.
        """
        scorer = cls(**dict(params))
        missing = sorted(set(scorer._state_keys()) - set(state))
        if missing:
            raise EvaluationInputError(f"{cls.name} state lacks {missing}")
        scorer._set_state({k: np.asarray(state[k]) for k in scorer._state_keys()})
        scorer._dim = int(dim)
        return scorer

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted scorer as arrays for a file (``from_arrays`` reads them back)."""
        return self.state()

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], params: Mapping[str, Any], dim: int) -> Scorer:
        """Rebuilds a fitted scorer saved with ``arrays()``; scores are bit-identical."""
        return cls.from_state(arrays, params, dim)

    @staticmethod
    def tf_score(state: Mapping[str, Any], feats: Any) -> Any:
        """The score in TensorFlow (differentiable in ``feats``), from ``tf_state`` arrays.

        Args:
          state: the ``tf_state`` entries as float64 tensors or variables.
          feats: ``[B, D]`` float features (un-normalised).

        Returns:
          ``[B]`` float64, equal to ``score`` up to float64 round-off.
        """
        raise NotImplementedError

    def _state_keys(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _require_fitted(self) -> int:
        if self._dim is None:
            raise NotFittedError(
                f"{self.name} scorer is not fitted; call fit(train_features) first"
            )
        return self._dim

    def _fit(self, train: np.ndarray) -> None:
        raise NotImplementedError

    def _score(self, test: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, normalize={self.normalize})"


SCORERS: Registry[type[Scorer]] = Registry("classifier", kind="scorer")


def _tf_normalize(feats: Any) -> Any:
    # TensorFlow is imported only by the functions that build graphs: this module serves the
    # numpy-only evaluation (``evaluate`` re-scores saved features without TensorFlow).
    import tensorflow as tf

    z = tf.cast(feats, tf.float64)
    # Same rule as l2_normalize: divide by max(norm, 1e-12).
    return z / tf.maximum(tf.norm(z, axis=-1, keepdims=True), tf.constant(1e-12, tf.float64))


def make_scorer(name: str, **kwargs: Any) -> Scorer:
    """Builds an unfitted scorer by registry key or alias (case-insensitive).

    Args:
      name: one of ``SCORERS.names(with_aliases=True)``, e.g. ``"kde"`` or ``"ocsvm_rbf"``.
      **kwargs: constructor arguments of that scorer (``chunk_size``, ``gamma_factor``, ``nu``,
        ``max_train``, ``seed``, ``reg_covar``).

    Returns:
      A new ``Scorer``. Unknown names raise ``KeyError`` listing the valid ones.
    """
    return SCORERS.get(name)(**kwargs)
