"""mipp's CUDA path (the Triton kernels in mipp_kernels) on one GPU, against torch's own brute force.

    python benchmarks/bench_gpu.py [--quick] [--k 3] [--dtype float32] [--out benchmarks/results/gpu]

Builds nothing: it times what is installed (or importable from this checkout). First correctness: every
op on CUDA (knn_distance, count_within strict and not, marginal_radius, digamma_sum through mipp.mi)
equals the pure-torch reference on the same GPU, bit for bit, on small inputs with ties, duplicates and a
shared group, in float32 and float64. Then timing with triton.testing.do_bench (median and 20/80
percentiles, ms), float32 unless --dtype says otherwise:
  mipp.mi, torch.ops.mipp.knn_distance and torch.ops.mipp.count_within (strict, in x under the k-th
  distance) at N in {2000, 10000, 20000} x (dx, dy) in {(1, 1), (8, 8), (32, 32), (64, 64), (128, 128)};
  the baseline at N = 20000, 64 + 64 dims: torch.cdist(p=inf) + kthvalue (chunked over query rows) for the
  k-th distance, cdist + comparison + sum for the counts, ratios baseline / mipp in the same run;
  the batched case: B = 256 problems with their own 1-D x and one shared 64-column y, one call, against
  B separate calls.
Results go to <out>.csv and <out>.json with the device, the versions, the git commit and the shapes.
The first call of each shape autotunes the kernels; do_bench's warm-up absorbs it.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import triton
import triton.testing

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "python", ROOT):  # mipp and mipp_kernels from this checkout unless installed
    if str(path) not in sys.path:
        sys.path.append(str(path))

import mipp  # noqa: E402
from mipp import reference  # noqa: E402

NS = (2000, 10000, 20000)
DIMS = ((1, 1), (8, 8), (32, 32), (64, 64), (128, 128))
QUICK_NS, QUICK_DIMS = (2000,), ((1, 1), (8, 8))
BASELINE = (20000, 64, 64)
QUICK_BASELINE = (2000, 8, 8)
QUANTILES = [0.5, 0.2, 0.8]
# Rows per cdist chunk of the baseline: a (rows, N) float32 block of 160 MB at N = 20000.
CHUNK = 2048
DEVICE = "cuda"


def data(n: int, dx: int, dy: int, dtype, seed: int = 0):
    """x ~ N(0, I_dx), y = x's columns (cycled) + noise: dependent and continuous, (n, dx), (n, dy)."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(n, dx, generator=gen, device=DEVICE, dtype=dtype)
    y = x[:, torch.arange(dy, device=DEVICE) % dx] + torch.randn(n, dy, generator=gen, device=DEVICE, dtype=dtype)
    return x, y


def check_correctness(k: int) -> None:
    """Each op on CUDA equals the reference on CUDA bit for bit (and mipp.mi equals its CPU value)."""
    ops = torch.ops.mipp
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator(device=DEVICE).manual_seed(1)
        n = 777  # not a multiple of any block: padding rows and partial tiles
        x = torch.randint(0, 5, (3, n, 2), generator=gen, device=DEVICE).to(dtype)  # ties, batched
        y = torch.randn(1, n, 3, generator=gen, device=DEVICE, dtype=dtype)  # shared
        y[:, 100:120] = y[:, :20]  # duplicated rows
        for groups in ([x], [y], [x, y], [x, y, x[:1]]):
            for kk in (1, k, 64):
                got, want = ops.knn_distance(groups, kk), reference.knn_distance(groups, kk)
                _same(f"knn_distance k={kk} {dtype} groups={len(groups)}", got, want)
            eps = reference.knn_distance(groups, k)
            for strict in (True, False):
                _same(
                    f"count_within strict={strict} {dtype}",
                    ops.count_within(groups, eps, strict),
                    reference.count_within(groups, eps, strict),
                )
            _same(f"marginal_radius {dtype}", ops.marginal_radius(groups, eps), reference.marginal_radius(groups, eps))
        xs, ys = data(1500, 2, 2, dtype)
        for algorithm in (1, 2):
            got, want = mipp.mi(xs, ys, k, algorithm=algorithm), mipp.mi(xs.cpu(), ys.cpu(), k, algorithm=algorithm)
            if abs(float(got) - float(want)) > 1e-9 * max(1.0, abs(float(want))):
                raise SystemExit(
                    f"MISMATCH mipp.mi algorithm={algorithm} {dtype}: cuda {float(got)!r} vs cpu {float(want)!r}"
                )
    print("# correctness: every op on CUDA equals the reference", flush=True)


