"""MIPP: Mutual Information Preserving Pruning with KSG decisions, on Torch-Pruning's dependency graph.

    from mipp.pruning import MIPP
    sel = MIPP(tolerance=0.2, noise=0.01, n_samples=1000).select(model, inputs)
    sel.keep                          # {group (root module name): LongTensor of kept nodes}
    small = sel.apply(model, refit=inputs)   # a physically smaller copy, consumers re-fitted by least squares
    sel.mask(model)                   # or torch.nn.utils.prune masks, in place (mean fold by default)
    MIPP(estimator="loss", confidence=0.9).select(model, inputs)   # the paper's MLP loss-difference estimator

Modules: structure (dependency graph, groups, surgery), capture (activation statistics), walk (the one
traversal), criteria (layer decisions: KSG, loss, screen, ThiNet), budget (tolerance search), pruner (MIPP),
selection / serialization (results, the architecture at the kept widths, their JSON), refit (mean fold,
least-squares re-fit, masks), scores (baseline importances), integrations (Torch-Pruning's pruners),
huggingface (transformers checkpoints of pruned models), report, testing (planted layers).
"""

from mipp.pruning.criteria import (
    Criterion,
    KSGCriterion,
    LossConfig,
    LossCriterion,
    ScreenCriterion,
    ThiNetCriterion,
)
from mipp.pruning.pruner import MIPP
from mipp.pruning.report import count_macs_params, count_params
from mipp.pruning.selection import LayerResult, NodeRecord, Selection, rebuild
from mipp.pruning.structure import Structure, UnsupportedModelError, analyse

__all__ = [
    "MIPP",
    "Criterion",
    "KSGCriterion",
    "LayerResult",
    "LossConfig",
    "LossCriterion",
    "NodeRecord",
    "ScreenCriterion",
    "Selection",
    "Structure",
    "ThiNetCriterion",
    "UnsupportedModelError",
    "analyse",
    "count_macs_params",
    "count_params",
    "rebuild",
]
