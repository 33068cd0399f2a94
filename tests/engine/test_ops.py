"""torch.library checks of the mipp ops on CPU: ``opcheck`` (schema, fake kernel, autograd registration,
AOT dispatch) over non-contiguous inputs, small N, k=1, duplicates, float32/float64 and batched groups
with B_g = 1 and B_g = B; the fake kernels' shapes/dtypes; and ``torch.compile(fullgraph=True)``
smoke tests (compiled == eager, bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import digamma
from torch.library import opcheck

import mipp
from mipp import reference

ops = torch.ops.mipp
DTYPES = [torch.float32, torch.float64]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noncontig(b: int, n: int, d: int, dtype, seed: int = 0, duplicates: bool = False) -> torch.Tensor:
    """A (b, n, d) view that is not contiguous (for n > 1): every other row and every other column of a
    transposed buffer."""
    g = _gen(seed)
    base = torch.randn(b, 2 * d, 2 * n, dtype=dtype, generator=g)
    if duplicates:  # repeat rows: zero distances, ties
        base = torch.round(base * 2) / 2
        base[..., 2::6] = base[..., 0:1]
    t = base.transpose(1, 2)[:, ::2, ::2]
    assert t.shape == (b, n, d) and (n == 1 or not t.is_contiguous())
    return t


def _group_sets(dtype, n: int, duplicates: bool = False):
    """Column-group lists: one group; B_g = B with a shared B_g = 1 group; all shared."""
    x = _noncontig(3, n, 2, dtype, 1, duplicates)
    y = _noncontig(1, n, 1, dtype, 2, duplicates)
    z = _noncontig(3, n, 3, dtype, 3, duplicates)
    return {"single": [x], "batched+shared": [x, y], "three": [x, y, z], "shared_only": [y], "b1": [x[:1], y]}


CASES = [(dtype, dup) for dtype in DTYPES for dup in (False, True)]
CASE_IDS = [f"{str(d).split('.')[-1]}-{'dup' if dup else 'cont'}" for d, dup in CASES]


@pytest.mark.parametrize("dtype,duplicates", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("k", [1, 4])
def test_knn_distance_opcheck(dtype, duplicates, k):
    for name, groups in _group_sets(dtype, 12, duplicates).items():
        opcheck(ops.knn_distance.default, (groups, k))
        out = ops.knn_distance(groups, k)
        assert out.shape == (reference.batch_size(groups), 12) and out.dtype == dtype, name
    # the largest k: N - 1
    opcheck(ops.knn_distance.default, ([_noncontig(2, 5, 2, dtype)], 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_distance_small_n(dtype):
    x = _noncontig(2, 2, 3, dtype)
    opcheck(ops.knn_distance.default, ([x], 1))
    d = ops.knn_distance([x], 1)
    expected = (x[:, 0] - x[:, 1]).abs().amax(dim=-1)
    assert torch.equal(d, torch.stack([expected, expected], dim=1))
    opcheck(ops.knn_distance.default, ([x[:, :0]], 1))  # N = 0: empty result
    assert ops.knn_distance([x[:, :0]], 1).shape == (2, 0)


def test_knn_distance_duplicates_give_zero():
    x = torch.tensor([[0.0], [0.0], [0.0], [1.0], [3.0]], dtype=torch.float64)[None]
    assert ops.knn_distance([x], 1)[0].tolist() == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert ops.knn_distance([x], 2)[0].tolist() == [0.0, 0.0, 0.0, 1.0, 3.0]
    assert ops.knn_distance([x], 3)[0].tolist() == [1.0, 1.0, 1.0, 1.0, 3.0]
    assert ops.knn_distance([x], 4)[0].tolist() == [3.0, 3.0, 3.0, 2.0, 3.0]


@pytest.mark.parametrize("dtype,duplicates", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("strict", [True, False])
def test_count_within_opcheck(dtype, duplicates, strict):
    for name, groups in _group_sets(dtype, 12, duplicates).items():
        for k in (1, 3):
            eps = ops.knn_distance(groups, k)
            radius = eps.T.contiguous().T  # same values, column-major: not contiguous
            assert not radius.is_contiguous() or radius.shape[0] == 1
            opcheck(ops.count_within.default, (groups, radius, strict))
            out = ops.count_within(groups, radius, strict)
            assert out.dtype == torch.int64 and out.shape == eps.shape, name
            if not strict:  # the k nearest are within their own k-th distance
                assert (out >= k).all()
        # radii with B rows over groups that are all shared (B_g = 1)
        shared = [g[:1] for g in groups]
        radius = torch.rand(3, 12, dtype=dtype, generator=_gen(4)) * 2
        opcheck(ops.count_within.default, (shared, radius, strict))
        assert ops.count_within(shared, radius, strict).shape == (3, 12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_count_within_small_n(dtype):
    x = _noncontig(2, 1, 2, dtype)
    r = torch.ones(2, 1, dtype=dtype)
    for strict in (True, False):
        opcheck(ops.count_within.default, ([x], r, strict))
        assert ops.count_within([x], r, strict).tolist() == [[0], [0]]  # nobody but itself
        opcheck(ops.count_within.default, ([x[:, :0]], r[:, :0], strict))
        assert ops.count_within([x[:, :0]], r[:, :0], strict).shape == (2, 0)


def test_count_within_strictness_and_self_exclusion():
    x = torch.tensor([[0.0], [0.0], [1.0], [2.0]], dtype=torch.float64)[None]
    r = torch.tensor([[1.0, 0.0, 1.0, 0.5]], dtype=torch.float64)
    assert ops.count_within([x], r, True)[0].tolist() == [1, 0, 0, 0]
    assert ops.count_within([x], r, False)[0].tolist() == [2, 1, 3, 0]


@pytest.mark.parametrize("dtype,duplicates", CASES, ids=CASE_IDS)
def test_marginal_radius_opcheck(dtype, duplicates):
    for name, groups in _group_sets(dtype, 12, duplicates).items():
        for k in (1, 3):
            eps = ops.knn_distance(groups, k)
            opcheck(ops.marginal_radius.default, (groups, eps))
            out = ops.marginal_radius(groups, eps)
            assert out.shape == (*eps.shape, len(groups)) and out.dtype == dtype, name
            # the marginal radii are at most the joint radius, and their max is exactly it
            assert (out <= eps[..., None]).all()
            assert torch.equal(out.amax(dim=-1), eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_marginal_radius_small_n(dtype):
    x, y = _noncontig(2, 1, 2, dtype), _noncontig(1, 1, 1, dtype, seed=1)
    r = torch.ones(2, 1, dtype=dtype)
    opcheck(ops.marginal_radius.default, ([x, y], r))
    assert torch.equal(ops.marginal_radius([x, y], r), torch.zeros(2, 1, 2, dtype=dtype))
    opcheck(ops.marginal_radius.default, ([x[:, :0], y[:, :0]], r[:, :0]))


def test_marginal_radius_ties_all_count():
    """KSG-2 tie rule: all samples at the k-th joint distance belong to the neighbourhood."""
    x = torch.tensor([[0.0], [1.0], [-1.0], [0.5]], dtype=torch.float64)[None]
    y = torch.tensor([[0.0], [0.2], [1.0], [3.0]], dtype=torch.float64)[None]
    eps = ops.knn_distance([x, y], 1)  # sample 0: samples 1 and 2 both at joint distance 1
    assert eps[0, 0].item() == 1.0
    r = ops.marginal_radius([x, y], eps)
    assert r[0, 0].tolist() == [1.0, 1.0]  # x from sample 1 (and 2), y from sample 2


@pytest.mark.parametrize("dtype,duplicates", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("algorithm", [1, 2])
def test_ksg_counts_opcheck(dtype, duplicates, algorithm):
    for name, groups in _group_sets(dtype, 12, duplicates).items():
        masks = list(range(1, 1 << len(groups)))  # every marginal of the groups
        for k in (1, 3):
            opcheck(ops.ksg_counts.default, (groups, k, masks, algorithm))
            eps, counts = ops.ksg_counts(groups, k, masks, algorithm)
            batch = reference.batch_size(groups)
            assert eps.shape == (batch, 12) and eps.dtype == dtype, name
            assert counts.shape == (batch, len(masks), 12) and counts.dtype == torch.int64, name
            assert torch.equal(eps, ops.knn_distance(groups, k))
            # the joint space as the last marginal: < eps holds fewer than k, the KSG-2 radius at least k
            joint = counts[:, -1]
            assert (joint < k).all() if algorithm == 1 else (joint >= k).all()
        opcheck(ops.ksg_counts.default, (groups, 2, masks[:1], algorithm, 3, 10, ",".join("abc"[: len(groups)])))
        assert ops.ksg_counts(groups, 2, masks[:1], algorithm, 3, 10)[1].shape[-1] == 7


@pytest.mark.parametrize("dtype", DTYPES)
def test_ksg_counts_small_n(dtype):
    x, y = _noncontig(2, 2, 2, dtype), _noncontig(1, 2, 1, dtype, seed=1)
    for algorithm in (1, 2):
        opcheck(ops.ksg_counts.default, ([x, y], 1, [1, 2], algorithm))
        eps, counts = ops.ksg_counts([x, y], 1, [1, 2], algorithm)
        # N = 2: eps is the one distance; a marginal counts the other sample when strictly closer than eps
        # (algorithm 1), always within its own radius (algorithm 2)
        dx, dy = (x[:, 0] - x[:, 1]).abs().amax(dim=-1), (y[:, 0] - y[:, 1]).abs().amax(dim=-1).expand(2)
        assert torch.equal(eps, torch.maximum(dx, dy)[:, None].expand(2, 2))
        want = torch.stack([dx < eps[:, 0], dy < eps[:, 0]], dim=1) if algorithm == 1 else torch.ones(2, 2)
        assert torch.equal(counts, want.long()[..., None].expand(2, 2, 2))
        opcheck(ops.ksg_counts.default, ([x[:, :0], y[:, :0]], 1, [1, 2], algorithm))  # N = 0
        assert ops.ksg_counts([x[:, :0], y[:, :0]], 1, [1, 2], algorithm)[1].shape == (2, 2, 0)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("reduce", [True, False])
def test_digamma_sum_opcheck(offset, reduce):
    counts = torch.randint(1, 50, (6, 3), generator=_gen(5)).T  # (3, 6), not contiguous
    assert not counts.is_contiguous()
    opcheck(ops.digamma_sum.default, (counts, offset, reduce))
    opcheck(ops.digamma_sum.default, (counts[:1], offset, reduce))  # B = 1
    opcheck(ops.digamma_sum.default, (counts[0], offset, reduce))  # 1-D
    opcheck(ops.digamma_sum.default, (counts[:, :0], offset, reduce))  # N = 0
    out = ops.digamma_sum(counts, offset, reduce)
    assert out.dtype == torch.float64 and out.shape == ((3,) if reduce else (3, 6))
    if reduce:
        assert torch.equal(ops.digamma_sum(counts[:, :0], offset, True), torch.zeros(3, dtype=torch.float64))


def test_digamma_sum_values():
    """Against scipy's digamma, from psi(1) to psi(10**7 + 1), 1e-13 relative per value."""
    counts = torch.tensor([[0, 1, 2, 5, 18, 19, 20, 21, 100, 4097, 10**5, 10**7]], dtype=torch.int64)
    for offset in (1, 2):
        got = ops.digamma_sum(counts, offset, False)[0].numpy()
        np.testing.assert_allclose(got, digamma(counts[0].numpy() + offset), rtol=1e-13, atol=1e-15)
        total = ops.digamma_sum(counts, offset, True)[0].item()
        assert total == pytest.approx(digamma(counts[0].numpy() + offset).sum(), rel=1e-13)
    got = ops.digamma_sum(counts[:, 1:], 0, False)[0].numpy()
    np.testing.assert_allclose(got, digamma(counts[0, 1:].numpy().astype(float)), rtol=1e-13)


