"""The MIPP paper's own estimator (Westphal, Hailes & Musolesi, arXiv 2411.00147, sections 4.2-4.4), as a
second decision backend beside the KSG one (mipp.pruning.criteria.ksg): ``MIPP(estimator="loss")``.

The information a layer's nodes carry about what their consumers compute is read from the loss of a small
MLP that predicts the consumers' pre-activations from the nodes (I(X; Y) ~ E l(f(empty), Y) - E l(f(X), Y),
after Covert et al.'s SAGE; the f(empty) terms cancel in differences). For one layer:

1. reference: ``repeats`` MLPs (different initialisations and train / held-out splits) predict the target
   from every node;
2. order: the KSG criterion's screen (mipp.pruning.criteria.lstsq.next_node, at the KSG defaults): the node
   whose least-squares residual on the present nodes moves the consumers least first, re-ranked after each
   removal. The paper visits nodes by a single-node model's loss (least informative alone first, section
   4.3 and the authors' FSNID code); a mixture of two latents is informative alone, so it came late, after
   the copies it sums had gone in its favour: on issue 20's planted layers (64 and 256 nodes,
   benchmarks/bench_loss.py) a third to a half of the mixtures stayed in their copies' place. The screen
   also removes, untested, an exact affine combination of the present nodes (the largest-variance one of
   such a set first: of {a, b, a + b} the sum), which the re-routing in 3 removes at no cost anyway, but
   only where the samples outnumber the present columns (with fewer, every node is one in these samples);
   the loop is the KSG criterion's too (lstsq.traverse);
3. sequentially, for each node i: the current models with i masked (its columns set to their mean, 0
   after standardisation; the first layer's weights on them moved onto the present columns through their
   least-squares reconstruction, so a near-copy or a mixture of present nodes costs nothing before the
   fine-tuning) are fine-tuned briefly from their current weights (warm start), and so, as the paired
   control, are the current models unmasked for the same steps: d = L(masked) - L(control) per repeat. The
   node is kept when the data are more than ``confidence`` sure that its removal raises the loss:
   mean(d) - z_confidence * sd(d) / sqrt(repeats) > ``tolerance`` (0: the paper's rule; differences below
   1e-4 of the target's variance are float32 noise and never keep a node); otherwise it is removed and the
   fine-tuned masked models become the current ones.

So the burden of proof is on keeping, as in the paper (a weak estimate removes); the KSG backend reverses
it (issue 7). Losses are mean squared errors of z-scored targets: a fraction of the target's variance, so
``tolerance`` is in those units (0.01: the removal may cost 1% of the variance). Constants are removed
untested, as in the KSG backend.

Where the paper is silent, the choices here (all in :class:`LossConfig`, overridable): the target is the
consumers' pre-activations (the KSG backend's target, so both backends answer the same question; the paper
predicts the next layer's activations); a ReLU MLP of ``depth`` hidden layers of ``hidden`` units (the
authors' FSNID code: 10-10 with SGD lr 1e-4); full-batch Adam, early stopping on a held-out split (the
held-out loss is the best one seen, and the weights are those that reached it); inputs and targets z-scored
on the training rows; float32. Every model of a step (the repeats and their controls) is one stacked
parameter set trained together (torch.func.stack_module_state + vmap), on the device of the activations.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from mipp.pruning.criteria.base import Criterion, Layer, LayerDecision
from mipp.pruning.criteria.ksg import KSGCriterion
from mipp.pruning.criteria.lstsq import relative_error, states_of, traverse
from mipp.pruning.validate import check_integer, check_number


@dataclass(frozen=True)
class LossConfig:
    """The MLPs of the loss backend. hidden / depth: width and number of hidden ReLU layers. lr: Adam's
    learning rate. steps: full-batch steps of a fit from scratch (the reference models);
    finetune_steps: steps of a warm-started fit after masking a node. patience: steps without a better
    held-out loss before a fit stops (all of its stacked models). holdout: fraction of the samples held out
    for the losses."""

    hidden: int = 32
    depth: int = 2
    lr: float = 1e-2
    steps: int = 300
    finetune_steps: int = 30
    patience: int = 20
    holdout: float = 0.2

    def __post_init__(self):
        for name in ("hidden", "depth", "steps", "finetune_steps", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LossConfig.{name} must be an int >= 1, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise ValueError(f"LossConfig.lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.holdout, (int, float)) and 0 < self.holdout < 1):
            raise ValueError(f"LossConfig.holdout must be in (0, 1), got {self.holdout!r}")


# Loss differences below this (a fraction of the z-scored target's variance) are float32 training noise, not
# a cost: a masked model re-routed onto a near-copy equals its control up to ~1e-6, and at tolerance 0 the
# sign of that noise decided (half the near-duplicates were kept)
_RESOLUTION = 1e-4


def _mlp(n_in: int, n_out: int, cfg: LossConfig) -> nn.Module:
    layers, width = [], n_in
    for _ in range(cfg.depth):
        layers += [nn.Linear(width, cfg.hidden), nn.ReLU()]
        width = cfg.hidden
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class _Stack:
    """M independent MLPs with stacked parameters, trained together: their losses are summed, and Adam is
    element-wise, so each model's update is its own."""

    def __init__(
        self,
        n_models: int,
        n_in: int,
        n_out: int,
        cfg: LossConfig,
        generator: torch.Generator,
        device,
        dtype=torch.float32,
    ):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            models = [_mlp(n_in, n_out, cfg).to(device=device, dtype=dtype) for _ in range(n_models)]
        self.params, _ = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        self.cfg = cfg

    def doubled(self) -> _Stack:
        """A stack of 2M models: these M, twice (the same weights)."""
        out = copy.copy(self)
        out.params = {k: torch.cat([v, v]) for k, v in self.params.items()}
        return out

    def inputs(self, keep: torch.Tensor) -> _Stack:
        """These models reading only the input columns ``keep`` (a boolean mask of the present ones)."""
        out = copy.copy(self)
        out.params = {**self.params, "0.weight": self.params["0.weight"][:, :, keep]}
        return out

    def half(self, which: int) -> _Stack:
        """The first (0) or second (1) half of a doubled stack."""
        out = copy.copy(self)
        m = next(iter(self.params.values())).shape[0] // 2
        out.params = {k: v[which * m : (which + 1) * m] for k, v in self.params.items()}
        return out

    def _forward(self, params, x):
        return torch.vmap(lambda p, xi: functional_call(self.base, p, (xi,)))(params, x)

    def fit(self, x_train, y_train, x_val, y_val, steps: int) -> torch.Tensor:
        """Train from the current parameters on (M, n, F) inputs; keep, per model, the parameters with the
        best held-out loss. Returns those losses (M,)."""
        params = {k: v.detach().clone().requires_grad_(True) for k, v in self.params.items()}
        opt = torch.optim.Adam(params.values(), lr=self.cfg.lr)
        best = {k: v.detach().clone() for k, v in params.items()}
        with torch.no_grad():
            best_loss = ((self._forward(params, x_val) - y_val) ** 2).mean((1, 2))
        stale = 0
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = ((self._forward(params, x_train) - y_train) ** 2).mean((1, 2))
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                val = ((self._forward(params, x_val) - y_val) ** 2).mean((1, 2))
                better = val < best_loss
                if bool(better.any()):
                    stale = 0
                    for k, v in params.items():
                        best[k] = torch.where(better.view(-1, *([1] * (v.dim() - 1))), v, best[k])
                    best_loss = torch.where(better, val, best_loss)
                else:
                    stale += 1
            if stale >= self.cfg.patience:
                break
        self.params = best
        return best_loss


