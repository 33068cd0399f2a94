"""The MIPP decision for one layer: remove a node only when the data show that what it adds is negligible.

Setting (../shared/wide_layers.md, sections 2-3). The layer's nodes are read by one or more *consumer*
layers through feature rows x (capture.py) with pre-activations z = W x + b. The information a node i adds
about what its consumers compute, beyond the nodes S kept with it, is measured through the *tolerance
channel*: the consumer's pre-activations observed with Gaussian noise of variance
sigma^2 = noise * (mean variance of the consumer's pre-activations). Then

    Delta_i = I(x_i; z + noise | x_S)

is finite, is 0 for a constant, a duplicate or an exact affine combination of S, and is small for a node
whose unique part moves the consumer by less than the noise. Because z is linear in x, only the part of
x_i that S does not explain linearly (its least-squares residual e_i) reaches the consumer, through the
consumer's re-fitted weights W_i:  Delta_i = I(e_i; e_i W_i^T / sigma + xi),  xi ~ N(0, I). Its dimension
is the node's (1 for a dense node; the columns of a conv channel), never the layer's.

Decision (non-inferiority, the burden of proof on removing): a node is removed when the upper one-sided
(1 - alpha) confidence bound of the KSG estimate of Delta_i is below ``tolerance`` nats; otherwise it is
kept. A weak test therefore keeps nodes. The bound is capped by the Gaussian closed form below, evaluated
at the upper (1 - alpha) chi-square bound of the residual covariance: for a given residual covariance,
Gaussian residuals carry the most information through a Gaussian channel, so a KSG value above it is
estimation bias (KSG is biased upward on mixed distributions, e.g. residuals with an atom from a constant
image background). Constants and exact affine combinations (relative residual below
AFFINE_TOL) are removed without a test.

Order (the screen): nodes are visited cheapest first by the Gaussian closed form of the same quantity,
Delta_i(Gauss) = 1/2 logdet(I + W_i V_i W_i^T / sigma^2) with V_i = Var(x_i | x_S), summed over consumers
(= 1/2 log(1 + ||w_i||^2 Var(x_i | x_S) / sigma^2) for a dense node; an upper bound of the linear channel's
information for any distribution of e_i). After each removal the consumer's weights are re-fitted by least
squares (W <- W - W_i P_ii^-1 P_i,rest) and the precision matrix is downdated (P <- P/P_ii), so every
step costs O(F^2) and the layer O(F^3) for F consumer features; every max(REFRESH, F/2) removals both are
recomputed from the covariance to stop rounding from accumulating.

The KSG statistic uses leave-one-out residuals (e_n / (1 - h_n), h the leverage of the regression on S),
so a residual is never fitted to the sample it is evaluated on, and one feature row per input sample (a
random position of a convolution). When the signal has more than ``m_max`` directions, KSG estimates the
leading ``m_max`` and the Gaussian closed form adds the rest (an upper bound for those directions).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

import mipp

# A node whose least-squares residual on the kept nodes is below this fraction of its own spread (in
# norm) is an exact affine function of them. float32 activations carry ~6e-8 relative rounding per
# operation and sums of thousands of terms stay below 1e-6; trained and random layers' nodes measured
# here are all above 1e-2, so the rule only meets true identities.
AFFINE_TOL = 1e-5
# Removals between recomputations of the precision matrix and weights from the covariance: at least this,
# and half the columns present. Measured without any recomputation, 280 in-place downdates of LeNet-300-100's
# 300-unit layer drift by 6e-9 (P) and 2e-9 (W) relative; a recomputation costs a matrix inverse.
REFRESH = 32


@dataclass
class Block:
    """One consumer's view of a layer: the consumer's feature statistics and weights, and the columns of
    each node among its features (empty where the consumer does not read that node)."""

    cov: torch.Tensor  # (F, F) float64
    mean: torch.Tensor  # (F,)
    rows: torch.Tensor  # (N, F) one uncentred row per input sample
    n_rows: int  # rows behind cov (leverage of a row is 1/n_rows + x P x / n_rows)
    weight: torch.Tensor  # (q, F) float64 pre-activation weights (kept outputs only)
    columns: list[torch.Tensor]  # per node: LongTensor of its feature columns
    name: str = "consumer"

    def __post_init__(self):
        F = self.cov.shape[0]
        if (
            self.cov.shape != (F, F)
            or self.mean.shape != (F,)
            or self.rows.dim() != 2
            or self.rows.shape[1] != F
            or self.weight.dim() != 2
            or self.weight.shape[1] != F
        ):
            raise ValueError(
                f"block {self.name!r}: inconsistent shapes cov {tuple(self.cov.shape)}, mean "
                f"{tuple(self.mean.shape)}, rows {tuple(self.rows.shape)}, weight "
                f"{tuple(self.weight.shape)}"
            )

    @property
    def target_variance(self) -> float:
        """Mean variance of the consumer's pre-activations (over its kept outputs)."""
        w = self.weight
        return float(((w @ self.cov) * w).sum(1).mean()) if w.shape[0] else 0.0


