"""Pure-torch reference of every mipp op: the specification, the test oracle and the fallback.

Every op takes *column groups*: a list of tensors ``g`` of shape ``(B_g, N, d_g)`` with ``B_g`` either 1
(shared by the whole batch) or ``B``. The distance between samples i and j in one group is the max-norm
``max_c |g[b, i, c] - g[b, j, c]|``; the joint distance of several groups is the max of the group
distances. Max and abs are exact and the subtraction is rounded once, so the result does not depend on
the order of the reduction: the Triton kernels and the C++ kernels reproduce these values bit for bit.

Work is chunked over query rows so that memory stays at ``O(B * chunk * N)`` and never ``N x N``.
A group shared by the batch (``B_g == 1``) is computed once per chunk and broadcast, not once per problem.
"""

from __future__ import annotations

import torch

# Elements of one (B, rows, N) distance tile: 2**22 float32 = 16 MiB. Large enough to amortise the
# per-op overhead of torch, small enough to stay far below the machine's memory at N = 10**5.
_TILE_ELEMENTS = 1 << 22


def batch_size(groups: list[torch.Tensor]) -> int:
    """The batch size B the groups broadcast to (each group has B_g == 1 or B_g == B)."""
    return max(int(g.shape[0]) for g in groups)


def _chunks(batch: int, n: int, start: int = 0, stop: int | None = None):
    """Query-row ranges (q0, q1) covering [start, stop) whose (batch, rows, N) distance tile holds about
    _TILE_ELEMENTS."""
    stop = n if stop is None else stop
    step = max(1, _TILE_ELEMENTS // max(1, batch * n))
    for q0 in range(start, stop, step):
        yield q0, min(stop, q0 + step)


def _group_distance(g: torch.Tensor, q0: int, q1: int) -> torch.Tensor:
    """(B_g, q1 - q0, N) max-norm distances from rows q0:q1 of g to all rows of g.

    Column by column, so the temporary is one tile and not (rows, N, d)."""
    out = None
    for c in range(g.shape[2]):
        col = g[:, :, c]
        d = (col[:, q0:q1, None] - col[:, None, :]).abs_()
        out = d if out is None else torch.maximum(out, d, out=out)
    if out is None:  # a group with no columns has distance 0 everywhere
        out = g.new_zeros(g.shape[0], q1 - q0, g.shape[1])
    return out


def _joint_distance(parts: list[torch.Tensor], q0: int) -> torch.Tensor:
    """(B, rows, N) joint distance (max over the group distances ``parts``); the self pair (i, i) is set
    to +inf so that it is excluded by index, not by value (duplicated rows have distance 0 and count)."""
    out = parts[0]
    for p in parts[1:]:
        out = torch.maximum(out, p)
    if len(parts) == 1:
        out = out.clone()  # parts[0] may still be needed as a group distance
    rows = torch.arange(out.shape[1], device=out.device)
    out[:, rows, rows + q0] = float("inf")
    return out


def knn_distance(groups: list[torch.Tensor], k: int, q0: int = 0, q1: int | None = None) -> torch.Tensor:
    """(B, M) distance from each query sample i in [q0, q1) (M = q1 - q0; by default all N) to its k-th
    nearest neighbour among all N samples in the joint space of ``groups``, the sample itself excluded by
    index. Ties are counted with multiplicity: with duplicated rows the k-th distance can be 0."""
    batch, n = batch_size(groups), int(groups[0].shape[1])
    r0, r1 = q0, n if q1 is None else q1
    out = groups[0].new_empty(batch, r1 - r0)
    for a, b in _chunks(batch, n, r0, r1):
        d = _joint_distance([_group_distance(g, a, b) for g in groups], a)
        out[:, a - r0 : b - r0] = torch.kthvalue(d, k, dim=2).values
    return out


def knn_indices(groups: list[torch.Tensor], k: int) -> torch.Tensor:
    """(B, N, k) int64 indices of the k nearest neighbours of every sample in the joint space of ``groups``,
    nearest first, the sample itself excluded by index; among equal distances the order is torch.topk's.
    Pure torch, so it runs on the groups' device (mipp.local_permutations draws its surrogates from it)."""
    batch, n = batch_size(groups), int(groups[0].shape[1])
    out = torch.empty(batch, n, k, dtype=torch.long, device=groups[0].device)
    for a, b in _chunks(batch, n):
        d = _joint_distance([_group_distance(g, a, b) for g in groups], a)
        out[:, a:b] = d.topk(k, dim=2, largest=False).indices
    return out


def count_within(
    groups: list[torch.Tensor], radius: torch.Tensor, strict: bool, q0: int = 0, q1: int | None = None
) -> torch.Tensor:
    """(B, M) int64 for the query samples i in [q0, q1): #{j != i : d(i, j) < radius[b, i - q0]} (``strict``)
    or ``<=`` (not strict), d the joint distance of ``groups`` over all N samples. ``radius`` has shape
    (B, M); a group with B_g == 1 is shared by all B radii."""
    batch = max(batch_size(groups), int(radius.shape[0]))
    n = int(groups[0].shape[1])
    r0, r1 = q0, n if q1 is None else q1
    out = torch.empty(batch, r1 - r0, dtype=torch.int64, device=radius.device)
    for a, b in _chunks(batch, n, r0, r1):
        d = _joint_distance([_group_distance(g, a, b) for g in groups], a)
        r = radius[:, a - r0 : b - r0, None]
        inside = d < r if strict else d <= r
        out[:, a - r0 : b - r0] = inside.sum(dim=2)
    return out


def marginal_radius(
    groups: list[torch.Tensor], radius: torch.Tensor, q0: int = 0, q1: int | None = None
) -> torch.Tensor:
    """(B, M, G) for the query samples i in [q0, q1): for each group g, the largest distance in g from i to
    the samples j != i whose joint distance is <= radius[b, i - q0] (0 when there are none). With radius =
    the k-th neighbour distance these are the marginal radii eps_x(i), eps_y(i) of KSG algorithm 2; with ties
    at the k-th distance every tied sample belongs to the neighbourhood (an order-free rule, identical on
    every backend)."""
    batch = max(batch_size(groups), int(radius.shape[0]))
    n = int(groups[0].shape[1])
    r0, r1 = q0, n if q1 is None else q1
    out = radius.new_empty(batch, r1 - r0, len(groups))
    for a, b in _chunks(batch, n, r0, r1):
        parts = [_group_distance(g, a, b) for g in groups]
        inside = _joint_distance(parts, a) <= radius[:, a - r0 : b - r0, None]
        for gi, p in enumerate(parts):
            out[:, a - r0 : b - r0, gi] = torch.where(inside, p, p.new_zeros(())).amax(dim=2)
    return out


def ksg_counts(
    groups: list[torch.Tensor],
    k: int,
    marginals: list[int],
    algorithm: int,
    q0: int = 0,
    q1: int | None = None,
    kernels=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One KSG estimate's neighbour counts for the query samples i in [q0, q1): eps (B, M), the k-th nearest
    neighbour distance in the joint space of ``groups`` (knn_distance), and int64 counts (B, C, M), one row per
    marginal: ``marginals[c]`` is a bitmask of the groups that make marginal c (its distance is the max over
    them). Algorithm 1: n_c(i) = #{j != i : d_c(i, j) < eps_i}. Algorithm 2: with r_c(i) = the largest d_c(i, j)
    over the j != i within the joint eps_i (marginal_radius, every tie included), n_c(i) = #{j != i : d_c(i, j)
    <= r_c(i)}. KSG-1 / KSG-2 MI are marginals [0b01, 0b10] over (x, y); Frenzel-Pompe CMI is [0b101, 0b110,
    0b100] over (x, y, z) with algorithm 1.

    This composition is the specification; ``kernels`` = (knn_distance, marginal_radius, count_within) with
    explicit query rows runs it on other kernels (the Triton ones)."""
    knn, radius_of, count = kernels or (knn_distance, marginal_radius, count_within)
    n = int(groups[0].shape[1])
    r0, r1 = q0, n if q1 is None else q1
    eps = knn(groups, k, r0, r1)
    radii = radius_of(groups, eps, r0, r1) if algorithm == 2 else None
    counts = []
    for mask in marginals:
        members = [i for i in range(len(groups)) if mask >> i & 1]
        radius = eps if radii is None else radii[..., members].amax(dim=-1)
        counts.append(count([groups[i] for i in members], radius, algorithm == 1, r0, r1))
    return eps, torch.stack(counts, dim=1)


def label_group(codes: torch.Tensor, continuous: list[torch.Tensor]) -> torch.Tensor:
    """The label group of ``codes`` for the continuous groups ``continuous``: its max-norm distance is 0
    within a class and larger than every distance in the continuous groups across classes.

    Normally (1, N, 1): ``codes * L`` with L = 2 x the largest spread of the continuous groups + 1. When
    (C - 1) * L would overflow (data spanning near the largest finite value), the codes are written in
    binary instead: (1, N, b) with b = ceil(log2 C) columns of 0 or F = the dtype's largest finite value,
    so two classes differ by F in some column and every value is finite. Either way the estimate is
    unchanged: only the order of distances within and across classes matters."""
    ref = continuous[0]
    spread = max(float((g.amax(dim=1) - g.amin(dim=1)).max()) if g.numel() else 0.0 for g in continuous)
    scale = 2.0 * spread + 1.0
    top = int(codes.max()) if codes.numel() else 0
    fmax = torch.finfo(ref.dtype).max
    if top * scale <= fmax:
        return (codes.to(ref.device, ref.dtype) * scale).reshape(1, -1, 1)
    if not spread < fmax:
        raise ValueError(
            f"the continuous data span {spread:.3g}, the largest finite {ref.dtype} value: labels cannot be "
            "told apart from distances; rescale the data"
        )
    bits = max(1, top.bit_length())
    shifts = torch.arange(bits, device=codes.device)
    binary = (codes[:, None] >> shifts) & 1
    return (binary.to(ref.device, ref.dtype) * fmax)[None]


def ross_counts(
    x: torch.Tensor, classes: torch.Tensor, strata: torch.Tensor, k_each: torch.Tensor, kernels=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The neighbour counts of Ross's estimator (mipp.discrete.ross) for continuous x (B, N, d) and int64 codes
    (N,) shared by the batch: ``classes`` (of y, or of the pairs (y, z)), ``strata`` (of z, each class inside
    one stratum; all 0 without a z) and ``k_each`` (k_i, at least 1 and below the size of i's class). Returns
    eps (B, N), the distance from i to its k_i-th nearest neighbour of its own class (i excluded by index), and
    int64 (B, N) counts over the j != i: tied, of i's class within <= eps_i; lt and le, of i's stratum within
    < eps_i and <= eps_i.

    This composition is the specification: the classes and strata enter as label groups (a distance 0 within
    and larger than every distance in x across), so a k-NN of the joint space stays within i's class and a
    count within its stratum. ``kernels`` = (knn_distance, count_within) with explicit query rows runs it on
    other kernels."""
    knn, count = kernels or (knn_distance, count_within)
    n = int(x.shape[1])
    own = [x, label_group(classes, [x])]
    eps: torch.Tensor | None = None
    for kv in torch.unique(k_each).tolist():  # at most k values: they differ only in classes of k or fewer
        d = knn(own, int(kv), 0, n)
        eps = d if eps is None else torch.where((k_each == kv).to(d.device), d, eps)
    assert eps is not None, "k_each holds one value per sample, N >= 2"
    space = [x] if int(strata.max()) == 0 else [x, label_group(strata, [x])]
    return eps, count(own, eps, False, 0, n), count(space, eps, True, 0, n), count(space, eps, False, 0, n)


def digamma_sum(counts: torch.Tensor, offset: int, reduce: bool) -> torch.Tensor:
    """psi(counts + offset) in float64, summed over the last dimension when ``reduce``. Integer counts
    with counts + offset <= 0 (the poles of psi) are an error, as in the C++ kernel."""
    if not (counts.is_floating_point() or counts.is_complex()) and counts.numel() and int(counts.min()) + offset <= 0:
        raise ValueError(
            f"digamma_sum: counts + offset must be >= 1 (psi has poles at 0, -1, -2, ...), "
            f"got min(counts) = {int(counts.min())} with offset {offset}"
        )
    values = torch.special.digamma(counts.to(torch.float64) + offset)
    return values.sum(dim=-1) if reduce else values
