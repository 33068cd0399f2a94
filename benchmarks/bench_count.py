"""pytest-benchmark suite for mipp::count_within on the CPU (the extension's exact kernels): the strict
marginal counts of KSG-1 (x under the k-th joint distance).

    python -m pytest benchmarks/bench_count.py --benchmark-group-by=param:shape

Each case first checks the op against the pure-torch reference (torch.equal), then times it; at
N <= 2000 the reference is timed beside it, so each group shows the ratio.
"""

import pytest
import torch
from conftest import SHAPES, K, make_groups, pick

from mipp import reference


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl", ["op", "reference"])
def test_count_within(benchmark, shape, impl):
    x, y = make_groups(shape)
    eps = torch.ops.mipp.knn_distance([x, y], K)
    op = lambda: torch.ops.mipp.count_within([x], eps, True)
    ref = lambda: reference.count_within([x], eps, True)
    fn = pick(impl, shape, op, ref)
    assert torch.equal(op(), ref())
    benchmark(fn)
