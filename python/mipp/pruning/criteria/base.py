"""The seam between the traversal and the decisions: a *criterion* decides one layer.

The traversal (mipp.pruning.walk) visits the prunable groups from the output back to the input and hands each
one to the criterion as a :class:`Layer`: the group's nodes as its consumers read them (one
:class:`~mipp.pruning.criteria.lstsq.Block` per consumer: captured feature moments and rows, weights
restricted to the outputs kept so far) and the feature columns already removed by decided groups. The
criterion returns a :class:`LayerDecision`: the kept nodes and one record per node. Unlike Torch-Pruning's
importances (a score vector the pruner thresholds), a criterion decides sequentially: each removal changes
what the next node adds, so it owns the loop over the layer's nodes. The criteria that test one node at a
time (KSG, loss) share that loop, mipp.pruning.criteria.lstsq.traverse (the screen's order, constants,
min_keep, the least-squares downdates, records, progress), and plug in only the test of one node.

A criterion that decides by a tolerance (the MIPP estimators, the least-squares screen) also serves the
budgets of mipp.pruning.budget, which search the tolerance; a fixed-count criterion (``counts=``) keeps a
given number of nodes per group (the baselines at a selection's counts).

Adding a criterion is one file: a subclass with ``name``, ``unit``, ``default_tolerance`` and
:meth:`Criterion.decide`, registered in mipp.pruning.criteria.CRITERIA if ``MIPP(estimator=name)`` should
find it by name.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from mipp.pruning.criteria.lstsq import Block
from mipp.pruning.selection import NodeRecord


@dataclass
class Layer:
    """One group as a criterion sees it."""

    name: str
    n_nodes: int
    blocks: list[Block]  # one per consumer
    drops: list[torch.Tensor] = field(default_factory=list)  # per block: columns already removed (empty: none)
    consumers: list[str] = field(default_factory=list)
    target: torch.Tensor | None = None  # select_layer's Y, which the loss criterion predicts directly
    cut: bool = False  # whether groups decided before removed some of its consumers' inputs or outputs

    def __post_init__(self):
        if not self.drops:
            self.drops = [torch.zeros(b.cov.shape[0], dtype=torch.bool) for b in self.blocks]
        if not self.consumers:
            self.consumers = [b.name for b in self.blocks]


@dataclass
class LayerDecision:
    kept: list[int]
    records: list[NodeRecord] = field(default_factory=list)
    recon_error: float = 0.0  # relative LS reconstruction error of the consumers on the kept nodes
    seconds: dict[str, float] = field(default_factory=dict)


class Criterion(ABC):
    """A layer decision. Subclasses are dataclasses of their settings (validated in ``__post_init__``)."""

    name: ClassVar[str]
    unit: ClassVar[str]  # what ``tolerance`` measures, for messages and reports
    default_tolerance: ClassVar[float]
    # the budgets' tolerance search: the first value tried when the tolerance is 0, the relative precision at
    # which the bisection stops, and whether tolerance 0 is itself a meaningful first pass
    search_start: ClassVar[float] = 0.2
    search_precision: ClassVar[float] = 1.02
    search_from_zero: ClassVar[bool] = False
    # whether the decision statistics are nats (a layer's ``info_removed`` sums them)
    nats: ClassVar[bool] = True
    # samples the decision needs at the least
    min_samples: ClassVar[int] = 5

    @abstractmethod
    def decide(
        self, layer: Layer, *, tolerance: float, min_keep: int, generator: torch.Generator, bar=None
    ) -> LayerDecision:
        """Keep or remove every node of ``layer``; never fewer than ``min_keep`` nodes kept (when the layer
        has that many). ``generator`` draws any randomness; ``bar`` is a tqdm bar to advance per node."""

    @property
    def fixed_counts(self) -> bool:
        """Whether the criterion keeps given counts (no tolerance: budgets do not apply)."""
        return False

    def distributed(self, group) -> Criterion:
        """This criterion with its work split across the ranks of a torch.distributed ``group``."""
        raise ValueError(
            f"group= splits the KSG estimator's tests across ranks; the {self.name} estimator runs in one "
            "process (call select without group)"
        )

    def settings(self) -> dict:
        """The settings as plain values (saved with a selection)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.name.startswith("_"):
                v = getattr(self, f.name)
                out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        return out
