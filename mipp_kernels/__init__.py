"""Triton kernels of the mipp ops, one module per op, each a private ``_<op>_kernel`` and a public launcher:

- ``mipp_kernels.knn.knn_distance(groups, k)``: (B, N) k-th neighbour distance (k <= knn.K_CAP = 64)
- ``mipp_kernels.count.count_within(groups, radius, strict)``: (B, N) int64 counts within a radius
- ``mipp_kernels.radius.marginal_radius(groups, radius)``: (B, N, G) per-group radii of the neighbourhoods
- ``mipp_kernels.pairwise``: the shared max-norm distance tile and the launchers' validation

Semantics are those of ``mipp.reference`` (the kernels equal it bit for bit); see each module's
docstring for the math, the inputs and the tie rules. Importing this package imports neither triton nor
torch's CUDA runtime and queries no device: the submodules load on first use (``mipp.ops`` imports them
lazily). This package never imports ``mipp``.
"""
