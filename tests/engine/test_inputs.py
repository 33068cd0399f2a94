"""Input handling of the public estimators: bad input gets a ValueError/TypeError that names the
argument; inputs are never modified; layouts and dtypes; result shapes, dtypes and devices."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import mipp

ops = torch.ops.mipp

N = 60


def _data(seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 2, dtype=dtype, generator=g)
    y = x[:, :1] + 0.5 * torch.randn(N, 1, dtype=dtype, generator=g)
    z = torch.randn(N, 1, dtype=dtype, generator=g)
    return x, y, z


def _names(argument: str):
    """A regex that finds the argument as a word (x, not the x in 'max')."""
    return re.compile(rf"(?<![A-Za-z_]){re.escape(argument)}(?![A-Za-z_])")


def _raises(exc, argument: str, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert _names(argument).search(str(info.value)), f"message does not name {argument!r}: {info.value}"
    return info.value


ESTIMATORS = {
    "mi1": lambda x, y, z, **kw: mipp.mi(x, y, algorithm=1, **kw),
    "mi2": lambda x, y, z, **kw: mipp.mi(x, y, algorithm=2, **kw),
    "cmi": lambda x, y, z, **kw: mipp.cmi(x, y, z, **kw),
}


# ---------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["x", "y", "z"])
@pytest.mark.parametrize("normalize", [False, True])
def test_non_finite(bad, which, normalize):
    x, y, z = _data()
    args = {"x": x, "y": y, "z": z}
    args[which] = args[which].clone()
    args[which][7, 0] = bad
    _raises(ValueError, which, mipp.cmi, args["x"], args["y"], args["z"], normalize=normalize)
    if which != "z":
        for algorithm in (1, 2):
            _raises(ValueError, which, mipp.mi, args["x"], args["y"], algorithm=algorithm, normalize=normalize)


def test_non_finite_in_one_problem_of_a_batch():
    x, y, _ = _data()
    xb = torch.stack([x, x, x])
    xb[2, 5, 1] = float("nan")
    _raises(ValueError, "x", mipp.mi, xb, y)


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("n,k", [(3, 3), (2, 3), (1, 1), (0, 3), (5, 10)])
def test_too_few_samples(name, n, k):
    x, y, z = _data()
    _raises(ValueError, "k", ESTIMATORS[name], x[:n], y[:n], z[:n], k=k)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_n_equals_k_plus_one_works(name):
    x, y, z = _data()
    out = ESTIMATORS[name](x[:4], y[:4], z[:4], k=3)
    assert torch.isfinite(out)


@pytest.mark.parametrize("which", ["y", "z"])
def test_mismatched_samples(which):
    x, y, z = _data()
    if which == "y":
        _raises(ValueError, "y", mipp.mi, x, y[:-1])
        _raises(ValueError, "y", mipp.cmi, x, y[:-1], z)
        _raises(ValueError, "y", mipp.mi, torch.stack([x, x]), y[:-1])
    else:
        _raises(ValueError, "z", mipp.cmi, x, y, z[:-1])


def test_mismatched_batch_sizes():
    x, y, z = _data()
    _raises(ValueError, "y", mipp.mi, torch.stack([x] * 3), torch.stack([y] * 2))
    _raises(ValueError, "z", mipp.cmi, torch.stack([x] * 3), y, torch.stack([z] * 2))


@pytest.mark.parametrize("shape", [(), (1, 1, N, 2), (2, 1, 1, N, 1)])
def test_wrong_rank(shape):
    x, y, z = _data()
    bad = torch.zeros(shape, dtype=torch.float64) if shape else torch.tensor(1.0, dtype=torch.float64)
    _raises(ValueError, "x", mipp.mi, bad, y)
    _raises(ValueError, "y", mipp.mi, x, bad)
    _raises(ValueError, "z", mipp.cmi, x, y, bad)


def test_no_columns():
    x, y, z = _data()
    _raises(ValueError, "x", mipp.mi, x[:, :0], y)
    _raises(ValueError, "z", mipp.cmi, x, y, z[:, :0])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
def test_non_floating_dtype(dtype):
    x, y, z = _data()
    _raises(TypeError, "x", mipp.mi, x.to(dtype), y)
    _raises(TypeError, "y", mipp.mi, x, y.to(dtype))
    _raises(TypeError, "z", mipp.cmi, x, y, z.to(dtype))


@pytest.mark.parametrize("bad", [None, 3.0, "abc", {"a": 1}, [[1.0], [2.0, 3.0]]])
def test_not_a_tensor(bad):
    x, y, z = _data()
    _raises(TypeError, "x", mipp.mi, bad, y)
    _raises(TypeError, "y", mipp.mi, x, bad)
    _raises(TypeError, "z", mipp.cmi, x, y, bad)


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one(name, k):
    x, y, z = _data()
    _raises(ValueError, "k", ESTIMATORS[name], x, y, z, k=k)


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("k", [3.0, 2.5, "3", True, None])
def test_k_not_int(name, k):
    x, y, z = _data()
    _raises(TypeError, "k", ESTIMATORS[name], x, y, z, k=k)


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("reduction", ["sum", "MEAN", None, ""])
def test_bad_reduction(name, reduction):
    x, y, z = _data()
    _raises(ValueError, "reduction", ESTIMATORS[name], x, y, z, reduction=reduction)


@pytest.mark.parametrize("algorithm", [0, 3, "1", 1.5, None])
def test_bad_algorithm(algorithm):
    x, y, _ = _data()
    _raises(ValueError, "algorithm", mipp.mi, x, y, algorithm=algorithm)


def test_mi_per_feature_errors():
    x, y, _ = _data()
    _raises(ValueError, "X", mipp.mi_per_feature, x[:, 0], y)
    _raises(ValueError, "X", mipp.mi_per_feature, torch.stack([x, x]), y)
    _raises(ValueError, "k", mipp.mi_per_feature, x, y, k=0)
    _raises(ValueError, "Y", mipp.mi_per_feature, x, y[:-1])
    _raises(ValueError, "algorithm", mipp.mi_per_feature, x, y, algorithm=3)


def test_mi_per_feature_non_finite_names_the_argument():
    x, y, _ = _data()
    x = x.clone()
    x[3, 1] = float("nan")
    err = _raises(ValueError, "X", mipp.mi_per_feature, x, y)
    assert "nan" in str(err).lower()


def test_permutation_test_errors():
    x, y, z = _data()
    for n_permutations in (0, -5, 2.5, True, "10"):
        _raises(ValueError, "n_permutations", mipp.permutation_test, x, y, n_permutations=n_permutations)
    _raises(ValueError, "algorithm", mipp.permutation_test, x, y, z, algorithm=2, n_permutations=5)
    _raises(ValueError, "algorithm", mipp.permutation_test, x, y, algorithm=3, n_permutations=5)
    _raises(ValueError, "x", mipp.permutation_test, x[None, None], y, n_permutations=5)
    _raises(ValueError, "k", mipp.permutation_test, x, y, k=0, n_permutations=5)
    _raises(ValueError, "k", mipp.permutation_test, x[:3], y[:3], n_permutations=5)
    _raises(ValueError, "y", mipp.permutation_test, x, y[:-1], n_permutations=5)
    _raises(TypeError, "x", mipp.permutation_test, x.long(), y, n_permutations=5)
    xn = x.clone()
    xn[0, 0] = float("nan")
    _raises(ValueError, "x", mipp.permutation_test, xn, y, n_permutations=5)


def test_array_likes_are_float64_tensors():
    """numpy arrays and lists are accepted (as float64 CPU tensors) by every entry point."""
    np = pytest.importorskip("numpy")
    x, y, z = _data()
    assert float(mipp.mi(x.numpy(), y.tolist())) == float(mipp.mi(x, y))
    assert float(mipp.cmi(x.numpy(), y.numpy(), z.numpy().astype(np.float32))) == float(mipp.cmi(x, y, z))
    assert torch.equal(mipp.mi_per_feature(x.numpy(), y.numpy()), mipp.mi_per_feature(x, y))
    g = lambda: torch.Generator().manual_seed(0)
    a = mipp.permutation_test(x.tolist(), y.numpy(), z.numpy(), n_permutations=5, generator=g(), local_neighbors=3)
    b = mipp.permutation_test(x, y, z, n_permutations=5, generator=g(), local_neighbors=3)
    assert torch.equal(a.null, b.null)
    ints = np.arange(N)[:, None] % 7
    assert mipp.mi(ints, y).dtype == torch.float64


def test_integer_like_k_and_a_bool_algorithm():
    np = pytest.importorskip("numpy")
    x, y, _ = _data()
    assert float(mipp.mi(x, y, k=np.int64(3))) == float(mipp.mi(x, y, k=3))
    _raises(ValueError, "algorithm", mipp.mi, x, y, algorithm=True)


def test_more_bad_inputs_are_named():
    x, y, z = _data()
    _raises(ValueError, "x", mipp.mi, torch.empty(N, 2, device="meta"), y)
    _raises(ValueError, "x", mipp.mi, torch.empty(0, N, 1, dtype=torch.float64), y)
    _raises(ValueError, "X", mipp.mi_per_feature, x[:, :0], y)
    for bad in (0, -2, True, 2.5):
        _raises(ValueError, "local_neighbors", mipp.permutation_test, x, y, z, n_permutations=5, local_neighbors=bad)
    for n in (0, 1):
        _raises(ValueError, "z", mipp.local_permutations, z[:n], 5)
    for bad in (-1, 2.5):
        _raises(ValueError, "n_permutations", mipp.local_permutations, z, bad)
    for bad in (z.long(), z.to(torch.complex64), torch.empty(N, 1, device="meta")):
        _raises(TypeError, "z", mipp.local_permutations, bad, 5)
    for value in (float("nan"), float("inf")):
        bad = z.clone()
        bad[3, 0] = value
        _raises(ValueError, "z", mipp.local_permutations, bad, 5)


def test_requires_grad_warns():
    x, y, _ = _data()
    with pytest.warns(UserWarning, match="no gradient"):
        mipp.mi(x.clone().requires_grad_(), y)


# ---------------------------------------------------------------------------------------------------
# inputs are never modified


@pytest.mark.parametrize("normalize", [False, True])
def test_inputs_not_modified(normalize):
    x, y, z = _data()
    xb = torch.stack([x, 2 * x + 1, x - 3])
    args = [x, y, z, xb, 3 + 5 * x.float(), 1e6 + y]
    clones = [a.clone() for a in args]
    xx, yy, zz, xxb, x32, ybig = args
    mipp.mi(xx, yy, normalize=normalize)
    mipp.mi(xx, yy, algorithm=2, normalize=normalize)
    mipp.mi(x32, ybig, normalize=normalize, reduction="none")
    mipp.cmi(xx, yy, zz, normalize=normalize)
    mipp.mi(xxb, yy, normalize=normalize)
    mipp.cmi(xxb, ybig, zz, normalize=normalize, reduction="none")
    mipp.mi_per_feature(xx, ybig, normalize=normalize)
    mipp.permutation_test(xx, yy, n_permutations=5, normalize=normalize, generator=torch.Generator().manual_seed(0))
    mipp.permutation_test(
        xxb, yy, zz, n_permutations=5, normalize=normalize, generator=torch.Generator().manual_seed(0)
    )
    for a, c in zip(args, clones):
        assert a.dtype == c.dtype and torch.equal(a, c)


# ---------------------------------------------------------------------------------------------------
# layouts and dtypes


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_non_contiguous_equals_contiguous(name):
    x, y, z = _data(1)
    # x as every other row of a transposed buffer, y as a column slice, z as a strided 1-D view
    big = torch.zeros(2, 2 * N, dtype=torch.float64)
    big[:, ::2] = x.T
    xv = big.T[::2]
    yv = torch.cat([y, torch.zeros_like(y), y], dim=1)[:, 2:3]
    zbuf = torch.zeros(3 * N, dtype=torch.float64)
    zbuf[::3] = z[:, 0]
    zv = zbuf[::3]
    assert not xv.is_contiguous() and not yv.is_contiguous() and not zv.is_contiguous()
    for reduction in ("mean", "none"):
        want = ESTIMATORS[name](x, y, z[:, 0], reduction=reduction)
        assert torch.equal(ESTIMATORS[name](xv, yv, zv, reduction=reduction), want)
    # batched, non-contiguous (a transposed (B, d, N) buffer)
    xb = torch.stack([x, x.flip(0)]).transpose(1, 2).contiguous().transpose(1, 2)
    assert not xb.is_contiguous()
    assert torch.equal(ESTIMATORS[name](xb, y, z), ESTIMATORS[name](xb.contiguous(), y, z))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_float32_inputs(name):
    x, y, z = _data(2)
    got = ESTIMATORS[name](x.float(), y.float(), z.float())
    assert got.dtype == torch.float64 and got.dim() == 0 and torch.isfinite(got)
    assert abs(got.item() - ESTIMATORS[name](x, y, z).item()) < 0.02
    local = ESTIMATORS[name](x.float(), y.float(), z.float(), reduction="none")
    assert local.dtype == torch.float64 and local.shape == (N,)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_mixed_float32_float64_promote(name):
    """float32 with float64: the float32 argument is promoted (exactly) before any distance is taken."""
    x, y, z = _data(3)
    x32 = x.float()
    got = ESTIMATORS[name](x32, y, z)
    assert got.dtype == torch.float64
    assert torch.equal(got, ESTIMATORS[name](x32.double(), y, z))
    y32, z32 = y.float(), z.float()
    assert torch.equal(ESTIMATORS[name](x, y32, z32), ESTIMATORS[name](x, y32.double(), z32.double()))


# ---------------------------------------------------------------------------------------------------
# results


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("normalize", [False, True])
def test_reduction_none_mean_equals_estimate(name, normalize):
    x, y, z = _data(4)
    local = ESTIMATORS[name](x, y, z, reduction="none", normalize=normalize)
    est = ESTIMATORS[name](x, y, z, normalize=normalize)
    assert local.shape == (N,) and local.dtype == torch.float64
    assert abs(local.mean().item() - est.item()) <= 1e-12
    # batched: (B, N) local values, each row's mean is that problem's estimate
    xb = torch.stack([x, x + 0.3 * torch.randn(N, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))])
    local_b = ESTIMATORS[name](xb, y, z, reduction="none", normalize=normalize)
    est_b = ESTIMATORS[name](xb, y, z, normalize=normalize)
    assert local_b.shape == (2, N) and est_b.shape == (2,)
    assert (local_b.mean(dim=1) - est_b).abs().max().item() <= 1e-12


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_result_is_0d_float64_on_input_device(name, dtype):
    x, y, z = _data(5, dtype)
    out = ESTIMATORS[name](x, y, z)
    assert out.shape == () and out.dtype == torch.float64 and out.device == x.device
    assert isinstance(out.item(), float)


def test_one_d_and_two_d_inputs_agree():
    x, y, z = _data(6)
    for k in (1, 5):
        assert torch.equal(mipp.mi(x[:, 0], y[:, 0], k), mipp.mi(x[:, :1], y, k))
        assert torch.equal(mipp.cmi(x[:, 0], y[:, 0], z[:, 0], k), mipp.cmi(x[:, :1], y, z, k))


def test_k_as_keyword_and_positional():
    x, y, z = _data(7)
    assert torch.equal(mipp.mi(x, y, 5), mipp.mi(x, y, k=5))
    assert torch.equal(mipp.cmi(x, y, z, 5), mipp.cmi(x, y, z, k=5))
    assert not torch.equal(mipp.mi(x, y, 5), mipp.mi(x, y, 1))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_result_on_cuda_device():
    x, y, z = _data(8)
    for name, fn in ESTIMATORS.items():
        out = fn(x.cuda(), y.cuda(), z.cuda())
        assert out.device.type == "cuda" and out.dtype == torch.float64 and out.shape == ()
        assert torch.equal(out.cpu(), fn(x, y, z)), name


def test_tied_data_warn_and_jitter_breaks_the_ties():
    """Heavily discretised data (a binary column): a warning that says what to do; jitter from a generator
    is reproducible, leaves the input untouched and removes the warning."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 2, (300, 1), generator=g).double()
    y = x + torch.randint(0, 3, (300, 1), generator=g).double()  # both integer-valued
    with pytest.warns(UserWarning, match="ties decide.*jitter=1e-10.*discrete_x / discrete_y"):
        tied = float(mipp.mi(x, y))
    before = x.clone()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = float(mipp.mi(x, y, jitter=1e-10, generator=torch.Generator().manual_seed(0)))
        b = float(mipp.mi(x, y, jitter=1e-10, generator=torch.Generator().manual_seed(0)))
    assert a == b and torch.equal(x, before) and a < tied  # ties bias KSG upward
    assert abs(float(mipp.mi(x[:, 0], y[:, 0], discrete_x=True, discrete_y=True)) - a) < 0.1  # ~ plug-in
    _raises(ValueError, "jitter", mipp.mi, x, y, jitter=-1.0)


