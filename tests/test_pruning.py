"""MIPP pruner: planted structure is found, pruned models equal masked originals, integrations agree.

Networks are tiny and N is a few hundred so that the whole file runs in well under three minutes."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mipp.pruning import MIPP, Selection, UnsupportedModelError, build_plan, count_macs, count_params
import mipp
from mipp.ksg import local_permutations
from mipp.pruning.select import affine_residuals

N = 300
FAST = dict(k=3, alpha=0.05, n_permutations=19, n_samples=N, progress=False)


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


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_mipp_planted_mlp(direction):
    model, x = planted_mlp(0, nn.Tanh())
    sel = MIPP(direction=direction, **FAST).select(model, x)
    keep = set(sel.keep["0"].tolist())
    assert 6 not in keep and 7 not in keep          # constant, and noise fed forward nowhere
    assert len(keep & {0, 4}) == 1                  # exactly one of a duplicated pair
    assert 3 in keep                                # an informative node with no substitute
    assert len(keep & {1, 2, 5}) >= 2               # the sum needs two of the three
    assert not plan_layer(sel, "2").prunable        # the output layer is never pruned


def plan_layer(sel: Selection, name: str):
    return sel.plan.layers[name]


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_mipp_removes_linear_combination(direction):
    """Without an activation node 5 = node 1 + node 2 exactly: the affine rule removes one of the three
    (any one leaves the other two sufficient), and one of the duplicates 0 and 4."""
    model, x = planted_mlp(0, nn.Identity())
    sel = MIPP(direction=direction, **FAST).select(model, x)
    keep = set(sel.keep["0"].tolist())
    assert len(keep & {1, 2, 5}) == 2 and len(keep & {0, 4}) == 1 and 3 in keep
    removed = ({1, 2, 5} | {0, 4}) - keep
    assert all(sel.layers["0"].p_values[i] == 1.0 for i in removed)   # by the exact rule, not a test


@pytest.mark.parametrize("k_perm", [1, 5, 20])
def test_ksg_keeps_an_exact_sum_without_the_affine_rule(k_perm):
    """Why the affine rule exists (measured): for node 5 = node 1 + node 2 the Frenzel-Pompe estimate of
    I(X_5; Y | X_0..3), whose true value is 0, lies above every local-permutation surrogate whatever k_perm:
    the sum has Lipschitz constant sqrt(2) in z-scored max-norm units and so tightens the (x, z)
    neighbourhoods more than a neighbour's value does. A duplicate (constant 1) gives exactly 0."""
    model, x = planted_mlp(0, nn.Identity())
    with torch.no_grad():
        H, Y = model[0](x).double(), model(x).double()
    z = H[:, :4]
    perm = local_permutations(z, 19, k_perm, torch.Generator().manual_seed(0), normalize=True)
    stats = mipp.cmi(torch.cat([H[:, 5][None], H[:, 5][perm]])[..., None], Y, z, 3, normalize=True)
    assert float(stats[0]) > float(stats[1:].max())
    duplicate = mipp.cmi(H[:, 4], Y, H[:, [0, 1, 2, 3, 5]], 3, normalize=True)
    assert abs(float(duplicate)) < 1e-12


def test_affine_residuals():
    torch.manual_seed(0)
    z = torch.randn(200, 3, dtype=torch.float64)
    z = torch.cat([z, z[:, :1]], dim=1)                      # rank-deficient: a duplicated column
    x = torch.stack([2 * z[:, 0] - z[:, 2] + 5, torch.randn(200, dtype=torch.float64), z[:, 1] ** 2], 1)
    r = affine_residuals(x, z)
    assert float(r[0]) < 1e-12
    assert 0.9 < float(r[1]) <= 1.0 and 0.5 < float(r[2]) <= 1.0   # noise; a nonlinear function


class PlantedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.bn(self.conv(x))), 1))


