"""The mipp operators, registered with torch.library in the ``mipp`` namespace.

One registration site for every op: the CUDA kernel is the Triton launcher (or the extension), the CPU
kernel is the extension's exact CPU kernel when it is built and the pure-torch reference otherwise, and
the fake kernel gives the static output shape so that ``torch.compile(fullgraph=True)`` traces through.

This module is the ops' boundary. A call of a registered op checks the contract once (``_check``) and
normalises the query rows (``q1 = -1``: N); everything below (the reference, ``mipp._ext``, the Triton
launchers, the C++ kernels) takes explicit rows [q0, q1) and trusts its inputs. The estimators, which check
their own arguments under the user's names, call the kernels through ``trusted`` instead of checking twice.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

import torch

from mipp import _ext, reference

_warned: set[str] = set()


def _fallback_warning(op: str, why: str) -> None:
    """Warn once per op when a CUDA tensor has to take the slow reference path."""
    if op not in _warned:
        _warned.add(op)
        warnings.warn(f"mipp::{op} on CUDA falls back to the pure-torch reference: {why}", RuntimeWarning, stacklevel=4)


def _cuda_kernel(op: str) -> Callable:
    """The Triton launcher mipp_kernels.<op>.<op>, or the reference (after a one-time warning) when Triton is
    absent. Imported on first use: `import mipp` compiles nothing."""
    try:
        mod = importlib.import_module(f"mipp_kernels.{op}")
    except ImportError as exc:
        _fallback_warning(op, f"Triton is not available ({exc})")
        return getattr(reference, op)
    return getattr(mod, op)


def _cpu_kernel(op: str, dtype: torch.dtype) -> Callable:
    """The extension's exact C++ kernel for float32 / float64; the reference for other dtypes or when the
    extension is not built (warning once)."""
    if _ext._C is None:
        _ext.warn_fallback()
        return getattr(reference, op)
    return getattr(_ext if dtype in (torch.float32, torch.float64) else reference, op)


def _ksg_counts_cuda(groups, k, marginals, algorithm, q0, q1):
    """ksg_counts on CUDA: the specification's composition on the Triton kernels."""
    kernels = tuple(_cuda_kernel(op) for op in ("knn_distance", "marginal_radius", "count_within"))
    return reference.ksg_counts(groups, k, marginals, algorithm, q0, q1, kernels=kernels)


def _pairwise_kernel(op: str, groups: list[torch.Tensor]) -> Callable:
    device = groups[0].device.type
    if device == "cuda":
        return _ksg_counts_cuda if op == "ksg_counts" else _cuda_kernel(op)
    return _cpu_kernel(op, groups[0].dtype) if device == "cpu" else getattr(reference, op)


def _rows(n: int, q0: int, q1: int) -> tuple[int, int]:
    """The query rows [q0, q1) of an op call, explicit: q1 = -1 means N."""
    return q0, n if q1 == -1 else q1