@dataclass
class NodeRecord:
    node: int
    step: int  # order in which the node was decided (0 first)
    rule: str  # "constant", "affine", "unread", "test", "min_keep"; "budget": given back
    removed: bool
    # KSG backend: the closed-form Delta when decided (nats; nan for untested rules), the KSG estimate of
    # Delta (plus the Gaussian remainder) and its upper (1 - alpha) confidence bound, removed when below the
    # tolerance. Loss backend (loss.py): the node's single-node held-out loss, the mean loss increase d and
    # its lower confidence bound, kept when above the tolerance. ``upper`` is the decision statistic of both:
    # the larger, the closer the node was to being kept.
    gaussian: float
    estimate: float
    upper: float


@dataclass
class LayerDecision:
    kept: list[int]
    records: list[NodeRecord] = field(default_factory=list)
    recon_error: float = 0.0  # relative LS reconstruction error of the consumers on the kept nodes
    seconds: dict[str, float] = field(default_factory=dict)


class _State:
    """One block's least-squares state. P (precision), W (re-fitted weights) and X (centred rows) keep the
    columns present at the last rebuild; a removal updates them in place, and the update itself zeroes the
    removed columns' rows and columns of P and columns of W (P_gg - P_gg P_gg^-1 P_gg = 0), so nothing is
    reallocated until the next rebuild."""

    def __init__(self, block: Block, drop: torch.Tensor, ridge: float):
        self.block, self.ridge = block, ridge
        F = block.cov.shape[0]
        var = block.cov.diagonal()
        scale = float(var.max()) if F else 0.0
        constant = var <= 1e-24 * max(scale, 1e-300)
        self.present = torch.nonzero(~(constant | drop)).flatten()  # original columns at the rebuild
        self.where = torch.full((F + 1,), -1, dtype=torch.long)  # original column -> position (-1: gone)
        width = max((len(c) for c in block.columns), default=0)
        self.node_cols = torch.full((len(block.columns), max(width, 1)), F, dtype=torch.long)  # F: padding
        for i, c in enumerate(block.columns):
            self.node_cols[i, : len(c)] = c
        self.centred_all = block.rows - block.mean
        self.sigma2 = 0.0
        self.removed_since = 0
        self._rebuild()

    def _rebuild(self):
        b = self.block
        if hasattr(self, "live"):
            self.present = self.present[self.live]
        S = self.present
        self.live = torch.ones(len(S), dtype=torch.bool)
        self.where.fill_(-1)
        self.where[S] = torch.arange(len(S))
        C = b.cov[S][:, S]
        lam = self.ridge * float(C.diagonal().mean()) if len(S) else 0.0
        self.P = torch.linalg.inv(C + lam * torch.eye(len(S), dtype=C.dtype)) if len(S) else C
        # the re-fitted weights on S: W C[:, S] C_SS^-1 (exact for the columns already gone)
        self.W = (b.weight @ b.cov[:, S]) @ self.P if len(S) else b.weight[:, :0]
        self.X = self.centred_all[:, S]
        self.h = 1.0 / b.n_rows + ((self.X @ self.P) * self.X).sum(1) / b.n_rows
        self.removed_since = 0

    @property
    def n_present(self) -> int:
        return int(self.live.sum())

    def cols(self, node: int) -> torch.Tensor:
        pos = self.where[self.block.columns[node]]
        return pos[pos >= 0]

    def cols_of(self, nodes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions (n, width) of the nodes' present columns, -1 where absent or padding; counts (n,))."""
        pos = self.where[self.node_cols[nodes]]
        return pos, (pos >= 0).sum(1)

    def residual(self, g: torch.Tensor):
        """In-sample residuals (N, |g|) of the columns g on the other present columns, and P_gg."""
        Pgg = self.P[g][:, g]
        return self.X @ self.P[:, g] @ torch.linalg.inv(Pgg), Pgg

    def remove(self, g: torch.Tensor, e: torch.Tensor, Pgg: torch.Tensor):
        inv = torch.linalg.inv(Pgg)
        self.h -= ((e @ Pgg) * e).sum(1) / self.block.n_rows
        Pg = self.P[g]  # (|g|, F) rows of the removed columns
        self.W.addmm_(self.W[:, g] @ inv, Pg, alpha=-1.0)
        self.P.addmm_(Pg.T @ inv, Pg, alpha=-1.0)
        self.live[g] = False
        self.where[self.present[g]] = -1
        self.removed_since += 1
        if self.removed_since >= max(REFRESH, len(self.present) // 2):
            self._rebuild()

    def error(self) -> float:
        """Mean squared error of the consumer's re-fitted pre-activations on the present columns."""
        b = self.block
        full = float(((b.weight @ b.cov) * b.weight).sum())
        S = self.present[self.live]
        if not len(S):
            return full
        W = self.W[:, self.live]
        kept = float(((W @ b.cov[S][:, S]) * W).sum())
        return max(full - kept, 0.0)


def relative_error(states: list[_State]) -> float:
    """The consumers' least-squares reconstruction error from the present columns, relative to their
    pre-activations' total variance (a layer's ``recon_error``, for both estimators)."""
    full = sum(float(((st.block.weight @ st.block.cov) * st.block.weight).sum()) for st in states)
    return sum(st.error() for st in states) / max(full, 1e-300)


def chi2_upper_factor(dof: int, alpha: float) -> float:
    """dof / chi2_alpha(dof): the factor that turns a residual variance estimated with ``dof`` degrees of
    freedom into its one-sided upper (1 - alpha) confidence bound (Wilson-Hilferty quantile)."""
    dof = max(dof, 1)
    z = statistics.NormalDist().inv_cdf(alpha)
    q = dof * max(1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof)), 1e-3) ** 3
    return dof / q


