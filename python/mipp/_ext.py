"""The one place that imports the compiled extension ``mipp._C`` and remembers why it is missing.

It is also the Python half of the exact CPU kernels: it lays the groups out as the kernels read them and
records in ``paths`` which kernel path ran, so that tests can assert the extension did the work. Its inputs
are trusted (``mipp.ops`` checks the contract and chooses this backend for float32 / float64 CPU tensors):
``B_g`` and ``B_r`` in {1, B}, one dtype, explicit query rows [q0, q1).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import importlib.util
import json
import pathlib
import warnings
from typing import Any

import torch

FIX = (
    "install a C++ compiler (g++ with OpenMP) and reinstall mipp (pip install --force-reinstall --no-deps ., "
    "with MIPP_REQUIRE_EXT=1 to make a failed build an error)"
)


def _missing_reason() -> str | None:
    """Why mipp._C cannot be used, in the words of what went wrong: the build failed (the error recorded by
    setup.py beside the package), it was never built, or it is present but does not import."""
    spec = importlib.util.find_spec("mipp._C")
    if spec is None:
        status = pathlib.Path(__file__).with_name("_build_status.json")
        if status.exists():
            return json.loads(status.read_text())["reason"]
        return (
            "the extension mipp._C was never built (installed from a source tree without building it, "
            "or without a C++ compiler)"
        )
    return None


MISSING_REASON = _missing_reason()
_C: Any = None  # the module mipp._C when it imports
if MISSING_REASON is None:
    try:
        _C = importlib.import_module("mipp._C")
    except ImportError as exc:  # present but not importable (ABI, a missing shared library)
        MISSING_REASON = f"mipp._C is present but does not import: {exc}"

_warned = False


def warn_fallback() -> None:
    """Warn once, the first time a CPU op runs the pure-torch reference because the extension is missing."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"mipp runs its CPU ops on the pure-torch reference, 30-220x slower than its C++ extension: "
            f"{MISSING_REASON}. Fix: {FIX}. mipp.build_info() shows the same.",
            RuntimeWarning,
            stacklevel=4,
        )


# "op:path" -> number of calls that ran it, e.g. "knn_distance:sweep", "digamma_sum:cpu".
paths: collections.Counter = collections.Counter()
_forced_path = "auto"


def has_cuda() -> bool:
    """True when the extension was compiled with its CUDA part."""
    return _C is not None and bool(_C.build_info().get("cuda"))


@contextlib.contextmanager
def force_path(path: str):
    """Run the pairwise CPU kernels with one path ("brute", "sweep" or "strips"; "auto" picks by dimension;
    "strips" is knn_distance's with 2 or more columns and runs as "sweep" elsewhere). For tests and benchmarks:
    every path gives the same values, only the speed differs."""
    global _forced_path
    if path not in ("auto", "brute", "sweep", "strips"):
        raise ValueError(f'path must be "auto", "brute", "sweep" or "strips", got {path!r}')
    previous, _forced_path = _forced_path, path
    try:
        yield
    finally:
        _forced_path = previous


def _columns(groups: list[torch.Tensor]) -> tuple[list[tuple[int, int, int]], list[torch.Tensor]]:
    """The kernels' group arguments (pointer, B_g, d) and the (B_g, d, N) contiguous copies they point into
    (keep them alive for the call): one column's samples are contiguous, the kernels' inner loops run over
    them."""
    cols = [g.transpose(1, 2).contiguous() for g in groups]
    return [(c.data_ptr(), int(c.shape[0]), int(c.shape[1])) for c in cols], cols


def _record(op: str, path: str) -> None:
    paths[f"{op}:{path}"] += 1


def knn_distance(groups: list[torch.Tensor], k: int, q0: int, q1: int) -> torch.Tensor:
    """The extension's mipp::knn_distance."""
    args, _keep = _columns(groups)
    batch, n = max(int(g.shape[0]) for g in groups), int(groups[0].shape[1])
    out = torch.empty(batch, q1 - q0, dtype=groups[0].dtype)
    f64 = groups[0].dtype == torch.float64
    threads = torch.get_num_threads()
    _record("knn_distance", _C.knn_distance_cpu(args, batch, n, f64, k, out.data_ptr(), _forced_path, threads, q0, q1))
    return out


def count_within(groups: list[torch.Tensor], radius: torch.Tensor, strict: bool, q0: int, q1: int) -> torch.Tensor:
    """The extension's mipp::count_within."""
    args, _keep = _columns(groups)
    batch, n = max(int(radius.shape[0]), *(int(g.shape[0]) for g in groups)), int(groups[0].shape[1])
    radius = radius.contiguous()
    out = torch.empty(batch, q1 - q0, dtype=torch.int64)
    f64 = groups[0].dtype == torch.float64
    threads = torch.get_num_threads()
    path = _C.count_within_cpu(
        args, batch, n, f64, radius.data_ptr(), int(radius.shape[0]), bool(strict), out.data_ptr(), _forced_path,
        threads, q0, q1,
    )  # fmt: skip
    _record("count_within", path)
    return out


def marginal_radius(groups: list[torch.Tensor], radius: torch.Tensor, q0: int, q1: int) -> torch.Tensor:
    """The extension's mipp::marginal_radius."""
    args, _keep = _columns(groups)
    batch, n = max(int(radius.shape[0]), *(int(g.shape[0]) for g in groups)), int(groups[0].shape[1])
    radius = radius.contiguous()
    out = torch.empty(batch, q1 - q0, len(groups), dtype=radius.dtype)
    f64 = groups[0].dtype == torch.float64
    threads = torch.get_num_threads()
    path = _C.marginal_radius_cpu(
        args, batch, n, f64, radius.data_ptr(), int(radius.shape[0]), out.data_ptr(), _forced_path, threads, q0, q1
    )
    _record("marginal_radius", path)
    return out


def ksg_counts(
    groups: list[torch.Tensor], k: int, marginals: list[int], algorithm: int, q0: int, q1: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The extension's mipp::ksg_counts."""
    args, _keep = _columns(groups)
    batch, n = max(int(g.shape[0]) for g in groups), int(groups[0].shape[1])
    eps = torch.empty(batch, q1 - q0, dtype=groups[0].dtype)
    counts = torch.empty(batch, len(marginals), q1 - q0, dtype=torch.int64)
    f64 = groups[0].dtype == torch.float64
    threads = torch.get_num_threads()
    path = _C.ksg_counts_cpu(
        args, batch, n, f64, k, list(marginals), algorithm, eps.data_ptr(), counts.data_ptr(), _forced_path, threads,
        q0, q1,
    )  # fmt: skip
    _record("ksg_counts", path)
    return eps, counts


def ross_counts(
    x: torch.Tensor, classes: torch.Tensor, strata: torch.Tensor, k_each: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The extension's mipp::ross_counts (x of one column, (B, N, 1))."""
    x = x.reshape(x.shape[0], x.shape[1]).contiguous()
    codes = [c.contiguous() for c in (classes, strata, k_each)]
    batch, n = int(x.shape[0]), int(x.shape[1])
    eps = torch.empty(batch, n, dtype=x.dtype)
    tied, lt, le = (torch.empty(batch, n, dtype=torch.int64) for _ in range(3))
    _C.ross_counts_cpu(
        x.data_ptr(), batch, n, x.dtype == torch.float64, *(c.data_ptr() for c in codes), eps.data_ptr(),
        tied.data_ptr(), lt.data_ptr(), le.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    _record("ross_counts", "sorted")
    return eps, tied, lt, le
