"""The least-squares state every layer criterion shares: a consumer's view of a layer (:class:`Block`) and
the precision matrix and re-fitted weights of the kept nodes, downdated by one rank-one (or rank-|g|)
update per removal (:class:`LSState`); the closed-form Gaussian-channel information of each node given the
others (:func:`gaussian_scores`), the relative reconstruction error of the kept nodes (:func:`relative_error`);
the screen's order (:func:`next_node`) and the traversal of a layer that the testing criteria share
(:func:`traverse`).

For consumer pre-activations z = W x + b read through a Gaussian channel of variance sigma^2, the
information node i adds beyond the kept nodes S is, for Gaussian nodes,
Delta_i = 1/2 logdet(I + W_i V_i W_i^T / sigma^2) with V_i = Var(x_i | x_S) (= 1/2 log(1 + ||w_i||^2
Var(x_i | x_S) / sigma^2) for a one-column node: the least-squares / OBS saliency, ../shared/wide_layers.md
section 3). After a removal the consumer's weights are re-fitted by least squares
(W <- W - W_i P_ii^-1 P_i,rest) and the precision matrix is downdated (P <- P/P_ii), so every step costs
O(F^2) and a layer O(F^3) for F consumer features; every max(REFRESH, F/2) removals both are recomputed from
the covariance to stop rounding from accumulating.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from dataclasses import dataclass

import torch

# A node whose least-squares residual on the kept nodes is below this fraction of its own spread (in
# norm) is an exact affine function of them. float32 activations carry ~6e-8 relative rounding per
# operation and sums of thousands of terms stay below 1e-6; trained and random layers' nodes measured
# here are all above 1e-2, so the rule only meets true identities.
AFFINE_TOL = 1e-5
# Removals between recomputations of the precision matrix and weights from the covariance: at least this,
# and half the columns present. Measured without any recomputation, 280 in-place downdates of LeNet-300-100's
# 300-unit layer drift by 6e-9 (P) and 2e-9 (W) relative; a recomputation costs a matrix inverse.
REFRESH = 32
# Removals between compactions: the removed columns' (zeroed) rows and columns of P, W and X are dropped, so
# every later update touches only the present columns (the updates' cost falls from F^2 to |S|^2 per step,
# a third of the layer's total); a compaction copies once what an update touches.
COMPACT = 32


def spd_inverse(C: torch.Tensor) -> torch.Tensor:
    """C^-1 for a symmetric positive definite C from its Cholesky factor: half the flops of the LU inverse
    (measured 1.5-1.9x faster at 2,304 columns, the same entries to 1e-14 relative). Where a column's pivot
    is below 1e-8 of its own variance (the share of it that the columns before it leave unexplained: a
    near-duplicate held apart by the ridge alone) or the factorisation fails, the LU inverse: there the
    rank-one downdates that start from P carry its rounding, and the LU's measured smaller (a layer with
    exact duplicates: re-fit error below 1e-9 from the LU inverse, 3.3e-8 from the Cholesky one). Relative
    to each column's variance, since Cholesky's rounding does not depend on the columns' scales: the raw
    pivots of a 64-512-channel ResNet-18's 4,608-column consumer spanned 7.5e8 (its variances 3.4e9, from
    nearly dead channels) and took the LU (1.9 s), where the relative ones span 172."""
    L, info = torch.linalg.cholesky_ex(C)
    pivots = L.diagonal() ** 2 / C.diagonal()
    if int(info) == 0 and len(pivots) and float(pivots.min()) > 1e-8 * float(pivots.max()):
        return torch.cholesky_inverse(L)
    return torch.linalg.inv(C)


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
    # the weights are whitened by the output metric (mipp.pruning.sensitivity): the channel noise is then
    # ``noise`` itself, in units of the model output's variance, not of this consumer's
    whitened: bool = False
    # variance of the consumer's output that no linear read-out of the layer explains (select_layer's Y, whose
    # read-out's weights are estimated): noise on the channel that every node's signal competes with
    unexplained: float = 0.0
    # the precision of the consumer's columns at a state's first build, shared by the states built on one capture
    # (mipp.pruning.walk.Captured.precisions): a budget's ranking walk and its final walk (and every candidate
    # of its refinement) start the same consumers from the same columns
    precisions: dict | None = dataclasses.field(default=None, repr=False, compare=False)

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

    @functools.cached_property
    def output_variances(self) -> torch.Tensor:
        """(q,) variance of each kept output's pre-activation: a q x F x F product, computed once (the channel's
        scale and the reconstruction error read it, the latter twice per layer)."""
        return ((self.weight @ self.cov) * self.weight).sum(1)

    @property
    def energy(self) -> float:
        """Total variance of the consumer's pre-activations (summed over its kept outputs)."""
        return float(self.output_variances.sum())

    @property
    def target_variance(self) -> float:
        """Mean variance of the consumer's pre-activations (over its kept outputs)."""
        return float(self.output_variances.mean()) if self.weight.shape[0] else 0.0


