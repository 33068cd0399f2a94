"""MIPP on models: the structure from Torch-Pruning's dependency graph, planted nodes found, pruned models
equal masked originals, the mean fold and the least-squares re-fit, inputs of every kind, reports.

Networks are tiny and N is a few hundred, so the file runs in well under a minute."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from mipp.pruning import MIPP, Selection, UnsupportedModelError, analyse, count_macs_params, count_params
from mipp.pruning.serialization import VERSION

N = 400
FAST = dict(n_samples=N, progress=False)


def planted_mlp(seed: int, activation: nn.Module):
    """Hidden nodes: 0-3 informative (inputs 0-3), 4 = duplicate of 0, 5 = input 1 + input 2
    (pre-activation), 6 constant, 7 = input 4 (noise) that the output layer never reads."""
    torch.manual_seed(seed)
    x = torch.randn(N, 5)
    model = nn.Sequential(nn.Linear(5, 8), activation, nn.Linear(8, 3))
    w, b = torch.zeros(8, 5), torch.zeros(8)
    for i in range(4):
        w[i, i] = 1.0
    w[4, 0] = 1.0
    w[5, 1] = w[5, 2] = 1.0
    b[6] = 1.0
    w[7, 4] = 1.0
    v = torch.randn(3, 8)
    v[:, 6:] = 0.0
    with torch.no_grad():
        model[0].weight.copy_(w)
        model[0].bias.copy_(b)
        model[2].weight.copy_(v)
    return model, x


def test_planted_mlp():
    model, x = planted_mlp(0, nn.Tanh())
    sel = MIPP(**FAST).select(model, x)
    keep = set(sel.keep["0"].tolist())
    assert 6 not in keep and 7 not in keep  # constant, and noise fed forward nowhere
    assert len(keep & {0, 4}) == 1  # exactly one of a duplicated pair
    assert 3 in keep  # an informative node with no substitute
    assert len(keep & {1, 2, 5}) >= 2  # the sum needs two of the three
    assert not sel.structure.groups["2"].prunable  # the output layer is never pruned
    rules = {r.node: r.rule for r in sel.layers["0"].records}
    assert rules[6] == "constant"


def test_linear_combination_removed_exactly_and_refit_reproduces_the_output():
    """Without an activation node 5 = node 1 + node 2: the exact rule removes one of the three and one of
    the duplicates 0 / 4, and the least-squares re-fit then reproduces the model's output exactly."""
    model, x = planted_mlp(0, nn.Identity())
    sel = MIPP(**FAST).select(model, x)
    keep = set(sel.keep["0"].tolist())
    assert len(keep & {1, 2, 5}) == 2 and len(keep & {0, 4}) == 1 and 3 in keep
    removed = [r for r in sel.layers["0"].records if r.removed]
    assert {r.rule for r in removed if r.node in {0, 1, 2, 4, 5}} == {"affine"}
    exact = sel.with_keep({"0": torch.tensor(sorted(keep | {7}))})  # every removed node is affine here
    small = exact.apply(model, refit=x)
    torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-4)
    masked = exact.mask(copy.deepcopy(model), refit=x)
    torch.testing.assert_close(masked(x), model(x), rtol=1e-4, atol=1e-4)


def test_selection_is_reproducible_and_seeded():
    model, x = planted_mlp(2, nn.Tanh())
    a = MIPP(seed=3, **FAST).select(model, x)
    b = MIPP(seed=3, **FAST).select(model, x)
    assert torch.equal(a.keep["0"], b.keep["0"])
    assert [r.statistic for r in a.layers["0"].records] == [r.statistic for r in b.layers["0"].records]


