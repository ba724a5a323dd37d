"""Gaussian density estimation (GDE): one full-covariance Gaussian on normalised features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import linalg as sp_linalg

from deep_representation_one_class.evaluation.scorers.base import (
    EvaluationInputError,
    Scorer,
    _tf_normalize,
)

PLUGIN = dict(
    kind="scorer",
    name="gde",
    description="Gaussian density (one full-covariance Gaussian)",
    tasks=["image", "patches"],
    default_for=["train", "export", "patches"],
    impl="GdeScorer",
)


class GdeScorer(Scorer):
    """Gaussian density estimate (one full-covariance Gaussian): ``s = −log N(z̄; μ, Σ)``.

    Reference behaviour: sklearn ``GaussianMixture(n_components=1, covariance_type='full')`` with
    ``reg_covar=1e-6``. With one component, EM converges to the closed-form MLE (mean and
    covariance divided by N, plus ``reg_covar`` on the diagonal) after the first M-step, so the
    closed form is used: a Cholesky factor ``Σ = L Lᵀ`` gives the precision factor ``U = L⁻ᵀ``,
    ``maha = ‖(z̄ − μ)U‖²`` and ``log det Σ = 2 Σ log diag L``, without ever inverting Σ directly.

    ``state()``: ``mean`` ``[D]``, ``precision`` ``[D, D]`` (Σ⁻¹), ``precision_cholesky``
    ``[D, D]`` (upper ``U`` with ``UUᵀ = Σ⁻¹``) and ``log_norm`` (scalar
    ``½(D log 2π + log det Σ)``), so ``s = ½‖(z̄−μ)U‖² + log_norm``.
    """

    tf_state = ("mean", "precision_cholesky", "log_norm")

    def __init__(self, reg_covar: float = 1e-6) -> None:
        super().__init__()
        if not reg_covar >= 0:
            raise EvaluationInputError(f"reg_covar must be >= 0, got {reg_covar}")
        self.reg_covar = float(reg_covar)

    def params(self) -> dict[str, Any]:
        return {"reg_covar": self.reg_covar}

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

    def _state_keys(self) -> tuple[str, ...]:
        return ("mean", "precision_cholesky", "log_norm")

    def _state(self) -> dict[str, Any]:
        return {
            "mean": self._mean,
            "precision": self._prec_chol @ self._prec_chol.T,
            "precision_cholesky": self._prec_chol,
            "log_norm": self._log_norm,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        # Σ⁻¹ itself is derived from its Cholesky factor; the file keeps only the factor.
        return {k: v for k, v in self.state().items() if k != "precision"}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._mean = np.asarray(state["mean"], np.float64)
        self._prec_chol = np.asarray(state["precision_cholesky"], np.float64)
        self._log_norm = float(state["log_norm"])

    @staticmethod
    def tf_score(state, feats):
        import tensorflow as tf

        # The Cholesky factor U of the precision is better conditioned than Σ⁻¹ itself.
        y = tf.matmul(_tf_normalize(feats) - state["mean"], state["precision_cholesky"])
        return 0.5 * tf.reduce_sum(tf.square(y), axis=1) + state["log_norm"]
