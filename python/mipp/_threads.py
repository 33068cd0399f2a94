"""Advice when torch's OpenMP threads compete with other work for the cores (see mipp/__init__.py)."""

from __future__ import annotations

import os
import time
import warnings

import torch

_warned = False

# How long other processes' CPU use is sampled, and how much of a core they must use to count as a job that
# shares ours: a CPU-bound process uses about 1, background daemons a few hundredths.
WINDOW_S = 0.1
OTHER_CORES = 0.5


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat: user, nice, system, irq,
    softirq; steal is another guest's and idle / iowait are nobody's)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def other_cores(window: float = WINDOW_S) -> float | None:
    """Cores kept busy by other processes over ``window`` seconds: the machine's busy time less this
    process's own (its OpenMP threads' spinning included), per second; None where /proc/stat is unreadable."""
    try:
        b0, own0, t0 = _busy_seconds(), time.process_time(), time.monotonic()
        time.sleep(window)
        b1, own1, t1 = _busy_seconds(), time.process_time(), time.monotonic()
    except (OSError, ValueError):
        return None
    return max((b1 - b0) - (own1 - own0), 0.0) / (t1 - t0)


def advise() -> None:
    """Warn once per process when torch runs several OpenMP threads that spin while waiting (no
    ``OMP_WAIT_POLICY=PASSIVE``: torch was imported before mipp, or the user chose ACTIVE) and other work
    shares the cores: the machine's 1-minute load exceeds its cores and, sampled for a tenth of a second,
    other processes keep half a core or more busy. The load alone counts this process's own threads: right
    after a job of its own (a training run, a selection) it exceeds the cores with nothing else running."""
    global _warned
    threads = torch.get_num_threads()
    if _warned or threads < 2 or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this system
        return
    if load <= cores:
        return
    others = other_cores()
    if others is not None and others < OTHER_CORES:
        return
    _warned = True
    seen = f"other processes use {others:.1f} cores, " if others is not None else ""
    warnings.warn(
        f"the machine is loaded (1-minute load {load:.1f} on {cores} cores, {seen}torch runs {threads} OpenMP "
        "threads that spin while they wait): beside another CPU-bound job a selection ran 1.7x slower than "
        "with sleeping waiters. Set OMP_WAIT_POLICY=PASSIVE in the environment (or import mipp before "
        "torch, which sets it), or call torch.set_num_threads(1)",
        RuntimeWarning,
        stacklevel=3,
    )
