"""mipp::digamma_sum on the CPU: the extension kernel against scipy, mpmath and the reference path."""

import mpmath
import numpy as np
import pytest
import scipy.special
import torch

import mipp
from mipp import _ext, ops, reference

pytestmark = pytest.mark.skipif(_ext._C is None, reason=f"extension not built: {_ext.MISSING_REASON}")


def digamma_sum(counts, offset, reduce):
    return torch.ops.mipp.digamma_sum(counts, offset, reduce)


def test_extension_is_built_and_runs():
    info = mipp.build_info()
    assert info["extension_cpu"] and info["cpu_backend"] == "extension"
    assert "digamma_sum" in info["extension_detail"]["cpu_kernels"]
    before = _ext.paths["digamma_sum:cpu"]
    digamma_sum(torch.arange(5), 1, True)
    assert _ext.paths["digamma_sum:cpu"] == before + 1


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("reduce", [False, True])
def test_digamma_sum_matches_scipy(offset, reduce):
    gen = torch.Generator().manual_seed(0)
    # small counts (the table), the switch to the series at 16, and large ones
    counts = torch.cat([torch.arange(1, 64), torch.randint(1, 10**6, (3 * 7 * 50 - 63,), generator=gen)])
    counts = counts.reshape(3, 7, 50)
    got = digamma_sum(counts, offset, reduce)
    values = scipy.special.digamma(counts.numpy().astype(np.float64) + offset)
    want = values.sum(axis=-1) if reduce else values
    assert got.dtype == torch.float64 and tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=0)


def test_psi_of_integers_within_one_ulp():
    # the literal table (< 16), the CPU kernel's memo of computed values and its edge (< 4,096), the series
    ms = [*range(1, 200), 10**3, *range(4090, 4100), 10**6, 2**31 + 11, 10**12, 2**53]
    got = digamma_sum(torch.tensor(ms, dtype=torch.int64), 0, False).numpy()
    mpmath.mp.dps = 40
    for m, g in zip(ms, got):
        exact = float(mpmath.digamma(m))  # rounded to nearest double from 40 digits
        assert abs(g - exact) <= np.spacing(abs(exact)), (m, g, exact)


def test_extension_equals_reference_path():
    gen = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 5000, (4, 3000), generator=gen)
    for offset, reduce in [(1, True), (1, False), (2, True)]:
        got = digamma_sum(counts, offset, reduce)
        want = reference.digamma_sum(counts, offset, reduce)
        torch.testing.assert_close(got, want, rtol=1e-13, atol=0)


def test_deterministic_across_threads_and_runs():
    # 4 rows of 50000: several fixed chunks per row, and enough work (> 2**16 per thread) for the kernel
    # to use more than one thread, so the thread count changes who sums what
    counts = torch.randint(0, 10**5, (4, 50000), generator=torch.Generator().manual_seed(2))
    outs = []
    for threads in (1, 2, 3, 8):
        out = torch.empty(4, dtype=torch.float64)
        _ext._C.digamma_sum_cpu(counts.data_ptr(), 4, 50000, 1, True, out.data_ptr(), threads)
        outs.append(out)
    outs.append(digamma_sum(counts, 1, True))
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 5)])
@pytest.mark.parametrize("reduce", [False, True])
def test_shapes_and_zero_dim(shape, reduce):
    counts = torch.randint(0, 30, shape, generator=torch.Generator().manual_seed(3))
    got = digamma_sum(counts, 1, reduce)
    want = reference.digamma_sum(counts, 1, reduce)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0)


def test_empty_last_dim_sums_to_zero():
    counts = torch.empty(4, 0, dtype=torch.int64)
    assert torch.equal(digamma_sum(counts, 1, True), torch.zeros(4, dtype=torch.float64))
    assert digamma_sum(counts, 1, False).shape == (4, 0)
    assert digamma_sum(torch.empty(0, 3, dtype=torch.int64), 1, True).shape == (0,)


def test_large_counts():
    counts = torch.full((2, 10), 10**6, dtype=torch.int64)
    got = digamma_sum(counts, 1, True)
    want = 10 * scipy.special.digamma(10**6 + 1.0)
    np.testing.assert_allclose(got.numpy(), [want, want], rtol=1e-14)


def test_other_integer_dtypes_and_noncontiguous():
    base = torch.randint(0, 100, (6, 9), generator=torch.Generator().manual_seed(4))
    want = reference.digamma_sum(base.T, 1, True)
    torch.testing.assert_close(digamma_sum(base.T, 1, True), want, rtol=1e-14, atol=0)  # transposed view
    torch.testing.assert_close(
        digamma_sum(base.int(), 1, True), reference.digamma_sum(base, 1, True), rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("counts, offset", [([3, -1, 2], 0), ([0, 4], 0), ([5, -3], 1)])
def test_pole_raises(counts, offset, monkeypatch):
    counts = torch.tensor(counts)
    with pytest.raises(ValueError, match="poles"):
        digamma_sum(counts, offset, True)
    with pytest.raises(ValueError, match="poles"):
        digamma_sum(counts, offset, False)
    monkeypatch.setattr(_ext, "_C", None)  # the reference fallback checks too
    monkeypatch.setattr(_ext, "MISSING_REASON", "disabled by this test")
    with pytest.raises(ValueError, match="poles"):
        ops._digamma_sum_cpu(counts, offset, True)


def test_opcheck():
    counts = torch.randint(0, 50, (5, 12), generator=torch.Generator().manual_seed(5))
    for args in [(counts, 1, True), (counts.T, 1, False), (counts[:, :0], 1, True), (counts[0, 0], 1, True)]:
        torch.library.opcheck(torch.ops.mipp.digamma_sum.default, args)