def _check(
    op: str,
    groups: list[torch.Tensor],
    k: int | None = None,
    radius: torch.Tensor | None = None,
    q0: int = 0,
    q1: int = -1,
    names: str = "",
) -> tuple[int, int]:
    """The ops' contract, on every backend and inside compiled code (the kernels run at run time there):
    3-D floating groups of one dtype and device with equal N and batch sizes in {1, B}; finite values
    whose differences do not overflow the dtype (a +inf distance would tie with the self pair, which is
    excluded by index as +inf); 1 <= k < N; the query rows within [0, N]; a finite radius of the groups'
    dtype and device and shape (B_r, rows). Returns the explicit query rows.

    ``names`` (comma-separated, one per group: the estimators pass their arguments' names) words the data
    errors as the estimators' own checks do, so a compiled estimate (whose data checks run here, at run time)
    names the user's argument exactly as the eager one."""
    labels = names.split(",") if names else []
    if labels and len(labels) != len(groups):
        raise ValueError(f"mipp::{op}: names={names!r} must name each of the {len(groups)} groups")
    if not groups:
        raise ValueError(f"mipp::{op}: groups must hold at least one column group")
    n, batch = int(groups[0].shape[1]) if groups[0].dim() == 3 else 0, 1
    for i, g in enumerate(groups):
        if g.dim() != 3 or not g.is_floating_point():
            raise ValueError(
                f"mipp::{op}: groups[{i}] must be a floating (B, N, d) tensor, got {g.dtype} of shape {tuple(g.shape)}"
            )
        if g.dtype != groups[0].dtype or g.device != groups[0].device:
            raise ValueError(
                f"mipp::{op}: groups[{i}] is {g.dtype} on {g.device} but groups[0] is "
                f"{groups[0].dtype} on {groups[0].device}"
            )
        if int(g.shape[1]) != n:
            raise ValueError(f"mipp::{op}: groups[{i}] has N={g.shape[1]} samples but groups[0] has N={n}")
        if g.shape[0] != 1:
            if batch != 1 and g.shape[0] != batch:
                raise ValueError(f"mipp::{op}: groups[{i}] has batch size {g.shape[0]}, another group {batch}")
            batch = int(g.shape[0])
        if g.numel():
            nonfinite, overflow, _ = column_stats(g)
            if nonfinite:
                if labels:
                    raise ValueError(f"{labels[i]} contains NaN or inf; drop or impute those samples first")
                raise ValueError(f"mipp::{op}: groups[{i}] contains NaN or inf")
            if overflow:
                if labels:
                    raise ValueError(overflow_message(labels[i], g.dtype))
                raise ValueError(
                    f"mipp::{op}: the differences between samples of groups[{i}] overflow "
                    f"{g.dtype} (a column spans more than its largest finite value); rescale it"
                )
    if k is not None and n > 0 and not 1 <= k < n:
        if labels:
            raise ValueError(f"k={k} needs more than k samples, got N={n}; lower k or add samples")
        raise ValueError(f"mipp::{op}: k={k} must be in [1, N - 1] for N={n} samples")
    r0, r1 = _rows(n, q0, q1)
    if not 0 <= r0 <= r1 <= n:
        raise ValueError(f"mipp::{op}: the query rows [q0, q1) = [{q0}, {q1}) must lie in [0, N={n}] (q1 = -1: N)")
    if radius is not None:
        m = r1 - r0
        if radius.dim() != 2 or radius.shape[1] != m or (batch != 1 and radius.shape[0] not in (1, batch)):
            raise ValueError(
                f"mipp::{op}: radius must have shape (B, {m}) (one value per query row), got {tuple(radius.shape)}"
            )
        if radius.dtype != groups[0].dtype or radius.device != groups[0].device:
            raise ValueError(
                f"mipp::{op}: radius is {radius.dtype} on {radius.device} but the groups are "
                f"{groups[0].dtype} on {groups[0].device}"
            )
        if radius.numel() and not bool(torch.isfinite(radius).all()):
            raise ValueError(f"mipp::{op}: radius contains NaN or inf")
    return r0, r1


def column_stats(g: torch.Tensor, ties: bool = False) -> tuple[bool, bool, int]:
    """The input checks of g (B, N, d), per column over its N samples: (any NaN or inf, some column's span
    max - min overflowing g's dtype (its differences would), and with ``ties`` the most samples of one column
    that repeat another sample's value, else 0). The extension's one pass per column on the CPU (the torch
    reductions and a sort of each column took ~140 us per argument at N = 2,000); these torch ops elsewhere,
    and as its specification."""
    if not g.numel():
        return False, False, 0
    if g.device.type == "cpu" and _ext._C is not None:
        # (B * d, N): one column's samples in a row (one column per problem: a reshape, one op fewer)
        cols = g if g.shape[2] == 1 else g.transpose(1, 2)
        cols = cols.reshape(-1, g.shape[1]).contiguous()
        f64, threads = cols.dtype == torch.float64, torch.get_num_threads()
        return _ext._C.column_stats_cpu(cols.data_ptr(), cols.shape[0], cols.shape[1], f64, ties, threads)
    low, high = torch.aminmax(g, dim=1)
    if not bool(torch.isfinite(high - low).all()):  # one pass: NaN and inf make the span non-finite too
        if not bool(torch.isfinite(g).all()):
            return True, False, 0
        overflow = True
    else:
        overflow = False
    if not ties or g.shape[1] < 2:
        return False, overflow, 0
    s = g.sort(dim=1).values
    same = s[:, 1:] == s[:, :-1]  # sorted neighbours equal; a sample repeats one if equal to either side
    repeated = (same[:, 1:] | same[:, :-1]).sum(dim=1) + same[:, 0] + same[:, -1]
    return False, overflow, int(repeated.max())


