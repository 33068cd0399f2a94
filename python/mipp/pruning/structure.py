"""Which channels of a model are pruned together, which layers read them, and their physical removal: all
of it from Torch-Pruning's ``DependencyGraph`` (the dependency of this package for model structure).

A *group* is Torch-Pruning's pruning group rooted at the output channels (nodes) of one Linear / Conv layer:
every coupled operation (batch norm, activations, pooling, flatten, concatenation, depthwise convolutions,
residual additions) loses the same channels with it. Within a group, the *consumers* are the Linear /
Conv layers whose input channels shrink while their outputs do not: they read the group's nodes by weight,
and they are what a MIPP decision preserves (their pre-activations are the target) and what the
least-squares re-fit adjusts. Torch-Pruning maps each node to the consumer's input indices (a Flatten
turns one channel into H*W features, a concatenation shifts them), so every group kind is handled alike.

A group is decided by MIPP when it has at least one consumer and none of these holds (the reason is kept):
its channels reach the model output (the output layer is never pruned); several Linear / Conv layers
produce it (a residual stream: decided only with ``joint=True``, against all its consumers at once); a
cross-channel normalisation (LayerNorm, GroupNorm) or a consumer that is not a Linear / Conv with
``groups=1`` reads it (their response to a removed channel is not a column of a weight matrix).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """Torch-Pruning cannot build a dependency graph for the model (or it has nothing to prune)."""


def load_torch_pruning():
    try:
        import torch_pruning
    except ImportError as exc:  # a declared dependency, but say what to do if it is missing
        raise ImportError("mipp.pruning needs Torch-Pruning: pip install torch-pruning") from exc
    return torch_pruning


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Every module in eval mode inside the block; afterwards each module gets back its own mode (a model
    in train mode with frozen, eval-mode batch norms stays exactly so)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@dataclass
class Consumer:
    name: str  # module name of a Linear / Conv layer that reads the group's nodes
    kind: str  # "linear" or "conv"
    columns: list[list[int]]  # per node: the consumer's input channels (features) that carry it


def _per_node(item, n_nodes: int) -> list[list[int]]:
    """A Torch-Pruning group item's indices, grouped by the node (root index) they belong to."""
    out: list[list[int]] = [[] for _ in range(n_nodes)]
    for idx, root_idx in zip(item.idxs, item.root_idxs):
        out[int(root_idx)].append(int(idx))
    return out


@dataclass
class Group:
    name: str  # module name of the root Linear / Conv (its output channels are the nodes)
    n_nodes: int
    consumers: list[Consumer] = field(default_factory=list)
    members: list[str] = field(default_factory=list)  # named modules pruned with the group
    producers: dict[str, list[list[int]]] = field(default_factory=dict)  # Linear / Conv -> per node its outputs
    prunable: bool = True
    reason: str = ""  # why not prunable
    coupled: bool = False  # a residual stream (several producers): decided only with joint=True


@dataclass
class Structure:
    groups: dict[str, Group]  # in execution order of the root layers
    signature: dict[str, tuple]  # module name -> (type, parameter shapes): detects a changed model
    order: list[str] = field(default_factory=list)  # Linear / Conv module names in execution order

    @property
    def prunable(self) -> list[str]:
        return [name for name, g in self.groups.items() if g.prunable]

    def check_model(self, model: nn.Module) -> None:
        """Raise when ``model`` does not have the structure this analysis was made on."""
        now = signature(model)
        changed = [name for name in self.signature if now.get(name) != self.signature[name]]
        if changed or set(now) != set(self.signature):
            detail = changed[:3] or sorted(set(now) ^ set(self.signature))[:3]
            raise ValueError(
                f"the model's structure differs from the one the selection was made on (e.g. "
                f"{detail}); a selection applies only to the unpruned model it was made on"
            )