def test_mipp_planted_cnn():
    """Channels: 0-2 informative (input channels 0-2), 3 = 2 x channel 0, 4 constant, 5 = input channel 3
    read by nobody. A channel is one node: its spatial mean."""
    torch.manual_seed(1)
    model = PlantedCNN().eval()
    w, b = torch.zeros(6, 4, 1, 1), torch.zeros(6)
    for i in range(3):
        w[i, i] = 1.0
    w[3, 0] = 2.0
    b[4] = 0.5
    w[5, 3] = 1.0
    v = torch.randn(3, 6)
    v[:, 4:] = 0.0
    with torch.no_grad():
        model.conv.weight.copy_(w)
        model.conv.bias.copy_(b)
        model.fc.weight.copy_(v)
    x = torch.randn(N, 4, 3, 3)
    sel = MIPP(**FAST).select(model, x)
    keep = set(sel.keep["conv"].tolist())
    assert {1, 2} <= keep
    assert len(keep & {0, 3}) == 1
    assert not keep & {4, 5}


def test_selection_is_reproducible_and_seeded():
    model, x = planted_mlp(2, nn.Tanh())
    a = MIPP(seed=3, **FAST).select(model, x)
    b = MIPP(seed=3, **FAST).select(model, x)
    assert torch.equal(a.keep["0"], b.keep["0"])
    assert a.layers["0"].p_values == b.layers["0"].p_values


def test_no_layer_collapses():
    """A hidden layer that the output never reads carries no information about it: every test fails, and
    still min_keep nodes stay (a layer with none would disconnect the network)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        model[2].weight.zero_()
    sel = MIPP(min_keep=2, **FAST).select(model, torch.randn(N, 4))
    assert sel.counts == {"0": 2, "2": 2}


def test_local_permutations_are_near_permutations_among_neighbours():
    torch.manual_seed(0)
    z = torch.randn(200, 2)
    perm = local_permutations(z, 8, 5, torch.Generator().manual_seed(0), normalize=True)
    assert perm.shape == (8, 200)
    zs = (z - z.mean(dim=0)) / z.std(dim=0)   # neighbours are taken on z-scored columns
    d = torch.cdist(zs, zs, p=float("inf")).fill_diagonal_(float("inf"))
    fifth = d.topk(5, dim=1, largest=False).values[:, -1]
    assert bool((d[torch.arange(200), perm] <= fifth).all())   # every sample moves to a z-neighbour
    assert min(len(p.unique()) for p in perm) > 0.85 * 200      # a near permutation: few reused


# ---- structural pruning equals masking -------------------------------------------------------------

class SmallCNN(nn.Module):
    """VGG/LeNet style with a Flatten -> Linear expansion (no global pooling)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
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


def _randomise_norms(model):
    """Non-trivial BN statistics, so that slicing the wrong channel would show."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 7), nn.GELU(), nn.Linear(7, 3)),
            (6,)),
    "cnn": (SmallCNN, (3, 8, 8)),
    "resnet": (TinyResNet, (3, 8, 8)),
}


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_apply_equals_masked_original(name, fold):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = _randomise_norms(factory())
    x = torch.randn(16, *shape)
    _, plan = build_plan(model, x[:2])
    gen = torch.Generator().manual_seed(0)
    keep = {n: torch.randperm(plan.layers[n].n_nodes, generator=gen)[: max(1, plan.layers[n].n_nodes // 2)]
            for n in plan.prunable}
    sel = Selection(plan, keep).record_means(model, x)
    before = model(x).detach().clone()
    small = sel.apply(model, fold=fold)
    masked = sel.mask(copy.deepcopy(model), fold=fold)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x), before)                       # the original is untouched
    assert count_params(small) < count_params(model)
    assert count_macs(small, x) < count_macs(model, x)
    for n, idx in sel.keep.items():
        layer = small.get_submodule(n)
        assert (layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features) == len(idx)
    # masks are torch.nn.utils.prune masks, bias included
    first = plan.prunable[0]
    assert torch_prune.is_pruned(masked)
    removed = sorted(set(range(plan.layers[first].n_nodes)) - set(sel.keep[first].tolist()))
    bias = masked.get_submodule(first).bias
    if bias is not None:
        assert bool((bias[removed] == 0).all())


@pytest.mark.parametrize("layer, consumer", [("features.0", "features.4"), ("features.4", "head.1"),
                                             ("head.1", "head.3")])
def test_fold_keeps_the_consumers_mean_output(layer, consumer):
    """Folding is exact in the mean: the consumer's output averaged over the recorded samples (and over
    positions for a convolution, whose bias is per channel) is the original's, padding included; without
    the fold it shifts by the removed nodes' mean contribution."""
    torch.manual_seed(0)
    model = _randomise_norms(SmallCNN())
    x = torch.randn(64, 3, 8, 8)
    _, plan = build_plan(model, x[:2])
    n = plan.layers[layer].n_nodes
    sel = Selection(plan, {layer: torch.arange(0, n, 2)}).record_means(model, x)

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


