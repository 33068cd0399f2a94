"""k-th nearest-neighbour distance in a joint max-norm space (Triton).

Math. For problem b and sample i, with d(i, j) = max over the column groups of the group max-norm
distances (see ``_tiles``), ``out[b, i]`` is the k-th smallest of the multiset {d(i, j) : j != i}.
The sample itself is excluded by index; ties count with multiplicity, so duplicated rows give d = 0
and the k-th distance can be 0. With k == N the result is +inf (fewer than k other samples), as in
``mipp.reference.knn_distance``, which this kernel equals bit for bit.

Inputs (trusted: ``mipp.ops`` checks them). ``groups``: 1 to 3 tensors (B_g, N, d_g), one float dtype
(float32/float64) and device, B_g in {1, B}, any strides, finite values; the query rows [q0, q1), M = q1 - q0.
``k``: an int, 1 <= k <= N; above K_CAP (64) this kernel refuses it.
Output. (B, M) tensor of the groups' dtype.

Algorithm. A program owns BLOCK_Q query rows of BB problems and streams the candidates in tiles of
BLOCK_N rows; memory is the packed copy of the groups (O(B N d), see ``_tiles``) and the per-query
state in registers, never N x N. Per (problem, query) it keeps ``state``: the K_PAD
(k rounded up to a power of two) smallest distances seen, sorted in *descending* order. A tile is merged
by taking its K_PAD smallest per row in ascending order (a bitonic top-k; a tile of fewer than K_PAD
candidates is sorted and counts as padded with +inf), the elementwise minimum with the descending state
(a bitonic sequence holding the K_PAD smallest of the union, multiplicities included), and one bitonic
merge back to descending order. The k-th smallest is ``state[K_PAD - k]``. Each thread holds whole
candidate rows of its queries, so the networks are min/max instructions inside the thread. A tile in
which no candidate is below its query's current k-th distance cannot change any k-th distance (a
candidate equal to it leaves the k-th value unchanged) and is skipped; the test is block-wide (all
BB x BLOCK_Q queries of the program), so skips become common once the k-th distances have shrunk.

Batching. A group with B_g == 1 is shared by the batch: its distance tile is computed once for the BB
problems of a program (_tiles._group_distance), so a ``y`` shared by many ``x`` costs one distance
evaluation per pair and block instead of one per problem; BB = min(BATCH_CAP, BATCH_STATE // K_PAD, B
rounded up to a power of two), as the state grows with BB.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mipp_kernels._tiles import (
    INTERPRET,
    TUNING_KEY,
    Groups,
    _candidate_indices,
    _joint_distance,
    _query_indices,
    batch_block,
    device_guard,
    grid,
    next_power_of_2,
    prune_registers,
    row_multiple,
    tile_configs,
)

# Largest supported k: each thread keeps K_PAD distances per (problem, query) of its own in registers;
# beyond 64 that no longer fits in the register file.
K_CAP = 64
# Problems per program when a group is shared by the batch, at most BATCH_STATE // K_PAD (the state
# grows with BB).
BATCH_CAP = 4
BATCH_STATE = 32
# Registers per thread for the tile and the state (_live_values); above this, configs spill on sm_90.
_MAX_WORDS = 140


def _live_values(block_n: int, meta: dict) -> int:
    """Values per query held by a thread: the (BB, BLOCK_N) distance tile and the (BB, K_PAD) state."""
    return meta["BB"] * (block_n + meta["K_PAD"])


# (BLOCK_Q, BLOCK_N, warps): BLOCK_Q / (32 warps) queries and BLOCK_N candidates per thread. Small
# candidate tiles are skipped more often once the k-th distances have shrunk. The first config, the
# smallest, fits every K_PAD and BB the launcher passes without spilling (k = 64 in float64: 238
# registers). Under the interpreter BLOCK_N = 16 exercises all three merge paths (K_PAD below, equal to
# and above BLOCK_N) in the tests.
GPU_CONFIGS = tile_configs((128, 8, 4), (128, 16, 4), (256, 8, 4), (256, 16, 4), (128, 32, 4), (64, 16, 2))
_CONFIGS = tile_configs((32, 16, 1)) if INTERPRET else GPU_CONFIGS
_ROWS = row_multiple(_CONFIGS)


# ---------------------------------------------------------------------------------------------------
# Bitonic networks along the candidate dimension (axis 1) of a (BB, L, BQ) tile, on its hypercube view:
# the tile of 2**n values reshaped to [2] * n, where hypercube axis n-1-T-j holds bit j of the candidate
# index (T = log2(BQ) trailing query axes). Each thread holds whole candidate rows, so a compare-exchange
# layer is a min and a max inside the thread, and the direction masks are compile-time constants.


@triton.constexpr_function
def _log2(n):
    return int(n).bit_length() - 1


@triton.jit
def _bit(n: tl.constexpr, axis: tl.constexpr):
    """The 0/1 index along hypercube ``axis``, shaped to broadcast against a [2] * n hypercube."""
    return tl.reshape(tl.arange(0, 2), [1] * axis + [2] + [1] * (n - 1 - axis))


@triton.jit
def _exchange(h, axis: tl.constexpr, descending):
    """One compare-exchange layer: the pairs along hypercube ``axis`` are ordered ascending or, where
    ``descending`` (0/1, broadcastable) is set, descending."""
    lo = tl.min(h, axis=axis, keep_dims=True)
    hi = tl.max(h, axis=axis, keep_dims=True)
    return tl.where((_bit(len(h.shape), axis) ^ descending) != 0, hi, lo)


@triton.jit
def _merge(h, s: tl.constexpr, T: tl.constexpr, descending):
    """Sort every bitonic run of 2**s candidates, ascending or, where ``descending`` is set, descending:
    s compare-exchange layers, from bit s-1 down to bit 0 of the candidate index."""
    for i in tl.static_range(s):
        h = _exchange(h, len(h.shape) - 1 - T - (s - 1 - i), descending)
    return h


@triton.jit
def _smallest(d, K_PAD: tl.constexpr):
    """The K_PAD smallest values of every candidate row of ``d`` (BB, L, BQ), L >= K_PAD both powers of
    two, as (BB, K_PAD, BQ) in ascending order, multiplicities kept (bitonic top-k)."""
    T: tl.constexpr = _log2(d.shape[2])
    LOG_L: tl.constexpr = _log2(d.shape[1])
    LOG_K: tl.constexpr = _log2(K_PAD)
    n: tl.constexpr = _log2(d.numel)
    h = tl.reshape(d, [2] * n)
    # Sort runs of K_PAD, alternately ascending and descending (direction = the next bit), so that
    # neighbouring runs form bitonic pairs; a run that is the whole row is sorted ascending.
    for s in tl.static_range(1, LOG_K + 1):
        if s < LOG_L:
            h = _merge(h, s, T, _bit(n, n - 1 - T - s))
        else:
            h = _merge(h, s, T, 0)
    # Halve the rows: the elementwise min of an ascending and a descending run is a bitonic run holding
    # the K_PAD smallest of the pair; sort it again (alternating until one run is left, then ascending).
    for i in tl.static_range(LOG_L - LOG_K):
        h = tl.min(h, axis=len(h.shape) - 1 - T - LOG_K)
        if i < LOG_L - LOG_K - 1:
            h = _merge(h, LOG_K, T, _bit(len(h.shape), len(h.shape) - 1 - T - LOG_K))
        else:
            h = _merge(h, LOG_K, T, 0)
    return tl.reshape(h, [d.shape[0], K_PAD, d.shape[2]])


@triton.jit
def _sort_bitonic(x):
    """Sort the bitonic candidate rows of ``x`` (BB, K_PAD, BQ) into descending order."""
    h = _merge(tl.reshape(x, [2] * _log2(x.numel)), _log2(x.shape[1]), _log2(x.shape[2]), 1)
    return tl.reshape(h, x.shape)


@triton.jit
def _merge_tile(state, d):
    """Merge the distance tile ``d`` (BB, BN, BQ) into the descending ``state`` (BB, K_PAD, BQ): the
    K_PAD smallest of both, descending. The elementwise min of a descending and an ascending sequence
    is bitonic and holds the smallest half of the union, so one bitonic merge finishes the job. A tile
    shorter than the state counts as padded with +inf: only the first BN slots of the state can change."""
    BB: tl.constexpr = state.shape[0]
    K_PAD: tl.constexpr = state.shape[1]
    BN: tl.constexpr = d.shape[1]
    BQ: tl.constexpr = state.shape[2]
    if BN >= K_PAD:
        merged = tl.minimum(state, _smallest(d, K_PAD))
    else:
        blocks = tl.reshape(state, [BB, K_PAD // BN, BN, BQ])
        first = tl.arange(0, K_PAD // BN)[None, :, None, None] == 0
        blocks = tl.where(first, tl.minimum(blocks, _smallest(d, BN)[:, None, :, :]), blocks)
        merged = tl.reshape(blocks, [BB, K_PAD, BQ])
    return _sort_bitonic(merged)


@triton.autotune(
    configs=_CONFIGS,
    key=TUNING_KEY + ["K_PAD"],
    prune_configs_by={"early_config_prune": prune_registers(_MAX_WORDS, _live_values)},
)
@triton.jit
def _knn_distance_kernel(
    out_ptr,
    x0_ptr,
    x1_ptr,
    x2_ptr,
    N,
    B,
    Q0,
    M,
    D0,
    D1,
    D2,
    s0b,
    s0d,
    s1b,
    s1d,
    s2b,
    s2d,
    K: tl.constexpr,
    K_PAD: tl.constexpr,
    G: tl.constexpr,
    SHARED0: tl.constexpr,
    SHARED1: tl.constexpr,
    SHARED2: tl.constexpr,
    BB: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    b, q0, q, out_mask = _query_indices(tl.program_id(0), B, Q0, M, BB, BLOCK_Q)
    # state: the K_PAD smallest distances seen per (problem, query), descending; kth: its k-th smallest
    state = tl.full((BB, K_PAD, BLOCK_Q), float("inf"), dtype=x0_ptr.dtype.element_ty)
    kth = tl.full((BB, 1, BLOCK_Q), float("inf"), dtype=x0_ptr.dtype.element_ty)
    slot = tl.arange(0, K_PAD)[None, :, None]
    for n0 in range(0, N, BLOCK_N):
        pair_ok = _candidate_indices(n0, q, N, BLOCK_N)
        d = _joint_distance(
            x0_ptr,
            x1_ptr,
            x2_ptr,
            D0,
            D1,
            D2,
            s0b,
            s0d,
            s1b,
            s1d,
            s2b,
            s2d,
            b,
            q0,
            n0,
            BLOCK_Q,
            BLOCK_N,
            G,
            SHARED0,
            SHARED1,
            SHARED2,
        )
        d = tl.broadcast_to(tl.where(pair_ok, d, float("inf")), (BB, BLOCK_N, BLOCK_Q))
        if tl.max((d < kth).to(tl.int32)) > 0:
            state = _merge_tile(state, d)
            # state is descending: entries 0 .. K_PAD-K are >= the k-th smallest, state[K_PAD-K]
            kth = tl.min(tl.where(slot <= K_PAD - K, state, float("inf")), axis=1, keep_dims=True)
    tl.store(out_ptr + b * M + (q - Q0), kth, mask=out_mask)


def knn_distance(groups: list[torch.Tensor], k: int, q0: int, q1: int) -> torch.Tensor:
    """(B, q1 - q0) distance from each query sample q0 .. q1-1 to its k-th nearest neighbour among all N in
    the joint max-norm space of ``groups`` (self excluded by index, ties with multiplicity); see the module
    docstring. k above K_CAP is beyond this kernel: a ValueError."""
    if k > K_CAP:
        raise ValueError(
            f"knn_distance: k={k} is outside 1..{K_CAP}; the Triton kernel keeps k distances "
            f"per sample in registers and supports k <= K_CAP={K_CAP}"
        )
    g = Groups.of(groups, "knn_distance")
    m = q1 - q0
    out = torch.empty((g.batch, m), dtype=g.dtype, device=g.device)
    if out.numel() == 0:
        return out
    k_pad = next_power_of_2(k)
    bb = batch_block(g.batch, g.any_shared(g.batch), max(1, min(BATCH_CAP, BATCH_STATE // k_pad)))
    ptrs, strides = g.pack(_ROWS)
    with device_guard(g.device):
        _knn_distance_kernel[grid(m, g.batch, bb)](
            out, *ptrs, g.n, g.batch, q0, m, *g.dims, *strides, K=k, K_PAD=k_pad, BB=bb, **g.constexprs
        )
    return out
