"""The rotation classifier's own anomaly scores (not fit on features)."""

from __future__ import annotations

from typing import Any

import numpy as np

from deep_representation_one_class.evaluation.scorers.base import EvaluationInputError


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