def overflow_message(name: str, dtype: torch.dtype) -> str:
    """The error for an argument whose differences overflow its dtype (the estimators' and the ops' alike)."""
    return (
        f"{name}: the differences between its samples overflow {dtype} (a column spans more than the largest "
        "finite value); rescale it or pass normalize=True"
    )


# Groups of one ksg_counts call, at most: the C++ kernel takes the marginals as 64-bit masks.
MAX_GROUPS = 62


def _check_marginals(groups: list[torch.Tensor], marginals: list[int], algorithm: int) -> None:
    if len(groups) > MAX_GROUPS:
        raise ValueError(f"mipp::ksg_counts: at most {MAX_GROUPS} groups, got {len(groups)}")
    if not marginals or any(not 0 < m < 1 << len(groups) for m in marginals):
        raise ValueError(
            f"mipp::ksg_counts: marginals must be non-empty bitmasks of the {len(groups)} groups (each in "
            f"[1, {(1 << len(groups)) - 1}]), got {list(marginals)}"
        )
    if algorithm not in (1, 2):
        raise ValueError(f"mipp::ksg_counts: algorithm must be 1 or 2, got {algorithm}")


def _batch_rows(groups, radius=None, q0=0, q1=-1):
    batch = reference.batch_size(groups)
    if radius is not None:
        batch = max(batch, int(radius.shape[0]))
    r0, r1 = _rows(int(groups[0].shape[1]), q0, q1)
    return batch, r1 - r0


# The distance ops take the query rows [q0, q1) (q1 = -1: all N): their outputs have one row per query, the
# candidates are always all N samples (mipp.distributed splits one estimate's rows across processes).


@torch.library.custom_op("mipp::knn_distance", mutates_args=(), device_types="cuda")
def knn_distance(groups: list[torch.Tensor], k: int, q0: int = 0, q1: int = -1) -> torch.Tensor:
    """(B, M) k-th nearest-neighbour max-norm distance of the query rows in the joint space of ``groups``
    (self excluded)."""
    q0, q1 = _check("knn_distance", groups, k=k, q0=q0, q1=q1)
    return _cuda_kernel("knn_distance")(groups, k, q0, q1)


@knn_distance.register_kernel("cpu")
def _knn_distance_cpu(groups, k, q0=0, q1=-1):
    q0, q1 = _check("knn_distance", groups, k=k, q0=q0, q1=q1)
    return _cpu_kernel("knn_distance", groups[0].dtype)(groups, k, q0, q1)


@knn_distance.register_fake
def _knn_distance_fake(groups, k, q0=0, q1=-1):
    return groups[0].new_empty(_batch_rows(groups, None, q0, q1))


@torch.library.custom_op("mipp::count_within", mutates_args=(), device_types="cuda")
def count_within(
    groups: list[torch.Tensor], radius: torch.Tensor, strict: bool, q0: int = 0, q1: int = -1
) -> torch.Tensor:
    """(B, M) int64 number of j != i within ``radius[b, i - q0]`` (``<`` if strict, else ``<=``)."""
    q0, q1 = _check("count_within", groups, radius=radius, q0=q0, q1=q1)
    return _cuda_kernel("count_within")(groups, radius, strict, q0, q1)


@count_within.register_kernel("cpu")
def _count_within_cpu(groups, radius, strict, q0=0, q1=-1):
    q0, q1 = _check("count_within", groups, radius=radius, q0=q0, q1=q1)
    return _cpu_kernel("count_within", groups[0].dtype)(groups, radius, strict, q0, q1)


@count_within.register_fake
def _count_within_fake(groups, radius, strict, q0=0, q1=-1):
    return radius.new_empty(_batch_rows(groups, radius, q0, q1), dtype=torch.int64)


@torch.library.custom_op("mipp::marginal_radius", mutates_args=(), device_types="cuda")
def marginal_radius(groups: list[torch.Tensor], radius: torch.Tensor, q0: int = 0, q1: int = -1) -> torch.Tensor:
    """(B, M, G) per-group largest distance to the samples within the joint ``radius`` (KSG-2)."""
    q0, q1 = _check("marginal_radius", groups, radius=radius, q0=q0, q1=q1)
    return _cuda_kernel("marginal_radius")(groups, radius, q0, q1)


@marginal_radius.register_kernel("cpu")
def _marginal_radius_cpu(groups, radius, q0=0, q1=-1):
    q0, q1 = _check("marginal_radius", groups, radius=radius, q0=q0, q1=q1)
    return _cpu_kernel("marginal_radius", groups[0].dtype)(groups, radius, q0, q1)


