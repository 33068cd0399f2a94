"""Budgets: a fraction of the prunable nodes removed (``sparsity``) or of the dense MACs kept (``macs``).

Criteria whose costs are nats (KSG, the screen) meet a budget by one ranking and one cut
(:func:`allocate`): every group's nodes are removed in the criterion's greedy order, each with the
information it adds when it goes (its cost), which gives per group a cumulative cost curve C_g(r) for r
nodes removed; the counts minimise sum_g C_g(r_g) under the budget (a Lagrangian: each group removes
argmin_r C_g(r) - lambda x (what r removals save), lambda bisected), with MACs counted per layer as
Torch-Pruning counts them. With the tolerance channel at the model's output the costs of all groups are in
one currency, so the cut is one threshold on output nats.

Other criteria (the loss criterion: costs are fractions of each layer's own target) meet a budget by
searching the tolerance (:func:`search_tolerance`): decision passes in a geometric bisection for the
smallest tolerance whose selection meets the budget; a node budget is then met exactly by giving back the
removed nodes with the largest decision statistics (rule "budget" in the records).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from mipp.pruning.criteria.base import Criterion
from mipp.pruning.selection import LayerResult, Selection
from mipp.pruning.validate import check_number


@dataclass(frozen=True)
class Budget:
    """One of ``sparsity`` (fraction of the prunable nodes removed) or ``macs_removed`` (fraction of the dense
    MACs removed, as Torch-Pruning counts them): both fractions removed, as Torch-Pruning's ``pruning_ratio``."""

    sparsity: float | None = None
    macs_removed: float | None = None

    def __post_init__(self):
        if self.sparsity is not None and self.macs_removed is not None:
            raise ValueError("give one budget: sparsity (fraction of nodes removed) or macs_removed (of the MACs)")
        if self.sparsity is not None:
            check_number("sparsity", self.sparsity, 0, 1, "in (0, 1) (the fraction of prunable nodes removed)")
        if self.macs_removed is not None:
            check_number("macs_removed", self.macs_removed, 0, 1, "in (0, 1) (the fraction of the dense MACs removed)")

    @property
    def given(self) -> bool:
        return self.sparsity is not None or self.macs_removed is not None


Pass = Callable[[float], tuple[dict[str, torch.Tensor], dict[str, LayerResult]]]


def search_tolerance(
    cap, run_pass: Pass, criterion: Criterion, budget: Budget, tolerance: float, min_keep: int, progress: bool
):
    """Bisection over the tolerance for the smallest one whose selection (``run_pass(tolerance)`` -> (keep,
    results)) meets ``budget``. Returns (keep, results, tolerance found, passes run)."""
    from mipp.pruning.report import count_macs_params

    groups = cap.structure.prunable
    total = sum(cap.structure.groups[n].n_nodes for n in groups)
    floor = sum(min(min_keep, cap.structure.groups[n].n_nodes) for n in groups)
    dense_macs = count_macs_params(cap.model, cap.example)[0] if budget.macs_removed is not None else 0

    def measure(keep) -> float:  # how far the budget is met: >= 0 when it is
        if budget.sparsity is not None:
            return (1 - sum(len(v) for v in keep.values()) / total) - budget.sparsity
        assert budget.macs_removed is not None
        sel = Selection(cap.structure, keep, cap.example)
        kept = count_macs_params(sel.apply(cap.model, fold=False), cap.example)[0] / dense_macs
        return (1 - kept) - budget.macs_removed

    if budget.sparsity is not None and budget.sparsity > 1 - floor / total:
        raise ValueError(
            f"sparsity={budget.sparsity} removes more than the {1 - floor / total:.4f} of the nodes that "
            f"min_keep={min_keep} allows"
        )
    bar = tqdm(desc="MIPP budget search", file=sys.stderr, disable=not progress, leave=False)
    passes, lo, hi, best = 0, None, None, None

    def attempt(t):
        nonlocal passes, best, lo, hi
        keep, results = run_pass(t)
        passes += 1
        bar.update()
        met = measure(keep)
        if met >= 0:
            hi, best = t, (keep, results, t)
        else:
            lo = t
        return met

    start, precision = criterion.search_start, criterion.search_precision
    try:
        t = tolerance if (tolerance > 0 or criterion.search_from_zero) else start
        if attempt(t) >= 0:  # bracket: shrink until the budget is no longer met
            while lo is None and t > 1e-6:
                t /= 4
                attempt(t)
        else:  # or grow until it is
            while hi is None:
                if t > 1e4:
                    raise ValueError(
                        f"the budget cannot be met with min_keep={min_keep} (the smallest model MIPP can reach "
                        "still exceeds it)"
                    )
                t = max(t * 4, start)
                attempt(t)
        while lo is not None and hi is not None and hi > precision * lo and hi > 1e-6:  # geometric, from lo = 0: /4
            if attempt(math.sqrt(lo * hi) if lo > 0 else hi / 4) == 0:
                break
    finally:
        bar.close()
    assert best is not None
    keep, results, tol = best
    if budget.sparsity is not None:
        keep = restore(keep, results, round(budget.sparsity * total))
    return keep, results, tol, passes


