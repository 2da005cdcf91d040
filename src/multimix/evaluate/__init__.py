"""Evaluations the papers' claims rest on, beyond accuracy: calibration, adversarial robustness,
out-of-distribution detection and the geometry of the embedding space.

>>> from multimix.evaluate import expected_calibration_error, fgsm, pgd, auroc, fpr_at_tpr, alignment, uniformity
"""

from multimix.evaluate.calibration import (
    calibration,
    expected_calibration_error,
    reliability_diagram,
)
from multimix.evaluate.embedding import alignment, embeddings, uniformity
from multimix.evaluate.ood import OOD_SCORES, OOD_SETS, aupr, auroc, fpr_at_tpr, make_ood, ood_score
from multimix.evaluate.robustness import fgsm, pgd, robust_accuracy

__all__ = [
    "calibration",
    "expected_calibration_error",
    "reliability_diagram",
    "fgsm",
    "pgd",
    "robust_accuracy",
    "auroc",
    "aupr",
    "fpr_at_tpr",
    "ood_score",
    "OOD_SCORES",
    "OOD_SETS",
    "make_ood",
    "alignment",
    "uniformity",
    "embeddings",
]
