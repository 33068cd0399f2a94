"""The one traversal: capture a model's consumer statistics once, then visit the prunable groups from the
output back to the input and let a decision function choose each group's kept nodes.

For each group the target is what its consumers compute: their pre-activations restricted to the outputs
that are kept (a consumer that is itself pruned was decided first, since groups are visited in reverse
execution order) and without the input channels removed by groups already decided. :class:`Cuts` is the
record of those removed channels; the re-fit (mipp.pruning.refit) reads the same record.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from mipp.pruning.capture import (
    batch_size,
    capture,
    channel_columns,
    flat_weight,
    kernel_size,
    materialise,
    slice_batch,
)
from mipp.pruning.criteria.base import Layer, LayerDecision
from mipp.pruning.criteria.lstsq import Block
from mipp.pruning.selection import LayerResult, Selection
from mipp.pruning.sensitivity import MetricProbes, OutputChannel, OutputMetric
from mipp.pruning.structure import Consumer, Group, Structure, analyse, removed_nodes


@dataclass
class Captured:
    """A model's structure and its consumers' captured features: what every decision pass over the groups
    reads (a budget search runs many passes over one capture)."""

    model: nn.Module
    structure: Structure
    example: object
    stats: dict
    seconds: float
    batches: list = field(default_factory=list)  # the input batches captured (for budgets that evaluate)
    decided: list[str] = field(default_factory=list)  # the prunable groups to decide
    metric: OutputMetric | None = None  # the output channel's metric, when the channel is at the output
    node_columns: dict[tuple[str, str], list[torch.Tensor]] = field(default_factory=dict, repr=False)
    # per consumer, the precision its decisions start from (criteria.lstsq.Block.precisions)
    precisions: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def means(self) -> dict[str, torch.Tensor]:
        """Each consumer's mean feature row (what the mean fold adds to its bias)."""
        return {n: st.mean for n, st in self.stats.items()}

    def columns_of(self, group: Group, consumer: Consumer, kk: int) -> list[torch.Tensor]:
        """Each of ``group``'s nodes' feature columns in ``consumer`` (``kk``: its kernel size). They depend on
        the structure alone, so they are built once per capture: a refinement's 24 passes over MiniLM rebuilt
        them 150 times (1,536 small tensors each, about 7 s)."""
        key = (group.name, consumer.name)
        if key not in self.node_columns:
            self.node_columns[key] = [channel_columns(torch.tensor(c, dtype=torch.long), kk) for c in consumer.columns]
        return self.node_columns[key]


def capture_model(
    model: nn.Module,
    inputs,
    *,
    n_samples: int,
    joint: bool = False,
    seed: int = 0,
    min_samples: int = 2,
    include: Callable[[Group], bool] | None = None,
    channel: OutputChannel | None = None,
    progress: bool = False,
) -> Captured:
    """Analyse ``model``, capture its decided groups' consumers on the first ``n_samples`` samples of
    ``inputs`` and, for a tolerance channel at the output, the output metric. ``include``: which prunable
    groups to decide (default all); ``progress``: a bar over the captured batches."""
    t0 = time.perf_counter()
    batches = materialise(inputs, n_samples)
    example = slice_batch(batches[0], min(2, batch_size(batches[0])))
    structure = analyse(model, example, joint=joint)
    decided = [n for n in structure.prunable if include is None or include(structure.groups[n])]
    if not decided:  # before any capture: each group's reason (or the units= / groups= that left it out)
        raise structure.nothing_decided(type(model).__name__, decided)
    consumers = sorted({c.name for n in decided for c in structure.groups[n].consumers})
    probes = None
    if channel is not None and consumers:  # the output metric, from the capture's own forward passes
        probes = MetricProbes(
            model, consumers, probes=channel.probes, seed=seed, output=channel.output, samples=channel.samples
        )
    with warnings.catch_warnings(record=True) as caught:  # too few samples: the error alone, not the warning too
        warnings.simplefilter("always")
        stats = capture(model, batches, consumers, seed=seed, progress=progress, metric=probes)
    n = next(iter(stats.values())).rows.shape[0] if stats else 0
    if n < min_samples:
        raise ValueError(f"got {n} samples from inputs; at least {min_samples} are needed (n_samples={n_samples})")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    metric = probes.finish() if probes is not None else None
    return Captured(model, structure, example, stats, time.perf_counter() - t0, batches, decided, metric)


