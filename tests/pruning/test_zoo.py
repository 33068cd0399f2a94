"""Any model Torch-Pruning can prune: a zoo of the architectures people prune (tests/pruning/zoo.py). For each,
MIPP selects and applies; the pruned model equals the masked original for the same kept nodes; MACs and
parameters drop as Torch-Pruning's counter reports; groups MIPP cannot decide are named with the reason."""

import copy

import pytest
import torch
from torch import nn
from zoo import ZOO

from mipp.pruning import MIPP, UnsupportedModelError, analyse, count_macs_params
from mipp.pruning.scores import keep_top, l1_scores

N = 160


def randomise(model):
    """Non-trivial batch-norm statistics and affine parameters, so a wrong slice shows."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("joint", [False, True])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_select_apply_equals_mask(name, joint):
    factory, shape = ZOO[name]
    torch.manual_seed(0)
    model = randomise(factory())
    x = torch.randn(N, *shape)
    sel = MIPP(n_samples=N, joint=joint, progress=False).select(model, x)
    assert sel.keep, f"nothing decided in {name}"
    gen = torch.Generator().manual_seed(0)
    half = sel.with_keep(
        {
            g: torch.randperm(sel.structure.groups[g].n_nodes, generator=gen)[
                : max(1, sel.structure.groups[g].n_nodes // 2)
            ]
            for g in sel.keep
        }
    )
    for kw in (dict(fold=False), dict(refit=x)):
        small = half.apply(model, **kw)
        masked = half.mask(copy.deepcopy(model), **kw)
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked(x), rtol=2e-4, atol=2e-4)
    m0, p0 = count_macs_params(model, x[:1])
    m1, p1 = count_macs_params(small, x[:1])
    assert m1 < m0 and p1 < p0
    with torch.no_grad():
        assert small(x).shape == model(x).shape  # the output layer is never pruned
    mipp_small = sel.apply(model, refit=x)
    with torch.no_grad():
        assert torch.isfinite(mipp_small(x)).all()


def test_zoo_undecided_groups_are_named():
    st = analyse(randomise(ZOO["encoder"][0]()), torch.randn(2, *ZOO["encoder"][1]))
    assert st.groups["blocks.0.fc1"].prunable and st.groups["blocks.1.fc1"].prunable  # the FFN neurons
    assert "LayerNorm" not in st.groups["embed"].reason and "normalise" in st.groups["embed"].reason
    assert "breaks the forward pass" in st.groups["blocks.0.qkv"].reason  # heads reshape
    res = analyse(randomise(ZOO["resnet18"][0]()), torch.randn(2, *ZOO["resnet18"][1]))
    assert "residual stream" in res.groups["stem.0"].reason
    assert {c.name for c in res.groups["stem.0"].consumers} == {
        "layers.0.conv1",
        "layers.1.conv1",
        "layers.2.conv1",
        "layers.2.shortcut.0",
    }
    mob = analyse(randomise(ZOO["mobilenetv2"][0]()), torch.randn(2, *ZOO["mobilenetv2"][1]))
    expand = mob.groups["blocks.1.conv.0"]
    assert "blocks.1.conv.3" in expand.members  # the depthwise conv goes with its channels
    assert [c.name for c in expand.consumers] == ["blocks.1.conv.6"]
    dense = analyse(randomise(ZOO["densenet"][0]()), torch.randn(2, *ZOO["densenet"][1]))
    assert [c.name for c in dense.groups["layers.0.2"].consumers] == ["layers.1.2", "layers.2.2", "transition.2"]
    assert dense.groups["layers.0.2"].consumers[0].columns[0] == [8]  # concatenated after the stem's 8


def test_a_model_torch_pruning_cannot_trace_gets_a_clear_error():
    class Argmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))).argmax(1)

    with pytest.raises(UnsupportedModelError, match=r"no pruning group.*argmax"):
        MIPP(progress=False).select(Argmax(), torch.randn(50, 4))


def test_a_dict_output_keeps_layers_that_reach_it():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return {"out": self.b(torch.relu(self.a(x))), "hidden": self.a(x)}

    st = analyse(Two(), torch.randn(2, 4))
    assert not st.groups["a"].prunable and "reach the model output" in st.groups["a"].reason


def test_attention_heads_are_groups_and_their_removal_equals_the_masked_model():
    """Separate query / key / value projections under a module with a head count: one group per layer whose
    nodes are the heads; removing heads shrinks every projection by whole heads, updates the module's head
    count and head-size total, and computes what the masked model computes."""
    factory, shape = ZOO["bert"]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(64, *shape)
    st = analyse(model, x[:2])
    heads = st.groups["layers.0.query"]
    assert heads.kind == "heads" and heads.prunable and heads.n_nodes == 4
    assert set(heads.producers) == {"layers.0.query", "layers.0.key", "layers.0.value"}
    assert [c.name for c in heads.consumers] == ["layers.0.attn_out"]
    assert heads.consumers[0].columns[1] == [4, 5, 6, 7]  # head 1: channels 4..7 of the output projection
    sel = MIPP(n_samples=64, progress=False, units=("heads",)).select(model, x)
    assert set(sel.keep) == {"layers.0.query", "layers.1.query"}
    half = sel.with_keep({"layers.0.query": torch.tensor([0, 2]), "layers.1.query": torch.tensor([3])})
    small = half.apply(model, fold=False)
    masked = half.mask(copy.deepcopy(model), fold=False)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
    assert small.layers[0].num_attention_heads == 2 and small.layers[1].num_attention_heads == 1
    assert small.layers[0].all_head_size == 8 and small.layers[0].attention_head_size == 4
    assert small.layers[0].query.out_features == 8 and small.layers[1].attn_out.in_features == 4
    assert model.layers[0].num_attention_heads == 4  # the original is untouched
    # baselines score whole heads: a head's L1 is the sum over its rows of the query projection
    rows = model.layers[0].query.weight.detach().abs().sum(1)
    torch.testing.assert_close(l1_scores(sel, model)["layers.0.query"], rows.view(4, 4).sum(1))
    assert keep_top(half, l1_scores(half, model)).counts == half.counts
