"""Statistical checks of the estimators against closed forms: correlated Gaussians with known MI
(0.5 * log(det S_xx det S_yy / det S)), and Frenzel-Pompe CMI on a common-cause chain (I(x; y | z) = 0)
and with an independent z (I(x; y | z) = I(x; y)). Seeded; N = 4000 (MI) and 3000 (CMI), 0.03 nats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mipp

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    from oracle import gaussian_mi
except ImportError:  # e.g. --import-mode=importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from oracle import gaussian_mi

N = 4000
TOL = 0.03


def _gaussian(cov: np.ndarray, n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).multivariate_normal(np.zeros(len(cov)), cov, size=n))


def _cov_1d(rho: float) -> np.ndarray:
    return np.array([[1.0, rho], [rho, 1.0]])


def _cov_2x2() -> np.ndarray:
    """x in R^2, y in R^2 with within- and cross-covariance (positive definite; MI = 0.320 nats)."""
    c = np.eye(4)
    for (i, j), v in {(0, 1): 0.3, (2, 3): 0.1, (0, 2): 0.5, (1, 3): -0.4, (0, 3): 0.2}.items():
        c[i, j] = c[j, i] = v
    return c


def _cov_1x3() -> np.ndarray:
    """x in R^1, y in R^3: x correlated with every coordinate of y."""
    c = np.eye(4)
    for j, v in ((1, 0.4), (2, -0.3), (3, 0.25)):
        c[0, j] = c[j, 0] = v
    return c


CASES = {
    "1d_rho0.6": (_cov_1d(0.6), 1),
    "1d_rho0.9": (_cov_1d(0.9), 1),
    "1d_independent": (_cov_1d(0.0), 1),
    "2x2": (_cov_2x2(), 2),
    "1x3": (_cov_1x3(), 1),
}


def test_closed_form_values():
    """The closed form itself: -0.5 log(1 - rho^2) in 1-D, and the 2x2 case against the canonical
    correlations formula -0.5 sum log(1 - r_i^2)."""
    assert gaussian_mi(_cov_1d(0.6), 1) == pytest.approx(-0.5 * np.log(1 - 0.36), abs=1e-14)
    c = _cov_2x2()
    sxx, syy, sxy = c[:2, :2], c[2:, 2:], c[:2, 2:]
    wx = np.linalg.inv(np.linalg.cholesky(sxx))
    wy = np.linalg.inv(np.linalg.cholesky(syy))
    r = np.linalg.svd(wx @ sxy @ wy.T, compute_uv=False)
    assert gaussian_mi(c, 2) == pytest.approx(-0.5 * np.sum(np.log(1 - r**2)), abs=1e-12)
    assert gaussian_mi(c, 2) > 0.25


SEEDS = 4


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_gaussian_mi_closed_form(name, algorithm):
    """SEEDS independent samples of N in one batched call: the mean estimate within 0.03 nats of the
    closed form (the sampling sd of one estimate is ~0.02 at N = 4000), each one within 0.06."""
    cov, dx = CASES[name]
    data = torch.stack([_gaussian(cov, N, seed=s) for s in range(SEEDS)])
    got = mipp.mi(data[..., :dx], data[..., dx:], 3, algorithm=algorithm).numpy()
    expected = gaussian_mi(cov, dx)
    assert got.shape == (SEEDS,)
    assert abs(got.mean() - expected) < TOL, (got, expected)
    assert np.abs(got - expected).max() < 2 * TOL, (got, expected)


def test_gaussian_single_sample():
    """The plain unbatched call on one sample (rho = 0.6, N = 4000), both algorithms."""
    data = _gaussian(_cov_1d(0.6), N, seed=0)
    for algorithm in (1, 2):
        got = mipp.mi(data[:, 0], data[:, 1], 3, algorithm=algorithm).item()
        assert abs(got - gaussian_mi(_cov_1d(0.6), 1)) < TOL


def test_gaussian_mi_batched_over_correlations():
    """One batched call, x (B, N, 1) with a shared y: each problem has its own correlation; the estimates
    follow -0.5 log(1 - rho^2) and are increasing in |rho|."""
    rng = np.random.default_rng(1)
    rhos = np.array([0.0, 0.3, 0.6, 0.8, 0.95])
    y = rng.standard_normal(N)
    noise = rng.standard_normal((len(rhos), N))
    x = rhos[:, None] * y[None] + np.sqrt(1 - rhos[:, None] ** 2) * noise
    got = mipp.mi(torch.from_numpy(x)[..., None], torch.from_numpy(y), 3).numpy()
    assert got.shape == (len(rhos),)
    np.testing.assert_allclose(got, -0.5 * np.log(1 - rhos**2), atol=TOL)
    assert (np.diff(got) > 0).all()


def _chain(n: int, seed: int):
    """z -> x, z -> y: x and y dependent, conditionally independent given z."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    x = z + 0.7 * rng.standard_normal(n)
    y = z + 0.7 * rng.standard_normal(n)
    return (torch.from_numpy(a) for a in (x, y, z))


def test_cmi_common_cause_is_zero():
    x, y, z = _chain(3000, seed=0)
    assert mipp.mi(x, y, 3).item() > 0.3  # marginally dependent ...
    assert abs(mipp.cmi(x, y, z, 3).item()) < TOL  # ... but not given z


def test_cmi_with_independent_z_equals_mi():
    rng = np.random.default_rng(0)
    n, rho = 3000, 0.6
    x = rng.standard_normal(n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    z = rng.standard_normal((n, 2))
    x, y, z = (torch.from_numpy(a) for a in (x, y, z))
    got = mipp.cmi(x, y, z, 3).item()
    assert abs(got - (-0.5 * np.log(1 - rho**2))) < TOL
    assert abs(got - mipp.mi(x, y, 3).item()) < TOL


def test_cmi_gaussian_closed_form():
    """Jointly Gaussian (x, y, z): I(x; y | z) = I(x; (y, z)) - I(x; z) in closed form."""
    c = np.eye(3)
    c[0, 2] = c[2, 0] = 0.5  # x-z
    c[1, 2] = c[2, 1] = 0.4  # y-z
    c[0, 1] = c[1, 0] = 0.6  # x-y beyond z
    expected = gaussian_mi(c, 1) - gaussian_mi(c[np.ix_([0, 2], [0, 2])], 1)
    data = _gaussian(c, 3000, seed=2)
    got = mipp.cmi(data[:, 0], data[:, 1], data[:, 2], 3).item()
    assert expected > 0.1
    assert abs(got - expected) < TOL, (got, expected)


def test_float32_ties_differ_from_float64_as_documented():
    """Distances are rounded in the input dtype: on tie-heavy data (values rounded to one decimal) float32
    and float64 estimates differ, by design (the README says so); float64 is the reference."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(2000, dtype=torch.float64, generator=g) * 10).round() / 10
    y = ((x + 0.5 * torch.randn(2000, dtype=torch.float64, generator=g)) * 10).round() / 10
    d64 = float(mipp.mi(x, y, 3))
    d32 = float(mipp.mi(x.float(), y.float(), 3))
    assert d64 != d32 and abs(d64 - d32) < 0.1
