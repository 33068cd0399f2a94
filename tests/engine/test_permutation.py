"""mipp.permutation_test: reproducible with a generator; p = (1 + #{null >= estimate}) / (P + 1); the
estimate is the plain estimator's value; p-values are uniform under independence (200 independent data
sets in one batched call) and 1 / (P + 1) under strong dependence; the conditional version with z."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import mipp

N, P = 100, 30


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dependent(seed: int = 0, n: int = N):
    g = _gen(seed)
    x = torch.randn(n, 1, dtype=torch.float64, generator=g)
    y = x + 0.1 * torch.randn(n, 1, dtype=torch.float64, generator=g)
    return x, y


def _p_formula(estimate, null):
    return (1.0 + (null >= estimate[..., None]).sum(dim=-1).to(torch.float64)) / (null.shape[-1] + 1)


def test_reproducible_with_generator():
    x, y = _dependent(1)
    y = y + torch.randn(N, 1, dtype=torch.float64, generator=_gen(2))  # weaker dependence: a spread null
    a = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(7))
    b = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(7))
    c = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(8))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert torch.equal(a.estimate, c.estimate)
    assert not torch.equal(a.null, c.null)
    # no generator: still runs, same estimate
    d = mipp.permutation_test(x, y, n_permutations=P)
    assert torch.equal(d.estimate, a.estimate) and d.null.shape == (P,)


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("normalize", [False, True])
def test_result_fields_and_p_value_formula(algorithm, normalize):
    g = _gen(3)
    x = torch.randn(N, 2, dtype=torch.float64, generator=g)
    y = 0.3 * x[:, :1] + torch.randn(N, 1, dtype=torch.float64, generator=g)
    res = mipp.permutation_test(
        x, y, k=4, n_permutations=P, generator=_gen(4), algorithm=algorithm, normalize=normalize
    )
    assert res.estimate.shape == () and res.p_value.shape == () and res.null.shape == (P,)
    assert res.p_value.dtype == torch.float64 and res.estimate.dtype == torch.float64
    assert torch.equal(res.estimate, mipp.mi(x, y, 4, algorithm=algorithm, normalize=normalize))
    assert torch.isfinite(res.null).all() and res.null.unique().numel() > P // 2
    assert torch.equal(res.p_value, _p_formula(res.estimate, res.null))
    assert 1 / (P + 1) <= res.p_value.item() <= 1.0


def test_p_value_counts_ties_as_extreme():
    """With y constant the statistic cannot change under a permutation of x: null == estimate for every
    surrogate, and ties count as at least as extreme (>=), hence p == 1."""
    g = _gen(5)
    x = torch.randn(N, 1, dtype=torch.float64, generator=g)
    y = torch.zeros(N, 1, dtype=torch.float64)  # every distance in y is 0: I(x; y) is the same for all
    res = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(6))
    assert torch.equal(res.null, res.estimate.expand(P))
    assert res.p_value.item() == 1.0


def test_strong_dependence_gives_minimal_p():
    x, y = _dependent(9)
    res = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(10))
    assert res.p_value.item() == pytest.approx(1 / (P + 1), abs=0)
    assert res.estimate.item() > 1.0 and res.null.max().item() < 0.5


def test_batched_x_strong_dependence():
    g = _gen(11)
    y = torch.randn(N, 1, dtype=torch.float64, generator=g)
    x = y[None] + 0.1 * torch.randn(5, N, 1, dtype=torch.float64, generator=g)
    res = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(12))
    assert res.estimate.shape == (5,) and res.p_value.shape == (5,) and res.null.shape == (5, P)
    assert torch.equal(res.estimate, mipp.mi(x, y))
    assert torch.equal(res.p_value, torch.full((5,), 1 / (P + 1), dtype=torch.float64))
    # every problem has its own permutations
    assert not torch.equal(res.null[0], res.null[1])


def test_batched_x_and_y():
    g = _gen(13)
    y = torch.randn(3, N, 1, dtype=torch.float64, generator=g)
    x = torch.cat(
        [
            y[:1] + 0.1 * torch.randn(1, N, 1, dtype=torch.float64, generator=g),
            torch.randn(2, N, 1, dtype=torch.float64, generator=g),
        ]
    )
    res = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(14))
    assert torch.equal(res.estimate, torch.stack([mipp.mi(x[b], y[b]) for b in range(3)]))
    assert torch.equal(res.p_value, _p_formula(res.estimate, res.null))
    assert res.p_value[0].item() == 1 / (P + 1)


def _uniformity(p: np.ndarray, n_permutations: int):
    """Checks of p-values that, under the null, are uniform on {1, ..., P+1} / (P+1)."""
    m = len(p)
    ranks = np.rint(p * (n_permutations + 1)).astype(int)  # 1 .. P+1
    assert np.allclose(ranks / (n_permutations + 1), p)
    # the fraction at the smallest p (< 0.05 with P = 30): Binomial(m, 1 / (P + 1))
    small = int((p < 0.05).sum())
    assert stats.binomtest(small, m, 1 / (n_permutations + 1)).pvalue > 1e-3, small
    # five rank bins, chi-square
    edges = np.linspace(0.5, n_permutations + 1.5, 6)
    counts, _ = np.histogram(ranks, bins=edges)
    widths = np.diff(np.floor(edges - 0.5))
    expected = m * widths / widths.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3, (counts, expected)
    # the mean p-value: (P + 2) / (2 (P + 1)), sd of the mean sqrt(((P+1)^2 - 1) / 12) / (P+1) / sqrt(m)
    mean = (n_permutations + 2) / (2 * (n_permutations + 1))
    sd = np.sqrt(((n_permutations + 1) ** 2 - 1) / 12) / (n_permutations + 1) / np.sqrt(m)
    assert abs(p.mean() - mean) < 4 * sd, (p.mean(), mean)


@pytest.mark.parametrize("algorithm", [1, 2])
def test_p_values_uniform_under_independence(algorithm):
    """200 independent x in one batched call against a shared y: given y, the 200 p-values are i.i.d.
    and uniform on {1, ..., 31} / 31."""
    g = _gen(20 + algorithm)
    y = torch.randn(N, 1, dtype=torch.float64, generator=g)
    x = torch.randn(200, N, 1, dtype=torch.float64, generator=g)
    res = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(30 + algorithm), algorithm=algorithm)
    p = res.p_value.numpy()
    assert p.shape == (200,)
    _uniformity(p, P)
    assert abs(res.null.mean().item()) < 0.05  # near 0: surrogates are independent of y


def test_p_values_not_uniform_under_weak_dependence():
    """Power: with a weak dependence the same check fails (the p-values pile up at 1/31)."""
    g = _gen(40)
    y = torch.randn(N, 1, dtype=torch.float64, generator=g)
    x = 0.6 * y[None] + 0.8 * torch.randn(200, N, 1, dtype=torch.float64, generator=g)
    p = mipp.permutation_test(x, y, n_permutations=P, generator=_gen(41)).p_value.numpy()
    assert (p < 0.05).mean() > 0.5
    with pytest.raises(AssertionError):
        _uniformity(p, P)


# ---------------------------------------------------------------------------------------------------
# conditional


def test_conditional_estimate_and_formula():
    g = _gen(50)
    z = torch.randn(N, 1, dtype=torch.float64, generator=g)
    x = z + 0.5 * torch.randn(N, 1, dtype=torch.float64, generator=g)
    y = x + z + 0.5 * torch.randn(N, 1, dtype=torch.float64, generator=g)
    for normalize in (False, True):
        res = mipp.permutation_test(x, y, z, k=3, n_permutations=P, generator=_gen(51), normalize=normalize)
        assert torch.equal(res.estimate, mipp.cmi(x, y, z, 3, normalize=normalize))
        assert torch.equal(res.p_value, _p_formula(res.estimate, res.null))
        assert res.null.shape == (P,)
    a = mipp.permutation_test(x, y, z, n_permutations=P, generator=_gen(52))
    b = mipp.permutation_test(x, y, z, n_permutations=P, generator=_gen(52))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_conditional_dependent_given_independent_z():
    """x, y strongly dependent, z independent noise: p = 1/(P+1)."""
    g = _gen(53)
    x, y = _dependent(54)
    z = torch.randn(N, 2, dtype=torch.float64, generator=g)
    res = mipp.permutation_test(x, y, z, n_permutations=P, generator=_gen(55))
    assert res.p_value.item() == 1 / (P + 1)
    assert res.estimate.item() > 0.5


def test_conditional_p_values_uniform_when_x_independent():
    """x independent of (y, z), y depends on z: the shuffled x are exchangeable with x, so the
    conditional test's p-values are uniform (200 data sets, one batched call, y and z shared)."""
    g = _gen(56)
    z = torch.randn(N, 1, dtype=torch.float64, generator=g)
    y = z + 0.5 * torch.randn(N, 1, dtype=torch.float64, generator=g)
    x = torch.randn(200, N, 1, dtype=torch.float64, generator=g)
    res = mipp.permutation_test(x, y, z, n_permutations=P, generator=_gen(57))
    assert res.p_value.shape == (200,)
    assert torch.equal(res.estimate, mipp.cmi(x, y, z))
    _uniformity(res.p_value.numpy(), P)


