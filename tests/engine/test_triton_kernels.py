"""The Triton launchers (mipp_kernels) against the pure-torch reference, bit for bit.

Without a GPU the kernels run under the Triton interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1 before triton is imported); with one they run compiled on CUDA tensors. The
interpreter is slow, so the problems are tiny (N <= 70) but chosen to reach every code path: the
interpreter config (BLOCK_Q=32, BLOCK_N=16) puts K_PAD below, equal to and above BLOCK_N (k = 3, 9, 64),
several query and candidate tiles, a batch block that overhangs the batch, and the padding rows.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mipp import reference

triton = pytest.importorskip("triton")

import mipp_kernels._tiles as tiles  # noqa: E402
import mipp_kernels.count_within as count  # noqa: E402
import mipp_kernels.knn_distance as knn  # noqa: E402
import mipp_kernels.marginal_radius as radius  # noqa: E402

pytestmark = pytest.mark.triton
ops = torch.ops.mipp

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float64]


def _data(b: int, n: int, d: int, dtype, kind: str, seed: int) -> torch.Tensor:
    """(b, n, d) samples: ``continuous`` (no ties), ``ties`` (few distinct values, so many equal
    distances) or ``duplicates`` (continuous with a block of repeated rows: distance 0 pairs)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "ties":
        x = torch.randint(0, 4, (b, n, d), generator=gen).to(dtype) * 0.5
    else:
        x = torch.randn(b, n, d, generator=gen, dtype=dtype)
    if kind == "duplicates":
        x[:, n // 2 : n // 2 + 6] = x[:, :6]
        x[:, -1] = x[:, 0]
    return x.to(DEVICE)


def _knn(groups, k):
    """The launchers take explicit query rows: these run all N."""
    return knn.knn_distance(groups, k, 0, groups[0].shape[1])


def _count(groups, r, strict):
    return count.count_within(groups, r, strict, 0, groups[0].shape[1])


def _radius(groups, r):
    return radius.marginal_radius(groups, r, 0, groups[0].shape[1])


def _unchanged(groups, fn):
    """Run fn and check that it did not modify its inputs."""
    before = [g.clone() for g in groups]
    out = fn()
    assert all(torch.equal(a, g) for a, g in zip(before, groups))
    return out


# ---------------------------------------------------------------------------------------------------
# knn_distance


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["continuous", "ties", "duplicates"])
@pytest.mark.parametrize("k", [1, 3, 9])
def test_knn_distance_matches_reference(dtype, kind, k):
    x = _data(1, 45, 1, dtype, kind, seed=k)
    y = _data(1, 45, 2, dtype, kind, seed=k + 100)
    out = _unchanged([x, y], lambda: _knn([x, y], k))
    expected = reference.knn_distance([x, y], k)
    assert out.dtype == dtype and out.shape == (1, 45)
    assert torch.equal(out, expected)
    if kind == "duplicates" and k == 1:
        assert (out[0, :6] == 0).all()  # a duplicated row is its own first neighbour at distance 0


@pytest.mark.parametrize("dtype,k,n", [(torch.float32, 64, 65), (torch.float64, 61, 66)])
def test_knn_distance_near_cap(dtype, k, n):
    """K_PAD = 64 > BLOCK_N: tiles shorter than the state, N just above k."""
    x = _data(1, n, 3, dtype, "ties", seed=k)
    assert torch.equal(_knn([x], k), reference.knn_distance([x], k))


def test_knn_distance_batched_mixed_groups():
    """Three groups with B_g = 3, 1, 3: the shared group's tile serves a batch block of 4 (overhanging
    B = 3), the batched ones are per problem."""
    x = _data(3, 50, 1, torch.float32, "ties", seed=1)
    y = _data(1, 50, 2, torch.float32, "continuous", seed=2)
    z = _data(3, 50, 2, torch.float32, "duplicates", seed=3)
    for k in (1, 4):
        out = _knn([x, y, z], k)
        assert out.shape == (3, 50)
        assert torch.equal(out, reference.knn_distance([x, y, z], k))


def test_knn_distance_non_contiguous():
    base = _data(2, 8, 60, torch.float64, "continuous", seed=4)
    x = base.transpose(1, 2)[:, ::2]  # (2, 30, 8), strided rows and columns
    y = _data(1, 30, 6, torch.float64, "ties", seed=5)[:, :, 1:5]  # (1, 30, 4), sliced columns
    assert not x.is_contiguous() and not y.is_contiguous()
    assert torch.equal(_knn([x, y], 5), reference.knn_distance([x, y], 5))


