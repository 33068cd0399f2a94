"""What a selection is: the kept nodes of each decided group (:class:`Selection`), with per group a
:class:`LayerResult` and per node a :class:`NodeRecord`; turning it into a smaller model (``apply``) or
torch.nn.utils.prune masks (``mask``), with the mean fold or the least-squares re-fit of the consumers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from mipp.pruning.capture import materialise
from mipp.pruning.refit import consumer_plan, fold_means, intercept_sinks, mask_groups
from mipp.pruning.refit import refit as refit_consumers
from mipp.pruning.structure import Structure, clone_model, prune_groups, removed_nodes, unchanged_on_error


@dataclass
class NodeRecord:
    """How one node was decided. ``score`` orders the nodes (KSG and loss: the closed-form Delta, nats, when
    decided; nan for untested rules); ``estimate`` is the criterion's
    estimate of what the node adds (KSG: Delta, nats; loss: the mean loss increase when masked) and
    ``statistic`` the value compared with the tolerance (KSG: the upper (1 - alpha) bound of the estimate,
    removed when below; loss: its lower confidence bound, kept when above). For every criterion, the larger
    ``statistic``, the closer the node was to being kept."""

    node: int
    step: int  # order in which the node was decided (0 first)
    rule: str  # "constant", "affine", "unread", "test", "min_keep", "screen", "thinet"; "budget": given back
    removed: bool
    score: float
    estimate: float
    statistic: float


@dataclass
class LayerResult:
    name: str
    n_before: int
    n_after: int
    consumers: list[str]
    recon_error: float  # relative LS error of the consumers' pre-activations from the kept nodes
    info_removed: float  # sum of the removed nodes' estimated Delta (nats; nan for other units)
    records: list[NodeRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_tests(self) -> int:
        return sum(r.rule == "test" for r in self.records)

    @classmethod
    def of(cls, layer, decision, nats: bool = True) -> LayerResult:
        """The result of a criterion's ``decision`` on ``layer`` (criteria.base); ``nats=False`` for criteria
        whose estimates are not nats (then ``info_removed`` is nan)."""
        info = (
            sum(r.estimate for r in decision.records if r.removed and not math.isnan(r.estimate)) if nats else math.nan
        )
        return cls(
            layer.name,
            layer.n_nodes,
            len(decision.kept),
            list(layer.consumers),
            decision.recon_error,
            info,
            decision.records,
            dict(decision.seconds),
        )


class Selection:
    """The result of :meth:`MIPP.select`: ``keep`` maps each decided group (its root module's name) to the
    kept node indices. ``apply`` / ``mask`` turn it into a smaller model or masks (with the mean fold, or a
    least-squares re-fit of the consumers with ``refit=inputs``)."""

    def __init__(
        self,
        structure: Structure,
        keep: dict[str, torch.Tensor],
        example,
        layers: dict[str, LayerResult] | None = None,
        means: dict[str, torch.Tensor] | None = None,
        seconds: dict[str, float] | None = None,
        settings: dict | None = None,
    ):
        self.structure = structure
        self.keep = self._check_keep(structure, keep)
        self.example = example
        self.layers = layers or {}
        self.means = means
        self.seconds = seconds or {}
        self.settings = settings or {}

    @staticmethod
    def _check_keep(structure: Structure, keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, idx in keep.items():
            group = structure.groups.get(name)
            if group is None or not group.prunable:
                reason = group.reason if group is not None else "not the root of a pruning group"
                raise ValueError(f"group {name!r} cannot be pruned: {reason}")
            idx = torch.as_tensor(idx, dtype=torch.long).unique(sorted=True)
            if len(idx) == 0 or int(idx[0]) < 0 or int(idx[-1]) >= group.n_nodes:
                raise ValueError(
                    f"keep[{name!r}] must hold 1..{group.n_nodes} indices in [0, {group.n_nodes}), got {idx.tolist()}"
                )
            out[name] = idx
        return {name: out[name] for name in structure.groups if name in out}

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(idx) for name, idx in self.keep.items()}

    @property
    def sparsity(self) -> float:
        """Fraction of the decided groups' nodes removed."""
        total = sum(self.structure.groups[n].n_nodes for n in self.keep)
        return 1.0 - sum(self.counts.values()) / max(total, 1)

    @property
    def removed(self) -> dict[str, list[int]]:
        """Per decided group, the removed nodes."""
        return removed_nodes(self.structure, self.keep)

    def with_keep(self, keep: dict[str, torch.Tensor]) -> Selection:
        """Another selection on the same model (a baseline at the same counts, for instance)."""
        return Selection(self.structure, keep, self.example, means=self.means)

    def _prepare(self, model: nn.Module, fold: bool, refit_inputs, n_refit: int | None):
        self.structure.check_model(model)
        plan = consumer_plan(self.structure, self.keep, model)
        batches = None
        if refit_inputs is not None:
            batches = materialise(refit_inputs, n_refit or 10**12)
        elif fold and self.means is None:
            raise ValueError(
                "fold=True needs the consumers' mean inputs, which this selection lacks: pass "
                "refit=inputs, or fold=False"
            )
        return plan, batches

    def apply(
        self, model: nn.Module, fold: bool = True, refit=None, n_refit: int | None = None, progress: bool = False
    ) -> nn.Module:
        """A new, physically smaller model (Torch-Pruning removes the groups' channels); ``model`` is
        untouched. ``refit``: inputs (tensor or iterable of batches) on which each consumer is re-fitted by
        least squares to the original pre-activations (in place of the mean fold); otherwise ``fold`` adds
        the removed nodes' mean contributions to the consumers' intercepts (their biases; for a bias-free
        layer read only by a BatchNorm, that norm's running mean, so the architecture keeps its parameters).
        ``progress``: a tqdm bar over the re-fit's consumers and batches (minutes on a ResNet-18)."""
        with unchanged_on_error(model, tensors=False):  # the re-fit runs model with hooks
            return self._treat(clone_model(model, unmask=True), model, False, fold, refit, n_refit, progress)

    def mask(
        self, model: nn.Module, fold: bool = True, refit=None, n_refit: int | None = None, progress: bool = False
    ) -> nn.Module:
        """``torch.nn.utils.prune`` masks of this selection on ``model``, in place (as torch.nn.utils.prune
        works); returns ``model``. ``fold`` / ``refit`` / ``progress`` as in :meth:`apply` (the re-fit needs a
        copy of the unmasked model, made here)."""
        with unchanged_on_error(model):  # all or nothing: a failure or an interrupt leaves model as it was
            original = clone_model(model) if refit is not None else model
            return self._treat(model, original, True, fold, refit, n_refit, progress)

    def _treat(
        self,
        target: nn.Module,
        original: nn.Module,
        masked: bool,
        fold: bool,
        refit_inputs,
        n_refit: int | None,
        progress: bool = False,
    ) -> nn.Module:
        """Fold (before removal) or re-fit (after) the consumers of ``target`` and remove or mask the nodes."""
        plan, batches = self._prepare(original, fold, refit_inputs, n_refit)
        sinks = intercept_sinks(original, self.example, plan) if batches is not None or fold else {}
        if batches is None and fold:
            assert self.means is not None  # _prepare refused a fold without them
            fold_means(target, plan, self.means, sinks)
        (mask_groups if masked else prune_groups)(target, self.example, self.structure, self.removed)
        if batches is not None:
            refit_consumers(
                target, original, batches, plan, self.structure.order, masked=masked, sinks=sinks, progress=progress
            )
        return target

    def save(self, path: str, records: bool = False) -> str:
        """Write the selection as compact JSON (mipp.pruning.serialization.save); ``records``: also every
        node's decision record."""
        from mipp.pruning.serialization import save

        return save(self, path, records=records)

    @classmethod
    def load(cls, path: str, model: nn.Module, example=None) -> Selection:
        """A selection saved by :meth:`save`, for ``model`` (the unpruned model it was made on, or a masked
        copy of it; no tracing when the file holds the structure and the model's signature matches).
        ``example``: a small input batch, needed when the file holds none. Any problem with the file raises
        one ``SelectionFileError`` (a ValueError) naming the field."""
        from mipp.pruning.serialization import load

        return load(path, model, example)

    def summary(self, limit: int | None = 20) -> str:
        """A table: per decided group, nodes kept of the total, the kind of node and the seconds it took;
        ``limit``: rows shown (None: all)."""
        names = list(self.keep)
        shown = names if limit is None else names[:limit]
        total = sum(self.structure.groups[n].n_nodes for n in names)
        kept = sum(self.counts.values())
        head = f"Selection: {len(names)} groups decided, {kept:,} of {total:,} nodes kept ({self.sparsity:.1%} removed)"
        tol = self.settings.get("tolerance")
        if tol is not None:
            head += f"; tolerance {tol:.4g}"
        width = min(max([len(n) for n in shown] + [5]), 48)
        lines = [head, f"  {'group':<{width}} {'kept':>7} {'of':>7} {'kind':<8}"]
        for name in shown:
            g = self.structure.groups[name]
            label = name if len(name) <= width else "..." + name[-(width - 3) :]
            lines.append(f"  {label:<{width}} {len(self.keep[name]):>7} {g.n_nodes:>7} {g.kind:<8}")
        if len(shown) < len(names):
            lines.append(f"  ... and {len(names) - len(shown)} more groups (selection.summary(limit=None))")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def report(self, model: nn.Module | None = None) -> str:
        from mipp.pruning.report import format_report

        return format_report(self, model)

    def plot(self, path: str, model: nn.Module | None = None) -> str:
        from mipp.pruning.report import plot_selection

        return plot_selection(self, path, model)


def rebuild(model, selection: Selection | dict, example=None) -> nn.Module:
    """The architecture of ``model`` at the widths of ``selection``: a module of the same classes and names
    whose pruned layers have the kept sizes (attention modules their new head counts), so that the
    ``state_dict`` of ``selection.apply(model)`` loads into it (strict). ``model``: the unpruned model, or a
    factory (a callable returning it: the weights it builds are not read). ``selection``: a Selection, or
    ``{group: kept count}`` (then ``example``, a small input batch, is needed to find the groups). Which
    nodes were kept does not matter here, only how many: a state_dict stores the kept ones in order."""
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or a factory returning one, got {type(model).__name__}")
        model = model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the factory returned {type(model).__name__}, not a torch.nn.Module")
    if isinstance(selection, Selection):
        structure, example = selection.structure, selection.example if example is None else example
        counts = selection.counts
    else:
        if example is None:
            raise ValueError("rebuild from kept counts needs example= (a small input batch) to find the groups")
        from mipp.pruning.structure import analyse

        structure, counts = analyse(model, example, joint=True), dict(selection)
    structure.check_model(model)
    for name, count in counts.items():
        group = structure.groups.get(name)
        if group is None or not 1 <= int(count) <= group.n_nodes:
            raise ValueError(f"no group {name!r} with at least {count} nodes in {type(model).__name__}")
    target = clone_model(model, unmask=True)
    removed = {name: list(range(int(count), structure.groups[name].n_nodes)) for name, count in counts.items()}
    return prune_groups(target, example, structure, removed)
