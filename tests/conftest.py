"""Shared test set-up. Without a GPU the Triton kernels run under the interpreter on CPU tensors;
TRITON_INTERPRET must be set before triton is first imported, hence here, at collection time."""

import os

# what `import mipp` sets when it comes first: sleeping OpenMP waiters, so that the suite's timing does not
# collapse on a loaded machine and the pruner's load warning (mipp._threads) does not fire during tests
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