class LSState:
    """One block's least-squares state. P (precision), W (re-fitted weights) and X (centred rows) keep the
    columns present at the last rebuild or compaction; a removal updates W in place, and the update itself
    zeroes the removed columns of W (and, in P, P_gg - P_gg P_gg^-1 P_gg = 0), so nothing is reallocated
    until the next compaction.

    P's downdates are deferred: the precision is P - A B with the removals' factors (A_t = P_g,:^T P_gg^-1,
    B_t = P_g,:) stacked as columns of A and rows of B, applied by one product at the next compaction (every
    COMPACT removals). What a step reads of P is current all the same: the removed node's rows
    (:meth:`prec_rows`, P_g,: - A_g B), and every node's diagonal block, kept current by the removals as the
    Gram blocks of W are. One rank-|g| update of P per removal streamed all of P through memory (F^2 entries
    read and written for 2 |g| F^2 flops); COMPACT of them as one product run at the arithmetic's speed."""

    live: torch.Tensor  # (present columns,) bool: not removed since the last rebuild or compaction

    def __init__(self, block: Block, drop: torch.Tensor, ridge: float, rows: bool = True, shared: bool = True):
        # rows: keep the centred sample rows and their leverages (what a test on the residuals needs); shared:
        # the first build reads and fills the block's shared precisions (:meth:`_initial_precision`)
        self.block, self.ridge, self.rows, self.shared = block, ridge, rows, shared
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
        self._rebuild(first=True)

    def _rebuild(self, first: bool = False):
        """P, W (and X, h) recomputed from the covariance on the present columns; ``first``: the build in
        __init__, whose columns are all present and whose precision may be shared (:meth:`_initial_precision`)."""
        b = self.block
        if not first:
            self.present = self.present[self.live]
        S = self.present
        self.live = torch.ones(len(S), dtype=torch.bool)
        self.where.fill_(-1)
        self.where[S] = torch.arange(len(S))
        self.P = self._initial_precision(S) if first else self._precision(S)
        # the re-fitted weights on S: W C[:, S] C_SS^-1 (exact for the columns already gone)
        self.W = (b.weight @ b.cov[:, S]) @ self.P if len(S) else b.weight[:, :0]
        if self.rows:
            self.X = self.centred_all[:, S]
            self.h = 1.0 / b.n_rows + ((self.X @ self.P) * self.X).sum(1) / b.n_rows
        self.wn = (self.W * self.W).sum(0)  # squared column norms of W, kept current by the removals
        self._clear_pending()
        self.pdiag = self.P.diagonal().clone()  # P's diagonal, current (the scores of one-column nodes)
        if self.node_cols.shape[1] > 1:
            # W_h^T W_h of every node h over its columns (slots of node_cols; absent ones 0), kept current by the
            # removals as wn is: the scores of multi-column nodes read them instead of gathering W's q x |h|
            # columns of every node at every step (a 512-channel conv layer's scores: 2.4M entries a step);
            # likewise P's diagonal block of every node
            Wn = self._node_view(self.W)
            self.gram = torch.einsum("qnw,qnv->nwv", Wn, Wn)
            pos = self.where[self.node_cols]
            inside = (pos >= 0)[:, :, None] & (pos >= 0)[:, None, :]
            self.pblock = self.P[pos.clamp_min(0)[:, :, None], pos.clamp_min(0)[:, None, :]] * inside
        self.removed_since = 0
        self.rebuilt_size = len(S)

    def _precision(self, S: torch.Tensor) -> torch.Tensor:
        """The (ridged) inverse of the covariance of the columns S."""
        C = self.block.cov[S][:, S]
        lam = self.ridge * float(C.diagonal().mean()) if len(S) else 0.0
        return spd_inverse(C + lam * torch.eye(len(S), dtype=C.dtype)) if len(S) else C

    def _initial_precision(self, S: torch.Tensor) -> torch.Tensor:
        """The precision at the first build, from the block's shared precisions where they hold it for these
        columns and ridge. They keep one per consumer, the first asked for: a budget's walks ask for the same one
        (a 4,608-column inverse, about 0.5 s) and keep no more than the covariance's own size per consumer. Never
        modified in place: a compaction copies the live part first, a rebuild replaces it."""
        cache = self.block.precisions if self.shared else None
        if cache is None:
            return self._precision(S)
        key = (self.ridge, S.numpy().tobytes())
        if key in cache:
            return cache[key]
        P = self._precision(S)
        if not cache:
            cache[key] = P
        return P

    def _clear_pending(self):
        width = self.node_cols.shape[1]
        F = len(self.present)
        self.A = torch.empty(F, COMPACT * width, dtype=self.P.dtype)  # the deferred factors, r columns / rows used
        self.B = torch.empty(COMPACT * width, F, dtype=self.P.dtype)
        self.r = 0

    @property
    def precision(self) -> torch.Tensor:
        """The current precision matrix of the columns present at the last compaction (F, F): P minus the
        deferred downdates (the removed columns' rows and columns 0 to rounding)."""
        r = self.r
        return self.P - self.A[:, :r] @ self.B[:r] if r else self.P

    def prec_rows(self, g: torch.Tensor) -> torch.Tensor:
        """The current precision matrix's rows g (|g|, F): P_g,: minus the deferred downdates."""
        r = self.r
        return self.P[g] - self.A[g, :r] @ self.B[:r] if r else self.P[g]

    def prec_block(self, g: torch.Tensor) -> torch.Tensor:
        """The current precision matrix's block (g, g)."""
        r = self.r
        Pgg = self.P[g][:, g]
        return Pgg - self.A[g, :r] @ self.B[:r, g] if r else Pgg

    def _compact(self):
        live = self.live
        self.present = self.present[live]
        P = self.P[live][:, live]
        if self.r:  # the deferred downdates, on the live part only
            P.addmm_(self.A[live, : self.r], self.B[: self.r, live], alpha=-1.0)
        self.P, self.W, self.wn, self.pdiag = P, self.W[:, live], self.wn[live], self.pdiag[live]
        self._clear_pending()
        if self.rows:
            self.X = self.X[:, live]
        self.live = torch.ones(len(self.present), dtype=torch.bool)
        self.where.fill_(-1)
        self.where[self.present] = torch.arange(len(self.present))

    def _node_view(self, A: torch.Tensor) -> torch.Tensor:
        """A's present columns arranged by node: (rows of A, nodes, width), 0 at absent slots and padding."""
        pos = self.where[self.node_cols]
        return A[:, pos.clamp_min(0)] * (pos >= 0)

    @property
    def n_present(self) -> int:
        return int(self.live.sum())

    @property
    def determined(self) -> bool:
        """Whether the present columns' covariance can be non-singular: more samples than present columns
        plus the mean."""
        return self.block.n_rows - 1 > self.n_present

    def cols(self, node: int) -> torch.Tensor:
        pos = self.where[self.block.columns[node]]
        return pos[pos >= 0]

    def cols_of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions (n, width) of the nodes' present columns, -1 where absent or padding; counts (n,)).
        ``nodes``: a LongTensor (indexing with a list of a thousand nodes converts it at every call: 1.4 s of a
        MiniLM ranking's 9,000 steps)."""
        pos = self.where[self.node_cols[nodes]]
        return pos, (pos >= 0).sum(1)

    def residual(self, g: torch.Tensor):
        """In-sample residuals (N, |g|) of the columns g on the other present columns, and the precision's rows g
        (|g|, F; :meth:`prec_rows`, which :meth:`remove` takes back rather than computing them again)."""
        Pg = self.prec_rows(g)
        return self.X @ Pg.T @ torch.linalg.inv(Pg[:, g]), Pg

    def remove(self, g: torch.Tensor, e: torch.Tensor | None = None, Pg: torch.Tensor | None = None):
        """Remove the columns g (their residuals e and the precision's rows g from :meth:`residual` when the rows
        are kept)."""
        if Pg is None:
            Pg = self.prec_rows(g)  # (|g|, F) rows of the removed columns
        Pgg = Pg[:, g]
        singular = not self.determined
        inv = Pgg.reciprocal() if len(g) == 1 else torch.linalg.inv(Pgg)
        if self.rows:
            assert e is not None
            self.h -= ((e @ Pgg) * e).sum(1) / self.block.n_rows
        M = self.W[:, g] @ inv
        # ||W_j - M Pg_j||^2 from one product M^T W (a norm recomputed over W costs 20x more per step)
        T, MM = M.T @ self.W, M.T @ M
        self.wn -= 2 * (T * Pg).sum(0) - ((MM @ Pg) * Pg).sum(0)
        At = Pg.T @ inv  # P's downdate A_t B_t, deferred
        self.pdiag -= (At * Pg.T).sum(1)
        if self.node_cols.shape[1] > 1:  # the nodes' blocks of (W - M Pg)^T (W - M Pg), likewise
            Tn, Pn = self._node_view(T), self._node_view(Pg)
            cross = torch.einsum("gnw,gnv->nwv", Tn, Pn)
            self.gram -= cross + cross.transpose(1, 2) - torch.einsum("gnw,gh,hnv->nwv", Pn, MM, Pn)
            self.pblock -= torch.einsum("gnw,gh,hnv->nwv", Pn, inv, Pn)
        self.W.addmm_(M, Pg, alpha=-1.0)
        r = self.r
        self.A[:, r : r + len(g)] = At
        self.B[r : r + len(g)] = Pg
        self.r = r + len(g)
        self.live[g] = False
        self.where[self.present[g]] = -1
        self.removed_since += 1
        # the downdates through a singular covariance (P ~ 1 / ridge) lose every digit: once the present
        # columns can be non-singular again, P is recomputed (scores and the affine test exact again)
        if self.removed_since >= max(REFRESH, self.rebuilt_size // 2) or (singular and self.determined):
            self._rebuild()
        elif self.removed_since % COMPACT == 0:
            self._compact()

    def error(self) -> float:
        """Mean squared error of the consumer's re-fitted pre-activations on the present columns."""
        b = self.block
        full = b.energy
        S = self.present[self.live]
        if not len(S):
            return full
        W = self.W[:, self.live]
        kept = float(((W @ b.cov[S][:, S]) * W).sum())
        return max(full - kept, 0.0)


def relative_error(states: list[LSState]) -> float:
    """The consumers' least-squares reconstruction error from the present columns, relative to their
    pre-activations' total variance (a layer's ``recon_error``, for both estimators)."""
    full = sum(st.block.energy for st in states)
    return sum(st.error() for st in states) / max(full, 1e-300)


def chi2_upper_factor(dof: int, alpha: float) -> float:
    """dof / chi2_alpha(dof): the factor that turns a residual variance estimated with ``dof`` degrees of
    freedom into its one-sided upper (1 - alpha) confidence bound (Wilson-Hilferty quantile)."""
    dof = max(dof, 1)
    z = statistics.NormalDist().inv_cdf(alpha)
    q = dof * max(1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof)), 1e-3) ** 3
    return dof / q


