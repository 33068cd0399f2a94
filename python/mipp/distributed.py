"""mipp across processes and GPUs with torch.distributed (gloo on CPUs, NCCL on GPUs; launched with
torchrun, SLURM or any launcher that sets its environment). Every helper takes an initialised process
group (``group=None``: the default group), is called by every rank with the same arguments, and returns the
same result on every rank, bit for bit equal to the single-process call:

* batched estimates (``mi``, ``cmi``, ``mi_per_feature``, ``permutation_test``): the problems (features,
  surrogates) are split into contiguous blocks across ranks; each problem's value does not depend on the
  batch it is computed in, so gathering them in order reproduces the single-process tensor;
* ``estimate_many``: a heterogeneous list of estimates, assigned to ranks by their cost (N^2 x dims),
  largest first, to the least loaded rank;
* ``mi_rows``: one large estimate whose query rows are split across ranks; each rank computes its rows'
  k-th distances and neighbour counts (no rank holds more than its rows' tiles), the integer counts are
  gathered and every rank sums the digamma terms over all of them in the single-process order (float64).

Failures: each rank's work runs under a guard and the ranks exchange a status before any result, so an
exception on one rank makes every rank raise a RuntimeError naming the rank and its error instead of
waiting in a collective. A rank that dies outright (killed, segfault) is bounded by the process group's
own timeout (``init_process_group(timeout=...)``).
"""

from __future__ import annotations

import heapq
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist

from mipp import ksg