def gaussian_scores(states: list[_State], nodes: list[int], inflate: float = 1.0) -> torch.Tensor:
    """Closed-form Delta (nats) of each node given the present columns, summed over the consumers;
    ``inflate`` multiplies the residual covariance (its upper confidence bound)."""
    total = torch.zeros(len(nodes), dtype=torch.float64)
    for st in states:
        pos, counts = st.cols_of(nodes)
        for size in counts.unique().tolist():
            if size == 0:
                continue
            sel = torch.nonzero(counts == size).flatten()
            rows = pos[sel]
            g = rows[rows >= 0].view(len(sel), size)  # (n, size), in order
            if size == 1:  # a neuron: no matrices
                c = g[:, 0]
                snr = (st.W[:, c] ** 2).sum(0) * inflate / (st.P[c, c] * st.sigma2)
                total[sel] += 0.5 * torch.log1p(snr)
                continue
            Pgg = st.P[g[:, :, None], g[:, None, :]]  # (n, size, size)
            V = torch.linalg.inv(Pgg) * inflate
            Wg = st.W[:, g].permute(1, 0, 2)  # (n, q, size)
            A = Wg.transpose(1, 2) @ Wg / st.sigma2
            eye = torch.eye(size, dtype=A.dtype)
            total[sel] += 0.5 * torch.linalg.slogdet(eye + V @ A).logabsdet
    return total


