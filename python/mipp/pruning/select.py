"""MIPP node selection with KSG estimates (see DESIGN.md, "The MIPP pruner").

Layers are visited from the last hidden layer back to the first, so that the kept nodes of a layer's
consumers are known when the layer is pruned: X = the layer's node activations (a conv channel reduced
over space), Y = the kept nodes of its consumers (the network output for the last hidden layer). A node
is removed when the permutation test of I(X_i; Y | X_rest) is not significant at level ``alpha``.

Every estimate z-scores its columns (``normalize=True``): the max-norm would otherwise let the channel
with the widest range decide all neighbourhoods.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

import mipp
from mipp.pruning.graph import ModelPlan, build_plan, first_batch, record
from mipp.pruning.surgery import apply_keep, check_keep, mask_keep


def principal_components(x: torch.Tensor, m: int | None) -> torch.Tensor:
    """The first ``m`` principal component scores of the z-scored columns of ``x`` (x itself when it has
    at most m columns or m is None). KSG loses power as dimensions grow; this keeps the leading ones."""
    if m is None or x.shape[1] <= m:
        return x
    centred = x - x.mean(dim=0)
    std = centred.std(dim=0)
    centred = centred / torch.where(std > 0, std, torch.ones_like(std))
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    return u[:, :m] * s[:m]


def _zscored(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(dim=0)
    std = centred.std(dim=0)
    return centred / torch.where(std > 0, std, torch.ones_like(std))


def local_permutations(z: torch.Tensor, n_permutations: int, k_perm: int,
                       generator: torch.Generator) -> torch.Tensor:
    """(n_permutations, N) sample indices that shuffle samples only among neighbours in z.

    The test of I(x; y | z) = 0 needs surrogates that keep the dependence of x on z and break only the
    one of x on y given z; a global shuffle breaks both, and then a node that is a function of the
    others (a duplicate, a linear combination) scores above its surrogates (whose KSG estimate is biased
    below 0) and is wrongly kept. This is Runge's (2018) nearest-neighbour permutation: samples are
    visited in random order and each takes, among its k_perm nearest neighbours in z (max-norm on
    z-scored columns), a random one not yet taken, or any of them when all are taken (a near
    permutation: about one sample in ten is reused at k_perm=5). Batched over the surrogates: the loop runs over the N samples, not over N * P."""
    n = z.shape[0]
    k_perm = min(k_perm, n - 1)
    d = torch.cdist(_zscored(z)[None], _zscored(z)[None], p=float("inf"))[0]
    d.fill_diagonal_(float("inf"))
    neighbours = d.topk(k_perm, dim=1, largest=False).indices                     # (N, k_perm)
    P = n_permutations
    order = torch.rand(P, n, generator=generator).argsort(dim=1)                   # visiting order
    priority = torch.rand(P, n, k_perm, generator=generator)                       # random choice
    taken = torch.zeros(P, n, dtype=torch.bool)
    perm = torch.empty(P, n, dtype=torch.long)
    rows = torch.arange(P)
    for t in range(n):
        i = order[:, t]                                                            # (P,)
        cand = neighbours[i]                                                       # (P, k_perm)
        free = ~taken.gather(1, cand)
        score = priority[rows, i] + free.to(priority.dtype)                        # free ones first
        choice = cand.gather(1, score.argmax(dim=1, keepdim=True))[:, 0]
        perm[rows, i] = choice
        taken[rows, choice] = True
    return perm


@dataclass
class LayerResult:
    name: str
    n_before: int
    n_after: int
    mi_before: float      # I(X_all; Y), nats
    mi_kept: float        # I(X_kept; Y), nats
    y_dims: int           # columns of Y as tested (after projection)
    p_values: dict[int, float] = field(default_factory=dict)   # node -> p-value (or lower bound) when tested
    seconds: dict[str, float] = field(default_factory=dict)    # where the time went
    n_tests: int = 0
    n_surrogates: int = 0   # surrogate estimates evaluated (early stopping makes this < n_tests * P)


class Selection:
    """The result of :meth:`MIPP.select`: ``keep`` maps module names to kept output-node indices."""

    def __init__(self, plan: ModelPlan, keep: dict[str, torch.Tensor],
                 layers: dict[str, LayerResult] | None = None, seconds_capture: float = 0.0):
        self.plan = plan
        self.keep = check_keep(plan, keep)
        self.layers = layers or {}
        self.seconds_capture = seconds_capture

    def apply(self, model: nn.Module) -> nn.Module:
        """A new, physically smaller model with the same forward API; ``model`` is untouched."""
        return apply_keep(model, self.plan, self.keep)

    def mask(self, model: nn.Module) -> nn.Module:
        """torch.nn.utils.prune structured masks of this selection, applied to ``model`` in place."""
        return mask_keep(model, self.plan, self.keep)

    def with_keep(self, keep: dict[str, torch.Tensor]) -> "Selection":
        """Another selection on the same model (a baseline at the same sparsity, for instance)."""
        return Selection(self.plan, keep)

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(idx) for name, idx in self.keep.items()}

    def report(self, model: nn.Module | None = None, example: torch.Tensor | None = None) -> str:
        from mipp.pruning.report import format_report
        return format_report(self, model, example)

    def plot(self, path: str, model: nn.Module | None = None, example: torch.Tensor | None = None) -> str:
        from mipp.pruning.report import plot_selection
        return plot_selection(self, path, model, example)


@dataclass
class MIPP:
    """Mutual Information Preserving Pruning with exact KSG estimates.

    k: neighbours of the KSG / Frenzel-Pompe estimators. alpha: level of each node's permutation test.
    n_permutations: surrogates per test (the test is decided exactly, but stops as soon as the
    exceedances make significance impossible). k_perm: neighbours in X_rest among which a conditional
    surrogate shuffles X_i (see local_permutations). n_samples: activations used (N). min_keep: nodes never
    removed from a layer. reduce: "mean" or "max" of a conv channel over space.
    direction: "backward" (eliminate, the paper's order) or "forward" (add nodes by CMI until the next
    one is not significant). y_components / z_components: project Y / the conditioning set X_rest onto
    their leading principal components when wider (None: never).
    seed: the permutations' generator. progress: tqdm bars on stderr.
    """
    k: int = 3
    alpha: float = 0.05
    n_permutations: int = 100
    n_samples: int = 2000
    min_keep: int = 1
    reduce: str = "mean"
    direction: str = "backward"
    y_components: int | None = None
    z_components: int | None = None
    k_perm: int = 5
    permutation_block: int = 25
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.max_exceedances < 0:
            raise ValueError(f"n_permutations={self.n_permutations} cannot reach p <= alpha={self.alpha}: "
                             f"use at least {math.ceil(1 / self.alpha) - 1}")
        if self.direction not in ("backward", "forward"):
            raise ValueError(f'direction must be "backward" or "forward", got {self.direction!r}')
        if self.min_keep < 1:
            raise ValueError(f"min_keep must be >= 1 (a layer with no node disconnects the network), "
                             f"got {self.min_keep}")

    @property
    def max_exceedances(self) -> int:
        """The largest number b of surrogates >= the estimate with p = (1 + b) / (P + 1) <= alpha."""
        return math.floor(self.alpha * (self.n_permutations + 1) + 1e-9) - 1

    # -- the test ---------------------------------------------------------------------------------------
    def _test(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None, gen: torch.Generator,
              res: LayerResult) -> tuple[bool, float]:
        """Permutation test of I(x; y | z) > 0 (z None: I(x; y)). Surrogates run in blocks; the test stops
        when more than ``max_exceedances`` surrogates reach the estimate: the decision is the one the full
        test would take, the returned p-value is then a lower bound."""
        exceed, done = 0, 0
        res.n_tests += 1
        while done < self.n_permutations:
            block = min(self.permutation_block, self.n_permutations - done)
            if z is None:
                r = mipp.permutation_test(x, y, None, self.k, n_permutations=block, generator=gen,
                                          normalize=True)
                estimate, null = r.estimate, r.null
            else:
                # data and surrogates in one batched call; y and z are shared by all of them
                perm = local_permutations(z, block, self.k_perm, gen)
                xs = torch.cat([x[None], x[perm]])[..., None]
                stats = mipp.cmi(xs, y, z, self.k, normalize=True)
                estimate, null = stats[0], stats[1:]
            exceed += int((null >= estimate).sum())
            done += block
            res.n_surrogates += block
            if exceed > self.max_exceedances:
                return False, (1 + exceed) / (self.n_permutations + 1)
        return True, (1 + exceed) / (self.n_permutations + 1)

    def _condition(self, X: torch.Tensor, S: list[int]) -> torch.Tensor | None:
        return principal_components(X[:, S], self.z_components) if S else None

    # -- one layer --------------------------------------------------------------------------------------
    def select_layer(self, X: torch.Tensor, Y: torch.Tensor, gen: torch.Generator | None = None,
                     name: str = "layer", bar: tqdm | None = None) -> tuple[list[int], LayerResult]:
        """Kept node indices (sorted) of a layer with activations X (N, D) for target Y (N, dy)."""
        gen = gen if gen is not None else torch.Generator().manual_seed(self.seed)
        D = X.shape[1]
        Y = principal_components(Y, self.y_components)
        res = LayerResult(name, D, D, float("nan"), float("nan"), Y.shape[1])
        t0 = time.perf_counter()
        # A constant node carries no information (every surrogate equals the data): drop it untested,
        # unless min_keep needs it.
        constant = [i for i in range(D) if bool((X[:, i] == X[0, i]).all())]
        varying = [i for i in range(D) if i not in constant]
        if len(varying) < self.min_keep:
            varying = varying + constant[: self.min_keep - len(varying)]
        mi_each = mipp.mi_per_feature(X[:, varying], Y, self.k, normalize=True)
        res.seconds["order"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if bar is not None:
            bar.reset(total=len(varying))
            bar.set_description(name)
        if self.direction == "backward":
            kept = self._backward(X, Y, [varying[j] for j in mi_each.argsort().tolist()], gen, res, bar)
        else:
            kept = self._forward(X, Y, varying, mi_each, gen, res, bar)
        res.seconds["tests"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        kept = sorted(kept)
        res.n_after = len(kept)
        res.mi_before = float(mipp.mi(X, Y, self.k, normalize=True))
        res.mi_kept = float(mipp.mi(X[:, kept], Y, self.k, normalize=True))
        res.seconds["report_mi"] = time.perf_counter() - t0
        return kept, res

    def _backward(self, X, Y, order, gen, res, bar):
        kept = list(order)
        for i in order:
            if len(kept) <= self.min_keep:
                break
            rest = [j for j in kept if j != i]
            significant, p = self._test(X[:, i], Y, self._condition(X, rest), gen, res)
            res.p_values[i] = p
            if not significant:
                kept.remove(i)
            if bar is not None:
                bar.update()
        return kept

    def _forward(self, X, Y, candidates, mi_each, gen, res, bar):
        kept: list[int] = []
        remaining = list(candidates)
        score = mi_each.clone()
        while remaining:
            best = remaining[int(score.argmax())]
            significant, p = self._test(X[:, best], Y, self._condition(X, kept), gen, res)
            res.p_values[best] = p
            if bar is not None:
                bar.update()
            if not significant and len(kept) >= self.min_keep:
                break
            kept.append(best)
            remaining.remove(best)
            if remaining:
                # every remaining candidate's CMI given the new set, one batched call (Z shared)
                xs = X[:, remaining].T.unsqueeze(-1)
                score = mipp.cmi(xs, Y, self._condition(X, kept), self.k, normalize=True)
        return kept

    # -- the model --------------------------------------------------------------------------------------
    def select(self, model: nn.Module, inputs) -> Selection:
        """Select the nodes to keep in every prunable layer of ``model`` from activations on ``inputs`` (a
        tensor of inputs or an iterable of batches such as a DataLoader; the first n_samples are used)."""
        t0 = time.perf_counter()
        gm, plan = build_plan(model, first_batch(inputs))
        wanted = {plan.output} | {lp.observe for lp in plan.layers.values()}
        acts = record(gm, inputs, wanted, self.n_samples, self.reduce)
        n = acts[plan.output].shape[0]
        if n <= self.k + 1:
            raise ValueError(f"got {n} samples from inputs; MIPP needs many more than k={self.k} (n_samples="
                             f"{self.n_samples})")
        seconds_capture = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(self.seed)
        keep: dict[str, torch.Tensor] = {}
        results: dict[str, LayerResult] = {}
        order = list(reversed(plan.prunable))
        outer = tqdm(order, desc="MIPP layers", file=sys.stderr, disable=not self.progress, leave=False)
        inner = tqdm(total=0, desc="nodes", file=sys.stderr, disable=not self.progress, leave=False)
        try:
            for name in outer:
                lp = plan.layers[name]
                X = acts[lp.observe]
                kept, res = self.select_layer(X, self._target(plan, acts, name, keep), gen, name, inner)
                keep[name] = torch.tensor(kept, dtype=torch.long)
                results[name] = res
        finally:
            inner.close()
            outer.close()
        return Selection(plan, keep, results, seconds_capture)

    @staticmethod
    def _target(plan: ModelPlan, acts: dict[str, torch.Tensor], name: str,
                keep: dict[str, torch.Tensor]) -> torch.Tensor:
        """Y of a layer: the (kept) observed activations of each consumer, side by side."""
        parts = []
        for consumer in plan.layers[name].consumers:
            q = plan.layers[consumer.name]
            value = acts[q.observe]
            parts.append(value[:, keep[q.name]] if q.name in keep else value)
        return torch.cat(parts, dim=1)
