"""Kraskov's own MILCA results (KSG algorithm 2, max-norm, columns z-scored with ddof=1), as recorded
in JIDT's unit tests, reproduced to 1e-7 by ``mipp.mi(x, y, k, algorithm=2, normalize=True)`` in float64.

The data live outside the repository, in ``shared/testdata/milca`` beside it (override with MIPP_TESTDATA):
JIDT's demo data files (GPL-3.0, not redistributed here) and the MILCA values from JIDT's unit tests. In a
clone without them these tests skip, naming the folder; MIPP_REQUIRE_TESTDATA=1 makes the
missing data a failure instead."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import mipp

TOL = 1e-7
BIG = "10ColsRandomGaussian-1.txt"  # N = 10000: the slow case


def _data_dir() -> Path:
    env = os.environ.get("MIPP_TESTDATA")
    if env:
        base = Path(env)
        return base / "milca" if (base / "milca" / "expected.json").exists() else base
    return Path(__file__).resolve().parents[3] / "shared" / "testdata" / "milca"


DATA_DIR = _data_dir()


def _load_expected() -> list[dict]:
    path = DATA_DIR / "expected.json"
    if not path.exists():
        return []
    return json.loads(path.read_text())["cases"]


CASES = _load_expected()
_ARRAYS: dict[str, torch.Tensor] = {}


def _load(file: str) -> torch.Tensor:
    if file not in _ARRAYS:
        _ARRAYS[file] = torch.from_numpy(np.loadtxt(DATA_DIR / file, comments="%", dtype=np.float64))
    return _ARRAYS[file]


def _params():
    out = []
    for case in CASES:
        ident = f"{case['file'].removesuffix('.txt')}-x{''.join(map(str, case['x']))}-y{''.join(map(str, case['y']))}"
        marks = [pytest.mark.slow] if case["file"] == BIG else []
        out.append(pytest.param(case, id=ident, marks=marks))
    return out


REQUIRED = os.environ.get("MIPP_REQUIRE_TESTDATA") == "1"
if not CASES and not REQUIRED:
    pytest.skip(
        f"the MILCA test data are not in {DATA_DIR} (JIDT's data, outside the repository): put "
        "shared/testdata/milca beside the clone or set MIPP_TESTDATA",
        allow_module_level=True,
    )


def test_testdata_present():
    """With MIPP_REQUIRE_TESTDATA=1 missing data fail loudly instead of skipping."""
    assert (DATA_DIR / "expected.json").exists(), (
        f"MILCA test data not found in {DATA_DIR}; clone shared/ beside the repository or set MIPP_TESTDATA"
    )
    assert len(CASES) == 6
    for case in CASES:
        assert (DATA_DIR / case["file"]).exists(), case["file"]
        assert len(case["k"]) == len(case["mi"])


@pytest.mark.parametrize("case", _params())
def test_milca_ksg2(case):
    data = _load(case["file"])
    assert data.dim() == 2 and data.shape[0] in (3000, 10000)
    x, y = data[:, case["x"]], data[:, case["y"]]
    errors = []
    for k, expected in zip(case["k"], case["mi"]):
        got = mipp.mi(x, y, k, algorithm=2, normalize=True)
        assert got.dtype == torch.float64 and got.dim() == 0
        errors.append(abs(got.item() - expected))
    assert max(errors) <= TOL, dict(zip(case["k"], errors))


def test_milca_needs_normalize():
    """The recorded values are for z-scored columns: without normalize the 4ColsPairedNoisyDependence
    estimate (columns with different scales) is different, so the test above really checks z-scoring."""
    case = next(c for c in CASES if c["file"] == "4ColsPairedNoisyDependence-1.txt")
    data = _load(case["file"])
    got = mipp.mi(data[:, case["x"]], data[:, case["y"]], case["k"][2], algorithm=2).item()
    assert abs(got - case["mi"][2]) > 1e-4
