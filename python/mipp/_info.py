"""build_info(): what is built, and why any fast path is off."""

from __future__ import annotations

import importlib.util

import torch

from mipp import _ext


def build_info() -> dict:
    """Versions and backends: the extension's CPU/CUDA parts, Triton, and the reason for each path that is off."""
    info = {
        "mipp": __import__("mipp").__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension": _ext._C is not None,
        "extension_missing_reason": _ext.MISSING_REASON,
        "extension_fix": _ext.FIX if _ext._C is None else None,
    }
    if _ext._C is not None:
        ext = dict(_ext._C.build_info())
        info["extension_cpu"] = True
        info["extension_cuda"] = bool(ext.get("cuda"))
        info["extension_detail"] = ext
    else:
        info["extension_cpu"] = info["extension_cuda"] = False
    spec = importlib.util.find_spec("triton")
    if spec is None:
        info["triton"] = None
        info["triton_off_reason"] = "triton is not installed: CUDA tensors use the pure-torch reference"
    else:
        from importlib.metadata import version

        info["triton"] = version("triton")
        info["triton_off_reason"] = None
    info["cpu_backend"] = "extension" if info["extension_cpu"] else "reference (pure torch)"
    return info
