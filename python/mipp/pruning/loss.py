"""The MIPP paper's own estimator (Westphal, Hailes & Musolesi, arXiv 2411.00147, sections 4.2-4.4), as a
second decision backend beside the KSG one (decide.py): ``MIPP(estimator="loss")``.

The information a layer's nodes carry about what their consumers compute is read from the loss of a small
MLP that predicts the consumers' pre-activations from the nodes (I(X; Y) ~ E l(f(empty), Y) - E l(f(X), Y),
after Covert et al.'s SAGE; the f(empty) terms cancel in differences). For one layer:

1. order: one MLP per node predicts the target from that node alone; nodes are visited in descending order
   of that loss (least informative first, as the paper's section 4.3 and the authors' FSNID code do);
2. reference: ``repeats`` MLPs (different initialisations and train / held-out splits) predict the target
   from every node; L_ref = their held-out losses;
3. sequentially, for each node i: the current models with i masked (its columns set to their mean, 0
   after standardisation) are fine-tuned briefly from their current weights (warm start) and
   d = L(masked) - L_ref per repeat. The node is kept when the data are more than ``confidence`` sure that
   its removal raises the loss: mean(d) - z_confidence * sd(d) / sqrt(repeats) > ``tolerance`` (0: the
   paper's rule); otherwise it is removed and the fine-tuned models become the current ones.

So the burden of proof is on keeping, as in the paper (a weak estimate removes); the KSG backend reverses
it (issue 7). Losses are mean squared errors of z-scored targets: a fraction of the target's variance, so
``tolerance`` is in those units (0.01: the removal may cost 1% of the variance). Constants are removed
untested, as in the KSG backend.

Where the paper is silent, the choices here (all in :class:`LossConfig`, overridable): the target is the
consumers' pre-activations (the KSG backend's target, so both backends answer the same question; the paper
predicts the next layer's activations); a ReLU MLP of ``depth`` hidden layers of ``hidden`` units (the
authors' FSNID code: 10-10 with SGD lr 1e-4); full-batch Adam, early stopping on a held-out split (the
held-out loss is the best one seen, and the weights are those that reached it); inputs and targets z-scored
on the training rows; float32. Every model of a step (the repeats; the single-node models) is one stacked
parameter set trained together (torch.func.stack_module_state + vmap), on the device of the activations.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from mipp.pruning.decide import Block, LayerDecision, NodeRecord, _State, relative_error


@dataclass(frozen=True)
class LossConfig:
    """The MLPs of the loss backend. hidden / depth: width and number of hidden ReLU layers. lr: Adam's
    learning rate. steps: full-batch steps of a fit from scratch (the reference and single-node models);
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