def _standardize(t: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    mean, std = t[train].mean(0), t[train].std(0)
    return (t - mean) / torch.where(std > 0, std, torch.ones_like(std))


@dataclass
class LossCriterion(Criterion):
    """The paper's estimator (module docstring): a node is kept when the data are more than ``confidence``
    sure, over ``repeats`` fits, that masking it raises the held-out loss by more than ``tolerance`` (a
    fraction of the target's variance; 0 is the paper's rule). ``loss_config``: the MLPs (:class:`LossConfig`)."""

    name = "loss"
    unit = "fraction of the target's variance"
    default_tolerance = 0.0
    # a pass costs a minute of MLP fits where a KSG pass costs a second: start the budget search at the
    # paper's rule (tolerance 0; a node budget it already meets needs no other pass), grow from 1% of the
    # target's variance, stop at 10%
    search_start = 0.01
    search_precision = 1.1
    search_from_zero = True
    nats = False

    confidence: float = 0.9
    repeats: int = 5
    loss_config: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        check_integer("repeats", self.repeats, 2)
        check_number("confidence", self.confidence, 0, 1, "in (0, 1)")
        if isinstance(self.loss_config, dict):  # settings read back from JSON
            self.loss_config = LossConfig(**self.loss_config)
        if not isinstance(self.loss_config, LossConfig):
            raise TypeError(f"loss_config must be a mipp.pruning.LossConfig, got {type(self.loss_config).__name__}")

    def decide(self, layer: Layer, *, tolerance: float, min_keep: int, generator: torch.Generator, bar=None):
        t0 = time.perf_counter()
        X, Y, node_cols = _inputs_and_target(layer)
        # the visiting order: the KSG criterion's screen at its defaults (module docstring)
        states = states_of(layer, KSGCriterion.ridge, KSGCriterion.noise, rows=False)
        tests = _Tests(self, X, Y, node_cols, tolerance, generator)
        out = LayerDecision(kept=[])
        out.kept, out.seconds = traverse(states, layer.n_nodes, min_keep, KSGCriterion.ridge, tests, out.records, bar)
        out.recon_error = relative_error(states)
        # the reference models are fitted inside the first test: their seconds are reported apart, not twice
        out.seconds["tests"] -= tests.reference_seconds
        out.seconds.update(reference=tests.reference_seconds, total=time.perf_counter() - t0)
        return out


class _Tests:
    """The loss criterion's test of one layer's nodes, called by the traversal (lstsq.traverse) in the
    screen's order: the reference models are fitted at the first test; each test moves the current models to
    the fine-tuned masked ones (the node removed) or the fine-tuned controls (kept)."""

    def __init__(self, criterion: LossCriterion, X, Y, node_cols, tolerance: float, generator: torch.Generator):
        self.criterion, self.X, self.Y, self.node_cols = criterion, X, Y, node_cols
        self.tolerance, self.generator = tolerance, generator
        self.z = statistics.NormalDist().inv_cdf(criterion.confidence)
        self.models: _Stack | None = None
        self.reference_seconds = 0.0

    def _start(self):
        t0 = time.perf_counter()
        c, X = self.criterion, self.X
        self.data = _Splits(X, self.Y, c.repeats, c.loss_config.holdout, self.generator)
        self.models = _Stack(c.repeats, X.shape[1], self.Y.shape[1], c.loss_config, self.generator, X.device)
        self.models.fit(*self.data.train_val(self.data.X), c.loss_config.steps)
        # the removed nodes' columns leave the inputs and the first layers' weights: every later fit and
        # re-routing works on the present columns only (a masked column costs what a present one does)
        self.present = torch.arange(X.shape[1], device=X.device)  # X's columns still present
        self.Xp = self.data.X
        self.Ys2 = torch.cat([self.data.Y, self.data.Y])  # the target of a masked model and its control
        self.reference_seconds = time.perf_counter() - t0

    def __call__(self, i: int, views, affine: bool):
        if self.Y.shape[1] == 0 or self.X.shape[1] == 0:
            return "constant", False, 0.0, 0.0  # nothing to predict, or nothing to predict it from
        if self.models is None:
            self._start()
        assert self.models is not None
        n_val = self.data.n_val
        keep = ~torch.isin(self.present, torch.tensor(self.node_cols[i], dtype=torch.long, device=self.present.device))
        pair = self.models.doubled()
        _reroute(pair, self.Xp[:, n_val:], keep)
        # without more samples than present columns plus the mean (LSState.determined) every node is an exact
        # combination of the others in these samples, which says nothing about the data: such a node is tested
        if affine and all(st.determined for st, *_ in views):  # the re-routed models lose nothing: no fit
            rule, remove, mean, lower = "affine", True, 0.0, 0.0
        else:
            rule, (remove, mean, lower) = "test", self._test(pair, keep)
        self.models = pair.half(0 if remove else 1)
        if remove:
            self.models, self.present, self.Xp = self.models.inputs(keep), self.present[keep], self.Xp[:, :, keep]
        return rule, remove, mean, lower

    def _test(self, pair: _Stack, keep: torch.Tensor):
        """Fine-tune, per repeat, the re-routed model with the node's columns (``~keep`` among the present
        ones) masked (the first half of ``pair``) and, as its control, the current model unmasked with the
        same budget; d = masked - control. Returns (remove, mean d, its lower confidence bound). ``pair``
        holds the fine-tuned models afterwards."""
        Xp, Ys2, n_val = self.Xp, self.Ys2, self.data.n_val
        both = torch.cat([Xp * keep.to(Xp.dtype), Xp])
        repeats, cfg = self.criterion.repeats, self.criterion.loss_config
        loss = pair.fit(both[:, n_val:], Ys2[:, n_val:], both[:, :n_val], Ys2[:, :n_val], cfg.finetune_steps)
        d = (loss[:repeats] - loss[repeats:]).double()
        mean = float(d.mean())
        lower = mean - self.z * float(d.std()) / math.sqrt(repeats)
        return not lower > max(self.tolerance, _RESOLUTION), mean, lower


@torch.no_grad()
def _reroute(pair: _Stack, X_train: torch.Tensor, keep: torch.Tensor, ridge: float = 1e-6) -> None:
    """In place on the masked half of ``pair``: the first layer's weights on the masked columns (``~keep``)
    are moved onto the columns kept, through the least-squares reconstruction of the masked columns from
    them on each repeat's training rows ``X_train`` (repeats, n, columns; X_cols ~ X_kept B; inputs are
    standardised, so no intercept).
    A near-copy or an exact mixture of present nodes is then removed at no cost before the fine-tuning,
    which a few warm-started steps could not learn on their own (both members of a near-duplicate pair were
    kept); a node the others cannot reconstruct keeps its cost.

    The weights move only where the reconstruction generalises: fitted on the first 4/5 of the training rows
    (a random part: the rows are in a random order per repeat), it must reconstruct the last 1/5 better than
    0 does. With as many present columns as rows the fit interpolates any column, and re-routing through it
    put that noise into the masked model: on a planted 1,024-node layer (800 training rows) 97% of the nodes
    independent of everything were kept."""
    alive, cols_t = torch.nonzero(keep).flatten(), torch.nonzero(~keep).flatten()
    if len(alive) == 0 or len(cols_t) == 0:
        return
    weight = pair.params["0.weight"]  # (2M, hidden, F): the first M are the masked models
    cut = X_train.shape[1] * 4 // 5

    def solve(A, T):
        gram = A.T @ A
        gram.diagonal().add_(ridge * float(gram.diagonal().mean()))
        return torch.linalg.solve(gram, A.T @ T)  # (alive, cols)

    for m in range(weight.shape[0] // 2):
        Xt = X_train[m]
        A, T = Xt[:, alive].double(), Xt[:, cols_t].double()
        if cut < 1 or cut == len(A):
            continue
        held_out = T[cut:] - A[cut:] @ solve(A[:cut], T[:cut])
        if not float(held_out.pow(2).sum()) < float(T[cut:].pow(2).sum()):
            continue  # no better than no reconstruction: the node is only masked
        weight[m][:, alive] += (weight[m][:, cols_t].double() @ solve(A, T).T).to(weight.dtype)


def _inputs_and_target(layer: Layer):
    """Every block's present feature columns side by side (float32), the target (every consumer's
    pre-activations, or the layer's own target) without constant columns, and each node's input columns."""
    blocks = layer.blocks
    device = blocks[0].rows.device
    inputs, targets, offset = [], [], 0
    node_cols: list[list[int]] = [[] for _ in range(layer.n_nodes)]
    for b, drop in zip(blocks, layer.drops):
        gone = drop.to(device) | (b.rows.var(0) <= 0)
        where = torch.cumsum(~gone, 0) - 1 + offset
        for i, c in enumerate(b.columns):
            c = c.to(device)
            node_cols[i] += where[c[~gone[c]]].tolist()
        inputs.append(b.rows[:, ~gone])
        targets.append((b.rows - b.mean) @ b.weight.T)
        offset += int((~gone).sum())
    X = torch.cat(inputs, 1).float()
    Y = (torch.cat(targets, 1) if layer.target is None else layer.target).float()
    return X, Y[:, Y.var(0) > 0], node_cols


class _Splits:
    """Per repeat its own train / held-out split (the first n_val of each permutation held out), inputs and
    target standardised on the training rows: X, Y are (repeats, samples, columns)."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, repeats: int, holdout: float, generator):
        n = X.shape[0]
        self.n_val = max(1, round(holdout * n))
        if n - self.n_val < 2:
            raise ValueError(f"the loss estimator needs at least 2 training samples; got N={n} with holdout {holdout}")
        splits = [torch.randperm(n, generator=generator).to(X.device) for _ in range(repeats)]
        self.X = torch.stack([_standardize(X, perm[self.n_val :])[perm] for perm in splits])
        self.Y = torch.stack([_standardize(Y, perm[self.n_val :])[perm] for perm in splits])

    def train_val(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.n_val
        return X[:, v:], self.Y[:, v:], X[:, :v], self.Y[:, :v]
