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
import inspect
from collections.abc import Mapping
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


@contextlib.contextmanager
def unchanged_on_error(model: nn.Module, tensors: bool = True):
    """If the block raises (any exception, KeyboardInterrupt included), ``model`` is put back exactly as it
    was: every module's attributes (parameters, buffers, submodules, hooks, torch.nn.utils.prune masks and
    their hooks, train / eval mode) and, with ``tensors``, the values of its parameters and buffers (the
    same Parameter objects, so an optimizer's references stay valid). ``tensors=False`` for blocks that
    only run the model (hooks and modes are restored, no copy of the weights is made)."""
    saved = []
    for m in model.modules():
        attrs = {k: copy.copy(v) if isinstance(v, (dict, list, set)) else v for k, v in m.__dict__.items()}
        values = {}
        if tensors:
            for store in ("_parameters", "_buffers"):
                for key, t in m.__dict__[store].items():
                    if t is not None:
                        values[(store, key)] = (t, t.detach().clone())
        saved.append((m, attrs, values))
    try:
        yield model
    except BaseException:
        with torch.no_grad():
            for m, attrs, values in saved:
                m.__dict__.clear()
                m.__dict__.update(attrs)
                for t, value in values.values():
                    t.data = value
        raise


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
class Heads:
    """A group whose nodes are attention heads: removing one removes ``head_dim`` channels of every
    projection, and the attention module's head count (``module.attr``) and head-size totals shrink."""

    module: str  # name of the attention module ("" for the model itself)
    attr: str  # its head-count attribute
    head_dim: int
    size_attrs: list[str] = field(default_factory=list)  # attributes equal to heads x head_dim


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
    heads: Heads | None = None  # set when the nodes are attention heads

    @property
    def kind(self) -> str:
        return "heads" if self.heads is not None else "channels"


@dataclass
class Structure:
    groups: dict[str, Group]  # in execution order of the root layers
    signature: dict[str, tuple]  # module name -> (type, parameter shapes): detects a changed model
    order: list[str] = field(default_factory=list)  # Linear / Conv module names in execution order

    @property
    def prunable(self) -> list[str]:
        return [name for name, g in self.groups.items() if g.prunable]

    def summary(self, limit: int | None = 20) -> str:
        """A table: one row per group (nodes, kind, consumers, and whether MIPP decides it or why not);
        ``limit``: rows shown (None: all)."""
        rows = list(self.groups.values())
        shown = rows if limit is None else rows[:limit]
        width = min(max([len(g.name) for g in shown] + [5]), 48)
        lines = [
            f"Structure: {len(rows)} groups, {len(self.prunable)} decided by MIPP, "
            f"{sum(g.n_nodes for g in rows if g.prunable)} of {sum(g.n_nodes for g in rows)} nodes",
            f"  {'group':<{width}} {'nodes':>6} {'kind':<8} {'consumers':>9}  decided",
        ]
        for g in shown:
            name = g.name if len(g.name) <= width else "..." + g.name[-(width - 3) :]
            why = "yes" if g.prunable else "no: " + _short(g.reason, 70)
            lines.append(f"  {name:<{width}} {g.n_nodes:>6} {g.kind:<8} {len(g.consumers):>9}  {why}")
        if len(shown) < len(rows):
            lines.append(f"  ... and {len(rows) - len(shown)} more groups (structure.summary(limit=None))")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def nothing_decided(self, model_name: str, decided: list[str] | None = None) -> UnsupportedModelError:
        """The error for a model none of whose groups is decided (``decided``: the groups a run chose,
        default the prunable ones), with each group's reason."""
        chosen = self.prunable if decided is None else decided
        assert not chosen
        skipped = [g for g in self.groups.values() if g.prunable]
        reasons = [f"{g.name}: {_short(g.reason, 120)}" for g in self.groups.values() if not g.prunable][:6]
        more = len(self.groups) - len(skipped) - len(reasons)
        text = f"MIPP has no group of {model_name} to decide: " + "; ".join(reasons)
        if more > 0:
            text += f"; and {more} more"
        if skipped:
            text += (
                f". {len(skipped)} prunable group(s) ({', '.join(g.name for g in skipped[:3])}) were left out "
                "by units= / groups="
            )
        return UnsupportedModelError(text + ". (mipp.pruning.analyse(model, example) lists every group.)")

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


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


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


