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
backward pass each through the batch's graph: on a 64-512-channel ResNet-18 the backward passes alone 1.28x and
the metric 1.17x faster than one pass batched over the probes (``is_grads_batched``, whose batching rules
concatenate copies), the same on MiniLM; and every operation has a plain backward where not every one has a
batching rule. The capture's forward passes feed the probes (:class:`MetricProbes`, mipp.pruning.capture).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from mipp.pruning.structure import run_model


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
    # the roots over all outputs, made on first use: every walk of a selection (the ranking, each of a
    # refinement's candidates, the final one) whitens its unpruned consumers again (MiniLM: 12 eigh a walk)
    _roots: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def root(self, consumer: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """A (r x q) with A^T A = G restricted to the outputs ``rows`` (kept outputs; None: all): whitened
        weights are A @ W. Not to be modified in place (the one over all outputs is shared)."""
        if rows is None and consumer in self._roots:
            return self._roots[consumer]
        g = self.metrics[consumer]
        if rows is not None:
            g = g[rows][:, rows]
        vals, vecs = torch.linalg.eigh(g)
        keep = vals > vals.max().clamp_min(0) * 1e-12
        out = vals[keep].sqrt()[:, None] * vecs[:, keep].T
        if rows is None:
            self._roots[consumer] = out
        return out


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


class MetricProbes:
    """The Hutchinson estimate of G accumulated over forward passes (module docstring): :meth:`run` makes every
    consumer's pre-activation a leaf of a batch's graph and runs the probes' backward passes from the model's
    output; :meth:`finish` gives the :class:`OutputMetric`. ``samples``: how many input samples it takes (None:
    every sample run; :meth:`wants`), so that the capture's forward passes feed it (mipp.pruning.capture.capture)
    instead of forward passes of its own."""

    def __init__(
        self,
        model: nn.Module,
        consumers: list[str],
        *,
        probes: int,
        seed: int = 0,
        output: Callable | None = None,
        samples: int | None = None,
    ):
        self.model = model
        self.modules = dict(model.named_modules())
        self.consumers, self.probes, self.samples = consumers, probes, samples
        self.select = output or first_tensor
        self.gen = torch.Generator().manual_seed(seed)
        self.metrics: dict[str, torch.Tensor] = {}
        self.seen: dict[str, torch.Tensor] = {}
        self.zero = torch.zeros((), requires_grad=True)
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None
        self.n = 0
        self.seconds = 0.0

    def wants(self, n: int) -> int:
        """How many of a batch's ``n`` samples (its first ones) the estimate still takes."""
        return n if self.samples is None else max(0, min(n, self.samples - self.n))

    @contextmanager
    def _hooked(self):
        """Forward passes inside record the consumers' pre-activations (run them with grad enabled)."""

        def hook(name):
            def fn(module, inputs, out):
                # out + 0 keeps the graph (and the values) and makes the pre-activation require grad even in a
                # frozen model, so that dy/dz can be asked for every consumer in one backward pass
                self.seen[name] = out + self.zero.to(out.dtype)
                return self.seen[name]

            return fn

        self.seen.clear()
        handles = [self.modules[name].register_forward_hook(hook(name)) for name in self.consumers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def run(self, batch) -> None:
        """One forward pass of ``batch`` (on the model's device) with grad enabled, whatever the caller's mode,
        and its probes."""
        with torch.enable_grad(), self._hooked():
            out = run_model(self.model, batch)
        self._add(out)

    def _add(self, out) -> None:
        """The probes of one forward pass (made inside :meth:`_hooked`) whose output is ``out``; frees its graph."""
        t0 = time.perf_counter()
        y = self.select(out)
        flat = y.detach().reshape(y.shape[0], -1).double()
        self.total = flat.sum(0) if self.total is None else self.total + flat.sum(0)
        self.total_sq = (flat**2).sum(0) if self.total_sq is None else self.total_sq + (flat**2).sum(0)
        self.n += flat.shape[0]
        names = list(self.seen)
        v = torch.randn((self.probes, *y.shape), generator=self.gen, dtype=y.dtype).to(y.device)
        inputs = [self.seen[k] for k in names]
        for p, vp in enumerate(v):  # the graph is freed after the last probe
            grads = torch.autograd.grad(y, inputs, vp, retain_graph=p < self.probes - 1, allow_unused=True)
            for name, g in zip(names, grads):
                if g is None:  # a consumer whose output does not reach the model's output
                    g = torch.zeros_like(self.seen[name])
                rows = _rows(g, self.modules[name])  # (rows, q)
                outer = rows.T @ rows
                self.metrics[name] = outer if name not in self.metrics else self.metrics[name] + outer
        self.seen.clear()
        self.seconds += time.perf_counter() - t0

    def finish(self) -> OutputMetric:
        assert self.total is not None and self.total_sq is not None
        mean = self.total / self.n
        variance = float((self.total_sq / self.n - mean**2).clamp_min(0).mean())
        if variance <= 0:
            raise ValueError("the model's output does not vary over the inputs: no output channel can be defined")
        scale = 1.0 / (self.n * self.probes * variance)
        metrics = {k: v * scale for k, v in self.metrics.items()}
        return OutputMetric(metrics, variance, self.probes, self.n, self.seconds)


def _rows(g: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Gradients (n, q, *positions) or (n, *tokens, q) as float64 rows (-1, q)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        g = g.movedim(1, -1)
    return g.reshape(-1, g.shape[-1]).double()
