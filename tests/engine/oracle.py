"""Independent oracles for the mipp tests: numpy + scipy only, never mipp.

* k-th neighbour distances: scipy ``cKDTree`` with ``p=inf`` (the max-norm), the query point excluded by
  *index* (with duplicated rows the query point need not be the first of the zero-distance neighbours),
  and a brute-force numpy version (``np.partition``) that also works in float32.
* neighbour counts and KSG-2 marginal radii: exact max-norm distances computed row block by row block in
  numpy, compared with ``<`` / ``<=``; no epsilon anywhere.
* estimators: KSG-1, KSG-2 (Kraskov et al. 2004) and Frenzel-Pompe CMI written from the paper formulas
  with ``scipy.special.digamma``.

Every function takes 2-D numpy arrays ``(N, d)`` (1-D arrays are treated as one column) and works in the
arrays' own dtype (float64, or float32 when all inputs are float32), so the per-sample values can be
compared with the ops *exactly*.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

_BLOCK = 256  # query rows per block: memory O(_BLOCK * N)


def as2d(a) -> np.ndarray:
    a = np.asarray(a)
    return a[:, None] if a.ndim == 1 else a


def _block_distance(a: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """(r1 - r0, N) max-norm distances from rows r0:r1 of ``a`` to every row, in a's dtype."""
    return np.abs(a[r0:r1, None, :] - a[None, :, :]).max(axis=2)


def _joint_block(groups: list[np.ndarray], r0: int, r1: int) -> np.ndarray:
    d = _block_distance(groups[0], r0, r1)
    for g in groups[1:]:
        d = np.maximum(d, _block_distance(g, r0, r1))
    return d


def _blocks(n: int):
    for r0 in range(0, n, _BLOCK):
        yield r0, min(n, r0 + _BLOCK)


def knn_distance_kdtree(groups, k: int) -> np.ndarray:
    """(N,) float64 distance to the k-th nearest neighbour (self excluded by index) in the joint space
    of ``groups`` (max-norm), with scipy's cKDTree."""
    data = np.hstack([as2d(g).astype(np.float64) for g in groups])
    n = data.shape[0]
    tree = cKDTree(data)
    # k + 1 neighbours always contain the k nearest others: either the query point is among them (drop
    # it) or k + 1 others tie at distance 0 with it and were returned instead.
    dist, idx = tree.query(data, k=k + 1, p=np.inf)
    dist, idx = dist.reshape(n, k + 1), idx.reshape(n, k + 1)
    out = np.empty(n)
    for i in range(n):
        keep = dist[i][idx[i] != i]
        out[i] = keep[k - 1]
    return out


def knn_distance_brute(groups, k: int) -> np.ndarray:
    """(N,) k-th neighbour distance by brute force (np.partition), in the groups' dtype."""
    groups = [as2d(g) for g in groups]
    n = groups[0].shape[0]
    out = np.empty(n, dtype=groups[0].dtype)
    for r0, r1 in _blocks(n):
        d = _joint_block(groups, r0, r1)
        d[np.arange(r1 - r0), np.arange(r0, r1)] = np.inf
        out[r0:r1] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out


def count_within(groups, radius, strict: bool) -> np.ndarray:
    """(N,) int64 #{j != i : d(i, j) < radius[i]} (strict) or <= (non-strict), exact."""
    groups = [as2d(g) for g in groups]
    radius = np.asarray(radius)
    n = groups[0].shape[0]
    out = np.empty(n, dtype=np.int64)
    for r0, r1 in _blocks(n):
        d = _joint_block(groups, r0, r1)
        r = radius[r0:r1, None]
        inside = d < r if strict else d <= r
        inside[np.arange(r1 - r0), np.arange(r0, r1)] = False
        out[r0:r1] = inside.sum(axis=1)
    return out


