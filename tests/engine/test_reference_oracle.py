"""The reference ops and the estimators against independent oracles (tests/engine/oracle.py: scipy cKDTree and
exact numpy counting), on continuous data, on data with ties (rounded values, duplicated rows, small
integer alphabets) and on data with large offsets / large scales, where absolute-epsilon tricks fail.

Per-sample op outputs must be *equal* to the oracle; the estimates must agree to 1e-10 (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.feature_selection._mutual_info import _compute_mi_cc

import mipp
from mipp import reference

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import oracle
except ImportError:  # e.g. --import-mode=importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import oracle

ops = torch.ops.mipp
N = 400
KS = [1, 3, 7]
TOL = 1e-10


def _base(rng: np.random.Generator, n: int = N):
    """Dependent (x, y, z): x (n, 2), y (n, 1), z (n, 1)."""
    z = rng.standard_normal((n, 1))
    x = np.hstack([z + 0.5 * rng.standard_normal((n, 1)), rng.standard_normal((n, 1))])
    y = x[:, :1] - 0.5 * x[:, 1:] + 0.3 * z + 0.5 * rng.standard_normal((n, 1))
    return x, y, z


def _make(name: str):
    rng = np.random.default_rng(sum(map(ord, name)))
    x, y, z = _base(rng)
    if name == "continuous":
        pass
    elif name == "rounded":  # ties in every marginal and in the joint space
        x, y, z = (np.round(a, 1) for a in (x, y, z))
    elif name == "duplicated":  # whole rows repeated: k-th distances of 0
        idx = rng.integers(0, 120, size=N)
        x, y, z = x[idx], y[idx], z[idx]
    elif name == "integers":  # a tiny alphabet: ties everywhere, at every distance
        x, y, z = (rng.integers(0, 4, size=a.shape).astype(np.float64) for a in (x, y, z))
    elif name == "offset":  # values around 1e6: distances are rounded differences
        x, y, z = 1e6 + x, 1e6 - 3 * y, 1e6 + z
    elif name == "offset_rounded":  # ties at an offset of 1e6
        x, y, z = (1e6 + np.round(a, 2) for a in (x, y, z))
    elif name == "large_scale":  # distances ~1e5..1e6 with exact ties: r - 1e-15 == r there
        x, y, z = (1e6 * np.round(a, 1) for a in (x, y, z))
    else:
        raise KeyError(name)
    return x, y, z


DATASETS = ["continuous", "rounded", "duplicated", "integers", "offset", "offset_rounded", "large_scale"]
TIED = ["rounded", "duplicated", "integers", "offset_rounded", "large_scale"]
_CACHE: dict[str, tuple] = {}


def data(name: str):
    if name not in _CACHE:
        _CACHE[name] = _make(name)
    return _CACHE[name]


def tensors(*arrays, dtype=torch.float64):
    """(1, N, d) torch groups (a batch of one)."""
    return [torch.from_numpy(np.ascontiguousarray(a)).to(dtype)[None] for a in arrays]


@pytest.fixture(params=["one_chunk", "many_chunks"])
def tiles(request, monkeypatch):
    """Run each op test with the default tile and with a tiny one (7 query rows per chunk at N=400), so
    that chunk boundaries are exercised."""
    if request.param == "many_chunks":
        monkeypatch.setattr(reference, "_TILE_ELEMENTS", 7 * N)
    return request.param


# ---------------------------------------------------------------------------------------------------
# the data sets really contain what they are meant to test


@pytest.mark.parametrize("name", TIED)
def test_tied_datasets_have_ties_that_matter(name):
    x, y, z = data(name)
    eps = oracle.knn_distance_kdtree([x, y], 3)
    strict = oracle.count_within([x], eps, strict=True)
    loose = oracle.count_within([x], eps, strict=False)
    assert (strict != loose).any(), "a sample at exactly eps in x: strictness must matter"
    # more than k samples at or within the k-th distance: the KSG-2 tie rule matters
    joint = oracle.count_within([x, y], eps, strict=False)
    assert (joint > 3).any()
    if name == "duplicated":
        assert (eps == 0).any()


def test_large_offset_defeats_absolute_epsilon():
    x, y, _ = data("large_scale")
    eps = oracle.knn_distance_kdtree([x, y], 3)
    assert (eps - 1e-15 == eps).all() and (eps > 0).all()


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("k", KS)
def test_oracle_kdtree_equals_brute_force(name, k):
    x, y, z = data(name)
    np.testing.assert_array_equal(oracle.knn_distance_kdtree([x, y, z], k), oracle.knn_distance_brute([x, y, z], k))


# ---------------------------------------------------------------------------------------------------
# per-sample op outputs, exact


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("impl", ["reference", "op"])
def test_knn_distance_oracle(name, k, impl, tiles):
    x, y, z = data(name)
    fn = reference.knn_distance if impl == "reference" else ops.knn_distance
    gx, gy, gz = tensors(x, y, z)
    np.testing.assert_array_equal(fn([gx, gy], k)[0].numpy(), oracle.knn_distance_kdtree([x, y], k))
    np.testing.assert_array_equal(fn([gx, gy, gz], k)[0].numpy(), oracle.knn_distance_kdtree([x, y, z], k))
    np.testing.assert_array_equal(fn([gx], k)[0].numpy(), oracle.knn_distance_kdtree([x], k))


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("impl", ["reference", "op"])
def test_count_within_oracle(name, strict, impl, tiles):
    """One call per group set with a (len(KS), N) batch of radii (the k-th distances for every k) over
    groups shared by the batch (B_g = 1)."""
    x, y, z = data(name)
    fn = reference.count_within if impl == "reference" else ops.count_within
    gx, gy, gz = tensors(x, y, z)
    eps = [oracle.knn_distance_kdtree([x, y, z], k) for k in KS]
    radius = torch.from_numpy(np.stack(eps))
    for groups, arrays in (([gx], [x]), ([gy], [y]), ([gz], [z]), ([gx, gz], [x, z]), ([gy, gz], [y, z])):
        got = fn(groups, radius, strict)
        assert got.dtype == torch.int64 and got.shape == (len(KS), N)
        for b, e in enumerate(eps):
            np.testing.assert_array_equal(got[b].numpy(), oracle.count_within(arrays, e, strict))


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("impl", ["reference", "op"])
def test_marginal_radius_oracle(name, impl, tiles):
    x, y, z = data(name)
    fn = reference.marginal_radius if impl == "reference" else ops.marginal_radius
    gx, gy, gz = tensors(x, y, z)
    for groups, arrays in (([gx, gy], [x, y]), ([gx, gy, gz], [x, y, z]), ([gx, gz], [x, z])):
        eps = [oracle.knn_distance_kdtree(arrays, k) for k in KS]
        got = fn(groups, torch.from_numpy(np.stack(eps)))
        assert got.shape == (len(KS), N, len(groups)) and got.dtype == torch.float64
        for b, e in enumerate(eps):
            np.testing.assert_array_equal(got[b].numpy(), oracle.marginal_radius(arrays, e))


def test_marginal_radius_arbitrary_radii_and_empty_neighbourhoods():
    """Radii that are not k-th distances: 0 (empty neighbourhoods unless duplicated), random ones."""
    rng = np.random.default_rng(5)
    for name in ("continuous", "duplicated", "integers"):
        x, y, _ = data(name)
        gx, gy = tensors(x, y)
        for radius in (np.zeros(N), rng.uniform(0, 1.5, N)):
            got = ops.marginal_radius([gx, gy], torch.from_numpy(radius)[None])[0].numpy()
            np.testing.assert_array_equal(got, oracle.marginal_radius([x, y], radius))
    x, y, _ = data("continuous")
    got = ops.marginal_radius(tensors(x, y), torch.zeros(1, N, dtype=torch.float64))
    assert (got == 0).all()


def _ksg_counts_oracle(arrays, k: int, masks, algorithm: int, knn=oracle.knn_distance_kdtree):
    """eps (N,) and counts (C, N) of ksg_counts from the oracle: a marginal is the columns of its groups, its
    KSG-2 radius the oracle's marginal radius of those columns (the rest of the joint space as a second group)."""
    eps = knn(arrays, k)
    counts = []
    for mask in masks:
        inside = np.hstack([a for i, a in enumerate(arrays) if mask >> i & 1])
        outside = [a for i, a in enumerate(arrays) if not mask >> i & 1]
        if algorithm == 1:
            counts.append(oracle.count_within([inside], eps, strict=True))
        else:
            parts = [inside, np.hstack(outside)] if outside else [inside]
            radius = oracle.marginal_radius(parts, eps)[:, 0]
            counts.append(oracle.count_within([inside], radius, strict=False))
    return eps, np.stack(counts)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("impl", ["reference", "op"])
