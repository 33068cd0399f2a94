"""What the consumers of a model's groups read: forward hooks on the real Linear / Conv modules.

A consumer's input, as the layer itself sees it, becomes *feature rows*: a Linear layer's input features
(one row per sample, or per token for (N, T, d) inputs); a convolution's receptive fields (``F.unfold``:
one row per output position, the columns ordered channel-major (C, *kernel), so channel c is the block
of prod(kernel) columns starting at c * prod(kernel)). The pre-activation the consumer computes is then
``rows @ W.T + b`` with W its weight flattened to (out, in * prod(kernel)): exactly linear in the rows.

For each consumer this module accumulates, in float64, the sum of the rows and of their outer products
over all rows (mean and covariance: what the least-squares screen and re-fit need; a stride-1
convolution's from its input images by :func:`conv_moments`, without forming the rows) and keeps one row per
input sample (a random position for a convolution, a random token for a sequence), so the
per-sample statistics (KSG) see independent samples.

Batches may be tensors, tuples / lists of positional inputs, or any Mapping of keyword inputs (a tokenizer's
``BatchEncoding``). A Mapping batch with an ``attention_mask`` key marks the valid tokens: the rows of a
Linear consumer's (N, T, d) input at padding positions never enter the moments nor the sampled rows
(:func:`token_mask`, :func:`valid_rows`; the re-fit reads the same rule).
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mipp.pruning.sensitivity import MetricProbes
from mipp.pruning.structure import UnsupportedModelError, eval_mode, run_model


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
        if padding == "same":  # torch pads d (k - 1) per axis, the odd pixel on the right / bottom
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            x = F.pad(x, [p for t in reversed(total) for p in (t // 2, t - t // 2)])
        if isinstance(padding, str):
            padding = (0,) * len(kernel)
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


def gram_matrix(a: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """a.T @ a with the lower block triangle computed and mirrored: ``blocks`` column blocks need
    blocks (blocks + 1) / 2 of the blocks^2 products (10 of 16); measured 1.35-1.5x faster than the full
    product for 4,096 x 576-4,608 float64 rows on 2 cores. Narrow inputs (< 512 columns) take the full one."""
    F = a.shape[1]
    if F < 512:
        return a.T @ a
    edges = [F * i // blocks for i in range(blocks + 1)]
    out = torch.empty(F, F, dtype=a.dtype, device=a.device)
    for lo, hi in itertools.pairwise(edges):
        block = a[:, lo:hi].T @ a[:, :hi]  # block row [lo, hi), columns [0, hi)
        out[lo:hi, :hi] = block
        out[:lo, lo:hi] = block[:, :lo].T
    return out


@dataclass(frozen=True)
class ConvGeometry:
    """A stride-1 convolution's receptive fields over an input of ``size`` = (H, W): the kernel, dilation and
    (zero) padding per axis. Column (c, i, j) of the row at output position (oy, ox) reads input pixel
    (oy + i * dilation_h - padding_h, ox + j * dilation_w - padding_w), zero outside the input."""

    kernel: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int]
    size: tuple[int, int]

    @property
    def out(self) -> tuple[int, int]:
        return tuple(s + 2 * p - d * (k - 1) for s, p, d, k in zip(self.size, self.padding, self.dilation, self.kernel))  # type: ignore[return-value]

    def reads(self, axis: int, i: int) -> tuple[int, int]:
        """The input interval [lo, hi) that kernel offset ``i`` reads along ``axis`` (clipped to the input)."""
        start = i * self.dilation[axis] - self.padding[axis]
        return max(start, 0), min(start + self.out[axis], self.size[axis])

    def cells(self, axis: int) -> list[tuple[int, int]]:
        """The input split along ``axis`` at every edge of an offset's interval and of a shift's overlap, so
        that each product of two offsets' columns sums over a union of whole cells."""
        k, d, size = self.kernel[axis], self.dilation[axis], self.size[axis]
        edges = {0, size}
        for i in range(k):
            edges.update(self.reads(axis, i))
        for s in range(-(k - 1), k):
            edges.update((-s * d, size - s * d))
        pts = sorted({min(max(e, 0), size) for e in edges})
        return list(itertools.pairwise(pts))


