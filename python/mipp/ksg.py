"""KSG mutual information (Kraskov, Stoegbauer, Grassberger 2004) and Frenzel-Pompe conditional MI.

Every estimator is composed of the ``torch.ops.mipp`` operators only, so the same code runs on the CPU
(extension or reference) and on CUDA (Triton), and traces under ``torch.compile``. All values are nats.

Shapes: each argument is ``(N,)``, ``(N, d)`` or, batched, ``(B, N, d)``. Batched arguments share one B;
an argument without a batch dimension is shared by the whole batch and its distances are computed once.
The result is a 0-d float64 tensor, or ``(B,)`` when any argument is batched (``reduction="none"``:
the per-sample local values, ``(N,)`` or ``(B, N)``, whose mean is the estimate).
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import NamedTuple

import torch

from mipp import discrete, reference
from mipp.ops import column_stats, overflow_message, trusted

_EULER_GAMMA = 0.57721566490153286061
# psi(n) = H_{n-1} - gamma for n < 20, summed once at import (a plain tuple keeps torch.compile happy)
_PSI_SMALL = tuple(math.fsum(1.0 / j for j in range(1, n)) - _EULER_GAMMA for n in range(20))


def _digamma(n: int) -> float:
    """psi(n) for a positive integer n in float64, in plain Python so that it traces under torch.compile:
    the table below 20, the asymptotic series above (truncation error < 1e-17 there)."""
    if n < 20:
        return _PSI_SMALL[n]
    inv2 = 1.0 / (n * n)
    return (
        math.log(n)
        - 0.5 / n
        - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 * (1 / 132)))))
    )


def _integer(name: str, value, low: int, error: type = TypeError) -> int:
    """An int (numpy and other integer-like numbers accepted; bool and floats refused with ``error``) >= low."""
    if isinstance(value, bool):
        raise error(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise error(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {name}={value}")
    return value


def as_tensor(name: str, value) -> torch.Tensor:
    """A tensor as it is, or an array-like (numpy array, nested lists) as a float64 CPU tensor."""
    if isinstance(value, torch.Tensor):
        return value
    if value is None or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{name} must be a tensor or an array-like of numbers, got {type(value).__name__}")
    try:
        import numpy as np

        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be read as an array of numbers: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise TypeError(f"{name} must be an array of samples, got the scalar {arr.item()!r}")
    return torch.as_tensor(arr.astype(np.float64))


# A column in which at least this fraction of the samples repeat another sample's value makes KSG's
# neighbourhoods decided by ties (the strict counts exclude whole blocks of equal values): warn.
TIE_FRACTION = 0.5


def _warn_ties(name: str, repeated: int, n: int) -> None:
    """Warn when a column is heavily discretised: `repeated` of its n samples repeat another's value."""
    frac = repeated / n if n else 0.0
    if frac >= TIE_FRACTION:
        warnings.warn(
            f"{name}: {frac:.0%} of the samples of a column repeat another sample's value, so ties decide "
            "the KSG neighbourhoods and the estimate is biased upward. Add jitter (jitter=1e-10, as "
            "scikit-learn does) or, for labels, pass discrete_x / discrete_y",
            UserWarning,
            stacklevel=5,
        )


