"""Budgets (MIPP(sparsity=...), MIPP(macs_removed=...)) and the paper's baselines made structured."""

import itertools

import pytest
import torch
from torch import nn

from mipp.pruning import MIPP, count_macs_params
from mipp.pruning.budget import Budget, MacModel, allocate, cost_curves
from mipp.pruning.criteria import Layer, ThiNetCriterion
from mipp.pruning.criteria.lstsq import Block
from mipp.pruning.scores import (
    attached_scores,
    global_keep,
    grasp_scores,
    keep_top,
    obd_scores,
    synflow_scores,
    thinet_selection,
)

N = 400


def mlp(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    return model, torch.randn(N, 6)


@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.9])
def test_sparsity_budget_is_met_exactly_and_spread_by_mipp(sparsity):
    model, x = mlp()
    sel = MIPP(sparsity=sparsity, n_samples=N, progress=False).select(model, x)
    assert sum(sel.counts.values()) == 40 - round(sparsity * 40)
    assert all(c >= 1 for c in sel.counts.values())  # no collapse
    assert sel.settings["tolerance"] >= 0  # the largest cost the cut removed


def test_allocate_is_optimal_on_convex_cost_curves():
    """One ranking and one cut: on increasing marginal costs the Lagrangian counts (with the exact give-back)
    minimise the summed cost at exactly the node budget; brute force over every split agrees."""
    g = torch.Generator().manual_seed(3)
    sizes = {"a": 7, "b": 5, "c": 6}
    for trial in range(20):
        curves = {
            name: [
                (i, float(c))
                for i, c in enumerate(torch.rand(n, generator=g, dtype=torch.float64).cumsum(0) * (1 + trial % 3))
            ]
            for name, n in sizes.items()
        }
        for sparsity in (0.2, 0.5, 0.8):
            need = round(sparsity * sum(sizes.values()))
            got = allocate(curves, sizes, Budget(sparsity=sparsity), min_keep=1)
            assert sum(got.values()) == need and all(got[n] <= sizes[n] - 1 for n in sizes)
            cost = lambda r: sum(sum(c for _, c in curves[n][: r[n]]) for n in sizes)
            best = min(
                cost(dict(zip(sizes, r)))
                for r in itertools.product(*(range(n) for n in sizes.values()))
                if sum(r) == need
            )
            assert cost(got) == pytest.approx(best, rel=1e-12)