def test_conditional_batched_dependence_detected():
    """x_b = y-signal only for b = 0; the others are pure noise: only problem 0 is significant."""
    g = _gen(58)
    z = torch.randn(N, 1, dtype=torch.float64, generator=g)
    y = z + 0.3 * torch.randn(N, 1, dtype=torch.float64, generator=g)
    x = torch.randn(4, N, 1, dtype=torch.float64, generator=g)
    x[0] = (y - z) + 0.05 * torch.randn(N, 1, dtype=torch.float64, generator=g)
    res = mipp.permutation_test(x, y, z, n_permutations=P, generator=_gen(59))
    assert res.p_value[0].item() == 1 / (P + 1)
    assert (res.p_value[1:] > 1 / (P + 1)).any()


def test_local_permutation_surrogates_move_samples_to_z_neighbours():
    """local_neighbors: the null is the CMI of x shuffled by local_permutations (same generator stream),
    and every surrogate sample comes from one of the 5 nearest z-neighbours of the sample it replaces."""
    g = torch.Generator().manual_seed(4)
    z = torch.randn(150, 2, dtype=torch.float64, generator=g)
    x = z[:, 0] + 0.3 * torch.randn(150, dtype=torch.float64, generator=g)
    y = z[:, 1:] + 0.3 * torch.randn(150, 1, dtype=torch.float64, generator=g)
    res = mipp.permutation_test(
        x, y, z, n_permutations=9, local_neighbors=5, generator=torch.Generator().manual_seed(7)
    )
    perm = mipp.local_permutations(z, 9, 5, torch.Generator().manual_seed(7))
    assert torch.equal(res.null, mipp.cmi(x[perm].unsqueeze(-1), y, z))
    assert torch.equal(res.estimate, mipp.cmi(x, y, z))
    d = (z[:, None, :] - z[None, :, :]).abs().amax(-1).fill_diagonal_(float("inf"))
    fifth = d.topk(5, dim=1, largest=False).values[:, -1]
    assert bool((d[torch.arange(150), perm] <= fifth).all())
    assert min(len(p.unique()) for p in perm) > 0.8 * 150  # a near permutation


def test_local_permutation_needs_an_unbatched_z():
    x, y, z = torch.randn(3, 50, 1, dtype=torch.float64), torch.randn(50, 1), torch.randn(50, 2)
    with pytest.raises(ValueError, match="z"):
        mipp.permutation_test(x[0], y.double(), None, local_neighbors=5, n_permutations=5)
    with pytest.raises(ValueError, match="z"):
        mipp.permutation_test(
            x, y.double(), torch.randn(3, 50, 2, dtype=torch.float64), local_neighbors=5, n_permutations=5
        )
    with pytest.raises(ValueError, match="neighbors"):
        mipp.local_permutations(z, 5, 0)
