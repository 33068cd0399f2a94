"""Marginal radii of the joint neighbourhoods (KSG algorithm 2), Triton.

Math. For problem b, sample i and each column group g, with d_g the group max-norm distance and
d = max_g d_g the joint distance (see ``_tiles``),
``out[b, i, g] = max{d_g(i, j) : j != i, d(i, j) <= radius[b, i]}``, and 0 when that set is empty.
With radius = the k-th neighbour distance these are eps_x(i), eps_y(i) of KSG-2. Every sample tied at
the radius belongs to the neighbourhood (an order-free rule), and the sample itself is excluded by
index, so duplicated rows count. Equal to ``mipp.reference.marginal_radius`` exactly (max is exact).

Inputs (trusted: ``mipp.ops`` checks them). ``groups``: 1 to 3 tensors (B_g, N, d_g), one float dtype
(float32/float64) and device, B_g in {1, B}, any strides, finite values; the query rows [q0, q1), M = q1 - q0.
``radius``: (B_r, M) of the same dtype and device, B_r in {1, B}.
Output. (B, M, G) of that dtype, B = max(B_g, B_r).

Algorithm and batching. As ``count``: a program owns BLOCK_Q query rows of BB problems, streams
candidate tiles and keeps G running maxima per (problem, query); a group shared by the batch has its
distance tile computed once for the BB problems of the block.
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
    _group_distance,
    _query_indices,
    batch_block,
    batched_rows,
    device_guard,
    grid,
    prune_registers,
    radius_batch,
    row_multiple,
    tile_configs,
)

# Problems per program when the batch shares a group (the shared tiles are computed once for BB radii).
BATCH_CAP = 4
# Registers per thread for the live tiles (_live_values); above this, configs spill on sm_90.
_MAX_WORDS = 256


def _live_values(block_n: int, meta: dict) -> int:
    """Values per query held by a thread: G group tiles and the joint one, (BB, BLOCK_N) when a group is
    per problem, (1, BLOCK_N) when all are shared."""
    return (meta["G"] + 1) * batched_rows(meta) * block_n


# (BLOCK_Q, BLOCK_N, warps): BLOCK_Q / (32 warps) queries and BLOCK_N candidates per thread; the first
# config fits every G and BB <= BATCH_CAP, even with groups per problem, in float64.
GPU_CONFIGS = tile_configs((128, 8, 4), (128, 16, 4), (256, 8, 4))
_CONFIGS = tile_configs((32, 16, 1)) if INTERPRET else GPU_CONFIGS
_ROWS = row_multiple(_CONFIGS)


@triton.jit
def _neighbourhood_max(acc, inside, d):
    """Running max of the group distances ``d`` over the pairs ``inside`` the joint radius."""
    return tl.maximum(acc, tl.max(tl.where(inside, d, 0.0), axis=1, keep_dims=True))


@triton.autotune(
    configs=_CONFIGS, key=TUNING_KEY, prune_configs_by={"early_config_prune": prune_registers(_MAX_WORDS, _live_values)}
)
@triton.jit
def _marginal_radius_kernel(
    out_ptr,
    r_ptr,
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
    srb,
    srn,
    G: tl.constexpr,
    SHARED0: tl.constexpr,
    SHARED1: tl.constexpr,
    SHARED2: tl.constexpr,
    BB: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    b, q0, q, out_mask = _query_indices(tl.program_id(0), B, Q0, M, BB, BLOCK_Q)
    r = tl.load(r_ptr + b * srb + (q - Q0).to(tl.int64) * srn, mask=out_mask, other=0.0)  # (BB, 1, BQ)
    acc0 = tl.zeros((BB, 1, BLOCK_Q), dtype=r_ptr.dtype.element_ty)
    acc1 = tl.zeros((BB, 1, BLOCK_Q), dtype=r_ptr.dtype.element_ty)
    acc2 = tl.zeros((BB, 1, BLOCK_Q), dtype=r_ptr.dtype.element_ty)
    for n0 in range(0, N, BLOCK_N):
        pair_ok = _candidate_indices(n0, q, N, BLOCK_N)
        d0 = _group_distance(x0_ptr, D0, s0b, s0d, b, q0, n0, BLOCK_Q, BLOCK_N, SHARED0)
        joint = d0
        if G > 1:
            d1 = _group_distance(x1_ptr, D1, s1b, s1d, b, q0, n0, BLOCK_Q, BLOCK_N, SHARED1)
            joint = tl.maximum(joint, d1)
        if G > 2:
            d2 = _group_distance(x2_ptr, D2, s2b, s2d, b, q0, n0, BLOCK_Q, BLOCK_N, SHARED2)
            joint = tl.maximum(joint, d2)
        inside = (joint <= r) & pair_ok
        acc0 = _neighbourhood_max(acc0, inside, d0)
        if G > 1:
            acc1 = _neighbourhood_max(acc1, inside, d1)
        if G > 2:
            acc2 = _neighbourhood_max(acc2, inside, d2)
    out = out_ptr + (b * M + (q - Q0)) * G
    tl.store(out, acc0, mask=out_mask)
    if G > 1:
        tl.store(out + 1, acc1, mask=out_mask)
    if G > 2:
        tl.store(out + 2, acc2, mask=out_mask)


def marginal_radius(groups: list[torch.Tensor], radius: torch.Tensor, q0: int, q1: int) -> torch.Tensor:
    """(B, q1 - q0, G) per-group largest distance from each query sample q0 .. q1-1 to the samples within its
    joint ``radius``; see the module docstring."""
    g = Groups.of(groups, "marginal_radius")
    m = q1 - q0
    batch, r_strides = radius_batch(radius, g)
    out = torch.empty((batch, m, g.count), dtype=g.dtype, device=g.device)
    if out.numel() == 0:
        return out
    bb = batch_block(batch, g.any_shared(batch), BATCH_CAP)
    ptrs, strides = g.pack(_ROWS)
    with device_guard(g.device):
        _marginal_radius_kernel[grid(m, batch, bb)](
            out, radius, *ptrs, g.n, batch, q0, m, *g.dims, *strides, *r_strides, BB=bb, **g.constexprs
        )
    return out