def test_no_layer_collapses():
    """A hidden layer that the output never reads: everything is removable, and still min_keep stay."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        model[2].weight.zero_()
    sel = MIPP(min_keep=2, **FAST).select(model, torch.randn(N, 4))
    assert sel.counts == {"0": 2, "2": 2}


# ---- structural pruning equals masking -------------------------------------------------------------


class SmallCNN(nn.Module):
    """VGG/LeNet style with a Flatten -> Linear expansion (no global pooling)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 12), nn.Sigmoid(), nn.Linear(12, 4))

    def forward(self, x):
        return self.head(self.features(x))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 12, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def randomise_norms(model):
    """Non-trivial BN statistics, so that slicing the wrong channel would show."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 7), nn.GELU(), nn.Linear(7, 3)), (6,)),
    "cnn": (SmallCNN, (3, 8, 8)),
    "resnet": (TinyResNet, (3, 8, 8)),
}


def half_selection(name: str, seed: int = 0, n: int = 64):
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    model = randomise_norms(factory())
    x = torch.randn(n, *shape)
    sel = MIPP(**FAST).select(model, x)
    gen = torch.Generator().manual_seed(seed)
    keep = {
        g: torch.randperm(sel.structure.groups[g].n_nodes, generator=gen)[
            : max(1, sel.structure.groups[g].n_nodes // 2)
        ]
        for g in sel.keep
    }
    return model, x, sel.with_keep(keep)


@pytest.mark.parametrize("treatment", ["none", "fold", "refit"])
@pytest.mark.parametrize("name", list(MODELS))
def test_apply_equals_masked_original(name, treatment):
    model, x, sel = half_selection(name)
    kw = {"none": dict(fold=False), "fold": dict(fold=True), "refit": dict(refit=x)}[treatment]
    before = model(x).detach().clone()
    small = sel.apply(model, **kw)
    masked = sel.mask(copy.deepcopy(model), **kw)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model(x), before)  # the original is untouched
    assert count_params(small) < count_params(model)
    assert count_macs_params(small, x[:1])[0] < count_macs_params(model, x[:1])[0]
    for g, idx in sel.keep.items():
        layer = small.get_submodule(g)
        assert (layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features) == len(idx)
    assert torch_prune.is_pruned(masked)
    first = next(iter(sel.keep))
    removed = sorted(set(range(sel.structure.groups[first].n_nodes)) - set(sel.keep[first].tolist()))
    bias = masked.get_submodule(first).bias
    if bias is not None:
        assert bool((bias[removed] == 0).all())


def test_refit_beats_fold_in_reconstruction():
    """The re-fit minimises the consumers' squared error on the recorded samples: the output is closer to the
    original than with the mean fold or nothing."""
    model, x, sel = half_selection("mlp", n=400)
    torch.set_grad_enabled(False)
    ref = model(x)
    err = {
        kw: float((sel.apply(model, **dict([kw]))(x) - ref).pow(2).mean())
        for kw in (("fold", False), ("fold", True), ("refit", x))[:2]
    }
    refit_err = float((sel.apply(model, refit=x)(x) - ref).pow(2).mean())
    torch.set_grad_enabled(True)
    assert refit_err < min(err.values())


@pytest.mark.parametrize("layer", ["features.0", "features.4", "head.1"])
def test_refit_from_moments_equals_the_refit_when_one_group_is_pruned(layer):
    """refit_moments (what the budget refinement judges candidates by) solves each consumer's least squares
    from the captured moments; with one group pruned the consumer's inputs are the dense ones, so it equals
    the data-driven re-fit: a convolution's kernel columns, a Flatten's and a Linear's alike."""
    from mipp.pruning.refit import consumer_plan, refit_moments
    from mipp.pruning.walk import capture_model

    torch.manual_seed(0)
    model = randomise_norms(SmallCNN())
    x = torch.randn(N, 3, 8, 8)
    cap = capture_model(model, x, n_samples=N)
    n = cap.structure.groups[layer].n_nodes
    sel = Selection(cap.structure, {layer: torch.arange(0, n, 2)}, cap.example)
    small = sel.apply(model, fold=False)
    refit_moments(small, model, consumer_plan(cap.structure, sel.keep, model), cap.stats)
    with torch.no_grad():
        got, want, dense = small(x), sel.apply(model, refit=x)(x), model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(dense.abs().max()))
    assert float((got - dense).abs().max()) > 1e-3  # the pruning changed the output: the test has teeth


@pytest.mark.parametrize("kind", ["inplace-relu", "post-ln-stream"])
def test_refit_is_the_same_whatever_the_dense_targets_kept_at_once(monkeypatch, kind):
    """The re-fit keeps the dense model's targets of as many consumers as TARGET_CACHE_BYTES allows from one
    pass: one consumer per pass (the pass ends at it) and all of them from one pass must give bit-identical
    weights. With ReLU(inplace=True) after each Linear, a kept output that was not copied would be rectified
    by the rest of the pass; the post-LayerNorm encoder's targets are the norms' inputs (the stream)."""
    from mipp.pruning import refit as refit_module

    torch.manual_seed(0)
    if kind == "inplace-relu":
        model = nn.Sequential(
            nn.Linear(10, 32), nn.ReLU(inplace=True), nn.Linear(32, 24), nn.ReLU(inplace=True), nn.Linear(24, 3)
        ).eval()
        x = torch.randn(300, 10)
    else:
        from zoo import BertNet

        model, x = BertNet().eval(), torch.randn(150, 8, 6)
    sel = MIPP(**FAST).select(model, x)
    sel = sel.with_keep({n: torch.arange(0, sel.structure.groups[n].n_nodes, 2) for n in sel.keep})
    states = {}
    for cap in (1, 1 << 40):
        monkeypatch.setattr(refit_module, "TARGET_CACHE_BYTES", cap)
        states[cap] = sel.apply(model, refit=x).state_dict()
    assert all(torch.equal(states[1][k], states[1 << 40][k]) for k in states[1])
    with torch.no_grad():  # the re-fit did something: the weights differ from the fold's
        folded = sel.apply(model).state_dict()
    assert any(not torch.equal(states[1][k], folded[k]) for k in folded)