def marginal_radius(groups, radius) -> np.ndarray:
    """(N, G): per group, the largest group distance from i to the j != i whose joint distance is
    <= radius[i] (every tie at the radius belongs to the neighbourhood); 0 when there are none."""
    groups = [as2d(g) for g in groups]
    radius = np.asarray(radius)
    n = groups[0].shape[0]
    out = np.zeros((n, len(groups)), dtype=groups[0].dtype)
    for r0, r1 in _blocks(n):
        parts = [_block_distance(g, r0, r1) for g in groups]
        joint = parts[0]
        for p in parts[1:]:
            joint = np.maximum(joint, p)
        inside = joint <= radius[r0:r1, None]
        inside[np.arange(r1 - r0), np.arange(r0, r1)] = False
        for gi, p in enumerate(parts):
            out[r0:r1, gi] = np.where(inside, p, 0).max(axis=1)
    return out


def _prepare(*arrays):
    """2-D arrays in one dtype: float64 unless every array is float32 (then distances stay float32)."""
    arrays = [as2d(a) for a in arrays]
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return [a.astype(dtype) for a in arrays]


def knn_distance(groups, k: int) -> np.ndarray:
    """cKDTree in float64; brute force (in the groups' dtype) for float32 groups."""
    if groups[0].dtype == np.float64:
        return knn_distance_kdtree(groups, k)
    return knn_distance_brute(groups, k)


def ksg1(x, y, k: int, local: bool = False):
    """KSG algorithm 1: psi(k) + psi(N) - <psi(n_x + 1) + psi(n_y + 1)>, strict counts."""
    x, y = _prepare(x, y)
    n = x.shape[0]
    eps = knn_distance([x, y], k)
    nx = count_within([x], eps, strict=True)
    ny = count_within([y], eps, strict=True)
    values = digamma(k) + digamma(n) - digamma(nx + 1) - digamma(ny + 1)
    return values if local else float(np.mean(values))


def ksg2(x, y, k: int, local: bool = False):
    """KSG algorithm 2: psi(k) - 1/k + psi(N) - <psi(n_x) + psi(n_y)>, with eps_x(i), eps_y(i) the
    largest marginal distances over the neighbourhood {j != i : d_joint(i, j) <= eps(i)} and
    n_x = #{j != i : |x_i - x_j| <= eps_x(i)}."""
    x, y = _prepare(x, y)
    n = x.shape[0]
    eps = knn_distance([x, y], k)
    radii = marginal_radius([x, y], eps)
    nx = count_within([x], radii[:, 0], strict=False)
    ny = count_within([y], radii[:, 1], strict=False)
    values = digamma(k) - 1.0 / k + digamma(n) - digamma(nx) - digamma(ny)
    return values if local else float(np.mean(values))


def cmi_fp(x, y, z, k: int, local: bool = False):
    """Frenzel-Pompe: psi(k) - <psi(n_xz + 1) + psi(n_yz + 1) - psi(n_z + 1)>, strict counts under the
    k-th neighbour distance in the joint (x, y, z) space."""
    x, y, z = _prepare(x, y, z)
    eps = knn_distance([x, y, z], k)
    nxz = count_within([x, z], eps, strict=True)
    nyz = count_within([y, z], eps, strict=True)
    nz = count_within([z], eps, strict=True)
    values = digamma(k) - digamma(nxz + 1) - digamma(nyz + 1) + digamma(nz + 1)
    return values if local else float(np.mean(values))


def zscore(a: np.ndarray) -> np.ndarray:
    """Columns to mean 0 and sample standard deviation 1 (ddof=1), as MILCA does."""
    a = as2d(a).astype(np.float64)
    return (a - a.mean(axis=0)) / a.std(axis=0, ddof=1)


def gaussian_mi(cov: np.ndarray, dx: int) -> float:
    """Closed-form I(x; y) in nats of a jointly Gaussian (x, y) with covariance ``cov``, x the first
    ``dx`` coordinates: 0.5 * log(det S_xx * det S_yy / det S)."""
    sx = np.linalg.slogdet(cov[:dx, :dx])[1]
    sy = np.linalg.slogdet(cov[dx:, dx:])[1]
    s = np.linalg.slogdet(cov)[1]
    return 0.5 * (sx + sy - s)
