"""Budgets: a fraction of the prunable nodes removed (``sparsity``) or of the dense MACs kept (``macs``).

A budget is met by searching the tolerance: one capture, then decision passes (each the same decisions as
an emergent run at that tolerance) in a geometric bisection for the smallest tolerance whose selection
meets the budget, so the criterion's own statistics decide which nodes go and how the budget spreads over
the groups. A node budget is then met exactly by giving back the removed nodes with the largest decision
statistics (closest to being kept; rule "budget" in the records).
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
    """One of ``sparsity`` (fraction of the prunable nodes removed) or ``macs`` (fraction of the dense MACs
    kept, as Torch-Pruning counts them)."""

    sparsity: float | None = None
    macs: float | None = None

    def __post_init__(self):
        if self.sparsity is not None and self.macs is not None:
            raise ValueError("give one budget: sparsity (fraction of nodes removed) or macs (fraction kept)")
        if self.sparsity is not None:
            check_number("sparsity", self.sparsity, 0, 1, "in (0, 1) (the fraction of prunable nodes removed)")
        if self.macs is not None:
            check_number("macs", self.macs, 0, 1, "in (0, 1) (the fraction of the dense MACs kept)")

    @property
    def given(self) -> bool:
        return self.sparsity is not None or self.macs is not None


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
    dense_macs = count_macs_params(cap.model, cap.example)[0] if budget.macs is not None else 0

    def measure(keep) -> float:  # how far the budget is met: >= 0 when it is
        if budget.sparsity is not None:
            return (1 - sum(len(v) for v in keep.values()) / total) - budget.sparsity
        assert budget.macs is not None
        sel = Selection(cap.structure, keep, cap.example)
        return budget.macs - count_macs_params(sel.apply(cap.model, fold=False), cap.example)[0] / dense_macs

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