def restore(keep, results, n_remove: int):
    """Meet a node budget exactly: give back the removed nodes whose decision statistic was largest (closest
    to being kept; ties by the ordering score), until ``n_remove`` remain removed."""
    removed = [
        (
            r.statistic if not math.isnan(r.statistic) else 0.0,
            r.score if not math.isnan(r.score) else 0.0,
            name,
            r.node,
        )
        for name, res in results.items()
        for r in res.records
        if r.removed
    ]
    extra = len(removed) - n_remove
    if extra <= 0:
        return keep
    back: dict[str, list[int]] = {}
    for _, _, name, node in sorted(removed, reverse=True)[:extra]:
        back.setdefault(name, []).append(node)
    out = dict(keep)
    for name, nodes in back.items():
        out[name] = torch.cat([keep[name], torch.tensor(nodes, dtype=torch.long)]).sort().values
        for r in results[name].records:
            if r.node in nodes:
                r.removed, r.rule = False, "budget"
        results[name].n_after = len(out[name])
    return out


def cost_curves(results: dict[str, LayerResult]) -> dict[str, list[tuple[int, float]]]:
    """Per group, (node, cost) of its removals in the order they were made (nats; untested removals of
    constants and exact combinations cost 0)."""
    out = {}
    for name, res in results.items():
        removed = sorted((r for r in res.records if r.removed), key=lambda r: r.step)
        out[name] = [(r.node, 0.0 if math.isnan(r.statistic) else max(r.statistic, 0.0)) for r in removed]
    return out


class MacModel:
    """MACs of the model as a function of each group's kept fraction: Torch-Pruning's per-layer counts, a
    layer scaled by the kept fraction of the group whose channels it produces (or carries: batch norms,
    depthwise convolutions) and of the group whose channels it reads."""

    def __init__(self, model, example, structure):
        from mipp.pruning.capture import slice_batch
        from mipp.pruning.structure import eval_mode, load_torch_pruning

        with eval_mode(model), torch.no_grad():
            _, _, per_layer, _ = load_torch_pruning().utils.count_ops_and_params(
                model, slice_batch(example, 1), layer_wise=True
            )
        self.n_nodes = {g.name: g.n_nodes for g in structure.groups.values()}
        names = {m: n for n, m in model.named_modules()}
        leaf = {names[m]: float(v) for m, v in per_layer.items() if m in names and not list(m.children())}
        self.fixed = sum(leaf.values())
        self.terms: list[tuple[float, str | None, str | None]] = []  # (macs, out group, in group)
        out_of: dict[str, str] = {}
        in_of: dict[str, str] = {}
        # a layer's output channels belong to the group that produces them; a group's other members (norms,
        # depthwise convolutions) carry its channels unless they produce another group's (a residual stream
        # lists the layers that read it among its members: their outputs are their own groups')
        for g in structure.groups.values():
            for m in g.producers:
                out_of[m] = g.name
            for c in g.consumers:
                in_of[c.name] = g.name
        for g in structure.groups.values():
            for m in g.members:
                out_of.setdefault(m, g.name)
        for name, macs in leaf.items():
            o, i = out_of.get(name), in_of.get(name)
            if i is not None and o == i:  # a consumer is listed among its group's members too
                o = None
            if o is not None or i is not None:
                self.terms.append((macs, o, i))
                self.fixed -= macs
        self.total = self.fixed + sum(m for m, _, _ in self.terms)

    def macs(self, kept: dict[str, float]) -> float:
        """MACs when group g keeps the fraction kept[g] of its nodes (1 for groups not named)."""

        def frac(g: str | None) -> float:
            return 1.0 if g is None else kept.get(g, 1.0)

        return self.fixed + sum(m * frac(o) * frac(i) for m, o, i in self.terms)

    def per_node(self) -> dict[str, float]:
        """First-order MACs saved per node removed from each group."""
        out = {name: 0.0 for name in self.n_nodes}
        for m, o, i in self.terms:
            for g in (o, i):
                if g is not None:
                    out[g] += m / self.n_nodes[g]
        return out


