"""Planted layers whose answer is known, for tests and benchmarks of layer decisions.

A layer of D nodes built from ``n_latents`` informative latents: each latent is seen by ``copies`` noisy
copies (node = latent + copy_noise * N(0, 1)); ``n_mixtures`` nodes are exact sums of two copies of
different latents (exact affine combinations: removable without loss); the remaining nodes are unrelated
N(0, 1) noise. The target Y (N, q) is a nonlinear function of the latents, tanh(L A / sqrt(n_latents))
plus small noise, so every latent matters and nothing else does. Node order is shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PlantedLayer:
    X: torch.Tensor  # (N, D) float64
    Y: torch.Tensor  # (N, q) float64
    groups: list[list[int]]  # per latent: the nodes that are its noisy copies
    mixtures: list[int]  # exact sums of two copies
    unrelated: list[int]  # independent noise nodes

    def latent_r2(self, kept: list[int]) -> torch.Tensor:
        """(n_latents,) R^2 of each latent (its copies' mean) regressed, with an intercept, on the kept nodes:
        whether its information stays (through a copy, or an exact mixture with a kept partner copy). The SVD
        solver: kept nodes may be exactly collinear (a mixture beside both its copies)."""
        A = torch.cat([self.X[:, kept], torch.ones(len(self.X), 1, dtype=self.X.dtype)], 1)
        lat = torch.stack([self.X[:, g].mean(1) for g in self.groups], 1)
        resid = lat - A @ torch.linalg.lstsq(A, lat, driver="gelsd").solution
        return 1 - resid.pow(2).sum(0) / (lat - lat.mean(0)).pow(2).sum(0)

    def score(self, kept: list[int]) -> dict[str, float]:
        """Fraction of latent groups with a kept copy, fraction of unrelated nodes removed, mean and max kept
        copies per group, and the fraction of mixtures removed."""
        chosen = set(kept)
        per_group = [len(chosen & set(g)) for g in self.groups]
        return {
            "groups_covered": sum(c > 0 for c in per_group) / len(per_group),
            "unrelated_removed": 1 - len(chosen & set(self.unrelated)) / max(len(self.unrelated), 1),
            "copies_mean": sum(per_group) / len(per_group),
            "copies_max": max(per_group),
            "mixtures_removed": 1 - len(chosen & set(self.mixtures)) / max(len(self.mixtures), 1),
        }


def planted_layer(
    D: int,
    n: int,
    seed: int,
    *,
    copies: int = 3,
    latent_fraction: float = 0.25,
    mixture_fraction: float = 0.125,
    copy_noise: float = 0.1,
    q: int = 16,
) -> PlantedLayer:
    g = torch.Generator().manual_seed(seed)
    n_latents = max(1, int(D * latent_fraction / copies))
    n_mix = int(D * mixture_fraction)
    n_unrelated = D - n_latents * copies - n_mix
    if n_unrelated < 0:
        raise ValueError(f"D={D} is too small for {n_latents} latents x {copies} copies and {n_mix} mixtures")
    L = torch.randn(n, n_latents, generator=g, dtype=torch.float64)
    cols: list[torch.Tensor] = []
    groups: list[list[int]] = []
    for j in range(n_latents):
        groups.append(list(range(len(cols), len(cols) + copies)))
        cols += [L[:, j] + copy_noise * torch.randn(n, generator=g, dtype=torch.float64) for _ in range(copies)]
    mixtures = []
    for _ in range(n_mix):
        a, b = torch.randperm(n_latents, generator=g)[:2].tolist() if n_latents > 1 else (0, 0)
        ca = groups[a][int(torch.randint(copies, (1,), generator=g))]
        cb = groups[b][int(torch.randint(copies, (1,), generator=g))]
        mixtures.append(len(cols))
        cols.append(cols[ca] + cols[cb])
    unrelated = list(range(len(cols), len(cols) + n_unrelated))
    cols += [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(n_unrelated)]
    X = torch.stack(cols, dim=1)
    A = torch.randn(n_latents, q, generator=g, dtype=torch.float64)
    Y = torch.tanh(L @ A / n_latents**0.5) + 0.05 * torch.randn(n, q, generator=g, dtype=torch.float64)
    perm = torch.randperm(D, generator=g)
    where = torch.empty(D, dtype=torch.long)
    where[perm] = torch.arange(D)  # new position of old column c: where[c]
    remap = lambda idx: sorted(int(where[i]) for i in idx)
    return PlantedLayer(X[:, perm], Y, [remap(gr) for gr in groups], remap(mixtures), remap(unrelated))


def sparse_planted_layer(D: int, n: int, seed: int) -> PlantedLayer:
    """:func:`planted_layer` with most nodes unrelated (issue 20's layer): of every 256 nodes 24 latents x 3
    copies, 24 exact sums of two copies and 160 independent nodes."""
    return planted_layer(D, n, seed, latent_fraction=72 / 256, mixture_fraction=24 / 256)


NONLINEAR = ("square", "sin", "product", "xor")


def nonlinear_layer(kind: str, seed: int, n: int = 1000, distractors: int = 50):
    """A layer whose target depends on its relevant node(s) only nonlinearly (``kind`` in NONLINEAR: Y = X_0^2,
    sin(3 X_0), X_0 X_1, or XOR of the signs of X_0 and X_1; none correlates with Y), plus 5% noise: the
    relevant node(s) first, then a near duplicate of each (noise 0.01), then ``distractors`` independent
    nodes. Returns X (n, D), Y (n, 1), the duplicate sets and the distractors' indices."""
    g = torch.Generator().manual_seed(seed)
    m = 2 if kind in ("product", "xor") else 1
    rel = torch.randn(n, m, dtype=torch.float64, generator=g)
    dup = rel + 0.01 * torch.randn(n, m, dtype=torch.float64, generator=g)
    free = torch.randn(n, distractors, dtype=torch.float64, generator=g)
    x = rel[:, 0]
    y = {
        "square": lambda: x**2,
        "sin": lambda: torch.sin(3 * x),
        "product": lambda: rel[:, 0] * rel[:, 1],
        "xor": lambda: ((rel[:, 0] > 0) ^ (rel[:, 1] > 0)).double(),
    }[kind]()
    y = y + 0.05 * y.std() * torch.randn(n, dtype=torch.float64, generator=g)
    X = torch.cat([rel, dup, free], 1)
    return X, y[:, None], [[i, m + i] for i in range(m)], list(range(2 * m, 2 * m + distractors))