def test_fold_needs_recorded_means():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    x = torch.randn(32, 3)
    _, plan = build_plan(model, x[:2])
    sel = Selection(plan, {"0": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match="record_means"):
        sel.apply(model)
    small = sel.record_means(model, x).apply(model)
    assert small[2].bias is not None and small[2].weight.shape == (2, 2)   # a bias-free consumer gets one
    assert sel.apply(model, fold=False)[2].bias is None


def test_residual_channels_are_left_alone():
    model = TinyResNet().eval()
    _, plan = build_plan(model, torch.randn(2, 3, 8, 8))
    assert plan.prunable == ["layer1.conv1", "layer2.conv1"]
    for name in ("stem.0", "layer1.conv2", "layer2.conv2", "layer2.down.0"):
        assert plan.layers[name].reason.startswith("residual")
    assert plan.layers["fc"].reason == "output layer"
    assert plan.layers["layer1.conv1"].norms == ["layer1.bn1"]


def test_mipp_on_resnet_runs_and_applies():
    torch.manual_seed(0)
    model = _randomise_norms(TinyResNet())
    x = torch.randn(N, 3, 8, 8)
    sel = MIPP(**FAST).select(model, x)
    assert set(sel.keep) == {"layer1.conv1", "layer2.conv1"}
    torch.testing.assert_close(sel.apply(model)(x[:8]), sel.mask(copy.deepcopy(model))(x[:8]),
                               rtol=1e-5, atol=1e-5)


def test_flatten_expansion_is_recorded():
    _, plan = build_plan(SmallCNN().eval(), torch.randn(2, 3, 8, 8))
    assert [(c.name, c.expansion) for c in plan.layers["features.4"].consumers] == [("head.1", 16)]
    assert plan.layers["features.0"].norms == ["features.1"]
    assert plan.layers["features.0"].observe == "features_3"   # after BN, ReLU and max-pool


@pytest.mark.parametrize("bad, needle", [
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "'1' (LayerNorm)"),
    (nn.Sequential(nn.Conv2d(4, 4, 1, groups=2), nn.Flatten(), nn.Linear(4, 2)), "groups=2"),
])
def test_unsupported_layers_are_named(bad, needle):
    shape = (2, 4) if isinstance(bad[0], nn.Linear) else (2, 4, 1, 1)
    with pytest.raises(UnsupportedModelError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build_plan(bad, torch.randn(*shape))


def test_unsupported_function_is_named():
    class Softmaxed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.softmax(self.a(x), dim=1))

    with pytest.raises(UnsupportedModelError, match="softmax"):
        build_plan(Softmaxed(), torch.randn(2, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_permutations"):
        MIPP(alpha=0.01, n_permutations=50)
    with pytest.raises(ValueError, match="min_keep"):
        MIPP(min_keep=0)
    _, plan = build_plan(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), torch.randn(2, 3))
    with pytest.raises(ValueError, match="output layer"):
        Selection(plan, {"1": torch.tensor([0])})
    with pytest.raises(ValueError, match="indices"):
        Selection(plan, {"0": torch.tensor([4])})


def test_report():
    model, x = planted_mlp(0, nn.Tanh())
    sel = MIPP(**FAST).select(model, x)
    text = sel.report(model, x)
    assert "output layer" in text and "params 75 ->" in text
    assert sel.layers["0"].n_tests >= 1 and set(sel.layers["0"].seconds) == {"order", "tests", "report_mi"}


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    model, x = planted_mlp(0, nn.Tanh())
    sel = MIPP(**FAST).select(model, x)
    path = sel.plot(str(tmp_path / "sel.png"), model, x)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_dataloader_inputs_match_tensor_inputs():
    model, x = planted_mlp(0, nn.Tanh())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(N)), batch_size=64)
    a = MIPP(**FAST).select(model, x)
    b = MIPP(**FAST).select(model, loader)
    assert torch.equal(a.keep["0"], b.keep["0"])
