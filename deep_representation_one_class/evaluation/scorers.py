"""One-class scorers over fixed feature vectors (the classifiers of the reference's ``eval_embed``).

A scorer is fit on the features of training inliers, ``[N, D]``, and maps test features,
``[M, D]``, to a float64 anomaly score where HIGHER means MORE ANOMALOUS; this is the single sign
convention of the package, so AUROC is always computed with outliers as the positive class. The
registry keys are the reference's metric suffixes (``auc`` = 1-NN cosine, ``kde``, ``gde``,
``kocsvm``, ``locsvm``) with descriptive aliases. Every scorer except ``locsvm`` L2-normalises
features first (reference behaviour). ``Scorer.state()`` exposes the fitted parameters as plain
numpy arrays, enough to recompute ``score`` without sklearn (e.g. to export it into a TF graph).
The rotation classifier's scores are not fit-based and are plain functions (``rotation_scores``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import linalg as sp_linalg
from sklearn.exceptions import NotFittedError
from sklearn.svm import OneClassSVM

from deep_representation_one_class.registry import Registry


class EvaluationInputError(ValueError):
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
    """Base class: validation, optional L2 normalisation and the fitted-state contract.

    Subclasses set ``name`` and ``normalize`` and implement ``_fit``, ``_score`` and ``_state``
    on already validated (and, if ``normalize``, normalised) float64 matrices.
    """

    name: str = "scorer"
    normalize: bool = True

    def __init__(self) -> None:
        self._dim: int | None = None

    def fit(self, train: Any) -> Scorer:
        """Fits the scorer on inlier features.

        Args:
          train: ``[N, D]`` finite float features of training inliers.

        Returns:
          ``self``.
        """
        x = as_features(train, f"{self.name} train features")
        if self.normalize:
            x = l2_normalize(x)
        self._fit(x)
        self._dim = x.shape[1]
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

    def state(self) -> dict[str, np.ndarray]:
        """Fitted parameters as numpy arrays (scalars as 0-d arrays); see each subclass."""
        self._require_fitted()
        return {key: np.asarray(value) for key, value in self._state().items()}

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, normalize={self.normalize})"


SCORERS: Registry[type[Scorer]] = Registry("classifier")


@SCORERS.register("auc", "nn_cosine")
class NearestNeighborScorer(Scorer):
    """1-NN cosine distance: ``s(x) = 1 − max_j ⟨z̄(x), z̄(x_j)⟩`` (the reference's ``*.auc``).

    Fix of reference bug (spec §11 item 18): the reference materialises the full test×train
    similarity matrix (about 1.6 GB for CelebA); here test rows go in chunks, so peak memory is
    ``chunk_size × N`` floats.

    ``state()``: ``bank`` ``[N, D]``, the normalised training features.
    """

    name = "auc"

    def __init__(self, chunk_size: int = 1024) -> None:
        super().__init__()
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")

    def _fit(self, train: np.ndarray) -> None:
        self._bank = train

    def _score(self, test: np.ndarray) -> np.ndarray:
        out = np.empty(test.shape[0], dtype=np.float64)
        for rows in _row_chunks(test.shape[0], self.chunk_size):
            out[rows] = 1.0 - (test[rows] @ self._bank.T).max(axis=1)
        return out

    def _state(self) -> dict[str, Any]:
        return {"bank": self._bank}


@SCORERS.register("kde")
class KdeScorer(Scorer):
    """Gaussian KDE on the unit sphere, scaled as in the reference.

    ``s(x) = −(1/γ)·logsumexp_j(2γ·⟨z̄(x), z̄(x_j)⟩)`` with ``γ = gamma_rule(Z̄_tr)``. Because
    ``‖a−b‖² = 2 − 2⟨a,b⟩`` on the unit sphere this equals ``−(1/γ)·log Σ_j exp(−γ‖z̄−z̄_j‖²) − 2``,
    a negative log RBF-KDE with bandwidth ``1/√(2γ)`` up to a positive scale and a shift.

    The logsumexp subtracts each row's maximum before exponentiating: ``2γ`` is ~20 for spread
    features and much larger for concentrated ones, where a plain ``exp`` overflows. Test rows
    are processed in chunks, as in ``NearestNeighborScorer``.

    ``state()``: ``bank`` ``[N, D]`` (normalised train features) and ``gamma`` (scalar).
    """

    name = "kde"

    def __init__(self, chunk_size: int = 1024, gamma_factor: float = 10.0) -> None:
        super().__init__()
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")
        self.gamma_factor = float(gamma_factor)

    def _fit(self, train: np.ndarray) -> None:
        self._gamma = gamma_rule(train, self.gamma_factor)
        self._bank = train

    def _score(self, test: np.ndarray) -> np.ndarray:
        gamma = self._gamma
        out = np.empty(test.shape[0], dtype=np.float64)
        for rows in _row_chunks(test.shape[0], self.chunk_size):
            logits = (2.0 * gamma) * (test[rows] @ self._bank.T)
            peak = logits.max(axis=1)
            lse = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
            out[rows] = -lse / gamma
        return out

    def _state(self) -> dict[str, Any]:
        return {"bank": self._bank, "gamma": self._gamma}


@SCORERS.register("gde")
class GdeScorer(Scorer):
    """Gaussian density estimate (one full-covariance Gaussian): ``s = −log N(z̄; μ, Σ)``.

    Reference behaviour: sklearn ``GaussianMixture(n_components=1, covariance_type='full')`` with
    ``reg_covar=1e-6``. With one component, EM converges to the closed-form MLE (mean and
    covariance divided by N, plus ``reg_covar`` on the diagonal) after the first M-step, so the
    closed form is used: a Cholesky factor ``Σ = L Lᵀ`` gives the precision factor ``U = L⁻ᵀ``,
    ``maha = ‖(z̄ − μ)U‖²`` and ``log det Σ = 2 Σ log diag L``, without ever inverting Σ directly.

    ``state()``: ``mean`` ``[D]``, ``precision`` ``[D, D]`` (Σ⁻¹), ``precision_cholesky``
    ``[D, D]`` (upper ``U`` with ``UUᵀ = Σ⁻¹``) and ``log_norm`` (scalar
    ``½(D log 2π + log det Σ)``), so ``s = ½(z̄−μ)ᵀ Σ⁻¹ (z̄−μ) + log_norm``.
    """

    name = "gde"

    def __init__(self, reg_covar: float = 1e-6) -> None:
        super().__init__()
        if not reg_covar >= 0:
            raise EvaluationInputError(f"reg_covar must be >= 0, got {reg_covar}")
        self.reg_covar = float(reg_covar)

    def _fit(self, train: np.ndarray) -> None:
        n, d = train.shape
        mean = train.mean(axis=0)
        centered = train - mean
        cov = centered.T @ centered / n
        cov.flat[:: d + 1] += self.reg_covar
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as err:
            raise EvaluationInputError(
                "GDE covariance is not positive definite; use reg_covar > 0"
            ) from err
        self._mean = mean
        self._prec_chol = sp_linalg.solve_triangular(chol, np.eye(d), lower=True).T
        log_det = 2.0 * float(np.sum(np.log(np.diag(chol))))
        self._log_norm = 0.5 * (d * math.log(2.0 * math.pi) + log_det)

    def _score(self, test: np.ndarray) -> np.ndarray:
        y = (test - self._mean) @ self._prec_chol
        return 0.5 * np.einsum("ij,ij->i", y, y) + self._log_norm

    def _state(self) -> dict[str, Any]:
        return {
            "mean": self._mean,
            "precision": self._prec_chol @ self._prec_chol.T,
            "precision_cholesky": self._prec_chol,
            "log_norm": self._log_norm,
        }


# Largest float64 Gram matrix (train x train) the OC-SVMs precompute: 2 GiB, i.e. up to ~16k
# training samples. Bigger sets fall back to libsvm's own kernel evaluation.
GRAM_MAX_BYTES = 2 * 1024**3


class _OcsvmScorer(Scorer):
    """Shared parts of the sklearn ``OneClassSVM`` scorers (``s = −score_samples``).

    Same solver, same solution, less time: libsvm evaluates every kernel entry it needs with
    its own scalar loop over the D features, which dominates the fit (about 12 s of 14 s for
    6,000 x 512 features on 2 cores). Here the train x train kernel is one BLAS product in
    float64 and libsvm gets it as ``kernel='precomputed'``, so its SMO iterations only look
    entries up; scoring is a chunked BLAS product against the support vectors. The kernel
    values are the same float64 numbers up to rounding (libsvm also expands ‖a − b‖² into dot
    products), so the support set and dual coefficients agree with ``kernel='rbf'``/``'linear'``
    to ~1e-12 (tested). Above ``gram_max_bytes`` the Gram matrix would not fit, and libsvm
    computes the kernel itself (with a 1 GB column cache instead of sklearn's 200 MB).
    """

    def __init__(
        self,
        nu: float = 0.5,
        max_train: int | None = 20000,
        seed: int = 0,
        chunk_size: int = 1024,
        gram_max_bytes: int = GRAM_MAX_BYTES,
    ) -> None:
        super().__init__()
        if not 0.0 < nu <= 1.0:
            raise EvaluationInputError(f"nu must be in (0, 1], got {nu}")
        self.nu = float(nu)
        # The reference caps the classifier train set at 20k when loading data; the cap here keeps
        # libsvm's O(N²) kernel work bounded if a caller passes more.
        self.max_train = _check_positive_int(max_train, "max_train", allow_none=True)
        self.seed = int(seed)
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")
        self.gram_max_bytes = int(gram_max_bytes)

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``[len(a), len(b)]`` float64 kernel matrix."""
        raise NotImplementedError

    def _libsvm_kernel(self) -> dict[str, Any]:
        """``OneClassSVM`` kernel arguments equivalent to ``_kernel``."""
        raise NotImplementedError

    def _prepare(self, train: np.ndarray) -> None:
        """Sets kernel parameters from the whole (normalised) train set before subsampling."""

    def _fit(self, train: np.ndarray) -> None:
        self._prepare(train)
        x = _subsample(train, self.max_train, self.seed)
        self.used_precomputed = x.shape[0] ** 2 * 8 <= self.gram_max_bytes
        if self.used_precomputed:
            svm = OneClassSVM(kernel="precomputed", nu=self.nu).fit(self._kernel(x, x))
            self._sv = x[svm.support_]
        else:
            svm = OneClassSVM(nu=self.nu, cache_size=1024, **self._libsvm_kernel()).fit(x)
            self._sv = np.asarray(svm.support_vectors_, dtype=np.float64)
        self._alpha = np.asarray(svm.dual_coef_[0], dtype=np.float64)
        self._offset = float(svm.offset_[0])

    def _score(self, test: np.ndarray) -> np.ndarray:
        # score_samples = Σ_i α_i K(x, sv_i); the anomaly score is its negative.
        out = np.empty(test.shape[0], dtype=np.float64)
        for rows in _row_chunks(test.shape[0], self.chunk_size):
            out[rows] = -(self._kernel(test[rows], self._sv) @ self._alpha)
        return out

    def _svm_state(self) -> dict[str, Any]:
        return {"support_vectors": self._sv, "dual_coef": self._alpha, "offset": self._offset}


@SCORERS.register("kocsvm", "ocsvm_rbf")
class RbfOcsvmScorer(_OcsvmScorer):
    """RBF one-class SVM on normalised features, ``γ = gamma_rule(Z̄_tr)``, ``ν = 0.5``.

    ``s(x) = −Σ_i α_i exp(−γ‖z̄(x) − sv_i‖²)`` (= ``−score_samples``). ``γ`` is computed on the
    whole normalised train set, so it is the same ``γ`` as ``kde`` even when ``max_train``
    subsamples the SVM's fit set.

    ``state()``: ``support_vectors`` ``[S, D]``, ``dual_coef`` ``[S]`` (the α_i), ``gamma``
    (scalar) and ``offset`` (scalar, sklearn's ``offset_``; not needed for the score).
    """

    name = "kocsvm"

    def __init__(
        self,
        nu: float = 0.5,
        gamma_factor: float = 10.0,
        max_train: int | None = 20000,
        seed: int = 0,
        chunk_size: int = 1024,
        gram_max_bytes: int = GRAM_MAX_BYTES,
    ) -> None:
        super().__init__(nu, max_train, seed, chunk_size, gram_max_bytes)
        self.gamma_factor = float(gamma_factor)

    def _prepare(self, train: np.ndarray) -> None:
        self._gamma = gamma_rule(train, self.gamma_factor)

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq = a @ b.T
        sq *= -2.0
        sq += np.einsum("ij,ij->i", a, a)[:, None]
        sq += np.einsum("ij,ij->i", b, b)[None, :]
        np.maximum(sq, 0.0, out=sq)  # rounding can make ‖a − a‖² slightly negative
        sq *= -self._gamma
        return np.exp(sq, out=sq)

    def _libsvm_kernel(self) -> dict[str, Any]:
        # Fix of reference bug (spec §11 item 12): gamma must be a Python float for sklearn.
        return {"kernel": "rbf", "gamma": float(self._gamma)}

    def _state(self) -> dict[str, Any]:
        return {**self._svm_state(), "gamma": self._gamma}


@SCORERS.register("locsvm", "ocsvm_linear")
class LinearOcsvmScorer(_OcsvmScorer):
    """Linear one-class SVM, ``ν = 0.5``, on UN-normalised features.

    Reference behaviour: unlike every other scorer, the linear OC-SVM sees the raw features, so
    ``s(x) = −⟨w, z(x)⟩`` with ``w = Σ_i α_i sv_i``.

    ``state()``: ``coef`` ``[D]`` (``w``), ``support_vectors`` ``[S, D]``, ``dual_coef`` ``[S]``,
    ``offset`` (scalar, not needed for the score).
    """

    name = "locsvm"
    normalize = False

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a @ b.T

    def _libsvm_kernel(self) -> dict[str, Any]:
        return {"kernel": "linear"}

    def _fit(self, train: np.ndarray) -> None:
        super()._fit(train)
        self._coef = self._alpha @ self._sv

    def _score(self, test: np.ndarray) -> np.ndarray:
        return -(test @ self._coef)

    def _state(self) -> dict[str, Any]:
        return {**self._svm_state(), "coef": self._coef}


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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, accurate also for probabilities near 1.

    The usual ``x − max − log Σ exp(x − max)`` rounds ``log(1 + tiny)`` to 0 for a very confident
    class. Taking the max term out of the sum and using ``log1p`` keeps that tiny mass, so
    confident inliers are not tied in ``dscore``.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    top = np.argmax(shifted, axis=-1)[..., None]
    np.put_along_axis(weights, top, 0.0, axis=-1)
    return shifted - np.log1p(weights.sum(axis=-1, keepdims=True))


def rotation_scores(view_logits: Any) -> dict[str, np.ndarray]:
    """Anomaly scores of a rotation classifier (the reference's ``logit.auc``/``dscore.auc``).

    Args:
      view_logits: ``[V, N, V]`` float logits; ``view_logits[k]`` are the classifier's logits for
        the test images rotated by ``k·90°`` (view 0 is the un-rotated image).

    Returns:
      ``{"logit": [N], "dscore": [N]}`` float64, higher = more anomalous:
      ``logit = 1 − p(0 | x)`` (reference) and ``dscore = −Σ_k log p(k | rot_k x)``. The
      reference's ``dscore`` is ``1 − Π_k p(k | rot_k x)``; since ``1 − exp(−t)`` is increasing
      in ``t`` both rank test images identically (same AUROC), but the product underflows to 0
      for confidently wrong predictions, tying all of them, whereas the sum of logs does not.

    Raises:
      EvaluationInputError: on a shape other than ``[V, N, V]`` or non-finite logits.
    """
    logits = np.asarray(view_logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[0] != logits.shape[2] or logits.shape[1] == 0:
        raise EvaluationInputError(
            f"view_logits must have shape [num_views, num_samples, num_views], got {logits.shape}"
        )
    if not np.all(np.isfinite(logits)):
        raise EvaluationInputError("view_logits contain NaN/inf; only finite logits can be scored")
    log_p = _log_softmax(logits)
    views = np.arange(logits.shape[0])
    log_p_correct = log_p[views, :, views]  # [V, N]: log p(k | rot_k x)
    return {
        # expm1 gives 1 − p accurately when p is close to 1.
        "logit": -np.expm1(log_p[0, :, 0]),
        "dscore": -log_p_correct.sum(axis=0),
    }
