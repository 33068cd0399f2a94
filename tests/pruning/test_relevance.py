"""select_layer(X, Y) screens the nodes on Y itself before the criterion (mipp.pruning.relevance): nodes
independent of Y are kept at about the confidence level's rate at every tolerance, relevant ones stay, and
with nearly as many nodes as samples (no degrees of freedom for the backward tests) a forward start still
leaves the independent ones out."""

import pytest
import torch

from mipp.pruning import MIPP
from mipp.pruning.relevance import relevant_nodes
from mipp.pruning.testing import NONLINEAR, nonlinear_layer


def _layer(seed: int, n: int, n_free: int):
    """Four relevant nodes (two of them a near-duplicate pair), a 2-column linear target with 20% noise,
    and ``n_free`` nodes independent of everything (the last columns)."""
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(n, 3, dtype=torch.float64, generator=g)
    near = lat[:, :1] + 0.01 * torch.randn(n, 1, dtype=torch.float64, generator=g)
    free = torch.randn(n, n_free, dtype=torch.float64, generator=g)
    X = torch.cat([lat, near, free], 1)
    mix = torch.tensor([[1.0, 0.5], [-0.7, 1.0], [0.6, -0.8]], dtype=torch.float64)
    Y = lat @ mix + 0.2 * torch.randn(n, 2, dtype=torch.float64, generator=g)
    return X, Y


@pytest.mark.parametrize("tolerance", [0.01, 0.2])
def test_independent_nodes_are_kept_at_the_confidence_level_rate(tolerance):
    """20 seeds x 40 independent nodes at alpha = 0.05: kept <= 58 of 800 (Binomial(800, 0.05) exceeds that
    with probability < 0.3%); every relevant latent kept in every seed, at least one of the near-duplicate
    pair, both (their difference is a node independent of Y) in at most 4 of 20 seeds (Binomial(20, 0.05):
    < 0.3%)."""
    kept_free = both = 0
    for seed in range(20):
        X, Y = _layer(seed, 400, 40)
        kept, res = MIPP(tolerance=tolerance, progress=False, seed=seed).select_layer(X, Y)
        assert {1, 2} <= set(kept) and {0, 3} & set(kept), (seed, kept)
        both += {0, 3} <= set(kept)
        kept_free += sum(k >= 4 for k in kept)
        assert all(r.removed for r in res.records if r.rule == "relevance")
    assert kept_free <= 58 and both <= 4, (kept_free, both)


def test_nearly_as_many_nodes_as_samples():
    """N = 160 samples, 150 nodes: the criterion can keep nearly all of them (the read-out's weights fit the
    noise); the forward start keeps the relevant ones and at most 5% of the independent ones."""
    total = 0
    for seed in range(5):
        X, Y = _layer(seed, 160, 146)
        kept, _ = MIPP(tolerance=0.01, progress=False, seed=seed).select_layer(X, Y)
        assert {1, 2} <= set(kept) and len({0, 3} & set(kept)) >= 1, (seed, kept)
        total += sum(k >= 4 for k in kept)
    assert total <= 0.05 * 5 * 146, total


def test_relevance_screen_records_and_min_keep():
    X, Y = _layer(0, 300, 10)
    kept, records = relevant_nodes(X, Y, alpha=0.05, min_keep=1, generator=torch.Generator().manual_seed(0))
    assert {1, 2} <= set(kept) and {0, 3} & set(kept)
    assert sorted(kept + [r.node for r in records]) == list(range(14))
    assert [r.step for r in records] == list(range(len(records)))
    assert all(r.rule == "relevance" and r.removed and 0.05 < r.score <= 1 and r.estimate >= 0 for r in records)
    only, _ = relevant_nodes(X[:, 4:], Y, alpha=0.05, min_keep=3, generator=torch.Generator().manual_seed(0))
    assert len(only) >= 3


def test_select_layer_records_every_node_once_in_x_columns():
    X, Y = _layer(1, 300, 20)
    kept, res = MIPP(tolerance=0.05, progress=False).select_layer(X, Y)
    assert sorted(r.node for r in res.records) == list(range(24))
    assert res.n_before == 24 and res.n_after == len(kept)
    assert sorted(r.node for r in res.records if not r.removed) == kept


@pytest.mark.parametrize("kind", NONLINEAR)
def test_nonlinear_relevance_is_kept(kind):
    """A feature related to Y only nonlinearly (none of them correlates with Y) is kept, one of each
    near-duplicate set, distractors at most 5% over 3 seeds."""
    free_kept = 0
    for seed in range(3):
        X, Y, sets, free = nonlinear_layer(kind, seed)
        kept, res = MIPP(progress=False, seed=seed).select_layer(X, Y)
        for dup_set in sets:
            assert len(set(dup_set) & set(kept)) == 1, (kind, seed, kept)
        free_kept += len(set(free) & set(kept))
        assert all(not r.removed for r in res.records if r.rule == "nonlinear")
    assert free_kept <= 0.05 * 3 * 50, (kind, free_kept)