def _two_branches(gain: float, scale: float = 1.0):
    """y = gain * f(x) + g(x) with f and g the same two-layer network: with the tolerance channel at the
    output, f's hidden layer carries ``gain`` times g's effect. ``scale`` multiplies f's first layer and
    divides its consumer (ReLU is positively homogeneous: the same function)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.f1, self.f2 = nn.Linear(8, 16), nn.Linear(16, 4)
            self.g1, self.g2 = nn.Linear(8, 16), nn.Linear(16, 4)
            with torch.no_grad():
                for a, b in ((self.g1, self.f1), (self.g2, self.f2)):
                    a.weight.copy_(b.weight)
                    a.bias.copy_(b.bias)
                self.f1.weight.mul_(scale)
                self.f1.bias.mul_(scale)
                self.f2.weight.div_(scale)

        def forward(self, x):
            return gain * self.f2(torch.relu(self.f1(x))) + self.g2(torch.relu(self.g1(x)))

    torch.manual_seed(1)
    return Net().eval(), torch.randn(N, 8) @ torch.randn(8, 8)


def test_the_output_channel_gives_the_high_gain_layer_more_nodes():
    model, x = _two_branches(gain=10.0)
    ranked = MIPP(tolerance=1e6, n_samples=N, progress=False, estimator="screen").select(model, x)
    curves = cost_curves(ranked.layers)
    assert curves["f1"] == curves["g1"]  # each layer in its own unit at its consumers: no difference
    output = MIPP(sparsity=0.5, n_samples=N, progress=False, estimator="screen", channel="output").select(model, x)
    assert sum(output.counts.values()) == 16
    assert output.counts["f1"] >= output.counts["g1"] + 6


def test_the_output_channel_is_invariant_to_rescaling_a_layer():
    """A producer scaled by c and its consumer by 1/c compute the same function: the same decision."""
    picks = []
    for scale in (1.0, 37.0):
        model, x = _two_branches(gain=3.0, scale=scale)
        mipp = MIPP(tolerance=0.05, n_samples=N, progress=False, estimator="screen", channel="output")
        picks.append({n: k.tolist() for n, k in mipp.select(model, x).keep.items()})
    assert picks[0] == picks[1]
    assert 0 < sum(map(len, picks[0].values())) < 32  # the decision removed some nodes and kept some


def test_macs_budget_is_met():
    model, x = mlp(1)
    sel = MIPP(macs_removed=0.6, n_samples=N, progress=False).select(model, x)
    m0 = count_macs_params(model, x[:1])[0]
    m1 = count_macs_params(sel.apply(model, fold=False), x[:1])[0]
    assert m1 / m0 <= 0.4
    assert sel.settings["macs_removed"] == 0.6 and "macs" not in sel.settings


def test_macs_kept_is_the_deprecated_spelling():
    """Budgets are fractions removed, as Torch-Pruning's pruning_ratio; macs= (the fraction kept) still works,
    with a FutureWarning naming the new spelling, and settings written with it read back as macs_removed."""
    model, x = mlp(1)
    with pytest.warns(FutureWarning, match="macs_removed=0.6"):
        old = MIPP(macs=0.4, n_samples=N, progress=False)
    assert old.macs_removed == pytest.approx(0.6)
    new = MIPP(macs_removed=0.6, n_samples=N, progress=False)
    a, b = old.select(model, x), new.select(model, x)
    assert {n: v.tolist() for n, v in a.keep.items()} == {n: v.tolist() for n, v in b.keep.items()}
    legacy = {k: v for k, v in new.settings().items() if k != "macs_removed"} | {"macs": 0.4}
    assert MIPP.from_settings(legacy).macs_removed == pytest.approx(0.6)
    with pytest.raises(ValueError, match="macs_removed= only"):
        MIPP(macs=0.4, macs_removed=0.6)


def test_budget_arguments_are_checked():
    with pytest.raises(ValueError, match="one budget"):
        MIPP(sparsity=0.5, macs_removed=0.5)
    with pytest.raises(ValueError, match="sparsity"):
        MIPP(sparsity=1.0)
    with pytest.raises(ValueError, match="macs_removed"):
        MIPP(macs_removed=1.0)
    with pytest.raises(ValueError, match="macs"):
        MIPP(macs=0.0)
    model, x = mlp()
    with pytest.raises(ValueError, match="min_keep"):
        MIPP(sparsity=0.99, min_keep=2, n_samples=N, progress=False).select(model, x)
    with pytest.raises(ValueError, match="channel"):
        MIPP(channel="input")
    with pytest.raises(ValueError, match="units"):
        MIPP(units=("neurons",))
    with pytest.raises(ValueError, match=r"min_keep|budget"):
        MIPP(macs_removed=0.99, min_keep=20, n_samples=N, progress=False).select(model, x)
    with pytest.raises(ValueError, match="select_layer"):
        MIPP(sparsity=0.5).select_layer(torch.randn(50, 4), torch.randn(50, 2))


def test_attached_scores_sum_rows_and_consumer_columns():
    """A node's score: the L1 norm of the scores of its producer's row (and bias) and of its consumers'
    columns. With a score equal to 1 everywhere it counts the attached weights."""
    model, x = mlp()
    sel = MIPP(n_samples=N, progress=False).select(model, x)
    ones = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    s = attached_scores(sel, model, ones)
    assert torch.equal(s["0"], torch.full((24,), 6 + 1 + 16, dtype=torch.float64))  # row, bias, column
    assert torch.equal(s["2"], torch.full((16,), 24 + 1 + 3, dtype=torch.float64))


def test_synflow_grasp_obd_score_every_node():
    model, x = mlp()
    y = torch.randint(0, 3, (N,))
    sel = MIPP(n_samples=N, progress=False).select(model, x)
    for scores in (
        synflow_scores(sel, model),
        grasp_scores(sel, model, x[:64], y[:64]),
        obd_scores(sel, model, x[:64], y[:64]),
    ):
        assert set(scores) == set(sel.keep) and all(bool(torch.isfinite(v).all()) for v in scores.values())
        assert all(float(v.max()) > 0 for v in scores.values())
        kept = keep_top(sel, scores)
        assert kept.counts == sel.counts


def test_obd_equals_a_loop_over_samples():
    """Per-sample gradients by torch.func equal a loop over samples."""
    model, x = mlp(2)
    y = torch.randint(0, 3, (N,))
    sel = MIPP(n_samples=N, progress=False).select(model, x)
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(20):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            fisher[n] += p.grad**2
    expect = attached_scores(
        sel, model, {n: 0.5 * p.detach() ** 2 * fisher[n] / 20 for n, p in model.named_parameters()}
    )
    got = obd_scores(sel, model, x[:20], y[:20])
    for n in got:
        torch.testing.assert_close(got[n], expect[n], rtol=1e-5, atol=1e-12)


def test_thinet_greedy_matches_brute_force_on_a_small_layer():
    """ThiNet removes the node set whose summed contributions have the least energy; greedy on 5 nodes
    matches exhaustive search for the first removal, and the second given it."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    W = torch.randn(3, 5, generator=g, dtype=torch.float64)
    Xc = X - X.mean(0)
    block = Block(Xc.T @ Xc / 300, X.mean(0), X, 300, W, [torch.tensor([i]) for i in range(5)])
    kept = (
        ThiNetCriterion({"layer": 3}).decide(Layer("layer", 5, [block]), tolerance=0.0, min_keep=1, generator=None).kept
    )
    energy = lambda T: float(((X[:, T] @ W[:, T].T) ** 2).sum(1).mean())
    first = min(range(5), key=lambda i: energy([i]))
    second = min((i for i in range(5) if i != first), key=lambda i: energy([first, i]))
    assert sorted(set(range(5)) - {first, second}) == kept