def gaussian_scores(states: list[LSState], nodes: list[int] | torch.Tensor, inflate: float = 1.0) -> torch.Tensor:
    """Closed-form Delta (nats) of each node given the present columns, summed over the consumers;
    ``inflate`` multiplies the residual covariance (its upper confidence bound). ``nodes``: a list or a
    LongTensor (a greedy loop that keeps its nodes as a tensor skips a list's conversion at every step)."""
    nodes = nodes if isinstance(nodes, torch.Tensor) else torch.tensor(nodes, dtype=torch.long)
    total = _scores(states, nodes, inflate)
    if not bool(torch.isfinite(total).all()):
        # with fewer samples than features the covariance is singular (the ridge keeps P defined, ~1/ridge):
        # where the removals leave independent columns, the rank-one downdates of P lose every digit and
        # some scores come out NaN (the greedy stopped there, MAC budgets became unreachable). The
        # precision matrix recomputed from the covariance of the present columns is exact again.
        for st in states:
            st._rebuild()
        total = _scores(states, nodes, inflate)
    return total


def _one_column(st: LSState, c: torch.Tensor, inflate: float) -> torch.Tensor:
    """The closed form of nodes of one present column each (positions ``c``): no matrices."""
    return 0.5 * torch.log1p(st.wn[c] * inflate / (st.pdiag[c] * st.sigma2))


