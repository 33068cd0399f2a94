"""mipp: exact k-nearest-neighbour (KSG) mutual information for PyTorch, and the MIPP pruner.

``import mipp`` touches no device and compiles nothing; kernels load on first use.
"""

import os
import sys

if "torch" not in sys.modules:
    # torch's OpenMP team (which the C++ kernels share) spins while it waits; beside another CPU-bound job
    # that made a selection 1.7x slower than with sleeping waiters, which cost 1.13x on an idle machine
    # (benchmarks/bench_threads.py). A default only: a policy the user set wins, and once torch (libgomp)
    # is loaded it is fixed, so mipp.pruning warns on a loaded machine instead (mipp._threads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import torch  # noqa: F401
except ImportError as exc:  # torch is required but not a declared dependency (see pyproject.toml)
    raise ImportError(
        "mipp needs PyTorch, which it does not install for you (an unpinned torch would pull a "
        "multi-GB CUDA build): pip install torch (the CPU or CUDA build for your machine, e.g. "
        "pip install torch==2.13.0)"
    ) from exc

from mipp._info import build_info
from mipp.ksg import PermutationResult, cmi, local_permutations, mi, mi_per_feature, permutation_test

__all__ = ["PermutationResult", "build_info", "cmi", "local_permutations", "mi", "mi_per_feature", "permutation_test"]
__version__ = "0.1.0"
