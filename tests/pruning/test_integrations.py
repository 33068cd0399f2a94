"""The Torch-Pruning bridge: MIPP's decisions inside Torch-Pruning's pruners, without its traps."""

import copy

import pytest
import torch
from torch import nn

from mipp.pruning import MIPP
from mipp.pruning.integrations import MIPPImportance, torch_pruning_pruner

tp = pytest.importorskip("torch_pruning")

from test_models import TinyResNet, randomise_norms  # noqa: E402


def _truncating_pair():
    """(n, k) for which Torch-Pruning's int(n * (1 - (n - k) / n)) keeps k - 1 channels."""
    for n in range(2, 64):
        for k in range(2, n):
            if int(n * (1 - (n - k) / n)) == k - 1:
                return n, k
    raise AssertionError("no truncating pair below 64")


def mlp_selection(n_hidden=12):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, n_hidden), nn.ReLU(), nn.Linear(n_hidden, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(300, 5)
    return model, x, MIPP(n_samples=300, progress=False).select(model, x)


def test_importance_scores_kept_nodes_and_leaves_undecided_groups_alone():
    model, x, sel = mlp_selection()
    sel = sel.with_keep({"0": torch.tensor([1, 4, 7])})  # group "2" undecided
    imp = MIPPImportance(sel, model)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:2])
    g0 = dg.get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=list(range(12)))
    g2 = dg.get_pruning_group(model[2], tp.prune_linear_out_channels, idxs=list(range(6)))
    assert imp(g0).tolist() == [float(i in (1, 4, 7)) for i in range(12)]
    assert imp(g2) is None


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_pruner_keeps_exactly_mipps_nodes(steps):
    """The truncation trap (a count whose ratio rounds one channel too far) and iterative steps."""
    n, k = _truncating_pair()
    model, x, sel = mlp_selection(n)
    gen = torch.Generator().manual_seed(1)
    sel = sel.with_keep({"0": torch.randperm(n, generator=gen)[:k], "2": torch.tensor([0, 2, 5])})
    pruned = copy.deepcopy(model)
    pruner = torch_pruning_pruner(sel, pruned, x[:2], iterative_steps=steps)
    for _ in range(steps):
        pruner.step()
    assert pruned[0].out_features == k and pruned[2].out_features == 3 and pruned[4].out_features == 3
    torch.testing.assert_close(pruned(x), sel.apply(model, fold=False)(x), rtol=1e-5, atol=1e-5)


def test_importance_is_a_torch_pruning_importance():
    model, x, sel = mlp_selection()
    imp = MIPPImportance(sel, model)
    assert isinstance(imp, tp.importance.Importance)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:2])
    group = dg.get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=list(range(12)))
    assert imp(group).tolist() == [float(i in set(sel.keep["0"].tolist())) for i in range(12)]


def _resnet_selection():
    torch.manual_seed(0)
    model = randomise_norms(TinyResNet())
    x = torch.randn(300, 3, 8, 8)
    sel = MIPP(n_samples=300, progress=False).select(model, x)
    return model, x, sel.with_keep({name: torch.arange(sel.structure.groups[name].n_nodes - 1) for name in sel.keep})


@pytest.mark.parametrize("global_pruning", [False, True])
def test_a_ratio_above_mipps_decision_raises_before_anything_is_pruned(global_pruning):
    """The measured trap: MetaPruner(pruning_ratio=0.5) removed channels MIPP kept in its first step (it
    raised only at the second). Now the first step raises and the model is untouched."""
    model, x, sel = _resnet_selection()
    pruned = copy.deepcopy(model)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    pruner = tp.pruner.MetaPruner(
        pruned,
        x[:2],
        importance=MIPPImportance(sel, pruned),
        pruning_ratio=0.5,
        iterative_steps=2,
        global_pruning=global_pruning,
    )
    with pytest.raises(RuntimeError, match="MIPP kept"):
        pruner.step()
    after = pruned.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_ratio_within_mipps_decision_removes_only_mipps_nodes():
    """A ratio that removes no more than MIPP did in any group: only channels MIPP removed go, the
    output layer and the residual stream MIPP left alone stay."""
    model, x, sel = _resnet_selection()
    sel = sel.with_keep({name: torch.arange(sel.structure.groups[name].n_nodes // 2) for name in sel.keep})
    pruned = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(
        pruned, x[:2], importance=MIPPImportance(sel, pruned), pruning_ratio=0.25, iterative_steps=1
    )
    pruner.step()
    assert pruned.fc.out_features == 5 and pruned.stem[0].out_channels == 8
    modules = dict(pruned.named_modules())
    for name, kept in sel.keep.items():
        n = sel.structure.groups[name].n_nodes
        assert modules[name].out_channels == n - int(n * 0.25) >= len(kept)


def test_importance_refuses_a_changed_model():
    model, x, sel = mlp_selection()
    with pytest.raises(ValueError, match="structure differs"):
        MIPPImportance(sel, sel.apply(model))
