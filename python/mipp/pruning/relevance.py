"""``select_layer(X, Y)`` decides on Y itself: a relevance screen before the criterion (which then resolves
redundancy among the relevant nodes) and a nonlinear rescue after it.

The criterion decides through the least-squares read-out W X of Y, and W carries its sampling error (order
1/sqrt(N) per weight): a node independent of Y gets a small non-zero weight, which the decision reads as
information through the channel, and more of them pass the smaller the tolerance. Testing the criterion's
kept nodes afterwards on the same samples does not fix it: they were kept *because* their chance
correlations were large (measured: 19% of the independent nodes kept before, 12% after such a test at
alpha = 0.05). So the screen (:func:`relevant_nodes`) runs first, on every node, with the statistic whose
null includes that error: the Wald (chi-square) test of the node's coefficients in the regression of Y on
the nodes still in, beta_i Sigma^-1 beta_i' / (X'X)^-1_ii ~ chi2_q when the node adds nothing (Sigma: the q
outputs' residual covariance), by backward elimination, cross-fitted over two halves of the samples.

A read-out is linear, so a node related to Y only nonlinearly (Y = X^2, sin(3X), a product or XOR pair)
fails the screen; :func:`nonlinear_rescue` then looks, with the KSG engine, for information about what the
kept nodes' linear read-out leaves of Y, cross-fitted as well.
"""

from __future__ import annotations

import math

import torch