def test_jitter_near_the_largest_value_does_not_overflow():
    """Issue 22, item 5: the jitter scale mean|column| was a sum that overflowed to inf for values near the
    dtype's max (1e306 * 1,000 samples), so every jittered call was refused as overflow, with or without
    normalize. The scale is now computed without overflow and both calls work."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.9e306, 1e306, 1000)
    y = x + rng.uniform(0.0, 1e304, 1000)
    for normalize in (False, True):
        g = torch.Generator().manual_seed(0)
        value = float(mipp.mi(x, y, jitter=1e-10, normalize=normalize, generator=g))
        assert math.isfinite(value) and value > 1.0, normalize
    assert abs(float(mipp.mi(x, y, jitter=1e-10, normalize=True)) - float(mipp.mi(x, y, normalize=True))) < 1e-3
    x32 = torch.from_numpy(rng.uniform(2.9e37, 3e37, 1000)).float()  # float32: sums overflow near 3.4e38
    y32 = x32 + torch.from_numpy(rng.uniform(0.0, 1e35, 1000)).float()
    assert math.isfinite(float(mipp.mi(x32, y32, jitter=1e-6, normalize=True)))


def test_overflowing_differences_are_rejected_on_every_path():
    """x = [-1.5e308] * 10 + [1.5e308] * 10: differences overflow to +inf, which tied with the self pair
    (+inf by index) and counted the sample itself. Such inputs are now refused with the fix named."""
    x = torch.tensor([-1.5e308] * 10 + [1.5e308] * 10, dtype=torch.float64)
    y = torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for algorithm in (1, 2):
        with pytest.raises(ValueError, match="x: the differences between its samples overflow"):
            mipp.mi(x, y, 12, algorithm=algorithm)
    g = x[None, :, None]
    with pytest.raises(ValueError, match="overflow"):
        ops.count_within([g], torch.full((1, 20), 1.0, dtype=torch.float64), False)
    with pytest.raises(ValueError, match="overflow"):
        ops.knn_distance([g], 3)
    # float32 near 3e38 likewise, and normalize=True scales first, so the same data then works
    x32 = torch.tensor([-3e38] * 10 + [3e38] * 10, dtype=torch.float32)
    with pytest.raises(ValueError, match="overflow"):
        mipp.mi(x32, y.float(), 3)
    assert torch.isfinite(mipp.mi(x32, y.float(), 3, normalize=True))


def test_an_infinite_radius_is_refused_by_the_ops():
    g = torch.randn(1, 20, 1, dtype=torch.float64)
    r = torch.full((1, 20), float("inf"), dtype=torch.float64)
    for op in (lambda: ops.count_within([g], r, False), lambda: ops.marginal_radius([g], r)):
        with pytest.raises(ValueError, match="radius contains NaN or inf"):
            op()


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e37), (torch.float64, 1e155), (torch.float64, 1e300)])
def test_normalize_on_extreme_values_equals_normalize_on_moderate_ones(dtype, scale):
    """float32 in [1e37, 2e37] used to give 1.5 nats (right: 0.76) and float64 near 1e155 gave 0: z-scores
    overflowed. Scaled first, the estimate is the one of the same data at a moderate scale."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(400, dtype=torch.float64, generator=g) + 1.0
    y = x + 0.3 * torch.randn(400, dtype=torch.float64, generator=g)
    for algorithm in (1, 2):
        ref = float(mipp.mi(x.to(dtype), y.to(dtype), 3, algorithm=algorithm, normalize=True))
        big = float(mipp.mi((x * scale).to(dtype), y.to(dtype), 3, algorithm=algorithm, normalize=True))
        assert big == pytest.approx(ref, abs=1e-6 if dtype == torch.float64 else 0.05)
        assert big > 0.3


