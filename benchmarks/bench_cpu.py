"""mipp's CPU path against the CPU peers: scikit-learn's KSG and a scipy cKDTree KSG (NPEET style).

    python benchmarks/bench_cpu.py [--quick] [--repeats R] [--out benchmarks/results/cpu_peers]

First correctness: on continuous data (no ties) KSG-1 with the same k is one number, so mipp.mi must equal
each peer's estimate (to 1e-9). Then timing, at every shape of the issue:
  N in {2000, 10000} x (dx, dy) in {(1, 1), (8, 8)}, and N = 5000 with (32, 32) and (128, 128);
  the shared marginal: B = 256 problems with 1-D x and one y of 64 columns, N = 2000, against one estimate.
Runs of mipp and the peers are interleaved (mipp, peer, peer, mipp, ...) so that a busy machine slows all of
them alike; the table reports medians and the ratios peer / mipp measured in the same run. Results go to
<out>.csv and <out>.json with the CPU, the versions, the thread counts and the git commit.

Peers, each with all cores where it has a knob for it (the fair comparison):
  sklearn      sklearn.feature_selection._mutual_info._compute_mi_cc(x, y, k): the KSG inside
               mutual_info_regression, without its noise (1-D x and y only: KD-trees in 2-D and 1-D).
  sklearn-api  mutual_info_regression(x, y, n_neighbors=k): the public function (it scales and adds
               noise, so its value differs slightly; timed for reference only).
  ckdtree      cKDTree(joint, p=inf).query(k + 1) for eps, query_ball_point(r = nextafter(eps, 0)) on the
               marginals (the exact form of NPEET's r - 1e-15), workers=-1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import scipy
import scipy.special
import sklearn
import torch
from scipy.spatial import cKDTree
from sklearn.feature_selection import mutual_info_regression
from sklearn.feature_selection._mutual_info import _compute_mi_cc

import mipp
from mipp import _ext

K = 3
SHAPES = [(2000, 1, 1), (10000, 1, 1), (2000, 8, 8), (10000, 8, 8), (5000, 32, 32), (5000, 128, 128)]
QUICK_SHAPES = [(2000, 1, 1), (2000, 8, 8), (1000, 32, 32)]
# A peer run longer than this is not repeated (cKDTree at 128 dims takes about a minute).
SLOW_S = 20.0


def ckdtree_ksg(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n = len(x)
    joint = np.hstack([x, y])
    dist, _ = cKDTree(joint).query(joint, k + 1, p=np.inf, workers=-1)
    r = np.nextafter(dist[:, -1], 0)  # strictly inside eps
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True, workers=-1)  # includes i itself
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True, workers=-1)
    return float(
        scipy.special.digamma(k)
        + scipy.special.digamma(n)
        - np.mean(scipy.special.digamma(nx) + scipy.special.digamma(ny))
    )


def data(n: int, dx: int, dy: int, seed: int = 0):
    """x ~ N(0, I_dx); y = the first dy columns of x (cycled) + N(0, I_dy): dependent, continuous."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    y = x[:, np.arange(dy) % dx] + rng.standard_normal((n, dy))
    return x, y


def contenders(x: np.ndarray, y: np.ndarray, k: int) -> dict:
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    out = {"mipp": lambda: float(mipp.mi(tx, ty, k)), "ckdtree": lambda: ckdtree_ksg(x, y, k)}
    if x.shape[1] == 1 and y.shape[1] == 1:
        out["sklearn"] = lambda: float(_compute_mi_cc(x[:, 0], y[:, 0], k))
        out["sklearn-api"] = lambda: float(mutual_info_regression(x, y[:, 0], n_neighbors=k, random_state=0)[0])
    return out


def check(x, y, k) -> dict:
    """Every exact peer's estimate equals mipp's; returns the values."""
    values = {name: f() for name, f in contenders(x, y, k).items()}
    for name in ("ckdtree", "sklearn"):
        if name in values and abs(values[name] - values["mipp"]) > 1e-9:
            raise SystemExit(f"MISMATCH at {x.shape}, {y.shape}: mipp {values['mipp']!r} vs {name} {values[name]!r}")
    return values


def interleaved(funcs: dict, repeats: int) -> dict:
    """name -> list of seconds; rounds run every function once, a function slower than SLOW_S only once."""
    times = {name: [] for name in funcs}
    for r in range(repeats):
        for name, f in funcs.items():
            if r and times[name][0] > SLOW_S:
                continue
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return times