@dataclass
class Cuts:
    """Input channels of each consumer and output rows of each producer that decided groups removed."""

    inputs: dict[str, set[int]] = field(default_factory=dict)  # consumer -> removed input channels
    outputs: dict[str, set[int]] = field(default_factory=dict)  # producer -> removed output rows

    def add(self, group: Group, removed: list[int]) -> None:
        for c in group.consumers:
            self.inputs.setdefault(c.name, set()).update(j for i in removed for j in c.columns[i])
        for prod, rows in group.producers.items():
            self.outputs.setdefault(prod, set()).update(j for i in removed for j in rows[i])

    @classmethod
    def of(cls, structure: Structure, keep: dict[str, torch.Tensor]) -> Cuts:
        """The cuts of a whole selection."""
        cuts = cls()
        for name, removed in removed_nodes(structure, keep).items():
            cuts.add(structure.groups[name], removed)
        return cuts

    def layer(self, cap: Captured, group: Group, modules: dict[str, nn.Module]) -> Layer:
        """``group`` as its consumers read it after these cuts."""
        blocks, drops, cut = [], [], False
        for c in group.consumers:
            m, st = modules[c.name], cap.stats[c.name]
            kk = kernel_size(m)
            w = flat_weight(m).double().cpu()
            gone_rows = self.outputs.get(c.name, set())
            cut = cut or bool(gone_rows) or bool(self.inputs.get(c.name))
            rows = torch.tensor([j for j in range(w.shape[0]) if j not in gone_rows], dtype=torch.long)
            if gone_rows:
                w = w[rows]
            if cap.metric is not None:
                w = cap.metric.root(c.name, rows if gone_rows else None) @ w
            cols = cap.columns_of(group, c, kk)
            drop = torch.zeros(st.cov.shape[0], dtype=torch.bool)
            drop[channel_columns(torch.tensor(sorted(self.inputs.get(c.name, ())), dtype=torch.long), kk)] = True
            blocks.append(
                Block(
                    st.cov,
                    st.mean,
                    st.rows,
                    st.n_rows,
                    w,
                    cols,
                    c.name,
                    cap.metric is not None,
                    precisions=cap.precisions.setdefault(c.name, {}),
                )
            )
            drops.append(drop)
        return Layer(group.name, group.n_nodes, blocks, drops, [c.name for c in group.consumers], cut=cut)


def walk(
    cap: Captured,
    decide: Callable[[Layer, object], LayerDecision],
    progress: bool = False,
    nats: bool = True,
    independent: bool = False,
):
    """Visit the decided groups from the output back to the input; ``decide(layer, bar)`` chooses each
    group's nodes (``bar``: a tqdm bar over the group's nodes). Returns (keep, results); ``nats``: whether the
    decisions' estimates are nats (each result's ``info_removed`` sums them). ``independent``: every group
    decided against its unpruned consumers (no cuts from groups decided before it)."""
    modules = dict(cap.model.named_modules())
    groups = [cap.structure.groups[n] for n in cap.decided]
    keep: dict[str, torch.Tensor] = {}
    results: dict[str, LayerResult] = {}
    cuts = Cuts()
    outer = tqdm(list(reversed(groups)), desc="MIPP groups", file=sys.stderr, disable=not progress, leave=False)
    inner = tqdm(total=0, desc="nodes", file=sys.stderr, disable=not progress, leave=False)
    try:
        for group in outer:
            inner.set_description(group.name)
            layer = cuts.layer(cap, group, modules)
            decision = decide(layer, inner)
            keep[group.name] = torch.tensor(decision.kept, dtype=torch.long)
            results[group.name] = LayerResult.of(layer, decision, nats)
            if not independent:
                kept = set(decision.kept)
                cuts.add(group, [i for i in range(group.n_nodes) if i not in kept])
    finally:
        inner.close()
        outer.close()
    return keep, results


def select_with(
    model: nn.Module,
    inputs,
    decide: Callable[[Layer, object], LayerDecision],
    *,
    n_samples: int,
    joint: bool = False,
    seed: int = 0,
    min_samples: int = 2,
    progress: bool = False,
    settings: dict | None = None,
    include: Callable[[Group], bool] | None = None,
) -> Selection:
    """Capture, then one decision pass (:func:`walk`) over the groups ``include`` accepts (default all)."""
    cap = capture_model(
        model,
        inputs,
        n_samples=n_samples,
        joint=joint,
        seed=seed,
        min_samples=min_samples,
        include=include,
        progress=progress,
    )
    t0 = time.perf_counter()
    keep, results = walk(cap, decide, progress)
    seconds = {"capture": cap.seconds, "decisions": time.perf_counter() - t0}
    return Selection(cap.structure, keep, cap.example, results, cap.means, seconds, settings)
