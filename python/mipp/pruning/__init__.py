"""MIPP: Mutual Information Preserving Pruning with exact KSG estimates, and its integrations.

    from mipp.pruning import MIPP
    sel = MIPP(k=3, alpha=0.05, n_permutations=100, n_samples=2000).select(model, inputs)
    sel.keep                 # {module name: LongTensor of kept output nodes}
    small = sel.apply(model) # a physically smaller copy; sel.mask(model) -> torch.nn.utils.prune masks
                             # (both fold the removed nodes' mean contributions into the next biases;
                             # fold=False does not)
"""
from mipp.pruning.graph import ModelPlan, UnsupportedModelError, build_plan
from mipp.pruning.report import count_macs, count_params
from mipp.pruning.select import MIPP, LayerResult, Selection, principal_components

__all__ = ["MIPP", "Selection", "LayerResult", "ModelPlan", "UnsupportedModelError", "build_plan",
           "count_params", "count_macs", "principal_components"]
