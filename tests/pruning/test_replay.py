"""The re-fit replays, in consumer i + 1's pass, the module calls that finished before consumer i started
(mipp.pruning.refit._Replay). Replaying must be the same as running: the re-fitted weights equal, bit for bit,
those of passes that run everything, on every zoo architecture and on models whose modules are shared, used
for an in-place effect, change an output or an attribute in place, append to an argument, or tie a weight to
the consumer; and the early layers do run fewer times."""

import copy

import pytest
import torch
from torch import nn
from zoo import ZOO

from mipp.pruning import MIPP
from mipp.pruning import refit as refit_module

N = 96


class FourLayers(nn.Module):
    """Four Linear layers (6 -> 24 -> 20 -> 16 -> 3) that each model below wires in its own way."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(6, 24), nn.Linear(24, 20), nn.Linear(20, 16), nn.Linear(16, 3)


class SharedAndInPlace(FourLayers):
    """One ReLU module called after every layer, and an in-place ReLU whose return value is not used."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.inplace = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.act(self.a(x))
        h = self.b(h)
        self.inplace(h)  # its effect on h
        return self.d(self.act(self.c(h)))


class LaterInPlace(nn.Module):
    """The first layer's output read by two consumers and changed in place between them."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 24), nn.Linear(24, 20), nn.Linear(20, 16)
        self.d, self.e = nn.Linear(16, 3), nn.Linear(24, 3)

    def forward(self, x):
        h = self.a(x)
        z = self.b(torch.relu(h))
        h.mul_(0.5)  # after b read it: a replayed later must not return this
        return self.d(torch.relu(self.c(torch.relu(z)))) + self.e(torch.relu(h))


class Stateful(FourLayers):
    """A layer that stores its output on itself, read by a later module: replaying it would leave the old one."""

    def __init__(self):
        super().__init__()
        self.memory = Memory()

    def forward(self, x):
        h = self.memory(torch.relu(self.a(x)))
        z = torch.relu(self.c(torch.relu(self.b(h + self.memory.last))))
        return self.d(z)


class Memory(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen: list = []  # appended to, read through self.last

    def forward(self, h):
        self.seen.append((h * 2).detach())  # (a deep copy of the model takes no graph)
        return h + 1

    @property
    def last(self):
        return self.seen[-1]


class Logged(FourLayers):
    """A layer given a list it appends to, read after it: replaying it would leave the list empty."""

    def __init__(self):
        super().__init__()
        self.tap = Tap()

    def forward(self, x):
        log: list = []
        h = self.tap(torch.relu(self.a(x)), log)
        return self.d(torch.relu(self.c(torch.relu(self.b(h * log[0])))))


class Tap(nn.Module):
    def forward(self, h, log):
        log.append(h.detach().abs().mean())
        return h + 1


MODELS = {
    **{name: ZOO[name] for name in ZOO},
    "shared-inplace": (SharedAndInPlace, (6,)),
    "later-inplace": (LaterInPlace, (6,)),
    "stateful": (Stateful, (6,)),
    "logged": (Logged, (6,)),
}


def _runs_everything(monkeypatch):
    monkeypatch.setattr(refit_module._Replay, "run", lambda self, index, consumer, forward: forward())


@pytest.mark.parametrize("name", list(MODELS))
def test_replayed_refit_equals_the_refit_that_runs_everything(name, monkeypatch):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(N, *shape)
    batches = [x[:40], x[40:70], x[70:]]  # several batches: each keeps its own calls
    sel = MIPP(sparsity=0.5, n_samples=N, progress=False).select(model, batches)
    for how in ("apply", "mask"):  # a pruned copy; masks in place (their hooks rebind the weights at each call)
        treat = (
            (lambda: sel.apply(model, refit=batches))
            if how == "apply"
            else (lambda: sel.mask(copy.deepcopy(model), refit=batches))
        )
        replayed = treat().state_dict()
        with monkeypatch.context() as m:
            _runs_everything(m)
            full = treat().state_dict()
        assert replayed.keys() == full.keys()
        for k in full:
            assert torch.equal(replayed[k], full[k]), (name, how, k)


def test_replay_skips_the_layers_before_the_last_consumer(monkeypatch):
    """The first layer computes once per batch in the first consumer's pass and is replayed after that (without
    the replay every consumer's pass computes it). Counted in Linear.forward: a replayed call still fires the
    module's hooks, but does not compute."""
    torch.manual_seed(0)
    model = SharedAndInPlace().eval()
    model.a.counted = True  # the pruned copy, a deep copy, keeps the mark
    x = torch.randn(N, 6)
    batches = [x[:50], x[50:]]
    sel = MIPP(sparsity=0.5, n_samples=N, progress=False).select(model, batches)
    calls = {"replayed": 0, "full": 0}
    linear_forward = nn.Linear.forward

    def counting(key):
        def forward(self, x):
            calls[key] += getattr(self, "counted", False)
            return linear_forward(self, x)

        return forward

    with monkeypatch.context() as m:
        m.setattr(nn.Linear, "forward", counting("replayed"))
        sel.apply(model, refit=batches)
    with monkeypatch.context() as m:
        m.setattr(nn.Linear, "forward", counting("full"))
        _runs_everything(m)
        sel.apply(model, refit=batches)
    consumers = 3  # b, c and d read pruned groups
    # the dense model's passes (targets, the probe) compute it alike; of the pruned model's passes, only the
    # first consumer's computes it when replaying
    assert calls["full"] - calls["replayed"] == (consumers - 1) * len(batches)


def test_a_call_sharing_the_consumers_weight_is_not_replayed():
    """The re-fit writes a consumer's weights in place: a module before it that shares them (tied weights)
    must run again, not return what it gave with the old weights."""
    torch.manual_seed(0)
    enc, dec = nn.Linear(5, 5), nn.Linear(5, 5)
    dec.weight = enc.weight  # tied
    model = nn.Sequential(enc, nn.Tanh(), dec)
    x = torch.randn(7, 5)
    seen = []
    hook = dec.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    replay = refit_module._Replay()
    with torch.no_grad():
        replay.run(0, dec, lambda: model(x))
        dec.weight.mul_(2.0)  # as the re-fit's copy_ does
        replay.run(0, dec, lambda: model(x))
    hook.remove()
    torch.testing.assert_close(seen[1], torch.tanh(enc(x)).detach(), rtol=0, atol=0)
    assert not torch.equal(seen[0], seen[1])
