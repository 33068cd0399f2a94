"""scikit-learn on mipp's engine: drop-in ``mutual_info_regression`` / ``mutual_info_classif`` (``score_func``
of SelectKBest, SelectPercentile, ...) and the feature selector :class:`MISelector`.

The drop-ins have scikit-learn's signature, parameter validation (its own ``validate_params`` with the same
constraints) and semantics: continuous features are scaled (without centring) and get scikit-learn's 1e-10
jitter from ``random_state`` (drawn the same way, so with the same ``random_state`` the inputs are
identical); a continuous target likewise; KSG (algorithm 1, max-norm) for continuous pairs, Ross (2014) for a
continuous-discrete pair, the plug-in estimate for two discrete variables; every value clipped at 0.

What differs is how the work is done: all continuous features against the target in one batched engine call
(the target's distances computed once); discrete features against a discrete target as contingency tables
of all columns at once, from the stored entries of a sparse matrix (never densified); ``n_jobs`` sets
torch's threads for the call (None: torch's current setting).

Values equal scikit-learn's to 1e-10 wherever scikit-learn's neighbour distances are exact. They are not
when a class (or a discrete feature's value) has at most about 2 x n_neighbors members: scikit-learn then
finds the neighbours by brute force with the |a|^2 + |b|^2 - 2ab expansion, whose rounding moves a boundary
count. mipp's distances are exact; docs/sklearn.md has the measured differences.
"""

from __future__ import annotations

import contextlib
import os
from numbers import Integral

import numpy as np
import torch

import mipp

try:
    from scipy.sparse import issparse
    from sklearn.preprocessing import scale
    from sklearn.utils import check_array, check_random_state
    from sklearn.utils._param_validation import Interval, StrOptions, validate_params
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_X_y
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("mipp.sklearn needs scikit-learn: pip install 'mipp[sklearn]'") from exc

_PARAMS = {
    "X": ["array-like", "sparse matrix"],
    "y": ["array-like"],
    "discrete_features": [StrOptions({"auto"}), "boolean", "array-like"],
    "n_neighbors": [Interval(Integral, 1, None, closed="left")],
    "copy": ["boolean"],
    "random_state": ["random_state"],
    "n_jobs": [Integral, None],
}

# entries (samples x columns) per chunk of the contingency tables: bounds the working memory (~200 MB)
_CHUNK_ENTRIES = 1 << 23


