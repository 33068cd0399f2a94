"""The one place that imports the compiled extension ``mipp._C`` and remembers why it is missing."""
from __future__ import annotations

try:
    from mipp import _C
    MISSING_REASON = None
except ImportError as exc:  # the install succeeds without the extension; the reference is used then
    _C = None
    MISSING_REASON = f"{type(exc).__name__}: {exc}"


def has_cuda() -> bool:
    """True when the extension was compiled with its CUDA part."""
    return _C is not None and bool(_C.build_info().get("cuda"))