def _scores(states: list[LSState], ids: torch.Tensor, inflate: float) -> torch.Tensor:
    total = torch.zeros(len(ids), dtype=torch.float64)
    for st in states:
        pos, counts = st.cols_of(ids)
        if pos.shape[1] == 1:  # every node one column (neurons): no sizes to group by
            read = torch.nonzero(pos[:, 0] >= 0).flatten()
            total[read] += _one_column(st, pos[read, 0], inflate)
            continue
        for size in counts.unique().tolist():
            if size == 0:
                continue
            sel = torch.nonzero(counts == size).flatten()
            rows = pos[sel]
            present = rows >= 0
            g = rows[present].view(len(sel), size)  # (n, size), in order
            if size == 1:
                total[sel] += _one_column(st, g[:, 0], inflate)
                continue
            slots = torch.nonzero(present)[:, 1].view(len(sel), size)  # the same columns' slots, in order
            at = (ids[sel][:, None, None], slots[:, :, None], slots[:, None, :])
            V = torch.linalg.inv(st.pblock[at]) * inflate  # P's (size, size) blocks
            A = st.gram[at] / st.sigma2
            eye = torch.eye(size, dtype=A.dtype)
            total[sel] += 0.5 * torch.linalg.slogdet(eye + V @ A).logabsdet
    return total