@contextlib.contextmanager
def threads(n_jobs):
    """torch's intra-op threads set to ``n_jobs`` for the block (joblib's convention: -1 all cores, -2 all
    but one; None leaves torch's setting as it is), restored afterwards."""
    if n_jobs is None:
        yield
        return
    n_jobs = int(n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 has no meaning; use None, a positive number or -1 (all cores)")
    n = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _discrete_mask(discrete_features, n_features: int, sparse: bool) -> np.ndarray:
    if isinstance(discrete_features, (str, bool)):
        if isinstance(discrete_features, str):
            if discrete_features != "auto":
                raise ValueError("Invalid string value for discrete_features.")
            discrete_features = sparse
        return np.full(n_features, bool(discrete_features))
    given = check_array(discrete_features, ensure_2d=False)
    if given.ndim != 1:
        raise ValueError(f"discrete_features must be 1-D (a mask or indices), got shape {given.shape}")
    if given.dtype == bool:
        if len(given) != n_features:
            raise ValueError(
                f"discrete_features is a boolean mask of length {len(given)}, but X has {n_features} features"
            )
        return given.copy()
    if given.dtype.kind not in "iu":
        raise ValueError(f"discrete_features must be a boolean mask or integer indices, got dtype {given.dtype}")
    if len(given) and (given.min() < -n_features or given.max() >= n_features):
        raise ValueError(f"discrete_features has indices out of range for X with {n_features} features: {given}")
    mask = np.zeros(n_features, dtype=bool)
    mask[given] = True
    return mask


def _plug_in_columns(cols, values, classes, n_cols, n, class_counts, zeros=None) -> np.ndarray:
    """Plug-in MI (nats) of every column against the classes, from the entries (column, value, class) of
    all columns, as scikit-learn's ``mutual_info_score`` computes it per column. ``zeros`` (sparse input):
    the number of entries of each column not listed, all of value 0; then ``values`` are the non-zero ones."""
    n_classes = len(class_counts)
    order = np.lexsort((values, cols))
    cols, values, classes = cols[order], values[order], classes[order]
    new = np.ones(len(cols), dtype=bool)
    new[1:] = (cols[1:] != cols[:-1]) | (values[1:] != values[:-1])
    value_id = np.cumsum(new) - 1  # one id per (column, value)
    value_col = cols[new]
    value_count = np.bincount(value_id)
    cell, cell_count = np.unique(value_id * n_classes + classes, return_counts=True)
    cell_value, cell_class = cell // n_classes, cell % n_classes
    cell_col = value_col[cell_value]
    n_x = value_count[cell_value]
    if zeros is not None:  # the value 0 of each column: the class counts less the listed entries
        listed = np.bincount(cols * n_classes + classes, minlength=n_cols * n_classes).reshape(n_cols, n_classes)
        zero_cells = class_counts[None, :] - listed
        zc, zk = np.nonzero(zero_cells)
        cell_col = np.r_[cell_col, zc]
        cell_class = np.r_[cell_class, zk]
        cell_count = np.r_[cell_count, zero_cells[zc, zk]]
        n_x = np.r_[n_x, zeros[zc]]
    # scikit-learn's formula, term by term (mutual_info_score)
    nm = cell_count / n
    outer = n_x.astype(np.int64) * class_counts[cell_class].astype(np.int64)
    terms = nm * (np.log(cell_count) - np.log(n)) + nm * (-np.log(outer) + 2 * np.log(n))
    terms = np.where(np.abs(terms) < np.finfo(terms.dtype).eps, 0.0, terms)
    mi = np.bincount(cell_col, weights=terms, minlength=n_cols)
    n_values = np.bincount(value_col, minlength=n_cols) + (0 if zeros is None else (zeros > 0))
    mi[n_values <= 1] = 0.0
    if n_classes <= 1:
        mi[:] = 0.0
    return np.clip(mi, 0.0, None)


def _discrete_vs_classes(X, columns: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Plug-in MI of the discrete columns of X (dense or CSC) against class codes, in column chunks."""
    n = X.shape[0]
    class_counts = np.bincount(codes)
    out = np.zeros(len(columns))
    if issparse(X):
        X = X[:, columns].tocsc()
        X.sum_duplicates()
        step = max(1, _CHUNK_ENTRIES // max(1, X.nnz // max(1, len(columns)) + 1))
        for c0 in range(0, len(columns), step):
            part = X[:, c0 : c0 + step]
            lengths = np.diff(part.indptr)
            cols = np.repeat(np.arange(part.shape[1]), lengths)
            keep = part.data != 0  # explicitly stored zeros are zeros
            cols, rows, values = cols[keep], part.indices[keep], part.data[keep]
            zeros = n - np.bincount(cols, minlength=part.shape[1])
            out[c0 : c0 + step] = _plug_in_columns(cols, values, codes[rows], part.shape[1], n, class_counts, zeros)
        return out
    step = max(1, _CHUNK_ENTRIES // max(1, n))
    for c0 in range(0, len(columns), step):
        block = np.asarray(X[:, columns[c0 : c0 + step]])
        width = block.shape[1]
        cols = np.repeat(np.arange(width), n)
        values = block.T.reshape(-1)
        out[c0 : c0 + step] = _plug_in_columns(cols, values, np.tile(codes, width), width, n, class_counts)
    return out


def _column(X, j: int) -> np.ndarray:
    if issparse(X):
        return np.asarray(X[:, [j]].toarray()).reshape(-1)
    return np.asarray(X[:, j])


def _estimate_mi(X, y, *, discrete_features, discrete_target, n_neighbors, copy, random_state, n_jobs):
    X, y = check_X_y(X, y, accept_sparse="csc", y_numeric=not discrete_target)
    n_samples, n_features = X.shape
    n_neighbors = int(n_neighbors)  # scikit-learn accepts any Integral, True included
    discrete_mask = _discrete_mask(discrete_features, n_features, issparse(X))
    continuous_mask = ~discrete_mask
    if np.any(continuous_mask) and issparse(X):
        raise ValueError("Sparse matrix `X` can't have continuous features.")
    rng = check_random_state(random_state)
    cont, disc = np.flatnonzero(continuous_mask), np.flatnonzero(discrete_mask)
    Xc = None
    if len(cont):
        # scikit-learn's preprocessing, on a copy of the continuous columns only (X itself is never modified)
        Xc = np.array(X[:, cont], dtype=np.float64)
        Xc = scale(Xc, with_mean=False, copy=False)
        means = np.maximum(1, np.mean(np.abs(Xc), axis=0))
        Xc += 1e-10 * means * rng.standard_normal(size=(n_samples, len(cont)))
    if not discrete_target:
        y = scale(y, with_mean=False)
        y += 1e-10 * np.maximum(1, np.mean(np.abs(y))) * rng.standard_normal(size=n_samples)
    codes = np.unique(y, return_inverse=True)[1].reshape(-1) if discrete_target else None
    y_t = torch.as_tensor(codes if discrete_target else np.asarray(y, dtype=np.float64))
    mi = np.zeros(n_features)
    with threads(n_jobs):
        if Xc is not None:
            xs = torch.as_tensor(np.ascontiguousarray(Xc.T))[..., None]  # (B, N, 1)
            mi[cont] = mipp.mi(xs, y_t, n_neighbors, discrete_y=discrete_target).numpy()
        if len(disc) and discrete_target:
            mi[disc] = _discrete_vs_classes(X, disc, codes)
        elif len(disc):  # each discrete feature has its own classes: Ross's estimate per feature
            for j in disc:
                labels = np.unique(_column(X, j), return_inverse=True)[1].reshape(-1)
                mi[j] = float(mipp.mi(y_t, torch.as_tensor(labels), n_neighbors, discrete_y=True))
    return np.maximum(mi, 0.0)


@validate_params(_PARAMS, prefer_skip_nested_validation=True)
def mutual_info_regression(X, y, *, discrete_features="auto", n_neighbors=3, copy=True, random_state=None, n_jobs=None):
    """Mutual information (nats) between each feature of X (n_samples, n_features) and a continuous target
    y, as scikit-learn's ``sklearn.feature_selection.mutual_info_regression``. Returns (n_features,).
    ``n_jobs``: torch threads for the call; ``copy`` is accepted and X is never modified."""
    return _estimate_mi(
        X,
        y,
        discrete_features=discrete_features,
        discrete_target=False,
        n_neighbors=n_neighbors,
        copy=copy,
        random_state=random_state,
        n_jobs=n_jobs,
    )


@validate_params(_PARAMS, prefer_skip_nested_validation=True)
def mutual_info_classif(X, y, *, discrete_features="auto", n_neighbors=3, copy=True, random_state=None, n_jobs=None):
    """Mutual information (nats) between each feature of X (n_samples, n_features) and class labels y, as
    scikit-learn's ``sklearn.feature_selection.mutual_info_classif``. Returns (n_features,).
    ``n_jobs``: torch threads for the call; ``copy`` is accepted and X is never modified."""
    check_classification_targets(y)
    return _estimate_mi(
        X,
        y,
        discrete_features=discrete_features,
        discrete_target=True,
        n_neighbors=n_neighbors,
        copy=copy,
        random_state=random_state,
        n_jobs=n_jobs,
    )