@pytest.mark.parametrize(
    "layer, consumer", [("features.0", "features.4"), ("features.4", "head.1"), ("head.1", "head.3")]
)
def test_fold_keeps_the_consumers_mean_output(layer, consumer):
    """Folding is exact in the mean: the consumer's output averaged over the recorded samples (and over
    positions for a convolution) is the original's, padding included; without it the mean shifts."""
    torch.manual_seed(0)
    model = randomise_norms(SmallCNN())
    x = torch.randn(64, 3, 8, 8)
    sel = MIPP(**FAST).select(model, x)
    n = sel.structure.groups[layer].n_nodes
    sel = sel.with_keep({layer: torch.arange(0, n, 2)})

    def mean_output(m):
        out = []
        handle = m.get_submodule(consumer).register_forward_hook(lambda mod, i, o: out.append(o))
        with torch.no_grad():
            m(x)
        handle.remove()
        return out[0].mean(dim=[0] + list(range(2, out[0].dim())))

    reference = mean_output(model)
    torch.testing.assert_close(mean_output(sel.apply(model, fold=True)), reference, rtol=1e-4, atol=1e-4)
    assert float((mean_output(sel.apply(model, fold=False)) - reference).abs().max()) > 1e-2


def test_fold_and_refit_need_their_data():
    model, x, sel = half_selection("mlp")
    bare = Selection(sel.structure, sel.keep, sel.example)
    with pytest.raises(ValueError, match="refit=inputs"):
        bare.apply(model)
    assert bare.apply(model, fold=False)[2].weight.shape[1] == len(sel.keep["0"])
    with pytest.raises(ValueError, match="no samples"):
        sel.apply(model, refit=x[:0])
    small = bare.apply(model, refit=x)  # a re-fit needs no recorded means
    assert small[2].bias is not None


def test_a_changed_model_is_refused():
    model, x, sel = half_selection("mlp")
    small = sel.apply(model)
    with pytest.raises(ValueError, match="structure differs"):
        sel.apply(small)


def test_residual_stream_is_left_alone_by_default():
    model = TinyResNet().eval()
    st = analyse(model, torch.randn(2, 3, 8, 8))
    assert st.prunable == ["layer1.conv1", "layer2.conv1"]
    for name in ("stem.0", "layer2.conv2"):
        assert "residual stream" in st.groups[name].reason and st.groups[name].coupled
    assert "output layer" in st.groups["fc"].reason
    joint = analyse(model, torch.randn(2, 3, 8, 8), joint=True)
    assert set(joint.prunable) == {"stem.0", "layer1.conv1", "layer2.conv1", "layer2.conv2"}
    consumers = {c.name for c in joint.groups["stem.0"].consumers}
    assert consumers == {"layer1.conv1", "layer2.conv1", "layer2.down.0"}


def test_a_hidden_layer_read_by_a_matmul_is_not_called_the_output_layer():
    """Issue 22, item 8c: a group without a Linear / Conv consumer was always "(the output layer)", also for
    a hidden Linear read by ``h @ self.w``, which Torch-Pruning's tracer does not follow as a consumer."""

    class MatmulHead(nn.Module):
        def __init__(self, tail: bool):
            super().__init__()
            self.a, self.b, self.tail = nn.Linear(4, 8), nn.Linear(8, 6), tail
            self.w = nn.Parameter(torch.randn(6, 3))

        def forward(self, x):
            h = torch.relu(self.b(torch.relu(self.a(x))))
            return (h @ self.w) + 1 if self.tail else h @ self.w

    class Softmaxed(nn.Module):  # an output layer whose output passes through element-wise ops
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 6)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))).softmax(-1) * 2

    for tail in (False, True):
        with warnings.catch_warnings():  # Torch-Pruning warns of the unwrapped parameter w
            warnings.simplefilter("ignore")
            reason = analyse(MatmulHead(tail), torch.randn(2, 4)).groups["b"].reason
        assert "output layer" not in reason and "matmul with a parameter" in reason, tail
    assert "output layer" in analyse(Softmaxed(), torch.randn(2, 4)).groups["b"].reason