def test_digamma_sum_is_deterministic():
    counts = torch.randint(0, 1000, (4, 50_000), generator=_gen(6))
    a = ops.digamma_sum(counts, 1, True)
    assert torch.equal(a, ops.digamma_sum(counts, 1, True))
    assert torch.equal(a[1:2], ops.digamma_sum(counts[1:2], 1, True))  # independent of the batch


# ---------------------------------------------------------------------------------------------------
# torch.compile


def _pipeline(x, y, z):
    """All four ops, batched groups and a shared group, as a user-side function would call them."""
    gx, gy, gz = x, y[None], z
    eps = ops.knn_distance([gx, gy, gz], 3)
    nxz = ops.count_within([gx, gz], eps, True)
    radii = ops.marginal_radius([gx, gy], ops.knn_distance([gx, gy], 2))
    ny = ops.count_within([gy], radii[..., 1].contiguous(), False)
    return eps, nxz, radii, ny, ops.digamma_sum(nxz, 1, True), ops.digamma_sum(ny, 0, False)


def _inputs(n: int = 150):
    g = _gen(7)
    x = torch.randn(2, n, 2, dtype=torch.float64, generator=g)
    y = x[0, :, :1] + torch.randn(n, 1, dtype=torch.float64, generator=g)
    z = torch.randn(2, n, 1, dtype=torch.float64, generator=g)
    return x, y, z