def _signal(residuals: list[torch.Tensor], weights: list[torch.Tensor], m_max: int) -> tuple[torch.Tensor, float]:
    """The node's whitened signal s = [e_b W_b^T]_b (N, sum q_b): its leading m_max principal directions
    (N, m) and the Gaussian information of the remaining ones (nats). s = E Omega with E the residuals
    (N, sum g_b) and Omega = blockdiag(W_b^T) (sum g_b, sum q_b); with Omega = U S V^T, s has the singular
    values of E U S (N, rank <= sum g_b), so nothing of size q is decomposed."""
    E = torch.cat(residuals, dim=1)
    omega = torch.block_diag(*[w.T for w in weights])
    u, sv, _ = torch.linalg.svd(omega, full_matrices=False)
    r = int((sv > sv[0] * 1e-12).sum()) if len(sv) else 0
    a = E @ (u[:, :r] * sv[:r])
    n = a.shape[0]
    if a.shape[1] == 1:
        return a, 0.0
    ua, sa, _ = torch.linalg.svd(a, full_matrices=False)
    m = max(1, min(m_max, int((sa > sa[0] * 1e-9).sum())))
    return ua[:, :m] * sa[:m], 0.5 * float(torch.log1p(sa[m:] ** 2 / n).sum())


def decide_layer(
    blocks: list[Block],
    n_nodes: int,
    *,
    k: int,
    alpha: float,
    tolerance: float,
    noise: float,
    min_keep: int,
    generator: torch.Generator,
    ridge: float = 1e-9,
    m_max: int = 2,
    drop: list[torch.Tensor] | None = None,
    bar=None,
    local_mi=None,
) -> LayerDecision:
    """Decide every node of a layer (see the module docstring). ``drop``: per block, a boolean mask of
    feature columns already removed by other groups (left out of every regression). ``local_mi(a, b)``: the
    KSG local values of I(a; b) (normalized), by default ``mipp.mi``; mipp.distributed passes one that
    splits the query rows across ranks."""
    if local_mi is None:

        def local_mi(a, b):
            return mipp.mi(a, b, k, normalize=True, reduction="none")

    import time

    t0 = time.perf_counter()
    z = statistics.NormalDist().inv_cdf(1.0 - alpha)
    states = [
        _State(b, drop[j] if drop is not None else torch.zeros(b.cov.shape[0], dtype=torch.bool), ridge)
        for j, b in enumerate(blocks)
    ]
    for st in states:
        st.sigma2 = noise * max(st.block.target_variance, 1e-300)
    out = LayerDecision(kept=[])
    alive = set(range(n_nodes))
    undecided = []
    step = 0
    for i in range(n_nodes):
        # every column constant (or none read)
        if all(len(st.cols(i)) == 0 for st in states) and len(alive) > min_keep:
            alive.discard(i)
            out.records.append(NodeRecord(i, step, "constant", True, 0.0, 0.0, 0.0))
            step += 1
            continue
        undecided.append(i)
    if bar is not None:
        bar.reset(total=n_nodes)
        bar.update(n_nodes - len(undecided))
    t_screen = t_tests = 0.0
    while undecided:
        if len(alive) <= min_keep:
            for i in undecided:
                out.records.append(NodeRecord(i, step, "min_keep", False, math.nan, math.nan, math.nan))
                step += 1
            break
        t1 = time.perf_counter()
        scores = gaussian_scores(states, undecided)
        j = int(scores.argmin())
        i = undecided.pop(j)
        gauss = float(scores[j])
        residuals, weights, removal, var_res, var_all = [], [], [], 0.0, 0.0
        for st in states:
            g = st.cols(i)
            if not len(g):
                continue
            e, Pgg = st.residual(g)
            removal.append((st, g, e, Pgg))
            var_res += float(torch.linalg.inv(Pgg).diagonal().sum())
            var_all += float(st.block.cov[st.present[g]][:, st.present[g]].diagonal().sum())
            h = st.h - ((e @ Pgg) * e).sum(1) / st.block.n_rows
            loo = e / (1.0 - h).clamp_min(1e-6)[:, None]
            residuals.append(loo)
            weights.append(st.W[:, g] / math.sqrt(st.sigma2))
        t_screen += time.perf_counter() - t1
        # the closed form at the upper confidence bound of the residual variance (dof: the covariance's rows,
        # samples x positions, minus the regressors)
        dof = min(st.block.n_rows - st.n_present - 1 for st in states)
        gauss_upper = float(gaussian_scores(states, [i], chi2_upper_factor(dof, alpha))[0])
        t1 = time.perf_counter()
        # the ridge puts a floor of about ridge x (dependencies) under an exact combination's residual variance
        if var_res <= (AFFINE_TOL**2 + 100 * ridge) * var_all:
            rule, estimate, upper = "affine", 0.0, 0.0
        elif all(float(w.abs().max()) == 0.0 for w in weights):
            rule, estimate, upper = "unread", 0.0, 0.0  # no consumer weight reads it
        else:
            rule = "test"
            signal, remainder = _signal(residuals, weights, m_max)
            observed = signal + torch.randn(signal.shape, generator=generator, dtype=signal.dtype)
            local = local_mi(signal, observed)
            estimate = float(local.mean()) + remainder
            # the Gaussian value bounds the true information (max entropy for the residual's covariance):
            # KSG above it is estimation bias (e.g. residuals with an atom: a constant image background)
            upper = min(estimate + z * float(local.std()) / math.sqrt(len(local)), gauss_upper)
        remove = upper < tolerance
        t_tests += time.perf_counter() - t1
        t1 = time.perf_counter()
        if remove:
            alive.discard(i)
            for st, g, e, Pgg in removal:
                st.remove(g, e, Pgg)
        out.records.append(NodeRecord(i, step, rule, remove, gauss, estimate, upper))
        step += 1
        t_screen += time.perf_counter() - t1
        if bar is not None:
            bar.update()
    out.kept = sorted(alive)
    out.recon_error = relative_error(states)
    out.seconds = {"screen": t_screen, "tests": t_tests, "total": time.perf_counter() - t0}
    return out


def screen_keep(
    blocks: list[Block], n_nodes: int, n_keep: int, *, ridge: float = 1e-9, drop: list[torch.Tensor] | None = None
) -> list[int]:
    """The least-squares screen alone (no KSG): remove nodes greedily by the closed-form Delta (equivalently
    by the re-fitted reconstruction error ||W_i||^2 Var(x_i | rest) each removal adds), with the same
    rank-one updates as :func:`decide_layer`, until ``n_keep`` remain. Returns the kept nodes, sorted."""
    states = [
        _State(b, drop[j] if drop is not None else torch.zeros(b.cov.shape[0], dtype=torch.bool), ridge)
        for j, b in enumerate(blocks)
    ]
    for st in states:
        st.sigma2 = max(st.block.target_variance, 1e-300)
    alive = list(range(n_nodes))
    while len(alive) > n_keep:
        i = alive.pop(int(gaussian_scores(states, alive).argmin()))
        for st in states:
            g = st.cols(i)
            if len(g):
                e, Pgg = st.residual(g)
                st.remove(g, e, Pgg)
    return sorted(alive)