def signature(model: nn.Module) -> dict[str, tuple]:
    """Module name -> (type, parameter names and shapes); a torch.nn.utils.prune mask (weight_orig) counts
    as the parameter it masks, so a masked model has its unmasked original's signature."""
    return {
        name: (
            type(m).__name__,
            tuple(
                sorted(
                    (p_name.removesuffix("_orig"), tuple(p.shape)) for p_name, p in m.named_parameters(recurse=False)
                )
            ),
        )
        for name, m in model.named_modules()
        if name
    }


def _pruning_hooks(model: nn.Module):
    from torch.nn.utils import prune as torch_prune

    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                yield m, hook._tensor_name


def clone_model(model: nn.Module, unmask: bool = False) -> nn.Module:
    """A deep copy of ``model``, also when it carries torch.nn.utils.prune masks (whose computed ``weight``
    deepcopy refuses); ``unmask``: make the copy's masks permanent (plain parameters, masked entries 0)."""
    memo = {id(getattr(m, name)): getattr(m, name).detach().clone() for m, name in _pruning_hooks(model)}
    copied = copy.deepcopy(model, memo)
    if unmask:
        from torch.nn.utils import prune as torch_prune

        for m, name in list(_pruning_hooks(copied)):
            torch_prune.remove(m, name)
    return copied


def execution_order(model: nn.Module, example) -> list[str]:
    """Names of the Linear / Conv modules in the order a forward pass calls them (first call)."""
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module, inputs, output):
        name = names[module]
        if name not in order:
            order.append(name)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with eval_mode(model), torch.no_grad():
            run_model(model, example)
    finally:
        for h in handles:
            h.remove()
    return order


def run_model(model: nn.Module, batch):
    """Call the model on a batch: a tensor, or a tuple/list of positional tensors, or a dict of keywords."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _output_shapes(out) -> list[tuple]:
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [s for o in out for s in _output_shapes(o)]
    return []


def build_graph(model: nn.Module, example):
    """Torch-Pruning's dependency graph of ``model`` traced on ``example`` (eval semantics, modes kept)."""
    tp = load_torch_pruning()
    try:
        with eval_mode(model), torch.enable_grad():  # Torch-Pruning traces through autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # Torch-Pruning raises many types while tracing
        raise UnsupportedModelError(
            f"Torch-Pruning could not build a dependency graph of {type(model).__name__}: {type(exc).__name__}: {exc}"
        ) from exc


