"""Invariants of the estimators, checked by hypothesis on drawn data (ties and duplicates included).

Which of them hold bit for bit and which up to the rounding of a sum is part of what is tested: a KSG
estimate is a function of integer neighbour counts, so whatever maps the counts onto themselves (sample
order, swapped arguments, the batch, label names, an exact rescaling) must give the same counts, and the
same bits wherever the digamma terms are summed in the same order.

CI runs a fixed, derandomised set of examples (``derandomize=True``, ``max_examples`` below, about 20 s on
2 cores); MIPP_HYPOTHESIS_EXAMPLES=500 explores more.
"""

import os
import warnings

import numpy as np
import pytest
import torch

import mipp

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from scipy.special import digamma  # noqa: E402

CI = settings(
    derandomize=True,
    max_examples=int(os.environ.get("MIPP_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
_ops = torch.ops.mipp


@st.composite
def problems(draw, max_n=80, max_d=2):
    """(x (N, dx), y (N, dy), k, rng): continuous data with a random scale, sometimes rounded (ties),
    sometimes with duplicated samples, sometimes dependent."""
    k = draw(st.integers(1, 5))
    n = draw(st.integers(k + 3, max_n))
    dx, dy = draw(st.integers(1, max_d)), draw(st.integers(1, max_d))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, dx)) * 10.0 ** draw(st.integers(-3, 3))
    y = rng.standard_normal((n, dy)) + draw(st.sampled_from([0.0, 1.0])) * x[:, :1]
    decimals = draw(st.sampled_from([None, None, 0, 1]))
    if decimals is not None:
        x, y = np.round(x, decimals), np.round(y, decimals)
    if draw(st.booleans()):  # some samples repeated exactly
        rep = rng.integers(0, n, n // 4)
        x[rng.integers(0, n, n // 4)], y[rng.integers(0, n, n // 4)] = x[rep], y[rep]
    return torch.as_tensor(x), torch.as_tensor(y), k, rng


def _enough(labels) -> bool:
    """Ross needs two samples in classes of more than one member."""
    sizes = np.bincount(np.unique(np.asarray(labels), return_inverse=True)[1])
    return int(sizes[sizes > 1].sum()) >= 2


def _quiet(fn, *args, **kwargs):
    """fn(*args, **kwargs) without the tie warning (drawn data are often rounded on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@CI
@given(problems(), st.sampled_from([1, 2]))
def test_permuting_the_samples_permutes_the_local_values_exactly(p, algorithm):
    x, y, k, rng = p
    perm = torch.as_tensor(rng.permutation(x.shape[0]))
    local = _quiet(mipp.mi, x, y, k, algorithm=algorithm, reduction="none")
    moved = _quiet(mipp.mi, x[perm], y[perm], k, algorithm=algorithm, reduction="none")
    assert torch.equal(moved, local[perm])
    z = y[:, :1] + x[:, :1]
    c = _quiet(mipp.cmi, x, y, z, k, reduction="none")
    assert torch.equal(_quiet(mipp.cmi, x[perm], y[perm], z[perm], k, reduction="none"), c[perm])
    # the mean of the permuted values: the same up to the order of the sum
    assert abs(float(_quiet(mipp.mi, x[perm], y[perm], k, algorithm=algorithm)) - float(local.mean())) < 1e-12


@CI
@given(problems(), st.integers(0, 9))
def test_mi_is_symmetric_bit_for_bit(p, labels_seed):
    x, y, k, _ = p
    for algorithm in (1, 2):
        assert torch.equal(_quiet(mipp.mi, x, y, k, algorithm=algorithm), _quiet(mipp.mi, y, x, k, algorithm=algorithm))
    z = x[:, :1] - y[:, :1]
    assert torch.equal(_quiet(mipp.cmi, x, y, z, k), _quiet(mipp.cmi, y, x, z, k))
    labels = torch.as_tensor(np.random.default_rng(labels_seed).integers(0, 3, x.shape[0]))
    assume(_enough(labels))
    assert torch.equal(_quiet(mipp.mi, x, labels, k, discrete_y=True), _quiet(mipp.mi, labels, x, k, discrete_x=True))


@CI
@given(problems(), st.integers(-20, 20), st.sampled_from([1.0, -1.0]), st.floats(0.1, 10.0), st.floats(-1e3, 1e3))
def test_rescaling_with_normalize(p, exponent, sign, a, b):
    """normalize=True z-scores each column after dividing it by its largest magnitude: a power-of-two scale
    and a sign flip give the same z-scores, so the same estimate bit for bit; any affine map a x + b gives
    the same neighbourhoods up to rounding, so the estimate moves by at most a few flipped counts (each
    moves one local term by at most psi(n + 1) - psi(n) <= 1, the mean by 1 / N). Without normalize, scaling
    both variables by a power of two is exact too."""
    x, y, k, _ = p
    n = x.shape[0]
    base = _quiet(mipp.mi, x, y, k, normalize=True)
    exact = sign * 2.0**exponent
    assert torch.equal(_quiet(mipp.mi, x * exact, y, k, normalize=True), base)
    assert torch.equal(_quiet(mipp.mi, x * exact, y * exact, k), _quiet(mipp.mi, x, y, k))
    moved = _quiet(mipp.mi, a * x + b, y, k, normalize=True)
    flips = (
        (
            _quiet(mipp.mi, a * x + b, y, k, normalize=True, reduction="none")
            - _quiet(mipp.mi, x, y, k, normalize=True, reduction="none")
        )
        .ne(0)
        .sum()
    )
    assert abs(float(moved - base)) <= 2 * int(flips) / n + 1e-12


@CI
@given(problems(max_n=50))
def test_duplicating_the_data_set(p):
    """Every sample twice: the twin is at distance 0, then each original neighbour twice. So with 2k + 1
    neighbours each sample sees its original k-th distance exactly and every strict count becomes
    2n + [eps > 0] (the twin counts unless the k-th distance itself is 0), and the estimate is
    psi(2k+1) + psi(2N) - <psi(n'_x + 1) + psi(n'_y + 1)> in those counts. (KSG itself is not invariant:
    with k neighbours the doubled set reads the twins.)"""
    x, y, k, _ = p
    n = x.shape[0]
    gx, gy = x[None], y[None]
    eps = _ops.knn_distance([gx, gy], k)
    twin = (eps > 0).to(torch.int64)
    nx, ny = 2 * _ops.count_within([gx], eps, True) + twin, 2 * _ops.count_within([gy], eps, True) + twin
    g2x, g2y = torch.cat([gx, gx], 1), torch.cat([gy, gy], 1)
    eps2 = _ops.knn_distance([g2x, g2y], 2 * k + 1)
    assert torch.equal(eps2, torch.cat([eps, eps], 1))
    assert torch.equal(_ops.count_within([g2x], eps2, True), torch.cat([nx, nx], 1))
    want = digamma(2 * k + 1) + digamma(2 * n) - np.mean(digamma(nx.numpy() + 1) + digamma(ny.numpy() + 1))
    got = float(_quiet(mipp.mi, torch.cat([x, x]), torch.cat([y, y]), 2 * k + 1))
    assert got == pytest.approx(want, abs=1e-10)
    # the plug-in estimate of two discrete variables depends on frequencies only
    a, c = torch.round(x[:, 0] * 2).to(torch.int64), torch.round(y[:, 0]).to(torch.int64)
    one = float(mipp.mi(a, c, discrete_x=True, discrete_y=True))
    assert float(mipp.mi(torch.cat([a, a]), torch.cat([c, c]), discrete_x=True, discrete_y=True)) == pytest.approx(
        one, abs=1e-12
    )


@CI
@given(problems(), st.integers(2, 5), st.integers(0, 9))
def test_batched_equals_looped_bit_for_bit(p, b, seed):
    x, y, k, _ = p
    rng = np.random.default_rng(seed)
    xs = torch.stack([x[:, :1] * (i + 1) + torch.as_tensor(rng.standard_normal((x.shape[0], 1))) for i in range(b)])
    for algorithm in (1, 2):
        batched = _quiet(mipp.mi, xs, y, k, algorithm=algorithm)
        assert torch.equal(batched, torch.stack([_quiet(mipp.mi, xi, y, k, algorithm=algorithm) for xi in xs]))
    z = y[:, :1]
    assert torch.equal(_quiet(mipp.cmi, xs, y, z, k), torch.stack([_quiet(mipp.cmi, xi, y, z, k) for xi in xs]))
    labels = torch.as_tensor(rng.integers(0, 3, x.shape[0]))
    assume(_enough(labels))
    assert torch.equal(
        _quiet(mipp.mi, xs, labels, k, discrete_y=True),
        torch.stack([_quiet(mipp.mi, xi, labels, k, discrete_y=True) for xi in xs]),
    )


@CI
@given(problems(), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_renaming_the_labels_changes_nothing(p, n_classes, seed):
    """Ross's estimate sees classes, not their names: any bijection of the labels (here a shuffle onto
    arbitrary, even negative or float, values) gives the same counts in the same sample order, so the
    same bits; likewise for strata of z. The plug-in estimate sums its table in another order: 1e-12."""
    x, y, k, _ = p
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    labels = rng.integers(0, n_classes, n)
    strata = torch.as_tensor(rng.integers(0, 2, n))
    assume(_enough(labels) and _enough(labels * 2 + strata.numpy()))
    names = rng.permutation(np.linspace(-7.5, 1e6, n_classes))
    renamed = torch.as_tensor(names[labels])
    labels = torch.as_tensor(labels)
    assert torch.equal(_quiet(mipp.mi, x, renamed, k, discrete_y=True), _quiet(mipp.mi, x, labels, k, discrete_y=True))
    assert torch.equal(
        _quiet(mipp.cmi, x, renamed, 1 - strata, k, discrete_y=True, discrete_z=True),
        _quiet(mipp.cmi, x, labels, strata, k, discrete_y=True, discrete_z=True),
    )
    other = torch.as_tensor(rng.integers(0, 3, n))
    plug = float(mipp.mi(other, labels, discrete_x=True, discrete_y=True))
    assert float(mipp.mi(other * 10 - 4, renamed, discrete_x=True, discrete_y=True)) == pytest.approx(plug, abs=1e-12)


@CI
@given(problems(), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_labels_never_read_above_their_entropy(p, n_classes, seed):
    """Ross's estimate with every tied neighbour counted is at most psi(N) - <psi(n_c)>, on any data."""
    x, _, k, _ = p
    labels = np.random.default_rng(seed).integers(0, n_classes, x.shape[0])
    sizes = np.bincount(labels)[labels]
    assume(_enough(labels))
    keep = sizes > 1
    bound = digamma(keep.sum()) - np.mean(digamma(np.bincount(labels[keep])[labels[keep]]))
    assert float(_quiet(mipp.mi, x, torch.as_tensor(labels), k, discrete_y=True)) <= bound + 1e-12
