"""The extension's exact CPU kernels (knn_distance, count_within, marginal_radius) against the reference,
bit for bit (torch.equal), on every path (brute force, sorted sweep), with proof that the C++ path ran."""

import numpy as np
import pytest
import torch

import mipp
from mipp import _ext, reference

pytestmark = pytest.mark.skipif(_ext._C is None, reason=f"extension not built: {_ext.MISSING_REASON}")

ops = torch.ops.mipp
PATHS = ["brute", "sweep", "strips"]


def _path_run(op, path, groups):
    """The path a forced one runs as: the strips are knn_distance's with two or more joint columns."""
    joint = sum(g.shape[-1] for g in groups)
    return "sweep" if path == "strips" and (op != "knn_distance" or joint < 2) else path


def _data(kind, b, n, d, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=gen, dtype=torch.float64)
    if kind == "ties":  # few distinct values: many equal distances, the k-th one tied
        x = (x * 2).round()
    elif kind == "duplicates":  # whole rows repeated: distance 0 to other samples
        x[:, n // 2 :] = x[:, : n - n // 2].clone()
    elif kind == "offset":  # large values: the subtraction rounds, |a - b| is not the true distance
        x = 1e6 + x * 1e-3 if dtype == torch.float64 else 1e4 + x * 1e-2
    return x.to(dtype)


def _ran(op, path):
    """A context that asserts the C++ kernel of `op` ran on `path` at least once inside it (see _path_run)."""

    class Ran:
        def __enter__(self):
            self.before = _ext.paths[f"{op}:{path}"]
            return self

        def __exit__(self, *exc):
            if exc[0] is None:
                assert _ext.paths[f"{op}:{path}"] > self.before, f"{op} did not run the C++ {path} path"

    return Ran()


def check_all_ops(groups, k, paths=PATHS):
    """Every op on every path equals the reference exactly; returns the reference knn distances."""
    eps = reference.knn_distance(groups, k)
    for path in paths:
        with _ext.force_path(path):
            with _ran("knn_distance", _path_run("knn_distance", path, groups)):
                got = ops.knn_distance(groups, k)
            assert torch.equal(got, eps), f"knn_distance {path}"
            for strict in (True, False):
                for sub in (groups[:1], groups):
                    with _ran("count_within", _path_run("count_within", path, sub)):
                        got = ops.count_within(sub, eps, strict)
                    assert torch.equal(got, reference.count_within(sub, eps, strict)), f"count_within {path}"
            with _ran("marginal_radius", _path_run("marginal_radius", path, groups)):
                got = ops.marginal_radius(groups, eps)
            assert torch.equal(got, reference.marginal_radius(groups, eps)), f"marginal_radius {path}"
    return eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["continuous", "ties", "duplicates", "offset"])
@pytest.mark.parametrize("dims", [(1,), (1, 1), (2, 3), (1, 1, 1), (5, 7)])
def test_ops_equal_reference(dtype, kind, dims):
    groups = [_data(kind, 1, 150, d, dtype, seed=g) for g, d in enumerate(dims)]
    for k in (1, 4):
        check_all_ops(groups, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [(True, False), (False, True), (False, False), (True, True)])
def test_batched_with_shared_groups(dtype, shared):
    # B = 5 problems; a group with B_g = 1 is shared (the shared-marginal case: one y, many x)
    b, n = 5, 130
    groups = [_data("ties", 1 if s else b, n, d, dtype, seed=3 + i) for i, (s, d) in enumerate(zip(shared, (1, 9)))]
    eps = check_all_ops(groups, 3)
    assert eps.shape == (b if not all(shared) else 1, n)


