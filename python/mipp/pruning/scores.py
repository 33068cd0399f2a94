"""Baseline selections, for comparisons at the same sparsity. Every baseline is a :class:`Selection` on the
same structure, so it gets the same mean fold or least-squares re-fit and the same fine-tuning.

At a selection's per-group counts (``keep_top``): random; L1 magnitude; Taylor (Torch-Pruning's
importance); OBD (diagonal Fisher saliency 1/2 theta^2 E[g^2], per-sample gradients from torch.func);
SynFlow (Tanaka et al. 2020) and GraSP (Wang et al. 2020), unstructured scores made structured by the MIPP
paper's rule: a node's score is the L1 norm of the scores of all weights attached to it (the rows it
produces and the columns its consumers read, batch-norm parameters included); ThiNet (Luo et al. 2017:
greedily remove the channel whose removal adds least to the squared error of the next layer's output,
with every output position instead of a sample of them); and the least-squares screen alone (MIPP's
closed-form order without its KSG decisions). SynFlow and GraSP also as global rankings of their own
(``global_keep``), which can collapse a layer; the collapse is reported.
"""

from __future__ import annotations

import functools
import operator

import torch
from torch import nn

from mipp.pruning.criteria import Criterion, ScreenCriterion, ThiNetCriterion
from mipp.pruning.selection import Selection
from mipp.pruning.structure import build_graph, clone_model, eval_mode, load_torch_pruning
from mipp.pruning.walk import select_with


def keep_top(selection: Selection, scores: dict[str, torch.Tensor]) -> Selection:
    """A selection with ``selection``'s per-group counts keeping the highest-scoring nodes."""
    return selection.with_keep(
        {name: scores[name].topk(len(idx)).indices.sort().values for name, idx in selection.keep.items()}
    )


def random_scores(selection: Selection, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: torch.rand(selection.structure.groups[name].n_nodes, generator=generator) for name in selection.keep}


def l1_scores(selection: Selection, model: nn.Module) -> dict[str, torch.Tensor]:
    """L1 norm of each node's incoming weights in its root layer (a conv channel's filter norm; an attention
    head's rows of the root projection)."""
    modules = dict(model.named_modules())
    out = {}
    for name in selection.keep:
        rows = modules[name].weight.detach().abs().flatten(1).sum(dim=1).cpu()
        nodes = selection.structure.groups[name].producers.get(name)
        out[name] = rows if nodes is None else torch.stack([rows[c].sum() for c in nodes])
    return out


def taylor_scores(
    selection: Selection, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn=nn.functional.cross_entropy
) -> dict[str, torch.Tensor]:
    """Torch-Pruning's first-order Taylor importance of each group (all its coupled layers) from the gradient
    of the loss on (x, target)."""
    tp = load_torch_pruning()
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
        group = dg.get_pruning_group(
            root,
            dg.get_pruner_of_module(root).prune_out_channels,
            idxs=list(range(selection.structure.groups[name].n_nodes)),
        )
        out[name] = imp(group).detach().cpu()
    return out


def at_counts(
    selection: Selection, criterion: Criterion, model: nn.Module, inputs, n_samples: int = 1000, joint: bool = False
) -> Selection:
    """``criterion`` (with ``counts=``) choosing ``selection``'s per-group counts, from the output back."""
    gen = torch.Generator().manual_seed(0)

    def decide(layer, bar):
        return criterion.decide(layer, tolerance=0.0, min_keep=1, generator=gen, bar=bar)

    chosen = select_with(
        model, inputs, decide, n_samples=n_samples, joint=joint, include=lambda g: g.name in selection.keep
    )
    return selection.with_keep(chosen.keep)


def screen_selection(
    selection: Selection, model: nn.Module, inputs, n_samples: int = 1000, ridge: float = 1e-9
) -> Selection:
    """The least-squares screen alone at ``selection``'s per-group counts: in every group, from the output
    back, greedy removal by ||W_i||^2 Var(x_i | rest) with rank-one updates (ScreenCriterion; channel noise
    equal to the consumers' pre-activation variance)."""
    counts = selection.counts
    joint = any(selection.structure.groups[n].coupled for n in counts)
    return at_counts(selection, ScreenCriterion(counts, noise=1.0, ridge=ridge), model, inputs, n_samples, joint)


