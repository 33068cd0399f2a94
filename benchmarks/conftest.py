"""Shared set-up of the pytest-benchmark suites (bench_knn.py, bench_count.py)."""

import pytest
import torch

from mipp import _ext

# name -> (N, dx, dy): the CPU shapes of the batched-MI issue
SHAPES = {
    "N=2000 1+1": (2000, 1, 1),
    "N=10000 1+1": (10000, 1, 1),
    "N=2000 8+8": (2000, 8, 8),
    "N=10000 8+8": (10000, 8, 8),
    "N=5000 32+32": (5000, 32, 32),
}
K = 3
REFERENCE_MAX_N = 2000  # the pure-torch reference is timed beside the op only up to here


def make_groups(shape: str):
    """[x, y] as (1, N, d) float64 groups with y depending on x; continuous."""
    n, dx, dy = SHAPES[shape]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, n, dx, generator=gen, dtype=torch.float64)
    y = x[..., :1] + torch.randn(1, n, dy, generator=gen, dtype=torch.float64)
    return [x, y]


@pytest.fixture(autouse=True)
def _needs_extension():
    if _ext._C is None:
        pytest.fail(f"the extension is not built, nothing fast to benchmark: {_ext.MISSING_REASON}")


def pick(impl: str, shape: str, op, ref):
    """The callable to time; the reference only at small N (it takes minutes above)."""
    if impl == "reference" and SHAPES[shape][0] > REFERENCE_MAX_N:
        pytest.skip(f"the reference is timed only up to N={REFERENCE_MAX_N}")
    return op if impl == "op" else ref
