"""Neighbour counts within a radius in a joint max-norm space (Triton).

Math. For problem b and sample i, with d(i, j) = max over the column groups of the group max-norm
distances (see ``_tiles``), ``out[b, i] = #{j != i : d(i, j) < radius[b, i]}`` when ``strict`` and
``#{j != i : d(i, j) <= radius[b, i]}`` otherwise. The sample itself is excluded by index; duplicated
rows (d = 0) count; a radius of +inf counts all N - 1 other samples. Equal to
``mipp.reference.count_within`` exactly (the distances are bit-identical and the comparison is exact).

Inputs (trusted: ``mipp.ops`` checks them). ``groups``: 1 to 3 tensors (B_g, N, d_g), one float dtype
(float32/float64) and device, B_g in {1, B}, any strides, finite values; the query rows [q0, q1), M = q1 - q0.
``radius``: (B_r, M) of the same dtype and device, B_r in {1, B}.
``strict``: bool.
Output. (B, M) int64, B = max(B_g, B_r).

Algorithm and batching. A program owns BLOCK_Q query rows of BB problems, streams candidate tiles of
BLOCK_N rows and keeps one int32 count per (problem, query). A group with B_g == 1 is shared by the
batch: its distance tile is computed once and compared against the BB radii of the block, so the KSG
counts in a shared ``y`` under the radii of many problems cost one distance evaluation per pair and
block (BB = min(BATCH_CAP, B rounded up to a power of two) when there is something to share, else
1). The counts are summed over the candidates inside each thread (int32, N < 2**31).
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
    batched_rows,
    device_guard,
    grid,
    prune_registers,
    radius_batch,
    row_multiple,
    tile_configs,
)

# Problems per program when the batch shares a group: the shared distance tile is computed once and
# compared with BB radii.
BATCH_CAP = 8
# Registers per thread for the live tiles (_live_values); above this, configs spill on sm_90.
_MAX_WORDS = 128


def _live_values(block_n: int, meta: dict) -> int:
    """Values per query held by a thread: the distance tile, (BB, BLOCK_N) when a group is per problem
    and (1, BLOCK_N) when all are shared (the comparisons with the BB radii are summed on the fly)."""
    return batched_rows(meta) * block_n


# (BLOCK_Q, BLOCK_N, warps): BLOCK_Q / (32 warps) queries and BLOCK_N candidates per thread. The first
# config fits every BB <= BATCH_CAP, even with a group per problem, in float64.
GPU_CONFIGS = tile_configs((128, 8, 4), (128, 16, 4), (256, 16, 4), (512, 8, 4), (256, 32, 8), (128, 32, 4))
_CONFIGS = tile_configs((32, 16, 1)) if INTERPRET else GPU_CONFIGS
_ROWS = row_multiple(_CONFIGS)


@triton.autotune(
    configs=_CONFIGS, key=TUNING_KEY, prune_configs_by={"early_config_prune": prune_registers(_MAX_WORDS, _live_values)}
)
@triton.jit
def _count_within_kernel(
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
    STRICT: tl.constexpr,
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
    count = tl.zeros((BB, 1, BLOCK_Q), dtype=tl.int32)
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
        if STRICT:
            inside = d < r
        else:
            inside = d <= r
        count += tl.sum((inside & pair_ok).to(tl.int32), axis=1, keep_dims=True)
    tl.store(out_ptr + b * M + (q - Q0), count.to(tl.int64), mask=out_mask)


def count_within(groups: list[torch.Tensor], radius: torch.Tensor, strict: bool, q0: int, q1: int) -> torch.Tensor:
    """(B, q1 - q0) int64 number of samples j != i within ``radius[b, i - q0]`` of each query sample i in
    q0 .. q1-1 in the joint max-norm space of ``groups`` (``<`` when ``strict``, else ``<=``); see the module
    docstring."""
    g = Groups.of(groups, "count_within")
    m = q1 - q0
    batch, r_strides = radius_batch(radius, g)
    out = torch.empty((batch, m), dtype=torch.int64, device=g.device)
    if out.numel() == 0:
        return out
    bb = batch_block(batch, g.any_shared(batch), BATCH_CAP)
    ptrs, strides = g.pack(_ROWS)
    with device_guard(g.device):
        _count_within_kernel[grid(m, batch, bb)](
            out,
            radius,
            *ptrs,
            g.n,
            batch,
            q0,
            m,
            *g.dims,
            *strides,
            *r_strides,
            STRICT=strict,
            BB=bb,
            **g.constexprs,
        )
    return out