def node_units(names: list[str], budget: Budget, macs: MacModel | None) -> dict[str, float]:
    """What removing one node of each group saves in the budget's unit: 1 for a node budget, the group's
    first-order MACs per node for a MAC budget (floored above 0)."""
    if budget.macs_removed is None:
        return {g: 1.0 for g in names}
    assert macs is not None
    per_node = macs.per_node()
    return {g: max(per_node[g], 1e-300) for g in names}


def allocate(
    curves: dict[str, list[tuple[int, float]]],
    n_nodes: dict[str, int],
    budget: Budget,
    min_keep: int,
    macs: MacModel | None = None,
) -> dict[str, int]:
    """Nodes to remove per group, minimising the summed costs under ``budget`` (module docstring)."""
    names = list(curves)
    limit = {g: min(len(curves[g]), max(n_nodes[g] - min_keep, 0)) for g in names}
    cum = {g: torch.tensor([0.0] + [c for _, c in curves[g][: limit[g]]], dtype=torch.float64).cumsum(0) for g in names}
    if budget.sparsity is not None:
        total = sum(n_nodes.values())
        need = round(budget.sparsity * total)
        if need > sum(limit.values()):
            raise ValueError(
                f"sparsity={budget.sparsity} removes more than the {sum(limit.values()) / total:.4f} of the nodes "
                f"that min_keep={min_keep} allows"
            )
        saved = lambda r: float(sum(r.values()))
    else:
        assert macs is not None and budget.macs_removed is not None
        need = macs.total * budget.macs_removed
        saved = lambda r: macs.total - macs.macs({g: 1 - r[g] / n_nodes[g] for g in names})
    unit = node_units(names, budget, macs)

    def counts(lam: float) -> dict[str, int]:
        return {g: int((cum[g] - lam * unit[g] * torch.arange(len(cum[g]))).argmin()) for g in names}

    lo, hi = 0.0, 1.0
    while saved(counts(hi)) < need:
        if hi > 1e300:
            raise ValueError(
                f"the budget cannot be met with min_keep={min_keep} (the smallest model that can be reached "
                "still exceeds it)"
            )
        hi *= 4
    for _ in range(200):  # the smallest lambda that meets the budget
        mid = (lo + hi) / 2
        if saved(counts(mid)) >= need:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * hi:
            break
    r = counts(hi)
    # a node budget exactly: give back the removals whose marginal cost per unit is largest while it holds
    while True:
        best = None
        for g in names:
            if r[g] > 0:
                marginal = float(cum[g][r[g]] - cum[g][r[g] - 1]) / unit[g]
                trial = {**r, g: r[g] - 1}
                if saved(trial) >= need and (best is None or marginal > best[0]):
                    best = (marginal, g)
        if best is None:
            return r
        r[best[1]] -= 1