def passes_positionally(model: nn.Module, batch: Mapping) -> bool:
    """Whether a Mapping batch goes to ``model`` as one positional argument (``model(batch)``, as a
    SentenceTransformer's forward takes its features dict) rather than as keywords (``model(**batch)``, as a
    Hugging Face model takes a tokenizer's output): positionally when forward's parameters do not name
    every key and it has exactly one required positional parameter, which is not a key."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if set(batch) <= named:
        return False
    required = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is inspect.Parameter.empty
    ]
    return len(required) == 1 and required[0].name not in batch


def run_model(model: nn.Module, batch):
    """Call the model on a batch: a tensor, a tuple / list of positional tensors, or a Mapping (a dict, a
    tokenizer's BatchEncoding) of keyword inputs, or one positional dict where forward takes that
    (:func:`passes_positionally`)."""
    if isinstance(batch, Mapping):
        if passes_positionally(model, batch):
            return model(dict(batch))
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def tp_example(model: nn.Module, batch):
    """``batch`` as Torch-Pruning's tracer and counter call the model with it (a plain dict for keywords,
    a 1-tuple for a positional dict): they call ``model(**dict)``, ``model(*tuple)`` or ``model(x)``."""
    if isinstance(batch, Mapping):
        return (dict(batch),) if passes_positionally(model, batch) else dict(batch)
    return batch


def describe_batch(batch) -> str:
    """Shapes and dtypes of a batch, for error messages."""
    if isinstance(batch, torch.Tensor):
        return f"{str(batch.dtype).removeprefix('torch.')} tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe_batch(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (tuple, list)):
        return "(" + ", ".join(describe_batch(v) for v in batch) + ")"
    return type(batch).__name__


def check_runs(model: nn.Module, example) -> list[tuple]:
    """Run ``model`` once on ``example`` (eval semantics, no grad) and return its output shapes; the model's
    own error, with the input's shapes and dtypes, when it fails (before any tracing)."""
    try:
        with eval_mode(model), torch.no_grad():
            return _output_shapes(run_model(model, example))
    except Exception as exc:
        raise ValueError(
            f"{type(model).__name__} fails on the inputs ({describe_batch(example)}): {type(exc).__name__}: "
            f"{exc}. Check the inputs' shape and dtype against what the model expects"[:2000]
        ) from exc


