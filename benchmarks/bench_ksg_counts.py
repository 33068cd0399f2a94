"""The fused mipp::ksg_counts against the composition it replaced in mipp.mi (knn_distance, then count_within
for x and y; KSG-2 with marginal_radius between), on the CPU extension, one torch thread, float64, k = 3.

Both run as the estimator runs them (mipp.ops.trusted: the kernel directly, the estimator having checked the
arguments), in one process, interleaved (old, new, old, new, ...) so that both see the same machine; each is
checked equal to the other first (eps and counts, torch.equal). Reported: the median wall time and the median
CPU time of the calling thread over --repeats runs, and their ratios old / new.

    python benchmarks/bench_ksg_counts.py [--repeats 7] [--csv ksg_counts.csv]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from mipp import _ext
from mipp.ops import trusted

# name -> (N, dx, dy)
SHAPES = {
    "N=2000 1+1": (2000, 1, 1),
    "N=20000 1+1": (20000, 1, 1),
    "N=5000 4+4": (5000, 4, 4),
    "N=4000 128+128": (4000, 128, 128),
}
K = 3


def make_groups(n: int, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, N, dx) Gaussian x and (1, N, dy) y = x's leading columns (cycled) + noise: dependent, no ties."""
    g = torch.Generator().manual_seed(n + dx)
    x = torch.randn(1, n, dx, dtype=torch.float64, generator=g)
    y = x[..., torch.arange(dy) % dx] + torch.randn(1, n, dy, dtype=torch.float64, generator=g)
    return x, y


def composition(x: torch.Tensor, y: torch.Tensor, algorithm: int):
    """What mipp.mi ran before ksg_counts."""
    n = int(x.shape[1])
    eps = trusted("knn_distance", [x, y], K, 0, n)
    if algorithm == 1:
        nx = trusted("count_within", [x], eps, True, 0, n)
        ny = trusted("count_within", [y], eps, True, 0, n)
    else:
        radii = trusted("marginal_radius", [x, y], eps, 0, n)
        nx = trusted("count_within", [x], radii[..., 0].contiguous(), False, 0, n)
        ny = trusted("count_within", [y], radii[..., 1].contiguous(), False, 0, n)
    return eps, torch.stack([nx, ny], dim=1)


def fused(x: torch.Tensor, y: torch.Tensor, algorithm: int):
    return trusted("ksg_counts", [x, y], K, [0b01, 0b10], algorithm, 0, int(x.shape[1]))


def _time(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--csv", default=None, help="also write the rows to benchmarks/results/<name>")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'shape':16} alg  path   old wall   new wall  ratio   old cpu    new cpu  ratio   load1")
    for name in args.shapes:
        x, y = make_groups(*SHAPES[name])
        for algorithm in (1, 2):
            old_fn, new_fn = (lambda: composition(x, y, algorithm)), (lambda: fused(x, y, algorithm))
            before = dict(_ext.paths)
            new = new_fn()  # also the warm-up
            path = next(key for key in _ext.paths if _ext.paths[key] != before.get(key, 0))
            old = old_fn()
            assert torch.equal(old[0], new[0]) and torch.equal(old[1], new[1]), name
            times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
            for _ in range(args.repeats):
                times["old"].append(_time(old_fn))
                times["new"].append(_time(new_fn))
            med = {(which, i): statistics.median(t[i] for t in runs) for which, runs in times.items() for i in (0, 1)}
            row = {
                "shape": name,
                "algorithm": algorithm,
                "path": path.split(":")[1],
                "old_wall_s": med["old", 0],
                "new_wall_s": med["new", 0],
                "wall_ratio": med["old", 0] / med["new", 0],
                "old_cpu_s": med["old", 1],
                "new_cpu_s": med["new", 1],
                "cpu_ratio": med["old", 1] / med["new", 1],
                "repeats": args.repeats,
                "load1": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            ms = {key: row[key] * 1e3 for key in ("old_wall_s", "new_wall_s", "old_cpu_s", "new_cpu_s")}
            print(
                f"{name:16} {algorithm:3}  {row['path']:6} {ms['old_wall_s']:8.2f}ms {ms['new_wall_s']:8.2f}ms "
                f"{row['wall_ratio']:5.2f}x {ms['old_cpu_s']:8.2f}ms {ms['new_cpu_s']:8.2f}ms "
                f"{row['cpu_ratio']:5.2f}x  {row['load1']}",
                flush=True,
            )
    if args.csv:
        from _results import environment, write_csv

        env = environment()
        print("wrote", write_csv([{**r, **env} for r in rows], args.csv))


if __name__ == "__main__":
    main()