def test_mipp_on_resnet_runs_and_applies():
    torch.manual_seed(0)
    model = randomise_norms(TinyResNet())
    x = torch.randn(N, 3, 8, 8)
    for joint in (False, True):
        sel = MIPP(joint=joint, **FAST).select(model, x)
        assert set(sel.keep) == ({"layer1.conv1", "layer2.conv1"} | ({"stem.0", "layer2.conv2"} if joint else set()))
        torch.testing.assert_close(
            sel.apply(model, refit=x)(x[:8]), sel.mask(copy.deepcopy(model), refit=x)(x[:8]), rtol=1e-4, atol=1e-4
        )


def test_flatten_columns_come_from_torch_pruning():
    st = analyse(SmallCNN().eval(), torch.randn(2, 3, 8, 8))
    (consumer,) = st.groups["features.4"].consumers
    assert consumer.name == "head.1" and consumer.columns[3] == list(range(48, 64))  # channel 3 -> 16 features
    assert "features.1" in st.groups["features.0"].members  # its batch norm


def test_model_without_prunable_layers():
    with pytest.raises(UnsupportedModelError, match="no Linear / Conv"):
        analyse(nn.Sequential(nn.ReLU()), torch.randn(2, 3))


def test_select_restores_every_modules_mode():
    """A model in train mode with a frozen (eval) batch norm comes back exactly so; dropout is off while
    activations are recorded, so two selections agree."""
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    model.train()
    model[1].eval()
    x = torch.randn(N, 5)
    a = MIPP(**FAST).select(model, x)
    assert model.training and not model[1].training and model[3].training
    b = MIPP(**FAST).select(model, x)
    assert torch.equal(a.keep["0"], b.keep["0"])


def test_inputs_of_every_kind_give_the_same_selection():
    """A tensor, a DataLoader of (x, label) batches, a list and a one-batch generator: the same samples."""
    model, x = planted_mlp(0, nn.Tanh())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(N)), batch_size=64)
    ref = MIPP(**FAST).select(model, x)
    for inputs in (loader, list(x.split(100)), (b for b in [x]), iter(loader)):
        assert torch.equal(MIPP(**FAST).select(model, inputs).keep["0"], ref.keep["0"])


def test_too_few_samples():
    model, x = planted_mlp(0, nn.Tanh())
    with pytest.raises(ValueError, match="samples"):
        MIPP(progress=False).select(model, x[:3])


def test_bad_keep_is_named():
    model, x, sel = half_selection("mlp")
    with pytest.raises(ValueError, match="output layer"):
        sel.with_keep({"4": torch.tensor([0])})
    with pytest.raises(ValueError, match="indices"):
        sel.with_keep({"0": torch.tensor([10])})


def test_report_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    model, x = planted_mlp(0, nn.Tanh())
    sel = MIPP(**FAST).select(model, x)
    text = sel.report(model)
    assert "output layer" in text and "params 75 ->" in text and "MACs" in text
    assert sel.layers["0"].n_tests >= 1 and {"screen", "tests", "total"} <= set(sel.layers["0"].seconds)
    path = sel.plot(str(tmp_path / "sel.png"), model)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_save_load_apply_equals_apply(tmp_path):
    model, x, sel = half_selection("cnn")
    sel = MIPP(**FAST).select(model, x)
    path = sel.save(str(tmp_path / "sel.json"))
    import json

    with open(path) as f:
        data = json.load(f)  # strict JSON (no NaN)
    assert data["version"] == VERSION and set(data["keep"]) == set(sel.keep)
    loaded = Selection.load(path, model)
    assert {k: v.tolist() for k, v in loaded.keep.items()} == {k: v.tolist() for k, v in sel.keep.items()}
    assert loaded.settings == sel.settings and loaded.layers.keys() == sel.layers.keys()
    with torch.no_grad():
        torch.testing.assert_close(loaded.apply(model)(x), sel.apply(model)(x))
        torch.testing.assert_close(loaded.apply(model, refit=x)(x), sel.apply(model, refit=x)(x))
    with pytest.raises(ValueError, match="another model"):
        Selection.load(path, sel.apply(model))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "mipp.Selection", "version": 99}')
    with pytest.raises(ValueError, match="version"):
        Selection.load(str(bad), model)


def test_apply_to_a_masked_model():
    """A model carrying torch.nn.utils.prune masks (deepcopy refuses it) can be applied to: the result is
    the same model as from the unmasked original, and the masked model keeps its masks."""
    model, x, sel = half_selection("cnn")
    masked = sel.mask(copy.deepcopy(model), fold=False)
    with torch.no_grad():
        torch.testing.assert_close(
            sel.apply(masked, fold=False)(x), sel.apply(model, fold=False)(x), rtol=1e-5, atol=1e-5
        )
    assert torch_prune.is_pruned(masked)


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
