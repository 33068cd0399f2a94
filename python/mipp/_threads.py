"""Advice when torch's OpenMP threads compete with other work for the cores (see mipp/__init__.py)."""

from __future__ import annotations

import os
import warnings

import torch

_warned = False


def advise() -> None:
    """Warn once per process when torch runs several OpenMP threads that spin while waiting (no
    ``OMP_WAIT_POLICY=PASSIVE``: torch was imported before mipp, or the user chose ACTIVE) and the machine's
    1-minute load exceeds its cores, i.e. other work shares them."""
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
    _warned = True
    warnings.warn(
        f"the machine is loaded (1-minute load {load:.1f} on {cores} cores) and torch runs {threads} OpenMP "
        "threads that spin while they wait: beside another CPU-bound job a selection ran 1.7x slower than "
        "with sleeping waiters. Set OMP_WAIT_POLICY=PASSIVE in the environment (or import mipp before "
        "torch, which sets it), or call torch.set_num_threads(1)",
        RuntimeWarning,
        stacklevel=3,
    )
