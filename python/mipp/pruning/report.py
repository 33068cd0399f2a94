"""Per-layer report of a selection (nodes kept, MI kept vs before, time) and model cost (params, MACs)."""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through the Linear and Conv2d layers (the dominant cost)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features * (output.numel() // output.shape[-1])
        else:
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def format_report(selection, model: nn.Module | None = None, example: torch.Tensor | None = None) -> str:
    lines = [f"{'layer':<24}{'kept':>12}{'MI before':>11}{'MI kept':>9}{'Y dims':>7}{'tests':>7}"
             f"{'surr.':>8}{'seconds':>9}"]
    for name, lp in selection.plan.layers.items():
        if not lp.prunable:
            lines.append(f"{name:<24}{lp.n_nodes:>5} (kept: {lp.reason})")
            continue
        kept = len(selection.keep[name])
        res = selection.layers.get(name)
        if res is None:
            lines.append(f"{name:<24}{kept:>5}/{lp.n_nodes:<6}")
            continue
        secs = sum(res.seconds.values())
        lines.append(f"{name:<24}{kept:>5}/{lp.n_nodes:<6}{res.mi_before:>11.3f}{res.mi_kept:>9.3f}"
                     f"{res.y_dims:>7}{res.n_tests:>7}{res.n_surrogates:>8}{secs:>9.1f}")
    if selection.layers:
        lines.append(f"activation capture: {selection.seconds_capture:.1f} s")
    if model is not None and example is not None:
        small = selection.apply(model, fold=selection.means is not None)
        p0, p1 = count_params(model), count_params(small)
        m0, m1 = count_macs(model, example), count_macs(small, example)
        lines.append(f"params {p0:,} -> {p1:,} ({p1 / p0:.1%});  MACs {m0:,} -> {m1:,} ({m1 / m0:.1%})")
    return "\n".join(lines)


def plot_selection(selection, path: str, model: nn.Module | None = None,
                   example: torch.Tensor | None = None) -> str:
    """PNG: nodes before/after per prunable layer, and MI before vs kept (plus params/MACs in the title)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = selection.plan.prunable
    before = [selection.plan.layers[n].n_nodes for n in names]
    after = [len(selection.keep[n]) for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    pos = range(len(names))
    axes[0].bar(pos, before, color="#cccccc", label="before")
    axes[0].bar(pos, after, color="#2b6cb0", label="kept")
    axes[0].set_xticks(list(pos), names, rotation=30, ha="right")
    axes[0].set_ylabel("nodes")
    axes[0].legend()
    if selection.layers:
        mi0 = [selection.layers[n].mi_before for n in names]
        mi1 = [selection.layers[n].mi_kept for n in names]
        w = 0.4
        axes[1].bar([p - w / 2 for p in pos], mi0, w, color="#cccccc", label="I(X_all; Y)")
        axes[1].bar([p + w / 2 for p in pos], mi1, w, color="#2b6cb0", label="I(X_kept; Y)")
        axes[1].set_xticks(list(pos), names, rotation=30, ha="right")
        axes[1].set_ylabel("KSG MI (nats)")
        axes[1].legend()
    title = "MIPP selection"
    if model is not None and example is not None:
        small = selection.apply(model, fold=selection.means is not None)
        title += (f": params {count_params(small) / count_params(model):.1%}, "
                  f"MACs {count_macs(small, example) / count_macs(model, example):.1%} of the original")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