def _jitter(g: torch.Tensor, jitter: float, generator: torch.Generator | None) -> torch.Tensor:
    """g + jitter * max(1, mean |column|) * N(0, 1), scikit-learn's rule without its scaling; a new tensor.
    The mean is computed without overflow, so data near the dtype's largest value can be jittered."""
    magnitude = g.abs()
    mean = magnitude.mean(dim=1, keepdim=True)
    # near the dtype's max the sum overflows to inf: there, the mean of |g| / max|g| times max|g| (no branch
    # on data, so torch.compile keeps one graph; finite means keep their bits)
    top = magnitude.amax(dim=1, keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    mean = torch.where(torch.isfinite(mean), mean, top * (magnitude / top).mean(dim=1, keepdim=True))
    scale = torch.clamp(mean, min=1.0)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(g.shape, generator=generator, device=gen_device, dtype=g.dtype).to(g.device)
    return g + jitter * scale * noise


def _as_groups(
    args: dict[str, torch.Tensor],
    k: int,
    normalize: bool,
    min_n: int | None = None,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
):
    """Validate the named arguments and return them as (B_g, N, d) tensors of one dtype and device, whether
    any of them carried a batch dimension, N and k (as an int). Inputs are never modified. In eager mode this
    checks the ops' whole contract under the user's names, so the estimators call the kernels through
    ``mipp.ops.trusted``; under torch.compile the data-dependent checks run inside the ops instead."""
    k = _integer("k", k, 1)
    out: dict[str, torch.Tensor] = {}
    wide: set[str] = set()  # arguments whose differences overflow their dtype
    repeated: dict[str, int] = {}  # the most samples of one column repeating another's value, per argument
    batched, batch, n_ref, device = False, None, None, None
    for name, t in args.items():
        t = as_tensor(name, t)
        if t.is_meta:
            raise ValueError(f"{name} is on the meta device, which holds no values; pass real data")
        if t.requires_grad and not torch.compiler.is_compiling():
            warnings.warn(
                f"{name} requires grad, but KSG estimates are counts of neighbours: the result "
                "carries no gradient (detach the input to silence this)",
                UserWarning,
                stacklevel=4,
            )
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"{name} must be float32 or float64, got {t.dtype}; convert it with "
                f"{name}.double() (integer data: add jitter explicitly if ties are not wanted)"
            )
        if t.dim() == 1:
            g = t.view(1, t.shape[0], 1)  # a view in any layout; views here cost 2-5 us each at N = 2,000 1+1
        elif t.dim() == 2:
            g = t.unsqueeze(0)
        elif t.dim() == 3:
            g = t
            batched = True
            if t.shape[0] != 1:
                if batch is not None and t.shape[0] != batch:
                    raise ValueError(
                        f"{name} has batch size {t.shape[0]} but an earlier argument has {batch};"
                        " batched arguments must share one batch size (or have size 1)"
                    )
                batch = int(t.shape[0])
        else:
            raise ValueError(f"{name} must have shape (N,), (N, d) or (B, N, d), got {tuple(t.shape)}")
        if g.shape[2] < 1:
            raise ValueError(f"{name} has no columns (shape {tuple(t.shape)})")
        if g.shape[0] < 1:
            raise ValueError(f"{name} has batch size 0 (shape {tuple(t.shape)}); pass at least one problem")
        if n_ref is None:
            n_ref, device = int(g.shape[1]), t.device
        elif g.shape[1] != n_ref:
            raise ValueError(
                f"{name} has {g.shape[1]} samples but {next(iter(args))} has {n_ref}; "
                "all arguments need the same number of samples N"
            )
        elif t.device != device:
            raise ValueError(f"{name} is on {t.device} but {next(iter(args))} is on {device}")
        # under torch.compile these checks run inside the ops instead (mipp.ops._check, at run time); ties are
        # counted in the same pass (a float32 column's equal values stay equal when promoted)
        if g.numel() and not torch.compiler.is_compiling():
            nonfinite, overflow, repeated[name] = column_stats(g, ties=not jitter)
            if nonfinite:
                raise ValueError(f"{name} contains NaN or inf; drop or impute those samples first")
            if overflow:
                wide.add(name)
        out[name] = g.detach() if g.requires_grad else g  # counts of neighbours carry no gradient (warned above)
    assert n_ref is not None, "the estimators pass at least one argument"
    if min_n is not None:
        if n_ref < min_n:
            raise ValueError(f"got N={n_ref} samples; at least {min_n} are needed")
    elif n_ref <= k and not torch.compiler.is_compiling():
        raise ValueError(f"k={k} needs more than k samples, got N={n_ref}; lower k or add samples")
    dtype = out[next(iter(out))].dtype
    for g in out.values():
        dtype = torch.promote_types(dtype, g.dtype)
    groups = [g if g.dtype == dtype else g.to(dtype) for g in out.values()]
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter < math.inf:
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
    if jitter:
        groups = [_jitter(g, float(jitter), generator) for g in groups]
    elif not torch.compiler.is_compiling():
        for name in out:
            _warn_ties(name, repeated.get(name, 0), n_ref)
    if normalize:
        groups = [_zscore(g) for g in groups]
    if not torch.compiler.is_compiling():
        for name, g in zip(out, groups):
            if jitter or normalize or g.dtype != out[name].dtype:  # the kernels see other values: check them
                nonfinite, overflow, _ = column_stats(g)
                overflow = overflow or nonfinite
            else:
                overflow = name in wide
            if overflow:
                raise ValueError(overflow_message(name, g.dtype))
    return groups, batched, n_ref, k


