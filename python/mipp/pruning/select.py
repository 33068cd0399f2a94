"""MIPP node selection: groups visited from the output back to the input, each decided by decide.py.

For each prunable group (structure.py) the target is what its consumers compute: their pre-activations
restricted to the outputs that are kept (a consumer that is itself pruned was decided first, since groups
are visited in reverse execution order). The consumer's inputs are captured by hooks (capture.py); the
decision (decide.py) removes a node only when the KSG upper confidence bound of the information it adds
through the tolerance channel is below ``tolerance``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn
from tqdm.auto import tqdm

from mipp.pruning.capture import _batch_size, _slice, capture, flat_weight, kernel_size, materialise
from mipp.pruning.decide import Block, NodeRecord, decide_layer
from mipp.pruning.loss import LossConfig, decide_layer_loss
from mipp.pruning.refit import consumer_plan, fold_means, mask_groups, removed_nodes
from mipp.pruning.refit import refit as refit_consumers
from mipp.pruning.structure import Structure, analyse, clone_model, producer_channels, prune_groups


@dataclass
class LayerResult:
    name: str
    n_before: int
    n_after: int
    consumers: list[str]
    recon_error: float  # relative LS error of the consumers' pre-activations from the kept nodes
    info_removed: float  # sum of the removed nodes' estimated Delta (nats)
    records: list[NodeRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_tests(self) -> int:
        return sum(r.rule == "test" for r in self.records)


def _check_inputs_2d(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, d), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t.detach().to(torch.float64).cpu()


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

    def with_keep(self, keep: dict[str, torch.Tensor]) -> Selection:
        """Another selection on the same model (a baseline at the same counts, for instance)."""
        return Selection(self.structure, keep, self.example, means=self.means)

    def _removed_channels(self) -> dict[str, list[int]]:
        return producer_channels(self.structure, removed_nodes(self.structure, self.keep))

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

    def apply(self, model: nn.Module, fold: bool = True, refit=None, n_refit: int | None = None) -> nn.Module:
        """A new, physically smaller model (Torch-Pruning removes the groups' channels); ``model`` is
        untouched. ``refit``: inputs (tensor or iterable of batches) on which each consumer is re-fitted by
        least squares to the original pre-activations (in place of the mean fold); otherwise ``fold`` adds
        the removed nodes' mean contributions to the consumers' biases."""
        return self._treat(clone_model(model, unmask=True), model, False, fold, refit, n_refit)

    def mask(self, model: nn.Module, fold: bool = True, refit=None, n_refit: int | None = None) -> nn.Module:
        """``torch.nn.utils.prune`` masks of this selection on ``model``, in place (as torch.nn.utils.prune
        works); returns ``model``. ``fold`` / ``refit`` as in :meth:`apply` (the re-fit needs a copy of the
        unmasked model, made here)."""
        original = clone_model(model) if refit is not None else model
        return self._treat(model, original, True, fold, refit, n_refit)

    def _treat(
        self, target: nn.Module, original: nn.Module, masked: bool, fold: bool, refit_inputs, n_refit: int | None
    ) -> nn.Module:
        """Fold (before removal) or re-fit (after) the consumers of ``target`` and remove or mask the nodes."""
        plan, batches = self._prepare(original, fold, refit_inputs, n_refit)
        if batches is None and fold:
            fold_means(target, plan, self.means)
        (mask_groups if masked else prune_groups)(target, self.example, self._removed_channels())
        if batches is not None:
            refit_consumers(target, original, batches, plan, self.structure.order, masked=masked)
        return target

    # -- persistence -----------------------------------------------------------------------------------
    FORMAT_VERSION = 1
    EXAMPLE_MAX_ELEMENTS = 1 << 16

    def save(self, path: str) -> str:
        """Write the selection as JSON: kept nodes per group (module names), the settings, the per-group
        results and decisions, the consumers' mean inputs (for the fold), the model's structure signature and
        the example input when it is a tensor of at most 65,536 elements. A ``version`` field guards loads."""
        ex = self.example
        data = {
            "format": "mipp.Selection",
            "version": self.FORMAT_VERSION,
            "settings": self.settings,
            "keep": {name: idx.tolist() for name, idx in self.keep.items()},
            "groups": {
                name: {
                    "n_nodes": g.n_nodes,
                    "prunable": g.prunable,
                    "reason": g.reason,
                    "consumers": [c.name for c in g.consumers],
                    "members": g.members,
                }
                for name, g in self.structure.groups.items()
            },
            "signature": {
                name: [t, [[n, list(sh)] for n, sh in shapes]] for name, (t, shapes) in self.structure.signature.items()
            },
            "layers": {
                name: {
                    **{f.name: getattr(r, f.name) for f in fields(r) if f.name != "records"},
                    "records": [_finite(asdict(rec)) for rec in r.records],
                }
                for name, r in self.layers.items()
            },
            "means": None if self.means is None else {k: v.tolist() for k, v in self.means.items()},
            "seconds": self.seconds,
            "example": ex.tolist()
            if isinstance(ex, torch.Tensor) and ex.numel() <= self.EXAMPLE_MAX_ELEMENTS
            else None,
            "example_dtype": str(ex.dtype).removeprefix("torch.") if isinstance(ex, torch.Tensor) else None,
        }
        with open(path, "w") as f:
            json.dump(_finite(data), f, indent=1, allow_nan=False)
        return path

    @classmethod
    def load(cls, path: str, model: nn.Module, example=None) -> Selection:
        """A selection saved by :meth:`save`, for ``model`` (the unpruned model it was made on, or a masked
        copy of it). ``example``: a small input batch, needed when the file holds none."""
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != "mipp.Selection" or data.get("version") != cls.FORMAT_VERSION:
            raise ValueError(
                f"{path} is not a mipp selection of format version {cls.FORMAT_VERSION} (found "
                f"{data.get('format')!r} version {data.get('version')!r})"
            )
        if example is None:
            if data["example"] is None:
                raise ValueError(f"{path} holds no example input: pass example= (a small input batch)")
            example = torch.tensor(data["example"], dtype=getattr(torch, data["example_dtype"]))
        structure = analyse(model, example, joint=data["settings"].get("joint", False))
        saved = {
            name: (t, tuple((n, tuple(sh)) for n, sh in shapes)) for name, (t, shapes) in data["signature"].items()
        }
        if saved != structure.signature:
            raise ValueError(f"the model's structure differs from the one {path} was made on")
        layers = {}
        for name, r in data["layers"].items():
            records = [
                NodeRecord(**{k: (math.nan if v is None else v) for k, v in rec.items()}) for rec in r.pop("records")
            ]
            layers[name] = LayerResult(**r, records=records)
        means = (
            None
            if data["means"] is None
            else {k: torch.tensor(v, dtype=torch.float64) for k, v in data["means"].items()}
        )
        return cls(
            structure,
            {k: torch.tensor(v, dtype=torch.long) for k, v in data["keep"].items()},
            example,
            layers,
            means,
            data["seconds"],
            data["settings"],
        )

    def report(self, model: nn.Module | None = None) -> str:
        from mipp.pruning.report import format_report

        return format_report(self, model)

    def plot(self, path: str, model: nn.Module | None = None) -> str:
        from mipp.pruning.report import plot_selection

        return plot_selection(self, path, model)


@dataclass
class MIPP:
    """Mutual Information Preserving Pruning with KSG decisions that hold on wide layers.

    A node is removed only when the data show, at confidence 1 - ``alpha``, that the information it adds
    about its consumers' pre-activations beyond the other kept nodes is below ``tolerance`` nats, with the
    pre-activations seen through Gaussian noise of ``noise`` times their mean variance (the tolerance
    channel; see mipp.pruning.decide). Larger ``tolerance`` or ``noise`` prune more; a smaller ``alpha``
    (more confidence required) prunes less.

    k: KSG neighbours. n_samples: input samples whose activations are used (N). min_keep: nodes never
    removed from a group (no layer collapse). joint: decide residual streams (groups of several producers)
    against all their consumers at once. ridge: relative ridge of the least-squares regressions. m_max:
    signal directions estimated by KSG per node (the rest by the Gaussian closed form). seed: the
    generator of sampled positions and channel noise. progress: tqdm bars on stderr.

    ``estimator="loss"``: the paper's own estimator instead (mipp.pruning.loss): small MLPs predict the
    consumers' pre-activations, nodes are visited least informative first, and a node is kept only when the
    data are more than ``confidence`` sure (over ``repeats`` fits) that masking it raises the held-out loss
    by more than ``tolerance`` (a fraction of the target's variance; default 0, the paper's rule). A higher
    ``confidence`` prunes more. ``loss_config``: the MLPs (:class:`LossConfig`). ``alpha``, ``noise``, ``k``,
    ``ridge`` and ``m_max`` belong to the KSG estimator; ``tolerance`` defaults to 0.2 nats for it.
    """

    k: int = 3
    alpha: float = 0.05
    tolerance: float | None = None
    noise: float = 0.01
    n_samples: int = 1000
    min_keep: int = 1
    joint: bool = False
    ridge: float = 1e-9
    m_max: int = 2
    sparsity: float | None = None
    macs: float | None = None
    seed: int = 0
    progress: bool = True
    estimator: str = "ksg"
    confidence: float = 0.9
    repeats: int = 5
    loss_config: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")

        integer("k", 1)
        integer("n_samples", 2)
        integer("min_keep", 1)
        integer("m_max", 1)
        integer("repeats", 2)
        if self.estimator not in ("ksg", "loss"):
            raise ValueError(f'estimator must be "ksg" or "loss", got {self.estimator!r}')
        if not (isinstance(self.confidence, (int, float)) and 0 < self.confidence < 1):
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        if isinstance(self.loss_config, dict):  # settings read back from JSON
            self.loss_config = LossConfig(**self.loss_config)
        if not isinstance(self.loss_config, LossConfig):
            raise TypeError(f"loss_config must be a mipp.pruning.LossConfig, got {type(self.loss_config).__name__}")
        if self.tolerance is None:  # KSG: nats through the tolerance channel; loss: the paper's rule
            self.tolerance = 0.2 if self.estimator == "ksg" else 0.0
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < math.inf):
            raise ValueError(
                f"tolerance must be a finite number >= 0 (nats for the KSG estimator, a fraction of "
                f"the target's variance for the loss estimator), got {self.tolerance!r}"
            )
        if not (isinstance(self.noise, (int, float)) and 0 < self.noise < math.inf):
            raise ValueError(
                f"noise must be > 0 (a fraction of the consumers' pre-activation variance), got {self.noise!r}"
            )
        if not (isinstance(self.ridge, (int, float)) and 0 <= self.ridge < 1):
            raise ValueError(f"ridge must be in [0, 1), got {self.ridge!r}")
        if self.sparsity is not None and self.macs is not None:
            raise ValueError("give one budget: sparsity (fraction of nodes removed) or macs (fraction kept)")
        if self.sparsity is not None and not (isinstance(self.sparsity, (int, float)) and 0 < self.sparsity < 1):
            raise ValueError(
                f"sparsity must be in (0, 1) (the fraction of prunable nodes removed), got {self.sparsity!r}"
            )
        if self.macs is not None and not (isinstance(self.macs, (int, float)) and 0 < self.macs < 1):
            raise ValueError(f"macs must be in (0, 1) (the fraction of the dense MACs kept), got {self.macs!r}")

    # -- activations and a target alone --------------------------------------------------------------
    def select_layer(
        self, X: torch.Tensor, Y: torch.Tensor, name: str = "layer", *, group=None
    ) -> tuple[list[int], LayerResult]:
        """Kept node indices (sorted) of a layer with activations X (N, D) for a target Y (N, q), without a
        model: Y's columns are z-scored and the consumer's weights are estimated from (X, Y) by least
        squares (W = Cov(Y, X) Cov(X)^-1), so the decision preserves what a linear read-out of X gives Y
        (the loss estimator's MLPs predict Y itself). ``group``: a torch.distributed process group (see
        :meth:`select`)."""
        local_mi, progress = self._distributed(group)
        if self.sparsity is not None or self.macs is not None:
            raise ValueError("select_layer decides by tolerance; the sparsity / macs budgets apply to select(model)")
        X, Y = _check_inputs_2d("X", X), _check_inputs_2d("Y", Y)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but Y has {Y.shape[0]}")
        if X.shape[0] <= self.k + 1:
            raise ValueError(f"got N={X.shape[0]} samples; the decision needs more than k + 1 = {self.k + 1}")
        t0 = time.perf_counter()
        Yz = (Y - Y.mean(0)) / Y.std(0).clamp_min(1e-300)
        mean = X.mean(0)
        Xc = X - mean
        cov = Xc.T @ Xc / len(X)
        lam = self.ridge * float(cov.diagonal().mean())
        weight = torch.linalg.solve(cov + lam * torch.eye(len(cov), dtype=cov.dtype), Xc.T @ Yz / len(X)).T
        block = Block(cov, mean, X, len(X), weight, [torch.tensor([i]) for i in range(X.shape[1])], name)
        gen = torch.Generator().manual_seed(self.seed)
        with tqdm(total=X.shape[1], desc=name, file=sys.stderr, disable=not progress, leave=False) as bar:
            d = self._decide([block], X.shape[1], self.tolerance, gen, bar=bar, local_mi=local_mi, target=Yz)
        res = _result(name, X.shape[1], d, ["target"], self.estimator == "ksg")
        res.seconds["total"] = time.perf_counter() - t0
        return d.kept, res

    # -- a model -------------------------------------------------------------------------------------
    def _distributed(self, group):
        """The KSG local values and whether to show progress: in one process mipp.mi and self.progress; with
        a process group every rank runs the same decisions (same data, same seeded draws) and each test's
        KSG query rows are split across the ranks (mipp.distributed.mi_rows), progress on rank 0 only."""
        if group is None:
            return None, self.progress
        if self.estimator != "ksg":
            raise ValueError(
                "group= splits the KSG estimator's tests across ranks; the loss estimator runs in "
                "one process (call select without group)"
            )
        from mipp import distributed

        rank, _ = distributed._rank_world(group)

        def local_mi(a, b):
            return distributed.mi_rows(a, b, self.k, normalize=True, reduction="none", group=group)

        return local_mi, self.progress and rank == 0

    def select(self, model: nn.Module, inputs, *, group=None) -> Selection:
        """Decide every prunable group of ``model`` from its activations on ``inputs`` (a tensor of inputs,
        or an iterable of batches such as a DataLoader: tensors, (inputs, labels) tuples or dicts of
        keyword inputs; the first ``n_samples`` samples are used, an iterable is consumed once).

        With a budget (``sparsity`` or ``macs``) the tolerance is not used: it is searched (bisection on a
        log scale, one capture, every pass the same decisions as an emergent run at that tolerance) for the
        smallest value whose selection meets the budget, so MIPP's own statistics decide which nodes go and
        how the budget spreads over the groups. ``settings["tolerance"]`` then holds the value found. The
        search stops at 2% of the tolerance (KSG; 10% for the loss estimator, which starts from the paper's
        rule, tolerance 0); a node budget is then met exactly by giving back the removed
        nodes with the largest decision statistics (rule "budget" in the records).

        ``group``: an initialised torch.distributed process group. Call ``select`` on every rank with the same
        model, inputs and settings; each KSG test's query rows are split across the ranks and every rank
        returns the same Selection as one process (bit for bit: the counts are exact integers, the digamma
        sums run in the single-process order). The least-squares screen runs on every rank."""
        local_mi, progress = self._distributed(group)
        cap = capture_model(
            model, inputs, n_samples=self.n_samples, joint=self.joint, seed=self.seed, min_samples=self.k + 2
        )
        t0 = time.perf_counter()
        settings = {k: v for k, v in asdict(self).items() if k != "progress"}
        if self.sparsity is None and self.macs is None:
            keep, results = self._pass(cap, self.tolerance, progress, local_mi)
        else:
            keep, results, settings["tolerance"], settings["budget_passes"] = self._budget(cap, progress, local_mi)
        means = {n: st.mean for n, st in cap.stats.items()}
        return Selection(
            cap.structure,
            keep,
            cap.example,
            results,
            means,
            {"capture": cap.seconds, "decisions": time.perf_counter() - t0},
            settings,
        )

    def _decide(self, blocks, n_nodes: int, tolerance: float, gen, drops=None, bar=None, local_mi=None, target=None):
        """One layer's decision by the chosen estimator."""
        if self.estimator == "loss":
            return decide_layer_loss(
                blocks,
                n_nodes,
                confidence=self.confidence,
                repeats=self.repeats,
                tolerance=tolerance,
                min_keep=self.min_keep,
                generator=gen,
                config=self.loss_config,
                drop=drops,
                bar=bar,
                target=target,
            )
        return decide_layer(
            blocks,
            n_nodes,
            k=self.k,
            alpha=self.alpha,
            tolerance=tolerance,
            noise=self.noise,
            min_keep=self.min_keep,
            generator=gen,
            ridge=self.ridge,
            m_max=self.m_max,
            drop=drops,
            bar=bar,
            local_mi=local_mi,
        )

    def _pass(self, cap: Captured, tolerance: float, progress: bool, local_mi=None):
        gen = torch.Generator().manual_seed(self.seed)

        def decide(group, blocks, drops, bar):
            d = self._decide(blocks, group.n_nodes, tolerance, gen, drops, bar, local_mi)
            return d.kept, _result(
                group.name, group.n_nodes, d, [c.name for c in group.consumers], self.estimator == "ksg"
            )

        return walk_captured(cap, decide, progress)

    def _budget(self, cap: Captured, progress: bool, local_mi):
        """Bisection over the tolerance for the smallest one whose selection meets the budget."""
        from mipp.pruning.report import count_macs_params

        groups = cap.structure.prunable
        total = sum(cap.structure.groups[n].n_nodes for n in groups)
        floor = sum(min(self.min_keep, cap.structure.groups[n].n_nodes) for n in groups)
        dense_macs = count_macs_params(cap.model, cap.example)[0] if self.macs is not None else 0

        def measure(keep) -> float:  # how far the budget is met: >= 0 when it is
            if self.sparsity is not None:
                return (1 - sum(len(v) for v in keep.values()) / total) - self.sparsity
            sel = Selection(cap.structure, keep, cap.example)
            return self.macs - count_macs_params(sel.apply(cap.model, fold=False), cap.example)[0] / dense_macs

        if self.sparsity is not None and self.sparsity > 1 - floor / total:
            raise ValueError(
                f"sparsity={self.sparsity} removes more than the {1 - floor / total:.4f} of the nodes "
                f"that min_keep={self.min_keep} allows"
            )
        bar = tqdm(desc="MIPP budget search", file=sys.stderr, disable=not progress, leave=False)
        passes, lo, hi, best = 0, None, None, None

        def attempt(t):
            nonlocal passes, best, lo, hi
            keep, results = self._pass(cap, t, False, local_mi)
            passes += 1
            bar.update()
            met = measure(keep)
            if met >= 0:
                hi, best = t, (keep, results, t)
            else:
                lo = t
            return met

        # KSG: start at the tolerance (0.2 nats by default), bisect to 2%. Loss: start at the paper's rule
        # (tolerance 0; a node budget it already meets needs no other pass), grow from 1% of the target's
        # variance, bisect to 10% (a pass costs a minute of MLP fits where a KSG pass costs a second).
        ksg = self.estimator == "ksg"
        start, precision = (0.2, 1.02) if ksg else (0.01, 1.1)
        try:
            t = self.tolerance if (self.tolerance > 0 or not ksg) else start
            if attempt(t) >= 0:  # bracket: shrink until the budget is no longer met
                while lo is None and t > 1e-6:
                    t /= 4
                    attempt(t)
            else:  # or grow until it is
                while hi is None:
                    if t > 1e4:
                        raise ValueError(
                            f"the budget cannot be met with min_keep={self.min_keep} (the "
                            "smallest model MIPP can reach still exceeds it)"
                        )
                    t = max(t * 4, start)
                    attempt(t)
            while lo is not None and hi > precision * lo and hi > 1e-6:  # geometric (down by 4 from lo = 0)
                if attempt(math.sqrt(lo * hi) if lo > 0 else hi / 4) == 0:
                    break
        finally:
            bar.close()
        keep, results, tol = best
        if self.sparsity is not None:
            keep = self._restore(keep, results, round(self.sparsity * total))
        return keep, results, tol, passes

    @staticmethod
    def _restore(keep, results, n_remove: int):
        """Meet a node budget exactly: give back the removed nodes whose decision statistic (the upper bound
        of the information they add) was largest, i.e. closest to the tolerance, until ``n_remove`` remain
        removed."""
        removed = [
            (
                r.upper if not math.isnan(r.upper) else 0.0,
                r.gaussian if not math.isnan(r.gaussian) else 0.0,
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


@dataclass
class Captured:
    """A model's structure and its consumers' captured features: what every decision pass over the groups
    reads (MIPP's budget search runs many passes over one capture)."""

    model: nn.Module
    structure: Structure
    example: object
    stats: dict
    seconds: float


def capture_model(
    model: nn.Module, inputs, *, n_samples: int, joint: bool = False, seed: int = 0, min_samples: int = 2
) -> Captured:
    t0 = time.perf_counter()
    batches = materialise(inputs, n_samples)
    example = _slice(batches[0], min(2, _batch_size(batches[0])))
    structure = analyse(model, example, joint=joint)
    consumers = sorted({c.name for n in structure.prunable for c in structure.groups[n].consumers})
    stats = capture(model, batches, consumers, seed=seed)
    n = next(iter(stats.values())).rows.shape[0] if stats else 0
    if n < min_samples:
        raise ValueError(f"got {n} samples from inputs; at least {min_samples} are needed (n_samples={n_samples})")
    return Captured(model, structure, example, stats, time.perf_counter() - t0)


def walk_captured(cap: Captured, decide, progress: bool = False):
    """Visit the prunable groups from the output back to the input and let ``decide(group, blocks, drops,
    bar) -> (kept nodes, LayerResult or None)`` choose each group's nodes. ``blocks`` are the group's
    consumers (decide.Block: captured features, weights restricted to the outputs kept so far) and ``drops``
    their feature columns already removed by decided groups. Returns (keep, results)."""
    modules = dict(cap.model.named_modules())
    groups = [cap.structure.groups[n] for n in cap.structure.prunable]
    keep: dict[str, torch.Tensor] = {}
    results: dict[str, LayerResult] = {}
    cut_in: dict[str, set[int]] = {}  # consumer -> input channels removed by decided groups
    cut_out: dict[str, set[int]] = {}  # producer -> output rows removed by decided groups
    outer = tqdm(list(reversed(groups)), desc="MIPP groups", file=sys.stderr, disable=not progress, leave=False)
    inner = tqdm(total=0, desc="nodes", file=sys.stderr, disable=not progress, leave=False)
    try:
        for group in outer:
            inner.set_description(group.name)
            blocks, drops = [], []
            for c in group.consumers:
                m, st = modules[c.name], cap.stats[c.name]
                kk = kernel_size(m)
                w = flat_weight(m).double().cpu()
                gone_rows = cut_out.get(c.name, set())
                if gone_rows:
                    w = w[[j for j in range(w.shape[0]) if j not in gone_rows]]
                cols = [
                    (torch.tensor(ch, dtype=torch.long)[:, None] * kk + torch.arange(kk)).reshape(-1)
                    for ch in c.columns
                ]
                drop = torch.zeros(st.cov.shape[0], dtype=torch.bool)
                for ch in cut_in.get(c.name, ()):
                    drop[ch * kk : (ch + 1) * kk] = True
                blocks.append(Block(st.cov, st.mean, st.rows, st.n_rows, w, cols, c.name))
                drops.append(drop)
            kept, res = decide(group, blocks, drops, inner)
            keep[group.name] = torch.tensor(kept, dtype=torch.long)
            if res is not None:
                results[group.name] = res
            gone = set(range(group.n_nodes)) - set(kept)
            for c in group.consumers:
                cut_in.setdefault(c.name, set()).update(j for i in gone for j in c.columns[i])
            for prod, rows in group.producers.items():
                cut_out.setdefault(prod, set()).update(j for i in gone for j in rows[i])
    finally:
        inner.close()
        outer.close()
    return keep, results


def walk(
    model: nn.Module,
    inputs,
    decide,
    *,
    n_samples: int,
    joint: bool = False,
    seed: int = 0,
    min_samples: int = 2,
    progress: bool = False,
    settings: dict | None = None,
) -> Selection:
    """Capture, then one decision pass (walk_captured). MIPP and the baselines that need activations (the
    least-squares screen, ThiNet) share it."""
    cap = capture_model(model, inputs, n_samples=n_samples, joint=joint, seed=seed, min_samples=min_samples)
    t0 = time.perf_counter()
    keep, results = walk_captured(cap, decide, progress)
    return Selection(
        cap.structure,
        keep,
        cap.example,
        results,
        {n: st.mean for n, st in cap.stats.items()},
        {"capture": cap.seconds, "decisions": time.perf_counter() - t0},
        settings,
    )


def _finite(value):
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _result(name: str, n_nodes: int, d, consumers: list[str], nats: bool = True) -> LayerResult:
    # the loss estimator's records hold loss increases, not nats (nats=False): its info_removed is nan
    info = sum(r.estimate for r in d.records if r.removed and not math.isnan(r.estimate)) if nats else math.nan
    return LayerResult(name, n_nodes, len(d.kept), consumers, d.recon_error, info, d.records, dict(d.seconds))