def refine(
    curves: dict[str, list[tuple[int, float]]],
    n_nodes: dict[str, int],
    budget: Budget,
    min_keep: int,
    macs: MacModel | None,
    loss: Callable[[dict[str, int]], float],
    evaluations: int,
    progress: bool = False,
) -> tuple[dict[str, int], dict[str, float]]:
    """An end-to-end search over the allocation (SPDY-style: per-group sensitivity coefficients, every
    candidate the optimal cut of re-weighted cost curves, so every candidate meets ``budget``), judged by
    ``loss(removed)`` (the calibration loss of the model pruned with those counts) in at most
    ``evaluations`` calls.

    Candidates: the cut of the curves exp(theta_g) [(1 - mu) C_g(r) / C + mu U_g(r) / U], where U_g(r) =
    u_g r^2 / n_g (u_g: what one node of g saves, 1 for a node budget) is the curve whose cut removes the same
    fraction of every group (uniform counts, up to rounding), and C, U the totals that put both on one scale.
    The search starts from the better of mu = 0 (the one-shot allocation) and mu = 1 (uniform), then moves
    one coordinate (mu, or one group's theta) at a time, keeping a move only when the loss falls and halving
    the steps when none does: the result's loss is never above either start's. Returns (removed per group,
    the losses of the one-shot and uniform starts and of the result)."""
    if evaluations < 2:
        raise ValueError(f"refine needs 2 evaluations or more (the one-shot and the uniform starts), got {evaluations}")
    names = list(curves)
    unit = node_units(names, budget, macs)
    cost_total = sum(c for g in names for _, c in curves[g]) or 1.0
    quad = {g: [unit[g] * (2 * r + 1) / n_nodes[g] for r in range(len(curves[g]))] for g in names}
    quad_total = sum(sum(q) for q in quad.values()) or 1.0
    seen: dict[tuple, float] = {}
    bar = tqdm(total=evaluations, desc="MIPP allocation refinement", file=sys.stderr, disable=not progress, leave=False)

    def cut(theta: dict[str, float], mu: float) -> dict[str, int]:
        mixed = {
            g: [
                (node, math.exp(theta[g]) * ((1 - mu) * max(c, 0.0) / cost_total + mu * q / quad_total))
                for (node, c), q in zip(curves[g], quad[g])
            ]
            for g in names
        }
        return allocate(mixed, n_nodes, budget, min_keep, macs)

    def judge(removed: dict[str, int]) -> float | None:
        key = tuple(removed[g] for g in names)
        if key not in seen:
            if len(seen) >= evaluations:
                return None
            seen[key] = loss(removed)
            bar.update()
        return seen[key]

    try:
        theta = {g: 0.0 for g in names}
        starts = {"one-shot": cut(theta, 0.0), "uniform": cut(theta, 1.0)}
        losses: dict[str, float] = {}
        for k, r in starts.items():  # two evaluations at most: both are judged
            got = judge(r)
            assert got is not None
            losses[k] = got
        start = "one-shot" if losses["one-shot"] <= losses["uniform"] else "uniform"
        mu, best, best_loss = (0.0 if start == "one-shot" else 1.0), starts[start], losses[start]
        step, mu_step = 1.0, 0.25
        while step >= 1 / 16 and len(seen) < evaluations:
            moved = False
            moves = [("mu", s * mu_step) for s in (-1, 1)] + [(g, s * step) for g in names for s in (1, -1)]
            for what, delta in moves:
                t, m = dict(theta), mu
                if what == "mu":
                    m = min(max(mu + delta, 0.0), 1.0)
                    if m == mu:
                        continue
                else:
                    t[what] += delta
                removed = cut(t, m)
                trial = judge(removed)
                if trial is None:  # out of evaluations
                    break
                if trial < best_loss:
                    theta, mu, best, best_loss, moved = t, m, removed, trial, True
            if not moved:
                step, mu_step = step / 2, mu_step / 2
    finally:
        bar.close()
    losses["refined"] = best_loss
    return best, losses
