"""Shared pieces of the mipp Triton kernels: the max-norm distance tile, the grid and the launch arguments.

Math. A *column group* is a tensor ``g`` of shape ``(B_g, N, d_g)``; the distance between samples i and j
of problem b in that group is the max-norm ``max_c |g[b, i, c] - g[b, j, c]|`` (0 when ``d_g == 0``); the
joint distance of up to ``MAX_GROUPS`` groups is the max of their group distances. Max and abs are exact
and the subtraction is rounded once in the input dtype, so the tiles below equal the pure-torch reference
(``mipp.reference``) bit for bit whatever the order of the reduction. The ``|a|^2 + |b|^2 - 2ab`` expansion
is never used.

Values must be finite (mipp.ops checks): the max is NaN-blind, as FMNMX is.

Layout. The launchers pack every group into a zero-padded copy of shape (B_g, d_g, N_pad), samples
contiguous and N_pad a multiple of every block size (``Groups.pack``): the loads of a column are then
contiguous (vectorised, coalesced), every row a tile touches exists (no load needs a mask or a clamp,
nothing wraps around), and the copy costs O(N d) against the O(N^2 d) of the kernels. Padded rows are
excluded by index from every result and store. Batch and column offsets are int64 (in the pointers).

Tiles are 3-D: ``(BB, BLOCK_N, BLOCK_Q)`` = (problems of the batch, candidate rows, query rows). The
queries come last so that Triton's default layout spreads them over the lanes and warps while each
thread holds all BLOCK_N candidates of its queries in registers: a candidate tile is reduced (counted,
maxed, sorted) inside the thread, and per column a thread loads its queries and the (warp-uniform)
candidates and does, in float32, two instructions per pair: a subtract and a max with a free |.|
(benchmarks/aot_compile.py measures the SASS).

A group shared by the whole batch (``B_g == 1``, constexpr ``SHARED``) yields a ``(1, BLOCK_N,
BLOCK_Q)`` tile that broadcasts over the ``BB`` problems: its distances are computed once for all of
them, which is the point of batching (a ``y`` shared by many ``x``, the surrogates of a permutation
test).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

MAX_GROUPS = 3
# The autotuners tune once per problem size and group structure (and dtype, which Triton adds).
TUNING_KEY = ["N", "D0", "D1", "D2", "G", "SHARED0", "SHARED1", "SHARED2", "BB"]

# True when the kernels run on CPU tensors under the Triton interpreter: the autotuners then hold a
# single config, because every config would be "benchmarked" by the (slow) interpreter.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _group_distance(
    ptr, D, stride_b, stride_d, b, q0, n0, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, SHARED: tl.constexpr
):
    """Max-norm distances of one packed group between the candidate rows n0 .. n0+BN (axis 1) and the
    query rows q0 .. q0+BQ (axis 2) of problems ``b`` (BB, 1, 1), int64, below B: a (BB, BN, BQ) tile,
    or (1, BN, BQ) when the group is ``SHARED`` by the batch (``b`` is then unused)."""
    if SHARED:
        base = ptr
        acc = tl.zeros((1, BLOCK_N, BLOCK_Q), dtype=ptr.dtype.element_ty)
    else:
        base = ptr + b * stride_b
        acc = tl.zeros((b.shape[0], BLOCK_N, BLOCK_Q), dtype=ptr.dtype.element_ty)
    # Row offsets relative to a scalar (per-problem) column pointer: the candidate offsets are constants
    # inside each thread (immediate address offsets, vector loads), the query offsets loop-invariant.
    q_ptr = base + q0
    c_ptr = base + n0
    q_off = tl.arange(0, BLOCK_Q)[None, None, :]
    c_off = tl.arange(0, BLOCK_N)[None, :, None]
    # One column per iteration: a subtract and a max per pair (the abs folds into the max operand).
    for _ in range(D):
        diff = tl.abs(tl.load(q_ptr + q_off) - tl.load(c_ptr + c_off))
        acc = _max(acc, diff)
        q_ptr += stride_d
        c_ptr += stride_d
    return acc


@triton.jit
def _max(a, b):
    """Elementwise max of non-NaN values. float32: one FMNMX. float64 has no such instruction and
    tl.maximum's NaN-aware lowering costs ~5 instructions; a compare and a select cost 3 and are exact
    (the kernels take finite inputs, as do the estimators)."""
    if a.dtype == tl.float64:
        return tl.where(b > a, b, a)
    else:
        return tl.maximum(a, b)


@triton.jit
def _joint_distance(
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
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
    G: tl.constexpr,
    SHARED0: tl.constexpr,
    SHARED1: tl.constexpr,
    SHARED2: tl.constexpr,
):
    """Joint distance (max over the ``G`` groups) as a (BB or 1, BN, BQ) tile; no pair is excluded here."""
    d = _group_distance(x0_ptr, D0, s0b, s0d, b, q0, n0, BLOCK_Q, BLOCK_N, SHARED0)
    if G > 1:
        d = tl.maximum(d, _group_distance(x1_ptr, D1, s1b, s1d, b, q0, n0, BLOCK_Q, BLOCK_N, SHARED1))
    if G > 2:
        d = tl.maximum(d, _group_distance(x2_ptr, D2, s2b, s2d, b, q0, n0, BLOCK_Q, BLOCK_N, SHARED2))
    return d


@triton.jit
def _query_indices(pid, B, Q0, M, BB: tl.constexpr, BLOCK_Q: tl.constexpr):
    """The tile of program ``pid`` of the 1-D grid over the M query rows Q0 .. Q0+M-1 (query tiles vary
    fastest, so neighbouring programs stream the same candidates; a 1-D grid also has no 65535 limit on
    the batch): its problem indices (BB, 1, 1), int64 and clamped below B (a block may overhang the
    batch), its first query q0, its query indices (1, 1, BQ) (sample indices: the output row is q - Q0),
    and the mask (BB, 1, BQ) of the real (problem, query) pairs."""
    q_tiles = tl.cdiv(M, BLOCK_Q)
    q0 = Q0 + (pid % q_tiles) * BLOCK_Q
    b = ((pid // q_tiles).to(tl.int64) * BB + tl.arange(0, BB))[:, None, None]
    q = (q0 + tl.arange(0, BLOCK_Q))[None, None, :]
    return tl.minimum(b, B - 1), q0, q, (b < B) & (q < Q0 + M)


@triton.jit
def _candidate_indices(n0, q, N, BLOCK_N: tl.constexpr):
    """``pair_ok`` (1, BN, BQ) for the candidates n0 .. n0+BN and the queries ``q`` (1, 1, BQ): False
    for the self pair (excluded by index, not by value: duplicated rows have distance 0 and must count)
    and for the padding rows beyond N."""
    c = (n0 + tl.arange(0, BLOCK_N))[None, :, None]
    return (c < N) & (c != q)


# ---------------------------------------------------------------------------------------------------
# Host side: kernel arguments, shared by the three launchers. The launchers trust their inputs: the op
# boundary (mipp.ops) checks the contract once; only the limits of these kernels are checked here.


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass
class Groups:
    """The column groups of one launch: G tensors (B_g, N, d_g) of one float dtype and device, B_g in {1, B}."""

    tensors: list  # the G input tensors (B_g, N, d_g)
    batch: int  # B the groups broadcast to
    n: int  # samples N
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, groups: list[torch.Tensor], op: str) -> Groups:
        """The launch's groups; more than MAX_GROUPS is beyond these kernels (a ValueError that says how to
        fit them)."""
        if len(groups) > MAX_GROUPS:
            raise ValueError(
                f"{op}: groups has {len(groups)} column groups; the Triton kernels take 1 to "
                f"{MAX_GROUPS}. The joint max-norm of several groups equals that of their "
                "concatenation, so torch.cat the extra groups along the last dimension"
            )
        first = groups[0]
        batch = max(int(g.shape[0]) for g in groups)
        return cls(list(groups), batch, int(first.shape[1]), first.dtype, first.device)

    @property
    def count(self) -> int:
        return len(self.tensors)

    @property
    def dims(self) -> list[int]:
        """d_g of each group, padded to MAX_GROUPS (the unused slots are never read)."""
        return [int(t.shape[2]) for t in self._slots()]

    @property
    def shared(self) -> list[bool]:
        """B_g == 1 for each group slot: one distance tile for a whole batch block."""
        return [t.shape[0] == 1 for t in self._slots()]

    @property
    def constexprs(self) -> dict:
        """G and SHARED0..2 for the kernels."""
        return {"G": self.count, **{f"SHARED{i}": shared for i, shared in enumerate(self.shared)}}

    def any_shared(self, batch: int) -> bool:
        """True when the batch has more than one problem and some group is shared by all of them."""
        return batch > 1 and any(self.shared[: self.count])

    def _slots(self) -> list:
        return self.tensors + [self.tensors[0]] * (MAX_GROUPS - self.count)

    def pack(self, row_multiple: int) -> tuple[list, list]:
        """The kernels' group arguments: MAX_GROUPS packed tensors (B_g, d_g, N_pad), zero-padded,
        samples contiguous, N_pad the next multiple of ``row_multiple`` (every block size of the kernel;
        unused slots repeat group 0), and their batch (0 when shared) and column strides."""
        n_pad = -(-max(self.n, 1) // row_multiple) * row_multiple
        packed = []
        for t in self.tensors:
            p = t.new_zeros((t.shape[0], t.shape[2], n_pad))
            p[:, :, : self.n] = t.transpose(1, 2)
            packed.append(p)
        packed += [packed[0]] * (MAX_GROUPS - self.count)
        strides = []
        for p in packed:
            strides += [p.stride(0) if p.shape[0] > 1 else 0, p.stride(1)]
        return packed, strides


def radius_batch(radius: torch.Tensor, g: Groups) -> tuple[int, tuple[int, int]]:
    """The batch size B of a result over ``g`` and ``radius`` (B_r, M), max(B_groups, B_r), and the radius'
    batch (0 when shared) and row strides."""
    return max(g.batch, int(radius.shape[0])), (radius.stride(0) if radius.shape[0] > 1 else 0, radius.stride(1))


def grid(n: int, batch: int, bb: int):
    """The launchers' 1-D grid: one program per (query tile, batch block), see _query_indices."""
    return lambda meta: (triton.cdiv(n, meta["BLOCK_Q"]) * triton.cdiv(batch, bb),)