def _same(what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if got.shape != want.shape or not torch.equal(got, want):
        bad = (got != want).sum().item() if got.shape == want.shape else "shape"
        raise SystemExit(f"MISMATCH {what}: {bad} values differ from the reference")


def bench(fn) -> tuple[float, float, float]:
    """(median, p20, p80) milliseconds."""
    return tuple(triton.testing.do_bench(fn, warmup=50, rep=200, quantiles=QUANTILES))


def _brute_tiles(x: torch.Tensor):
    """(q0, rows x N max-norm distances by torch.cdist(p=inf)) per chunk, self set to inf (excluded by index)."""
    for q0 in range(0, x.shape[0], CHUNK):
        d = torch.cdist(x[q0 : q0 + CHUNK], x, p=float("inf"))
        rows = torch.arange(d.shape[0], device=d.device)
        d[rows, rows + q0] = float("inf")
        yield q0, d


def brute_knn(joint: torch.Tensor, k: int) -> torch.Tensor:
    """k-th neighbour max-norm distance by torch.cdist(p=inf) + kthvalue, chunked."""
    out = torch.empty(joint.shape[0], dtype=joint.dtype, device=joint.device)
    for q0, d in _brute_tiles(joint):
        out[q0 : q0 + CHUNK] = torch.kthvalue(d, k, dim=1).values
    return out


def brute_count(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """#{j != i : max-norm(x_i - x_j) < eps_i} by torch.cdist(p=inf), chunked."""
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for q0, d in _brute_tiles(x):
        out[q0 : q0 + CHUNK] = (d < eps[q0 : q0 + CHUNK, None]).sum(dim=1)
    return out


def environment(k: int, dtype) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    props = torch.cuda.get_device_properties(0)
    return {
        "device": torch.cuda.get_device_name(0),
        "capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "mipp": mipp.__version__,
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "k": k,
        "dtype": str(dtype).replace("torch.", ""),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 2000 and small dims only (a smoke run)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "bench_gpu.py needs a CUDA device and none is available (torch.cuda.is_available() is False); "
            "run it on a GPU machine, or benchmarks/bench_cpu.py here"
        )
    k, dtype = args.k, getattr(torch, args.dtype)
    env = environment(k, dtype)
    print(
        f"# {env['device']} (sm_{env['capability'].replace('.', '')}, {env['sms']} SMs), torch {env['torch']}, "
        f"triton {env['triton']}, commit {env['commit']}{' (dirty)' if env['dirty'] else ''}",
        flush=True,
    )
    check_correctness(k)

    ops, rows = torch.ops.mipp, []

    def record(op, n, dx, dy, batch, impl, times, base=None):
        med, p20, p80 = times
        row = {
            "op": op,
            "n": n,
            "dx": dx,
            "dy": dy,
            "batch": batch,
            "impl": impl,
            "median_ms": med,
            "p20_ms": p20,
            "p80_ms": p80,
            "baseline_over_mipp": (med / base) if base else None,
            "pairs_per_ns": batch * n * n / (med * 1e6),
        }
        rows.append(row)
        ratio = f"{med / base:>9.2f}" if base else " " * 9
        print(
            f"{op:<14} {n:>6} {dx:>4} {dy:>4} {batch:>5} {impl:<10} {med:>9.3f} {p20:>9.3f} {p80:>9.3f} {ratio}",
            flush=True,
        )
        return med

    print(
        f"{'op':<14} {'N':>6} {'dx':>4} {'dy':>4} {'B':>5} {'impl':<10} {'median':>9} {'p20':>9} {'p80':>9} "
        f"{'base/mipp':>9}   (ms)"
    )
    for n in QUICK_NS if args.quick else NS:
        for dx, dy in QUICK_DIMS if args.quick else DIMS:
            x, y = data(n, dx, dy, dtype)
            gx, gy = x[None], y[None]
            eps = ops.knn_distance([gx, gy], k)
            record("mi", n, dx, dy, 1, "mipp", bench(lambda: mipp.mi(x, y, k)))
            record("knn_distance", n, dx, dy, 1, "mipp", bench(lambda: ops.knn_distance([gx, gy], k)))
            record("count_within", n, dx, dy, 1, "mipp", bench(lambda: ops.count_within([gx], eps, True)))

    n, dx, dy = QUICK_BASELINE if args.quick else BASELINE
    x, y = data(n, dx, dy, dtype, seed=2)
    gx, gy, joint = x[None], y[None], torch.cat([x, y], dim=1)
    eps = ops.knn_distance([gx, gy], k)
    # cdist(p=inf) is a max of |differences| too, so it should agree exactly; a disagreement is reported
    # (and recorded) but does not stop the timing of a baseline that is only a peer.
    env["baseline_matches"] = bool(
        torch.equal(brute_knn(joint, k), eps[0])
        and torch.equal(brute_count(x, eps[0]), ops.count_within([gx], eps, True)[0])
    )
    if not env["baseline_matches"]:
        print("# WARNING: the torch brute force disagrees with mipp at the baseline shape", flush=True)
    knn_ms = record("knn_distance", n, dx, dy, 1, "mipp", bench(lambda: ops.knn_distance([gx, gy], k)))
    record("knn_distance", n, dx, dy, 1, "torch", bench(lambda: brute_knn(joint, k)), knn_ms)
    count_ms = record("count_within", n, dx, dy, 1, "mipp", bench(lambda: ops.count_within([gx], eps, True)))
    record("count_within", n, dx, dy, 1, "torch", bench(lambda: brute_count(x, eps[0])), count_ms)
    mi_ms = record("mi", n, dx, dy, 1, "mipp", bench(lambda: mipp.mi(x, y, k)))

    def brute_mi():  # the same three passes as KSG-1 (the digamma sum is negligible)
        e = brute_knn(joint, k)
        return brute_count(x, e), brute_count(y, e)

    record("mi", n, dx, dy, 1, "torch", bench(brute_mi), mi_ms)

    # Batching: B problems share y; its distances are computed once per batch block, not once per problem.
    n, b, dy = (2000, 256, 64) if not args.quick else (2000, 32, 8)
    _, y = data(n, 1, dy, dtype, seed=3)
    xb = y[None, :, :1] + torch.randn(b, n, 1, device=DEVICE, dtype=dtype)
    single = torch.stack([mipp.mi(xb[i], y, k) for i in range(b)])
    batched = mipp.mi(xb, y, k)
    if not torch.allclose(batched, single, rtol=1e-12, atol=1e-12):
        raise SystemExit("MISMATCH: batched mipp.mi differs from the single calls")
    batched_ms = record("mi", n, 1, dy, b, "batched", bench(lambda: mipp.mi(xb, y, k)))
    record("mi", n, 1, dy, b, "loop", bench(lambda: [mipp.mi(xb[i], y, k) for i in range(b)]), batched_ms)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env_fields = ["device", "torch", "cuda", "triton", "commit", "dirty", "k", "dtype"]
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) + env_fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **{key: env[key] for key in env_fields}})
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=1)
    print(f"# wrote {out.with_suffix('.csv')} and .json")


if __name__ == "__main__":
    main()
