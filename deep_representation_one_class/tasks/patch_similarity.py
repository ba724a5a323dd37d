"""KDE and 1-NN scores of patch windows against the bank, in float32 TensorFlow.

Split from ``patch_dense.py``: the scorers' fast paths for ~10^5 test windows against a
~10^4-window bank.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deep_representation_one_class.evaluation import scorers as scorers_lib

__all__ = ["_SharedSimilarity", "_SimilarityScorer", "_share_similarities"]

# Test rows per similarity block of KDE/1-NN: [rows, bank] float32, 40 MB for a 20k bank.
_SCORER_ROWS = 512


class _SimilarityScorer:
    """KDE and 1-NN scores from a fitted registry scorer's ``state()``, in float32 TensorFlow.

    The registry's numpy versions compute the [test, bank] cosine block in float64, which for
    ~10^5 test windows against a 10^4-window bank is the slowest step of the evaluation; a
    float32 matmul and ``reduce_logsumexp`` (multi-threaded) give the same scores to about 1e-5
    relative error, ~10x faster. Formulas as in ``evaluation.scorers``: KDE
    ``-(1/γ)·logsumexp_j(2γ⟨z̄, z̄_j⟩)``, 1-NN ``1 - max_j ⟨z̄, z̄_j⟩``.
    """

    def __init__(self, kind: str, scorer: scorers_lib.Scorer):
        state = scorer.state()
        self.kind = kind
        self.bank = tf.constant(np.asarray(state["bank"], np.float32))
        self.gamma = float(state["gamma"]) if kind == "kde" else 0.0
        self._block = tf.function(self._block_fn, reduce_retracing=True)

    def _block_fn(self, x):
        sims = tf.matmul(
            tf.math.l2_normalize(x, axis=1, epsilon=1e-24), self.bank, transpose_b=True
        )
        if self.kind == "kde":
            return -tf.reduce_logsumexp((2.0 * self.gamma) * sims, axis=1) / self.gamma
        return 1.0 - tf.reduce_max(sims, axis=1)

    def score(self, feats: np.ndarray) -> np.ndarray:
        x = np.asarray(feats, np.float32)
        out = [self._block(x[i : i + _SCORER_ROWS]).numpy() for i in range(0, len(x), _SCORER_ROWS)]
        return np.concatenate(out).astype(np.float64)


class _SharedSimilarity:
    """KDE and 1-NN of one feature from ONE similarity block per row chunk.

    Both score against the same normalised bank (the training features); computing the
    [rows, bank] cosine block once for both halves the dominant matmul of their scoring.
    Same formulas, and the same float32 numbers, as two ``_SimilarityScorer``.
    """

    def __init__(self, kde: _SimilarityScorer, nn: _SimilarityScorer):
        del nn  # the same bank (checked by the caller); 1-NN has no parameter
        self.bank = kde.bank
        self.gamma = kde.gamma
        self._block = tf.function(self._block_fn, reduce_retracing=True)

    def _block_fn(self, x):
        sims = tf.matmul(
            tf.math.l2_normalize(x, axis=1, epsilon=1e-24), self.bank, transpose_b=True
        )
        kde = -tf.reduce_logsumexp((2.0 * self.gamma) * sims, axis=1) / self.gamma
        return kde, 1.0 - tf.reduce_max(sims, axis=1)

    def score(self, feats: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(feats, np.float32)
        kde, nn = [], []
        for i in range(0, len(x), _SCORER_ROWS):
            a, b = self._block(x[i : i + _SCORER_ROWS])
            kde.append(a.numpy())
            nn.append(b.numpy())
        return {
            "kde": np.concatenate(kde).astype(np.float64),
            "auc": np.concatenate(nn).astype(np.float64),
        }


def _share_similarities(fitted: dict) -> dict[str, _SharedSimilarity]:
    """{feature: shared block} where a feature's KDE and 1-NN use the same bank."""
    shared = {}
    for f in {f for f, _ in fitted}:
        kde, nn = fitted.get((f, "kde")), fitted.get((f, "auc"))
        both = isinstance(kde, _SimilarityScorer) and isinstance(nn, _SimilarityScorer)
        if both and kde.bank.shape == nn.bank.shape and bool(tf.reduce_all(kde.bank == nn.bank)):
            shared[f] = _SharedSimilarity(kde, nn)
    return shared
