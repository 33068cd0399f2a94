"""Drop-in ``mutual_info_regression`` / ``mutual_info_classif`` for scikit-learn users (``score_func`` of
SelectKBest, SelectPercentile, ...), computed on mipp's engine.

Same signature and semantics as scikit-learn's: continuous features are scaled (without centring) and get
scikit-learn's 1e-10 jitter from ``random_state`` (drawn the same way, so with the same ``random_state`` the
inputs are identical); a continuous target likewise; KSG (algorithm 1, max-norm) for continuous pairs,
Ross (2014) for a continuous-discrete pair, the plug-in estimate for two discrete variables; every value
clipped at 0. The results equal scikit-learn's to about 1e-10 on the same inputs. The difference is how
the work is done: all continuous features against the target in one batched engine call (the target's
distances computed once), on torch's threads; ``n_jobs`` is accepted for compatibility and ignored.
"""

from __future__ import annotations

import numpy as np
import torch

import mipp


def _sklearn():
    try:
        import sklearn.preprocessing
        import sklearn.utils
        import sklearn.utils.multiclass
        import sklearn.utils.validation
    except ImportError as exc:
        raise ImportError("mipp.sklearn needs scikit-learn: pip install 'mipp[sklearn]'") from exc
    return sklearn


def _estimate_mi(X, y, *, discrete_features="auto", discrete_target=False, n_neighbors=3, copy=True, random_state=None):
    sk = _sklearn()
    from scipy.sparse import issparse

    X, y = sk.utils.validation.check_X_y(X, y, accept_sparse="csc", y_numeric=not discrete_target)
    n_samples, n_features = X.shape
    if isinstance(discrete_features, (str, bool)):
        if isinstance(discrete_features, str):
            if discrete_features != "auto":
                raise ValueError("Invalid string value for discrete_features.")
            discrete_features = issparse(X)
        discrete_mask = np.full(n_features, bool(discrete_features))
    else:
        discrete_features = sk.utils.check_array(discrete_features, ensure_2d=False)
        if discrete_features.dtype != "bool":
            discrete_mask = np.zeros(n_features, dtype=bool)
            discrete_mask[discrete_features] = True
        else:
            discrete_mask = discrete_features
    continuous_mask = ~discrete_mask
    if np.any(continuous_mask) and issparse(X):
        raise ValueError("Sparse matrix `X` can't have continuous features.")
    rng = sk.utils.check_random_state(random_state)
    if np.any(continuous_mask):
        X = X.astype(np.float64, copy=copy)
        X[:, continuous_mask] = sk.preprocessing.scale(X[:, continuous_mask], with_mean=False, copy=False)
        means = np.maximum(1, np.mean(np.abs(X[:, continuous_mask]), axis=0))
        X[:, continuous_mask] += 1e-10 * means * rng.standard_normal(size=(n_samples, np.sum(continuous_mask)))
    if not discrete_target:
        y = sk.preprocessing.scale(y, with_mean=False)
        y += 1e-10 * np.maximum(1, np.mean(np.abs(y))) * rng.standard_normal(size=n_samples)
    if issparse(X):
        X = X.toarray()
    mi = np.zeros(n_features)
    cont, disc = np.flatnonzero(continuous_mask), np.flatnonzero(discrete_mask)
    y_t = torch.as_tensor(
        np.unique(y, return_inverse=True)[1].reshape(-1) if discrete_target else np.asarray(y, dtype=np.float64)
    )
    if len(cont):
        xs = torch.as_tensor(np.ascontiguousarray(X[:, cont].T, dtype=np.float64))[..., None]  # (B, N, 1)
        mi[cont] = mipp.mi(xs, y_t, n_neighbors, discrete_y=discrete_target).numpy()
    if len(disc):
        if discrete_target:
            codes = np.stack([np.unique(X[:, j], return_inverse=True)[1].reshape(-1) for j in disc])
            xs = torch.as_tensor(codes)[..., None]
            mi[disc] = mipp.mi(xs, y_t, discrete_x=True, discrete_y=True).numpy()
        else:  # each discrete feature has its own classes: Ross's estimate per feature
            for j in disc:
                labels = np.unique(X[:, j], return_inverse=True)[1].reshape(-1)
                mi[j] = float(mipp.mi(y_t, torch.as_tensor(labels), n_neighbors, discrete_y=True))
    return np.maximum(mi, 0.0)


def mutual_info_regression(X, y, *, discrete_features="auto", n_neighbors=3, copy=True, random_state=None, n_jobs=None):
    """Mutual information (nats) between each feature of X (n_samples, n_features) and a continuous target
    y, as scikit-learn's ``sklearn.feature_selection.mutual_info_regression``. Returns (n_features,)."""
    return _estimate_mi(
        X,
        y,
        discrete_features=discrete_features,
        discrete_target=False,
        n_neighbors=n_neighbors,
        copy=copy,
        random_state=random_state,
    )


def mutual_info_classif(X, y, *, discrete_features="auto", n_neighbors=3, copy=True, random_state=None, n_jobs=None):
    """Mutual information (nats) between each feature of X (n_samples, n_features) and class labels y, as
    scikit-learn's ``sklearn.feature_selection.mutual_info_classif``. Returns (n_features,)."""
    _sklearn().utils.multiclass.check_classification_targets(y)
    return _estimate_mi(
        X,
        y,
        discrete_features=discrete_features,
        discrete_target=True,
        n_neighbors=n_neighbors,
        copy=copy,
        random_state=random_state,
    )
