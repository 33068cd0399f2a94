"""mipp::ross_counts (the counts of Ross's estimator): the extension's one-column kernel against the
specification's composition (mipp.reference.ross_counts) bit for bit, the specification against a direct
count, and the op's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mipp import _ext, reference

ops = torch.ops.mipp
DTYPES = [torch.float32, torch.float64]


def _problem(b, n, dtype, kind, classes, strata, k, seed):
    """x (b, n, 1) of a kind (continuous, ties: few distinct values, duplicates: repeated rows), class codes
    with every class of 2 or more samples (some of exactly 2, so k_i < k), strata codes (all 0 or two strata
    holding whole classes) and k_i = min(k, class size - 1)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "ties":
        x = torch.randint(0, 5, (b, n, 1), generator=gen).to(dtype) * 0.25
    else:
        x = torch.randn(b, n, 1, generator=gen, dtype=dtype)
    codes = torch.randint(0, classes, (n,), generator=gen)
    if kind == "duplicates":  # repeated rows, some within one class: eps = 0
        x[:, n // 2 : n // 2 + 7] = x[:, :7]
        codes[n // 2 : n // 2 + 7] = codes[:7]
    codes[-4:] = torch.tensor([classes, classes, classes + 1, classes + 1])  # two classes of exactly 2
    codes = torch.unique(codes, return_inverse=True)[1]
    sizes = torch.bincount(codes)[codes]
    keep = sizes > 1
    x, codes = x[:, keep], torch.unique(codes[keep], return_inverse=True)[1]
    st = codes % 2 if strata else torch.zeros_like(codes)
    k_each = torch.clamp(torch.bincount(codes)[codes] - 1, max=k)
    return x, codes, st, k_each


def _direct(x, classes, strata, k_each):
    """Every count by its definition, one sample at a time in numpy (float64 or float32 differences)."""
    xs, c, s, ke = x[..., 0].numpy(), classes.numpy(), strata.numpy(), k_each.numpy()
    b, n = xs.shape
    eps = np.empty((b, n), dtype=xs.dtype)
    tied, lt, le = (np.empty((b, n), dtype=np.int64) for _ in range(3))
    for p in range(b):
        for i in range(n):
            d = np.abs(xs[p] - xs[p, i])  # rounded once in x's dtype, as the ops round
            others = np.arange(n) != i
            same = others & (c == c[i])
            eps[p, i] = np.sort(d[same])[ke[i] - 1]
            tied[p, i] = np.sum(same & (d <= eps[p, i]))
            mine = others & (s == s[i])
            lt[p, i] = np.sum(mine & (d < eps[p, i]))
            le[p, i] = np.sum(mine & (d <= eps[p, i]))
    return tuple(torch.from_numpy(a) for a in (eps, tied, lt, le))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["continuous", "ties", "duplicates"])
@pytest.mark.parametrize("strata", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_kernel_equals_the_specification_bit_for_bit(dtype, kind, strata, k):
    seed = DTYPES.index(dtype) + 2 * ["continuous", "ties", "duplicates"].index(kind) + 6 * strata + 12 * k
    x, classes, st, k_each = _problem(3, 300, dtype, kind, 6, strata, k, seed)
    _ext.paths.clear()
    got = ops.ross_counts(x, classes, st, k_each)
    assert _ext.paths["ross_counts:sorted"] == 1  # the one-column kernel ran
    want = reference.ross_counts(x, classes, st, k_each)
    for a, w in zip(got, want):
        assert a.dtype == w.dtype and torch.equal(a, w)
    if kind != "continuous":  # the ties are there to be counted
        assert bool((got[1] > k_each).any()) and bool((got[3] > got[2]).any())
    if kind == "duplicates" and k == 1:  # a repeated row within its class
        assert bool((got[0] == 0).any())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["continuous", "ties", "duplicates"])
def test_specification_equals_the_direct_counts(dtype, kind):
    x, classes, st, k_each = _problem(2, 60, dtype, kind, 4, True, 3, seed=5)
    for a, w in zip(reference.ross_counts(x, classes, st, k_each), _direct(x, classes, st, k_each)):
        assert torch.equal(a, w)


def test_wider_x_composes_the_cpu_kernels():
    """Two columns: no one-column kernel; the composition on the extension's kernels, equal to the reference."""
    x, classes, st, k_each = _problem(2, 120, torch.float64, "ties", 5, True, 3, seed=9)
    x2 = torch.cat([x, x.flip(1)], dim=2)
    _ext.paths.clear()
    got = ops.ross_counts(x2, classes, st, k_each)
    assert _ext.paths["ross_counts:sorted"] == 0
    for a, w in zip(got, reference.ross_counts(x2, classes, st, k_each)):
        assert torch.equal(a, w)


def test_inputs_are_not_modified_and_non_contiguous_x_is_read_as_is():
    x, classes, st, k_each = _problem(4, 200, torch.float64, "duplicates", 3, False, 3, seed=2)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    before = [t.clone() for t in (xt, classes, st, k_each)]
    got = ops.ross_counts(xt, classes, st, k_each)
    assert all(torch.equal(a, t) for a, t in zip(before, (xt, classes, st, k_each)))
    for a, w in zip(got, ops.ross_counts(x, classes, st, k_each)):
        assert torch.equal(a, w)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda x, c, s, k: (x, c.int(), s, k), "classes must be int64"),
        (lambda x, c, s, k: (x, c, s[:-1], k), "strata must be int64 of shape"),
        (lambda x, c, s, k: (x, c, s, k + 10), "below the size of i's class"),
        (lambda x, c, s, k: (x, c, s, k * 0), "at least 1"),
        (lambda x, c, s, k: (x, c - 1, s, k), "codes >= 0"),
        (lambda x, c, s, k: (x.int(), c, s, k), "floating"),
    ],
)
def test_the_contract_is_checked(change, match):
    args = change(*_problem(1, 40, torch.float64, "continuous", 3, False, 3, seed=1))
    with pytest.raises(ValueError, match=match):
        ops.ross_counts(*args)


def test_compile_fullgraph_equals_eager():
    """The fake kernel's shapes and dtypes let torch.compile trace the op; the contract is checked at run time."""
    torch._dynamo.reset()
    x, classes, st, k_each = _problem(2, 150, torch.float64, "ties", 4, True, 3, seed=4)
    compiled = torch.compile(lambda *a: ops.ross_counts(*a), fullgraph=True)
    for got, want in zip(compiled(x, classes, st, k_each), ops.ross_counts(x, classes, st, k_each)):
        assert got.dtype == want.dtype and torch.equal(got, want)
    with pytest.raises(Exception, match="below the size of i's class"):
        compiled(x, classes, st, k_each + 100)


def test_one_large_problem_split_across_threads():
    """One problem of 9,000 samples takes both threads over blocks of positions (a batch takes one thread per
    problem): the same counts as the direct definition and as that problem inside a batch."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, classes, st, k_each = _problem(1, 9000, torch.float64, "ties", 7, True, 3, seed=8)
        got = ops.ross_counts(x, classes, st, k_each)
        batched = ops.ross_counts(torch.cat([x, x.flip(1)]), classes, st, k_each)
    finally:
        torch.set_num_threads(previous)
    for a, w, t in zip(got, _direct(x, classes, st, k_each), batched):
        assert torch.equal(a, w) and torch.equal(a, t[:1])
