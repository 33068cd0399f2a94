"""Discrete variables on the engine: class labels as a column group.

A discrete variable with integer codes c becomes the column group ``c * L`` with L larger than every
distance in the continuous groups it is combined with (twice the largest column spread, plus one). Its
max-norm distance is 0 within a class and at least L across classes, so in the joint space the k nearest
neighbours of a sample are those of its own class, and a count under a radius below L counts its own class
only. The estimators below are therefore compositions of the existing ops (knn_distance, count_within,
digamma_sum) on every backend, exact and batched with the label group shared by the whole batch (the
label group is mipp.reference.label_group). Ross's counts are one op, ross_counts, specified as that
composition; its C++ kernel for one continuous column works in sorted runs instead (one sort, no label
group).

Estimators (nats):
* continuous x, discrete y: Ross (2014), "Mutual information between discrete and continuous data sets",
  PLoS ONE 9(2): d_i = distance from i to its k_i-th neighbour of the same class, k_i = min(k, n_c - 1),
  m_i = #{j : |x_j - x_i| < d_i} over all samples, i itself included;
  I = psi(N) + <psi(k_i)> - <psi(n_c)> - <psi(m_i)>. Samples of a class with a single member are left out
  (N counts the others), as scikit-learn's ``_compute_mi_cd`` does. Ties: where other samples of i's class
  lie at exactly d_i, or d_i = 0, all tied neighbours count (Gao, Kannan, Oh, Viswanath 2017, "Estimating
  mutual information for discrete-continuous mixtures"): k_i becomes #{j != i of i's class : |x_j - x_i|
  <= d_i} and m_i = #{j != i : |x_j - x_i| <= d_i}. Then m_i >= k_i for every sample, so the estimate never
  exceeds psi(N) - <psi(n_c)> (the entropy of y plus its O(C / N) bias), a constant x reads
  1/(N-1) - <1/(n_c-1)> ~ 0, and a discrete x read as continuous gives about the plug-in estimate.
  scikit-learn keeps k_i and counts <= 0 at d_i = 0 only, which reads every tie-decided estimate at or
  below 0 (all 64 digits pixels, unjittered); without ties the two are the same estimate.
* discrete x and y: the plug-in estimate sum p(x, y) log p(x, y) / (p(x) p(y)).
* conditioning on a discrete z (strata): Frenzel-Pompe with z as a label group, i.e. the KSG conditional
  estimator within each stratum weighted by its size; strata with at most k samples are left out (warned).
* discrete y given a discrete z: Ross within each stratum, I(x; y | z) = sum_z p(z) I(x; y | Z = z)
  (= <psi(n_z)> + <psi(k_i)> - <psi(n_yz)> - <psi(m_i)>, with the neighbours of the same (y, z) class and
  m_i counted within the stratum). A discrete y given a continuous z is not offered: it needs a mixed-data
  estimator (Mesner & Shalizi 2021, IEEE Trans. Inf. Theory 67(1)).
"""

from __future__ import annotations

import warnings

import torch

import mipp.ops  # registers torch.ops.mipp; its trusted kernels run the counts


