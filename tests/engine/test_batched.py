"""Batched calls equal separate calls bit for bit (torch.equal on the float64 results): x (B, N, d) with
a shared y (and z), batched y/z, mixed B_g (some arguments (1, N, d), some (B, N, d)), and
mi_per_feature against per-column mi."""

from __future__ import annotations

import pytest
import torch

import mipp

N, B = 250, 4


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _problems(seed: int = 0, ties: bool = False):
    g = _gen(seed)
    y = torch.randn(N, 1, dtype=torch.float64, generator=g)
    z = torch.randn(N, 2, dtype=torch.float64, generator=g)
    coef = torch.linspace(0.0, 1.5, B, dtype=torch.float64)[:, None, None]
    x = coef * (y[None] + z[None, :, :1]) + torch.randn(B, N, 2, dtype=torch.float64, generator=g)
    if ties:
        x, y, z = torch.round(x * 2) / 2, torch.round(y * 2) / 2, torch.round(z * 2) / 2
    return x, y, z


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("normalize", [False, True])
def test_mi_batched_x_shared_y(algorithm, k, ties, normalize):
    x, y, _ = _problems(1, ties)
    got = mipp.mi(x, y, k, algorithm=algorithm, normalize=normalize)
    want = torch.stack([mipp.mi(x[b], y, k, algorithm=algorithm, normalize=normalize) for b in range(B)])
    assert got.shape == (B,) and got.dtype == torch.float64
    assert torch.equal(got, want)
    local = mipp.mi(x, y, k, algorithm=algorithm, normalize=normalize, reduction="none")
    want_local = torch.stack(
        [mipp.mi(x[b], y, k, algorithm=algorithm, normalize=normalize, reduction="none") for b in range(B)]
    )
    assert local.shape == (B, N) and torch.equal(local, want_local)


@pytest.mark.parametrize("algorithm", [1, 2])
def test_mi_shared_x_batched_y(algorithm):
    x, y, _ = _problems(2)
    yb = torch.stack([y, 2 * y, -y + 1, torch.randn(N, 1, dtype=torch.float64, generator=_gen(3))])
    got = mipp.mi(x[0], yb, 3, algorithm=algorithm)
    assert torch.equal(got, torch.stack([mipp.mi(x[0], yb[b], 3, algorithm=algorithm) for b in range(B)]))


@pytest.mark.parametrize("algorithm", [1, 2])
def test_mi_both_batched_and_explicit_shared(algorithm):
    """x (B, N, d) with y (B, N, 1), and with y given as (1, N, 1) (explicitly shared)."""
    x, y, _ = _problems(4)
    yb = y[None] + 0.1 * torch.randn(B, N, 1, dtype=torch.float64, generator=_gen(5))
    got = mipp.mi(x, yb, 3, algorithm=algorithm)
    assert torch.equal(got, torch.stack([mipp.mi(x[b], yb[b], 3, algorithm=algorithm) for b in range(B)]))
    got1 = mipp.mi(x, y[None], 3, algorithm=algorithm)
    assert got1.shape == (B,)
    assert torch.equal(got1, mipp.mi(x, y, 3, algorithm=algorithm))
    # a batch of one is still batched: shape (1,)
    one = mipp.mi(x[:1], y, 3, algorithm=algorithm)
    assert one.shape == (1,) and torch.equal(one[0], mipp.mi(x[0], y, 3, algorithm=algorithm))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_cmi_batched_x_shared_y_z(k, ties):
    x, y, z = _problems(6, ties)
    got = mipp.cmi(x, y, z, k)
    assert got.shape == (B,)
    assert torch.equal(got, torch.stack([mipp.cmi(x[b], y, z, k) for b in range(B)]))
    local = mipp.cmi(x, y, z, k, reduction="none")
    assert torch.equal(local, torch.stack([mipp.cmi(x[b], y, z, k, reduction="none") for b in range(B)]))


@pytest.mark.parametrize("layout", ["x,z batched", "y,z batched", "z batched", "all batched", "x (1,N,d)"])
def test_cmi_mixed_batch_groups(layout):
    """Mixed B_g: every combination of batched (B, N, d), explicitly shared (1, N, d) and unbatched."""
    x, y, z = _problems(7)
    g = _gen(8)
    yb = y[None] + 0.2 * torch.randn(B, N, 1, dtype=torch.float64, generator=g)
    zb = z[None] + 0.2 * torch.randn(B, N, 2, dtype=torch.float64, generator=g)
    xs = x[0]
    args = {
        "x,z batched": (x, y[None], zb),
        "y,z batched": (xs, yb, zb),
        "z batched": (xs[None], y, zb),
        "all batched": (x, yb, zb),
        "x (1,N,d)": (xs[None], yb, z),
    }[layout]

    def pick(t, b):
        return t[b] if t.dim() == 3 and t.shape[0] == B else (t[0] if t.dim() == 3 else t)

    got = mipp.cmi(*args, 3)
    want = torch.stack([mipp.cmi(*(pick(t, b) for t in args), 3) for b in range(B)])
    assert got.shape == (B,) and torch.equal(got, want)


def test_batched_float32_equals_separate():
    x, y, z = _problems(9)
    x, y, z = x.float(), y.float(), z.float()
    got = mipp.mi(x, y, 3, algorithm=2)
    assert got.dtype == torch.float64
    assert torch.equal(got, torch.stack([mipp.mi(x[b], y, 3, algorithm=2) for b in range(B)]))
    assert torch.equal(mipp.cmi(x, y, z, 3), torch.stack([mipp.cmi(x[b], y, z, 3) for b in range(B)]))


def test_large_batch_many_chunks():
    """B = 40 problems: the reference's chunking depends on B * N; results still equal separate calls."""
    g = _gen(10)
    y = torch.randn(N, 1, dtype=torch.float64, generator=g)
    x = y[None] * torch.rand(40, 1, 1, dtype=torch.float64, generator=g) + torch.randn(
        40, N, 1, dtype=torch.float64, generator=g
    )
    got = mipp.mi(x, y, 3)
    assert torch.equal(got, torch.stack([mipp.mi(x[b], y, 3) for b in range(40)]))


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("normalize", [False, True])
def test_mi_per_feature_equals_per_column(algorithm, normalize):
    g = _gen(11)
    y = torch.randn(N, 2, dtype=torch.float64, generator=g)
    X = torch.randn(N, 7, dtype=torch.float64, generator=g) * torch.arange(1, 8, dtype=torch.float64)
    X[:, 2] += 3 * y[:, 0]
    X[:, 5] = torch.round(X[:, 5])  # a column with ties
    got = mipp.mi_per_feature(X, y, 3, algorithm=algorithm, normalize=normalize)
    want = torch.stack([mipp.mi(X[:, i], y, 3, algorithm=algorithm, normalize=normalize) for i in range(7)])
    assert got.shape == (7,) and got.dtype == torch.float64
    assert torch.equal(got, want)
    assert got.argmax().item() == 2


def test_mi_per_feature_single_column_and_1d_y():
    g = _gen(12)
    X = torch.randn(N, 1, dtype=torch.float64, generator=g)
    y = X[:, 0] + torch.randn(N, dtype=torch.float64, generator=g)
    got = mipp.mi_per_feature(X, y, 2)
    assert got.shape == (1,) and torch.equal(got[0], mipp.mi(X[:, 0], y, 2))