def conv_geometry(module: nn.Module, x: torch.Tensor) -> ConvGeometry | None:
    """The geometry of a stride-1 Conv1d / Conv2d with a kernel wider than one pixel reading ``x`` (whose
    moments :func:`conv_moments` computes without receptive-field rows); None for any other module."""
    if not isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return None
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        return None
    lead = (1,) if isinstance(module, nn.Conv1d) else ()  # a Conv1d as a Conv2d with one input row
    kernel, dilation, stride = (*lead, *module.kernel_size), (*lead, *module.dilation), (*lead, *module.stride)
    padding = (0,) * len(lead) + tuple(module.padding)
    size = (1, x.shape[-1]) if lead else (x.shape[-2], x.shape[-1])
    if any(s != 1 for s in stride) or math.prod(kernel) == 1:
        return None
    geo = ConvGeometry(kernel, dilation, padding, size)  # type: ignore[arg-type]
    return geo if min(geo.out) >= 1 else None


# Input channels from which a convolution's moments come from its images rather than its rows. The images'
# products are C x C, one per pixel shift and cell, so few channels and wide kernels leave them small and many
# (5 x 5 at 6 / 16 channels: 6.1x / 1.7x the rows' time, 3 x 3 at 3 channels 1.15x). With the (H, W, n, C)
# layout, at 32 channels the images took 0.19x (3 x 3), 0.71x (5 x 5, 14 x 14 input) and 0.32x (7 x 7) of the
# rows' time, at the ResNet-18's 64-512 channels 0.23-0.68x (benchmarks/results/capture.csv, 128 samples).
IMAGE_MIN_CHANNELS = 32


def image_geometry(module: nn.Module, x: torch.Tensor) -> ConvGeometry | None:
    """:func:`conv_geometry` where the images path pays (at least IMAGE_MIN_CHANNELS input channels)."""
    return conv_geometry(module, x) if x.dim() >= 3 and x.shape[1] >= IMAGE_MIN_CHANNELS else None


def as_images(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A Conv1d's (n, C, L) input or output as the (n, C, 1, L) image its :class:`ConvGeometry` describes;
    a Conv2d's as it is (decided by the layer, not by the tensor's rank)."""
    return t.unsqueeze(-2) if isinstance(module, nn.Conv1d) else t


def conv_moments(x: torch.Tensor, geo: ConvGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, Gram) of the receptive-field rows of ``x`` (n, C, H, W) over every sample and output position,
    columns channel-major (C, kh, kw) as :func:`feature_rows` lays them out, without forming the rows.

    The product of offset a's columns with offset b's is a sum of x(p) x(p + delta)^T over an input rectangle,
    delta = b - a in pixels: it depends on a and b only through delta and the rectangle's edges. So per delta
    (13 of them for 3 x 3: the other 12 are transposes) the products are summed over the cells between all
    edges once, and each of the kh kw (kh kw + 1) / 2 blocks adds up its cells: 13 passes over the pixels
    instead of the rows' 81 kh kw-wide products (measured: see benchmarks/results/capture.csv)."""
    C = x.shape[1]
    (kh, kw), (dh, dw), (H, W) = geo.kernel, geo.dilation, geo.size
    # (H, W, n, C) in memory: the pixels of one image row y and columns [x0, x1) of every sample are one
    # (x1 - x0) n x C matrix with rows C apart, so every cell and every shifted cell is a strided view, a batch of
    # such matrices over its image rows, and no cell is copied. (In (n, H, W, C) a cell narrower than the image
    # was a copy: 3.2 of the 15.7 s the moments took in a 64-512-channel ResNet-18's capture. A permuted view
    # of NCHW would gather each value H W apart: 14 of a capture's 84 s.) The copy goes through channels_last,
    # which moves whole C-runs: permuting NCHW straight to (H, W, n, C) took 2x as long.
    xt = x.to(torch.float64, memory_format=torch.channels_last).permute(2, 3, 0, 1).contiguous()
    ycells, xcells = geo.cells(0), geo.cells(1)
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    by_shift: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, (i, j) in enumerate(offsets):
        for b in range(a, len(offsets)):
            by_shift.setdefault(((offsets[b][0] - i) * dh, (offsets[b][1] - j) * dw), []).append((a, b))

    def cell(yc: tuple[int, int], xc: tuple[int, int], sy: int = 0, sx: int = 0) -> torch.Tensor:
        """The cell's pixels shifted by (sy, sx): (image rows, pixels of a row x samples, C), a view."""
        return xt[yc[0] + sy : yc[1] + sy, xc[0] + sx : xc[1] + sx].reshape(yc[1] - yc[0], -1, C)

    gram = torch.empty(kh * kw, kh * kw, C, C, dtype=torch.float64, device=x.device)  # offset-major blocks
    for (sy, sx), pairs in by_shift.items():  # one shift's cell products at a time (C x C each)
        products: dict[tuple, torch.Tensor] = {}
        for a, b in pairs:
            (ylo, yhi), (xlo, xhi) = geo.reads(0, offsets[a][0]), geo.reads(1, offsets[a][1])
            ylo, yhi, xlo, xhi = max(ylo, -sy), min(yhi, H - sy), max(xlo, -sx), min(xhi, W - sx)
            block = gram[a, b].zero_()
            for yc in ycells:
                if yc[0] < ylo or yc[1] > yhi:
                    continue
                for xc in xcells:
                    if xc[0] < xlo or xc[1] > xhi:
                        continue
                    if (yc, xc) not in products:  # summed over the cell's image rows
                        products[yc, xc] = torch.bmm(cell(yc, xc).transpose(1, 2), cell(yc, xc, sy, sx)).sum(0)
                    block += products[yc, xc]
            if b != a:
                gram[b, a] = block.T
    pixels = xt.sum(2)  # (H, W, C)
    sums = torch.stack([pixels[slice(*geo.reads(0, i)), slice(*geo.reads(1, j))].sum((0, 1)) for i, j in offsets], 1)
    F_ = C * kh * kw
    return sums.reshape(F_), gram.permute(2, 0, 3, 1).reshape(F_, F_)


