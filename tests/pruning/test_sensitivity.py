"""The output metric (mipp.pruning.sensitivity): the Hutchinson estimate of each consumer's Gauss-Newton metric
against the exact one from full Jacobians."""

import pytest
import torch
from torch import nn

from mipp.pruning.sensitivity import MetricProbes


class Net(nn.Module):
    """A conv consumer (its rows are pixels) and a Linear consumer, three outputs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc1 = nn.Linear(3 * 5 * 5, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.conv2(torch.relu(self.conv1(x))))
        return self.fc2(torch.tanh(self.fc1(h.flatten(1))))


def output_metric(model, batches, consumers, *, probes, seed):
    """The metric from forward passes of its own over ``batches`` (the capture feeds it from its passes)."""
    acc = MetricProbes(model, consumers, probes=probes, seed=seed)
    for batch in batches:
        acc.run(batch)
    return acc.finish()


def exact_metric(model: Net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """G = E_sample[sum_rows J_row^T J_row] / Var(output), J the Jacobian of the output with respect to the
    consumer's pre-activations, from full Jacobians (torch.func)."""
    from torch.func import jacrev

    def tail_conv2(z):  # output as a function of conv2's pre-activation (one sample)
        return model.fc2(torch.tanh(model.fc1(torch.tanh(z).flatten())))

    def tail_fc1(z):
        return model.fc2(torch.tanh(z))

    with torch.no_grad():
        var = float(model(x).var(0, unbiased=False).mean())
        z2 = model.conv2(torch.relu(model.conv1(x)))
        z1 = model.fc1(torch.tanh(z2).flatten(1))
    G2 = sum(torch.einsum("oqhw,ophw->qp", J, J) for J in (jacrev(tail_conv2)(z) for z in z2))
    G1 = sum(J.T @ J for J in (jacrev(tail_fc1)(z) for z in z1))
    n = len(x)
    return {"conv2": G2.detach() / (n * var), "fc1": G1.detach() / (n * var)}


def test_hutchinson_metric_matches_the_exact_gauss_newton_metric():
    """With many probes the estimate converges to the exact metric of every consumer (a conv consumer whose rows
    are its pixels, a Linear one): within 5% in norm at 64 samples x 300 probes (the estimate's relative
    sampling error is about 1 / sqrt(19,200) per entry), and it is symmetric positive semi-definite."""
    torch.manual_seed(0)
    model = Net().double().eval()
    x = torch.randn(64, 2, 5, 5, dtype=torch.float64)
    exact = exact_metric(model, x)
    got = output_metric(model, [x[:40], x[40:]], ["conv2", "fc1"], probes=300, seed=1)
    assert got.n_samples == 64 and got.probes == 300
    for name, G in exact.items():
        est = got.metrics[name]
        assert est.shape == G.shape
        assert float((est - G).norm() / G.norm()) < 0.05, name
        torch.testing.assert_close(est, est.T)
        assert float(torch.linalg.eigvalsh(est).min()) > -1e-12 * float(est.norm())
    # and the estimate is not the exact one by construction: a handful of probes is off by more (8-21% measured)
    few = output_metric(model, [x], ["conv2", "fc1"], probes=1, seed=1)
    assert max(float((few.metrics[k] - G).norm() / G.norm()) for k, G in exact.items()) > 0.05


@pytest.mark.filterwarnings("ignore:11 calibration rows")  # fc1 reads 75 features: the statistics are compared only
def test_capture_feeds_the_metric_without_changing_either():
    """The capture's forward passes feed the output metric's probes for the first ``samples`` samples (a batch
    taken whole runs once with grad; a batch taken in part runs its part again): the consumer statistics and the
    metric equal those of a capture without the metric and a metric computed on its own (batches of 4, 5 samples:
    the second batch straddles)."""
    from mipp.pruning.capture import capture

    torch.manual_seed(0)
    model = Net().double().eval()
    x = torch.randn(11, 2, 5, 5, dtype=torch.float64)
    batches = list(x.split(4))
    consumers = ["conv2", "fc1"]
    probes = MetricProbes(model, consumers, probes=3, seed=2, samples=5)
    stats = capture(model, batches, consumers, seed=1, metric=probes)
    merged = probes.finish()
    plain = capture(model, batches, consumers, seed=1)
    alone = output_metric(model, [x[:4], x[4:5]], consumers, probes=3, seed=2)
    assert merged.n_samples == 5
    for name in consumers:
        for field in ("mean", "cov", "rows"):
            assert torch.equal(getattr(stats[name], field), getattr(plain[name], field)), (name, field)
        torch.testing.assert_close(merged.metrics[name], alone.metrics[name], rtol=1e-13, atol=0)
    # the model is left as it was: no hooks, no gradients
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_root_whitens_by_the_metric_and_is_made_once():
    """root(c, rows) is A with A^T A = G restricted to rows (rank-deficient G: the null directions left out); the
    one over all outputs is made once and shared by every walk, equal to the one asked for with every row."""
    torch.manual_seed(0)
    model = Net().double().eval()
    got = output_metric(model, [torch.randn(6, 2, 5, 5, dtype=torch.float64)], ["fc1"], probes=2, seed=0)
    G = got.metrics["fc1"]  # 6 samples x 2 probes: full rank over the 6 outputs (a rank-2 metric below)
    A = got.root("fc1")
    torch.testing.assert_close(A.T @ A, G, rtol=1e-10, atol=1e-12)
    assert got.root("fc1") is A
    assert torch.equal(got.root("fc1", torch.arange(G.shape[0])), A)
    rows = torch.tensor([0, 2, 5])
    B = got.root("fc1", rows)
    torch.testing.assert_close(B.T @ B, G[rows][:, rows], rtol=1e-10, atol=1e-12)
    assert got.root("fc1") is A  # a restricted root is not the one cached
    v = torch.randn(G.shape[0], 2, dtype=torch.float64)
    low = type(got)({"fc1": v @ v.T}, 1.0, 2, 6, 0.0)
    assert low.root("fc1").shape == (2, G.shape[0])