def test_compile_ops_fullgraph():
    torch._dynamo.reset()
    x, y, z = _inputs()
    compiled = torch.compile(_pipeline, fullgraph=True)
    for got, want in zip(compiled(x, y, z), _pipeline(x, y, z)):
        assert got.dtype == want.dtype and torch.equal(got, want)


def _fused(x, y, z, algorithm: int):
    """ksg_counts on MI's and CMI's marginals, batched groups and a shared one, with query rows and names."""
    mi = ops.ksg_counts([x, y[None]], 3, [0b01, 0b10], algorithm)
    cmi = ops.ksg_counts([x, y[None], z], 2, [0b101, 0b110, 0b100], algorithm, 5, 90, "x,y,z")
    return (*mi, *cmi)


@pytest.mark.parametrize("algorithm", [1, 2])
def test_compile_ksg_counts_fullgraph(algorithm):
    torch._dynamo.reset()
    x, y, z = _inputs()
    compiled = torch.compile(_fused, fullgraph=True)
    for n in (150, 120):  # a second shape: recompilation
        args = (x[:, :n], y[:n], z[:, :n], algorithm)
        for got, want in zip(compiled(*args), _fused(*args)):
            assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
    bad = z.clone()
    bad[1, 7, 0] = float("nan")
    with pytest.raises(Exception, match="z contains NaN or inf; drop or impute those samples first"):
        compiled(x, y, bad, algorithm)  # the check runs inside the graph, worded with names=