def analyse(model: nn.Module, example, joint: bool = False) -> Structure:
    """The pruning groups of ``model`` (rooted at Linear / Conv layers), their consumers and whether MIPP
    decides them; ``example`` is a small input batch (a tensor, a tuple of tensors or a dict)."""
    load_torch_pruning()
    dg = build_graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    order = execution_order(model, example)
    with eval_mode(model), torch.no_grad():
        out_shapes = _output_shapes(run_model(model, example))
    groups: dict[str, Group] = {}
    for tp_group in dg.get_all_groups(root_module_types=(nn.Linear, nn.modules.conv._ConvNd)):
        root = tp_group[0].dep.target.module
        group = Group(name=names[root], n_nodes=len(tp_group[0].idxs))
        problems: list[str] = []
        norms: list[str] = []  # cross-channel normalisations in the group
        for item in tp_group:
            module, handler = item.dep.target.module, item.dep.handler
            if not isinstance(module, nn.Module) or module not in names:
                continue  # Torch-Pruning's own element-wise / reshape / concat nodes
            name = names[module]
            if name not in group.members:
                group.members.append(name)
            is_in = dg.is_in_channel_pruning_fn(handler)
            depthwise = (
                isinstance(module, nn.modules.conv._ConvNd)
                and module.groups > 1
                and module.groups == module.in_channels == module.out_channels
            )
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                norms.append(name)
            elif isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and not depthwise:
                if not is_in:
                    group.producers[name] = _per_node(item, group.n_nodes)
                elif isinstance(module, nn.Linear) or module.groups == 1:
                    group.consumers.append(
                        Consumer(
                            name, "linear" if isinstance(module, nn.Linear) else "conv", _per_node(item, group.n_nodes)
                        )
                    )
                else:
                    problems.append(f"the grouped convolution {name!r} (groups={module.groups}) reads it")
            elif is_in and not isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.PReLU)) and not depthwise:
                problems.append(f"{type(module).__name__} {name!r} reads it")
        if norms:
            names_ = sorted(norms)
            listed = ", ".join(names_[:3]) + (f" and {len(names_) - 3} more" if len(names_) > 3 else "")
            problems.insert(0, f"{listed} normalise{'s' if len(names_) == 1 else ''} across the channels")
        if not group.consumers:
            group.prunable, group.reason = False, "no Linear / Conv reads its channels (the output layer)"
        elif problems:
            group.prunable, group.reason = False, "; ".join(problems)
        elif len(group.producers) > 1:
            group.coupled = True
            if not joint:
                group.prunable = False
                group.reason = (
                    f"coupled: {len(group.producers)} layers produce these channels (a residual "
                    "stream, or projections multiplied together); decided only with joint=True"
                )
        if group.prunable:
            try:
                if _reaches_output(model, example, tp_group, out_shapes):
                    group.prunable, group.reason = False, "its channels reach the model output"
            except Exception as exc:  # e.g. a reshape into attention heads that one channel less breaks
                group.prunable = False
                group.reason = f"removing a node breaks the forward pass ({type(exc).__name__}: {exc})"[:200]
        groups[group.name] = group
    rank = {name: i for i, name in enumerate(order)}
    for key in list(groups):
        # a group is named by its first producer in execution order (Torch-Pruning's root is arbitrary)
        group = groups.pop(key)
        if group.producers:
            group.name = min(group.producers, key=lambda n: rank.get(n, len(rank)))
        groups[group.name] = group
    ordered = dict(sorted(groups.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    if not ordered:
        has_layers = any(isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) for m in model.modules())
        raise UnsupportedModelError(
            f"Torch-Pruning found no pruning group in {type(model).__name__}: its dependency graph follows "
            "autograd from the Linear / Conv layers to the output, and this model's output has no such path "
            "(e.g. an argmax or a detached output)"
            if has_layers
            else f"{type(model).__name__} has no Linear / Conv layer to prune"
        )
    return Structure(ordered, signature(model), order)


def _reaches_output(model: nn.Module, example, tp_group, out_shapes: list[tuple]) -> bool:
    """Whether removing one node of the group changes the shape of the model's output (tried on a copy)."""
    trial = clone_model(model, unmask=True)
    dg = build_graph(trial, example)
    root = dict(trial.named_modules())[_module_name(model, tp_group[0].dep.target.module)]
    dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, idxs=[0]).prune()
    with eval_mode(trial), torch.no_grad():
        return _output_shapes(run_model(trial, example)) != out_shapes


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise KeyError(module)


def removed_nodes(structure: Structure, keep: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Per decided group, the nodes not in ``keep``."""
    out = {}
    for name, idx in keep.items():
        kept = set(idx.tolist())
        out[name] = [i for i in range(structure.groups[name].n_nodes) if i not in kept]
    return out


def producer_channels(structure: Structure, removed: dict[str, list[int]]) -> dict[str, list[int]]:
    """Removed nodes of each group -> the output channels of the group's named producer that carry them."""
    return {
        name: sorted(j for i in idxs for j in structure.groups[name].producers[name][i])
        for name, idxs in removed.items()
    }


def prune_groups(model: nn.Module, example, removed: dict[str, list[int]]) -> nn.Module:
    """In place: remove the listed output channels of each group's named producer through Torch-Pruning."""
    dg = build_graph(model, example)
    modules = dict(model.named_modules())
    for name, idxs in removed.items():
        if not idxs:
            continue
        root = modules[name]
        pruner = dg.get_pruner_of_module(root)
        dg.get_pruning_group(root, pruner.prune_out_channels, idxs=sorted(int(i) for i in idxs)).prune()
    return model
