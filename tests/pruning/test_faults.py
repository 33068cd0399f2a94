"""Bad inputs named by their real cause, and failures that leave the user's model exactly as it was: an
exception or a KeyboardInterrupt at any point of select, apply or mask (injected at every forward call the
run makes, and inside the mask and re-fit steps) changes no parameter, buffer, hook, mode or mask."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mipp.pruning import MIPP
from mipp.pruning import refit as refit_module

pytest.importorskip("torch_pruning")


def mlp(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3)
    )
    with torch.no_grad():
        model[0].weight[8:] = model[0].weight[:8]
        model[0].bias[8:] = model[0].bias[:8]
    model.train()
    model[3].eval()  # a frozen batch norm inside a model in train mode: modes must come back exactly so
    return model


# -- errors that name the real cause ---------------------------------------------------------------------


def test_wrong_input_shape_and_dtype_name_the_model_error():
    model = mlp()
    for x, what in ((torch.randn(50, 7), r"float32 tensor of shape \(2, 7\)"), (torch.randint(0, 3, (50, 5)), "int64")):
        with pytest.raises(ValueError, match="Sequential fails on the inputs") as info:
            MIPP(progress=False).select(model, x)
        assert "dependency graph" not in str(info.value)
        assert __import__("re").search(what, str(info.value))


def test_nothing_to_decide_says_why():
    """Linear -> LayerNorm -> ReLU -> Linear: the only hidden group is normalised across its channels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError) as info:
        MIPP(progress=False).select(model, torch.randn(500, 4))
    text = str(info.value)
    assert "0 samples" not in text and "no group of Sequential" in text and "analyse" in text
    # each group's reason, found before any capture (issue 22, item 2)
    assert "0: 1 normalises across the channels" in text and "3: " in text and "output layer" in text


def test_nan_and_inf_are_named_before_any_solver():
    model = mlp().eval()
    x = torch.randn(200, 5)
    x[37, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf: batch 0, sample 37"):
        MIPP(n_samples=200, progress=False).select(model, x)
    x[37, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf: batch 0, sample 37"):
        MIPP(n_samples=200, progress=False).select(model, [(x[:100], 0), (x[100:], 1)])
    big = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        big[0].weight.mul_(1e30)  # finite inputs and weights, infinite activations
    with pytest.raises(ValueError, match="input of '2' contains NaN or inf although the model's inputs are finite"):
        MIPP(n_samples=200, progress=False).select(big, torch.randn(200, 5) * 1e10)


# -- failures leave the model as it was ------------------------------------------------------------------


def state(model):
    """Everything a failed run must leave as it was."""
    out = {}
    for name, m in model.named_modules():
        out[name] = (
            m.training,
            {k: v.detach().clone() for k, v in m._parameters.items() if v is not None},
            {k: v.detach().clone() for k, v in m._buffers.items() if v is not None},
            {k: id(v) for k, v in m._parameters.items()},
            list(m._forward_hooks),
            list(m._forward_pre_hooks),
            sorted(k for k in vars(m) if not k.startswith("_")),
        )
    return out


def assert_same(before, after):
    assert before.keys() == after.keys()
    for name in before:
        b, a = before[name], after[name]
        assert a[0] == b[0], f"{name}: mode"
        for i in (1, 2):
            assert a[i].keys() == b[i].keys(), f"{name}: tensors {sorted(b[i])} -> {sorted(a[i])}"
            for k in b[i]:
                assert torch.equal(a[i][k], b[i][k]), f"{name}.{k} changed"
        assert a[3:] == b[3:], f"{name}: parameter objects, hooks or attributes changed"


class Bomb:
    """A forward hook of the user's that raises at its ``at``-th call (counting only when armed)."""

    def __init__(self, at=None, exc=KeyboardInterrupt):
        self.at, self.exc, self.calls = at, exc, 0

    def __call__(self, module, inputs, output):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise self.exc("injected")


def inject_everywhere(model, run, exc=KeyboardInterrupt, stride=1):
    """Run ``run(model)`` once to count the hook's calls, then fail at every ``stride``-th call; after each
    failure the model is what it was."""
    bomb = Bomb(exc=exc)
    model[2].register_forward_hook(bomb)
    before = state(model)
    run(model)
    total, bomb.calls = bomb.calls, 0
    if run.__name__ != "mask_":  # a successful select / apply leaves the model as it was too
        assert_same(before, state(model))
    else:
        for m in model.modules():  # undo the masks of the counting run
            for name in [n[:-5] for n in list(m._buffers) if n.endswith("_mask")]:
                torch_prune.remove(m, name)
        with torch.no_grad():
            for name, t in before.items():
                mod = dict(model.named_modules())[name]
                for k, v in t[1].items():
                    getattr(mod, k).copy_(v)
        before = state(model)
    assert total >= 2
    for at in range(1, total + 1, stride):
        bomb.at, bomb.calls = at, 0
        try:
            run(model)
        except exc as e:
            assert "injected" in str(e)
        except ValueError as e:
            # an error in a forward pass is reported as the model failing on the inputs or Torch-Pruning
            # failing to trace it; in a trial removal it is the group's reason, and no group is left
            assert issubclass(exc, Exception) and ("injected" in str(e) or "no group" in str(e))
        else:
            assert issubclass(exc, Exception), "a KeyboardInterrupt was swallowed"
        assert_same(before, state(model))
    return total


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_select_fails_cleanly_at_every_forward_call(exc):
    x = torch.randn(200, 5)

    def select(model):
        return MIPP(n_samples=200, progress=False).select(model, x)

    inject_everywhere(mlp(), select, exc)


def test_apply_fails_cleanly_at_every_forward_call():
    x = torch.randn(200, 5)
    model = mlp()
    sel = MIPP(n_samples=200, progress=False).select(model, x)
    assert sel.sparsity > 0

    def apply(model):
        return sel.apply(model, refit=x)

    inject_everywhere(model, apply)


def test_mask_fails_cleanly_at_every_forward_call():
    x = torch.randn(200, 5)
    model = mlp()
    sel = MIPP(n_samples=200, progress=False).select(model, x)

    def mask_(model):
        return sel.mask(model, refit=x)

    inject_everywhere(model, mask_)


@pytest.mark.parametrize("refit", [False, True])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_mask_is_all_or_nothing(monkeypatch, refit, exc):
    """A failure after the fold changed the biases and some masks are in place (the second mask), or in
    the re-fit's solve, leaves the model (and masks it already had) as it was."""
    x = torch.randn(200, 5)
    model = mlp()
    sel = MIPP(n_samples=200, progress=False).select(model, x)
    torch_prune.l1_unstructured(model[5], "weight", amount=0.25)  # a mask the user already had
    before = state(model)
    real = torch_prune.custom_from_mask
    calls = []

    def second_fails(module, name, mask):
        calls.append(name)
        if len(calls) == 2:
            raise exc("injected")
        return real(module, name, mask)

    monkeypatch.setattr(torch_prune, "custom_from_mask", second_fails)
    with pytest.raises(exc, match="injected"):
        sel.mask(model, refit=x if refit else None)
    assert_same(before, state(model))
    monkeypatch.setattr(torch_prune, "custom_from_mask", real)
    if refit:
        monkeypatch.setattr(refit_module, "_solve_into", lambda *a, **k: (_ for _ in ()).throw(exc("injected")))
        with pytest.raises(exc, match="injected"):
            sel.mask(model, refit=x)
        assert_same(before, state(model))
        monkeypatch.undo()
    sel.mask(model, refit=x if refit else None)  # and it still works afterwards
    assert hasattr(model[0], "weight_mask") and hasattr(model[5], "weight_mask")