# ---------------------------------------------------------------------------------------------------
# query rows and neighbour counts (mipp.distributed.mi_rows is built on them)


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("batched", [False, True])
def test_rows_and_counts_rebuild_the_estimate(algorithm, batched):
    g = torch.Generator().manual_seed(31)
    x = (torch.randn(3, N, 2, dtype=torch.float64, generator=g) * 2).round()  # ties and duplicates
    y = x[..., :1] + torch.randn(3, N, 1, dtype=torch.float64, generator=g).round()
    if not batched:
        x, y = x[0], y[0]
    kw = {"algorithm": algorithm, "jitter": 0.0}
    with pytest.warns(UserWarning, match="ties"):
        counts = mipp.mi(x, y, 4, reduction="counts", **kw)
    assert counts.dtype == torch.int64 and counts.shape == ((3, N, 2) if batched else (N, 2))
    with pytest.warns(UserWarning, match="ties"):
        parts = [mipp.mi(x, y, 4, rows=r, reduction="counts", **kw) for r in [(0, 17), (17, 17), (17, N)]]
    assert torch.equal(torch.cat(parts, dim=-2), counts)
    with pytest.warns(UserWarning, match="ties"):
        whole, local = mipp.mi(x, y, 4, **kw), mipp.mi(x, y, 4, reduction="none", **kw)
        assert torch.equal(mipp.mi(x, y, 4, rows=(5, 40), reduction="none", **kw), local[..., 5:40])
    assert torch.equal(mipp.ksg.mi_from_counts(counts, 4, algorithm=algorithm), whole)
    assert torch.equal(mipp.ksg.mi_from_counts(counts, 4, algorithm=algorithm, reduction="none"), local)


