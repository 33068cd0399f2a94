"""Baseline selections at given per-group counts, for comparisons at the same sparsity: random, L1 magnitude,
Taylor (Torch-Pruning's importance) and the least-squares screen alone (MIPP's closed-form order without
its KSG decisions). Every baseline is a :class:`Selection` on the same structure, so it gets the same
mean fold or least-squares re-fit."""
from __future__ import annotations

import torch
from torch import nn

from mipp.pruning.decide import screen_keep
from mipp.pruning.select import Selection, walk
from mipp.pruning.structure import _tp, build_graph, clone_model, eval_mode


def keep_top(selection: Selection, scores: dict[str, torch.Tensor]) -> Selection:
    """A selection with ``selection``'s per-group counts keeping the highest-scoring nodes."""
    return selection.with_keep({name: scores[name].topk(len(idx)).indices.sort().values
                                for name, idx in selection.keep.items()})


def random_scores(selection: Selection, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: torch.rand(selection.structure.groups[name].n_nodes, generator=generator)
            for name in selection.keep}


def l1_scores(selection: Selection, model: nn.Module) -> dict[str, torch.Tensor]:
    """L1 norm of each node's incoming weights in its root layer (a conv channel's filter norm)."""
    modules = dict(model.named_modules())
    return {name: modules[name].weight.detach().abs().flatten(1).sum(dim=1).cpu() for name in selection.keep}


def taylor_scores(selection: Selection, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  loss_fn=nn.functional.cross_entropy) -> dict[str, torch.Tensor]:
    """Torch-Pruning's first-order Taylor importance of each group (all its coupled layers) from the gradient
    of the loss on (x, target)."""
    tp = _tp()
    model = clone_model(model, unmask=True)
    dg = build_graph(model, selection.example)
    with eval_mode(model):
        model.zero_grad()
        loss_fn(model(x), target).backward()
    imp = tp.importance.TaylorImportance()
    modules = dict(model.named_modules())
    out = {}
    for name in selection.keep:
        root = modules[name]
        group = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels,
                                     idxs=list(range(selection.structure.groups[name].n_nodes)))
        out[name] = imp(group).detach().cpu()
    return out


def screen_selection(selection: Selection, model: nn.Module, inputs, n_samples: int = 1000,
                     ridge: float = 1e-9) -> Selection:
    """The least-squares screen alone at ``selection``'s per-group counts: in every group, from the output
    back, greedy removal by ||W_i||^2 Var(x_i | rest) with rank-one updates (decide.screen_keep)."""
    counts = selection.counts

    def decide(group, blocks, drops, bar):
        return screen_keep(blocks, group.n_nodes, counts[group.name], ridge=ridge, drop=drops), None
    chosen = walk(model, inputs, decide, n_samples=n_samples, joint=any(
        selection.structure.groups[n].coupled for n in counts))
    return selection.with_keep(chosen.keep)
