"""The KSG criterion (MIPP's default): remove a node only when the data show that what it adds is negligible.

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
summed over consumers (mipp.pruning.criteria.lstsq.gaussian_scores; an upper bound of the linear channel's
information for any distribution of e_i), with the least-squares state downdated after each removal; of
several exact affine combinations the one of largest variance first (lstsq.next_node: of {a, b, a + b} the
sum goes). The loop is lstsq.traverse, which the loss criterion shares.

The KSG statistic uses leave-one-out residuals (e_n / (1 - h_n), h the leverage of the regression on S),
so a residual is never fitted to the sample it is evaluated on, and one feature row per input sample (a
random position of a convolution). When the signal has more than ``m_max`` directions, KSG estimates the
leading ``m_max`` and the Gaussian closed form adds the rest (an upper bound for those directions).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import mipp
from mipp.pruning.criteria.base import Criterion, Layer, LayerDecision
from mipp.pruning.criteria.lstsq import chi2_upper_factor, gaussian_scores, relative_error, states_of, traverse
from mipp.pruning.validate import check_integer, check_number


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


@dataclass
class KSGCriterion(Criterion):
    """Remove a node when the upper (1 - ``alpha``) confidence bound of the KSG estimate of the information it
    adds through the tolerance channel is below ``tolerance`` nats (module docstring).

    k: KSG neighbours. noise: the channel noise, a fraction of the consumers' mean pre-activation variance.
    ridge: relative ridge of the least-squares regressions. m_max: signal directions estimated by KSG per
    node (the rest by the Gaussian closed form). local_mi: the KSG local values of I(a; b) (normalised);
    set by :meth:`distributed` to split each test's query rows across ranks."""

    name = "ksg"
    unit = "nats"
    default_tolerance = 0.2

    k: int = 3
    alpha: float = 0.05
    noise: float = 0.01
    ridge: float = 1e-9
    m_max: int = 2
    _local_mi: Callable | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        check_integer("k", self.k, 1)
        check_integer("m_max", self.m_max, 1)
        check_number("alpha", self.alpha, 0, 1, "in (0, 1)")
        check_number("noise", self.noise, 0, math.inf, "> 0 (a fraction of the consumers' pre-activation variance)")
        check_number("ridge", self.ridge, 0, 1, "in [0, 1)", low_open=False)

    @property
    def min_samples(self) -> int:  # type: ignore[override]
        return self.k + 2

    def distributed(self, group) -> KSGCriterion:
        """Every rank runs the same decisions (same data, same seeded draws); each test's KSG query rows are
        split across the ranks (mipp.distributed.mi_rows)."""
        from mipp import distributed

        distributed._rank_world(group)

        def local_mi(a, b):
            return distributed.mi_rows(a, b, self.k, normalize=True, reduction="none", group=group)

        return KSGCriterion(self.k, self.alpha, self.noise, self.ridge, self.m_max, local_mi)

    def _mi(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mipp.mi(a, b, self.k, normalize=True, reduction="none")

    def decide(self, layer: Layer, *, tolerance: float, min_keep: int, generator: torch.Generator, bar=None):
        t0 = time.perf_counter()
        states = states_of(layer, self.ridge, self.noise)

        def test(i, views, affine):
            residuals, weights = [], []
            for st, g, e, Pg in views:
                # leave-one-out residuals: the leverage of the regression on the other present columns
                h = st.h - ((e @ Pg[:, g]) * e).sum(1) / st.block.n_rows
                residuals.append(e / (1.0 - h).clamp_min(1e-6)[:, None])
                weights.append(st.W[:, g] / math.sqrt(st.sigma2))
            rule, estimate, upper = self._statistic(states, i, residuals, weights, affine, generator)
            return rule, upper < tolerance, estimate, upper

        out = LayerDecision(kept=[])
        out.kept, out.seconds = traverse(states, layer.n_nodes, min_keep, self.ridge, test, out.records, bar)
        out.recon_error = relative_error(states)
        out.seconds["total"] = time.perf_counter() - t0
        return out

    def _statistic(self, states, i, residuals, weights, affine, generator) -> tuple[str, float, float]:
        """(rule, KSG estimate of Delta_i, its upper (1 - alpha) bound capped by the Gaussian closed form at the
        upper chi-square bound of the residual variance; dof: the covariance's rows minus the regressors)."""
        if affine:
            return "affine", 0.0, 0.0
        if all(float(w.abs().max()) == 0.0 for w in weights):
            return "unread", 0.0, 0.0  # no consumer weight reads it
        dof = min(st.block.n_rows - st.n_present - 1 for st in states)
        gauss_upper = float(gaussian_scores(states, [i], chi2_upper_factor(dof, self.alpha))[0])
        signal, remainder = _signal(residuals, weights, self.m_max)
        observed = signal + torch.randn(signal.shape, generator=generator, dtype=signal.dtype)
        local = (self._local_mi or self._mi)(signal, observed)
        estimate = float(local.mean()) + remainder
        # the Gaussian value bounds the true information (max entropy for the residual's covariance): KSG above
        # it is estimation bias (e.g. residuals with an atom: a constant image background)
        z = statistics.NormalDist().inv_cdf(1.0 - self.alpha)
        return "test", estimate, min(estimate + z * float(local.std()) / math.sqrt(len(local)), gauss_upper)
