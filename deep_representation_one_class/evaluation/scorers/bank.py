"""Scorers that keep the normalised training features: 1-NN cosine distance and KDE."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from deep_representation_one_class.evaluation.scorers.base import (
    EvaluationInputError,
    Scorer,
    _check_positive_int,
    _row_chunks,
    _tf_normalize,
    as_features,
    gamma_rule,
    l2_normalize,
)

PLUGIN = [
    dict(
        kind="scorer",
        name="auc",  # the reference's metric name for it, not an AUROC
        aliases=["nn_cosine"],
        description="1-NN cosine distance",
        tasks=["image", "patches"],
        default_for=["train"],
        impl="NearestNeighborScorer",
    ),
    dict(
        kind="scorer",
        name="kde",
        description="Gaussian kernel density",
        tasks=["image", "patches"],
        # Second in the patch task's fallback, after GDE (the first one makes the maps).
        default_for={"train": 0, "export": 0, "patches": 1},
        impl="KdeScorer",
    ),
]


class _BankScorer(Scorer):
    """Scorers that keep the normalised training features (a bank) and score by
    chunked similarities, so peak memory is ``chunk_size x N`` floats."""

    tf_state = ("bank",)

    def __init__(self, chunk_size: int = 1024) -> None:
        super().__init__()
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")

    def params(self) -> dict[str, Any]:
        return {"chunk_size": self.chunk_size}

    def _fit(self, train: np.ndarray) -> None:
        self._bank = train
        self._bank_given = self._given

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._bank = np.asarray(state["bank"], np.float64)
        self._bank_given = self._bank

    def _state_keys(self) -> tuple[str, ...]:
        return ("bank",)

    def _state(self) -> dict[str, Any]:
        return {"bank": self._bank}

    def arrays(self) -> dict[str, np.ndarray]:
        # The training features as given (float32 from a run) instead of the normalised bank.
        extra = {k: v for k, v in self.state().items() if k != "bank"}
        return {"train_features": np.asarray(self._bank_given), **extra}

    @classmethod
    def from_arrays(cls, arrays, params, dim):
        if "train_features" not in arrays:
            raise EvaluationInputError(f"{cls.name} arrays lack train_features")
        given = np.asarray(arrays["train_features"])
        # The same computation as ``fit``: float64, then the L2 normalisation.
        bank = l2_normalize(as_features(given, f"{cls.name} train features"))
        scorer = cls.from_state({**arrays, "bank": bank}, params, dim)
        scorer._bank_given = given
        return scorer

    def _similarities(self, test: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        for rows in _row_chunks(test.shape[0], self.chunk_size):
            yield rows, test[rows] @ self._bank.T


class NearestNeighborScorer(_BankScorer):
    """1-NN cosine distance: ``s(x) = 1 − max_j ⟨z̄(x), z̄(x_j)⟩`` (the reference's ``*.auc``;
    the key is the reference's metric name, not an AUROC).

    Fix of reference bug (spec §11 item 18): the reference materialises the full test×train
    similarity matrix (about 1.6 GB for CelebA); here test rows go in chunks.

    ``state()``: ``bank`` ``[N, D]``, the normalised training features.
    """

    def _score(self, test: np.ndarray) -> np.ndarray:
        out = np.empty(test.shape[0], dtype=np.float64)
        for rows, sims in self._similarities(test):
            out[rows] = 1.0 - sims.max(axis=1)
        return out

    @staticmethod
    def tf_score(state, feats):
        import tensorflow as tf

        z = _tf_normalize(feats)
        return 1.0 - tf.reduce_max(tf.matmul(z, state["bank"], transpose_b=True), axis=1)


class KdeScorer(_BankScorer):
    """Gaussian KDE on the unit sphere, scaled as in the reference.

    ``s(x) = −(1/γ)·logsumexp_j(2γ·⟨z̄(x), z̄(x_j)⟩)`` with ``γ = gamma_rule(Z̄_tr)``. Because
    ``‖a−b‖² = 2 − 2⟨a,b⟩`` on the unit sphere this equals ``−(1/γ)·log Σ_j exp(−γ‖z̄−z̄_j‖²) − 2``,
    a negative log RBF-KDE with bandwidth ``1/√(2γ)`` up to a positive scale and a shift.

    The logsumexp subtracts each row's maximum before exponentiating: ``2γ`` is ~20 for spread
    features and much larger for concentrated ones, where a plain ``exp`` overflows.

    ``state()``: ``bank`` ``[N, D]`` (normalised train features) and ``gamma`` (scalar).
    """

    tf_state = ("bank", "gamma")

    def __init__(self, chunk_size: int = 1024, gamma_factor: float = 10.0) -> None:
        super().__init__(chunk_size)
        self.gamma_factor = float(gamma_factor)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "gamma_factor": self.gamma_factor}

    def _fit(self, train: np.ndarray) -> None:
        super()._fit(train)
        self._gamma = gamma_rule(train, self.gamma_factor)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        super()._set_state(state)
        self._gamma = float(state["gamma"])

    def _state_keys(self) -> tuple[str, ...]:
        return ("bank", "gamma")

    def _state(self) -> dict[str, Any]:
        return {"bank": self._bank, "gamma": self._gamma}

    def _score(self, test: np.ndarray) -> np.ndarray:
        gamma = self._gamma
        out = np.empty(test.shape[0], dtype=np.float64)
        for rows, sims in self._similarities(test):
            logits = (2.0 * gamma) * sims
            peak = logits.max(axis=1)
            lse = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
            out[rows] = -lse / gamma
        return out

    @staticmethod
    def tf_score(state, feats):
        import tensorflow as tf

        z = _tf_normalize(feats)
        gamma = state["gamma"]
        # reduce_logsumexp subtracts the row maximum, so large 2γ cannot overflow.
        logits = (2.0 * gamma) * tf.matmul(z, state["bank"], transpose_b=True)
        return -tf.reduce_logsumexp(logits, axis=1) / gamma
