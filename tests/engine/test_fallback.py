"""Without the extension (a failed or skipped build), every op runs the pure-torch reference and the
estimates are unchanged: counts and distances are exact on both paths, only psi's last bits may differ."""

import pytest
import torch

import mipp
from mipp import _ext


def _data():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(300, 2, generator=gen, dtype=torch.float64).round(decimals=1)  # ties
    y = x[:, :1] + torch.randn(300, 1, generator=gen, dtype=torch.float64)
    z = torch.randn(300, 1, generator=gen, dtype=torch.float64)
    return x, y, z


def _estimates(x, y, z):
    return torch.stack([mipp.mi(x, y), mipp.mi(x, y, algorithm=2), mipp.cmi(x, y, z), *mipp.mi(x.T.unsqueeze(-1), y)])


def test_reference_fallback_matches_extension(monkeypatch):
    x, y, z = _data()
    with_ext = _estimates(x, y, z)
    assert _ext._C is not None and _ext.paths["digamma_sum:cpu"] > 0  # the extension ran above
    monkeypatch.setattr(_ext, "_C", None)
    before = sum(_ext.paths.values())
    without = _estimates(x, y, z)
    assert sum(_ext.paths.values()) == before  # nothing went through the extension
    torch.testing.assert_close(without, with_ext, rtol=0, atol=1e-12)
    assert mipp.build_info()["cpu_backend"] == "reference (pure torch)"


def test_fallback_warns_once_with_the_reason_and_the_fix(monkeypatch):
    x, y, z = _data()
    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "MISSING_REASON", "building the extension failed (CompileError: no g++)")
    monkeypatch.setattr(_ext, "_warned", False)
    with pytest.warns(RuntimeWarning, match=r"pure-torch reference.*no g\+\+.*Fix: install a C\+\+ compiler"):
        mipp.mi(x, y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        mipp.mi(x, y)  # once only
    info = mipp.build_info()
    assert "no g++" in info["extension_missing_reason"] and "compiler" in info["extension_fix"]
    assert "circular import" not in info["extension_missing_reason"]


def test_missing_reason_says_never_built_without_a_status_file(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(_ext, "__file__", str(tmp_path / "_ext.py"))
    assert "never built" in _ext._missing_reason()
    (tmp_path / "_build_status.json").write_text('{"reason": "building the extension failed (X)"}')
    assert _ext._missing_reason() == "building the extension failed (X)"
