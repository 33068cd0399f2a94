"""mipp: exact k-nearest-neighbour (KSG) mutual information for PyTorch, and the MIPP pruner.

``import mipp`` touches no device and compiles nothing; kernels load on first use.
"""
from mipp.ksg import PermutationResult, cmi, local_permutations, mi, mi_per_feature, permutation_test
from mipp._info import build_info

__all__ = ["mi", "cmi", "mi_per_feature", "permutation_test", "PermutationResult", "local_permutations", "build_info"]
__version__ = "0.1.0"
