"""One-class SVMs (RBF kernel on normalised features, linear on raw features), on sklearn."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.svm import OneClassSVM

from deep_representation_one_class.evaluation.scorers.base import (
    EvaluationInputError,
    Scorer,
    _check_positive_int,
    _row_chunks,
    _subsample,
    _tf_normalize,
    gamma_rule,
)

# Largest float64 Gram matrix (train x train) the OC-SVMs precompute: 2 GiB, i.e. up to ~16k
# training samples. Bigger sets fall back to libsvm's own kernel evaluation.
GRAM_MAX_BYTES = 2 * 1024**3

# Image tasks only: the fit is quadratic in the training set (a patch bank is too big).
PLUGIN = [
    dict(
        kind="scorer",
        name="kocsvm",
        aliases=["ocsvm_rbf"],
        description="RBF one-class SVM",
        tasks=["image"],
        default_for=["train", "export"],
        impl="RbfOcsvmScorer",
    ),
    dict(
        kind="scorer",
        name="locsvm",
        aliases=["ocsvm_linear"],
        description="linear one-class SVM on raw features",
        tasks=["image"],
        default_for=["train"],
        impl="LinearOcsvmScorer",
    ),
]


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

    def params(self) -> dict[str, Any]:
        return {
            "nu": self.nu,
            "max_train": self.max_train,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
            "gram_max_bytes": self.gram_max_bytes,
        }

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``[len(a), len(b)]`` float64 kernel matrix."""
        raise NotImplementedError

    def _libsvm_kernel(self) -> dict[str, Any]:
        """``OneClassSVM`` kernel arguments equivalent to ``_kernel``."""
        raise NotImplementedError

    def _prepare(self, train: np.ndarray) -> None:
        """Sets kernel parameters from the whole (normalised) train set before subsampling."""

    def _solve(self, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(support vectors [S, D] float64, dual coefficients [S], offset) of the fit."""
        self._prepare(train)
        x = _subsample(train, self.max_train, self.seed)
        self.used_precomputed = x.shape[0] ** 2 * 8 <= self.gram_max_bytes
        if self.used_precomputed:
            svm = OneClassSVM(kernel="precomputed", nu=self.nu).fit(self._kernel(x, x))
            sv = x[svm.support_]
        else:
            svm = OneClassSVM(nu=self.nu, cache_size=1024, **self._libsvm_kernel()).fit(x)
            sv = np.asarray(svm.support_vectors_, dtype=np.float64)
        return sv, np.asarray(svm.dual_coef_[0], dtype=np.float64), float(svm.offset_[0])


class RbfOcsvmScorer(_OcsvmScorer):
    """RBF one-class SVM on normalised features, ``γ = gamma_rule(Z̄_tr)``, ``ν = 0.5``.

    ``s(x) = −Σ_i α_i exp(−γ‖z̄(x) − sv_i‖²)`` (= ``−score_samples``). ``γ`` is computed on the
    whole normalised train set, so it is the same ``γ`` as ``kde`` even when ``max_train``
    subsamples the SVM's fit set.

    ``state()``: ``support_vectors`` ``[S, D]``, ``dual_coef`` ``[S]`` (the α_i),
    ``gamma`` (scalar) and ``offset`` (scalar, sklearn's ``offset_``; not needed for the score).
    """

    tf_state = ("support_vectors", "dual_coef", "gamma")

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

    def params(self) -> dict[str, Any]:
        return {**super().params(), "gamma_factor": self.gamma_factor}

    def _prepare(self, train: np.ndarray) -> None:
        self._gamma = gamma_rule(train, self.gamma_factor)

    def _fit(self, train: np.ndarray) -> None:
        sv, alpha, offset = self._solve(train)
        self._set_state(
            {
                "support_vectors": sv,
                "dual_coef": alpha,
                "gamma": np.asarray(self._gamma),
                "offset": np.asarray(offset),
            }
        )

    def _state_keys(self) -> tuple[str, ...]:
        return ("support_vectors", "dual_coef", "gamma", "offset")

    def _state(self) -> dict[str, Any]:
        return {
            "support_vectors": self._sv,
            "dual_coef": self._alpha,
            "gamma": self._gamma,
            "offset": self._offset,
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._sv = np.asarray(state["support_vectors"], np.float64)
        self._alpha = np.asarray(state["dual_coef"], np.float64)
        self._gamma = float(state["gamma"])
        self._offset = float(state["offset"])

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

    def _score(self, test: np.ndarray) -> np.ndarray:
        # score_samples = Σ_i α_i K(x, sv_i); the anomaly score is its negative.
        out = np.empty(test.shape[0], dtype=np.float64)
        for rows in _row_chunks(test.shape[0], self.chunk_size):
            out[rows] = -(self._kernel(test[rows], self._sv) @ self._alpha)
        return out

    @staticmethod
    def tf_score(state, feats):
        import tensorflow as tf

        z = _tf_normalize(feats)
        sv = state["support_vectors"]
        sq = (
            tf.reduce_sum(tf.square(z), axis=1, keepdims=True)
            + tf.reduce_sum(tf.square(sv), axis=1)[None, :]
            - 2.0 * tf.matmul(z, sv, transpose_b=True)
        )
        kernel = tf.exp(-state["gamma"] * tf.maximum(sq, 0.0))
        return -tf.linalg.matvec(kernel, state["dual_coef"])


class LinearOcsvmScorer(_OcsvmScorer):
    """Linear one-class SVM, ``ν = 0.5``, on UN-normalised features.

    Reference behaviour: unlike every other scorer, the linear OC-SVM sees the raw features, so
    ``s(x) = −⟨w, z(x)⟩`` with ``w = Σ_i α_i sv_i``.

    ``state()``: ``coef`` ``[D]`` (``w``), ``support_vectors`` ``[S, D]``, ``dual_coef`` ``[S]``
    and ``offset`` (scalar, not needed for the score); the saved ``arrays()`` keep ``coef`` and
    ``offset`` only.
    """

    normalize = False
    tf_state = ("coef",)

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a @ b.T

    def _libsvm_kernel(self) -> dict[str, Any]:
        return {"kernel": "linear"}

    def _fit(self, train: np.ndarray) -> None:
        sv, alpha, offset = self._solve(train)
        self._set_state({"coef": alpha @ sv, "offset": np.asarray(offset)})
        self._sv, self._alpha = sv, alpha

    def _state_keys(self) -> tuple[str, ...]:
        return ("coef", "offset")

    def _state(self) -> dict[str, Any]:
        sv = getattr(self, "_sv", np.zeros((0, self._coef.size)))
        alpha = getattr(self, "_alpha", np.zeros(0))
        return {
            "coef": self._coef,
            "offset": self._offset,
            "support_vectors": sv,
            "dual_coef": alpha,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self._coef, "offset": np.asarray(self._offset)}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._coef = np.asarray(state["coef"], np.float64)
        self._offset = float(state["offset"])

    def _score(self, test: np.ndarray) -> np.ndarray:
        return -(test @ self._coef)

    @staticmethod
    def tf_score(state, feats):
        import tensorflow as tf

        # Reference behaviour: the linear OC-SVM sees the raw (un-normalised) features.
        return -tf.linalg.matvec(tf.cast(feats, tf.float64), state["coef"])