def receptive_rows(x: torch.Tensor, geo: ConvGeometry, positions: torch.Tensor) -> torch.Tensor:
    """Sample k's receptive-field row at output position ``positions[k]`` (row-major over the output) of
    ``x`` (n, C, H, W): the row :func:`feature_rows` gives there, gathered without unfolding the rest."""
    (kh, kw), (dh, dw), (ph, pw) = geo.kernel, geo.dilation, geo.padding
    wo = geo.out[1]
    padded = F.pad(x, (pw, pw, ph, ph))
    iy = (positions // wo)[:, None] + torch.arange(kh) * dh  # (n, kh) rows of the padded input
    ix = (positions % wo)[:, None] + torch.arange(kw) * dw
    picked = padded[torch.arange(len(x))[:, None, None], :, iy[:, :, None], ix[:, None, :]]  # (n, kh, kw, C)
    return picked.permute(0, 3, 1, 2).reshape(len(x), -1)


@dataclass
class ConsumerStats:
    n_rows: int  # rows behind the moments (samples x positions)
    mean: torch.Tensor  # (F,) float64
    cov: torch.Tensor  # (F, F) float64, population covariance over the rows
    rows: torch.Tensor  # (N, F) float64: one row per input sample (uncentred)


class _Accumulator:
    """Moments over rows summed in fixed chunks of CHUNK rows, and the sampled row of each input sample drawn
    from a per-sample uniform stream: both depend on the sequence of rows only, not on how the inputs were
    batched (a DataLoader and a tensor give bit-identical statistics wherever the model's own forward pass
    gives the same activations at every batch size; a convolution's may differ in the last bit between
    batch sizes). A stride-1 convolution's input arrives as images instead (:meth:`add_images`): fixed chunks
    of images whose moments :func:`conv_moments` computes without forming the receptive-field rows."""

    CHUNK = 4096
    CONV_ROWS = 1 << 16  # receptive-field rows behind one chunk of images (at least one image)

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.uniform = torch.empty(0, dtype=torch.float64)
        self.total: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None
        self.n_rows = self.n_samples = 0
        self.buffer: list[torch.Tensor] = []
        self.buffered = 0
        self.sampled: list[torch.Tensor] = []
        self.geometry: ConvGeometry | None = None  # of the buffered images; None: rows are buffered

    def _uniforms(self, n: int) -> torch.Tensor:
        while len(self.uniform) < self.n_samples + n:
            self.uniform = torch.cat([self.uniform, torch.rand(1024, generator=self.gen, dtype=torch.float64)])
        u = self.uniform[self.n_samples : self.n_samples + n]
        self.n_samples += n
        return u

    def add(self, rows: torch.Tensor, counts: torch.Tensor | int) -> None:
        """Rows of consecutive input samples; ``counts``: rows per sample (an int when every sample has the
        same number of positions, else a (n,) tensor: a padded batch's valid tokens). A sample with no row
        (all padding) draws its uniform but keeps no sampled row."""
        rows = rows.detach().cpu()
        if isinstance(counts, int):
            n = rows.shape[0] // counts
            counts_t = torch.full((n,), counts, dtype=torch.long)
        else:
            counts_t = counts.detach().to(torch.long).cpu()
            n = len(counts_t)
        u = self._uniforms(n)
        start = torch.cumsum(counts_t, 0) - counts_t
        present = counts_t > 0
        pick = (u * counts_t).long().minimum(counts_t - 1) + start
        self.sampled.append(rows[pick[present]].to(torch.float64))
        self._stream(rows, self.CHUNK, None)

    def add_images(self, x: torch.Tensor, geo: ConvGeometry) -> None:
        """The input (n, C, H, W) of a stride-1 convolution with geometry ``geo`` (a Conv1d's (n, C, L) as
        (n, C, 1, L)): the same statistics as its receptive-field rows given to :meth:`add`, to rounding."""
        x = x.detach().cpu()
        positions = math.prod(geo.out)
        pick = (self._uniforms(x.shape[0]) * positions).long().clamp_max(positions - 1)
        self.sampled.append(receptive_rows(x, geo, pick).to(torch.float64))
        self._stream(x, max(1, self.CONV_ROWS // positions), geo)

    def _stream(self, items: torch.Tensor, size: int, geo: ConvGeometry | None) -> None:
        """Chunks of ``size`` items (rows, or images of geometry ``geo``) whatever the batching: the leftover of
        earlier batches is completed first, then whole chunks are sliced from these items (views: a batch of a
        million conv positions is never copied whole, nor concatenated again at every chunk), and the rest
        waits for the next batch. Items of another geometry first flush what is buffered."""
        if geo != self.geometry:
            self._flush_buffer()
            self.geometry = geo
        at = 0
        if self.buffered:
            at = min(size - self.buffered, items.shape[0])
            self.buffer.append(items[:at])
            self.buffered += at
            if self.buffered < size:
                return
            self._flush_buffer()
        while items.shape[0] - at >= size:
            self._flush(items[at : at + size])
            at += size
        self.buffer = [items[at:].clone()] if at < items.shape[0] else []
        self.buffered = items.shape[0] - at

    def _flush_buffer(self) -> None:
        if self.buffered:
            self._flush(torch.cat(self.buffer))
        self.buffer, self.buffered = [], 0

    def _flush(self, chunk: torch.Tensor) -> None:
        if self.geometry is None:
            chunk = chunk.to(torch.float64)
            s, o, n = chunk.sum(0), gram_matrix(chunk), chunk.shape[0]
        else:
            (s, o), n = conv_moments(chunk, self.geometry), chunk.shape[0] * math.prod(self.geometry.out)
        self.total = s if self.total is None else self.total + s
        self.outer = o if self.outer is None else self.outer + o
        self.n_rows += n

    def finish(self) -> ConsumerStats:
        self._flush_buffer()
        assert self.total is not None and self.outer is not None
        mean = self.total / self.n_rows
        cov = self.outer / self.n_rows - torch.outer(mean, mean)
        return ConsumerStats(self.n_rows, mean, (cov + cov.T) / 2, torch.cat(self.sampled))


def iterate_batches(inputs, n_samples: int):
    """Input batches from a tensor or a Mapping of keyword inputs (one batch, split into chunks), or from an
    iterable of batches (a DataLoader, a list, a generator: consumed once), until n_samples samples. A batch
    is a tensor, a Mapping of keyword inputs (a dict, a tokenizer's BatchEncoding), or a tuple / list whose
    first element is the input (``(x, label)`` from a DataLoader)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise ValueError("inputs must be a batch of samples (first dimension: samples), got a 0-d tensor")
        yield from (chunk for chunk in inputs[:n_samples].split(256) if len(chunk))
        return
    if isinstance(inputs, Mapping):
        n = min(batch_size(inputs), n_samples)
        yield from (take_rows(inputs, i, min(i + 256, n)) for i in range(0, n, 256))
        return
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__"):
        raise TypeError(
            "inputs must be a tensor, a Mapping of keyword inputs (a tokenizer's output) or an iterable of "
            f"batches (a DataLoader, a list); got {type(inputs).__name__}"
        )
    seen = 0
    for batch in inputs:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        n = batch_size(x)
        take = min(n, n_samples - seen)
        yield x if take == n else slice_batch(x, take)
        seen += take
        if seen >= n_samples:
            return


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    values = x.values() if isinstance(x, Mapping) else x if isinstance(x, (tuple, list)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def batch_size(x) -> int:
    """Samples in a batch: the first dimension of its first tensor (a Mapping's or a tuple's)."""
    t = _first_tensor(x) if isinstance(x, (torch.Tensor, Mapping, tuple, list)) else None
    if t is None:
        raise TypeError(
            "inputs must be tensors, or yield tensors / (tensor, label) / Mapping batches (a dict, a "
            f"tokenizer's BatchEncoding) holding tensors; got {type(x).__name__}"
        )
    if t.dim() == 0:
        raise ValueError("a batch's tensors must have a first dimension of samples, got a 0-d tensor")
    return t.shape[0]


def take_rows(x, start: int, stop: int):
    """Samples [start, stop) of a batch (a Mapping becomes a plain dict; values that are not tensors, such
    as a flag passed as a keyword, are kept as they are)."""
    if isinstance(x, torch.Tensor):
        return x[start:stop] if x.dim() else x
    if isinstance(x, Mapping):
        return {k: take_rows(v, start, stop) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(take_rows(v, start, stop) for v in x)
    return x


def slice_batch(x, n: int):
    """The first ``n`` samples of a batch."""
    return take_rows(x, 0, n)


def to_device(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
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


def token_mask(batch) -> torch.Tensor | None:
    """The valid tokens of a Mapping batch with an ``attention_mask`` (N, T): a bool (N, T) tensor, True at
    real tokens; None for other batches (every row counts)."""
    if not isinstance(batch, Mapping):
        return None
    mask = batch.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return None
    return mask != 0


def valid_rows(module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x``, the input or output of a Linear layer ``module``, without its padding positions: ``x[mask]``
    (valid tokens, d) when ``x`` is (N, T, d) and ``mask`` the (N, T) :func:`token_mask` of its batch;
    otherwise ``x`` itself (no mask, a convolution, a (N, d) input, or a tensor that is not per token)."""
    if mask is None or not isinstance(module, nn.Linear) or x.dim() != 3 or tuple(x.shape[:2]) != tuple(mask.shape):
        return x
    return x[mask.to(x.device)]


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in ``t``. A finite sum proves it (NaN and inf make any sum non-finite); only a sum that
    overflows, or a tensor that is not finite, pays the elementwise test: on 65M float32 activations the sum
    took 14 ms, ``isfinite(t).all()`` 314 ms."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_finite_inputs(batch, index: int) -> None:
    """A ValueError naming the batch and sample when a floating tensor of ``batch`` holds NaN or inf."""
    values = (
        batch.items()
        if isinstance(batch, Mapping)
        else enumerate(batch)
        if isinstance(batch, (tuple, list))
        else [(None, batch)]
    )
    for key, v in values:
        if isinstance(v, (Mapping, tuple, list)):
            check_finite_inputs(v, index)
        elif isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() and not all_finite(v):
            bad = int((~torch.isfinite(v)).reshape(v.shape[0], -1).any(1).nonzero()[0, 0])
            where = "" if key is None else f" (input {key!r})"
            raise ValueError(
                f"inputs contain NaN or inf: batch {index}, sample {bad}{where}; MIPP's statistics need finite "
                "inputs (drop or repair those samples)"
            )


def capture(
    model: nn.Module,
    batches: list,
    consumers: list[str],
    seed: int = 0,
    progress: bool = False,
    metric: MetricProbes | None = None,
) -> dict[str, ConsumerStats]:
    """Run ``model`` (eval semantics, every module's mode restored) on the batches and return the feature
    statistics of each named consumer module. Padding tokens (a Mapping batch's ``attention_mask``) are
    left out. Raises a ValueError for NaN / inf in the inputs or in a consumer's input; warns when a
    consumer's covariance has fewer rows than features. ``progress``: a tqdm bar over the batches.

    ``metric``: the output metric's probes, fed by the same forward passes for the samples it takes (a batch
    they take whole runs with grad enabled; of a batch they take in part, that part runs again on its own):
    one forward pass of those samples instead of two (the metric's took 2 s of a 64-512-channel ResNet-18's
    selection)."""
    if not consumers:
        raise UnsupportedModelError(
            f"MIPP decides no group of {type(model).__name__}, so there is nothing to capture: "
            "mipp.pruning.analyse(model, example) lists every group and why it is left alone"
        )
    modules = dict(model.named_modules())
    acc = {name: _Accumulator(seed) for name in consumers}
    current: dict = {"mask": None, "on": True}

    def hook(name):
        def fn(module, inputs, output):
            if not current["on"]:  # the metric's own pass over part of a batch already captured
                return
            x = inputs[0].detach()
            mask = current["mask"]
            tokens = valid_rows(module, x, mask)
            # the layer's input itself, not its receptive-field rows: the same values, 9x fewer for a 3x3 kernel
            if not all_finite(tokens):
                raise ValueError(
                    f"the input of {name!r} contains NaN or inf although the model's inputs are finite (an "
                    "overflow in the layers before it?); MIPP's statistics need finite activations"
                )
            geo = image_geometry(module, x)
            if geo is not None:
                acc[name].add_images(as_images(module, x), geo)
            elif tokens is not x:  # per-token rows of a padded batch: the valid ones, counted per sample
                acc[name].add(tokens, mask.sum(1))
            else:
                acc[name].add(*feature_rows(module, x))

        return fn

    for i, batch in enumerate(batches):
        check_finite_inputs(batch, i)
    handles = [modules[name].register_forward_hook(hook(name)) for name in consumers]
    try:
        device = _device(model)
        with eval_mode(model), torch.no_grad():
            shown = tqdm(batches, desc="MIPP capture", unit="batch", file=sys.stderr, disable=not progress, leave=False)
            for batch in shown:
                mask = token_mask(batch)
                current["mask"] = None if mask is None else mask.to(device)
                n = batch_size(batch)
                take = metric.wants(n) if metric is not None else 0
                if take == n:  # the metric takes it whole: one pass with grad feeds both
                    assert metric is not None
                    metric.run(to_device(batch, device))
                    continue
                run_model(model, to_device(batch, device))
                if take:
                    assert metric is not None
                    current["on"] = False
                    try:
                        metric.run(to_device(slice_batch(batch, take), device))
                    finally:
                        current["on"] = True
    finally:
        for h in handles:
            h.remove()
    stats = {name: a.finish() for name, a in acc.items()}
    _warn_few_samples(stats)
    return stats


def _warn_few_samples(stats: dict[str, ConsumerStats]) -> None:
    """Warn where a consumer's covariance has fewer rows (samples x positions: every pixel or token of a sample
    is a row) than features: it is singular there. A sequence or image model with few samples but many rows
    per sample is not warned about (MiniLM's 800 sentences give 20,000 token rows for 1,536 features)."""
    few = {name: st.cov.shape[0] for name, st in stats.items() if st.n_rows < st.cov.shape[0]}
    if few:
        n = min(stats[name].n_rows for name in few)
        listed = ", ".join(f"{name} ({f})" for name, f in list(few.items())[:3])
        more = f" and {len(few) - 3} more" if len(few) > 3 else ""
        warnings.warn(
            f"{n} calibration rows (samples x positions), fewer than the features their consumers read ({listed}"
            f"{more}): the decisions need more rows than features (a ridge keeps them defined below that, with "
            "wider bounds and fewer removals); pass more samples (inputs and n_samples=)",
            UserWarning,
            stacklevel=3,
        )


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
