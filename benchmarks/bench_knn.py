"""pytest-benchmark suite for mipp::knn_distance on the CPU (the extension's exact kernels).

    python -m pytest benchmarks/bench_knn.py --benchmark-group-by=param:shape

Each case first checks the op against the pure-torch reference (torch.equal), then times it; at
N <= 2000 the reference is timed beside it, so each group shows the ratio.
"""

import pytest
import torch
from conftest import SHAPES, K, make_groups, pick

from mipp import reference


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl", ["op", "reference"])
def test_knn_distance(benchmark, shape, impl):
    g = make_groups(shape)
    op = lambda: torch.ops.mipp.knn_distance(g, K)
    ref = lambda: reference.knn_distance(g, K)
    fn = pick(impl, shape, op, ref)
    assert torch.equal(op(), ref())
    benchmark(fn)
