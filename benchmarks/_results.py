"""Shared by the pruning benchmarks: the environment tag of every row, CSV output, mean/std summaries."""

from __future__ import annotations

import csv
import math
import os
import platform
import statistics
import subprocess
from collections import defaultdict

import torch

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def environment() -> dict:
    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, cwd=os.path.dirname(__file__)
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load1": round(os.getloadavg()[0], 2),
    }


def read_csv(name: str) -> list[dict]:
    """The rows of results/``name`` (none when it does not exist yet): what a run that keeps every earlier run
    appends to."""
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(rows: list[dict], name: str) -> str:
    path = os.path.join(RESULTS, name)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def summarize(rows: list[dict], keys: tuple, values: tuple) -> list[dict]:
    """Mean and sample std of ``values`` over the rows sharing ``keys`` (first-seen order)."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(keys, key))
        row["runs"] = len(rs)
        for v in values:
            xs = [float(r[v]) for r in rs if r.get(v) is not None and not math.isnan(float(r[v]))]
            if not xs:
                continue
            row[v] = statistics.fmean(xs)
            row[f"{v}_sd"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out.append(row)
    return out
