"""Analysis tools: how far a model is from the best possible classifier, and how hard a problem is for mixup."""

from multimix.analysis.bayes import ExcessRisk, bayes_error, excess_risk
from multimix.analysis.mmlb import mmlb

__all__ = ["bayes_error", "excess_risk", "ExcessRisk", "mmlb"]
