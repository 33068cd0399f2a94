"""MIPP node selection with KSG estimates (see DESIGN.md, "The MIPP pruner").

Layers are visited from the last hidden layer back to the first, so that the kept nodes of a layer's
consumers are known when the layer is pruned: X = the layer's node activations (a conv channel reduced
over space), Y = the kept nodes of its consumers (the network output for the last hidden layer). A node
is removed when the permutation test of I(X_i; Y | X_rest) is not significant at level ``alpha``.

Every estimate z-scores its columns (``normalize=True``): the max-norm would otherwise let the channel
with the widest range decide all neighbourhoods. Two cases are decided exactly, without a test: a constant
node, and a node that is an exact affine function of the nodes it is tested against (AFFINE_TOL), whose
conditional MI is 0 but whose KSG estimate lies above its surrogates (tests/test_pruning.py measures it).
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
from mipp.ksg import _zscore, local_permutations
from mipp.pruning.graph import ModelPlan, build_plan, consumer_sources, first_batch, record, trace
from mipp.pruning.surgery import apply_keep, check_keep, mask_keep


def principal_components(x: torch.Tensor, m: int | None) -> torch.Tensor:
    """The first ``m`` principal component scores of the z-scored columns of ``x`` (x itself when it has
    at most m columns or m is None). KSG loses power as dimensions grow; this keeps the leading ones."""
    if m is None or x.shape[1] <= m:
        return x
    u, s, _ = torch.linalg.svd(_zscore(x), full_matrices=False)
    return u[:, :m] * s[:m]


# A node whose least-squares residual on the other nodes (and a constant) is below this fraction of its
# centred norm is treated as an exact affine function of them. float32 activations carry about 6e-8 relative
# rounding per operation, and sums of thousands of terms stay below 1e-6; the nodes of the LeNet layers in
# the experiment, trained or not, are all above 0.2 (measured), so the rule only meets true identities.
AFFINE_TOL = 1e-5


def affine_residuals(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(m,) for x (N, m) and z (N, d): each column's least-squares residual on z's columns and a constant,
    relative to its centred norm; 0 for an exact affine function of z. Rank-deficient z (duplicated nodes)
    is fine: only z's singular directions above 1e-9 of the largest are used."""
    u, s, _ = torch.linalg.svd(_zscore(z), full_matrices=False)
    u = u[:, s > s[0] * 1e-9]
    centred = x - x.mean(dim=0)
    residual = centred - u @ (u.T @ centred)
    return residual.norm(dim=0) / centred.norm(dim=0).clamp_min(torch.finfo(x.dtype).tiny)


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
    """The result of :meth:`MIPP.select`: ``keep`` maps module names to kept output-node indices; ``means``
    maps the consumers' input fx nodes to their sample means on the model the selection was made on."""

    def __init__(self, plan: ModelPlan, keep: dict[str, torch.Tensor],
                 layers: dict[str, LayerResult] | None = None, seconds_capture: float = 0.0,
                 means: dict[str, torch.Tensor] | None = None):
        self.plan = plan
        self.keep = check_keep(plan, keep)
        self.layers = layers or {}
        self.seconds_capture = seconds_capture
        self.means = means

    def means_for(self, fold: bool) -> dict[str, torch.Tensor] | None:
        """The recorded means when ``fold`` (an error when there are none), else None."""
        if fold and self.means is None:
            raise ValueError("fold=True needs the consumers' mean inputs: use selection.record_means(model, "
                             "inputs) first, or fold=False")
        return self.means if fold else None

    def apply(self, model: nn.Module, fold: bool = True) -> nn.Module:
        """A new, physically smaller model with the same forward API; ``model`` is untouched. ``fold``: add
        the removed nodes' mean contribution to the consumers' biases (surgery.fold_means); ``model`` must
        then be the one whose means were recorded."""
        return apply_keep(model, self.plan, self.keep, self.means_for(fold))

    def mask(self, model: nn.Module, fold: bool = True) -> nn.Module:
        """torch.nn.utils.prune structured masks of this selection, applied to ``model`` in place (with
        ``fold``, the consumers' biases are folded in place too)."""
        return mask_keep(model, self.plan, self.keep, self.means_for(fold))

    def with_keep(self, keep: dict[str, torch.Tensor]) -> "Selection":
        """Another selection on the same model (a baseline at the same sparsity, for instance)."""
        return Selection(self.plan, keep, means=self.means)

    def record_means(self, model: nn.Module, inputs, n_samples: int = 2000) -> "Selection":
        """This selection with the consumers' mean inputs recorded on ``model`` (first n_samples inputs)."""
        _, means = record(trace(model), inputs, set(), n_samples, "mean", consumer_sources(self.plan))
        return Selection(self.plan, self.keep, self.layers, self.seconds_capture, means)

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
    surrogate shuffles X_i (see mipp.ksg.local_permutations). n_samples: activations used (N). min_keep: nodes never
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
        # all conditional surrogates drawn at once: drawing them is a loop over the N samples whatever
        # their number, so one draw per test costs a quarter of one per block (measured; it dominated)
        perms = None if z is None else local_permutations(z, self.n_permutations, self.k_perm, gen,
                                                              normalize=True)
        while done < self.n_permutations:
            block = min(self.permutation_block, self.n_permutations - done)
            if z is None:
                r = mipp.permutation_test(x, y, None, self.k, n_permutations=block, generator=gen,
                                          normalize=True)
                estimate, null = r.estimate, r.null
            else:
                # data and surrogates in one batched call; y and z are shared by all of them
                xs = torch.cat([x[None], x[perms[done:done + block]]])[..., None]
                stats = mipp.cmi(xs, y, z, self.k, normalize=True)
                estimate, null = stats[0], stats[1:]
            exceed += int((null >= estimate).sum())
            done += block
            res.n_surrogates += block
            if exceed > self.max_exceedances:
                return False, (1 + exceed) / (self.n_permutations + 1)
        return True, (1 + exceed) / (self.n_permutations + 1)

    @staticmethod
    def _affine(X: torch.Tensor, candidates: list[int], S: list[int]) -> list[bool]:
        """Which candidates are exact affine functions of the nodes S (never with N <= |S| + 1 samples,
        where every column is one). Such a node carries nothing beyond S: I(X_i; Y | X_S) = 0 exactly,
        but KSG's estimate of it exceeds its surrogates (a deterministic sum tightens the joint
        neighbourhoods, a shuffled one less), so the test would keep it."""
        if not S or X.shape[0] <= len(S) + 1:
            return [False] * len(candidates)
        return (affine_residuals(X[:, candidates], X[:, S]) < AFFINE_TOL).tolist()

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
            if self._affine(X, [i], rest)[0]:
                significant, p = False, 1.0
            else:
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
            dependent = self._affine(X, remaining, kept)
            res.p_values.update({j: 1.0 for j, d in zip(remaining, dependent) if d})
            remaining = [j for j, d in zip(remaining, dependent) if not d]
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
        acts, means = record(gm, inputs, wanted, self.n_samples, self.reduce, consumer_sources(plan))
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
        return Selection(plan, keep, results, seconds_capture, means)

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