@pytest.mark.parametrize("algorithm", [1, 2])
def test_compile_mi_fullgraph(algorithm):
    """k = 20 takes ksg._digamma's asymptotic branch (n >= 20 for both psi(k) and psi(N))."""
    torch._dynamo.reset()
    x, y, _ = _inputs()
    fn = torch.compile(lambda a, b: mipp.mi(a, b, 20, algorithm=algorithm), fullgraph=True)
    for n in (150, 120):  # a second shape: recompilation
        got, want = fn(x[0, :n], y[:n]), mipp.mi(x[0, :n], y[:n], 20, algorithm=algorithm)
        assert got.dtype == torch.float64 and got.dim() == 0 and torch.equal(got, want)
    batched = torch.compile(
        lambda a, b: mipp.mi(a, b, 20, algorithm=algorithm, reduction="none"), fullgraph=True, backend="aot_eager"
    )
    assert torch.equal(batched(x, y), mipp.mi(x, y, 20, algorithm=algorithm, reduction="none"))


@pytest.mark.parametrize("algorithm", [1, 2])
def test_compile_mi_fullgraph_default_k(algorithm):
    """k = 3 takes ksg._digamma's small-n table (k = 20 above takes the asymptotic branch)."""
    torch._dynamo.reset()
    x, y, _ = _inputs()
    fn = torch.compile(lambda a, b: mipp.mi(a, b, 3, algorithm=algorithm), fullgraph=True, backend="aot_eager")
    assert torch.equal(fn(x[0], y), mipp.mi(x[0], y, 3, algorithm=algorithm))


