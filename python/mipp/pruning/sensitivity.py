"""The one currency: what an error in a consumer's pre-activations costs at the model's output.

MIPP's tolerance channel can sit at each consumer (its pre-activations seen through noise scaled to their
own variance: a per-layer unit) or at the model's output, where every node's effect lands: y = f(x) + n,
n ~ N(0, sigma^2 I) with sigma^2 = ``noise`` x the mean variance of the output's entries, defined once for
the whole model. A node's unique part changes a consumer's pre-activations by dz = W_i e_i, which reaches the
output, linearised, as J dz (J = dy/dz, the consumer's Jacobian). Summed over the consumer's rows (tokens,
pixels) of a sample and averaged over samples, the squared output error is tr(G W_i V_i W_i^T) with

    G = E_sample[ sum_rows J_row^T J_row ] / Var(output)        (q x q per consumer; Gauss-Newton)

(cross terms between rows and between J and dz are dropped, as K-FAC does). So the consumer's weights
whitened by G^(1/2), with channel noise ``noise``, put every layer's decisions in nats of the output, and the
whole within-layer machinery (closed form, rank-one updates, KSG on the residual, re-fit) stays as it is.

G is estimated without a full Jacobian, by Hutchinson probes: for v ~ N(0, I) over the output, the vector
-Jacobian product u = J^T v (one backward pass) has E[u u^T] = J^T J. ``probes`` of them per batch, one
backward pass each through the batch's graph: measured 1.2-1.3x faster than one pass batched over the probes
(``is_grads_batched``, whose batching rules concatenate copies) on a 64-512-channel ResNet-18 and the same
on MiniLM, and every operation has a plain backward where not every one has a batching rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mipp.pruning.capture import to_device
from mipp.pruning.structure import eval_mode, run_model


@dataclass(frozen=True)
class OutputChannel:
    """The tolerance channel at the model's output (module docstring). probes: Hutchinson vectors per
    sample; samples: input samples the metric is estimated on (the first of the captured ones); output:
    maps the model's output to the tensor the channel is on (default: :func:`first_tensor`)."""

    probes: int = 4
    samples: int = 256
    output: Callable | None = None

    def __post_init__(self):
        for name in ("probes", "samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"OutputChannel.{name} must be an int >= 1, got {v!r}")


def first_samples(batches: list, n: int) -> list:
    """The batches holding the first ``n`` samples (the last one sliced)."""
    from mipp.pruning.capture import batch_size, slice_batch

    out, seen = [], 0
    for b in batches:
        take = min(batch_size(b), n - seen)
        out.append(b if take == batch_size(b) else slice_batch(b, take))
        seen += take
        if seen >= n:
            break
    return out


def spread_samples(batches: list, n: int) -> list:
    """About ``n`` samples taken from every batch in proportion to its size (the first of each), so that
    batches ordered by length or class are all represented; every batch when they hold ``n`` or fewer."""
    from mipp.pruning.capture import batch_size, slice_batch

    total = sum(batch_size(b) for b in batches)
    if total <= n:
        return list(batches)
    out = []
    for b in batches:
        take = -(-batch_size(b) * n // total)  # ceil: no batch drops out
        out.append(b if take == batch_size(b) else slice_batch(b, take))
    return out


@dataclass
class OutputMetric:
    """Per consumer, G (q x q, float64): the output's sensitivity to its pre-activations, in units of the
    output's mean variance."""

    metrics: dict[str, torch.Tensor]
    output_variance: float
    probes: int
    n_samples: int
    seconds: float

    def root(self, consumer: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """A (r x q) with A^T A = G restricted to the outputs ``rows`` (kept outputs; None: all): whitened
        weights are A @ W."""
        g = self.metrics[consumer]
        if rows is not None:
            g = g[rows][:, rows]
        vals, vecs = torch.linalg.eigh(g)
        keep = vals > vals.max().clamp_min(0) * 1e-12
        return vals[keep].sqrt()[:, None] * vecs[:, keep].T


def first_tensor(out) -> torch.Tensor:
    """The model's output as one tensor: itself, or the first tensor of a tuple / list / mapping (a Hugging
    Face ModelOutput's ``last_hidden_state`` or ``logits``)."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if hasattr(out, "values") else out
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError(f"the model's output holds no tensor ({type(out).__name__}); pass output= to select one")


def output_metric(
    model: nn.Module,
    batches: list,
    consumers: list[str],
    *,
    probes: int = 8,
    seed: int = 0,
    output: Callable | None = None,
) -> OutputMetric:
    """G for each named consumer module (Linear / Conv) from Hutchinson probes on ``batches`` (eval
    semantics, every module's mode restored, no parameter's .grad touched). ``output``: maps the model's
    output to the tensor the channel is on (default :func:`first_tensor`)."""
    t0 = time.perf_counter()
    select = output or first_tensor
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(seed)
    metrics: dict[str, torch.Tensor] = {}
    seen: dict[str, torch.Tensor] = {}
    zero = torch.zeros((), requires_grad=True)

    def hook(name):
        def fn(module, inputs, out):
            # out + 0 keeps the graph (and the values) and makes the pre-activation require grad even in a
            # frozen model, so that dy/dz can be asked for every consumer in one backward pass
            seen[name] = out + zero.to(out.dtype)
            return seen[name]

        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in consumers]
    total = total_sq = None
    n = 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with eval_mode(model), torch.enable_grad():
            for batch in batches:
                seen.clear()
                y = select(run_model(model, to_device(batch, device)))
                flat = y.detach().reshape(y.shape[0], -1).double()
                total = flat.sum(0) if total is None else total + flat.sum(0)
                total_sq = (flat**2).sum(0) if total_sq is None else total_sq + (flat**2).sum(0)
                n += flat.shape[0]
                names = list(seen)
                v = torch.randn((probes, *y.shape), generator=gen, dtype=y.dtype).to(y.device)
                inputs = [seen[k] for k in names]
                for p, vp in enumerate(v):  # the graph is freed after the last probe
                    grads = torch.autograd.grad(y, inputs, vp, retain_graph=p < probes - 1, allow_unused=True)
                    for name, g in zip(names, grads):
                        if g is None:  # a consumer whose output does not reach the model's output
                            g = torch.zeros_like(seen[name])
                        rows = _rows(g, modules[name])  # (rows, q)
                        outer = rows.T @ rows
                        metrics[name] = outer if name not in metrics else metrics[name] + outer
    finally:
        for h in handles:
            h.remove()
    assert total is not None and total_sq is not None
    mean = total / n
    variance = float((total_sq / n - mean**2).clamp_min(0).mean())
    if variance <= 0:
        raise ValueError("the model's output does not vary over the inputs: no output channel can be defined")
    scale = 1.0 / (n * probes * variance)
    return OutputMetric({k: v * scale for k, v in metrics.items()}, variance, probes, n, time.perf_counter() - t0)


def _rows(g: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Gradients (n, q, *positions) or (n, *tokens, q) as float64 rows (-1, q)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        g = g.movedim(1, -1)
    return g.reshape(-1, g.shape[-1]).double()
