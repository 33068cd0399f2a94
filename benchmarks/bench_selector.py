"""mipp.sklearn.MISelector against the feature selectors a user would pick instead, on data that ship offline.

    PYTHONPATH=python python benchmarks/bench_selector.py [--folds 5] [--repeats 3] [--only digits,xor]

Selectors: MISelector (defaults, random_state=0); SelectKBest(mutual_info_classif / _regression) (scikit-
learn's); mRMR (mrmr_selection: F-statistic relevance, correlation redundancy); Boruta (boruta.BorutaPy on a
RandomForest of depth 5, 30 iterations, top-k by its ranking then mean importance); JMI (ITMO_FS) and CMIM
(skfeature-chappers) on X discretised into 5 quantile bins (classification only: both need discrete y).
mifs (JMI / JMIM / MRMR) is not on the package index this project installs from and is left out.

Data: scikit-learn's digits, breast cancer, wine, diabetes (regression); make_classification with 4
informative, 4 redundant (linear mixtures) and 4 repeated features among 30 (columns shuffled by a fixed
permutation); "nonlinear" (regression: y = x0^2 + sin(3 x1) + x2 x3 + noise, 40 distractors, an exact copy of
x0 and a 1e-3 near copy of x2); "xor" (classification: y = [x0 > 0] xor [x1 > 0], 40 distractors, a copy of x0
and a near copy of x1).

Protocol: stratified (classification) or plain 5-fold CV; in each fold every selector is fitted once on the
training part with the largest k (all of them are greedy or rank-based, so the selection at a smaller k is
a prefix: tests/engine/test_sklearn.py checks it for MISelector), and two fixed downstream models are
scored on the held-out part at every k: a standardised logistic regression (Ridge for regression) and a
random forest (100 trees). Counted per selection: features that repeat (exact or near copy of) another
selected one, and redundant features (make_classification's mixtures) picked.
Then the time to select 20 of 1,000 features (make_classification, 1,000 samples), interleaved repeats.

Writes benchmarks/results/selector.csv (every fold), selector_summary.csv (means, the best method per
k), selector_time.csv and selector.png."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import RESULTS, environment, write_csv


def datasets(only):
    from sklearn import datasets as d

    out = {}

    def add(name, X, y, task, ks, groups=(), redundant=()):
        if only and name not in only:
            return
        out[name] = {
            "X": np.asarray(X, float),
            "y": y,
            "task": task,
            "ks": ks,
            "groups": groups,
            "redundant": redundant,
        }

    X, y = d.load_digits(return_X_y=True)
    add("digits", X, y, "classification", [5, 10, 20])
    X, y = d.load_breast_cancer(return_X_y=True)
    add("breast_cancer", X, y, "classification", [3, 5, 10])
    X, y = d.load_wine(return_X_y=True)
    add("wine", X, y, "classification", [2, 3, 5])
    X, y = d.load_diabetes(return_X_y=True)
    add("diabetes", X, y, "regression", [2, 3, 5])
    X, y = d.make_classification(
        1000, 30, n_informative=4, n_redundant=4, n_repeated=4, shuffle=False, random_state=0, flip_y=0.02
    )
    perm = np.random.default_rng(0).permutation(30)  # column j of the shuffled X is original column perm[j]
    X = X[:, perm]
    where = {int(o): j for j, o in enumerate(perm)}
    # repeated columns 8-11 copy some of columns 0-7: the sets of identical columns (in shuffled positions)
    sets = {}
    for j in range(30):
        key = X[:, j].tobytes()
        sets.setdefault(key, []).append(j)
    groups = tuple(tuple(v) for v in sets.values() if len(v) > 1)
    add("make_classification", X, y, "classification", [4, 8, 12], groups, tuple(where[o] for o in range(4, 8)))
    rng = np.random.default_rng(1)
    n = 1000
    base = rng.standard_normal((n, 4))
    D = rng.standard_normal((n, 40))
    X = np.c_[base, D, base[:, 0], base[:, 2] + 1e-3 * rng.standard_normal(n)]
    y = base[:, 0] ** 2 + np.sin(3 * base[:, 1]) + base[:, 2] * base[:, 3] + 0.1 * rng.standard_normal(n)
    add("nonlinear", X, y, "regression", [2, 4, 6], ((0, 44), (2, 45)))
    base = rng.standard_normal((n, 2))
    X = np.c_[base, rng.standard_normal((n, 40)), base[:, 0], base[:, 1] + 1e-3 * rng.standard_normal(n)]
    y = ((base[:, 0] > 0) ^ (base[:, 1] > 0)).astype(int)
    add("xor", X, y, "classification", [2, 4], ((0, 42), (1, 43)))
    return out


def _discretise(X):
    from sklearn.preprocessing import KBinsDiscretizer

    return (
        KBinsDiscretizer(5, encode="ordinal", strategy="quantile", quantile_method="averaged_inverted_cdf")
        .fit_transform(X)
        .astype(int)
    )


def selectors(task):
    """name -> function(X, y, k) returning the selected column indices, best first."""
    import pandas as pd
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    from mipp.sklearn import MISelector

    def miselector(X, y, k):
        return list(MISelector(k, random_state=0).fit(X, y).selected_)

    def kbest(X, y, k):
        fn = mutual_info_classif if task == "classification" else mutual_info_regression
        return list(np.argsort(-fn(X, y, random_state=0), kind="stable")[:k])

    def mrmr_(X, y, k):
        import mrmr  # runs warnings.filterwarnings("ignore") process-wide: imported here only

        fn = mrmr.mrmr_classif if task == "classification" else mrmr.mrmr_regression
        return list(fn(X=pd.DataFrame(X), y=pd.Series(y), K=k, show_progress=False, n_jobs=1))

    def boruta_(X, y, k):
        from boruta import BorutaPy
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        rf = (RandomForestClassifier if task == "classification" else RandomForestRegressor)(max_depth=5, n_jobs=1)
        b = BorutaPy(rf, n_estimators="auto", max_iter=30, random_state=0).fit(X, y)
        imp = np.nanmean(np.asarray(b.importance_history_[1:], float), axis=0)
        return list(np.lexsort((-imp, b.ranking_))[:k])

    def jmi(X, y, k):
        from ITMO_FS.filters.multivariate import MultivariateFilter

        f = MultivariateFilter("JMI", k)
        f.fit(_discretise(X), y)
        return list(f.selected_features)

    def cmim(X, y, k):
        from skfeature.function.information_theoretical_based import CMIM

        out = CMIM.cmim(_discretise(X), y, mode="index", n_selected_features=k)
        return list(out[0] if isinstance(out, tuple) else out)

    out = {"MISelector": miselector, "SelectKBest(MI)": kbest, "mRMR": mrmr_, "Boruta": boruta_}
    if task == "classification":
        out.update({"JMI (ITMO_FS)": jmi, "CMIM (skfeature)": cmim})
    return out


def models(task):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "classification":
        return {
            "linear": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
            "forest": lambda: RandomForestClassifier(100, random_state=0, n_jobs=1),
        }
    return {
        "linear": lambda: make_pipeline(StandardScaler(), Ridge(1.0)),
        "forest": lambda: RandomForestRegressor(100, random_state=0, n_jobs=1),
    }


def repeats_picked(sel, X, groups):
    """Selected features that copy (exactly or nearly: a listed duplicate set) another selected one."""
    count = 0
    for g in groups:
        count += max(0, len(set(sel) & set(g)) - 1)
    cols = X[:, sel]
    _, first = np.unique(cols, axis=1, return_index=True)
    return max(count, len(sel) - len(first))


def run_quality(data, folds, rows):
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import KFold, StratifiedKFold

    for name, d in data.items():
        X, y, task, ks = d["X"], d["y"], d["task"], d["ks"]
        split = (StratifiedKFold if task == "classification" else KFold)(folds, shuffle=True, random_state=0)
        score = accuracy_score if task == "classification" else r2_score
        for fold, (tr, te) in enumerate(split.split(X, y)):
            for method, select in selectors(task).items():
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        chosen = [int(j) for j in select(X[tr], y[tr], max(ks))]
                    error = ""
                except Exception as exc:  # a peer that fails on this data: recorded, not fatal
                    chosen, error = [], f"{type(exc).__name__}: {exc}"[:200]
                seconds = time.perf_counter() - t0
                for k in ks:
                    sel = chosen[:k]
                    for model_name, make in models(task).items():
                        value = float("nan")
                        if sel:
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore")
                                m = make().fit(X[tr][:, sel], y[tr])
                            value = float(score(y[te], m.predict(X[te][:, sel])))
                        rows.append(
                            {
                                "dataset": name,
                                "task": task,
                                "method": method,
                                "k": k,
                                "fold": fold,
                                "model": model_name,
                                "score": value,
                                "n_selected": len(sel),
                                "repeated_picked": repeats_picked(sel, X, d["groups"]) if sel else 0,
                                "redundant_picked": len(set(sel) & set(d["redundant"])),
                                "select_seconds": seconds,
                                "selected": " ".join(map(str, sel)),
                                "error": error,
                                "load1": round(os.getloadavg()[0], 2),
                            }
                        )
                print(f"{name} fold {fold} {method}: {seconds:.1f} s {error}", flush=True)
    return rows


def summarise(rows):
    from collections import defaultdict

    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["model"], r["k"], r["method"])].append(r)
    out = []
    for (dataset, model, k, method), rs in groups.items():
        scores = [r["score"] for r in rs if r["score"] == r["score"]]
        out.append(
            {
                "dataset": dataset,
                "model": model,
                "k": k,
                "method": method,
                "cv_score": statistics.fmean(scores) if scores else float("nan"),
                "cv_std": statistics.stdev(scores) if len(scores) > 1 else float("nan"),
                "repeated_picked": max(r["repeated_picked"] for r in rs),
                "redundant_picked_mean": statistics.fmean(r["redundant_picked"] for r in rs),
                "select_seconds_median": statistics.median(r["select_seconds"] for r in rs),
                "folds": len(rs),
            }
        )
    best = defaultdict(lambda: -np.inf)
    for r in out:
        key = (r["dataset"], r["model"], r["k"])
        best[key] = max(best[key], r["cv_score"])
    for r in out:
        top = best[(r["dataset"], r["model"], r["k"])]
        r["best"] = r["cv_score"] == top
        r["gap_to_best"] = top - r["cv_score"]
    return out


def run_time(repeats, rows, n_features=1000, k=20):
    import pandas as pd
    import torch
    from sklearn.datasets import make_classification
    from sklearn.feature_selection import mutual_info_classif

    from mipp.sklearn import MISelector

    X, y = make_classification(1000, n_features, n_informative=10, n_redundant=10, n_repeated=10, random_state=0)
    import mrmr

    fns = {
        "MISelector": lambda: MISelector(k, random_state=0).fit(X, y),
        "MISelector(n_pairs=0)": lambda: MISelector(k, n_pairs=0, random_state=0).fit(X, y),
        "mRMR": lambda: mrmr.mrmr_classif(X=pd.DataFrame(X), y=pd.Series(y), K=k, show_progress=False, n_jobs=1),
        "SelectKBest(MI)": lambda: np.argsort(-mutual_info_classif(X, y, random_state=0))[:k],
    }
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            print(f"time {n_features} features, {name}: {times[name][-1]:.1f} s", flush=True)
    env = environment()
    for name, ts in times.items():
        rows.append(
            {
                "method": name,
                "features": n_features,
                "samples": 1000,
                "k": k,
                "median_seconds": statistics.median(ts),
                "runs": " ".join(f"{t:.2f}" for t in ts),
                "torch_threads": torch.get_num_threads(),
                **env,
            }
        )
    return rows


def markdown(summary) -> str:
    """The docs table: per data set and k, each method's CV score with the linear / forest model, the best
    of each column in bold, and the most repeated features any fold picked."""
    methods = list(dict.fromkeys(r["method"] for r in summary))
    index = {(r["dataset"], r["k"], r["model"], r["method"]): r for r in summary}
    lines = [
        "| data set | k | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for dataset, k in dict.fromkeys((r["dataset"], r["k"]) for r in summary):
        cells = []
        for m in methods:
            parts = []
            for model in ("linear", "forest"):
                r = index.get((dataset, k, model, m))
                if r is None or r["cv_score"] != r["cv_score"]:
                    parts.append("n/a")
                    continue
                text = f"{r['cv_score']:.3f}"
                parts.append(f"**{text}**" if r["best"] else text)
            rep = max(
                (
                    index[(dataset, k, mo, m)]["repeated_picked"]
                    for mo in ("linear", "forest")
                    if (dataset, k, mo, m) in index
                ),
                default=0,
            )
            cells.append(" / ".join(parts) + (f" ({rep} rep.)" if rep else ""))
        lines.append(f"| {dataset} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in summary))
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6), squeeze=False)
    for col, dataset in enumerate(names):
        for row, model in enumerate(("linear", "forest")):
            ax = axes[row][col]
            rs = [r for r in summary if r["dataset"] == dataset and r["model"] == model]
            for method in dict.fromkeys(r["method"] for r in rs):
                pts = sorted((r["k"], r["cv_score"]) for r in rs if r["method"] == method)
                style = {"lw": 2.5, "color": "k"} if method == "MISelector" else {"lw": 1}
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=method, **style)
            ax.set_title(f"{dataset} ({model})", fontsize=9)
            ax.set_xlabel("k", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("CV accuracy or R^2")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated data set names")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    if not args.skip_quality:
        rows = run_quality(datasets(only), args.folds, [])
        env = environment()
        rows = [{**r, **env} for r in rows]
        write_csv(rows, "selector.csv")
        summary = summarise(rows)
        write_csv(summary, "selector_summary.csv")
        plot(summary, os.path.join(RESULTS, "selector.png"))
        print(markdown(summary))
        for r in summary:
            if r["method"] == "MISelector":
                print(
                    f"{r['dataset']:20s} {r['model']:6s} k={r['k']:2d} MISelector {r['cv_score']:.3f} "
                    f"(best by {-r['gap_to_best']:+.3f}) repeated {r['repeated_picked']}"
                )
    if not args.skip_time:
        write_csv(run_time(args.repeats, []), "selector_time.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