@contextlib.contextmanager
def hooks_restored(model: nn.Module):
    """Every module's forward hooks as they were after the block, also when it raises (Torch-Pruning's
    tracer leaves its hooks behind when the forward pass fails)."""
    saved = [(m, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]
    try:
        yield
    finally:
        for m, fwd, pre in saved:
            for key in [k for k in m._forward_hooks if k not in fwd]:
                del m._forward_hooks[key]
            for key in [k for k in m._forward_pre_hooks if k not in pre]:
                del m._forward_pre_hooks[key]


def _tensors(out) -> list[torch.Tensor]:
    """The tensors of a model's output, nested in dicts / tuples / lists (a SentenceTransformer's output
    also holds strings, which Torch-Pruning's tracer cannot follow)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


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
        with eval_mode(model), torch.enable_grad(), hooks_restored(model):  # Torch-Pruning traces autograd
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, forward_fn=lambda m, x: run_model(m, x), output_transform=_tensors
            )
    except Exception as exc:  # Torch-Pruning raises many types while tracing
        raise UnsupportedModelError(
            f"Torch-Pruning could not build a dependency graph of {type(model).__name__}: {type(exc).__name__}: {exc}"
        ) from exc


def analyse(model: nn.Module, example, joint: bool = False) -> Structure:
    """The pruning groups of ``model`` (rooted at Linear / Conv layers), their consumers and whether MIPP
    decides them; ``example`` is a small input batch (a tensor, a tuple of tensors or a dict)."""
    load_torch_pruning()
    out_shapes = check_runs(model, example)
    dg = build_graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    order = execution_order(model, example)
    rank = {name: i for i, name in enumerate(order)}
    groups: list[Group] = []
    for tp_group in dg.get_all_groups(root_module_types=(nn.Linear, nn.modules.conv._ConvNd)):
        group = _group(tp_group, dg, names)
        # a group is named by its first producer in execution order (Torch-Pruning's root is arbitrary)
        if group.producers:
            group.name = min(group.producers, key=lambda n: rank.get(n, len(rank)))
        if group.prunable and len(group.producers) > 1:
            group.heads = _head_spec(model, group)
            if group.heads is not None:
                group = _by_head(group)
            else:
                group.coupled = True
                if not joint:
                    group.prunable = False
                    group.reason = (
                        f"coupled: {len(group.producers)} layers produce these channels (a residual "
                        "stream, or projections multiplied together); decided only with joint=True"
                    )
        groups.append(group)
    for name, reason in _failing(model, example, [g for g in groups if g.prunable], out_shapes).items():
        group = next(g for g in groups if g.name == name)
        group.prunable, group.reason = False, reason
    ordered = {g.name: g for g in sorted(groups, key=lambda g: rank.get(g.name, len(rank)))}
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


def _group(tp_group, dg, names: dict) -> Group:
    """A Torch-Pruning group as a :class:`Group`: its producers, consumers and members, and why it cannot
    be decided (a cross-channel normalisation or an unsupported reader; no consumer: the output layer, or a
    reader Torch-Pruning does not trace, such as a matmul with a parameter)."""
    root = tp_group[0].dep.target.module
    group = Group(name=names[root], n_nodes=len(tp_group[0].idxs))
    problems: list[str] = []
    norms: list[str] = []  # cross-channel normalisations in the group
    is_output = reaches_output = read_by_parameter = False  # where channels no Linear / Conv reads go
    for item in tp_group:
        module, handler = item.dep.target.module, item.dep.handler
        if isinstance(module, nn.Parameter):  # a parameter outside any module, e.g. h @ self.w
            read_by_parameter = True
        elif type(module).__name__ == "_OutputOp":  # the model's output (or the last op before it)
            reaches_output = True
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
                node = dg.module2node.get(module)
                is_output = is_output or (node is not None and not node.outputs)  # its output is the model's
            elif isinstance(module, nn.Linear) or module.groups == 1:
                kind = "linear" if isinstance(module, nn.Linear) else "conv"
                group.consumers.append(Consumer(name, kind, _per_node(item, group.n_nodes)))
            else:
                problems.append(f"the grouped convolution {name!r} (groups={module.groups}) reads it")
        elif is_in and not isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.PReLU)) and not depthwise:
            problems.append(f"{type(module).__name__} {name!r} reads it")
    if norms:
        names_ = sorted(norms)
        listed = ", ".join(names_[:3]) + (f" and {len(names_) - 3} more" if len(names_) > 3 else "")
        problems.insert(0, f"{listed} normalise{'s' if len(names_) == 1 else ''} across the channels")
    if not group.consumers and (is_output or (reaches_output and not read_by_parameter)):
        group.prunable, group.reason = False, "no Linear / Conv reads its channels (the output layer)"
    elif not group.consumers:  # Torch-Pruning's tracer does not see the reader (its output op is the matmul)
        group.prunable, group.reason = (
            False,
            "no Linear / Conv that Torch-Pruning traces reads its channels (e.g. a matmul with a parameter)",
        )
    elif problems:
        group.prunable, group.reason = False, "; ".join(problems)
    return group


# attributes that hold an attention module's number of heads (nn.MultiheadAttention, Hugging Face, timm,
# hand-written modules), and those that hold heads x head size and shrink with it
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads")
HEAD_SIZE_ATTRS = ("all_head_size", "inner_dim", "inner_size")


def _head_spec(model: nn.Module, group: Group) -> Heads | None:
    """The attention heads behind a group of three projections (query, key, value) read by one output
    projection: the nearest module above the three projections that holds a head count H dividing the
    group's channels."""
    modules = dict(model.named_modules())
    layers = [*group.producers, *(c.name for c in group.consumers)]
    if len(group.producers) != 3 or len(group.consumers) != 1:
        return None
    if not all(isinstance(modules[n], nn.Linear) for n in layers):
        return None
    parts = [n.split(".") for n in group.producers]  # the nearest holder first: above q / k / v (BERT's
    common = []  # head count sits on its self-attention module, below the output projection's parent)
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    while True:
        owner = ".".join(common)
        module = modules[owner] if owner else model
        for attr in HEAD_COUNT_ATTRS:
            count = getattr(module, attr, None)
            if isinstance(count, int) and not isinstance(count, bool) and count > 1 and group.n_nodes % count == 0:
                size = group.n_nodes // count
                sizes = [a for a in HEAD_SIZE_ATTRS if getattr(module, a, None) == group.n_nodes]
                return Heads(owner, attr, size, sizes)
        if not common:
            return None
        common.pop()


def _by_head(group: Group) -> Group:
    """The group with one node per attention head (its head_dim channels in every layer)."""
    assert group.heads is not None
    h, size = group.n_nodes // group.heads.head_dim, group.heads.head_dim

    def merge(per_channel: list[list[int]]) -> list[list[int]]:
        return [[j for c in per_channel[i * size : (i + 1) * size] for j in c] for i in range(h)]

    group.n_nodes = h
    group.consumers = [Consumer(c.name, c.kind, merge(c.columns)) for c in group.consumers]
    group.producers = {p: merge(rows) for p, rows in group.producers.items()}
    return group


def _failing(model: nn.Module, example, candidates: list[Group], out_shapes: list[tuple]) -> dict[str, str]:
    """The groups among ``candidates`` whose one-node removal (tried on a copy) changes the model's output
    shape or breaks its forward pass, with the reason: all of them are tried at once, then halves of a
    failing set, so a model whose groups all pass costs one trial."""
    if not candidates:
        return {}
    reason = _trial(model, example, candidates, out_shapes)
    if reason is None:
        return {}
    if len(candidates) == 1:
        return {candidates[0].name: reason}
    mid = len(candidates) // 2
    return {
        **_failing(model, example, candidates[:mid], out_shapes),
        **_failing(model, example, candidates[mid:], out_shapes),
    }


def _trial(model: nn.Module, example, groups: list[Group], out_shapes: list[tuple]) -> str | None:
    trial = clone_model(model, unmask=True)
    try:
        _remove(trial, example, {g.name: g for g in groups}, {g.name: [0] for g in groups})
        with eval_mode(trial), torch.no_grad():
            changed = _output_shapes(run_model(trial, example)) != out_shapes
    except Exception as exc:  # e.g. a reshape into attention heads that one channel less breaks
        return f"removing a node breaks the forward pass ({type(exc).__name__}: {exc})"[:200]
    return "its channels reach the model output" if changed else None


def _remove(model: nn.Module, example, groups: dict[str, Group], removed: dict[str, list[int]]) -> None:
    """In place: remove the nodes ``removed[name]`` of each group through Torch-Pruning (the channels of its
    named producer; Torch-Pruning removes every coupled channel), and shrink the head counts of attention
    modules whose heads went."""
    dg = build_graph(model, example)
    modules = dict(model.named_modules())
    for name, nodes in removed.items():
        if not nodes:
            continue
        group = groups[name]
        channels = sorted(j for i in nodes for j in group.producers[name][i])
        root = modules[name]
        dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, idxs=channels).prune()
        if group.heads is not None:
            owner = modules[group.heads.module] if group.heads.module else model
            count = getattr(owner, group.heads.attr) - len(nodes)
            setattr(owner, group.heads.attr, count)
            for attr in group.heads.size_attrs:
                setattr(owner, attr, count * group.heads.head_dim)


def removed_nodes(structure: Structure, keep: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Per decided group, the nodes not in ``keep``."""
    out = {}
    for name, idx in keep.items():
        kept = set(idx.tolist())
        out[name] = [i for i in range(structure.groups[name].n_nodes) if i not in kept]
    return out


def prune_groups(model: nn.Module, example, structure: Structure, removed: dict[str, list[int]]) -> nn.Module:
    """In place: remove the nodes ``removed[group]`` of each group (Torch-Pruning removes the coupled
    channels; attention modules get their new head counts)."""
    _remove(model, example, structure.groups, removed)
    return model