def test_knn_distance_edge_sizes():
    x = _data(2, 6, 2, torch.float32, "continuous", seed=6)
    assert torch.equal(_knn([x], 6), reference.knn_distance([x], 6))  # k == N: +inf
    assert torch.isinf(_knn([x], 6)).all()
    assert _knn([x[:, :0]], 3).shape == (2, 0)


# ---------------------------------------------------------------------------------------------------
# count_within


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["continuous", "ties", "duplicates"])
@pytest.mark.parametrize("strict", [True, False])
def test_count_within_matches_reference(dtype, kind, strict):
    x = _data(1, 60, 1, dtype, kind, seed=7)
    y = _data(1, 60, 3, dtype, kind, seed=8)
    eps = reference.knn_distance([x, y], 3)  # radii at exact sample distances: ties at the boundary
    for groups in ([x], [y], [x, y]):
        out = _unchanged(groups + [eps], lambda: _count(groups, eps, strict))
        assert out.dtype == torch.int64 and out.shape == (1, 60)
        assert torch.equal(out, reference.count_within(groups, eps, strict))


def test_count_within_strictness_differs_on_ties():
    """With radii equal to sample distances, <= counts the boundary and < does not."""
    x = _data(1, 40, 2, torch.float32, "ties", seed=9)
    eps = reference.knn_distance([x], 2)
    strict, loose = _count([x], eps, True), _count([x], eps, False)
    assert (strict < 2).all() and (loose >= 2).all() and (loose > strict).any()


def test_count_within_batched_shared_groups():
    """Shared groups (B_g = 1) against B = 5 radii: one distance tile per batch block of 8 (overhanging
    the batch); then three groups mixed with a shared radius (B_r = 1)."""
    x = _data(5, 55, 1, torch.float64, "ties", seed=10)
    y = _data(1, 55, 2, torch.float64, "continuous", seed=11)
    z = _data(1, 55, 1, torch.float64, "duplicates", seed=12)
    eps = reference.knn_distance([x, y, z], 3)  # (5, 55)
    for groups, r in (([y], eps), ([y, z], eps), ([x, y, z], eps), ([x, y, z], eps[:1])):
        for strict in (True, False):
            out = _count(groups, r, strict)
            assert out.shape == (5, 55)
            assert torch.equal(out, reference.count_within(groups, r, strict))


def test_count_within_non_contiguous():
    x = _data(3, 4, 50, torch.float32, "ties", seed=13).transpose(1, 2)  # (3, 50, 4)
    r = _data(50, 3, 1, torch.float32, "continuous", seed=14)[..., 0].abs().T  # (3, 50), transposed
    assert not x.is_contiguous() and not r.is_contiguous()
    for strict in (True, False):
        assert torch.equal(_count([x], r, strict), reference.count_within([x], r, strict))


def test_count_within_infinite_radius_counts_everyone_else():
    x = _data(2, 20, 2, torch.float32, "duplicates", seed=15)
    r = torch.full((2, 20), float("inf"), device=DEVICE)
    assert (_count([x], r, True) == 19).all()


# ---------------------------------------------------------------------------------------------------
# marginal_radius


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["continuous", "ties", "duplicates"])
def test_marginal_radius_matches_reference(dtype, kind):
    x = _data(1, 50, 1, dtype, kind, seed=16)
    y = _data(1, 50, 2, dtype, kind, seed=17)
    z = _data(1, 50, 1, dtype, kind, seed=18)
    for groups in ([x], [x, y], [x, y, z]):
        eps = reference.knn_distance(groups, 4)
        out = _unchanged(groups + [eps], lambda: _radius(groups, eps))
        assert out.dtype == dtype and out.shape == (1, 50, len(groups))
        assert torch.equal(out, reference.marginal_radius(groups, eps))


def test_marginal_radius_batched_non_contiguous():
    x = _data(3, 2, 40, torch.float32, "ties", seed=19).transpose(1, 2)  # (3, 40, 2) batched
    y = _data(1, 40, 3, torch.float32, "continuous", seed=20)[:, :, ::2]  # (1, 40, 2) shared
    eps = reference.knn_distance([x, y], 3)
    for r in (eps, eps[1:2], torch.zeros_like(eps)):  # batched, shared and empty neighbourhoods
        assert torch.equal(_radius([x, y], r), reference.marginal_radius([x, y], r))


# ---------------------------------------------------------------------------------------------------
# validation


