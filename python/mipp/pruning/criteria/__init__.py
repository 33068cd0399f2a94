"""Layer criteria: how the traversal decides each group (mipp.pruning.criteria.base explains the seam).

KSGCriterion (MIPP's default: a KSG non-inferiority test through the tolerance channel), LossCriterion (the
MIPP paper's MLP loss differences), ScreenCriterion (the least-squares closed form alone) and
ThiNetCriterion (ThiNet's greedy reconstruction error, at given counts). ``CRITERIA`` maps the names that
``MIPP(estimator=...)`` accepts to their classes.
"""

from mipp.pruning.criteria.base import Criterion, Layer, LayerDecision
from mipp.pruning.criteria.greedy import ScreenCriterion, ThiNetCriterion
from mipp.pruning.criteria.ksg import KSGCriterion
from mipp.pruning.criteria.loss import LossConfig, LossCriterion

CRITERIA: dict[str, type[Criterion]] = {c.name: c for c in (KSGCriterion, LossCriterion, ScreenCriterion)}

__all__ = [
    "CRITERIA",
    "Criterion",
    "KSGCriterion",
    "Layer",
    "LayerDecision",
    "LossConfig",
    "LossCriterion",
    "ScreenCriterion",
    "ThiNetCriterion",
]
