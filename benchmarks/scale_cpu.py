"""N = 100,000 samples with 16 joint dims (8 + 8) on the CPU: time and peak RSS.

An N x N float32 distance matrix would need 40 GB; the ops stream tiles, so peak memory stays at the
data plus one tile. Writes benchmarks/results/scale_cpu.json.

    python benchmarks/scale_cpu.py [--n 100000] [--algorithm 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import time
from pathlib import Path

import torch

import mipp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=8, help="columns of x and of y")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--algorithm", type=int, default=1)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dims, generator=gen)
    y = 0.6 * x + 0.8 * torch.randn(args.n, args.dims, generator=gen)
    true = -0.5 * args.dims * torch.log(torch.tensor(1 - 0.36)).item()
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    est = float(mipp.mi(x, y, args.k, algorithm=args.algorithm))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = {
        "n": args.n,
        "dims": f"{args.dims}+{args.dims}",
        "k": args.k,
        "algorithm": args.algorithm,
        "dtype": "float32",
        "estimate": est,
        "closed_form": true,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak, 1),
        "rss_before_estimate_mib": round(rss_data, 1),
        "n_by_n_float32_mib": round(args.n * args.n * 4 / 2**20, 1),
        "cpu_backend": mipp.build_info()["cpu_backend"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": commit,
    }
    print(json.dumps(row, indent=1))
    out = Path(__file__).parent / "results" / "scale_cpu.json"
    out.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
