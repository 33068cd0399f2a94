"""The one place that imports the compiled extension ``mipp._C`` and remembers why it is missing.

It is also the Python half of the exact CPU kernels: it decides whether a call is within their contract
(CPU tensors, float32/float64 in one dtype, ``B_g`` and ``B_r`` in {1, B}), lays the groups out as the kernels
read them, and records in ``paths`` which kernel path ran, so that tests can assert the extension did the
work. Calls outside the contract return None and the op runs the reference, which owns the error messages.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import importlib.util
import json
import pathlib
import warnings

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
_C = None
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
    """Run the pairwise CPU kernels with one path ("brute" or "sweep"; "auto" picks by dimension).
    For tests and benchmarks: every path gives the same values, only the speed differs."""
    global _forced_path
    if path not in ("auto", "brute", "sweep"):
        raise ValueError(f'path must be "auto", "brute" or "sweep", got {path!r}')
    previous, _forced_path = _forced_path, path
    try:
        yield
    finally:
        _forced_path = previous


def _prepare(groups: list[torch.Tensor], radius: torch.Tensor | None = None, q0: int = 0, q1: int = -1):
    """(group args, batch, n, f64, keep-alive tensors, (r0, r1)) for the kernels, or None outside their
    contract. The radius has one value per query row (B_r, r1 - r0)."""
    if _C is None or not groups:
        return None
    dtype = groups[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return None
    tensors = list(groups) if radius is None else [*groups, radius]
    if any(t.dtype != dtype or t.device.type != "cpu" for t in tensors):
        return None
    if any(g.dim() != 3 for g in groups) or (radius is not None and radius.dim() != 2):
        return None
    n = int(groups[0].shape[1])
    r0, r1 = (q0, n if q1 == -1 else q1)
    if not 0 <= r0 <= r1 <= n:
        return None
    batch = max(int(t.shape[0]) for t in tensors)
    if batch < 1 or any(g.shape[0] not in (1, batch) or g.shape[1] != n for g in groups):
        return None
    if radius is not None and (radius.shape[0] not in (1, batch) or radius.shape[1] != r1 - r0):
        return None
    # (B_g, d, N) contiguous: one column's samples are contiguous, the kernels' inner loops run over them.
    cols = [g.transpose(1, 2).contiguous() for g in groups]
    args = [(c.data_ptr(), int(c.shape[0]), int(c.shape[1])) for c in cols]
    return args, batch, n, dtype == torch.float64, cols, (r0, r1)


def _record(op: str, path: str) -> None:
    paths[f"{op}:{path}"] += 1


def knn_distance(groups: list[torch.Tensor], k: int, q0: int = 0, q1: int = -1) -> torch.Tensor | None:
    """The extension's mipp::knn_distance, or None when the call is outside its contract."""
    prep = _prepare(groups, None, q0, q1)
    if prep is None or not 1 <= k < prep[2]:
        return None
    args, batch, n, f64, _keep, (r0, r1) = prep
    out = torch.empty(batch, r1 - r0, dtype=groups[0].dtype)
    _record(
        "knn_distance",
        _C.knn_distance_cpu(args, batch, n, f64, k, out.data_ptr(), _forced_path, torch.get_num_threads(), r0, r1),
    )
    return out


def count_within(
    groups: list[torch.Tensor], radius: torch.Tensor, strict: bool, q0: int = 0, q1: int = -1
) -> torch.Tensor | None:
    """The extension's mipp::count_within, or None when the call is outside its contract."""
    prep = _prepare(groups, radius, q0, q1)
    if prep is None:
        return None
    args, batch, n, f64, _keep, (r0, r1) = prep
    radius = radius.contiguous()
    out = torch.empty(batch, r1 - r0, dtype=torch.int64)
    _record(
        "count_within",
        _C.count_within_cpu(
            args,
            batch,
            n,
            f64,
            radius.data_ptr(),
            int(radius.shape[0]),
            bool(strict),
            out.data_ptr(),
            _forced_path,
            torch.get_num_threads(),
            r0,
            r1,
        ),
    )
    return out


def marginal_radius(groups: list[torch.Tensor], radius: torch.Tensor, q0: int = 0, q1: int = -1) -> torch.Tensor | None:
    """The extension's mipp::marginal_radius, or None when the call is outside its contract."""
    prep = _prepare(groups, radius, q0, q1)
    if prep is None:
        return None
    args, batch, n, f64, _keep, (r0, r1) = prep
    radius = radius.contiguous()
    out = torch.empty(batch, r1 - r0, len(groups), dtype=radius.dtype)
    _record(
        "marginal_radius",
        _C.marginal_radius_cpu(
            args,
            batch,
            n,
            f64,
            radius.data_ptr(),
            int(radius.shape[0]),
            out.data_ptr(),
            _forced_path,
            torch.get_num_threads(),
            r0,
            r1,
        ),
    )
    return out
