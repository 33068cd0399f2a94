"""Per-group report of a selection (nodes kept, reconstruction error, information removed, time), model cost
as Torch-Pruning counts it (MACs and parameters), and a plot of the decisions."""

from __future__ import annotations

import torch
from torch import nn

from mipp.pruning.structure import eval_mode, load_torch_pruning, tp_example


def count_macs_params(model: nn.Module, example) -> tuple[int, int]:
    """(MACs, parameters) of a forward pass on the first sample of ``example`` as Torch-Pruning's counter
    reports them."""
    from mipp.pruning.capture import slice_batch

    with eval_mode(model), torch.no_grad():
        macs, params = load_torch_pruning().utils.count_ops_and_params(
            model, tp_example(model, slice_batch(example, 1))
        )
    return int(macs), int(params)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def format_report(selection, model: nn.Module | None = None) -> str:
    lines = [f"{'group':<26}{'kept':>12}{'recon err':>11}{'info out':>10}{'tests':>7}{'exact':>7}{'seconds':>9}"]
    for name, group in selection.structure.groups.items():
        if not group.prunable:
            lines.append(f"{name:<26}{group.n_nodes:>5} (kept: {group.reason})")
            continue
        if name not in selection.keep:
            continue
        kept = len(selection.keep[name])
        res = selection.layers.get(name)
        if res is None:
            lines.append(f"{name:<26}{kept:>5}/{group.n_nodes:<6}")
            continue
        exact = sum(r.rule in ("constant", "affine", "unread") for r in res.records)
        lines.append(
            f"{name:<26}{kept:>5}/{group.n_nodes:<6}{res.recon_error:>11.2e}{res.info_removed:>10.2f}"
            f"{res.n_tests:>7}{exact:>7}{res.seconds.get('total', 0.0):>9.2f}"
        )
    if selection.seconds:
        lines.append("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in selection.seconds.items()))
    if model is not None:
        small = selection.apply(model, fold=selection.means is not None)
        m0, p0 = count_macs_params(model, selection.example)
        m1, p1 = count_macs_params(small, selection.example)
        lines.append(
            f"node sparsity {selection.sparsity:.1%}; params {p0:,} -> {p1:,} ({p1 / p0:.1%}); "
            f"MACs {m0:,} -> {m1:,} ({m1 / m0:.1%})"
        )
    return "\n".join(lines)


def plot_selection(selection, path: str, model: nn.Module | None = None) -> str:
    """PNG: nodes before / kept per group, and every tested node's closed-form Delta against its KSG upper
    bound, coloured by the decision, with the tolerance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(selection.keep)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    pos = range(len(names))
    axes[0].bar(pos, [selection.structure.groups[n].n_nodes for n in names], color="#cccccc", label="before")
    axes[0].bar(pos, [len(selection.keep[n]) for n in names], color="#2b6cb0", label="kept")
    axes[0].set_xticks(list(pos), names, rotation=30, ha="right")
    axes[0].set_ylabel("nodes")
    axes[0].legend()
    tol = selection.settings.get("tolerance")
    for removed, colour, label in ((True, "#c53030", "removed"), (False, "#2b6cb0", "kept")):
        recs = [
            r
            for n in names
            if n in selection.layers
            for r in selection.layers[n].records
            if r.rule == "test" and r.removed == removed
        ]
        axes[1].scatter(
            [max(r.score, 1e-6) for r in recs],
            [max(r.statistic, 1e-6) for r in recs],
            s=8,
            color=colour,
            label=f"{label} ({len(recs)})",
            alpha=0.7,
        )
    if tol is not None:
        axes[1].axhline(tol, color="k", lw=0.8, ls="--", label=f"tolerance {tol} nats")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("closed-form Delta (Gaussian channel), nats")
    axes[1].set_ylabel("KSG upper bound of Delta, nats")
    axes[1].legend(fontsize=8)
    title = f"MIPP selection: {selection.sparsity:.0%} of the nodes removed"
    if model is not None:
        small = selection.apply(model, fold=selection.means is not None)
        m0, p0 = count_macs_params(model, selection.example)
        m1, p1 = count_macs_params(small, selection.example)
        title += f"; params {p1 / p0:.1%}, MACs {m1 / m0:.1%} of the original"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