def test_radius_batch_differs_from_groups():
    # every group shared, radii per problem: counts for B radii over one set of distances
    x = _data("continuous", 1, 90, 2, torch.float64, seed=7)
    radius = torch.rand(4, 90, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for path in PATHS:
        with _ext.force_path(path):
            for strict in (True, False):
                with _ran("count_within", _path_run("count_within", path, [x])):
                    got = ops.count_within([x], radius, strict)
                assert torch.equal(got, reference.count_within([x], radius, strict))
            assert torch.equal(ops.marginal_radius([x], radius), reference.marginal_radius([x], radius))


def test_special_radii():
    # 0 and negative radii count nothing (strict) or the zero-distance duplicates; +inf and NaN are outside
    # the ops' contract (a +inf radius would count the sample itself, excluded by index as +inf): refused
    x = _data("ties", 1, 40, 1, torch.float64, seed=9)
    radius = torch.tensor([0.0, -1.0, 0.5, 2.0] * 10, dtype=torch.float64)[None]
    for path in PATHS:
        with _ext.force_path(path):
            for strict in (True, False):
                assert torch.equal(ops.count_within([x], radius, strict), reference.count_within([x], radius, strict))
            assert torch.equal(ops.marginal_radius([x], radius), reference.marginal_radius([x], radius))
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="radius contains NaN or inf"):
            ops.count_within([x], radius.clone().fill_(bad), False)


def test_non_contiguous_inputs():
    base = _data("continuous", 2, 200, 6, torch.float64, seed=10)
    x = base.transpose(1, 2).contiguous().transpose(1, 2)[:, :, ::2]  # column-major storage, strided columns
    x = x[:, ::2]  # every second sample: strided rows, (2, 100, 3)
    y = base[:, 1::2, 4:5]  # a strided single column, (2, 100, 1)
    assert not x.is_contiguous() and not y.is_contiguous()
    check_all_ops([x, y], 2)
    eps = reference.knn_distance([x, y], 2)
    assert torch.equal(
        ops.count_within([x], eps[:, None, :].expand(2, 3, 100)[:, 1], True), reference.count_within([x], eps, True)
    )


@pytest.mark.parametrize("n, k", [(2, 1), (3, 2), (17, 16), (300, 30)])
def test_small_n_and_large_k(n, k):
    check_all_ops([_data("ties", 1, n, 2, torch.float64, seed=n)], k)


def test_tile_edges_and_many_problems():
    # N not a multiple of the tile sizes (8 query rows, 256 candidates), more problems than threads
    groups = [
        _data("continuous", 7, 523, 3, torch.float32, seed=11),
        _data("continuous", 1, 523, 20, torch.float32, seed=12),
    ]
    check_all_ops(groups, 5)


def test_auto_path_by_dimension():
    low = [_data("continuous", 1, 200, 1, torch.float64, seed=13)] * 2
    high = [_data("continuous", 1, 200, 12, torch.float64, seed=14)]
    with _ran("knn_distance", "strips"):
        ops.knn_distance(low, 3)
    with _ran("knn_distance", "sweep"):
        ops.knn_distance(low[:1], 3)
    with _ran("count_within", "sweep"):
        ops.count_within(low[:1], torch.ones(1, 200, dtype=torch.float64), True)
    with _ran("knn_distance", "brute"):
        ops.knn_distance(high, 3)


def test_same_result_for_any_thread_count():
    # large enough that the kernels use several threads (they cap threads for small calls)
    groups = [_data("ties", 3, 3000, 1, torch.float64, seed=15), _data("ties", 1, 3000, 10, torch.float64, seed=16)]
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 5):
            torch.set_num_threads(t)
            eps = ops.knn_distance(groups, 3)
            results.append(
                (
                    eps,
                    ops.count_within(groups[:1], eps, True),
                    ops.count_within(groups[1:], eps, True),
                    ops.marginal_radius(groups, eps),
                )
            )
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(r, results[0]))


