"""Experiments that ship with mipp and run from the command line (``mipp prune``): not part of the library
API. lenet: LeNet-style networks on offline MNIST digits, pruned by MIPP and baselines at the same counts."""
