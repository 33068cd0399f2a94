"""Triton kernels of the mipp ops, one module per op, each a private ``_<op>_kernel`` and a public launcher:

- ``mipp_kernels.knn_distance.knn_distance(groups, k, q0, q1)``: (B, M) k-th neighbour distance (k <= K_CAP = 64)
- ``mipp_kernels.count_within.count_within(groups, radius, strict, q0, q1)``: (B, M) int64 counts within a radius
- ``mipp_kernels.marginal_radius.marginal_radius(groups, radius, q0, q1)``: (B, M, G) per-group radii of the
  neighbourhoods
- ``mipp_kernels._tiles``: the shared max-norm distance tile, the grid and the launch arguments

The launchers compute the query rows [q0, q1) against all N samples and trust their inputs: ``mipp.ops``
checks the ops' contract once (and normalises the query rows) before it calls them.

Semantics are those of ``mipp.reference`` (the kernels equal it bit for bit); see each module's
docstring for the math, the inputs and the tie rules. Importing this package imports neither triton nor
torch's CUDA runtime and queries no device: the submodules load on first use (``mipp.ops`` imports them
lazily). This package never imports ``mipp``.
"""