def _zscore(g: torch.Tensor) -> torch.Tensor:
    """Columns to mean 0 and sample std 1 (ddof=1), as Kraskov's MILCA does; constant columns -> 0.
    Samples are the second-to-last dim: (N, d) or (B, N, d). Each column is first divided by its largest
    magnitude, so sums and squares cannot overflow (float32 near 1e37, float64 near 1e155 would)."""
    # The moments are summed by cumsum, a sequential scan of each column in any layout: torch's mean / std
    # split one column across threads when there are few columns, so a batched call and the per-column calls
    # got z-scores differing in the last bits, which flip ties (rounded data) between otherwise equal results.
    n = g.shape[-2]
    scale = g.abs().amax(dim=-2, keepdim=True)  # a max is exact: the same bits in any layout
    g = g / torch.where(scale > 0, scale, torch.ones_like(scale))
    centred = g - g.cumsum(dim=-2)[..., -1:, :] / n
    var = (centred * centred).cumsum(dim=-2)[..., -1:, :] / max(n - 1, 1)
    std = var.sqrt()
    return centred / torch.where(std > 0, std, torch.ones_like(std))


def _finish(terms, const: float, n: int, batched: bool, reduction: str) -> torch.Tensor:
    """const - mean of the psi terms (or const - each local term), unbatched results as 0-d/(N,); ``terms`` as
    _psi_terms returns them (a list of Python floats: the same IEEE double operations, into a new tensor)."""
    if isinstance(terms, list):
        values = [const - t / n for t in terms]
        if batched:
            return torch.tensor(values, dtype=torch.float64)
        return torch.scalar_tensor(values[0], dtype=torch.float64)
    values = const - (terms if reduction == "none" else terms / n)
    return values if batched else values[0]


def _check_reduction(reduction: str, counts: bool = False) -> None:
    allowed = ("mean", "none", "counts") if counts else ("mean", "none")
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, allowed))}, got {reduction!r}")


def _signed_sum(values, terms: list[tuple[int, int]]):
    """sum_c sign_c * values[c] in row order, by additions and subtractions (the bits of sign * value without
    the multiplications), on tensors or Python floats alike."""
    total = None
    for value, (_, sign) in zip(values, terms):
        if total is None:
            total = value if sign > 0 else -value
        else:
            total = total + value if sign > 0 else total - value
    return total


def _psi_terms(counts: torch.Tensor, terms: list[tuple[int, int]], reduction: str):
    """Sum (reduction="mean") or per-sample values of sum_c sign_c * psi(counts[:, c] + offset_c), counts (B, C, M)
    with one (offset, sign = +1 or -1) per row c: one digamma_sum over the rows that share an offset. The sums of
    an eager CPU call come back as a list of B Python floats, combined by the same IEEE double additions as the
    tensor ops would make: each of those ops costs 5-15 us, and at N = 2,000 1+1 the few of them (with the
    estimate's final subtraction) took ~100 us of a 1 ms estimate. Elsewhere (CUDA, where a list would
    synchronise, and under torch.compile) a (B,) or (B, M) tensor."""
    reduce = reduction == "mean"
    offsets = {offset for offset, _ in terms}
    psi = {o: trusted("digamma_sum", counts, o, reduce) for o in sorted(offsets)}  # (B, C) or (B, C, M)
    if reduce and counts.device.type == "cpu" and not torch.compiler.is_compiling():
        rows = {o: p.tolist() for o, p in psi.items()}
        return [_signed_sum([rows[o][b][c] for c, (o, _) in enumerate(terms)], terms) for b in range(len(counts))]
    return _signed_sum([psi[o][:, c] for c, (o, _) in enumerate(terms)], terms)


