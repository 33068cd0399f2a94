"""The Torch-Pruning backend (optional dependency): explicit-index pruning through its dependency graph,
ratios that keep exactly the selected count, and the importance adapter inside its own pruner."""
import copy

import pytest
import torch
from torch import nn

from mipp.pruning import Selection, build_plan
from mipp.pruning.integrations import MIPPImportance, torch_pruning_apply, torch_pruning_ratios

tp = pytest.importorskip("torch_pruning")

from test_pruning import MODELS, _randomise_norms  # noqa: E402


def _truncating_pair():
    """(n, k) for which Torch-Pruning's int(n * (1 - (n - k) / n)) keeps k - 1 channels."""
    for n in range(2, 64):
        for k in range(2, n):
            if int(n * (1 - (n - k) / n)) == k - 1:
                return n, k
    raise AssertionError("no truncating pair below 64")


def _selection(name: str, seed: int = 0):
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    model = _randomise_norms(factory())
    x = torch.randn(8, *shape)
    _, plan = build_plan(model, x[:2])
    gen = torch.Generator().manual_seed(seed)
    keep = {n: torch.randperm(plan.layers[n].n_nodes, generator=gen)[: max(1, plan.layers[n].n_nodes * 2 // 3)]
            for n in plan.prunable}
    return model, x, Selection(plan, keep)


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_torch_pruning_apply_equals_apply(name, fold):
    model, x, sel = _selection(name)
    sel = sel.record_means(model, x)
    ours, theirs = sel.apply(model, fold=fold), torch_pruning_apply(sel, model, x[:1], fold=fold)
    torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
    for n, idx in sel.keep.items():
        assert theirs.get_submodule(n).weight.shape == ours.get_submodule(n).weight.shape


def test_ratios_and_importance_keep_exact_counts():
    n, k = _truncating_pair()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, n), nn.ReLU(), nn.Linear(n, 3)).eval()
    x = torch.randn(4, 5)
    _, plan = build_plan(model, x[:2])
    sel = Selection(plan, {"0": torch.randperm(n)[:k]})
    # the naive ratio drops one channel too many: the trap that the adjusted ratio avoids
    for exact in (False, True):
        pruned = copy.deepcopy(model)
        ratio = torch_pruning_ratios(sel, pruned)[pruned[0]] if exact else (n - k) / n
        pruner = tp.pruner.MetaPruner(pruned, x[:1], importance=MIPPImportance(sel, pruned),
                                      pruning_ratio_dict={pruned[0]: ratio}, ignored_layers=[pruned[2]])
        pruner.step()
        assert pruned[0].out_features == (k if exact else k - 1)
    # with the adjusted ratio the importance makes Torch-Pruning keep exactly the selected channels
    torch.testing.assert_close(pruned(x), sel.apply(model, fold=False)(x), rtol=1e-5, atol=1e-5)
