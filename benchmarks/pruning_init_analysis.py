"""Why does MIPP at initialisation (reduce="max") end below random channels after training?

    PYTHONPATH=python OMP_NUM_THREADS=1 python benchmarks/pruning_init_analysis.py [--seeds 0 1 2] [--alpha 0.05]

Same setting as benchmarks/bench_pruning.py ("init": LeNet pruned at random init, trained 3 epochs with
seed+1, mean fold), one alpha. Three analyses -> benchmarks/results/pruning_init_analysis.csv (long format):

* paired: MIPP minus random / L1 / Taylor final accuracy over the existing 9 runs of pruning_rows*.csv
  (mean, standard error, per-seed means; the 3 alphas of a seed share the init, so ~3 independent units).
* ablation: prune ONE layer only (MIPP's count there), with MIPP's channels or the benchmark's random
  channels (same generator as the benchmark), other layers dense; train; test accuracy.
* channels: what MIPP removes at init. Per layer, the mean within-layer percentile (0 = smallest, 1 =
  largest) of the removed nodes on: the init activation's std over samples (max over space for conv, as
  MIPP sees it), its fraction of samples > 0, the init and trained-dense incoming-weight L1, and the trained
  dense network's outgoing weight L1; plus the fraction of removed-at-init nodes that MIPP run on the
  trained dense network (same init) would keep, against the overall kept fraction there (chance).
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from mipp.pruning.experiment import LeNet, accuracy, load_digits_data, train  # noqa: E402
from mipp.pruning.integrations import keep_top, random_scores  # noqa: E402
from mipp.pruning.select import MIPP  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
OUT = os.path.join(RESULTS, "pruning_init_analysis.csv")
FIELDS = ["analysis", "seed", "alpha", "layer", "method", "metric", "value"]
RELU_AFTER = {"features.0": "features.2", "features.4": "features.6", "classifier.1": "classifier.2"}
CONSUMER = {"features.0": "features.4", "features.4": "classifier.1", "classifier.1": "classifier.3"}


def paired_rows() -> list[dict]:
    rows = []
    for tag in ("", "_reduce_mean"):
        path = os.path.join(RESULTS, f"pruning_rows{tag}.csv")
        if not os.path.exists(path):
            continue
        d = {(r["seed"], r["alpha"], r["method"]): float(r["acc_finetuned"])
             for r in csv.DictReader(open(path)) if r["setting"] == "init"}
        for base in ("random", "l1", "taylor"):
            keys = sorted((s, a) for (s, a, m) in d if m == "mipp")
            diffs = [d[(s, a, "mipp")] - d[(s, a, base)] for s, a in keys]
            seeds = sorted({s for s, _ in keys})
            per_seed = [statistics.fmean(d[(s, a, "mipp")] - d[(s, a, base)] for s2, a in keys if s2 == s)
                        for s in seeds]
            method = f"mipp-{base}"
            red = "mean" if tag else "max"
            out = {"mean": statistics.fmean(diffs), "se": statistics.stdev(diffs) / len(diffs) ** 0.5,
                   "n_negative": sum(x < 0 for x in diffs), "n": len(diffs),
                   "seed_mean_se": statistics.stdev(per_seed) / len(per_seed) ** 0.5}
            out["t"] = out["mean"] / out["se"]
            out["t_seed"] = statistics.fmean(per_seed) / out["seed_mean_se"]
            for s, v in zip(seeds, per_seed):
                out[f"seed{s}_mean"] = v
            rows += [{"analysis": f"paired_reduce_{red}", "seed": "all", "alpha": "all", "layer": "all",
                      "method": method, "metric": k, "value": v} for k, v in out.items()]
    return rows


@torch.no_grad()
def node_activations(model, x) -> dict[str, torch.Tensor]:
    """(N, C) post-ReLU value per prunable layer, max over space for conv (as MIPP with reduce="max")."""
    store, hooks = {}, []
    for layer, relu in RELU_AFTER.items():
        def hook(_m, _i, out, layer=layer):
            store[layer] = out.flatten(2).amax(dim=2) if out.dim() == 4 else out
        hooks.append(model.get_submodule(relu).register_forward_hook(hook))
    model.eval()
    model(x)
    for h in hooks:
        h.remove()
    return store


def pct(v: torch.Tensor) -> torch.Tensor:
    """Within-layer percentile of each entry (0 smallest .. 1 largest; ties broken by order)."""
    return v.argsort().argsort().double() / max(len(v) - 1, 1)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Across seeds: per layer (and "all"), MIPP and lowact minus the mean of the random draws (mean, SE,
    seeds below), MIPP's z within the random draws; channel percentiles averaged over seeds."""
    out = []
    acc = [r for r in rows if r["analysis"] in ("ablation_one_layer", "all_layers")]
    for layer in sorted({r["layer"] for r in acc}):
        for method in ("mipp", "lowact"):
            d, z = [], []
            for seed in sorted({r["seed"] for r in acc if r["layer"] == layer}):
                v = {r["method"]: r["value"] for r in acc if r["layer"] == layer and r["seed"] == seed}
                rs = [x for m, x in v.items() if m.startswith("random")]
                d.append(v[method] - statistics.fmean(rs))
                z.append(d[-1] / statistics.stdev(rs) if statistics.stdev(rs) > 0 else 0.0)
            if len(d) < 2:
                continue
            stats = {"minus_random_mean": statistics.fmean(d), "se": statistics.stdev(d) / len(d) ** 0.5,
                     "n_seeds": len(d), "n_below": sum(x < 0 for x in d), "mean_z_in_random": statistics.fmean(z)}
            out += [{"analysis": "summary_accuracy", "seed": "all", "alpha": rows[-1]["alpha"], "layer": layer,
                     "method": method, "metric": k, "value": x} for k, x in stats.items()]
    ch = [r for r in rows if r["analysis"].startswith("channels")]
    for key in sorted({(r["analysis"], r["layer"], r["method"], r["metric"]) for r in ch}):
        vals = [r["value"] for r in ch if (r["analysis"], r["layer"], r["method"], r["metric"]) == key]
        out.append({"analysis": "summary_" + key[0], "seed": f"mean_of_{len(vals)}", "alpha": rows[-1]["alpha"],
                    "layer": key[1], "method": key[2], "metric": key[3], "value": statistics.fmean(vals)})
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--all-only", action="store_true", help="ablation: only the all-layers comparison")
    p.add_argument("--out", default=OUT)
    p.add_argument("--draws", type=int, default=6, help="random selections per comparison")
    args = p.parse_args()
    rows = paired_rows()
    for r in rows:
        if r["metric"] in ("mean", "se", "t", "t_seed", "n_negative"):
            print(r["analysis"], r["method"], r["metric"], round(r["value"], 4), flush=True)

    def save():
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
    save()

    for seed in args.seeds:
        t0 = time.perf_counter()
        x_tr, y_tr, x_te, y_te, _ = load_digits_data(seed)
        torch.manual_seed(seed)
        init = LeNet(side=x_tr.shape[-1])
        cfg = dict(k=3, alpha=args.alpha, n_permutations=99, n_samples=500, direction="backward",
                   reduce="max", seed=seed, progress=False)
        sel = MIPP(**cfg).select(init, x_tr)
        rnd = keep_top(sel, random_scores(sel, torch.Generator().manual_seed(seed)))
        kept = "/".join(str(len(i)) for i in sel.keep.values())
        print(f"seed {seed}: MIPP at init keeps {kept} ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows.append({"analysis": "kept_counts", "seed": seed, "alpha": args.alpha, "layer": "all",
                     "method": "mipp", "metric": kept, "value": 0})

        # channels: what MIPP removes at init
        t1 = time.perf_counter()
        trained = train(copy.deepcopy(init), x_tr, y_tr, 3, seed)
        print(f"  dense trained: acc {accuracy(trained, x_te, y_te):.4f} ({time.perf_counter() - t1:.0f} s)",
              flush=True)
        sel_tr = MIPP(**cfg).select(trained, x_tr)
        acts = node_activations(init, x_tr[:500])
        for layer, keep in sel.keep.items():
            n = sel.plan.layers[layer].n_nodes
            removed = torch.ones(n, dtype=torch.bool)
            removed[keep] = False
            rnd_removed = torch.ones(n, dtype=torch.bool)
            rnd_removed[rnd.keep[layer]] = False
            a = acts[layer]
            metrics = {
                "init_act_std": a.std(dim=0), "init_act_mean": a.mean(dim=0),
                "init_frac_active": (a > 0).double().mean(dim=0) + 1e-9 * a.mean(dim=0),
                "init_in_l1": init.get_submodule(layer).weight.abs().flatten(1).sum(1).detach(),
                "trained_in_l1": trained.get_submodule(layer).weight.abs().flatten(1).sum(1).detach(),
            }
            w_out = trained.get_submodule(CONSUMER[layer]).weight.detach().abs()
            if w_out.dim() == 4:
                metrics["trained_out_l1"] = w_out.sum(dim=(0, 2, 3))
            else:
                metrics["trained_out_l1"] = w_out.sum(0).reshape(n, -1).sum(1)
            for name, v in metrics.items():
                pv = pct(v.double())
                for method, mask in (("mipp", removed), ("random", rnd_removed)):
                    if mask.any():
                        rows.append({"analysis": "channels_removed_pct", "seed": seed, "alpha": args.alpha,
                                     "layer": layer, "method": method, "metric": name,
                                     "value": float(pv[mask].mean())})
            kept_tr = torch.zeros(n, dtype=torch.bool)
            kept_tr[sel_tr.keep[layer]] = True
            for method, mask in (("mipp", removed), ("random", rnd_removed)):
                if mask.any():
                    rows.append({"analysis": "channels_kept_by_trained_mipp", "seed": seed, "alpha": args.alpha,
                                 "layer": layer, "method": method, "metric": "frac_of_removed",
                                 "value": float(kept_tr[mask].double().mean())})
            rows.append({"analysis": "channels_kept_by_trained_mipp", "seed": seed, "alpha": args.alpha,
                         "layer": layer, "method": "chance", "metric": "frac_of_all",
                         "value": float(kept_tr.double().mean())})
            print(f"  {layer}: removed {int(removed.sum())}/{n}; " + ", ".join(
                f"{r['metric']} {r['method']} {r['value']:.2f}" for r in rows
                if r["seed"] == seed and r["layer"] == layer and r["analysis"].startswith("channels")), flush=True)
        save()

        # ablation: one layer pruned at a time (MIPP's count there), and all layers ("all"): MIPP's channels,
        # random channels (draw 0 = the benchmark's generator, then --draws - 1 more), and "lowact": the
        # nodes with the lowest mean init activation removed (what MIPP appears to remove)
        if args.no_ablation:
            continue
        full = {name: torch.arange(sel.plan.layers[name].n_nodes) for name in sel.keep}
        low = keep_top(sel, {name: acts[name].mean(dim=0).double() for name in sel.keep})
        sels = [("mipp", sel), ("lowact", low), ("random0", rnd)]
        sels += [(f"random{r}", keep_top(sel, random_scores(sel, torch.Generator().manual_seed(1000 * seed + r))))
                 for r in range(1, args.draws)]
        for layer in ([] if args.all_only else list(sel.keep)) + ["all"]:
            if layer != "all" and len(sel.keep[layer]) == len(full[layer]):
                continue
            for method, s in sels:
                one = s if layer == "all" else sel.with_keep({**full, layer: s.keep[layer]})
                acc = accuracy(train(one.apply(init, fold=True), x_tr, y_tr, 3, seed + 1), x_te, y_te)
                count = kept if layer == "all" else len(s.keep[layer])
                rows.append({"analysis": "ablation_one_layer" if layer != "all" else "all_layers", "seed": seed,
                             "alpha": args.alpha, "layer": layer, "method": method,
                             "metric": f"acc_trained_kept_{count}", "value": acc})
            accs = {r["method"]: r["value"] for r in rows if r["seed"] == seed and r["layer"] == layer
                    and r["analysis"] in ("ablation_one_layer", "all_layers")}
            rs = [v for m, v in accs.items() if m.startswith("random")]
            print(f"  {layer}: mipp {accs['mipp']:.4f} lowact {accs['lowact']:.4f} random mean "
                  f"{statistics.fmean(rs):.4f} sd {statistics.stdev(rs):.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
            save()
    rows += summary_rows(rows)
    save()
    for r in rows:
        if r["analysis"].startswith("summary"):
            print(r["analysis"], r["layer"], r["method"], r["metric"], round(r["value"], 4))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
