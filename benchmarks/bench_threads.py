"""Threads on a busy machine: MIPP's selection on a ResNet-18-style CNN with torch's threads = the cores vs
one thread, on an idle machine and beside one other CPU-bound process (a spinning Python loop, as another
user's job would be), with OpenMP's waiting threads spinning (OMP_WAIT_POLICY=ACTIVE, torch's behaviour
when nothing is set) or sleeping (PASSIVE, what ``import mipp`` sets when it is imported before torch).
The C++ kernels share torch's OpenMP team; with a core taken by someone else, spinning team members steal
the time the descheduled one needs to reach the barrier.

    PYTHONPATH=python python benchmarks/bench_threads.py [--reps 3]

Each timing in a fresh process (the policy is read when torch loads), interleaved over the configurations,
medians; writes benchmarks/results/threads.csv.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import statistics
import subprocess
import sys

from _results import environment, write_csv

CHILD = """
import sys, time, warnings
sys.path.insert(0, {zoo!r})
import torch
from zoo import ResNet18
from mipp.pruning import MIPP
torch.set_num_threads({threads})
torch.manual_seed(0)
model = ResNet18(widths=(16, 32, 64, 128)).eval()
x = torch.randn({samples}, 3, 16, 16)
warnings.simplefilter("ignore")  # N < F in the last stage: the timing is what is measured here
t0 = time.perf_counter()
MIPP(progress=False, n_samples=len(x)).select(model, x)
print(time.perf_counter() - t0)
"""


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def timed(policy: str, threads: int, samples: int) -> float:
    zoo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pruning")
    code = CHILD.format(zoo=zoo, threads=threads, samples=samples)
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--samples", type=int, default=600)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    configs = list(itertools.product(("ACTIVE", "PASSIVE"), (cores, 1)))
    rows = []
    env = environment()
    for rep in range(args.reps):
        for load in ("idle", "loaded"):
            stop = mp.Event()
            spinner = mp.Process(target=_spin, args=(stop,)) if load == "loaded" else None
            if spinner is not None:
                spinner.start()
            try:
                for policy, threads in configs:
                    t = timed(policy, threads, args.samples)
                    rows.append(
                        {
                            **env,
                            "load": load,
                            "policy": policy,
                            "threads": threads,
                            "rep": rep,
                            "seconds": round(t, 3),
                            "cores": cores,
                            "load1": round(os.getloadavg()[0], 2),
                        }
                    )
                    print(f"rep {rep} {load:6s} {policy:7s} threads={threads}: {t:.2f} s", flush=True)
            finally:
                if spinner is not None:
                    stop.set()
                    spinner.join()
    print("wrote", write_csv(rows, "threads.csv"))
    base = statistics.median(r["seconds"] for r in rows if r["load"] == "idle" and r["threads"] == 1)
    print(f"median seconds (ratio to one thread on the idle machine, {base:.2f} s):")
    for load in ("idle", "loaded"):
        for policy, threads in configs:
            t = statistics.median(
                r["seconds"] for r in rows if (r["load"], r["policy"], r["threads"]) == (load, policy, threads)
            )
            print(f"  {load:6s} {policy:7s} {threads} thread(s): {t:6.2f} s  {t / base:.2f}x")


if __name__ == "__main__":
    main()
