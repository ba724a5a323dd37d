"""Evaluation of learned representations: one-class scorers over features and their metrics.

The scorers are described in the catalog and looked up in ``SCORERS``; importing this package
pulls in numpy, scipy and scikit-learn only; TensorFlow-dependent evaluation modules (feature
extraction, callbacks) are imported from their own submodules by the code that needs them."""

from __future__ import annotations

from deep_representation_one_class.evaluation.metrics import (
    OverkillEscape,
    aupr,
    auroc,
    escape_at_overkill,
    evaluate_features,
    evaluate_rotation,
    f1_max,
    operating_point_at_overkill,
    overkill_escape,
    per_type_auroc,
    threshold_stats,
)
from deep_representation_one_class.evaluation.scorers import (
    SCORERS,
    EvaluationInputError,
    GdeScorer,
    KdeScorer,
    LinearOcsvmScorer,
    NearestNeighborScorer,
    RbfOcsvmScorer,
    Scorer,
    as_features,
    gamma_rule,
    l2_normalize,
    make_scorer,
    rotation_scores,
)

__all__ = [
    "SCORERS",
    "EvaluationInputError",
    "GdeScorer",
    "KdeScorer",
    "LinearOcsvmScorer",
    "NearestNeighborScorer",
    "OverkillEscape",
    "RbfOcsvmScorer",
    "Scorer",
    "as_features",
    "aupr",
    "auroc",
    "escape_at_overkill",
    "evaluate_features",
    "evaluate_rotation",
    "f1_max",
    "gamma_rule",
    "l2_normalize",
    "make_scorer",
    "operating_point_at_overkill",
    "overkill_escape",
    "per_type_auroc",
    "rotation_scores",
    "threshold_stats",
]