@marginal_radius.register_fake
def _marginal_radius_fake(groups, radius, q0=0, q1=-1):
    return radius.new_empty((*_batch_rows(groups, radius, q0, q1), len(groups)))


@torch.library.custom_op("mipp::ksg_counts", mutates_args=(), device_types="cuda")
def ksg_counts(
    groups: list[torch.Tensor], k: int, marginals: list[int], algorithm: int, q0: int = 0, q1: int = -1, names: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """One KSG estimate in one call: (B, M) k-th joint distances of the query rows and (B, C, M) int64 counts, one
    row per marginal (a bitmask of the groups); algorithm 1 counts < eps, 2 counts <= the marginal radii (see
    mipp.reference.ksg_counts). ``names``: the groups' argument names for the errors (the estimators')."""
    q0, q1 = _check("ksg_counts", groups, k=k, q0=q0, q1=q1, names=names)
    _check_marginals(groups, marginals, algorithm)
    return _ksg_counts_cuda(groups, k, marginals, algorithm, q0, q1)


@ksg_counts.register_kernel("cpu")
def _ksg_counts_cpu(groups, k, marginals, algorithm, q0=0, q1=-1, names=""):
    q0, q1 = _check("ksg_counts", groups, k=k, q0=q0, q1=q1, names=names)
    _check_marginals(groups, marginals, algorithm)
    return _cpu_kernel("ksg_counts", groups[0].dtype)(groups, k, marginals, algorithm, q0, q1)


@ksg_counts.register_fake
def _ksg_counts_fake(groups, k, marginals, algorithm, q0=0, q1=-1, names=""):
    batch, rows = _batch_rows(groups, None, q0, q1)
    return groups[0].new_empty(batch, rows), groups[0].new_empty((batch, len(marginals), rows), dtype=torch.int64)


def _check_ross(x: torch.Tensor, classes: torch.Tensor, strata: torch.Tensor, k_each: torch.Tensor) -> None:
    _check("ross_counts", [x])
    n = int(x.shape[1])
    for name, c in (("classes", classes), ("strata", strata), ("k_each", k_each)):
        if c.dtype != torch.int64 or c.shape != (n,) or c.device != x.device:
            raise ValueError(
                f"mipp::ross_counts: {name} must be int64 of shape ({n},) on {x.device}, got {c.dtype} of shape "
                f"{tuple(c.shape)} on {c.device}"
            )
    if n and (int(classes.min()) < 0 or int(strata.min()) < 0):
        raise ValueError("mipp::ross_counts: classes and strata must be codes >= 0")
    if n and not bool(((k_each >= 1) & (k_each < torch.bincount(classes)[classes])).all()):
        raise ValueError("mipp::ross_counts: every k_each[i] must be at least 1 and below the size of i's class")


def _ross_counts_cpu_kernel(x, classes, strata, k_each):
    """The extension's one-column kernel; other widths and dtypes compose the CPU kernels (the reference's
    composition)."""
    if _ext._C is not None and x.dtype in (torch.float32, torch.float64) and x.shape[2] == 1:
        return _ext.ross_counts(x, classes, strata, k_each)
    kernels = tuple(_cpu_kernel(op, x.dtype) for op in ("knn_distance", "count_within"))
    return reference.ross_counts(x, classes, strata, k_each, kernels=kernels)


def _ross_counts_cuda(x, classes, strata, k_each):
    """ross_counts on CUDA: the specification's composition on the Triton kernels."""
    kernels = tuple(_cuda_kernel(op) for op in ("knn_distance", "count_within"))
    return reference.ross_counts(x, classes, strata, k_each, kernels=kernels)


@torch.library.custom_op("mipp::ross_counts", mutates_args=(), device_types="cuda")
def ross_counts(
    x: torch.Tensor, classes: torch.Tensor, strata: torch.Tensor, k_each: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The neighbour counts of Ross's estimator for continuous x (B, N, d) and int64 codes (N,): eps (B, N), the
    distance to the k_each[i]-th neighbour of i's class, and int64 (B, N) counts tied (i's class, <= eps), lt
    and le (i's stratum, < and <= eps); see mipp.reference.ross_counts."""
    _check_ross(x, classes, strata, k_each)
    return _ross_counts_cuda(x, classes, strata, k_each)


@ross_counts.register_kernel("cpu")
def _ross_counts_cpu(x, classes, strata, k_each):
    _check_ross(x, classes, strata, k_each)
    return _ross_counts_cpu_kernel(x, classes, strata, k_each)


@ross_counts.register_fake
def _ross_counts_fake(x, classes, strata, k_each):
    shape = (int(x.shape[0]), int(x.shape[1]))
    return x.new_empty(shape), *(x.new_empty(shape, dtype=torch.int64) for _ in range(3))


def _digamma_sum_ext(counts: torch.Tensor, offset: int, reduce: bool, fn) -> torch.Tensor:
    """Run an extension digamma kernel ``fn(counts_ptr, rows, n, offset, reduce, out_ptr)`` on integer counts
    viewed as (rows, n): n = the last dim (1 for a 0-d tensor), rows = the product of the others (1 for 0-d or
    1-d), so counts of shape (..., 0) reduce to zeros. Floating counts are outside the kernels' int64
    contract and take the reference."""
    if counts.is_floating_point() or counts.is_complex():
        return reference.digamma_sum(counts, offset, reduce)
    if counts.dtype != torch.int64:  # each torch op, a no-op included, costs 5-15 us beside a 1 ms estimate
        counts = counts.to(torch.int64)
    counts = counts.contiguous()
    n = int(counts.shape[-1]) if counts.dim() else 1
    rows = counts.shape[:-1].numel()
    out = torch.empty(counts.shape[:-1] if reduce else counts.shape, dtype=torch.float64, device=counts.device)
    fn(counts.data_ptr(), rows, n, int(offset), bool(reduce), out.data_ptr())
    return out


def _digamma_sum_cuda(counts: torch.Tensor, offset: int, reduce: bool) -> torch.Tensor:
    if not _ext.has_cuda():
        _fallback_warning("digamma_sum", _ext.MISSING_REASON or "the extension was built without CUDA")
        return reference.digamma_sum(counts, offset, reduce)
    stream = torch.cuda.current_stream(counts.device).cuda_stream
    return _digamma_sum_ext(counts, offset, reduce, lambda *a: _ext._C.digamma_sum_cuda(*a, stream))


def _digamma_sum_cpu(counts: torch.Tensor, offset: int, reduce: bool) -> torch.Tensor:
    if _ext._C is None:
        _ext.warn_fallback()
        return reference.digamma_sum(counts, offset, reduce)
    _ext.paths["digamma_sum:cpu"] += 1
    threads = torch.get_num_threads()
    return _digamma_sum_ext(counts, offset, reduce, lambda *a: _ext._C.digamma_sum_cpu(*a, threads))


@torch.library.custom_op("mipp::digamma_sum", mutates_args=(), device_types="cuda")
def digamma_sum(counts: torch.Tensor, offset: int, reduce: bool) -> torch.Tensor:
    """psi(counts + offset) in float64 (integer counts), summed over the last dim in a fixed order."""
    return _digamma_sum_cuda(counts, offset, reduce)


digamma_sum.register_kernel("cpu")(_digamma_sum_cpu)


@digamma_sum.register_fake
def _digamma_sum_fake(counts, offset, reduce):
    return counts.new_empty(counts.shape[:-1] if reduce else counts.shape, dtype=torch.float64)


def trusted(op: str, *args, **check):
    """``torch.ops.mipp.<op>(*args, **check)`` for callers that have checked the arguments themselves (the
    estimators, under the user's names) and pass explicit query rows: in eager mode the kernel runs directly,
    without a second check and without the dispatcher; under torch.compile it is the registered op, whose check
    runs inside the graph at run time (the estimators' own checks are data-dependent and skipped while tracing),
    with ``check`` (ksg_counts' ``names``) wording its errors as the eager checks do."""
    if torch.compiler.is_compiling():
        return getattr(torch.ops.mipp, op)(*args, **check)
    if op not in ("ross_counts", "digamma_sum"):
        return _pairwise_kernel(op, args[0])(*args)
    device = args[0].device.type
    if op == "ross_counts":
        ross = {"cpu": _ross_counts_cpu_kernel, "cuda": _ross_counts_cuda}.get(device, reference.ross_counts)
        return ross(*args)
    digamma = {"cpu": _digamma_sum_cpu, "cuda": _digamma_sum_cuda}.get(device)
    return digamma(*args) if digamma else torch.ops.mipp.digamma_sum(*args)
