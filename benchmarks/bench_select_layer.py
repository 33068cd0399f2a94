"""select_layer(X, Y) on a planted layer (issue 20): latents each seen by 3 noisy copies, exact sums of two
copies, and nodes independent of everything; Y = tanh(a random mix of the latents) + 5% noise, 16 outputs
(mipp.pruning.testing.sparse_planted_layer), N = 1,000 samples.

    PYTHONPATH=python python benchmarks/bench_select_layer.py [--seeds 5] [--sizes 64 256 1024] [--closed-form]

Per seed, size and tolerance: nodes kept, unrelated nodes kept (of how many), and the smallest R^2 of a
latent regressed on the kept nodes. Writes benchmarks/results/select_layer.csv (every run).
``--closed-form``: what the nodes tell Y, as the tolerance means it, from the Gaussian closed form
I(Y; X_S) = 1/2 logdet Cov(Y) / Cov(Y | X_S) on 200,000 samples of the same layers (2 seeds): each latent's
information given one copy of every other latent, and a latent's second and third copy's given one (two)
copies of each. Writes select_layer_closed_form.csv.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from _results import environment, write_csv

from mipp.pruning import MIPP
from mipp.pruning.testing import NONLINEAR, nonlinear_layer, sparse_planted_layer


def gaussian_information(X, Y, S: list[int]) -> float:
    """I(Y; X_S) in nats for jointly Gaussian data: 1/2 logdet of Y's covariance over its least-squares
    residual's on X_S (with an intercept)."""
    Yc = Y - Y.mean(0)
    if not S:
        return 0.0
    Xs = X[:, S] - X[:, S].mean(0)
    R = Yc - Xs @ torch.linalg.lstsq(Xs, Yc).solution
    return 0.5 * float(torch.logdet(Yc.T @ Yc) - torch.logdet(R.T @ R))


def closed_form(args) -> None:
    env, rows = environment(), []
    for size in args.sizes:
        for seed in range(2):
            p = sparse_planted_layer(size, 200_000, seed)
            one = [g[0] for g in p.groups]
            two = one + [g[1] for g in p.groups]
            base, base2 = gaussian_information(p.X, p.Y, one), gaussian_information(p.X, p.Y, two)
            for j, g in enumerate(p.groups[:24]):  # at most 24 latents per layer: each costs three fits
                rows.append(
                    {
                        **env,
                        "nodes": size,
                        "seed": seed,
                        "latent": j,
                        "latent_given_others": base - gaussian_information(p.X, p.Y, [c for c in one if c != g[0]]),
                        "second_copy": gaussian_information(p.X, p.Y, [*one, g[1]]) - base,
                        "third_copy": gaussian_information(p.X, p.Y, [*two, g[2]]) - base2,
                    }
                )
            rs = [r for r in rows if r["nodes"] == size and r["seed"] == seed]
            print(
                f"{size} nodes, seed {seed}: "
                + ", ".join(
                    f"{key} median {statistics.median(r[key] for r in rs):.3f} "
                    f"({min(r[key] for r in rs):.3f}-{max(r[key] for r in rs):.3f})"
                    for key in ("latent_given_others", "second_copy", "third_copy")
                ),
                flush=True,
            )
    print("wrote", write_csv(rows, f"select_layer_closed_form{args.tag}.csv"))


def nonlinear(args) -> None:
    """Targets that depend on their relevant node(s) only nonlinearly (mipp.pruning.testing.nonlinear_layer:
    Y = X^2, sin(3 X), a product, an XOR; a near duplicate of each relevant node, 50 distractors)."""
    env, rows = environment(), []
    for kind in NONLINEAR:
        for seed in range(args.seeds):
            X, Y, sets, free = nonlinear_layer(kind, seed, args.samples)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kept, _ = MIPP(progress=False, seed=seed).select_layer(X, Y)
            rows.append(
                {
                    **env,
                    "target": kind,
                    "seed": seed,
                    "kept": len(kept),
                    "relevant_kept": sum(bool(set(s_) & set(kept)) for s_ in sets) / len(sets),
                    "duplicates_kept_max": max(len(set(s_) & set(kept)) for s_ in sets),
                    "distractors_kept": len(set(free) & set(kept)),
                    "distractors": len(free),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            print({k: rows[-1][k] for k in ("target", "seed", "kept", "relevant_kept", "distractors_kept")})
    print("wrote", write_csv(rows, f"select_layer_nonlinear{args.tag}.csv"))
    for kind in NONLINEAR:
        rs = [r for r in rows if r["target"] == kind]
        print(
            f"{kind:8s}: relevant kept {min(r['relevant_kept'] for r in rs):.2f} (min), duplicates kept max "
            f"{max(r['duplicates_kept_max'] for r in rs)}, distractors kept "
            f"{sum(r['distractors_kept'] for r in rs) / sum(r['distractors'] for r in rs):.1%}, "
            f"seconds {statistics.median(r['seconds'] for r in rs):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--tolerances", type=float, nargs="*", default=[0.05, 0.1, 0.2, 0.5])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--tag", default="")
    parser.add_argument("--skip-planted", action="store_true")
    parser.add_argument("--closed-form", action="store_true", help="only the Gaussian closed form")
    args = parser.parse_args()
    if args.closed_form:
        closed_form(args)
        return
    nonlinear(args)
    if args.skip_planted:
        return
    env, rows = environment(), []
    for size in args.sizes:
        for seed in range(args.seeds):
            p = sparse_planted_layer(size, args.samples, seed)
            unrelated = set(p.unrelated)
            for tol in args.tolerances:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    kept, _ = MIPP(tolerance=tol, progress=False, seed=seed).select_layer(p.X, p.Y)
                secs = time.perf_counter() - t0
                row = {
                    **env,
                    "nodes": size,
                    "seed": seed,
                    "tolerance": tol,
                    "latents": len(p.groups),
                    "kept": len(kept),
                    "unrelated": len(unrelated),
                    "unrelated_kept": len(unrelated & set(kept)),
                    "min_r2": round(float(p.latent_r2(kept).min()), 4),
                    **{k: round(v, 4) for k, v in p.score(kept).items()},
                    "seconds": round(secs, 2),
                }
                rows.append(row)
                shown = ("nodes", "seed", "tolerance", "kept", "unrelated_kept", "min_r2", "seconds")
                print({k: row[k] for k in shown}, flush=True)
    print("wrote", write_csv(rows, f"select_layer{args.tag}.csv"))
    for size in args.sizes:
        for tol in args.tolerances:
            rs = [r for r in rows if r["nodes"] == size and r["tolerance"] == tol]
            print(
                f"{size:5d} nodes, tolerance {tol}: kept {statistics.median(r['kept'] for r in rs)}, "
                f"unrelated kept {max(r['unrelated_kept'] / r['unrelated'] for r in rs):.1%} (max), "
                f"min R^2 {min(r['min_r2'] for r in rs):.3f}, latents {rs[0]['latents']}"
            )


if __name__ == "__main__":
    main()