def environment() -> dict:
    def cmd(*args):
        try:
            return subprocess.run(
                args, capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.abspath(__file__))
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = mipp.build_info()
    return {
        "device": "cpu",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "mipp": mipp.__version__,
        "cpu_backend": info["cpu_backend"],
        "extension": info.get("extension_detail"),
        "commit": cmd("git", "rev-parse", "HEAD"),
        "dirty": bool(cmd("git", "status", "--porcelain")),
        "k": K,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu_peers"))
    args = ap.parse_args()
    if _ext._C is None:
        print(
            f"WARNING: the extension is not built ({_ext.MISSING_REASON}); timing the pure-torch reference",
            file=sys.stderr,
        )
    env = environment()
    print(
        f"# {env['cpu']}, {env['cores']} cores, torch {env['torch']} ({env['torch_threads']} threads), "
        f"scipy {env['scipy']}, sklearn {env['sklearn']}, commit {env['commit']}{' (dirty)' if env['dirty'] else ''}"
    )
    rows = []
    header = f"{'N':>6} {'dx':>4} {'dy':>4} {'impl':<12} {'median s':>10} {'runs':>4} {'peer/mipp':>10} {'value':>10}"
    print(header)
    for n, dx, dy in QUICK_SHAPES if args.quick else SHAPES:
        x, y = data(n, dx, dy)
        values = check(x, y, K)
        times = interleaved(contenders(x, y, K), args.repeats)
        base = statistics.median(times["mipp"])
        for name, ts in times.items():
            med = statistics.median(ts)
            row = {
                "shape": f"N={n} dx={dx} dy={dy}",
                "n": n,
                "dx": dx,
                "dy": dy,
                "batch": 1,
                "impl": name,
                "median_s": med,
                "runs": len(ts),
                "peer_over_mipp": med / base,
                "value": values[name],
            }
            rows.append(row)
            print(
                f"{n:>6} {dx:>4} {dy:>4} {name:<12} {med:>10.4f} {len(ts):>4} {med / base:>10.2f} "
                f"{values[name]:>10.5f}",
                flush=True,
            )

    # Shared marginal: B problems with their own 1-D x and one shared y; y's distances are computed once.
    n, b, dy = (1000, 64, 64) if args.quick else (2000, 256, 64)
    rng = np.random.default_rng(1)
    y = torch.from_numpy(rng.standard_normal((n, dy)))
    xb = y[None, :, :1] + torch.from_numpy(rng.standard_normal((b, n, 1)))
    one = mipp.mi(xb[0], y, K)
    batched = mipp.mi(xb, y, K)
    if not torch.allclose(batched[0], one, rtol=1e-12, atol=1e-12):
        raise SystemExit(f"MISMATCH: batched problem 0 {float(batched[0])} vs single {float(one)}")
    times = interleaved(
        {
            "mipp-one": lambda: mipp.mi(xb[0], y, K),
            f"mipp-batch{b}": lambda: mipp.mi(xb, y, K),
            "ckdtree-one": lambda: ckdtree_ksg(xb[0].numpy(), y.numpy(), K),
        },
        max(3, args.repeats // 2),
    )
    base = statistics.median(times["mipp-one"])
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "shape": f"shared N={n} dx=1 dy={dy} B={b}",
                "n": n,
                "dx": 1,
                "dy": dy,
                "batch": b if "batch" in name else 1,
                "impl": name,
                "median_s": med,
                "runs": len(ts),
                "peer_over_mipp": med / base,
                "value": float(one),
            }
        )
        print(
            f"{n:>6} {1:>4} {dy:>4} {name:<12} {med:>10.4f} {len(ts):>4} {med / base:>10.2f}  (x mipp-one)", flush=True
        )

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        fields = ["shape", "n", "dx", "dy", "batch", "impl", "median_s", "runs", "peer_over_mipp", "value"]
        env_fields = ["cpu", "cores", "torch_threads", "torch", "scipy", "sklearn", "commit", "dirty"]
        w = csv.DictWriter(f, fieldnames=fields + env_fields)
        w.writeheader()
        for row in rows:
            w.writerow({**row, **{key: env[key] for key in env_fields}})
    with open(args.out + ".json", "w") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=1)
    print(f"# wrote {args.out}.csv and .json")


if __name__ == "__main__":
    main()
