"""Defects found by fuzzing, each with the repro as the test: overflowing differences, normalize on extreme
values, the checks under torch.compile, the ops' own contract, and the pruner's side effects."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mipp
from mipp import reference

ops = torch.ops.mipp


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


def test_compiled_estimators_keep_the_checks():
    """Under torch.compile(fullgraph=True) the estimator's own checks are skipped (data-dependent), but the
    ops' checks run inside the compiled graph at run time: NaN, inf and N <= k raise ValueError."""
    x = torch.randn(50, dtype=torch.float64)
    y = torch.randn(50, dtype=torch.float64)
    mi = torch.compile(mipp.mi, fullgraph=True)
    assert torch.isfinite(mi(x, y))
    bad = x.clone()
    bad[3] = float("nan")
    with pytest.raises(Exception, match="NaN or inf"):
        mi(bad, y)
    cmi = torch.compile(mipp.cmi, fullgraph=True)
    z = torch.randn(50, dtype=torch.float64)
    z[0] = float("inf")
    with pytest.raises(Exception, match="NaN or inf"):
        cmi(x, y, z)
    with pytest.raises(Exception, match=r"k=5 must be in \[1, N - 1\]"):
        mi(x[:5], y[:5], 5)


def test_ops_validate_their_own_contract():
    g = torch.randn(1, 10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"k=10 must be in \[1, N - 1\]"):
        ops.knn_distance([g], 10)                                      # used to return inf silently
    with pytest.raises(ValueError, match="N=1 samples but groups\\[0\\] has N=10"):
        ops.knn_distance([g, torch.randn(1, 1, 1, dtype=torch.float64)], 3)   # used to broadcast
    with pytest.raises(ValueError, match="radius must have shape"):
        ops.count_within([g], torch.ones(1, 9, dtype=torch.float64), True)
    with pytest.raises(ValueError, match=r"torch.float64 on cpu but groups\[0\] is torch.float32"):
        ops.knn_distance([g.float(), g], 3)


def test_float32_ties_differ_from_float64_as_documented():
    """Distances are rounded in the input dtype: on tie-heavy data (values rounded to one decimal) float32
    and float64 estimates differ, by design (the README says so); float64 is the reference."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(2000, dtype=torch.float64, generator=g) * 10).round() / 10
    y = ((x + 0.5 * torch.randn(2000, dtype=torch.float64, generator=g)) * 10).round() / 10
    d64 = float(mipp.mi(x, y, 3))
    d32 = float(mipp.mi(x.float(), y.float(), 3))
    assert d64 != d32 and abs(d64 - d32) < 0.1


# ---- the pruner's side effects ---------------------------------------------------------------------

class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.b(F.dropout(torch.relu(self.a(x)), 0.5, self.training))


def test_functional_dropout_is_recorded_in_eval_semantics():
    from mipp.pruning import MIPP
    torch.manual_seed(0)
    model = FunctionalDropout().train()
    x = torch.randn(300, 5)
    a = MIPP(n_samples=300, progress=False).select(model, x)
    b = MIPP(n_samples=300, progress=False).select(model, x)
    assert torch.equal(a.keep["a"], b.keep["a"]) and model.training
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(a.apply(model, refit=x)(x), b.apply(model, refit=x)(x))


def test_a_softmax_head_does_not_block_the_hidden_layers():
    from mipp.pruning import MIPP
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax(dim=1)).eval()
    x = torch.randn(300, 5)
    sel = MIPP(n_samples=300, progress=False).select(model, x)
    assert set(sel.keep) == {"0"}
    with torch.no_grad():
        assert sel.apply(model, refit=x)(x).shape == (300, 3)