def test_ksg_counts_oracle(name, algorithm, impl, tiles):
    """The fused op's specification (reference.ksg_counts) and the op: MI's marginals (x), (y), CMI's (x, z),
    (y, z), (z), and the joint space and a pair as marginals, exactly the oracle's."""
    x, y, z = data(name)
    fn = reference.ksg_counts if impl == "reference" else ops.ksg_counts
    gx, gy, gz = tensors(x, y, z)
    cases = (([gx, gy], [x, y], [0b01, 0b10]), ([gx, gy, gz], [x, y, z], [0b101, 0b110, 0b100, 0b111, 0b011]))
    for groups, arrays, masks in cases:
        for k in (1, 3):
            eps, counts = fn(groups, k, masks, algorithm)
            assert counts.shape == (1, len(masks), N) and counts.dtype == torch.int64
            want_eps, want_counts = _ksg_counts_oracle(arrays, k, masks, algorithm)
            np.testing.assert_array_equal(eps[0].numpy(), want_eps)
            np.testing.assert_array_equal(counts[0].numpy(), want_counts)


@pytest.mark.parametrize("algorithm", [1, 2])
def test_ksg_counts_float32_equal_oracle(algorithm):
    """In float32, against the oracle in float32 (its brute-force k-NN), ties and duplicated rows included."""
    for name in ("rounded", "duplicated", "offset"):
        x, y, z = (a.astype(np.float32) for a in data(name))
        masks = [0b101, 0b110, 0b100]
        for impl in (reference.ksg_counts, ops.ksg_counts):
            eps, counts = impl(tensors(x, y, z, dtype=torch.float32), 3, masks, algorithm)
            want_eps, want_counts = _ksg_counts_oracle([x, y, z], 3, masks, algorithm, oracle.knn_distance_brute)
            assert eps.dtype == torch.float32
            np.testing.assert_array_equal(eps[0].numpy(), want_eps)
            np.testing.assert_array_equal(counts[0].numpy(), want_counts)


