"""Greedy criteria without a statistical test: the least-squares screen (MIPP's closed-form order alone) and
ThiNet (Luo, Wu & Lin 2017). Both remove one node at a time, cheapest first, and serve as baselines at a
selection's per-group counts (``counts=``); the screen also decides by a tolerance in nats (the KSG
criterion with every node's Gaussian closed form taken as its information)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mipp.pruning.criteria.base import Criterion, Layer, LayerDecision
from mipp.pruning.criteria.lstsq import gaussian_scores, relative_error, states_of
from mipp.pruning.selection import NodeRecord
from mipp.pruning.validate import check_number


def _count(counts: dict[str, int] | None, layer: Layer) -> int:
    if counts is None or layer.name not in counts:
        raise ValueError(f"no count given for group {layer.name!r} (counts= holds {sorted(counts or {})})")
    return counts[layer.name]


@dataclass
class ScreenCriterion(Criterion):
    """Remove nodes greedily by the closed-form Delta (equivalently by the re-fitted reconstruction error
    ||W_i||^2 Var(x_i | rest) each removal adds), with the least-squares state's rank-one updates: until
    ``counts[group]`` nodes remain, or, without counts, while the cheapest node's Delta is below the
    tolerance (nats through a channel of ``noise`` times the consumers' pre-activation variance)."""

    name = "screen"
    unit = "nats"
    default_tolerance = 0.2

    counts: dict[str, int] | None = None
    noise: float = 0.01
    ridge: float = 1e-9

    def __post_init__(self):
        check_number("noise", self.noise, 0, math.inf, "> 0 (a fraction of the consumers' pre-activation variance)")
        check_number("ridge", self.ridge, 0, 1, "in [0, 1)", low_open=False)

    @property
    def fixed_counts(self) -> bool:
        return self.counts is not None

    def decide(self, layer: Layer, *, tolerance: float, min_keep: int, generator: torch.Generator, bar=None):
        n_keep = _count(self.counts, layer) if self.counts is not None else min(min_keep, layer.n_nodes)
        states = states_of(layer, self.ridge, self.noise, rows=False)
        out = LayerDecision(kept=[])
        alive = torch.arange(layer.n_nodes)  # a tensor: the scores index by it at every step
        while len(alive) > n_keep:
            scores = gaussian_scores(states, alive)
            j = int(scores.argmin())
            score = float(scores[j])
            if self.counts is None and not score < tolerance:
                break
            i = int(alive[j])
            alive = torch.cat((alive[:j], alive[j + 1 :]))
            for st in states:
                g = st.cols(i)
                if len(g):
                    st.remove(g)
            out.records.append(NodeRecord(i, len(out.records), "screen", True, score, score, score))
        left = alive.tolist()
        out.records += [
            NodeRecord(i, len(out.records) + n, "screen", False, *[math.nan] * 3) for n, i in enumerate(left)
        ]
        out.kept = sorted(left)
        out.recon_error = relative_error(states)
        return out


@dataclass
class ThiNetCriterion(Criterion):
    """ThiNet's greedy selection at given per-group ``counts``: remove, one at a time, the node whose removal
    adds least to the squared error of the consumers' outputs, E||sum_{i in removed} W_i x_i||^2 (second
    moments of the captured features, every output position)."""

    name = "thinet"
    unit = "squared error"
    default_tolerance = 0.0
    nats = False

    counts: dict[str, int] | None = None

    @property
    def fixed_counts(self) -> bool:
        return True

    def decide(self, layer: Layer, *, tolerance: float, min_keep: int, generator: torch.Generator, bar=None):
        n_keep = _count(self.counts, layer)
        n_nodes = layer.n_nodes
        gram = torch.zeros(n_nodes, n_nodes, dtype=torch.float64)
        for b, drop in zip(layer.blocks, layer.drops):
            second = b.cov + torch.outer(b.mean, b.mean)  # E[x x^T]
            second = second * ~drop[:, None] * ~drop[None, :]
            owner = torch.zeros(second.shape[0], n_nodes, dtype=torch.float64)  # feature column -> node
            for i, cols in enumerate(b.columns):
                owner[cols, i] = 1.0
            gram += owner.T @ ((b.weight.T @ b.weight) * second) @ owner  # sum over outputs of W_a W_b x_a x_b
        cross = torch.zeros(n_nodes, dtype=torch.float64)  # sum over removed r of gram[r, :]
        alive = list(range(n_nodes))
        records: list[NodeRecord] = []
        while len(alive) > n_keep:
            cand = torch.tensor(alive)
            cost = 2 * cross[cand] + gram[cand, cand]
            j = int(cost.argmin())
            i = alive.pop(j)
            records.append(NodeRecord(i, len(records), "thinet", True, float(cost[j]), float(cost[j]), float(cost[j])))
            cross += gram[i]
        records += [NodeRecord(i, len(records) + n, "thinet", False, *[math.nan] * 3) for n, i in enumerate(alive)]
        return LayerDecision(sorted(alive), records)