def device_guard(device: torch.device):
    """Launch on the tensors' GPU (Triton launches on the current device); nothing to do on the CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def batch_block(batch: int, shared: bool, cap: int) -> int:
    """Problems per program: a power of two up to ``cap`` when some operand is shared by the batch (its
    distances are then computed once per block), 1 otherwise (nothing to share, smaller tiles)."""
    return min(cap, next_power_of_2(batch)) if shared else 1


def queries_per_thread(config: triton.Config) -> int:
    """Queries of a (.., BLOCK_Q) tile per thread: the queries span the lanes and warps."""
    return max(1, config.kwargs["BLOCK_Q"] // (32 * config.num_warps))


def batched_rows(meta: dict) -> int:
    """Problems in a distance tile: BB when some group is per problem, 1 when all are shared."""
    return 1 if all(meta[f"SHARED{i}"] for i in range(meta["G"])) else meta["BB"]


def prune_registers(max_words: int, values_per_query):
    """early_config_prune for the autotuners: keep the configs whose live values per thread,
    ``values_per_query(BLOCK_N, constexprs)`` times the queries per thread, take at most ``max_words``
    32-bit registers (an estimate: beyond it the sm_90 kernels start to spill, benchmarks/aot_compile.py
    shows the real counts), and always the first config, the smallest tile of each list, which fits every
    launch (tests/engine/test_triton_kernels.py checks that it is the smallest)."""

    def prune(configs, named_args, **meta):
        words = named_args["x0_ptr"].element_size() // 4
        return [
            c
            for i, c in enumerate(configs)
            if i == 0 or words * queries_per_thread(c) * values_per_query(c.kwargs["BLOCK_N"], meta) <= max_words
        ]

    return prune


def tile_configs(*tiles: tuple[int, int, int]) -> list[triton.Config]:
    """Autotuner configs from (BLOCK_Q, BLOCK_N, num_warps) triples."""
    return [triton.Config({"BLOCK_Q": q, "BLOCK_N": n}, num_warps=w) for q, n, w in tiles]


def row_multiple(configs: list[triton.Config]) -> int:
    """N_pad must be a multiple of every block size of every config."""
    return max(max(c.kwargs["BLOCK_Q"], c.kwargs["BLOCK_N"]) for c in configs)