def attached_scores(
    selection: Selection, model: nn.Module, param_scores: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per group, each node's L1 norm of the scores of the weights attached to it (``param_scores``: parameter
    name -> a score tensor of the parameter's shape): for every module of the group, the output rows of a
    layer that produces the nodes and the input columns of a layer that reads them."""
    dg = build_graph(model, selection.example)
    names = {p: n for n, p in model.named_parameters()}
    modules = dict(model.named_modules())
    out = {}
    for name in selection.keep:
        root = modules[name]
        n = selection.structure.groups[name].n_nodes
        group = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, idxs=list(range(n)))
        score = torch.zeros(n, dtype=torch.float64)
        seen = set()
        for item in group:
            module = item.dep.target.module
            is_in = dg.is_in_channel_pruning_fn(item.dep.handler)
            if not isinstance(module, nn.Module) or (id(module), is_in) in seen:
                continue
            seen.add((id(module), is_in))
            idx = torch.tensor(list(item.idxs), dtype=torch.long)
            root_idx = torch.tensor([int(r) for r in item.root_idxs], dtype=torch.long)
            for p in module.parameters(recurse=False):
                s = param_scores.get(names.get(p, ""))
                if s is None:
                    continue
                s = s.detach().abs().double().cpu()
                if is_in:
                    if (
                        isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
                        and p.dim() >= 2
                        and getattr(module, "groups", 1) == 1
                    ):
                        score.index_add_(0, root_idx, s.transpose(0, 1)[idx].flatten(1).sum(1))
                elif p.shape[0] > int(idx.max()):
                    score.index_add_(0, root_idx, s[idx].reshape(len(idx), -1).sum(1))
        out[name] = score
    return out


def synflow_scores(selection: Selection, model: nn.Module) -> dict[str, torch.Tensor]:
    """SynFlow: |theta * dR/dtheta| with R the output sum of the network with absolute weights on an all-ones
    input (data-free; float64; batch norms in eval mode)."""
    net = clone_model(model, unmask=True).double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    ex = selection.example
    with eval_mode(net):
        net.zero_grad()
        net(torch.ones_like(ex[:1], dtype=torch.float64)).sum().backward()
    return attached_scores(
        selection, model, {n: p.detach() * p.grad for n, p in net.named_parameters() if p.grad is not None}
    )


def grasp_scores(
    selection: Selection, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn=nn.functional.cross_entropy
) -> dict[str, torch.Tensor]:
    """GraSP: theta * Hg, with g the loss gradient and Hg its Hessian-vector product (double backward) on
    (x, target); its magnitude summed over each node's attached weights."""
    net = clone_model(model, unmask=True)
    params = [p for p in net.parameters() if p.requires_grad]
    with eval_mode(net):
        g = torch.autograd.grad(loss_fn(net(x), target), params, create_graph=True)
        hg = torch.autograd.grad(functools.reduce(operator.add, ((gi * gi.detach()).sum() for gi in g)), params)
    names = {id(p): n for n, p in net.named_parameters()}
    return attached_scores(selection, model, {names[id(p)]: p.detach() * h for p, h in zip(params, hg)})


def obd_scores(
    selection: Selection, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn=nn.functional.cross_entropy
) -> dict[str, torch.Tensor]:
    """Optimal Brain Damage with the diagonal Fisher as the Hessian: 1/2 theta^2 E[g^2] from per-sample
    gradients (torch.func.vmap over grad), summed over each node's attached weights."""
    from torch.func import functional_call, grad, vmap

    net = clone_model(model, unmask=True)
    params = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b for n, b in net.named_buffers()}

    def loss_one(p, xi, ti):
        return loss_fn(functional_call(net, (p, buffers), (xi[None],)), ti[None])

    with eval_mode(net):
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        for xb, tb in zip(x.split(128), target.split(128)):
            per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, xb, tb)
            for n in fisher:
                fisher[n] += per_sample[n].pow(2).sum(0)
    return attached_scores(selection, model, {n: 0.5 * params[n] ** 2 * fisher[n] / len(x) for n in params})


def thinet_selection(selection: Selection, model: nn.Module, inputs, n_samples: int = 1000) -> Selection:
    """ThiNet at ``selection``'s per-group counts, output side first (the next layer's kept outputs)."""
    return at_counts(selection, ThiNetCriterion(selection.counts), model, inputs, n_samples)


def global_keep(
    selection: Selection, scores: dict[str, torch.Tensor], sparsity: float, min_keep: int = 1
) -> tuple[Selection, list[str]]:
    """A method's own budget: remove the globally lowest-scoring ``sparsity`` fraction of all decided groups'
    nodes. Returns the selection and the groups that collapsed (would have kept no node; they keep their
    ``min_keep`` best so the network still runs)."""
    names = list(selection.keep)
    flat = torch.cat([scores[n].double() for n in names])
    total = len(flat)
    n_remove = round(sparsity * total)
    order = flat.argsort()[n_remove:]
    owner = torch.cat([torch.full((len(scores[n]),), j) for j, n in enumerate(names)])
    offset = {n: sum(len(scores[m]) for m in names[:j]) for j, n in enumerate(names)}
    keep, collapsed = {}, []
    for j, n in enumerate(names):
        mine = (order[owner[order] == j] - offset[n]).sort().values
        if len(mine) == 0:
            collapsed.append(n)
            mine = scores[n].topk(min(min_keep, len(scores[n]))).indices.sort().values
        keep[n] = mine
    return selection.with_keep(keep), collapsed