def test_outside_contract_is_refused_before_the_kernels():
    x64 = _data("continuous", 1, 50, 2, torch.float64, seed=17)
    before = sum(_ext.paths.values())
    with pytest.raises(ValueError, match=r"groups\[1\] is torch\.float32"):
        ops.knn_distance([x64, x64.float()], 3)  # mixed dtypes (the estimators promote first)
    with pytest.raises(ValueError, match="k=3 must be in"):
        ops.knn_distance([x64[:, :3]], 3)  # k = N
    assert sum(_ext.paths.values()) == before  # neither call reached the extension


def test_mi_matches_sklearn_ksg():
    """End to end: mipp.mi (KSG-1, extension kernels) equals scikit-learn's KSG on continuous data, where
    there are no ties to break differently (sklearn counts <= nextafter(eps, 0), i.e. < eps)."""
    feature_selection = pytest.importorskip("sklearn.feature_selection._mutual_info")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1500)
    y = x + rng.standard_normal(1500)
    for k in (1, 3, 7):
        want = feature_selection._compute_mi_cc(x, y, k)
        before = _ext.paths["ksg_counts:strips"]
        got = mipp.mi(torch.from_numpy(x), torch.from_numpy(y), k)
        assert _ext.paths["ksg_counts:strips"] > before  # the fused op (mipp::ksg_counts) on the strips
        assert abs(float(got) - want) < 1e-12


@pytest.mark.parametrize("rows", [(0, 200), (13, 150), (199, 200), (80, 80)])
def test_query_rows_equal_the_full_call_on_every_path(rows):
    """The ops' query rows [q0, q1) (mipp.distributed splits an estimate by them) give exactly the same
    rows as the full call, on the sweep and the brute force, with ties, duplicates and a shared batch."""
    q0, q1 = rows
    x = _data("ties", 3, 200, 2, torch.float64, seed=21)
    y = _data("duplicates", 1, 200, 1, torch.float64, seed=22)
    for path in PATHS:
        with _ext.force_path(path):
            eps = ops.knn_distance([x, y], 4)
            assert torch.equal(ops.knn_distance([x, y], 4, q0, q1), eps[:, q0:q1])
            for strict in (True, False):
                full = ops.count_within([x], eps, strict)
                assert torch.equal(ops.count_within([x], eps[:, q0:q1], strict, q0, q1), full[:, q0:q1])
            full = ops.marginal_radius([x, y], eps)
            assert torch.equal(ops.marginal_radius([x, y], eps[:, q0:q1], q0, q1), full[:, q0:q1])
    assert torch.equal(reference.knn_distance([x, y], 4, q0, q1), eps[:, q0:q1])
    with pytest.raises(ValueError, match="query rows"):
        ops.knn_distance([x, y], 4, 150, 100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["ties", "duplicates", "offset"])
def test_strips_adversarial(dtype, kind):
    """The strips (knn_distance, 2 to 8 joint columns) against the reference: few samples (every k up to N - 1),
    ties and whole duplicated rows at the strip boundaries, a constant key column, many strips with large k,
    a batch with a shared group, and query rows."""
    for n in range(2, 11):
        groups = [_data(kind, 2, n, 1, dtype, seed=40 + n), _data(kind, 1, n, 2, dtype, seed=60 + n)]
        for k in range(1, n):
            with _ext.force_path("strips"), _ran("knn_distance", "strips"):
                assert torch.equal(ops.knn_distance(groups, k), reference.knn_distance(groups, k)), (n, k)
    x = _data(kind, 3, 700, 2, dtype, seed=80)
    y = _data(kind, 1, 700, 1, dtype, seed=81)
    flat = torch.zeros_like(y)  # a constant column: every strip holds the same key value
    for groups in ([x, y], [x, flat], [flat, y]):
        for k in (1, 5, 64, 300, 699):
            want = reference.knn_distance(groups, k)
            with _ext.force_path("strips"), _ran("knn_distance", "strips"):
                assert torch.equal(ops.knn_distance(groups, k), want), k
                assert torch.equal(ops.knn_distance(groups, k, 100, 411), want[:, 100:411]), k
