"""MIPP: the run settings, a layer criterion and a budget, on one traversal (mipp.pruning.walk).

MIPP(tolerance=0.2).select(model, inputs)                 # the KSG criterion, emergent sparsity
MIPP(sparsity=0.5).select(model, inputs)                  # a budget: the tolerance is searched
MIPP(KSGCriterion(k=5, alpha=0.01)).select(model, inputs)  # a criterion object
MIPP(estimator="loss", confidence=0.9)                    # a criterion by name, with its settings
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from mipp._threads import advise as advise_threads
from mipp.pruning.budget import Budget, MacModel, allocate, cost_curves, refine, search_tolerance
from mipp.pruning.capture import to_device
from mipp.pruning.criteria import CRITERIA, Criterion, Layer, LayerDecision, ScreenCriterion
from mipp.pruning.criteria.lstsq import Block, recon_error
from mipp.pruning.refit import consumer_plan, refit_moments
from mipp.pruning.relevance import nonlinear_rescue, relevant_nodes
from mipp.pruning.selection import LayerResult, NodeRecord, Selection
from mipp.pruning.sensitivity import OutputChannel, first_tensor, spread_samples
from mipp.pruning.structure import eval_mode, run_model
from mipp.pruning.validate import check_integer, check_matrix, check_number
from mipp.pruning.walk import Captured, capture_model, walk

# what select_layer's least-squares read-out of Y uses when the criterion has no ridge of its own
LSTSQ_RIDGE = 1e-9


class MIPP:
    """Mutual Information Preserving Pruning with decisions that hold on wide layers.

    ``criterion``: how a layer is decided, an object (mipp.pruning.criteria: :class:`KSGCriterion`, the
    default; :class:`LossCriterion`, the paper's MLP loss differences; :class:`ScreenCriterion`, the
    closed form alone) or its name with its settings as keywords (``MIPP(k=5, alpha=0.01)``,
    ``MIPP(estimator="loss", confidence=0.9)``; ``estimator`` is the name's older spelling).

    With the default KSG criterion a node is removed only when the data show, at confidence 1 - ``alpha``,
    that the information it adds about its consumers' pre-activations beyond the other kept nodes is below
    ``tolerance`` nats, with the pre-activations seen through Gaussian noise of ``noise`` times their mean
    variance (the tolerance channel; mipp.pruning.criteria.ksg). Larger ``tolerance`` or ``noise`` prune
    more; a smaller ``alpha`` prunes less. ``tolerance`` is in the criterion's unit (``criterion.unit``);
    None: the criterion's default (0.2 nats for KSG, 0 for the loss criterion: the paper's rule).

    channel: where the tolerance channel sits. "consumer": at each group's consumers, the noise scaled to
    their own pre-activation variance (a per-layer unit). "output", or an
    :class:`~mipp.pruning.sensitivity.OutputChannel`: at the model's output, the noise scaled to the output's
    variance, so a node's information is in nats of the output whatever its layer (the one currency;
    mipp.pruning.sensitivity). None (default): "output" when a budget ranks the nodes of all groups with a
    nats criterion, "consumer" otherwise (a tolerance run, the paper's per-layer rule).
    units: the kinds of groups decided, "channels" (neurons, conv channels) and
    "heads" (attention heads, where the model's attention module holds a head count); groups: the names of
    the groups to decide, or a predicate on mipp.pruning.structure.Group (default: every prunable group).

    Budgets (one of them, each a fraction removed as Torch-Pruning's ``pruning_ratio``): ``sparsity``, of the
    decided nodes; ``macs_removed``, of the dense MACs (mipp.pruning.budget). ``macs`` (the fraction of the
    MACs *kept*) is the deprecated spelling of ``macs_removed = 1 - macs``.
    n_samples: input samples whose activations are used (N).
    min_keep: nodes never removed from a group (no layer collapse). joint: decide residual streams (groups
    of several producers) against all their consumers at once. seed: the generator of sampled positions and
    channel noise. progress: tqdm bars on stderr.
    refine: with a budget and a nats criterion, the number of calibration-loss evaluations an end-to-end
    search over the allocation may spend after the one-shot cut (mipp.pruning.budget.refine: it starts from
    the better of the one-shot and the uniform counts and moves nodes between groups only while the loss
    falls); the loss is the model's output error relative to the output's variance, each consumer re-fitted
    by least squares from its captured moments, on ``channel.samples`` captured samples spread over every
    batch. 0 (default): the one-shot cut alone.
    """

    def __init__(
        self,
        criterion: Criterion | str | None = None,
        *,
        estimator: str | None = None,
        tolerance: float | None = None,
        sparsity: float | None = None,
        macs_removed: float | None = None,
        macs: float | None = None,
        n_samples: int = 1000,
        min_keep: int = 1,
        joint: bool = False,
        seed: int = 0,
        progress: bool = True,
        channel: str | OutputChannel | None = None,
        units: tuple[str, ...] = ("channels", "heads"),
        groups=None,
        refine: int = 0,
        **settings,
    ):
        self.criterion = _make_criterion(criterion, estimator, settings)
        if channel == "output":
            channel = OutputChannel()
        elif isinstance(channel, dict):  # settings read back from JSON (a custom output map is not kept)
            channel = OutputChannel(channel.get("probes", 4), channel.get("samples", 256))
        if channel not in (None, "consumer") and not isinstance(channel, OutputChannel):
            raise ValueError(f'channel must be "consumer", "output" or an OutputChannel, got {channel!r}')
        units = (units,) if isinstance(units, str) else tuple(units)
        if not units or any(u not in ("channels", "heads") for u in units):
            raise ValueError(f'units must name "channels" and / or "heads", got {units!r}')
        self.units = units
        if groups is not None and not callable(groups):
            groups = frozenset(groups)
            if not all(isinstance(g, str) for g in groups):
                raise TypeError("groups must be group names (module names) or a predicate on a Group")
        self.groups = groups
        self.tolerance = self.criterion.default_tolerance if tolerance is None else tolerance
        check_number(
            "tolerance",
            self.tolerance,
            0,
            float("inf"),
            f"a finite number >= 0 (for the {self.criterion.name} criterion: {self.criterion.unit})",
            low_open=False,
        )
        if macs is not None:
            if macs_removed is not None:
                raise ValueError("give macs_removed= only (macs=, the fraction kept, is its deprecated spelling)")
            check_number("macs", macs, 0, 1, "in (0, 1) (the fraction of the dense MACs kept; deprecated)")
            warnings.warn(
                f"MIPP(macs={macs}) (the fraction of the MACs kept) is deprecated: pass "
                f"macs_removed={1 - macs:.6g}, the fraction removed, as Torch-Pruning's pruning_ratio counts",
                FutureWarning,
                stacklevel=2,
            )
            macs_removed = 1 - macs
        self.budget = Budget(sparsity, macs_removed)
        if channel is None:  # a budget ranks nodes across groups: only the output's nats compare there
            channel = OutputChannel() if self.budget.given and self.criterion.nats else "consumer"
        self.channel = channel
        if self.budget.given and self.criterion.fixed_counts:
            raise ValueError(f"the {self.criterion.name} criterion keeps given counts; a budget does not apply")
        check_integer("n_samples", n_samples, 2)
        check_integer("min_keep", min_keep, 1)
        check_integer("refine", refine, 0)
        if refine and not (self.budget.given and self.criterion.nats):
            raise ValueError(
                "refine searches a budget's allocation: give sparsity= or macs_removed= with a nats criterion "
                f"(got {'no budget' if not self.budget.given else f'the {self.criterion.name} criterion'})"
            )
        if refine == 1:
            raise ValueError("refine must be 0 or at least 2 (the one-shot and the uniform starts are both judged)")
        self.refine = refine
        self.n_samples, self.min_keep, self.joint, self.seed, self.progress = n_samples, min_keep, joint, seed, progress

    @classmethod
    def from_settings(cls, settings: dict, **overrides) -> MIPP:
        """The MIPP that ``settings`` (a selection's ``settings``) describe; ``overrides`` replace entries."""
        kept = {k: v for k, v in settings.items() if k not in ("budget_passes", "refine_losses")}
        if "macs" in kept:  # written before macs_removed: the fraction kept
            macs = kept.pop("macs")
            kept.setdefault("macs_removed", None if macs is None else 1 - macs)
        return cls(**{**kept, **overrides})

    @property
    def estimator(self) -> str:
        return self.criterion.name

    @property
    def sparsity(self) -> float | None:
        return self.budget.sparsity

    @property
    def macs_removed(self) -> float | None:
        return self.budget.macs_removed

    def __getattr__(self, name: str):
        # the criterion's settings read as MIPP's own (MIPP().k), as when they were MIPP's fields
        criterion = self.__dict__.get("criterion")
        if criterion is not None and name in criterion.settings():
            return getattr(criterion, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def settings(self) -> dict:
        """Everything that decides the selection, as plain values: MIPP(**settings) rebuilds it."""
        return {
            "estimator": self.criterion.name,
            "tolerance": self.tolerance,
            "sparsity": self.budget.sparsity,
            "macs_removed": self.budget.macs_removed,
            "n_samples": self.n_samples,
            "min_keep": self.min_keep,
            "joint": self.joint,
            "seed": self.seed,
            "channel": self.channel if isinstance(self.channel, str) else _plain(self.channel),
            "units": list(self.units),
            "groups": sorted(self.groups) if isinstance(self.groups, frozenset) else None,
            "refine": self.refine,
            **self.criterion.settings(),
        }

    def _include(self, group) -> bool:
        if group.kind not in self.units:
            return False
        if self.groups is None:
            return True
        return self.groups(group) if callable(self.groups) else group.name in self.groups

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "estimator")
        return f"MIPP({type(self.criterion).__name__}, {body})"

    # -- activations and a target alone --------------------------------------------------------------
    def select_layer(
        self, X: torch.Tensor, Y: torch.Tensor, name: str = "layer", *, group=None
    ) -> tuple[list[int], LayerResult]:
        """Kept node indices (sorted) of a layer with activations X (N, D) for a target Y (N, q), without a
        model: Y's columns are z-scored and the consumer's weights are estimated from (X, Y) by least
        squares (W = Cov(Y, X) Cov(X)^-1), so the decision preserves what a linear read-out of X gives Y
        (the loss criterion's MLPs predict Y itself), in nats about Y: what the read-out leaves of Y is noise
        on the tolerance channel. Those weights carry their sampling error, so for the
        nats criteria the nodes are first screened on Y itself (mipp.pruning.relevance: cross-fitted
        backward elimination by the chi-square test of each node's coefficients at the criterion's
        ``alpha``), the criterion decides among the relevant ones, and nodes related to what the kept nodes'
        read-out leaves of Y only nonlinearly are then added (cross-fitted KSG conditional MI and a local
        permutation test). A node independent of Y is kept at a rate below ``alpha`` whatever the tolerance.
        ``group``: a torch.distributed process group (see
        :meth:`select`)."""
        criterion, progress = self._distributed(group)
        if self.budget.given:
            raise ValueError("select_layer decides by tolerance; the sparsity / macs budgets apply to select(model)")
        X, Y = check_matrix("X", X), check_matrix("Y", Y)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but Y has {Y.shape[0]}")
        if X.shape[0] < criterion.min_samples:
            raise ValueError(f"got N={X.shape[0]} samples; the decision needs at least {criterion.min_samples}")
        t0 = time.perf_counter()
        Yz = (Y - Y.mean(0)) / Y.std(0).clamp_min(1e-300)
        gen = torch.Generator().manual_seed(self.seed)
        nodes, screened = list(range(X.shape[1])), list[NodeRecord]()
        alpha = getattr(criterion, "alpha", 0.05)  # the criterion's confidence, for the tests on Y
        if criterion.nats:  # the read-out's weights are fitted on these samples: Y's own test first
            nodes, screened = relevant_nodes(X, Yz, alpha, self.min_keep, gen)
        Xs = X[:, nodes]
        mean = Xs.mean(0)
        Xc = Xs - mean
        cov = Xc.T @ Xc / len(Xs)
        lam = getattr(criterion, "ridge", LSTSQ_RIDGE) * float(cov.diagonal().mean())
        weight = torch.linalg.solve(cov + lam * torch.eye(len(cov), dtype=cov.dtype), Xc.T @ Yz / len(Xs)).T
        # What the read-out leaves of Y is noise on the channel: a node is worth what it tells about Y, not about
        # the read-out (whose noise floor would otherwise be ``noise`` alone: noisy copies of one latent each
        # sharpened the read-out by more than the tolerance while telling Y ~0.05 nats). Residual mean square
        # over the degrees of freedom the fit leaves.
        resid = Yz - Xc @ weight.T
        dof = max(len(Xs) - len(nodes) - 1, 1)
        unexplained = float((resid * resid).sum(0).mean()) / dof
        columns = [torch.tensor([i]) for i in range(len(nodes))]
        block = Block(cov, mean, Xs, len(Xs), weight, columns, name, unexplained=unexplained)
        layer = Layer(name, len(nodes), [block], [torch.zeros(len(nodes), dtype=torch.bool)], ["target"], Yz)
        with tqdm(total=len(nodes), desc=name, file=sys.stderr, disable=not progress, leave=False) as bar:
            d = criterion.decide(layer, tolerance=self.tolerance, min_keep=self.min_keep, generator=gen, bar=bar)
        if screened:  # back to X's columns, the screen's records first
            d = dataclasses.replace(
                d,
                kept=[nodes[i] for i in d.kept],
                records=screened
                + [dataclasses.replace(r, node=nodes[r.node], step=len(screened) + r.step) for r in d.records],
            )
            layer = dataclasses.replace(layer, n_nodes=X.shape[1])
        if criterion.nats:  # exact linear combinations of other nodes carry nothing a rescue could find
            affine = {r.node for r in screened if r.rule == "affine"}
            candidates = [j for j in range(X.shape[1]) if j not in affine]
            d = self._nonlinear(X, Yz, d, candidates, alpha, gen)
        res = LayerResult.of(layer, d, criterion.nats)
        res.seconds["total"] = time.perf_counter() - t0
        return d.kept, res

    def _nonlinear(self, X, Yz, d: LayerDecision, candidates: list[int], alpha: float, gen) -> LayerDecision:
        """The decision plus the nodes whose relation to what the kept nodes' linear read-out leaves of Y is
        not linear (mipp.pruning.relevance.nonlinear_rescue); their records replace the earlier ones."""
        A = torch.cat([X[:, d.kept], torch.ones(len(X), 1, dtype=X.dtype)], 1)
        resid = Yz - A @ torch.linalg.lstsq(A, Yz, driver="gelsd").solution  # SVD: kept nodes may be collinear
        t0 = time.perf_counter()
        found = nonlinear_rescue(X, resid, d.kept, candidates, alpha, gen)
        seconds = {**d.seconds, "nonlinear": time.perf_counter() - t0}
        if not found:
            return dataclasses.replace(d, seconds=seconds)
        added = {r.node for r in found}
        records = [r for r in d.records if r.node not in added]
        records += [dataclasses.replace(r, step=len(records) + r.step) for r in found]
        return dataclasses.replace(d, kept=sorted([*d.kept, *added]), records=records, seconds=seconds)

    # -- a model -------------------------------------------------------------------------------------
    def _distributed(self, group) -> tuple[Criterion, bool]:
        """The criterion to run and whether to show progress: in one process the criterion itself; with a
        process group its distributed form (every rank the same decisions), progress on rank 0 only."""
        if group is None:
            return self.criterion, self.progress
        criterion = self.criterion.distributed(group)
        import torch.distributed as dist

        return criterion, self.progress and dist.get_rank(group) == 0

    def select(self, model: nn.Module, inputs, *, group=None) -> Selection:
        """Decide every prunable group of ``model`` from its activations on ``inputs`` (a tensor of inputs,
        or an iterable of batches such as a DataLoader: tensors, (inputs, labels) tuples or dicts of
        keyword inputs; the first ``n_samples`` samples are used, an iterable is consumed once).

        With a budget (``sparsity`` or ``macs_removed``; mipp.pruning.budget) a nats criterion (KSG, the screen)
        ranks every decided group's nodes once and cuts once: ``settings["tolerance"]`` then holds the
        largest cost removed (in output nats with ``channel="output"``). The loss criterion searches its
        tolerance instead (``settings["budget_passes"]``: the passes run). A node budget is met exactly.

        ``group``: an initialised torch.distributed process group. Call ``select`` on every rank with the same
        model, inputs and settings; each KSG test's query rows are split across the ranks and every rank
        returns the same Selection as one process (bit for bit: the counts are exact integers, the digamma
        sums run in the single-process order). The least-squares screen runs on every rank."""
        advise_threads()
        criterion, progress = self._distributed(group)
        cap = capture_model(
            model,
            inputs,
            n_samples=self.n_samples,
            joint=self.joint,
            seed=self.seed,
            min_samples=criterion.min_samples,
            include=self._include,
            channel=self.channel if isinstance(self.channel, OutputChannel) else None,
            progress=progress,
        )
        t0 = time.perf_counter()
        settings = self.settings()
        if not self.budget.given:
            keep, results = self._pass(cap, criterion, self.tolerance, progress)
        elif criterion.nats:
            keep, results, settings["tolerance"], losses, refine_seconds = self._allocate(cap, criterion, progress)
            if losses is not None:
                settings["refine_losses"] = losses
        else:
            keep, results, settings["tolerance"], settings["budget_passes"] = search_tolerance(
                cap,
                lambda t: self._pass(cap, criterion, t, False),
                criterion,
                self.budget,
                self.tolerance,
                self.min_keep,
                progress,
            )
        seconds = {"capture": cap.seconds, "decisions": time.perf_counter() - t0}
        if self.refine:
            seconds["refine"] = refine_seconds  # part of the decisions
        return Selection(cap.structure, keep, cap.example, results, cap.means, seconds, settings)

    def _allocate(self, cap: Captured, criterion: Criterion, progress: bool):
        """A budget by one ranking and one cut (mipp.pruning.budget.allocate): every group's greedy removal
        order with its costs (each group against its unpruned consumers), the counts that minimise the summed
        cost (searched end to end with ``refine``), then the nodes chosen at those counts from the output back
        (the screen's order, with the cuts of the groups decided before). Returns (keep, results, the largest
        cost removed, the refinement's calibration losses or None)."""
        gen = torch.Generator().manual_seed(self.seed)

        def sequence(layer, bar):
            return criterion.decide(layer, tolerance=math.inf, min_keep=self.min_keep, generator=gen, bar=bar)

        _, ranked = walk(cap, sequence, progress, criterion.nats, independent=True)
        curves = cost_curves(ranked)
        groups = cap.structure.groups
        n_nodes = {g: groups[g].n_nodes for g in curves}
        macs = MacModel(cap.model, cap.example, cap.structure) if self.budget.macs_removed is not None else None
        removed = allocate(curves, n_nodes, self.budget, self.min_keep, macs)
        state = gen.get_state()  # every decision at given counts draws from the same generator state

        def decide_at(removed: dict[str, int], show: bool, judged: bool = False):
            screen = ScreenCriterion(
                {g: n_nodes[g] - r for g, r in removed.items()},
                noise=getattr(criterion, "noise", 0.01),
                ridge=getattr(criterion, "ridge", LSTSQ_RIDGE),
            )
            at = torch.Generator().set_state(state)

            def final(layer, bar):
                if layer.cut:
                    return screen.decide(layer, tolerance=0.0, min_keep=self.min_keep, generator=at, bar=bar)
                # nothing decided before changed this group's consumers: its greedy order is the one ranked
                gone = [node for node, _ in curves[layer.name][: removed[layer.name]]]
                return _prefix(layer, ranked[layer.name], gone, judged)

            return walk(cap, final, show, criterion.nats)

        losses, t0 = None, time.perf_counter()
        if self.refine:
            loss = self._calibration_loss(cap)
            removed, losses = refine(
                curves,
                n_nodes,
                self.budget,
                self.min_keep,
                macs,
                lambda r: loss(decide_at(r, False, judged=True)[0]),
                self.refine,
                progress,
            )
        refine_seconds = time.perf_counter() - t0
        keep, results = decide_at(removed, progress)
        cut = max((c for g, r in removed.items() for _, c in curves[g][:r]), default=0.0)
        return keep, results, cut, losses, refine_seconds

    def _calibration_loss(self, cap: Captured):
        """keep -> the output error of the model pruned to ``keep``, each consumer re-fitted by least squares
        from its captured moments (mipp.pruning.refit.refit_moments), relative to the dense output's
        variance, on ``channel.samples`` captured samples spread over all the batches (eval semantics)."""
        channel = self.channel if isinstance(self.channel, OutputChannel) else OutputChannel()
        select = channel.output or first_tensor
        batches = spread_samples(cap.batches, channel.samples)
        device = next((p.device for p in cap.model.parameters()), torch.device("cpu"))

        def outputs(model: nn.Module) -> torch.Tensor:
            with eval_mode(model), torch.no_grad():
                parts = [select(run_model(model, to_device(b, device))) for b in batches]
            return torch.cat([y.detach().reshape(y.shape[0], -1).double() for y in parts])

        dense = outputs(cap.model)
        scale = float(dense.var(0, unbiased=False).mean()) * dense.numel()
        if scale <= 0:
            raise ValueError("the model's output does not vary over the inputs: no calibration loss can be defined")

        def loss(keep: dict[str, torch.Tensor]) -> float:
            sel = Selection(cap.structure, keep, cap.example)
            small = sel.apply(cap.model, fold=False)
            refit_moments(small, cap.model, consumer_plan(cap.structure, sel.keep, cap.model), cap.stats)
            return float(((outputs(small) - dense) ** 2).sum()) / scale

        return loss

    def _pass(self, cap: Captured, criterion: Criterion, tolerance: float, progress: bool):
        """One decision pass over every group at ``tolerance`` (the channel noise drawn from the run's seed)."""
        gen = torch.Generator().manual_seed(self.seed)

        def decide(layer, bar):
            return criterion.decide(layer, tolerance=tolerance, min_keep=self.min_keep, generator=gen, bar=bar)

        return walk(cap, decide, progress, criterion.nats)


def _make_criterion(criterion, estimator, settings: dict) -> Criterion:
    if isinstance(criterion, Criterion):
        if estimator is not None or settings:
            raise TypeError(
                f"pass the settings {sorted(settings) or ['estimator']} to the criterion object, not to MIPP"
            )
        return criterion
    if criterion is not None and estimator is not None:
        raise TypeError("give the criterion once: criterion= or its older name estimator=")
    name = criterion if criterion is not None else (estimator if estimator is not None else "ksg")
    if not isinstance(name, str) or name not in CRITERIA:
        raise ValueError(f"estimator must be one of {sorted(CRITERIA)} (or a Criterion object), got {name!r}")
    cls = CRITERIA[name]
    try:
        return cls(**settings)
    except TypeError:
        valid = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]  # type: ignore[arg-type]
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise TypeError(
                f"MIPP got {unknown}, which the {name} criterion does not take (its settings: {valid})"
            ) from None
        raise


def _plain(channel: OutputChannel) -> dict:
    return {
        "probes": channel.probes,
        "samples": channel.samples,
        "output": None if channel.output is None else repr(channel.output),
    }


def _prefix(layer: Layer, result: LayerResult, gone: list[int], judged: bool = False) -> LayerDecision:
    """The decision that removes ``gone``, the first nodes of a ranked (fully removed) group's order;
    ``judged``: a candidate of the refinement, which reads only the kept nodes (no records, no reconstruction
    error: about 0.1 s of a MiniLM candidate's 1.5 s)."""
    removed = set(gone)
    kept = [i for i in range(result.n_before) if i not in removed]
    if judged:
        return LayerDecision(kept, [], math.nan)
    records = [dataclasses.replace(r, removed=r.node in removed) for r in sorted(result.records, key=lambda r: r.step)]
    return LayerDecision(kept, records, recon_error(layer, gone))
