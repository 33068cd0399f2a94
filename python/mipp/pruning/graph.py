"""Which nodes of a model can be pruned, where their activations are observed, and who consumes them.

The model is traced with ``torch.fx`` and the output of every ``nn.Linear`` / ``nn.Conv2d`` (a *producer*;
one node = one output feature or channel) is followed forward through the operations that act on each
channel separately (batch norm, element-wise activations, dropout, pooling) up to the layers that read it
(*consumers*, whose input dimension shrinks with it). Along the way:

* a ``Flatten`` (or ``flatten``/``view``/``reshape`` to ``(N, -1)``) turns one channel into ``H*W``
  consecutive features of the consumer: the *expansion* recorded with the consumer;
* a residual ``add`` ties the channels of every producer that reaches it: removing channel c of one of
  them and not of the others changes what the sum means, and removing it from all of them removes channel
  c from every block of the stage at once, which a test at one layer cannot vouch for. Such producers are
  left alone (``prunable=False`` with the reason); the channels inside the residual blocks stay prunable;
* the producer whose output reaches the model's output is the output layer and is never pruned.

Anything else on the way (a module or function whose effect on channels is not known) is an error naming
it: a silent skip would produce a model that is wrong or does not run.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

PRODUCERS = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Modules and functions that act on every channel separately and keep the channel count.
CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
                       nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d,
                       nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
CHANNELWISE_FUNCTIONS = {torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh,
                         torch.sigmoid, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                         F.adaptive_max_pool2d}
CHANNELWISE_METHODS = {"relu", "relu_", "tanh", "sigmoid", "contiguous"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
SHAPE_QUERIES = {"size", "dim"}


class UnsupportedModelError(ValueError):
    """The model contains a layer or an operation whose effect on channels the pruner does not know."""


@dataclass
class Consumer:
    name: str        # module name of the consuming Linear/Conv2d
    expansion: int   # input features per node (H*W after a Flatten, else 1)
    source: str      # fx node the consumer reads (its input; its sample mean is what surgery can fold)


@dataclass
class LayerPlan:
    name: str                      # module name of the producer
    kind: str                      # "linear" or "conv"
    n_nodes: int
    observe: str                   # fx node whose value (reduced over space) is X for this layer
    norms: list[str] = field(default_factory=list)       # batch norms sliced with the producer
    consumers: list[Consumer] = field(default_factory=list)
    prunable: bool = True
    reason: str = ""               # why not prunable


@dataclass
class ModelPlan:
    layers: dict[str, LayerPlan]   # every producer, in execution order
    output: str                    # fx node holding the model's output

    @property
    def prunable(self) -> list[str]:
        return [n for n, lp in self.layers.items() if lp.prunable]


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...) for data-dependent code
        raise UnsupportedModelError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. The pruner needs an fx-traceable "
            "forward (no Python control flow that depends on tensor values)") from exc


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
    return f"{node.op} {getattr(node.target, '__name__', node.target)!r} (fx node {node.name!r})"


def _kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """How channels flow through ``node``: producer, norm, channelwise, flatten, add, shape, output, other."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, PRODUCERS):
            return "producer"
        if isinstance(mod, NORMS):
            return "norm"
        if isinstance(mod, CHANNELWISE_MODULES):
            return "channelwise"
        if isinstance(mod, nn.Flatten):
            return "flatten"
        return "other"
    if node.op == "call_function":
        if node.target in CHANNELWISE_FUNCTIONS:
            return "channelwise"
        if node.target is torch.flatten:
            return "flatten"
        if node.target in ADD_FUNCTIONS:
            return "add"
        if node.target is getattr and node.args[1] in ("shape", "dtype", "device"):
            return "shape"
        return "other"
    if node.op == "call_method":
        if node.target in CHANNELWISE_METHODS:
            return "channelwise"
        if node.target in ("flatten", "view", "reshape"):
            return "flatten"
        if node.target in SHAPE_QUERIES:
            return "shape"
        if node.target == "add":
            return "add"
        return "other"
    if node.op == "output":
        return "output"
    return "other"


def _check_modules(gm: fx.GraphModule) -> None:
    """Every module called by the model must be one whose channel semantics are known."""
    known = PRODUCERS + NORMS + CHANNELWISE_MODULES + (nn.Flatten,)
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if not isinstance(mod, known):
            raise UnsupportedModelError(f"unsupported layer: {_describe(gm, node)}; supported are "
                                        "Linear, Conv2d, BatchNorm1d/2d, element-wise activations, "
                                        "dropout, pooling and Flatten (and residual adds)")
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            raise UnsupportedModelError(f"unsupported layer: {_describe(gm, node)} has groups={mod.groups};"
                                        " only groups=1 convolutions can be pruned channel by channel")


def _flatten_expansion(gm: fx.GraphModule, node: fx.Node, source: fx.Node) -> int:
    """Features per channel after ``node`` flattens ``source`` of shape (N, C, *spatial) to (N, -1)."""
    shape_in = source.meta["tensor_meta"].shape
    shape_out = node.meta["tensor_meta"].shape
    if len(shape_out) != 2 or shape_out[0] != shape_in[0]:
        raise UnsupportedModelError(f"{_describe(gm, node)} reshapes {tuple(shape_in)} to {tuple(shape_out)}"
                                    "; only flattening to (batch, -1) keeps channels apart")
    expansion = 1
    for s in shape_in[2:]:
        expansion *= int(s)
    return expansion


