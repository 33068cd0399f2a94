"""MIPP: Mutual Information Preserving Pruning with KSG decisions, on Torch-Pruning's dependency graph.

from mipp.pruning import MIPP
sel = MIPP(tolerance=0.2, noise=0.01, n_samples=1000).select(model, inputs)
sel.keep                          # {group (root module name): LongTensor of kept nodes}
small = sel.apply(model, refit=inputs)   # a physically smaller copy, consumers re-fitted by least squares
sel.mask(model)                   # or torch.nn.utils.prune masks, in place (mean fold by default)
MIPP(estimator="loss", confidence=0.9).select(model, inputs)   # the paper's MLP loss-difference estimator
"""

from mipp.pruning.loss import LossConfig
from mipp.pruning.report import count_macs_params, count_params
from mipp.pruning.select import MIPP, LayerResult, Selection
from mipp.pruning.structure import Structure, UnsupportedModelError, analyse

__all__ = [
    "MIPP",
    "LayerResult",
    "LossConfig",
    "Selection",
    "Structure",
    "UnsupportedModelError",
    "analyse",
    "count_macs_params",
    "count_params",
]