def decide_layer_loss(
    blocks: list[Block],
    n_nodes: int,
    *,
    confidence: float,
    repeats: int,
    tolerance: float,
    min_keep: int,
    generator: torch.Generator,
    config: LossConfig,
    drop: list[torch.Tensor] | None = None,
    bar=None,
    target: torch.Tensor | None = None,
) -> LayerDecision:
    """Decide every node of a layer with the loss-difference estimator (see the module docstring).
    ``drop``: per block, a boolean mask of feature columns already removed by other groups (not inputs).
    ``target``: (N, q) values to predict instead of the consumers' pre-activations (select_layer's Y)."""
    t0 = time.perf_counter()
    z = statistics.NormalDist().inv_cdf(confidence)
    device = blocks[0].rows.device
    # inputs: every block's present feature columns side by side; target: every consumer's pre-activations
    inputs, targets, node_cols, offset = [], [], [[] for _ in range(n_nodes)], 0
    for j, b in enumerate(blocks):
        gone = drop[j] if drop is not None else torch.zeros(b.rows.shape[1], dtype=torch.bool)
        gone = gone.to(device) | (b.rows.var(0) <= 0)
        where = torch.cumsum(~gone, 0) - 1 + offset
        for i, c in enumerate(b.columns):
            c = c.to(device)
            node_cols[i] += where[c[~gone[c]]].tolist()
        inputs.append(b.rows[:, ~gone])
        targets.append((b.rows - b.mean) @ b.weight.T)
        offset += int((~gone).sum())
    X = torch.cat(inputs, 1).float()
    Y = (torch.cat(targets, 1) if target is None else target).float()
    Y = Y[:, Y.var(0) > 0]
    n = X.shape[0]
    n_val = max(1, round(config.holdout * n))
    if n - n_val < 2:
        raise ValueError(
            f"the loss estimator needs at least 2 training samples; got N={n} with holdout {config.holdout}"
        )
    # per repeat its own split; every tensor below is (models, samples, columns)
    splits = [torch.randperm(n, generator=generator).to(device) for _ in range(repeats)]
    Xs, Ys = [], []
    for perm in splits:
        train = perm[n_val:]
        Xs.append(_standardize(X, train)[perm])
        Ys.append(_standardize(Y, train)[perm])
    Xs, Ys = torch.stack(Xs), torch.stack(Ys)

    out = LayerDecision(kept=[])
    alive = set(range(n_nodes))
    undecided, step = [], 0
    for i in range(n_nodes):
        if not node_cols[i] and len(alive) > min_keep:  # every column constant or already removed
            alive.discard(i)
            out.records.append(NodeRecord(i, step, "constant", True, math.nan, 0.0, 0.0))
            step += 1
        else:
            undecided.append(i)
    if bar is not None:
        bar.reset(total=n_nodes)
        bar.update(n_nodes - len(undecided))
    if not undecided or Y.shape[1] == 0 or X.shape[1] == 0:
        for i in undecided:
            out.records.append(NodeRecord(i, step, "constant", False, math.nan, 0.0, 0.0))
            step += 1
        out.kept = sorted(alive)
        out.seconds = {"order": 0.0, "tests": 0.0, "total": time.perf_counter() - t0}
        return out

    t1 = time.perf_counter()
    # 1. order: one model per node on its own columns (the first repeat's split), padded to the widest node
    width = max(len(node_cols[i]) for i in undecided)
    index = torch.zeros(len(undecided), width, dtype=torch.long, device=device)
    valid = torch.zeros(len(undecided), width, dtype=torch.bool, device=device)
    for r, i in enumerate(undecided):
        index[r, : len(node_cols[i])] = torch.tensor(node_cols[i], dtype=torch.long)
        valid[r, : len(node_cols[i])] = True
    single_x = Xs[0][:, index].permute(1, 0, 2) * valid[:, None, :]  # (nodes, n, width)
    single_y = Ys[0].expand(len(undecided), -1, -1)
    singles = _Stack(len(undecided), width, Y.shape[1], config, generator, device)
    single_loss = singles.fit(
        single_x[:, n_val:], single_y[:, n_val:], single_x[:, :n_val], single_y[:, :n_val], config.steps
    )
    order = [undecided[j] for j in sorted(range(len(undecided)), key=lambda j: (-float(single_loss[j]), j))]
    single = {i: float(single_loss[j]) for j, i in enumerate(undecided)}

    # 2. the models on every node
    models = _Stack(repeats, X.shape[1], Y.shape[1], config, generator, device)
    models.fit(Xs[:, n_val:], Ys[:, n_val:], Xs[:, :n_val], Ys[:, :n_val], config.steps)
    t_order = time.perf_counter() - t1

    # 3. sequential masking: per repeat, the current model fine-tuned with node i masked and, as its control,
    # fine-tuned with the same budget unmasked; d = masked - control. The winner becomes the current model.
    t1 = time.perf_counter()
    mask = torch.ones(X.shape[1], dtype=Xs.dtype, device=device)
    Ys2 = torch.cat([Ys, Ys])
    for i in order:
        if len(alive) <= min_keep:
            out.records.append(NodeRecord(i, step, "min_keep", False, single[i], math.nan, math.nan))
            step += 1
            continue
        trial_mask = mask.clone()
        trial_mask[node_cols[i]] = 0.0
        pair = models.doubled()
        both = torch.cat([Xs * trial_mask, Xs * mask])
        loss = pair.fit(both[:, n_val:], Ys2[:, n_val:], both[:, :n_val], Ys2[:, :n_val], config.finetune_steps)
        d = (loss[:repeats] - loss[repeats:]).double()
        mean = float(d.mean())
        lower = mean - z * float(d.std()) / math.sqrt(repeats)
        remove = not lower > tolerance
        if remove:
            alive.discard(i)
            mask = trial_mask
        models = pair.half(0 if remove else 1)
        out.records.append(NodeRecord(i, step, "test", remove, single[i], mean, lower))
        step += 1
        if bar is not None:
            bar.update()
    out.kept = sorted(alive)
    out.recon_error = _recon_error(blocks, drop, [i for i in range(n_nodes) if i not in alive])
    out.seconds = {"order": t_order, "tests": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    return out


def _recon_error(blocks: list[Block], drop, removed: list[int]) -> float:
    """The KSG backend's ``recon_error`` for the kept nodes, so both backends report the same measure."""
    states = []
    for j, b in enumerate(blocks):
        gone = (drop[j] if drop is not None else torch.zeros(b.cov.shape[0], dtype=torch.bool)).clone()
        for i in removed:
            gone[b.columns[i]] = True
        states.append(_State(b, gone, 1e-9))
    return relative_error(states)
