"""MIPP's two estimators side by side on planted layers (mipp.pruning.testing): the KSG decisions (default)
and the paper's MLP loss differences (estimator="loss"), each at its defaults, at 32 and 256 nodes.

    PYTHONPATH=python python benchmarks/bench_loss.py [--seeds 0 1 2] [--seeds-256 0]

Per run: nodes kept, the fraction of latents with a kept copy, mean kept copies per latent, the fractions of
unrelated nodes and of exact mixtures removed, and the selection's seconds (torch on one thread). Writes
benchmarks/results/loss_planted.csv (every run)."""

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
from mipp.pruning.testing import planted_layer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="32-node layers")
    parser.add_argument("--seeds-256", type=int, nargs="+", default=[0], help="256-node layers (minutes each)")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = environment()
    rows = []
    for D, seeds in ((32, args.seeds), (256, args.seeds_256)):
        for seed in seeds:
            p = planted_layer(D, args.n, seed)
            for estimator in ("ksg", "loss"):
                t0 = time.perf_counter()
                kept, res = MIPP(estimator=estimator, seed=seed, progress=False).select_layer(p.X, p.Y)
                rows.append(
                    {
                        "D": D,
                        "n": args.n,
                        "seed": seed,
                        "estimator": estimator,
                        "kept": len(kept),
                        **p.score(kept),
                        "seconds": time.perf_counter() - t0,
                        **env,
                    }
                )
                print(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items() if k not in env},
                    flush=True,
                )
            write_csv(rows, "loss_planted.csv")
    for s in summarize(
        rows,
        ("D", "estimator"),
        ("kept", "groups_covered", "copies_mean", "unrelated_removed", "mixtures_removed", "seconds"),
    ):
        print(s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
