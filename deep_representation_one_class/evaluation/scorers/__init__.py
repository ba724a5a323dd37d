"""One-class scorers over fixed feature vectors (the classifiers of the reference's ``eval_embed``).

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

from deep_representation_one_class.evaluation.scorers.bank import KdeScorer, NearestNeighborScorer
from deep_representation_one_class.evaluation.scorers.base import (
    SCORERS,
    EvaluationInputError,
    Scorer,
    as_features,
    gamma_rule,
    l2_normalize,
    make_scorer,
)
from deep_representation_one_class.evaluation.scorers.gde import GdeScorer
from deep_representation_one_class.evaluation.scorers.ocsvm import (
    GRAM_MAX_BYTES,
    LinearOcsvmScorer,
    RbfOcsvmScorer,
)
from deep_representation_one_class.evaluation.scorers.rotation import rotation_scores

__all__ = [
    "GRAM_MAX_BYTES",
    "SCORERS",
    "EvaluationInputError",
    "GdeScorer",
    "KdeScorer",
    "LinearOcsvmScorer",
    "NearestNeighborScorer",
    "RbfOcsvmScorer",
    "Scorer",
    "as_features",
    "gamma_rule",
    "l2_normalize",
    "make_scorer",
    "rotation_scores",
]
