"""The relevance screen of ``select_layer(X, Y)``: which nodes Y needs at all, tested on Y itself, before the
criterion resolves redundancy among them.

The criterion decides through the least-squares read-out W X of Y, and W carries its sampling error (order
1/sqrt(N) per weight): a node independent of Y gets a small non-zero weight, which the decision reads as
information through the channel, and more of them pass the smaller the tolerance. Testing the criterion's
kept nodes afterwards on the same samples does not fix it: they were kept *because* their chance
correlations were large (measured: 19% of the independent nodes kept before, 12% after such a test at
alpha = 0.05). So the screen runs first, on every node, with the statistic whose null includes the weights'
sampling error: the Wald (chi-square) test of the node's coefficients in the regression of Y on the nodes
still in, beta_i Sigma^-1 beta_i' / (X'X)^-1_ii ~ chi2_q when the node adds nothing (Sigma: the q outputs'
residual covariance). Backward elimination removes the node of largest p-value while it exceeds ``alpha``,
so an independent node survives with probability about ``alpha``, whatever the tolerance; of exact or near
copies the last one left is significant and stays. With D >= N / 2 nodes the tests lack degrees of freedom:
forward selection (each round's best candidate tested at alpha / candidates) chooses the start.
"""

from __future__ import annotations

import math

import torch

from mipp.pruning.selection import NodeRecord


def _chi2_sf(stat: torch.Tensor, q: int) -> torch.Tensor:
    return torch.special.gammaincc(torch.tensor(q / 2, dtype=torch.float64), stat / 2)


def _precision(cross: torch.Tensor, dof: int) -> torch.Tensor:
    """The inverse of the residual covariance (``cross``: residual cross-products over ``dof`` degrees of
    freedom): the Wald statistic beta Sigma^-1 beta' / Var-factor is chi2_q under the null even when the
    outputs' residuals are correlated (summing per-output statistics is not; it over-rejects)."""
    cov = cross / dof
    cov.diagonal().add_(1e-12 * float(cov.diagonal().mean()))
    return torch.linalg.inv(cov)


def forward_selection(Xc: torch.Tensor, Yc: torch.Tensor, nodes: list[int], alpha: float) -> list[int]:
    """Of ``nodes`` (columns of the centred Xc), those forward selection on the centred Yc adds while the best
    candidate's chi-square statistic is significant at ``alpha`` Bonferroni-corrected for the candidates
    left (the largest of many null statistics must not pass), and while fewer than half the samples are in:
    a start that leaves the backward tests their degrees of freedom when the criterion kept nearly N nodes."""
    n, q = Yc.shape
    R, E = Xc[:, nodes].clone(), Yc.clone()
    scale = R.pow(2).sum(0).clamp_min(1e-300)
    chosen: list[int] = []
    free = torch.ones(len(nodes), dtype=torch.bool)
    while free.any() and len(chosen) < n // 2:
        rr = R.pow(2).sum(0)
        usable = free & (rr > 1e-10 * scale)  # not (nearly) a combination of the chosen
        if not usable.any():
            break
        C = R.T @ E  # (candidates, q)
        stat = (C @ _precision(E.T @ E, n - len(chosen) - 2) * C).sum(1) / rr.clamp_min(1e-300)
        stat[~usable] = -1.0
        j = int(stat.argmax())
        if float(_chi2_sf(stat[j], q)) * int(usable.sum()) > alpha:
            break
        u = R[:, j] / rr[j].sqrt()
        R -= u[:, None] * (u @ R)[None, :]
        E -= u[:, None] * (u @ E)[None, :]
        free[j] = False
        chosen.append(nodes[j])
    return sorted(chosen)


def _independent_columns(Xc: torch.Tensor, tol: float = 1e-9) -> list[int]:
    """Columns of the centred Xc that are not (to ``tol`` of their own squared norm) linear combinations of
    those kept before them (Gram-Schmidt, visiting the columns by increasing variance: of a set such as
    {a, b, a + b} the sum, of larger variance, is the one dropped), sorted: an exact mixture or copy adds
    nothing to a linear read-out, and leaving it in would make the tests' Gram matrix singular."""
    norms = Xc.pow(2).sum(0)
    order = sorted(range(Xc.shape[1]), key=lambda j: (float(norms[j]), j))
    R = Xc[:, order].clone()
    keep: list[int] = []
    for pos, j in enumerate(order):
        rj = R[:, pos]
        nj = float(rj @ rj)
        if nj <= tol * float(norms[j]) or nj == 0.0:
            continue
        keep.append(j)
        u = rj / nj**0.5
        R[:, pos + 1 :] -= u[:, None] * (u @ R[:, pos + 1 :])[None, :]
    return sorted(keep)


def relevant_nodes(X: torch.Tensor, Y: torch.Tensor, alpha: float, min_keep: int) -> tuple[list[int], list[NodeRecord]]:
    """The nodes (columns of X, (N, D)) whose coefficients in the least-squares regression of Y (N, q) on
    the nodes still in are significant at ``alpha`` (removing the least significant while p > alpha; never
    below ``min_keep``), sorted, and a record per removed node (rule "relevance": ``estimate`` the
    nats its coefficients add to the linear prediction of Y, ``statistic`` the chi-square statistic, ``score``
    its p-value)."""
    n, q = Y.shape
    Xc = (X - X.mean(0)).double()
    Yc = (Y - Y.mean(0)).double()
    YY = Yc.T @ Yc
    S = _independent_columns(Xc)
    records: list[NodeRecord] = []
    for node in sorted(set(range(X.shape[1])) - set(S)):  # linear combinations of the columns kept
        records.append(NodeRecord(node, len(records), "affine", True, math.nan, math.nan, math.nan))
    if len(S) >= n // 2:  # too few degrees of freedom to test every node against the rest
        start = forward_selection(Xc, Yc, S, alpha)
        start = sorted(start + [s for s in S if s not in start][: max(min_keep - len(start), 0)])
        for node in (s for s in S if s not in set(start)):  # not added by the forward pass: no own test
            records.append(NodeRecord(node, len(records), "relevance", True, math.nan, math.nan, math.nan))
        S = start
    if len(S) <= min_keep or n - len(S) - 1 <= 0:
        return S, records
    A = Xc[:, S]
    G = A.T @ A
    G.diagonal().add_(1e-12 * float(G.diagonal().mean()))  # near collinearity left by the pre-pass
    Ginv, B = torch.linalg.inv(G), A.T @ Yc
    while len(S) > min_keep:
        beta = Ginv @ B  # (|S|, q)
        resid = YY - B.T @ beta  # (q, q): the residuals' cross-products
        rss = resid.diagonal().clamp_min(1e-300)
        drss = beta.pow(2) / Ginv.diagonal()[:, None]  # RSS increase per output when a node leaves
        stat = (beta @ _precision(resid, n - len(S) - 1) * beta).sum(1) / Ginv.diagonal()
        p = _chi2_sf(stat, q)
        j = int(p.argmax())
        if float(p[j]) <= alpha:
            break
        nats = 0.5 * float(torch.log1p(drss[j] / rss).sum())
        step = len(records)
        records.append(NodeRecord(S[j], step, "relevance", True, float(p[j]), nats, float(stat[j])))
        S.pop(j)
        # the inverse without node j (a rank-one downdate: O(|S|^2) per step, not a new inverse)
        rest = torch.cat([torch.arange(j), torch.arange(j + 1, len(Ginv))])
        col = Ginv[rest, j]
        Ginv = Ginv[rest][:, rest] - torch.outer(col, col) / Ginv[j, j]
        B = B[rest]
    return S, records