def states_of(layer, ridge: float, noise: float, rows: bool = True) -> list[LSState]:
    """The least-squares state of each consumer of ``layer`` (a criteria.base.Layer), its channel noise
    ``noise`` times the consumer's mean pre-activation variance (times 1 for whitened weights: the output's
    variance is their unit), plus the variance of the consumer's output that the layer does not explain."""
    states = [LSState(b, drop, ridge, rows) for b, drop in zip(layer.blocks, layer.drops)]
    for st in states:
        scale = 1.0 if st.block.whitened else max(st.block.target_variance, 1e-300)
        st.sigma2 = noise * scale + st.block.unexplained
    return states


def _affine(states: list[LSState], i: int, ridge: float) -> tuple[bool, float]:
    """(whether node i is an exact affine combination of the present columns in the consumers that read it,
    its variance): its residual variance (1 / P_gg, summed over its columns and consumers) at most
    AFFINE_TOL^2 of its own variance, plus the floor of about ``ridge`` x (dependencies) that the relative
    ridge puts under it."""
    var_res = var_all = 0.0
    for st in states:
        g = st.cols(i)
        if not len(g):
            continue
        var_res += float(torch.linalg.inv(st.prec_block(g)).diagonal().sum())
        var_all += float(st.block.cov[st.present[g]][:, st.present[g]].diagonal().sum())
    return var_res <= (AFFINE_TOL**2 + 100 * ridge) * var_all, var_all