def mi(
    x: torch.Tensor,
    y: torch.Tensor,
    k: int = 3,
    *,
    algorithm: int = 1,
    normalize: bool = False,
    reduction: str = "mean",
    discrete_x: bool = False,
    discrete_y: bool = False,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Estimate of I(x; y) in nats, max-norm.

    x, y: (N,), (N, d) or batched (B, N, d); tensors or array-likes. k: neighbours. Continuous x and y: KSG
    (algorithm 1 or 2 of Kraskov et al. 2004). ``discrete_y`` (or ``discrete_x``): that argument holds class
    labels ((N,) or (N, d) rows, shared by the batch) and the estimate is Ross's (2014, see mipp.discrete);
    both discrete: the plug-in estimate. ``normalize``: z-score continuous columns first. Returns a 0-d
    float64 tensor, (B,) when an argument is batched, or per-sample local values (``reduction="none"``,
    continuous KSG only). ``jitter``: add jitter * max(1, mean|column|) Gaussian noise to continuous
    columns (drawn from ``generator``) to break ties; heavily tied data without it get a warning. Raises
    ValueError / TypeError naming the argument on bad input.

    Continuous KSG only: ``reduction="counts"`` returns the neighbour counts (n_x, n_y) of every sample as
    int64 (N, 2) ((B, N, 2) batched; strict counts for algorithm 1, ``<=`` for 2), from which
    :func:`mi_from_counts` gives the estimate; ``rows=(q0, q1)`` computes only the samples q0 .. q1-1 (their
    neighbours are still sought among all N) and needs ``reduction="none"`` (their local values) or
    ``"counts"``: one estimate split by rows, as mipp.distributed.mi_rows does, equals the whole one."""
    if discrete_x or discrete_y:
        if rows is not None:
            raise ValueError("rows is for continuous KSG estimates; discrete variables take the whole sample")
        return _mi_discrete(x, y, k, algorithm, normalize, reduction, discrete_x, discrete_y, jitter, generator)
    return _mi({"x": x, "y": y}, k, algorithm, normalize, reduction, jitter, generator, rows)


def _discrete_checks(algorithm, reduction):
    if reduction != "mean":
        raise ValueError(f'reduction must be "mean" with discrete variables, got {reduction!r}')
    if isinstance(algorithm, bool) or algorithm != 1:
        raise ValueError(f"algorithm must be 1 with discrete variables (Ross's estimator), got {algorithm!r}")


def _labels(name: str, value, n: int, batched_ok: bool = False):
    """Codes (N,) of a discrete argument ((N,) or (N, d) rows); a batched (B, N, d) one gives (B, N) when
    allowed (the plug-in estimate)."""
    t = as_tensor(name, value)
    if t.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds no values; pass real data")
    if batched_ok and t.dim() == 3:  # (B, N, d): one set of labels per problem
        return torch.stack([discrete.label_codes(name, r, n)[0] for r in t])
    return discrete.label_codes(name, t, n)[0]


def _mi_discrete(
    x, y, k, algorithm, normalize, reduction, discrete_x, discrete_y, jitter=0.0, generator=None, names=("x", "y")
):
    """``names``: the user's names of x and y, so an error names the argument it is about even after the
    two are swapped (labels x against continuous y) or called X / Y (mi_per_feature)."""
    _discrete_checks(algorithm, reduction)
    if discrete_x and not discrete_y:  # I(x; y) is symmetric: continuous y against labels x
        return _mi_discrete(
            y, x, k, algorithm, normalize, reduction, False, True, jitter, generator, (names[1], names[0])
        )
    name_x, name_y = names
    y = as_tensor(name_y, y)
    if discrete_x:  # both discrete: plug-in
        x = as_tensor(name_x, x)
        n = x.shape[-2] if x.dim() == 3 else x.shape[0]
        cx = _labels(name_x, x, n, batched_ok=True)
        batched = cx.dim() == 2
        out = discrete.plug_in(cx if batched else cx[None], _labels(name_y, y, n))
        return out if batched else out[0]
    (gx,), batched, n, k = _as_groups(
        {name_x: x}, _integer("k", k, 1), normalize, min_n=2, jitter=jitter, generator=generator
    )
    out = discrete.ross(gx, _labels(name_y, y, n).to(gx.device), k)
    return out if batched else out[0]


def _query_rows(rows, n: int, reduction: str) -> tuple[int, int]:
    """The query rows [q0, q1) of an estimate: all N, or ``rows`` (which needs per-sample results)."""
    if rows is None:
        return 0, n
    if reduction == "mean":
        raise ValueError('rows needs reduction="none" or "counts": the mean over some rows is not the estimate')
    if not isinstance(rows, (tuple, list)) or len(rows) != 2:
        raise ValueError(f"rows must be a pair (q0, q1) of sample indices, got {rows!r}")
    q0, q1 = (_integer("rows", r, 0, ValueError) for r in rows)
    if not q0 <= q1 <= n:
        raise ValueError(f"rows=({q0}, {q1}) must satisfy 0 <= q0 <= q1 <= N={n}")
    return q0, q1


def _mi(
    args: dict[str, torch.Tensor],
    k: int,
    algorithm: int,
    normalize: bool,
    reduction: str,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
    rows: tuple[int, int] | None = None,
):
    _check_reduction(reduction, counts=True)
    if isinstance(algorithm, bool) or algorithm not in (1, 2):
        raise ValueError(f"algorithm must be 1 or 2, got {algorithm!r}")
    (gx, gy), batched, n, k = _as_groups(args, k, normalize, jitter=jitter, generator=generator)
    q0, q1 = _query_rows(rows, n, reduction)
    _, counts = trusted("ksg_counts", [gx, gy], k, [0b01, 0b10], algorithm, q0, q1, names=",".join(args))
    if reduction == "counts":
        counts = counts.transpose(1, 2)  # (B, M, 2): n_x, n_y per sample
        return counts if batched else counts[0]
    return _mi_terms(counts, k, n, algorithm, batched, reduction)


def _mi_terms(counts: torch.Tensor, k: int, n: int, algorithm: int, batched: bool, reduction: str) -> torch.Tensor:
    """KSG-1 or KSG-2 from the (B, 2, M) neighbour counts (n_x, n_y) of N samples."""
    offset = 1 if algorithm == 1 else 0
    terms = _psi_terms(counts, [(offset, 1), (offset, 1)], reduction)
    const = _digamma(k) + _digamma(n) if algorithm == 1 else _digamma(k) - 1.0 / k + _digamma(n)
    return _finish(terms, const, n, batched, reduction)


def mi_from_counts(counts: torch.Tensor, k: int, *, algorithm: int = 1, reduction: str = "mean") -> torch.Tensor:
    """The KSG estimate (or, ``reduction="none"``, the local values) from the neighbour counts of all N
    samples that ``mi(..., reduction="counts")`` returns ((N, 2) or batched (B, N, 2)): bit for bit the
    estimate of :func:`mi` on the same data, k and algorithm."""
    _check_reduction(reduction)
    batched = counts.dim() == 3
    c = counts if batched else counts[None]
    return _mi_terms(c.transpose(1, 2), _integer("k", k, 1), int(c.shape[1]), algorithm, batched, reduction)


def cmi(
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    k: int = 3,
    *,
    normalize: bool = False,
    reduction: str = "mean",
    discrete_y: bool = False,
    discrete_z: bool = False,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Estimate of I(x; y | z) in nats, max-norm.

    Continuous x, y, z: Frenzel-Pompe. ``discrete_z``: z holds labels (strata, shared by the batch): the
    Frenzel-Pompe estimate within each stratum weighted by its size (strata with at most k samples are left
    out, with a warning). ``discrete_y`` (with ``discrete_z``): Ross's estimator within each stratum. Shapes,
    ``normalize``, ``jitter`` and errors as in :func:`mi`."""
    if discrete_y or discrete_z:
        return _cmi_discrete(x, y, z, k, normalize, reduction, discrete_y, discrete_z, jitter, generator)
    _check_reduction(reduction)
    args = {"x": x, "y": y, "z": z}
    (gx, gy, gz), batched, n, k = _as_groups(args, k, normalize, jitter=jitter, generator=generator)
    _, counts = trusted("ksg_counts", [gx, gy, gz], k, _CMI_MARGINALS, 1, 0, n, names=",".join(args))
    return _finish(_psi_terms(counts, _CMI_TERMS, reduction), _digamma(k), n, batched, reduction)


# Frenzel-Pompe: the marginals (x, z), (y, z), z of the groups (x, y, z), and their (offset, sign) in the sum
_CMI_MARGINALS = [0b101, 0b110, 0b100]
_CMI_TERMS = [(1, 1), (1, 1), (1, -1)]


def _cmi_discrete(x, y, z, k, normalize, reduction, discrete_y, discrete_z, jitter=0.0, generator=None):
    _discrete_checks(1, reduction)
    if not discrete_z:
        raise ValueError(
            "a discrete y given a continuous z needs a mixed-data estimator (Mesner & Shalizi 2021), "
            "which mipp does not offer; pass discrete_z=True for a discrete z"
        )
    k = _integer("k", k, 1)
    z = as_tensor("z", z)
    if discrete_y:
        (gx,), batched, n, _ = _as_groups({"x": x}, k, normalize, min_n=2, jitter=jitter, generator=generator)
        y = as_tensor("y", y)
        out = discrete.ross(gx, _labels("y", y, n).to(gx.device), k, strata=_labels("z", z, n).to(gx.device))
        return out if batched else out[0]
    (gx, gy), batched, n, k = _as_groups({"x": x, "y": y}, k, normalize, jitter=jitter, generator=generator)
    (gx, gy), strata = discrete.drop_small_strata([gx, gy], _labels("z", z, n).to(gx.device), k)
    if gx.shape[1] <= k:
        raise ValueError(f"no stratum of z has more than k={k} samples: no conditional estimate")
    gz = reference.label_group(strata, [gx, gy])  # finite, its differences too, by construction
    _, counts = trusted("ksg_counts", [gx, gy, gz], k, _CMI_MARGINALS, 1, 0, int(gx.shape[1]))
    return _finish(_psi_terms(counts, _CMI_TERMS, "mean"), _digamma(k), int(gx.shape[1]), batched, "mean")


def mi_per_feature(
    X: torch.Tensor,
    Y: torch.Tensor,
    k: int = 3,
    *,
    algorithm: int = 1,
    normalize: bool = False,
    discrete_y: bool = False,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """I(X[:, i]; Y) for every column i of X (N, D), as one batched call: Y's distances (or, with
    ``discrete_y``, its label group) are computed once for all D problems. Returns (D,) float64."""
    X = as_tensor("X", X)
    if X.dim() != 2:
        raise ValueError(f"X must be a 2-D tensor (N, D), got shape {tuple(X.shape)}")
    if X.shape[1] == 0:
        raise ValueError(f"X has no columns (shape {tuple(X.shape)}); pass at least one feature")
    if discrete_y:
        X3 = X.T.unsqueeze(-1)
        return _mi_discrete(X3, Y, k, algorithm, normalize, "mean", False, True, jitter, generator, ("X", "Y"))
    return _mi({"X": X.T.unsqueeze(-1), "Y": Y}, k, algorithm, normalize, "mean", jitter, generator)


def local_permutations(
    z: torch.Tensor,
    n_permutations: int,
    neighbors: int = 5,
    generator: torch.Generator | None = None,
    *,
    normalize: bool = False,
) -> torch.Tensor:
    """(n_permutations, N) sample indices that move every sample only to one of its ``neighbors`` nearest
    neighbours in z (max-norm; on z-scored columns when ``normalize``): the surrogates of a conditional
    test of I(x; y | z) = 0.

    A global shuffle of x breaks the dependence of x on z as well as the one on y given z, so its
    surrogates have the wrong null distribution (a duplicate of a column of z scores 0.000 while globally
    shuffled surrogates average -0.023: it would be found significant). This is Runge's (2018)
    nearest-neighbour permutation: samples are visited in random order and each takes, among its
    neighbours, a random one not yet taken, or any of them when all are taken (a near permutation: about
    one sample in ten is reused at neighbors=5). Batched over the surrogates: the loop runs over the N
    samples, not over N * n_permutations. z: (N,) or (N, d); drawn on the CPU (a CPU ``generator``)."""
    neighbors = _integer("neighbors", neighbors, 1, ValueError)
    n_permutations = _integer("n_permutations", n_permutations, 1, ValueError)
    z = as_tensor("z", z)
    if z.dim() not in (1, 2):
        raise ValueError(f"z must have shape (N,) or (N, d) for local permutations, got {tuple(z.shape)}")
    if z.device.type == "meta" or not z.is_floating_point():
        raise TypeError(f"z must be a real floating tensor with values, got {z.dtype} on {z.device}")
    if z.shape[0] < 2:
        raise ValueError(f"z has N={z.shape[0]} samples; a permutation among neighbours needs at least 2")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains NaN or inf; drop or impute those samples first")
    g = z.reshape(1, z.shape[0], -1)
    g = _zscore(g) if normalize else g
    n = g.shape[1]
    neighbors = min(neighbors, n - 1)
    nearest = reference.knn_indices([g], neighbors)[0].cpu()  # on z's device, one tile of rows at a time
    order = torch.rand(n_permutations, n, generator=generator).argsort(dim=1)  # visiting order
    priority = torch.rand(n_permutations, n, neighbors, generator=generator)  # random choice
    taken = torch.zeros(n_permutations, n, dtype=torch.bool)
    perm = torch.empty(n_permutations, n, dtype=torch.long)
    rows = torch.arange(n_permutations)
    for t in range(n):
        i = order[:, t]
        cand = nearest[i]  # (P, neighbors)
        score = priority[rows, i] + (~taken.gather(1, cand)).to(priority.dtype)  # free ones first
        choice = cand.gather(1, score.argmax(dim=1, keepdim=True))[:, 0]
        perm[rows, i] = choice
        taken[rows, choice] = True
    return perm.to(z.device)


class PermutationResult(NamedTuple):
    estimate: torch.Tensor  # the statistic on the data: 0-d, or (B,) for batched x
    p_value: torch.Tensor  # (1 + #{null >= estimate}) / (n_permutations + 1), float64
    null: torch.Tensor  # the statistic on the surrogates: (n_permutations,) or (B, n_permutations)


def permutation_test(
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor | None = None,
    k: int = 3,
    *,
    n_permutations: int = 100,
    generator: torch.Generator | None = None,
    algorithm: int = 1,
    normalize: bool = False,
    local_neighbors: int | None = None,
    discrete_y: bool = False,
    discrete_z: bool = False,
) -> PermutationResult:
    """Permutation test of I(x; y) (or I(x; y | z)) > 0.

    The surrogates shuffle the samples of x (each problem of a batched x with its own permutations) and
    are evaluated, together with the data, as one batched call in which y and z, when not batched, are
    shared: their distances are computed once for all surrogates. Reproducible with ``generator``.
    ``local_neighbors`` (conditional test only, unbatched z): shuffle x only among that many nearest
    neighbours in z (see local_permutations), the valid null for I(x; y | z) = 0; by default x is shuffled
    globally, which tests I(x; (y, z)) = 0 against a null that also breaks x's dependence on z.
    ``discrete_y`` / ``discrete_z``: as in :func:`mi` / :func:`cmi`; with a discrete z, x is shuffled
    within each stratum of z (the valid conditional null; ``local_neighbors`` is not used then)."""
    return _permutation_test(
        x,
        y,
        z,
        k,
        n_permutations=n_permutations,
        generator=generator,
        algorithm=algorithm,
        normalize=normalize,
        local_neighbors=local_neighbors,
        discrete_y=discrete_y,
        discrete_z=discrete_z,
    )


def batch_slice(t, lo: int, hi: int, total: int):
    """Problems [lo, hi) of a batched argument: a per-problem (total, N, d) tensor is sliced, a shared one
    (no batch dim, or a batch of 1 when total > 1) and None are passed as they are."""
    if t is not None and t.dim() == 3 and t.shape[0] == total and total > 1:
        return t[lo:hi]
    return t


def whole_batch(evaluate, total: int) -> torch.Tensor:
    """The batch map of one process: evaluate(lo, hi) on the whole batch (mipp.distributed shards it)."""
    return evaluate(0, total)


def _permutation_test(
    x,
    y,
    z=None,
    k=3,
    *,
    n_permutations=100,
    generator=None,
    algorithm=1,
    normalize=False,
    local_neighbors=None,
    discrete_y=False,
    discrete_z=False,
    batch_map=whole_batch,
):
    n_permutations = _integer("n_permutations", n_permutations, 1, ValueError)
    x, y = as_tensor("x", x), as_tensor("y", y)
    z = None if z is None else as_tensor("z", z)
    if local_neighbors is not None:
        local_neighbors = _integer("local_neighbors", local_neighbors, 1, ValueError)
    if x.dim() not in (1, 2, 3):
        raise ValueError(f"x must have shape (N,), (N, d) or (B, N, d), got {tuple(x.shape)}")
    xb = x if x.dim() == 3 else (x[None, :, None] if x.dim() == 1 else x[None])
    batched = x.dim() == 3
    b, n, d = xb.shape
    if discrete_z:
        if z is None:
            raise ValueError("discrete_z needs z")
        strata = _labels("z", z, n)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        keys = strata.to(gen_device).to(torch.float64) + 0.5 * torch.rand(
            b * n_permutations, n, generator=generator, device=gen_device, dtype=torch.float64
        )
        shuffled = keys.argsort(dim=1)  # stratum by stratum, random within each
        base = strata.to(gen_device).argsort(stable=True)
        perm = torch.empty_like(shuffled)
        perm[:, base] = shuffled
        perm = perm.reshape(b, n_permutations, n).to(xb.device)
    elif local_neighbors is not None:
        if z is None or (z.dim() == 3 and z.shape[0] != 1):
            raise ValueError("local_neighbors needs an unbatched z: the neighbours are taken in z")
        zs = z[0] if z.dim() == 3 else z
        perm = local_permutations(zs, b * n_permutations, local_neighbors, generator, normalize=normalize)
        perm = perm.reshape(b, n_permutations, n).to(xb.device)
    else:
        gen_device = generator.device if generator is not None else xb.device
        perm = torch.rand(b, n_permutations, n, generator=generator, device=gen_device).argsort(dim=-1)
        perm = perm.to(xb.device)
    # (b, P + 1, n, d): surrogate 0 is the data itself, so estimate and null come from one call.
    surrogates = torch.gather(
        xb[:, None].expand(b, n_permutations, n, d), 2, perm[..., None].expand(b, n_permutations, n, d)
    )
    xs = torch.cat([xb[:, None], surrogates], dim=1).reshape(b * (n_permutations + 1), n, d)

    def per_problem(t: torch.Tensor | None) -> torch.Tensor | None:
        # a batched y/z pairs with its own x: repeat it for that x's surrogates; unbatched stays shared
        if t is None or t.dim() != 3 or t.shape[0] == 1:
            return t
        return t.repeat_interleave(n_permutations + 1, dim=0)

    if z is not None and algorithm != 1:
        raise ValueError("the conditional test uses the Frenzel-Pompe estimator: algorithm must be 1")
    yy = y if discrete_y else per_problem(y)
    zz = z if (z is None or discrete_z) else per_problem(z)

    def evaluate(lo: int, hi: int) -> torch.Tensor:
        # a slice of the (b * (P + 1)) problems; a per-problem y / z is sliced with them, a shared one is not
        def part(t):
            return batch_slice(t, lo, hi, xs.shape[0])

        if z is None:
            return mi(xs[lo:hi], part(yy), k, algorithm=algorithm, normalize=normalize, discrete_y=discrete_y)
        return cmi(xs[lo:hi], part(yy), part(zz), k, normalize=normalize, discrete_y=discrete_y, discrete_z=discrete_z)

    stats = batch_map(evaluate, xs.shape[0]).reshape(b, n_permutations + 1)
    estimate, null = stats[:, 0], stats[:, 1:]
    p_value = (1.0 + (null >= estimate[:, None]).sum(dim=1, dtype=torch.float64)) / (n_permutations + 1)
    if not batched:
        estimate, p_value, null = estimate[0], p_value[0], null[0]
    return PermutationResult(estimate, p_value, null)