import mipp
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
    the start of the backward tests when there are too many nodes to test each against all the others."""
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


def relevant_nodes(
    X: torch.Tensor, Y: torch.Tensor, alpha: float, min_keep: int, generator: torch.Generator
) -> tuple[list[int], list[NodeRecord]]:
    """The nodes (columns of X, (N, D)) relevant to Y (N, q), sorted, and a record per removed node.

    Cross-fitted: the samples are split in two halves (``generator``); on the first, backward elimination
    from every node (after the exact linear combinations and, with too many nodes, a forward start) keeps
    the nodes whose coefficients are significant at ``alpha`` given the others still in; on the second,
    the same elimination from those survivors decides. A node independent of Y survives the first half at
    about ``alpha`` (more than ``alpha``: stepwise survivors are picked on the data that test them) and the
    second, whose samples did not pick it, at ``alpha`` again. Records: rule "affine" (a linear combination
    of nodes kept), "relevance" (``score`` its p-value, ``estimate`` the nats its coefficients add to the
    linear prediction of Y, ``statistic`` the chi-square statistic; nan for nodes a forward start left
    out)."""
    Xc = (X - X.mean(0)).double()
    S = _independent_columns(Xc)
    records: list[NodeRecord] = []
    for node in sorted(set(range(X.shape[1])) - set(S)):  # linear combinations of the columns kept
        records.append(NodeRecord(node, len(records), "affine", True, math.nan, math.nan, math.nan))
    order = torch.randperm(len(X), generator=generator)
    for rows in (order[: len(X) // 2], order[len(X) // 2 :]):
        S = _eliminate(X[rows].double(), Y[rows].double(), S, alpha, min_keep, records)
    return sorted(S), records


def _eliminate(X, Y, S: list[int], alpha: float, min_keep: int, records: list[NodeRecord]) -> list[int]:
    """Backward elimination of the nodes ``S`` (columns of X) on (X, Y) at ``alpha`` (module docstring),
    with a forward start when |S| >= N / 2; appends a record per node removed."""
    n, q = Y.shape
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    YY = Yc.T @ Yc
    S = sorted(S)
    if len(S) >= n // 2:  # too few degrees of freedom to test every node against the rest
        start = forward_selection(Xc, Yc, S, alpha)
        start = sorted(start + [s for s in S if s not in start][: max(min_keep - len(start), 0)])
        for node in (s for s in S if s not in set(start)):  # not added by the forward pass: no own test
            records.append(NodeRecord(node, len(records), "relevance", True, math.nan, math.nan, math.nan))
        S = start
    if len(S) <= min_keep or n - len(S) - 1 <= 0:
        return S
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
        records.append(NodeRecord(S[j], len(records), "relevance", True, float(p[j]), nats, float(stat[j])))
        S.pop(j)
        # the inverse without node j (a rank-one downdate: O(|S|^2) per step, not a new inverse)
        rest = torch.cat([torch.arange(j), torch.arange(j + 1, len(Ginv))])
        col = Ginv[rest, j]
        Ginv = Ginv[rest][:, rest] - torch.outer(col, col) / Ginv[j, j]
        B = B[rest]
    return S


def _standardised(t: torch.Tensor) -> torch.Tensor:
    t = t - t.mean(0)
    return t / t.std(0).clamp_min(1e-300)


def _nearest(Xs: torch.Tensor, nodes: list[int], given: list[int], m: int) -> torch.Tensor:
    """(len(nodes), min(m, |given|)) indices into ``given``: for each node the kept nodes of largest absolute
    correlation with it (a near copy of a kept node is conditioned on that node)."""
    corr = (Xs[:, nodes].T @ Xs[:, given]).abs() / len(Xs)
    return corr.topk(min(m, len(given)), dim=1).indices


def nonlinear_rescue(
    X: torch.Tensor,
    E: torch.Tensor,
    kept: list[int],
    candidates: list[int],
    alpha: float,
    generator: torch.Generator,
    *,
    k: int = 3,
    n_permutations: int = 99,
    n_conditioning: int = 2,
    n_pairs: int = 24,
) -> list[NodeRecord]:
    """Nodes of X (N, D) among ``candidates`` that carry information about E (N, q; what the linear read-out of
    the kept nodes leaves of the target) that is not linear: Y = X_i^2, sin(3 X_i), or a pair whose product
    or XOR drives Y, none of which a least-squares read-out sees.

    Cross-fitted, so that picking the best of many candidates does not bias its test (the winner's curse):
    the samples are split in two halves A and B. Each round, on A, every candidate's conditional MI
    I(X_c; E | its ``n_conditioning`` most correlated kept nodes) is estimated in one batched KSG call, and
    the joint MI of pairs (all pairs of up to 64 candidates, else of the ``n_pairs`` best) for members that
    carry nothing alone; the best single node (or pair, when half its joint MI beats the best single one) is
    then tested on B by a local permutation test (shuffled among its 5 nearest neighbours in the
    conditioning nodes: Runge 2018) at ``alpha``. A node that passes is kept and conditions the later
    rounds (of a duplicate set one node passes); the first that fails ends the search, so an independent
    node is added with probability about ``alpha``. Returns a record per node kept (rule "nonlinear":
    ``estimate`` the conditional MI on A, nats; ``statistic`` the p-value on B)."""
    n = len(X)
    Xs, Es = _standardised(X.double()), _standardised(E.double())
    live = [j for j in candidates if j not in set(kept) and float(X[:, j].var()) > 0]
    order = torch.randperm(n, generator=generator)
    half_a, half_b = order[: n // 2], order[n // 2 :]
    given, records = list(kept), list[NodeRecord]()
    Xa, Xb = Xs[half_a], Xs[half_b]
    while live:
        # per candidate, the kept nodes it is conditioned on (columns of X), on A and on B alike
        near = torch.tensor(given)[_nearest(Xs, live, given, n_conditioning)] if given else None
        xa = Xa[:, live].T[..., None].contiguous()  # (B, n/2, 1)
        za = None if near is None else Xa[:, near].permute(1, 0, 2).contiguous()  # (B, n/2, m)
        gains = (mipp.mi(xa, Es[half_a], k) if za is None else mipp.cmi(xa, Es[half_a], za, k)).double()
        best = int(gains.argmax())
        picked, value = [best], float(gains[best])  # positions in live
        pool = list(range(len(live))) if len(live) <= 64 else gains.topk(min(n_pairs, len(live))).indices.tolist()
        if len(pool) >= 2:
            ia, ib = torch.triu_indices(len(pool), len(pool), 1)
            a, b = torch.tensor(pool)[ia], torch.tensor(pool)[ib]
            # members that share their information (near copies) are no synergy: KSG's joint estimate of
            # such a pair exceeds twice the single one by its bias alone
            rho = (xa[a, :, 0] * xa[b, :, 0]).mean(1) / (xa[a, :, 0].std(1) * xa[b, :, 0].std(1))
            a, b = a[rho.abs() < 0.5], b[rho.abs() < 0.5]
        if len(pool) >= 2 and len(a):
            pair_x = torch.cat([xa[a], xa[b]], -1)
            pair_z = None if za is None else torch.cat([za[a][..., :1], za[b][..., :1]], -1)
            joint = mipp.mi(pair_x, Es[half_a], k) if pair_z is None else mipp.cmi(pair_x, Es[half_a], pair_z, k)
            i = int(joint.argmax())
            if float(joint[i]) / 2 > value:
                picked, value = [int(a[i]), int(b[i])], float(joint[i])
        chosen = [live[j] for j in picked]
        xb = Xb[:, chosen]
        zb = None if near is None else Xb[:, sorted({int(c) for j in picked for c in near[j]})]
        test = mipp.permutation_test(
            xb,
            Es[half_b],
            zb,
            k,
            n_permutations=n_permutations,
            generator=generator,
            local_neighbors=None if zb is None else 5,
        )
        p = float(test.p_value)
        if p > alpha:
            break
        for c in chosen:
            records.append(NodeRecord(c, len(records), "nonlinear", False, value, value, p))
            given.append(c)
            live.remove(c)
    return records