def next_node(states: list[LSState], undecided: list[int], ridge: float) -> tuple[int, float, bool]:
    """The screen's next node: (its position in ``undecided``, its closed-form Delta, whether it is an exact
    affine combination of the present columns). The smallest Delta; when that node is an exact affine
    combination, the one of largest variance among those that are (their Deltas differ only by the ridge's
    rounding), so of {a, b, a + b} the sum goes and the nodes it mixes stay (as
    mipp.pruning.relevance._independent_columns decides)."""
    scores = gaussian_scores(states, undecided)
    j = int(scores.argmin())
    affine = _affine(states, undecided[j], ridge)[0]
    if not affine or not all(st.determined for st in states):
        # where every node is such a combination of the others, the scan below would visit every node at
        # every step, and the variance would decide among all of them
        return j, float(scores[j]), affine
    best, best_var = j, -1.0
    for pos, i in enumerate(undecided):
        affine, var = _affine(states, i, ridge)
        if affine and var > best_var:
            best, best_var = pos, var
    return best, float(scores[best]), True


def traverse(
    states: list[LSState], n_nodes: int, min_keep: int, ridge: float, test, records: list, bar=None
) -> tuple[list[int], dict[str, float]]:
    """The sequential decision of a layer that the testing criteria share (KSG, loss): they differ only in
    ``test``. Nodes whose every column is constant or read by no consumer are removed untested (rule
    "constant"); then, while more than ``min_keep`` nodes remain, the screen's next node i (:func:`next_node`)
    is decided by ``test(i, views, affine)`` -> (rule, removed, estimate, statistic), with ``views`` the
    (state, columns g, in-sample residuals e, the precision's rows g) of every consumer that reads it (e and
    the rows None where the states keep no rows); a removal downdates the states. Appends one NodeRecord per node to
    ``records`` and advances ``bar`` per node. Returns (kept nodes, seconds {"screen", "tests"})."""
    from mipp.pruning.selection import NodeRecord

    t0 = time.perf_counter()
    alive = set(range(n_nodes))
    undecided = []
    for i in range(n_nodes):
        if all(len(st.cols(i)) == 0 for st in states) and len(alive) > min_keep:
            alive.discard(i)
            records.append(NodeRecord(i, len(records), "constant", True, 0.0, 0.0, 0.0))
        else:
            undecided.append(i)
    if bar is not None:
        bar.reset(total=n_nodes)
        bar.update(n_nodes - len(undecided))
    t_tests = 0.0
    while undecided:
        if len(alive) <= min_keep:
            for i in undecided:
                records.append(NodeRecord(i, len(records), "min_keep", False, math.nan, math.nan, math.nan))
            break
        j, score, affine = next_node(states, undecided, ridge)
        i = undecided.pop(j)
        views = []
        for st in states:
            g = st.cols(i)
            if len(g):
                views.append((st, g, *(st.residual(g) if st.rows else (None, None))))
        t1 = time.perf_counter()
        rule, remove, estimate, statistic = test(i, views, affine)
        t_tests += time.perf_counter() - t1
        if remove:
            alive.discard(i)
            for st, g, e, Pg in views:
                st.remove(g, e, Pg)
        records.append(NodeRecord(i, len(records), rule, remove, score, estimate, statistic))
        if bar is not None:
            bar.update()
    return sorted(alive), {"screen": time.perf_counter() - t0 - t_tests, "tests": t_tests}


def recon_error(layer, removed: list[int], ridge: float = 1e-9) -> float:
    """The relative reconstruction error (:func:`relative_error`) of ``layer``'s consumers from the nodes
    not in ``removed``, for decisions not made on a least-squares state of their own."""
    states = []
    for b, drop in zip(layer.blocks, layer.drops):
        gone = drop.clone()
        for i in removed:
            gone[b.columns[i]] = True
        states.append(LSState(b, gone, ridge, rows=False, shared=False))
    return relative_error(states)
