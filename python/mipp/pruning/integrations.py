"""Drop-in backends for other pruning code: Torch-Pruning (optional dependency) and baseline selections.

Torch-Pruning's pruners turn a per-layer ratio r into a kept count int(n * (1 - r)); the float product
of a ratio of exactly (n - k) / n can fall just below k and keep k - 1 channels. ``torch_pruning_apply``
therefore prunes by explicit indices through the dependency graph, and ``torch_pruning_ratios`` gives
ratios half a channel below (n - k) / n for pruners that only take ratios: int(k + 0.5) = k exactly.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from mipp.pruning.select import Selection
from mipp.pruning.surgery import fold_means


def _tp():
    try:
        import torch_pruning
    except ImportError as exc:  # optional dependency
        raise ImportError("this needs Torch-Pruning: pip install torch-pruning") from exc
    return torch_pruning


def _out_channel_fn(tp, module: nn.Module):
    return tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels


def torch_pruning_apply(selection: Selection, model: nn.Module, example: torch.Tensor,
                        fold: bool = True) -> nn.Module:
    """A smaller deep copy of ``model`` pruned by Torch-Pruning's dependency graph with the selection's
    explicit indices (no ratio, so no truncation); ``fold`` as in :meth:`Selection.apply`."""
    tp = _tp()
    small = copy.deepcopy(model)
    means = selection.means_for(fold)
    if means is not None:
        fold_means(small, selection.plan, selection.keep, means)
    dg = tp.DependencyGraph().build_dependency(small, example_inputs=example)
    for name, idx in selection.keep.items():
        module = small.get_submodule(name)
        n = selection.plan.layers[name].n_nodes
        removed = sorted(set(range(n)) - set(idx.tolist()))
        if removed:
            dg.get_pruning_group(module, _out_channel_fn(tp, module), idxs=removed).prune()
    return small


def torch_pruning_ratios(selection: Selection, model: nn.Module) -> dict[nn.Module, float]:
    """{module: ratio} for Torch-Pruning's ``pruning_ratio_dict`` that keeps exactly the selected count."""
    out = {}
    for name, idx in selection.keep.items():
        n = selection.plan.layers[name].n_nodes
        out[model.get_submodule(name)] = (n - len(idx) - 0.5) / n
    return out


class MIPPImportance:
    """A Torch-Pruning importance (``tp.importance.Importance`` protocol: group -> per-channel scores)
    that scores kept channels 1 and removed ones 0, for use with its pruners and
    ``torch_pruning_ratios``. Unknown layers (not in the selection) score 1: they are kept."""

    def __init__(self, selection: Selection, model: nn.Module):
        self._keep = {model.get_submodule(name): idx for name, idx in selection.keep.items()}

    def __call__(self, group, **kwargs) -> torch.Tensor:
        dep, idxs = group[0]
        root_idxs = torch.as_tensor([int(i) for i in group[0].root_idxs])
        keep = self._keep.get(dep.target.module)
        if keep is None:
            return torch.ones(len(idxs))
        return torch.isin(root_idxs, keep).float()


def keep_top(selection: Selection, scores: dict[str, torch.Tensor]) -> Selection:
    """A selection with the same per-layer counts as ``selection`` keeping the highest-scoring nodes."""
    return selection.with_keep({name: scores[name].topk(len(idx)).indices.sort().values
                                for name, idx in selection.keep.items()})


def random_scores(selection: Selection, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: torch.rand(selection.plan.layers[name].n_nodes, generator=generator)
            for name in selection.keep}


def l1_scores(selection: Selection, model: nn.Module) -> dict[str, torch.Tensor]:
    """L1 norm of each node's incoming weights (filter norm for conv channels)."""
    return {name: model.get_submodule(name).weight.detach().abs().flatten(1).sum(dim=1)
            for name in selection.keep}


def taylor_scores(selection: Selection, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  loss_fn=nn.functional.cross_entropy) -> dict[str, torch.Tensor]:
    """Torch-Pruning's first-order Taylor importance (its whole dependency group) from the gradient of
    the loss on (x, target)."""
    tp = _tp()
    model = copy.deepcopy(model)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    model.zero_grad()
    loss_fn(model(x), target).backward()
    imp = tp.importance.TaylorImportance()
    out = {}
    for name in selection.keep:
        module = model.get_submodule(name)
        n = selection.plan.layers[name].n_nodes
        out[name] = imp(dg.get_pruning_group(module, _out_channel_fn(tp, module), idxs=list(range(n))))
    return out