def _groups(n=10, dtype=torch.float32):
    return [_data(1, n, 2, dtype, "continuous", seed=21)]


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda: knn.knn_distance(_groups(), knn.K_CAP + 1, 0, 10),
            ValueError,
            rf"k={knn.K_CAP + 1}.*K_CAP={knn.K_CAP}",
        ),
        (lambda: knn.knn_distance(_groups() * 4, 2, 0, 10), ValueError, "4 column groups"),
        (lambda: count.count_within(_groups() * 4, torch.ones(1, 10, device=DEVICE), True, 0, 10), ValueError, "4"),
    ],
)
def test_launchers_refuse_what_their_kernels_cannot_do(call, error, match):
    """The launchers trust their inputs (mipp.ops checks the contract once); they refuse only what is beyond
    their kernels: k above K_CAP, more than MAX_GROUPS groups."""
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.knn_distance(_groups(), 0), "k=0"),
        (lambda: ops.knn_distance(_groups(), 10), "k=10.*N=10"),
        (lambda: ops.knn_distance(_groups() + _groups(12), 2), "N=12"),
        (lambda: ops.knn_distance(_groups() + _groups(dtype=torch.float64), 2), "float64"),
        (lambda: ops.knn_distance([_groups()[0].int()], 2), "floating"),
        (
            lambda: ops.knn_distance([torch.zeros(2, 10, 1, device=DEVICE), torch.zeros(3, 10, 1, device=DEVICE)], 2),
            "batch size",
        ),
        (lambda: ops.count_within(_groups(), torch.ones(1, 9, device=DEVICE), True), r"\(B, 10\)"),
        (lambda: ops.count_within(_groups(), torch.ones(1, 10, dtype=torch.float64, device=DEVICE), True), "radius"),
        (lambda: ops.marginal_radius(_groups() + _groups(12), torch.ones(1, 10, device=DEVICE)), "N=12"),
        (
            lambda: ops.marginal_radius([torch.zeros(2, 10, 1, device=DEVICE)], torch.ones(3, 10, device=DEVICE)),
            "radius",
        ),
    ],
)
def test_the_ops_check_the_contract_before_the_launchers(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------
# configs (pure Python: the GPU lists are checked here although the interpreter runs one config)


def _launch_constexprs(module, batch: int):
    """Every (BB, G, SHARED*, K_PAD) the module's launcher can pass for a batch of ``batch`` problems,
    the radius (count, radius) batched or not."""
    for g in (1, 2, 3):
        for shared in itertools.product((True, False), repeat=g):
            shared_any = batch > 1 and any(shared)
            meta = {"G": g, **{f"SHARED{i}": (shared + (True,) * 3)[i] for i in range(3)}}
            if module is knn:
                if batch > 1 and all(shared):
                    continue  # B is the groups' batch: some group has B_g = B
                for k_pad in (1 << i for i in range(7)):
                    cap = max(1, min(knn.BATCH_CAP, knn.BATCH_STATE // k_pad))
                    yield {**meta, "K_PAD": k_pad, "BB": tiles.batch_block(batch, shared_any, cap)}
            else:
                yield {**meta, "BB": tiles.batch_block(batch, shared_any, module.BATCH_CAP)}


@pytest.mark.parametrize("module", [knn, count, radius], ids=["knn", "count", "radius"])
def test_gpu_configs_fallback_is_smallest(module):
    """The autotuners always keep their first GPU config as the fallback that fits every launch: it
    must be the least register-hungry one for every constexprs a launcher can pass (the interpreter runs
    one config, so the GPU lists are only checked here), and the packed rows (N_pad) must cover every
    block of every config."""
    for batch in (1, 2, 3, 5, 8, 100):
        for meta in _launch_constexprs(module, batch):
            need = [
                tiles.queries_per_thread(c) * module._live_values(c.kwargs["BLOCK_N"], meta) for c in module.GPU_CONFIGS
            ]
            assert need[0] == min(need), (batch, meta, need)
    rows = tiles.row_multiple(module.GPU_CONFIGS)
    assert all(rows % c.kwargs["BLOCK_Q"] == 0 and rows % c.kwargs["BLOCK_N"] == 0 for c in module.GPU_CONFIGS)


def test_prune_drops_configs_over_the_register_budget():
    kernel, example = knn._knn_distance_kernel, {"x0_ptr": torch.empty(0, dtype=torch.float64)}
    meta = {"G": 2, "SHARED0": False, "SHARED1": True, "SHARED2": True, "BB": 1}
    small = kernel.early_config_prune(knn.GPU_CONFIGS, example, K_PAD=4, **meta)
    large = kernel.early_config_prune(knn.GPU_CONFIGS, example, K_PAD=64, **meta)
    assert large[0] is knn.GPU_CONFIGS[0] and len(large) < len(small) <= len(knn.GPU_CONFIGS)


# ---------------------------------------------------------------------------------------------------
# discrete variables: a label group (codes x L) combined with continuous groups, shared by a batch


@pytest.mark.parametrize("dtype", DTYPES)
def test_label_group_matches_reference(dtype):
    from mipp.reference import label_group

    x = _data(3, 50, 2, dtype, "ties", seed=7)
    codes = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(8))
    g = label_group(codes, [x]).to(DEVICE)
    eps = _knn([x, g], 3)
    assert torch.equal(eps, reference.knn_distance([x, g], 3))
    for strict in (True, False):
        assert torch.equal(_count([x, g], eps, strict), reference.count_within([x, g], eps, strict))
        assert torch.equal(_count([x], eps, strict), reference.count_within([x], eps, strict))


# ---------------------------------------------------------------------------------------------------
# query rows: a range of rows equals the same rows of the full call, bit for bit


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [(0, 45), (7, 40), (33, 34), (20, 20)])
def test_query_rows_match_the_full_call(dtype, rows):
    q0, q1 = rows
    x = _data(2, 45, 2, dtype, "ties", seed=3)
    y = _data(1, 45, 1, dtype, "duplicates", seed=4)
    eps = _knn([x, y], 3)
    assert torch.equal(knn.knn_distance([x, y], 3, q0, q1), eps[:, q0:q1])
    assert torch.equal(reference.knn_distance([x, y], 3, q0, q1), eps[:, q0:q1])
    for strict in (True, False):
        full = _count([x, y], eps, strict)
        assert torch.equal(count.count_within([x, y], eps[:, q0:q1], strict, q0, q1), full[:, q0:q1])
    full = _radius([x, y], eps)
    assert torch.equal(radius.marginal_radius([x, y], eps[:, q0:q1], q0, q1), full[:, q0:q1])


# ---------------------------------------------------------------------------------------------------
# ksg_counts on CUDA: the specification's composition (reference.ksg_counts) run on the launchers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", [1, 2])
def test_ksg_counts_composition_matches_reference(dtype, algorithm):
    """mipp.ops' CUDA ksg_counts (the launchers composed by reference.ksg_counts(kernels=...)): MI's and CMI's
    marginals over batched and shared groups with ties and duplicated rows, all rows and a range of them."""
    from mipp.ops import _cuda_kernel, _ksg_counts_cuda

    # the launchers, not the reference fallback
    assert (_cuda_kernel("knn_distance"), _cuda_kernel("count_within")) == (knn.knn_distance, count.count_within)
    assert _cuda_kernel("marginal_radius") is radius.marginal_radius
    x = _data(2, 40, 2, dtype, "ties", seed=11)
    y = _data(1, 40, 1, dtype, "duplicates", seed=12)
    z = _data(2, 40, 1, dtype, "ties", seed=13)
    for groups, masks in (([x, y], [0b01, 0b10]), ([x, y, z], [0b101, 0b110, 0b100])):
        want_eps, want_counts = reference.ksg_counts([g.cpu() for g in groups], 3, masks, algorithm)
        for q0, q1 in ((0, 40), (9, 31)):
            eps, counts = _ksg_counts_cuda(groups, 3, masks, algorithm, q0, q1)
            assert eps.device == x.device and counts.dtype == torch.int64
            assert torch.equal(eps.cpu(), want_eps[:, q0:q1])
            assert torch.equal(counts.cpu(), want_counts[..., q0:q1])


# ---------------------------------------------------------------------------------------------------
# ross_counts on CUDA: the specification's composition (reference.ross_counts) run on the launchers


@pytest.mark.parametrize("dtype", DTYPES)
def test_ross_counts_composition_matches_reference(dtype):
    """mipp.ops' CUDA ross_counts: a batch with ties and duplicated rows, classes of 2 (k_i < k) and strata."""
    from mipp.ops import _ross_counts_cuda

    x = _data(2, 40, 1, dtype, "ties", seed=21)
    x[:, 20:26] = x[:, :6]
    codes = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(22))
    codes[-2:] = 3  # a class of two
    strata = (codes >= 2).long()
    k_each = torch.clamp(torch.bincount(codes)[codes] - 1, max=3)
    want = reference.ross_counts(x.cpu(), codes, strata, k_each)
    got = _ross_counts_cuda(x, codes.to(DEVICE), strata.to(DEVICE), k_each.to(DEVICE))
    for a, w in zip(got, want):
        assert a.device == x.device and torch.equal(a.cpu(), w)