def test_thinet_selection_and_global_collapse_report():
    model, x = mlp()
    sel = MIPP(sparsity=0.5, n_samples=N, progress=False).select(model, x)
    assert thinet_selection(sel, model, x, n_samples=N).counts == sel.counts
    scores = {"0": torch.arange(24, dtype=torch.float64) + 100, "2": torch.arange(16, dtype=torch.float64)}
    chosen, collapsed = global_keep(sel, scores, 0.6)
    # 24 of 40 go: all 16 of "2" (the lowest scores) and 8 of "0"; "2" collapses and keeps its best node
    assert collapsed == ["2"] and chosen.counts == {"0": 16, "2": 1}
    assert chosen.keep["2"].tolist() == [15]


def test_mac_model_counts_what_the_pruned_transformer_costs():
    """MACs as a function of each group's kept fraction, against Torch-Pruning's count of the physically
    pruned model: heads and FFN neurons both shrink the projections that produce and read them (a residual
    stream lists its readers among its members; their outputs still count as their own groups')."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from zoo import ZOO

    factory, shape = ZOO["bert"]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(64, *shape)
    sel = MIPP(n_samples=64, progress=False, estimator="screen").select(model, x)
    decided = {n: g for n, g in sel.structure.groups.items() if n in sel.keep}
    assert {g.kind for g in decided.values()} == {"heads", "channels"}
    half = sel.with_keep({n: torch.arange(g.n_nodes // 2) for n, g in decided.items()})
    mm = MacModel(model, x[:1], sel.structure)
    want = count_macs_params(half.apply(model, fold=False), x[:1])[0]
    assert mm.total == pytest.approx(count_macs_params(model, x[:1])[0], rel=1e-9)
    assert mm.macs({n: 0.5 for n in decided}) == pytest.approx(want, rel=0.02)


def _refitted_loss(model, keep, x, rows):
    """The refinement's calibration loss of mlp() pruned to ``keep``, computed independently: each consumer
    re-fitted alone by least squares (torch.linalg.lstsq) from the dense model's inputs on every captured
    row ``x`` to its dense pre-activations, the output error on ``rows`` relative to the output variance."""
    k0, k2 = keep["0"], keep["2"]
    l0, l2, l4 = model[0], model[2], model[4]

    def fit(inputs, target):
        a = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], 1)
        return torch.linalg.lstsq(a, target).solution

    with torch.no_grad():
        xd = x.double()
        h1 = torch.relu(xd @ l0.weight.double().T + l0.bias.double())
        z2 = h1 @ l2.weight.double().T + l2.bias.double()
        h2 = torch.relu(z2)
        s2, s4 = fit(h1[:, k0], z2[:, k2]), fit(h2[:, k2], h2 @ l4.weight.double().T + l4.bias.double())
        r = rows.double()
        dense = model(rows).double()
        g1 = torch.relu(r @ l0.weight.double().T + l0.bias.double())[:, k0]
        g2 = torch.relu(g1 @ s2[:-1] + s2[-1])
        pruned = g2 @ s4[:-1] + s4[-1]
    return float(((pruned - dense) ** 2).sum()) / (float(dense.var(0, unbiased=False).mean()) * dense.numel())


@pytest.mark.parametrize("budget", [{"sparsity": 0.6}, {"sparsity": 0.9}, {"macs_removed": 0.6}, {"macs_removed": 0.9}])
def test_the_refinement_never_loses_to_the_one_shot_or_the_uniform_counts(budget):
    """MIPP(refine=n): the returned selection's calibration loss (recomputed here, independently: each consumer
    re-fitted alone from the dense inputs) is the one reported, at most the one-shot cut's and the uniform
    counts', and the budget holds."""
    model, x = mlp()
    sel = MIPP(**budget, n_samples=N, progress=False, refine=30).select(model, x)
    losses = sel.settings["refine_losses"]
    assert set(losses) == {"one-shot", "uniform", "refined"}
    assert losses["refined"] <= min(losses["one-shot"], losses["uniform"])
    rows = torch.cat([x[:164], x[256:349]])  # ~256 rows, from the batches of 256 and 144 in proportion (ceil)
    assert _refitted_loss(model, sel.keep, x, rows) == pytest.approx(losses["refined"], rel=1e-5)  # float32 weights
    one_shot = MIPP(**budget, n_samples=N, progress=False).select(model, x)
    assert _refitted_loss(model, one_shot.keep, x, rows) == pytest.approx(losses["one-shot"], rel=1e-5)
    if "sparsity" in budget:
        assert sum(sel.counts.values()) == 40 - round(budget["sparsity"] * 40)
    else:
        m0 = count_macs_params(model, x[:1])[0]
        assert count_macs_params(sel.apply(model, fold=False), x[:1])[0] / m0 <= 1 - budget["macs_removed"]
    assert sel.seconds["refine"] > 0 and sel.settings["refine"] == 30
    assert MIPP.from_settings(sel.settings).refine == 30  # the losses are a result, not a setting