@pytest.mark.parametrize("name", ["continuous", "rounded", "duplicated", "offset", "large_scale"])
def test_ops_float32_equal_oracle(name):
    """In float32 the distances are rounded float32 differences: the oracle works in float32 too."""
    x, y, z = (a.astype(np.float32) for a in data(name))
    gx, gy, gz = tensors(x, y, z, dtype=torch.float32)
    for k in (1, 4):
        eps = ops.knn_distance([gx, gy, gz], k)
        assert eps.dtype == torch.float32
        ref_eps = oracle.knn_distance_brute([x, y, z], k)
        np.testing.assert_array_equal(eps[0].numpy(), ref_eps)
        for strict in (True, False):
            np.testing.assert_array_equal(
                ops.count_within([gx, gz], eps, strict)[0].numpy(), oracle.count_within([x, z], ref_eps, strict)
            )
        radii = ops.marginal_radius([gx, gy], ops.knn_distance([gx, gy], k))
        np.testing.assert_array_equal(
            radii[0].numpy(), oracle.marginal_radius([x, y], oracle.knn_distance_brute([x, y], k))
        )


# ---------------------------------------------------------------------------------------------------
# estimators, 1e-10


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("k", KS)
def test_mi_ksg1_oracle(name, k):
    x, y, _ = data(name)
    got = mipp.mi(_t(x), _t(y), k, algorithm=1)
    assert abs(got.item() - oracle.ksg1(x, y, k)) <= TOL
    local = mipp.mi(_t(x), _t(y), k, algorithm=1, reduction="none").numpy()
    np.testing.assert_allclose(local, oracle.ksg1(x, y, k, local=True), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("k", KS)
def test_mi_ksg2_oracle(name, k):
    x, y, _ = data(name)
    got = mipp.mi(_t(x), _t(y), k, algorithm=2)
    assert abs(got.item() - oracle.ksg2(x, y, k)) <= TOL
    local = mipp.mi(_t(x), _t(y), k, algorithm=2, reduction="none").numpy()
    np.testing.assert_allclose(local, oracle.ksg2(x, y, k, local=True), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("k", KS)
def test_cmi_oracle(name, k):
    x, y, z = data(name)
    got = mipp.cmi(_t(x), _t(y), _t(z), k)
    assert abs(got.item() - oracle.cmi_fp(x, y, z, k)) <= TOL
    local = mipp.cmi(_t(x), _t(y), _t(z), k, reduction="none").numpy()
    np.testing.assert_allclose(local, oracle.cmi_fp(x, y, z, k, local=True), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["continuous", "rounded", "duplicated", "offset"])
def test_estimators_float32_equal_float32_oracle(name):
    x, y, z = (a.astype(np.float32) for a in data(name))
    for k in (1, 3):
        assert abs(mipp.mi(_t(x), _t(y), k).item() - oracle.ksg1(x, y, k)) <= TOL
        assert abs(mipp.mi(_t(x), _t(y), k, algorithm=2).item() - oracle.ksg2(x, y, k)) <= TOL
        assert abs(mipp.cmi(_t(x), _t(y), _t(z), k).item() - oracle.cmi_fp(x, y, z, k)) <= TOL


@pytest.mark.parametrize("name", ["continuous", "offset"])
def test_normalize_equals_oracle_on_zscored_columns(name):
    """On tie-free data only: z-scoring rounds, so tied distances may become unequal in the last bit in a
    way that depends on how the mean and std are summed (numpy and torch differ)."""
    x, y, z = data(name)
    k = 3
    assert (
        abs(
            mipp.mi(_t(x), _t(y), k, algorithm=2, normalize=True).item()
            - oracle.ksg2(oracle.zscore(x), oracle.zscore(y), k)
        )
        <= 1e-9
    )
    assert (
        abs(mipp.mi(_t(x), _t(y), k, normalize=True).item() - oracle.ksg1(oracle.zscore(x), oracle.zscore(y), k))
        <= 1e-9
    )
    assert (
        abs(
            mipp.cmi(_t(x), _t(y), _t(z), k, normalize=True).item()
            - oracle.cmi_fp(oracle.zscore(x), oracle.zscore(y), oracle.zscore(z), k)
        )
        <= 1e-9
    )


@pytest.mark.parametrize("name", TIED)
def test_estimates_do_not_depend_on_sample_order(name):
    """The tie rules are order-free: permuting the samples leaves every estimate unchanged."""
    x, y, z = (_t(a) for a in data(name))
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    for k in (1, 3):
        for alg in (1, 2):
            a, b = mipp.mi(x, y, k, algorithm=alg), mipp.mi(x[perm], y[perm], k, algorithm=alg)
            assert abs(a.item() - b.item()) <= 1e-12
        a, b = mipp.cmi(x, y, z, k), mipp.cmi(x[perm], y[perm], z[perm], k)
        assert abs(a.item() - b.item()) <= 1e-12


# ---------------------------------------------------------------------------------------------------
# scikit-learn's KSG-1


@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ksg1_equals_sklearn(k, rho):
    """sklearn's _compute_mi_cc: k nearest neighbours in (x, y) (max-norm), radius nextafter(eps, 0)
    counted with <= (i.e. strict < eps), clipped at 0. With clearly dependent data there is no clipping."""
    rng = np.random.default_rng(int(10 * rho) + k)
    n = 1000
    x = rng.standard_normal(n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    expected = _compute_mi_cc(x, y, k)
    assert expected > 0.1  # not clipped
    got = mipp.mi(_t(x), _t(y), k, algorithm=1).item()
    assert abs(got - expected) <= TOL


def test_knn_indices_are_the_nearest_in_order():
    """reference.knn_indices (the neighbour lists of mipp.local_permutations): the k nearest, nearest first,
    never the sample itself, with ties and duplicates."""
    z = (torch.randn(2, 40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2).round()
    idx = reference.knn_indices([z], 5)
    d = (z[:, :, None, :] - z[:, None, :, :]).abs().amax(-1)
    d.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    assert idx.shape == (2, 40, 5) and idx.dtype == torch.long
    assert torch.equal(d.gather(2, idx), d.sort(dim=2).values[..., :5])
    assert not (idx == torch.arange(40)[:, None]).any()