def _rank_world(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "mipp.distributed needs an initialised process group: call "
            "torch.distributed.init_process_group first (e.g. under torchrun)"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def blocks(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges of ``total`` items for ``parts`` ranks, sizes differing by at most one."""
    base, extra = divmod(total, parts)
    out, lo = [], 0
    for r in range(parts):
        hi = lo + base + (r < extra)
        out.append((lo, hi))
        lo = hi
    return out


def balanced(costs: list[float], parts: int) -> list[list[int]]:
    """Items assigned to ``parts`` ranks by cost: largest first to the least loaded rank (ties: lower rank),
    so the assignment is the same on every rank."""
    heap = [(0.0, r) for r in range(parts)]
    owners: list[list[int]] = [[] for _ in range(parts)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        owners[r].append(i)
        heapq.heappush(heap, (load + costs[i], r))
    return [sorted(o) for o in owners]


def _guarded(fn, group):
    """Run fn() on every rank; if any rank raised, every rank raises naming it (statuses exchanged first)."""
    rank, world = _rank_world(group)
    result, error = None, None
    try:
        result = fn()
    except Exception as exc:  # reported to every rank below, then re-raised there
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    statuses: list = [None] * world
    dist.all_gather_object(statuses, error, group=group)
    failed = [(r, e) for r, e in enumerate(statuses) if e is not None]
    if failed:
        r, e = failed[0]
        raise RuntimeError(
            f"mipp.distributed: rank {r} of {world} failed: {e.splitlines()[0]}"
            f"{' (and ' + str(len(failed) - 1) + ' more ranks)' if len(failed) > 1 else ''}"
        )
    return result


def _gather_rows(local: torch.Tensor, sizes: list[int], group) -> torch.Tensor:
    """Concatenate every rank's ``local`` (rows of lengths ``sizes``, same trailing shape) in rank order."""
    rank, world = _rank_world(group)
    width = max(sizes) if sizes else 0
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def shard_map(evaluate, total: int, group=None) -> torch.Tensor:
    """``evaluate(lo, hi)`` -> (hi - lo, ...) on each rank's contiguous block of ``total`` problems, gathered
    in order on every rank."""
    rank, world = _rank_world(group)
    spans = blocks(total, world)
    lo, hi = spans[rank]
    local = _guarded(lambda: evaluate(lo, hi), group)
    return _gather_rows(local, [b - a for a, b in spans], group)


def _batch_of(args: list) -> int:
    sizes = {int(a.shape[0]) for a in args if isinstance(a, torch.Tensor) and a.dim() == 3 and a.shape[0] != 1}
    if len(sizes) > 1:
        raise ValueError(f"batched arguments have different batch sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _sharded(estimator, tensors: dict, group, **kwargs) -> torch.Tensor:
    """A batched estimator call with its problems split across ranks."""
    tensors = {k: (ksg.as_tensor(k, v) if v is not None else None) for k, v in tensors.items()}
    total = _batch_of(list(tensors.values()))

    def evaluate(lo, hi):
        part = {k: ksg.batch_slice(v, lo, hi, total) for k, v in tensors.items()}
        if total == 1:  # an unbatched call: nothing to split, rank 0 computes it
            return estimator(**part, **kwargs).reshape(1) if lo == 0 and hi > 0 else torch.empty(0, dtype=torch.float64)
        return estimator(**part, **kwargs)

    out = shard_map(evaluate, total, group)
    batched = any(v is not None and v.dim() == 3 for v in tensors.values())
    return out if batched else out[0]


def mi(x, y, k: int = 3, *, group=None, **kwargs) -> torch.Tensor:
    """:func:`mipp.mi` with a batched call's problems split across the ranks of ``group``."""
    return _sharded(lambda x, y: ksg.mi(x, y, k, **kwargs), {"x": x, "y": y}, group)


def cmi(x, y, z, k: int = 3, *, group=None, **kwargs) -> torch.Tensor:
    """:func:`mipp.cmi` with a batched call's problems split across the ranks of ``group``."""
    return _sharded(lambda x, y, z: ksg.cmi(x, y, z, k, **kwargs), {"x": x, "y": y, "z": z}, group)


def mi_per_feature(X, Y, k: int = 3, *, group=None, **kwargs) -> torch.Tensor:
    """:func:`mipp.mi_per_feature` with the features split across the ranks of ``group``."""
    X = ksg.as_tensor("X", X)
    if X.dim() != 2:
        raise ValueError(f"X must be a 2-D tensor (N, D), got shape {tuple(X.shape)}")
    return shard_map(lambda lo, hi: ksg.mi_per_feature(X[:, lo:hi], Y, k, **kwargs), X.shape[1], group)


def permutation_test(x, y, z=None, k: int = 3, *, group=None, **kwargs) -> ksg.PermutationResult:
    """:func:`mipp.permutation_test` with the data and surrogates split across the ranks of ``group``. The
    permutations are drawn on every rank from the same ``generator`` (a CPU one, seeded alike), so every
    rank evaluates its block of exactly the single-process surrogates."""
    return ksg._permutation_test(
        x, y, z, k, batch_map=lambda evaluate, total: shard_map(evaluate, total, group), **kwargs
    )


def estimate_many(calls: list[tuple[str, tuple, dict]], group=None) -> list[torch.Tensor]:
    """Run a heterogeneous list of estimates, ``(name, args, kwargs)`` with name one of "mi", "cmi",
    "mi_per_feature", assigned to ranks by cost (N^2 x total dims, largest first to the least loaded rank).
    Returns every result, in order, on every rank."""
    rank, world = _rank_world(group)
    fns: dict[str, Callable[..., torch.Tensor]] = {"mi": ksg.mi, "cmi": ksg.cmi, "mi_per_feature": ksg.mi_per_feature}
    costs = []
    for name, args, _ in calls:
        if name not in fns:
            raise ValueError(f"unknown estimator {name!r}; use one of {sorted(fns)}")
        ts = [ksg.as_tensor("argument", a) for a in args if a is not None and not isinstance(a, (int, float))]
        n = max((t.shape[-2] if t.dim() == 3 else t.shape[0]) for t in ts)
        dims = sum((t.shape[-1] if t.dim() > 1 else 1) * (t.shape[0] if t.dim() == 3 else 1) for t in ts)
        costs.append(float(n) ** 2 * dims)
    owners = balanced(costs, world)
    mine = _guarded(lambda: [fns[calls[i][0]](*calls[i][1], **calls[i][2]) for i in owners[rank]], group)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, [t.cpu() for t in mine], group=group)
    out: list = [None] * len(calls)
    for r, items in enumerate(owners):
        for i, t in zip(items, gathered[r]):
            out[i] = t
    return out


def mi_rows(x, y, k: int = 3, *, group=None, normalize: bool = False, reduction: str = "mean") -> torch.Tensor:
    """One large KSG-1 estimate of I(x; y) with the query rows split across ranks: each rank computes its
    rows' neighbour counts (``mipp.mi(..., rows=..., reduction="counts")``: no rank holds more than its rows'
    tiles), the counts are gathered, and every rank sums psi over all of them in the single-process order
    (``ksg.mi_from_counts``). 0-d float64 (or the (N,) local values with ``reduction="none"``), bit for bit
    the single-process ``mipp.mi(x, y, k, normalize=normalize, reduction=reduction)``."""
    ksg._check_reduction(reduction)
    rank, world = _rank_world(group)
    x, y = ksg.as_tensor("x", x), ksg.as_tensor("y", y)
    if x.dim() == 3 or y.dim() == 3:
        raise ValueError("mi_rows takes one (unbatched) estimate; split batched problems with distributed.mi")
    spans = blocks(int(x.shape[0]), world)
    lo, hi = spans[rank]
    local = _guarded(lambda: ksg.mi(x, y, k, normalize=normalize, rows=(lo, hi), reduction="counts"), group)
    counts = _gather_rows(local, [b - a for a, b in spans], group)  # (N, 2)
    return ksg.mi_from_counts(counts, k, reduction=reduction)
