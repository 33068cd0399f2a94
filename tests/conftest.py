"""Shared test set-up. Without a GPU the Triton kernels run under the interpreter on CPU tensors;
TRITON_INTERPRET must be set before triton is first imported, hence here, at collection time."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
