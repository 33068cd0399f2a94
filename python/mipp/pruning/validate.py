"""Checks of user settings, one message shape for all of them: the name, what is allowed, what was given."""

from __future__ import annotations

import math

import torch


def check_integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_number(name: str, value, low: float, high: float, allowed: str, low_open: bool = True) -> None:
    """``value`` a real number in (low, high) (``low_open=False``: [low, high)); ``allowed`` says so in words."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value < high
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_matrix(name: str, t) -> torch.Tensor:
    """A finite floating (N,) or (N, d) tensor, as float64 on the CPU (a new tensor; ``t`` is not modified)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, d), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t.detach().to(torch.float64).cpu()