def test_refine_moves_nodes_towards_the_group_the_loss_needs():
    """Cost curves that misjudge two groups (b's costs look 100x smaller than they are): every candidate the
    search judges meets the node budget, it starts from the better of one-shot and uniform and it ends at
    the loss's optimum, which the one-shot cut misses."""
    from mipp.pruning.budget import refine

    sizes = {"a": 20, "b": 20}
    curves = {"a": [(i, 1.0) for i in range(20)], "b": [(i, 0.01) for i in range(20)]}
    judged = []

    def loss(removed):  # b's removals really cost 4x a's
        assert sum(removed.values()) == 20
        judged.append(dict(removed))
        return sum(((r + 1) * r / 2) * w for r, w in ((removed["a"], 1.0), (removed["b"], 4.0)))

    removed, losses = refine(curves, sizes, Budget(sparsity=0.5), 1, None, loss, 40)
    assert judged[0] == {"a": 1, "b": 19} and judged[1] == {"a": 10, "b": 10}  # one-shot, then uniform
    best = min(range(1, 20), key=lambda a: loss({"a": a, "b": 20 - a}))
    assert removed == {"a": best, "b": 20 - best} == {"a": 16, "b": 4}
    assert losses["refined"] < losses["uniform"] < losses["one-shot"]


def test_refine_settings_are_checked():
    with pytest.raises(ValueError, match="refine must be an int >= 0"):
        MIPP(sparsity=0.5, refine=-1)
    with pytest.raises(ValueError, match="refine must be an int >= 0"):
        MIPP(sparsity=0.5, refine=True)
    with pytest.raises(ValueError, match="at least 2"):
        MIPP(sparsity=0.5, refine=1)
    with pytest.raises(ValueError, match="no budget"):
        MIPP(refine=10)
    with pytest.raises(ValueError, match="loss criterion"):
        MIPP(sparsity=0.5, estimator="loss", refine=10)