def label_codes(name: str, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """Integer codes 0..C-1 (int64, on the labels' device) of the rows of ``labels`` ((N,) or (N, d))."""
    if labels.dim() not in (1, 2) or labels.shape[0] != n:
        raise ValueError(f"{name} (discrete) must have shape (N,) or (N, d) with N={n}, got {tuple(labels.shape)}")
    if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
        raise ValueError(f"{name} (discrete) contains NaN or inf")
    if labels.is_complex():
        raise TypeError(f"{name} (discrete) must hold real labels, got {labels.dtype}")
    rows = labels.reshape(n, -1)
    if rows.shape[1] == 1:  # torch.unique over rows (dim=0) is several times slower for one column
        _, codes = torch.unique(rows[:, 0], return_inverse=True)
    else:
        _, codes = torch.unique(rows, dim=0, return_inverse=True)
    return codes.to(torch.int64), int(codes.max()) + 1 if n else 0


def joint_codes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Codes of the pairs (a_i, b_i)."""
    _, codes = torch.unique(torch.stack([a, b], dim=1), dim=0, return_inverse=True)
    return codes.to(torch.int64)


def _mean_psi(counts: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean over the last dim of psi(counts + offset), float64 (the digamma_sum op)."""
    return mipp.ops.trusted("digamma_sum", counts, offset, True) / counts.shape[-1]


def _class_sizes(codes: torch.Tensor) -> torch.Tensor:
    return torch.bincount(codes)[codes]


def ross(
    gx: torch.Tensor, codes: torch.Tensor, k: int, strata: torch.Tensor | None = None, ties: bool = True
) -> torch.Tensor:
    """(B,) Ross's estimate of I(x; y) for continuous groups gx (B, N, d) and class codes (N,) of y, shared by
    the batch; with ``strata`` (codes of a discrete z), I(x; y | z) by Ross within each stratum.
    ``ties=False``: Ross's strict count everywhere, scikit-learn's ``_compute_mi_cd`` where d_i > 0 (for data
    that scikit-learn has jittered, where an equal distance is a rounding coincidence)."""
    joint = codes if strata is None else joint_codes(codes, strata)
    keep = _class_sizes(joint) > 1  # a class of one has no neighbour of its own class
    if not bool(keep.all()):
        gx, codes, joint = gx[:, keep], codes[keep], joint[keep]
        strata = None if strata is None else strata[keep]
        _, joint = torch.unique(joint, return_inverse=True)
    n = int(gx.shape[1])
    if n < 2:
        raise ValueError("fewer than 2 samples belong to classes with more than one sample: no estimate")
    n_class = _class_sizes(joint)
    k_each = torch.clamp(n_class - 1, max=k)
    if strata is None:
        strata = torch.zeros_like(joint)
        first = _mean_psi(torch.tensor([[n]], device=gx.device), 0)
    else:
        _, strata = torch.unique(strata, return_inverse=True)
        first = _mean_psi(_class_sizes(strata)[None].to(gx.device), 0)
    eps, k_tied, lt, le = mipp.ops.trusted("ross_counts", gx, joint, strata, k_each)  # the callers checked gx
    k_used = k_each[None].to(eps.device).expand_as(eps)
    m = lt + 1  # Ross: strictly closer than d_i, i itself included
    # Ties. Where other samples of i's class lie at exactly d_i (or d_i = 0: duplicates), the strict count
    # can be smaller than k_i (it was 1 for a constant x: 3.8 nats for labels of 10 classes, above log 10).
    # There every tied neighbour counts: k~_i = #{j != i of i's class : |x_j - x_i| <= d_i} and
    # m_i = #{j != i : |x_j - x_i| <= d_i}, the rule of Gao et al. (2017) for points with mass, so that
    # m_i >= k~_i for every sample and the estimate stays below psi(N) - <psi(n_c)>, the plug-in entropy
    # of y plus its O(C / N) bias. Elsewhere nothing changes: the estimate is scikit-learn's.
    if ties:
        tied = (k_tied > k_used) | (eps == 0)
        if bool(tied.any()):
            m = torch.where(tied, le, m)
            k_used = torch.where(tied, k_tied, k_used)
    return first + _mean_psi(k_used, 0) - _mean_psi(n_class[None].to(eps.device), 0) - _mean_psi(m, 0)


def plug_in(cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """(B,) plug-in MI of codes cx (B, N) and cy (N,) or (B, N), float64, nats."""
    b, n = cx.shape
    cy = cy.expand(b, n)
    nx, ny = int(cx.max()) + 1, int(cy.max()) + 1
    idx = (torch.arange(b, device=cx.device)[:, None] * nx + cx) * ny + cy
    joint = torch.bincount(idx.reshape(-1), minlength=b * nx * ny).reshape(b, nx, ny).to(torch.float64)
    px, py = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
    terms = torch.where(joint > 0, joint / n * torch.log(joint * n / (px * py).clamp_min(1)), joint.new_zeros(()))
    return terms.sum((1, 2))


def drop_small_strata(groups: list[torch.Tensor], strata: torch.Tensor, k: int):
    """Leave out the samples of strata with at most k members (their k nearest neighbours would cross into
    other strata), with a warning; returns (groups, strata codes)."""
    small = _class_sizes(strata) <= k
    if bool(small.any()):
        warnings.warn(
            f"{int(small.sum())} samples in strata of z with at most k={k} members are left out of the "
            "conditional estimate",
            RuntimeWarning,
            stacklevel=4,
        )
        groups = [g[:, ~small] for g in groups]
        _, strata = torch.unique(strata[~small], return_inverse=True)
    return groups, strata