def test_compile_cmi_fullgraph_default_k():
    torch._dynamo.reset()
    x, y, z = _inputs()
    fn = torch.compile(lambda a, b, c: mipp.cmi(a, b, c, 3), fullgraph=True, backend="aot_eager")
    assert torch.equal(fn(x, y, z), mipp.cmi(x, y, z, 3))


def test_compile_cmi_fullgraph():
    torch._dynamo.reset()
    x, y, z = _inputs()
    fn = torch.compile(lambda a, b, c: mipp.cmi(a, b, c, 20), fullgraph=True, backend="aot_eager")
    assert torch.equal(fn(x, y, z), mipp.cmi(x, y, z, 20))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ops_opcheck_cuda():
    x = _noncontig(3, 40, 2, torch.float32).cuda()
    y = _noncontig(1, 40, 1, torch.float32, seed=1).cuda()
    for groups in ([x], [x, y]):
        opcheck(ops.knn_distance.default, (groups, 3))
        eps = ops.knn_distance(groups, 3)
        assert torch.equal(eps.cpu(), ops.knn_distance([g.cpu() for g in groups], 3))
        for strict in (True, False):
            opcheck(ops.count_within.default, (groups, eps, strict))
            assert torch.equal(
                ops.count_within(groups, eps, strict).cpu(),
                ops.count_within([g.cpu() for g in groups], eps.cpu(), strict),
            )
        opcheck(ops.marginal_radius.default, (groups, eps))
        assert torch.equal(
            ops.marginal_radius(groups, eps).cpu(), ops.marginal_radius([g.cpu() for g in groups], eps.cpu())
        )
    counts = ops.count_within([x], ops.knn_distance([x], 3), True)
    opcheck(ops.digamma_sum.default, (counts, 1, True))
    assert torch.equal(ops.digamma_sum(counts, 1, True).cpu(), ops.digamma_sum(counts.cpu(), 1, True))


def _error(fn, *args) -> str:
    """The message of the ValueError that fn(*args) raises (compiled code may wrap it: its text is kept)."""
    with pytest.raises(Exception) as info:
        fn(*args)
    return str(info.value)


def test_compiled_estimators_keep_the_checks():
    """Under torch.compile(fullgraph=True) the estimator's own checks are skipped (data-dependent), but the
    ops' checks run inside the compiled graph at run time: NaN, inf and N <= k raise ValueError, worded as the
    eager estimator words them (mipp::ksg_counts' names= carries the arguments' names)."""
    x = torch.randn(50, dtype=torch.float64)
    y = torch.randn(50, dtype=torch.float64)
    mi = torch.compile(mipp.mi, fullgraph=True)
    assert torch.isfinite(mi(x, y))
    bad = x.clone()
    bad[3] = float("nan")
    eager = _error(mipp.mi, bad, y)
    assert eager == "x contains NaN or inf; drop or impute those samples first"
    assert eager in _error(mi, bad, y)
    assert "y contains NaN" in _error(mi, x, bad)
    cmi = torch.compile(mipp.cmi, fullgraph=True)
    z = torch.randn(50, dtype=torch.float64)
    z[0] = float("inf")
    eager = _error(mipp.cmi, x, y, z)
    assert eager.startswith("z contains NaN or inf")
    assert eager in _error(cmi, x, y, z)
    eager = _error(mipp.mi, x[:5], y[:5], 5)
    assert eager == "k=5 needs more than k samples, got N=5; lower k or add samples"
    assert eager in _error(mi, x[:5], y[:5], 5)


def test_ops_validate_their_own_contract():
    g = torch.randn(1, 10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"k=10 must be in \[1, N - 1\]"):
        ops.knn_distance([g], 10)  # used to return inf silently
    with pytest.raises(ValueError, match="N=1 samples but groups\\[0\\] has N=10"):
        ops.knn_distance([g, torch.randn(1, 1, 1, dtype=torch.float64)], 3)  # used to broadcast
    with pytest.raises(ValueError, match="radius must have shape"):
        ops.count_within([g], torch.ones(1, 9, dtype=torch.float64), True)
    with pytest.raises(ValueError, match=r"torch.float64 on cpu but groups\[0\] is torch.float32"):
        ops.knn_distance([g.float(), g], 3)
