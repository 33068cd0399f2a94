"""ksg_counts' two exact CPU paths (the brute force and the strips) against each other, and the path its cost
model picks: the data behind ``choose`` in csrc/ksg_counts_cpu.cpp.

    python benchmarks/bench_ksg_paths.py [--fit] [--csv ksg_paths.csv]

One thread, float64, k = 3, KSG-1; MI with 1+1 .. 6+6 and 1+3 / 1+7 columns and CMI with 1+1+1 and 2+2+2
(x, y, z; marginals xz, yz, z), at N = 300 - 10,000; each group = a shared Gaussian's leading columns + noise
(dependent, no ties). Each path is timed (best of 3 rounds of enough calls for 50 ms; the brute force is
skipped beyond 3e9 pair-columns), the counts checked equal, and the auto path recorded with its regret (its
time over the faster path's). Writes benchmarks/results/<csv>.

--fit: least-squares fits of both paths' time per query, the models ``choose`` uses (printed as C++ constants):
  brute   n (a D + b + c W + d (G - 2)) + e + f L   ns (linear: the pair-columns, the k-NN selection per pair,
          the wide marginals' counts per pair, the joint max over more groups, per-query overhead, the galloping
          counts of the one-column marginals)
  strips  exp(a + b D + c ln n + d D ln n + e S + f S ln n)   ns (log-linear: the neighbourhood a query visits
          grows with n the faster the more joint columns; S = the wide marginals' summed columns, whose sorted
          windows grow likewise)
with D joint columns, G groups, W wide (several-column) marginals, L one-column marginals."""

from __future__ import annotations

import argparse
import math
import timeit

import numpy as np
import torch
from _results import environment, write_csv

from mipp import _ext

SHAPES = [(1, 1), (2, 2), (3, 3), (4, 4), (1, 3), (1, 7), (6, 6), (1, 1, 1), (2, 2, 2)]
SIZES = [300, 1000, 3000, 10000]
K = 3
MAX_BRUTE = 3e9  # pair-columns


def marginals(dims: tuple[int, ...]) -> list[list[int]]:
    return [[0], [1]] if len(dims) == 2 else [[0, 2], [1, 2], [2]]


def best_time(fn) -> float:
    fn()
    once = min(timeit.repeat(fn, number=1, repeat=2))
    number = max(1, int(0.05 / max(once, 1e-6)))
    return min(timeit.repeat(fn, number=number, repeat=3)) / number


def measure(n: int, dims: tuple[int, ...]) -> dict:
    g = torch.Generator().manual_seed(n + sum(dims))
    base = torch.randn(n, max(dims), dtype=torch.float64, generator=g)
    groups = [(base[:, :d] + torch.randn(n, d, dtype=torch.float64, generator=g))[None] for d in dims]
    args, _keep = _ext._columns(groups)
    marg = marginals(dims)
    masks = [sum(1 << i for i in m) for m in marg]
    row: dict = {"n": n, "dims": "+".join(map(str, dims)), "joint": sum(dims), "groups": len(dims)}
    counts = {}
    for path in ("strips", "brute"):
        if path == "brute" and n * n * sum(dims) > MAX_BRUTE:
            continue
        eps = torch.empty(1, n, dtype=torch.float64)
        out = torch.empty(1, len(masks), n, dtype=torch.int64)

        def call(path=path, eps=eps, out=out):
            return _ext._C.ksg_counts_cpu(args, 1, n, True, K, masks, 1, eps.data_ptr(), out.data_ptr(), path, 1, 0, n)

        row[f"{path}_s"] = best_time(call)
        counts[path] = out
    if "brute" in counts and not torch.equal(counts["brute"], counts["strips"]):
        raise SystemExit(f"N={n} {row['dims']}: the paths' counts differ")
    eps = torch.empty(1, n, dtype=torch.float64)
    out = torch.empty(1, len(masks), n, dtype=torch.int64)
    row["auto"] = _ext._C.ksg_counts_cpu(args, 1, n, True, K, masks, 1, eps.data_ptr(), out.data_ptr(), "auto", 1, 0, n)
    times = [row[k] for k in ("strips_s", "brute_s") if k in row]
    row["regret"] = row[f"{row['auto']}_s"] / min(times)
    mdims = [sum(dims[i] for i in m) for m in marg]
    row["wide"] = sum(d > 1 for d in mdims)
    row["lines"] = sum(d == 1 for d in mdims)
    row["wide_columns"] = sum(d for d in mdims if d > 1)
    row["mean_counts"] = " ".join(f"{float(c):.1f}" for c in out[0].double().mean(-1))
    return row


def fit(rows: list[dict]) -> None:
    brute = [r for r in rows if "brute_s" in r]
    n = np.array([r["n"] for r in brute], dtype=float)
    a = np.stack(
        [n * [r["joint"] for r in brute], n, n * [r["wide"] for r in brute], n * [r["groups"] - 2 for r in brute],
         np.ones_like(n), [r["lines"] for r in brute]], axis=1,
    )  # fmt: skip
    b = np.array([r["brute_s"] * 1e9 / r["n"] for r in brute])
    cb, *_ = np.linalg.lstsq(a, b, rcond=None)
    print("brute ns per query: n * ({:.3f} D + {:.3f} + {:.3f} W + {:.3f} (G - 2)) + {:.0f} + {:.0f} L".format(*cb))
    print(f"  worst relative error {np.max(np.abs(a @ cb - b) / b):.2f}")
    s = [[1, r["joint"], math.log(r["n"]), r["joint"] * math.log(r["n"]), r["wide_columns"],
          r["wide_columns"] * math.log(r["n"])] for r in rows]  # fmt: skip
    cs, *_ = np.linalg.lstsq(np.array(s), np.log([r["strips_s"] * 1e9 / r["n"] for r in rows]), rcond=None)
    terms = "{:.3f} + {:.4f} D + {:.4f} ln n + {:.4f} D ln n + {:.4f} S + {:.4f} S ln n".format(*cs)
    print(f"strips ns per query: exp({terms})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--csv", default="ksg_paths.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    env = environment()
    rows = []
    for dims in SHAPES:
        for n in SIZES:
            row = measure(n, dims)
            rows.append({**row, **env})
            got = " ".join(f"{k[:-2]} {row[k] * 1e3:.2f} ms" for k in ("strips_s", "brute_s") if k in row)
            print(f"N={n:>6} {row['dims']:>6}: {got}  auto {row['auto']} (regret {row['regret']:.2f})", flush=True)
    print(f"worst regret {max(r['regret'] for r in rows):.2f}")
    if args.fit:
        fit(rows)
    print("wrote", write_csv(rows, args.csv))


if __name__ == "__main__":
    main()
