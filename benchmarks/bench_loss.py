"""MIPP's two estimators side by side on issue 20's planted layers (mipp.pruning.testing.sparse_planted_layer:
of every 256 nodes 24 latents x 3 noisy copies, 24 exact sums of two copies, 160 unrelated; Y = 16 tanh
outputs of the latents + 5% noise; N = 1,000): the KSG decisions (default) and the paper's MLP loss
differences (estimator="loss"), each at its defaults.

    PYTHONPATH=python python benchmarks/bench_loss.py [--sizes 64 256 1024] [--seeds 0 1 2 3 4]
        [--seeds-large 0 1] [--estimators ksg loss] [--loss-tolerances 0 0.001] [--tag _name]
        [--threads 1]

Per run: nodes kept, the fraction of latents with a kept copy, the smallest R^2 of a latent regressed on the
kept nodes, mean kept copies per latent, the fractions of unrelated nodes and of exact mixtures removed, the
nodes tested and the selection's seconds (torch on ``--threads`` threads, 1 by default). Sizes above 64 run
the ``--seeds-large`` seeds (minutes each for the loss estimator). Writes
benchmarks/results/loss_planted{tag}.csv (every run), rewritten after each run."""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import environment, summarize, write_csv

from mipp.pruning import MIPP
from mipp.pruning.testing import sparse_planted_layer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="64-node layers")
    parser.add_argument("--seeds-large", type=int, nargs="+", default=[0, 1], help="larger layers")
    parser.add_argument("--estimators", nargs="+", default=["ksg", "loss"], choices=["ksg", "loss"])
    parser.add_argument(
        "--loss-tolerances", type=float, nargs="+", default=[0.0], help="the loss estimator's (0: the paper's rule)"
    )
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--tag", default="", help="suffix of the CSV's name")
    parser.add_argument("--threads", type=int, default=1, help="torch's threads (recorded with every row)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()
    rows = []
    for D in args.sizes:
        for seed in args.seeds if D <= 64 else args.seeds_large:
            p = sparse_planted_layer(D, args.n, seed)
            runs = [("ksg", None)] if "ksg" in args.estimators else []
            runs += [("loss", t) for t in args.loss_tolerances] if "loss" in args.estimators else []
            for estimator, tolerance in runs:
                settings = {} if tolerance is None else {"tolerance": tolerance}
                t0 = time.perf_counter()
                mipp = MIPP(estimator=estimator, seed=seed, progress=False, **settings)
                kept, res = mipp.select_layer(p.X, p.Y)
                rows.append(
                    {
                        "D": D,
                        "n": args.n,
                        "seed": seed,
                        "estimator": estimator,
                        "tolerance": mipp.tolerance,
                        "latents": len(p.groups),
                        "kept": len(kept),
                        **p.score(kept),
                        "latent_r2_min": float(p.latent_r2(kept).min()),
                        "tests": res.n_tests,
                        "seconds": time.perf_counter() - t0,
                        **env,
                    }
                )
                print(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items() if k not in env},
                    flush=True,
                )
                write_csv(rows, f"loss_planted{args.tag}.csv")
    for s in summarize(
        rows,
        ("D", "estimator", "tolerance"),
        (
            "kept",
            "groups_covered",
            "latent_r2_min",
            "copies_mean",
            "unrelated_removed",
            "mixtures_removed",
            "tests",
            "seconds",
        ),
    ):
        print(s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
