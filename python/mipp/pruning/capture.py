"""What the consumers of a model's groups read: forward hooks on the real Linear / Conv modules.

A consumer's input, as the layer itself sees it, becomes *feature rows*: a Linear layer's input features
(one row per sample, or per token for (N, T, d) inputs); a convolution's receptive fields (``F.unfold``:
one row per output position, the columns ordered channel-major (C, *kernel), so channel c is the block
of prod(kernel) columns starting at c * prod(kernel)). The pre-activation the consumer computes is then
``rows @ W.T + b`` with W its weight flattened to (out, in * prod(kernel)): exactly linear in the rows.

For each consumer this module accumulates, in float64, the sum of the rows and of their outer products
over all rows (mean and covariance: what the least-squares screen and re-fit need) and keeps one row per
input sample (a random position for a convolution, a random token for a sequence), so the
per-sample statistics (KSG) see independent samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mipp.pruning.structure import eval_mode, run_model


def feature_rows(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(rows (n * positions, features), positions per sample) of the input ``x`` of a Linear / Conv."""
    if isinstance(module, nn.Linear):
        n = x.shape[0]
        rows = x.reshape(-1, x.shape[-1])
        return rows, rows.shape[0] // max(n, 1)
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.padding_mode != "zeros":
            raise ValueError(
                f"convolutions with padding_mode={module.padding_mode!r} are not supported "
                "(their receptive fields are not zero-padded)"
            )
        if isinstance(module, nn.Conv1d):
            x = x.unsqueeze(-2)
            kernel, dilation, stride = (1, *module.kernel_size), (1, *module.dilation), (1, *module.stride)
            padding = module.padding if isinstance(module.padding, str) else (0, *module.padding)
        elif isinstance(module, nn.Conv2d):
            kernel, dilation, stride, padding = module.kernel_size, module.dilation, module.stride, module.padding
        else:
            raise ValueError(f"{type(module).__name__} is not supported as a consumer (Conv1d / Conv2d are)")
        if isinstance(padding, str):  # "same" / "valid": the amount torch uses for stride 1
            padding = tuple(0 if padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (n, C*k, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1]), cols.shape[2]
    raise TypeError(f"{type(module).__name__} is not a Linear / Conv layer")


def flat_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in * prod(kernel)), matching :func:`feature_rows`' columns."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach().reshape(weight.shape[0], -1)


def kernel_size(module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return math.prod(module.kernel_size)
    return 1


def channel_columns(channels: torch.Tensor, kk: int) -> torch.Tensor:
    """Input channels -> feature columns (a convolution's channel is ``kk`` = prod(kernel) consecutive
    columns, channel-major as :func:`feature_rows` lays them out)."""
    return (channels[:, None] * kk + torch.arange(kk)).reshape(-1)


@dataclass
class ConsumerStats:
    n_rows: int  # rows behind the moments (samples x positions)
    mean: torch.Tensor  # (F,) float64
    cov: torch.Tensor  # (F, F) float64, population covariance over the rows
    rows: torch.Tensor  # (N, F) float64: one row per input sample (uncentred)


class _Accumulator:
    """Moments over rows summed in fixed chunks of CHUNK rows, and the sampled row of each input sample drawn
    from a per-sample uniform stream: both depend on the sequence of samples only, not on how the inputs
    were batched (a DataLoader and a tensor give bit-identical statistics, hence the same selection)."""

    CHUNK = 4096

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.uniform = torch.empty(0, dtype=torch.float64)
        self.total: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None
        self.n_rows = self.n_samples = 0
        self.buffer: list[torch.Tensor] = []
        self.buffered = 0
        self.sampled: list[torch.Tensor] = []

    def add(self, rows: torch.Tensor, positions: int) -> None:
        rows = rows.detach().to(torch.float64).cpu()
        n = rows.shape[0] // positions
        while len(self.uniform) < self.n_samples + n:
            self.uniform = torch.cat([self.uniform, torch.rand(1024, generator=self.gen, dtype=torch.float64)])
        u = self.uniform[self.n_samples : self.n_samples + n]
        pick = (u * positions).long().clamp_max(positions - 1) + torch.arange(n) * positions
        self.sampled.append(rows[pick])
        self.n_samples += n
        self.buffer.append(rows)
        self.buffered += rows.shape[0]
        while self.buffered >= self.CHUNK:
            self._flush(self.CHUNK)

    def _flush(self, size: int) -> None:
        rows = torch.cat(self.buffer)
        chunk, rest = rows[:size], rows[size:]
        s, o = chunk.sum(0), chunk.T @ chunk
        self.total = s if self.total is None else self.total + s
        self.outer = o if self.outer is None else self.outer + o
        self.n_rows += chunk.shape[0]
        self.buffer, self.buffered = [rest], rest.shape[0]

    def finish(self) -> ConsumerStats:
        if self.buffered:
            self._flush(self.buffered)
        assert self.total is not None and self.outer is not None
        mean = self.total / self.n_rows
        cov = self.outer / self.n_rows - torch.outer(mean, mean)
        return ConsumerStats(self.n_rows, mean, (cov + cov.T) / 2, torch.cat(self.sampled))


def iterate_batches(inputs, n_samples: int):
    """Input batches from a tensor (split into chunks), or from an iterable of batches (a DataLoader, a
    list, a generator: consumed once), until n_samples samples. A batch is a tensor, a dict of keyword
    inputs, or a tuple / list whose first element is the input (``(x, label)`` from a DataLoader)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise ValueError("inputs must be a batch of samples (first dimension: samples), got a 0-d tensor")
        yield from (chunk for chunk in inputs[:n_samples].split(256) if len(chunk))
        return
    seen = 0
    for batch in inputs:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        n = batch_size(x)
        take = min(n, n_samples - seen)
        yield x if take == n else slice_batch(x, take)
        seen += take
        if seen >= n_samples:
            return


def batch_size(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    if isinstance(x, dict):
        return batch_size(next(iter(x.values())))
    if isinstance(x, (tuple, list)) and x:
        return batch_size(x[0])
    raise TypeError(
        f"inputs must be tensors, or yield tensors / (tensor, label) / dict batches; got {type(x).__name__}"
    )


def slice_batch(x, n: int):
    if isinstance(x, torch.Tensor):
        return x[:n]
    if isinstance(x, dict):
        return {k: slice_batch(v, n) for k, v in x.items()}
    return type(x)(slice_batch(v, n) for v in x)


def to_device(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x


def materialise(inputs, n_samples: int) -> list:
    """The input batches as a list (an iterable is consumed once, every sample kept)."""
    batches = [b for b in iterate_batches(inputs, n_samples) if batch_size(b)]
    if not batches:
        raise ValueError("inputs yielded no samples")
    return batches


def capture(model: nn.Module, batches: list, consumers: list[str], seed: int = 0) -> dict[str, ConsumerStats]:
    """Run ``model`` (eval semantics, every module's mode restored) on the batches and return the feature
    statistics of each named consumer module."""
    modules = dict(model.named_modules())
    acc = {name: _Accumulator(seed) for name in consumers}

    def hook(name):
        def fn(module, inputs, output):
            rows, positions = feature_rows(module, inputs[0])
            acc[name].add(rows, positions)

        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in consumers]
    try:
        device = _device(model)
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                run_model(model, to_device(batch, device))
    finally:
        for h in handles:
            h.remove()
    return {name: a.finish() for name, a in acc.items()}


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
