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
from numbers import Integral, Real

import numpy as np
import torch

import mipp
from mipp import discrete

try:
    from scipy.sparse import issparse
    from sklearn.base import BaseEstimator, _fit_context
    from sklearn.feature_selection import SelectorMixin
    from sklearn.preprocessing import scale
    from sklearn.utils import check_array, check_random_state
    from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions, validate_params
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(f"mipp.sklearn needs scikit-learn >= 1.6 ({exc}): pip install 'mipp[sklearn]'") from exc

_PARAMS = {
    "X": ["array-like", "sparse matrix"],
    "y": ["array-like"],
    "discrete_features": [StrOptions({"auto"}), "boolean", "array-like"],
    "n_neighbors": [Interval(Integral, 1, None, closed="left")],
    "copy": ["boolean"],
    "random_state": ["random_state"],
    "n_jobs": [Integral, None],
}

# entries (samples x columns) per chunk of the contingency tables: bounds the working memory (~20 MB)
_CHUNK_ENTRIES = 1 << 18


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


def _ross(xs: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
    """Ross's estimate of (B, N, 1) continuous columns against labels, without the tie rule of mipp.mi: on
    data scikit-learn has jittered an equal distance is a rounding coincidence (a few in MNIST's 784 x 5,000
    pixels moved values by 2.5e-4), and scikit-learn counts it strictly."""
    codes = torch.as_tensor(np.unique(labels, return_inverse=True)[1].reshape(-1))
    if int(torch.bincount(codes).max()) < 2:
        raise ValueError("every value of the discrete variable occurs once: no Ross estimate")
    return discrete.ross(xs, codes, k, ties=False).numpy()


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
            if discrete_target:  # jittered: an equal distance is a rounding coincidence, counted as sklearn does
                mi[cont] = _ross(xs, codes, n_neighbors)
            else:
                mi[cont] = mipp.mi(xs, y_t, n_neighbors).numpy()
        if len(disc) and discrete_target:
            mi[disc] = _discrete_vs_classes(X, disc, codes)
        elif len(disc):  # each discrete feature has its own classes: Ross's estimate per feature
            for j in disc:
                labels = np.unique(_column(X, j), return_inverse=True)[1].reshape(-1)
                mi[j] = _ross(y_t[None, :, None], labels, n_neighbors)[0]
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


# ---------------------------------------------------------------------------------------------------------
# MISelector: greedy forward selection by conditional mutual information
# ---------------------------------------------------------------------------------------------------------


def _standardise(col: np.ndarray) -> np.ndarray:
    col = col - col.mean()
    std = col.std()
    return col / std if std > 0 else col


def _discrete_columns(X: np.ndarray, discrete_features, max_levels: int = 32) -> np.ndarray:
    """The mask of discrete features; "auto": integer-valued columns with at most ``max_levels`` values."""
    n_features = X.shape[1]
    if isinstance(discrete_features, str):  # "auto" (validated by the parameter constraints)
        integral = np.all(np.round(X) == X, axis=0)
        levels = np.array([len(np.unique(X[:, j])) for j in range(n_features)])
        return integral & (levels <= max_levels)
    return _discrete_mask(discrete_features, n_features, False)


class MISelector(SelectorMixin, BaseEstimator):
    """Feature selection by conditional mutual information: greedy forward selection on mipp's KSG engine.

    Round t adds the candidate j with the largest I(X_j; y | X_S) given the features S already chosen, all
    candidates of a round in ONE batched engine call (y and X_S shared by the batch). A
    feature redundant with S (a duplicate, a near copy, a mixture of chosen features) scores ~0 and is not
    taken; a feature related to y only nonlinearly (y = X_i^2, sin(3 X_i)) scores what it carries.

    Pairs whose members carry nothing alone (y = X_a XOR X_b, y = X_a X_b with symmetric X): forward
    selection finds the second member by its conditional MI once the first is in; the first gets in by a
    look-ahead. In round 1 the joint I(X_a, X_b; y) of every pair among the ``n_pairs`` features of highest
    marginal MI is estimated (one batched call); in each round the best few pairs with neither member chosen
    are re-estimated given S, and when half a pair's conditional MI exceeds the best single gain, its member
    of larger single gain is taken (the partner follows on its own).

    Conditioning set: all of S while |S| <= ``max_conditioning``; beyond that, for each candidate the
    ``max_conditioning`` chosen features most similar to it (KSG loses power in high dimension, and
    redundancy with S is carried by the chosen features most similar to the candidate; an exact or near copy
    is always the most similar one). Similarity: -1/2 log(1 - rho^2) of the Spearman correlation, cheap for
    all features at once.

    Rounds are lazy: candidates are evaluated in order of their last known gain, ``batch_size`` per engine
    call, until the best fresh gain is at least every stale one (exact when gains only shrink as S grows;
    a pair partner's bound is raised to the pair's joint MI when its partner is chosen). Once no candidate's
    gain is above 1/N nats, the rest are filled by mRMR's rule (marginal MI less the mean similarity to S), which
    ranks a near copy last.

    Parameters
    ----------
    n_features_to_select : int, float or "auto"
        How many features (int), or a fraction of them (float in (0, 1]); "auto": half of them when ``tol``
        is None, else as many as ``tol`` lets in.
    tol : float or None
        Stop when the best candidate's conditional MI (nats) is below ``tol``.
    n_permutations : int
        With > 0, also stop when the best candidate's conditional MI is not significant at ``alpha`` in a
        permutation test (the candidate shuffled among its 5 nearest neighbours in X_S; globally in round 1).
    alpha : float
        Significance level of that test.
    discrete_target : bool or "auto"
        y holds class labels (Ross's estimator, as mutual_info_classif) or a continuous value (KSG and
        Frenzel-Pompe, as mutual_info_regression); "auto": labels when y is bool, integer, string or object.
    discrete_features : "auto", bool or array-like
        Discrete features get their values' ranks plus uniform noise in [0, 1) (a dither: the value is
        recovered by rounding down, so every MI is that of the discrete feature); continuous ones are
        standardised and get 1e-10 jitter, as scikit-learn's. "auto": integer-valued columns with at most 32
        distinct values.
    n_neighbors : int
        k of the estimates. 5, not the 3 of scikit-learn's mutual_info_*: the conditional estimates, in a few
        dimensions on a few hundred samples, vary less (docs/sklearn.md has the cross-validated scores of both).
    n_pairs : int
        Features taking part in the round-1 pair look-ahead (n_pairs (n_pairs - 1) / 2 pairs); 0 turns it off.
    max_conditioning : int
        The largest conditioning set (see above).
    batch_size : int
        Candidates per engine call in the lazy rounds.
    random_state : int, RandomState or None
        Jitter, dither and permutations, drawn in fit.
    progress : bool or "auto"
        A tqdm bar over the rounds; "auto": when there are more than 50 features and 2,000 samples.
    n_jobs : int or None
        torch threads during fit (None: torch's setting).

    Attributes
    ----------
    support_ : (n_features_in_,) bool mask of the selected features.
    selected_ : indices of the selected features in the order they were chosen.
    gains_ : the conditional MI (nats) of each selected feature when it was chosen (a pair member chosen by
        look-ahead: half the pair's conditional MI).
    scores_ : (n_features_in_,) marginal MI of every feature with y (nats); 0 for an exact duplicate of an
        earlier column.
    ranking_ : (n_features_in_,) 1 for the first feature chosen, 2 for the second, ...; the others follow by
        decreasing marginal MI, exact duplicates last.
    duplicates_ : (n_features_in_,) for each feature, the index of the earlier column it duplicates, or -1.
    """

    _parameter_constraints: dict = {  # noqa: RUF012  (scikit-learn's convention)
        "n_features_to_select": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="right"),
        ],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "n_permutations": [Interval(Integral, 0, None, closed="left")],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "discrete_target": ["boolean", StrOptions({"auto"})],
        "discrete_features": [StrOptions({"auto"}), "boolean", "array-like"],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "n_pairs": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "max_conditioning": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "progress": ["boolean", StrOptions({"auto"})],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        n_features_to_select="auto",
        *,
        tol=None,
        n_permutations=0,
        alpha=0.05,
        discrete_target="auto",
        discrete_features="auto",
        n_neighbors=5,
        n_pairs="auto",
        max_conditioning=5,
        batch_size=16,
        random_state=None,
        progress="auto",
        n_jobs=None,
    ):
        self.n_features_to_select = n_features_to_select
        self.tol = tol
        self.n_permutations = n_permutations
        self.alpha = alpha
        self.discrete_target = discrete_target
        self.discrete_features = discrete_features
        self.n_neighbors = n_neighbors
        self.n_pairs = n_pairs
        self.max_conditioning = max_conditioning
        self.batch_size = batch_size
        self.random_state = random_state
        self.progress = progress
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    # -- data ---------------------------------------------------------------------------------------------

    def _prepare(self, X, y, rng):
        n, p = X.shape
        if self.discrete_target == "auto":
            discrete_y = np.asarray(y).dtype.kind in "biuOUS"
        else:
            discrete_y = bool(self.discrete_target)
        if discrete_y:  # class codes (int64): _gain takes them for labels
            check_classification_targets(y)
            target = torch.as_tensor(np.unique(y, return_inverse=True)[1].reshape(-1).astype(np.int64))
        else:
            yv = np.asarray(y, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(yv)):
                raise ValueError("y contains NaN or inf")
            yv = yv + 1e-10 * max(1.0, float(np.mean(np.abs(_standardise(yv))))) * rng.standard_normal(n)
            target = torch.as_tensor(_standardise(yv))
        discrete = _discrete_columns(X, self.discrete_features)
        # exact duplicate columns: only the first of each set is a candidate
        _, first, inverse = np.unique(X, axis=1, return_index=True, return_inverse=True)
        duplicates = np.where(first[inverse.reshape(-1)] != np.arange(p), first[inverse.reshape(-1)], -1)
        Z = np.empty((n, p))
        for j in range(p):
            if discrete[j]:
                ranks = np.unique(X[:, j], return_inverse=True)[1].reshape(-1)
                Z[:, j] = _standardise(ranks + rng.uniform(0.0, 1.0, n))
            else:
                col = _standardise(X[:, j].astype(np.float64))
                Z[:, j] = col + 1e-10 * max(1.0, float(np.mean(np.abs(col)))) * rng.standard_normal(n)
        ranks = np.argsort(np.argsort(Z, axis=0, kind="stable"), axis=0, kind="stable").T.astype(np.float64)
        self._ranks = np.apply_along_axis(_standardise, 1, ranks)  # (p, N), for the similarities
        return torch.as_tensor(np.ascontiguousarray(Z.T))[..., None], target, duplicates

    # -- statistics, each one batched engine call ------------------------------------------------------

    def _gain(self, cols, target, z):
        """I(cols; y | z) for a batch: cols (B, N, c); z None, shared (N, m) or per problem (B, N, m). A continuous
        y: KSG and Frenzel-Pompe. Class labels (int64 codes): Ross's estimator, given z by the chain rule
        I(cols, z; y) - I(z; y) (mipp's conditional estimators take labels only as strata). The labels replace
        a dithered y read by KSG (the class plus uniform noise: the same MI in theory, but chosen features
        scored lower in cross-validation, docs/sklearn.md)."""
        k = int(self.n_neighbors)
        if target.dtype != torch.int64:
            return mipp.mi(cols, target, k) if z is None else mipp.cmi(cols, target, z, k)
        if z is None:
            return mipp.mi(cols, target, k, discrete_y=True)
        zb = z.expand(cols.shape[0], -1, -1) if z.dim() == 2 else z
        joint = mipp.mi(torch.cat([cols, zb], dim=-1), target, k, discrete_y=True)
        return joint - mipp.mi(z, target, k, discrete_y=True)

    def _conditioning(self, selected, cols, similarity_rows):
        """z: X_S shared when |S| <= max_conditioning, else for each problem the chosen features most similar
        to it (``similarity_rows``: (B, |S|))."""
        if not selected:
            return None
        m = int(self.max_conditioning)
        if len(selected) <= m:
            return cols[selected, :, 0].T.contiguous()
        nearest = np.argsort(-similarity_rows, axis=1, kind="stable")[:, :m]
        chosen = np.asarray(selected)[nearest]  # (B, m)
        return cols[torch.as_tensor(chosen), :, 0].transpose(1, 2).contiguous()

    def _significant(self, j, selected, cols, target, rng):
        n_perm = int(self.n_permutations)
        x = cols[j]
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        if selected:
            zs = cols[selected, :, 0].T.contiguous()
            perm = mipp.local_permutations(zs, n_perm, 5, gen)
        else:
            zs = None
            perm = torch.rand(n_perm, x.shape[0], generator=gen).argsort(dim=1)
        batch = torch.cat([x[None], x[perm]], dim=0)  # the data, then the surrogates
        stats = self._gain(batch, target, zs)
        p_value = (1.0 + float((stats[1:] >= stats[0]).sum())) / (n_perm + 1)
        return p_value <= self.alpha

    # -- fit ----------------------------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Select features of X (n_samples, n_features) for the target y (n_samples,). Returns self."""
        X, y = validate_data(
            self, X, y, dtype=np.float64, y_numeric=False, ensure_min_samples=int(self.n_neighbors) + 1
        )
        rng = check_random_state(self.random_state)
        rng = np.random.default_rng(rng.randint(2**31 - 1))
        n, p = X.shape
        with threads(self.n_jobs):
            cols, target, duplicates = self._prepare(X, y, rng)
            self._select(cols, target, duplicates, rng, n, p)
        del self._ranks
        return self

    def _budget(self, p):
        k = self.n_features_to_select
        if isinstance(k, str):
            return p if self.tol is not None else max(1, p // 2)
        if not isinstance(k, Integral):  # a fraction in (0, 1]
            return max(1, round(k * p))
        return min(int(k), p)

    def _similarity(self, similarity, rows, selected, cols):
        """(len(rows), |S|) similarities of the rows to the chosen features: -1/2 log(1 - rho^2) of the
        Spearman correlation rho (the MI of a Gaussian pair with that correlation; ~0 for independent
        features, large for a near copy), one column per chosen feature, computed for all features at once
        when it is first needed (a product with the ranks, O(N p))."""
        for s_ in selected:
            if s_ not in similarity:
                rho = np.clip(self._ranks @ self._ranks[s_] / self._ranks.shape[1], -1.0, 1.0)
                similarity[s_] = -0.5 * np.log(np.maximum(1.0 - rho * rho, 1e-300))
        return np.stack([similarity[s_][rows] for s_ in selected], axis=1)

    def _round(self, remaining, selected, cols, target, bound, similarity):
        """Conditional gains of the candidates, lazily: in order of their last known gain (``bound``),
        ``batch_size`` per engine call, until the best fresh gain is at least every stale one."""
        order = sorted(remaining, key=lambda j: -bound[j])
        fresh: dict[int, float] = {}
        step = int(self.batch_size)
        for pos in range(0, len(order), step):
            batch = order[pos : pos + step]
            rows = (
                self._similarity(similarity, batch, selected, cols) if len(selected) > self.max_conditioning else None
            )
            z = self._conditioning(selected, cols, rows)
            gains = self._gain(cols[batch], target, z).numpy()
            bound[batch] = gains
            fresh.update(zip(batch, gains.tolist()))
            rest = order[pos + step :]
            if not rest or max(fresh.values()) >= bound[rest[0]]:
                break
        return fresh

    def _select(self, cols, target, duplicates, rng, n, p):
        candidates = [j for j in range(p) if duplicates[j] < 0]
        budget = min(self._budget(p), len(candidates))
        scores = np.zeros(p)
        scores[candidates] = self._gain(cols[candidates], target, None).numpy()
        similarity: dict[int, np.ndarray] = {}  # chosen feature -> its similarity to every feature
        pairs = self._pair_screen(cols, target, scores, candidates)
        bound = scores.copy()
        selected: list[int] = []
        gains: list[float] = []
        show = self.progress is True or (self.progress == "auto" and p > 50 and n > 2000)
        bar = _progress(budget, show)
        for _ in range(budget):
            remaining = [j for j in candidates if j not in selected]
            if not remaining:
                break
            fresh = {j: float(scores[j]) for j in remaining} if not selected else None
            if fresh is None:
                fresh = self._round(remaining, selected, cols, target, bound, similarity)
            single = np.full(p, -np.inf)
            single[list(fresh)] = list(fresh.values())
            best = max(fresh, key=lambda j: fresh[j])
            value = fresh[best]
            choice, look = self._look_ahead(pairs, selected, cols, target, single, value, similarity)
            if choice is not None:
                best, value = choice, look
            elif value <= 1.0 / n and selected:
                # nothing left to find, by the estimates: fill with the least redundant relevant feature
                # (mRMR's rule: marginal MI less the mean similarity to the chosen ones), never a near copy.
                # Gains up to 1/N nats count as nothing: that is a few samples' counts moving by one, where a
                # near copy's estimate sits (its joint distances are the chosen twin's), above an independent
                # feature's (negative: one more dimension)
                pool = list(fresh)
                redundancy = self._similarity(similarity, pool, selected, cols).mean(axis=1)
                best = pool[int(np.argmax(scores[pool] - redundancy))]
            if self.tol is not None and value < self.tol:
                break
            if self.n_permutations and not self._significant(best, selected, cols, target, rng):
                break
            selected.append(best)
            gains.append(value)
            for joint, a, b in pairs:  # a partner of the new feature may gain from it (synergy): re-examine it
                if best in (a, b):
                    other = b if a == best else a
                    bound[other] = max(bound[other], joint)
            bar.update(1)
        bar.close()
        self.selected_ = np.asarray(selected, dtype=np.intp)
        self.gains_ = np.asarray(gains)
        self.scores_ = scores
        self.duplicates_ = duplicates
        support = np.zeros(p, dtype=bool)
        support[self.selected_] = True
        self.support_ = support
        rest = sorted((j for j in range(p) if not support[j]), key=lambda j: (duplicates[j] >= 0, -scores[j], j))
        ranking = np.empty(p, dtype=np.intp)
        ranking[list(selected) + rest] = np.arange(1, p + 1)
        self.ranking_ = ranking

    def _pair_screen(self, cols, target, scores, candidates):
        """[(joint MI, a, b)] of the pairs among the n_pairs candidates of highest marginal MI whose joint MI
        exceeds the sum of the members' marginal MI, by decreasing excess (synergy): the pairs whose members
        carry little alone, which forward selection cannot start."""
        m = (64 if len(candidates) <= 64 else 24) if self.n_pairs == "auto" else int(self.n_pairs)
        m = min(m, len(candidates))
        if m < 2:
            return []
        top = sorted(candidates, key=lambda j: -scores[j])[:m]
        ia, ib = np.triu_indices(m, 1)
        a, b = np.asarray(top)[ia], np.asarray(top)[ib]
        joint = self._gain(torch.cat([cols[a], cols[b]], dim=-1), target, None).numpy()
        synergy = joint - np.maximum(scores[a], 0) - np.maximum(scores[b], 0)
        keep = np.flatnonzero(synergy > 0)
        order = keep[np.argsort(-synergy[keep], kind="stable")]
        return [(float(joint[i]), int(a[i]), int(b[i])) for i in order]

    def _look_ahead(self, pairs, selected, cols, target, single, best_single, similarity, top=16):
        """The member of the best open pair when half the pair's conditional MI beats the best single gain."""
        open_pairs = [(v, a, b) for v, a, b in pairs if a not in selected and b not in selected][:top]
        if not open_pairs or max(q[0] for q in open_pairs) / 2 <= best_single:
            return None, None
        a = np.asarray([q[1] for q in open_pairs])
        b = np.asarray([q[2] for q in open_pairs])
        rows = None
        if len(selected) > self.max_conditioning:
            rows = np.maximum(
                self._similarity(similarity, list(a), selected, cols),
                self._similarity(similarity, list(b), selected, cols),
            )
        z = self._conditioning(selected, cols, rows)
        joint = self._gain(torch.cat([cols[a], cols[b]], dim=-1), target, z).numpy()
        i = int(np.argmax(joint))
        if joint[i] / 2 <= best_single:
            return None, None
        member = int(a[i]) if single[a[i]] >= single[b[i]] else int(b[i])
        return member, float(joint[i] / 2)

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, show):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="MISelector", unit="feature")