def build_plan(model: nn.Module, example: torch.Tensor) -> tuple[fx.GraphModule, ModelPlan]:
    """Trace ``model`` on ``example`` (a small batch) and return the graph module and the plan."""
    gm = trace(model)
    _check_modules(gm)
    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    gm.train(was_training)
    output_nodes = [n for n in gm.graph.nodes if n.op == "output"]
    out_arg = output_nodes[0].args[0]
    if not isinstance(out_arg, fx.Node):
        raise UnsupportedModelError("the model must return a single tensor (got a tuple/dict output)")

    layers: dict[str, LayerPlan] = {}
    for node in gm.graph.nodes:
        if _kind(gm, node) != "producer":
            continue
        mod = gm.get_submodule(node.target)
        lp = LayerPlan(name=node.target, kind="conv" if isinstance(mod, nn.Conv2d) else "linear",
                       n_nodes=mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features,
                       observe=_observation_node(gm, node).name)
        if lp.name in layers:
            raise UnsupportedModelError(f"module {lp.name!r} is called more than once (shared weights); "
                                        "its channels cannot be pruned for one call only")
        _follow(gm, node, node, 1, lp)
        layers[lp.name] = lp
    return gm, ModelPlan(layers=layers, output=out_arg.name)


def _observation_node(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """The last node of the channel-wise chain after a producer: what its consumers actually see."""
    while True:
        users = [u for u in node.users if _kind(gm, u) != "shape"]
        if len(users) != 1 or _kind(gm, users[0]) not in ("norm", "channelwise"):
            return node
        node = users[0]


def _follow(gm: fx.GraphModule, root: fx.Node, node: fx.Node, expansion: int, lp: LayerPlan) -> None:
    for user in node.users:
        kind = _kind(gm, user)
        if kind == "shape":
            continue
        if kind == "producer":
            lp.consumers.append(Consumer(user.target, expansion, node.name))
        elif kind in ("norm", "channelwise"):
            if kind == "norm":
                if expansion > 1:
                    raise UnsupportedModelError(f"{_describe(gm, user)} normalises the flattened features of "
                                                f"{lp.name!r}; only a norm over whole channels can be sliced")
                lp.norms.append(user.target)
            _follow(gm, root, user, expansion, lp)
        elif kind == "flatten":
            if expansion > 1:
                raise UnsupportedModelError(f"{_describe(gm, user)}: a second flatten of {lp.name!r}")
            _follow(gm, root, user, _flatten_expansion(gm, user, node), lp)
        elif kind == "add":
            lp.prunable = False
            lp.reason = (f"residual: channels tied by the add {user.name!r} (left alone: the stream "
                         "channel is read by every block of the stage)")
        elif kind == "output":
            lp.prunable = False
            lp.reason = lp.reason or "output layer"
        else:
            raise UnsupportedModelError(f"unsupported operation on the output of {lp.name!r}: "
                                        f"{_describe(gm, user)}")


def _reduce(value: torch.Tensor, reduce: str) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C): one value per channel (mean or max over space); (N, C) unchanged."""
    if value.dim() <= 2:
        return value.reshape(value.shape[0], -1)
    flat = value.flatten(2)
    return flat.mean(dim=2) if reduce == "mean" else flat.amax(dim=2)


class _Recorder(fx.Interpreter):
    """Runs the traced model and keeps, per wanted node, its value reduced to (N, C) in float64, and per
    node in ``mean_of`` the float64 sum over samples of its whole value (for the sample mean)."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str], reduce: str, mean_of: set[str]):
        super().__init__(gm)
        self.wanted, self.reduce, self.mean_of = wanted, reduce, mean_of
        self.store: dict[str, list[torch.Tensor]] = {name: [] for name in wanted}
        self.sums: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.wanted:
            self.store[n.name].append(_reduce(out.detach(), self.reduce).double().cpu())
        if n.name in self.mean_of:
            total = out.detach().double().sum(dim=0).cpu()
            self.sums[n.name] = total + self.sums[n.name] if n.name in self.sums else total
        return out


def iterate_inputs(inputs, n_samples: int):
    """Yield input batches (tensors) from a tensor or an iterable of batches, n_samples in total."""
    if isinstance(inputs, torch.Tensor):
        yield inputs[:n_samples]
        return
    seen = 0
    for batch in inputs:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"inputs must be a tensor or yield tensors / (tensor, ...) batches, got {type(x)}")
        x = x[: n_samples - seen]
        seen += x.shape[0]
        yield x
        if seen >= n_samples:
            return


def first_batch(inputs) -> torch.Tensor:
    return next(iter(iterate_inputs(inputs, 2)))


def record(gm: fx.GraphModule, inputs, wanted: set[str], n_samples: int, reduce: str,
           mean_of: set[str] = frozenset()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """On the first n_samples inputs, model in eval mode: the activations (N, C) float64 of the wanted fx
    nodes, and the sample means (float64, one sample's shape) of the nodes in ``mean_of``."""
    if reduce not in ("mean", "max"):
        raise ValueError(f'reduce must be "mean" or "max", got {reduce!r}')
    rec = _Recorder(gm, wanted, reduce, set(mean_of))
    was_training = gm.training
    gm.eval()
    seen = 0
    try:
        with torch.no_grad():
            device = next(gm.parameters()).device
            for x in iterate_inputs(inputs, n_samples):
                rec.run(x.to(device))
                seen += x.shape[0]
    finally:
        gm.train(was_training)
    return ({name: torch.cat(chunks) for name, chunks in rec.store.items()},
            {name: total / seen for name, total in rec.sums.items()})


def consumer_sources(plan: ModelPlan) -> set[str]:
    """The fx nodes read by the consumers of the prunable layers (where surgery folds removed nodes)."""
    return {c.source for name in plan.prunable for c in plan.layers[name].consumers}