@pytest.mark.parametrize("rows", [(0, N + 1), (5, 4), (-1, 3), (0,), "ab", (0.5, 3)])
def test_bad_rows_are_named(rows):
    x, y, _ = _data()
    _raises(ValueError, "rows", mipp.mi, x, y, rows=rows, reduction="none")


def test_rows_need_per_sample_results():
    x, y, _ = _data()
    _raises(ValueError, "rows", mipp.mi, x, y, rows=(0, 10))
    _raises(ValueError, "rows", mipp.mi, x, y > 0, rows=(0, 10), reduction="none", discrete_y=True)


@pytest.mark.skipif(mipp._ext._C is None, reason="the extension is not built")
def test_column_stats_extension_equals_the_torch_specification():
    """mipp.ops.column_stats (the estimators' input checks) on the CPU runs the extension's one pass per column
    (a hash count of repeated values); it must give the torch specification's (NaN / inf, span overflow, most
    repeated samples of a column) on fresh data of both dtypes, batched and not: continuous, half-integers,
    -0 with +0, integer-valued data whose low mantissa bits are all 0 (every sample in one hash slot if the
    hash read them), huge equal powers of two, a lone NaN or inf, a span past the dtype's largest value."""
    from mipp import _ext, ops

    gen = torch.Generator().manual_seed(7)
    for dtype in (torch.float32, torch.float64):
        big = torch.finfo(dtype).max
        for n in (1, 2, 3, 257, 3000):
            for case in range(8):
                g = torch.randn(3, n, 2, dtype=dtype, generator=gen)
                if case == 1:
                    g = torch.round(g * 2) / 2
                elif case == 2:
                    g[2, :, 1] = 0.0
                    g[2, ::2, 1] = -0.0
                elif case == 3:
                    g = (torch.randint(0, n // 3 + 1, (3, n, 2), generator=gen) * 1024).to(dtype)
                elif case == 4:
                    g = torch.randint(-4, 4, (1, n, 1), generator=gen).to(dtype) * 2.0**100
                elif case == 5:
                    g[1, n // 2, 0] = float("nan")
                elif case == 6:
                    g[0, n - 1, 1] = -float("inf")
                elif case == 7 and n > 1:
                    g[0, 0, 0], g[0, 1, 0] = big, -big
                for ties in (False, True):
                    got = ops.column_stats(g, ties)
                    saved, _ext._C = _ext._C, None
                    try:
                        want = ops.column_stats(g, ties)
                    finally:
                        _ext._C = saved
                    assert tuple(got) == tuple(want), (dtype, n, case, ties, got, want)
                    if case == 4 and ties and n > 8:
                        assert got[2] == n  # 8 distinct values among n > 8 samples: every one repeats
