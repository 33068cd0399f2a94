"""What happens to the consumers when nodes go: the mean fold, the least-squares re-fit, and masks.

Every selection (MIPP's or a baseline's) gets the same treatment:

* **mean fold** (default): a removed node's average contribution W[:, c] * mean(x_c) is added to the
  consumer's bias, so the consumer's mean pre-activation is unchanged (for a convolution, the mean of its
  receptive-field features gives the mean response over positions);
* **least-squares re-fit** (``refit=inputs``): for each consumer, in execution order, the weights on the kept
  inputs and the bias that best reproduce the *original* model's pre-activations, with the inputs taken from
  the pruned model (so upstream errors are compensated, as in He, Zhang & Sun 2017), solved from the normal
  equations with a small ridge (``ridge`` times the mean feature variance) for rank deficiency.

Both work on a physically pruned copy and on a ``torch.nn.utils.prune``-masked model alike.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mipp.pruning.capture import channel_columns, feature_rows, kernel_size, to_device
from mipp.pruning.structure import Structure, build_graph, eval_mode, run_model


def _n_in(module: nn.Module) -> int:
    return int(module.in_features if isinstance(module, nn.Linear) else module.in_channels)  # type: ignore[arg-type]


def _n_out(module: nn.Module) -> int:
    return int(module.out_features if isinstance(module, nn.Linear) else module.out_channels)  # type: ignore[arg-type]


def consumer_plan(structure: Structure, keep: dict[str, torch.Tensor], model: nn.Module):
    """{consumer name: (removed input channels, kept input channels, kept output rows or None)} for every
    consumer of a group with removed nodes (original indexing)."""
    from mipp.pruning.walk import Cuts

    modules = dict(model.named_modules())
    cuts = Cuts.of(structure, keep)
    plan = {}
    for name, cut in cuts.inputs.items():
        if not cut:
            continue
        m = modules[name]
        kept_in = torch.tensor([j for j in range(_n_in(m)) if j not in cut], dtype=torch.long)
        rows = cuts.outputs.get(name)
        kept_out = None if not rows else torch.tensor([j for j in range(_n_out(m)) if j not in rows], dtype=torch.long)
        plan[name] = (torch.tensor(sorted(cut), dtype=torch.long), kept_in, kept_out)
    return plan


def _columns(module: nn.Module, channels: torch.Tensor) -> torch.Tensor:
    """Input channels -> feature columns of ``module``."""
    return channel_columns(channels, kernel_size(module))


def _param(module: nn.Module, name: str):
    """The tensor to write: the original parameter under a torch.nn.utils.prune mask, else the parameter."""
    return getattr(module, name + "_orig", None) if hasattr(module, name + "_orig") else getattr(module, name)


def _ensure_bias(module: nn.Module) -> torch.Tensor:
    if _param(module, "bias") is None:
        w = _param(module, "weight")
        module.bias = nn.Parameter(
            torch.zeros(_n_out(module), dtype=w.dtype, device=w.device), requires_grad=w.requires_grad
        )
    return _param(module, "bias")


@torch.no_grad()
def fold_means(model: nn.Module, plan, means: dict[str, torch.Tensor]) -> None:
    """In place on the full-size (or masked) model: each consumer's bias absorbs the removed inputs' mean
    contribution (``means``: consumer name -> mean feature row, as captured)."""
    modules = dict(model.named_modules())
    for name, (cut, _, _) in plan.items():
        if name not in means:
            raise ValueError(f"no recorded mean input for {name!r}: fold needs the selection's means")
        m = modules[name]
        cols = _columns(m, cut)
        w = _param(m, "weight").detach().reshape(_n_out(m), -1)
        delta = w[:, cols].double() @ means[name].to(w.device)[cols]
        bias = _ensure_bias(m)
        bias.add_(delta.to(bias.dtype))


@torch.no_grad()
def refit(
    model: nn.Module, original: nn.Module, batches: list, plan, order: list[str], masked: bool, ridge: float = 1e-6
) -> None:
    """In place on ``model`` (pruned copy, or masked when ``masked``): least-squares re-fit of each planned
    consumer, in execution ``order``, from ``model``'s inputs to ``original``'s pre-activations."""
    mods, orig_mods = dict(model.named_modules()), dict(original.named_modules())
    device = next(model.parameters()).device
    for name in [n for n in order if n in plan]:
        _, kept_in, kept_out = plan[name]
        m, om = mods[name], orig_mods[name]
        cols = _columns(m, kept_in) if masked else None
        gram = cross = None
        seen = {}

        def grab(key):
            def hook(module, inputs, output):
                seen[key] = (inputs[0], output)

            return hook

        handles = [m.register_forward_hook(grab("new")), om.register_forward_hook(grab("orig"))]
        try:
            with eval_mode(model), eval_mode(original):
                for batch in batches:
                    batch = to_device(batch, device)
                    run_model(original, batch)
                    run_model(model, batch)
                    x, _ = feature_rows(m, seen["new"][0])
                    z = seen["orig"][1]
                    z = z.movedim(1, -1) if isinstance(om, nn.modules.conv._ConvNd) else z
                    z = z.reshape(-1, z.shape[-1])
                    if kept_out is not None:
                        z = z[:, kept_out.to(z.device)]
                    if cols is not None:
                        x = x[:, cols.to(x.device)]
                    a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64, device=x.device)], 1)
                    g, c = a.T @ a, a.T @ z.double()
                    gram = g if gram is None else gram + g
                    cross = c if cross is None else cross + c
        finally:
            for h in handles:
                h.remove()
        assert gram is not None and cross is not None  # materialise() gives at least one batch
        diag = gram.diagonal()[:-1]
        scale = float(diag.mean()) if len(diag) else 0.0
        lam = ridge * (scale if scale > 0 else 1.0)  # dead (all-zero) kept inputs: weight 0, not singular
        reg = torch.zeros_like(gram)
        reg.diagonal()[:-1] = lam
        sol = torch.linalg.solve(gram + reg, cross)  # (F + 1, q)
        weight, bias = sol[:-1].T, sol[-1]
        w_param, b_param = _param(m, "weight"), _ensure_bias(m)
        if masked:
            assert cols is not None
            rows = kept_out if kept_out is not None else torch.arange(w_param.shape[0])
            flat = w_param.detach().reshape(w_param.shape[0], -1).clone()
            sub = flat[rows.to(flat.device)]
            sub[:, cols.to(flat.device)] = weight.to(flat.dtype)
            flat[rows.to(flat.device)] = sub
            w_param.copy_(flat.reshape(w_param.shape))
            b_param[rows.to(b_param.device)] = bias.to(b_param.dtype)
        else:
            w_param.copy_(weight.to(w_param.dtype).reshape(w_param.shape))
            b_param.copy_(bias.to(b_param.dtype))


def mask_groups(model: nn.Module, example, removed: dict[str, list[int]]) -> None:
    """In place: ``torch.nn.utils.prune`` masks that make ``model`` compute what the physically pruned one
    does. For every module of each group (Torch-Pruning's dependencies): the parameters of a layer whose
    output channels go (weight rows, bias, batch / layer norm affine parameters, PReLU slopes) and the
    weight columns of a layer whose inputs go. Masking the consumers' columns makes the masked model exact
    whatever the activation (sigmoid(0) != 0); masking the producers keeps removed channels at 0 during
    fine-tuning."""
    dg = build_graph(model, example)
    modules = dict(model.named_modules())
    known = set(modules.values())
    masks: dict[tuple[int, str], tuple[nn.Module, torch.Tensor]] = {}

    def cut(module, pname, dim, idxs):
        key = (id(module), pname)
        if key not in masks:
            p = _param(module, pname)
            old = getattr(module, pname + "_mask", None)
            masks[key] = (module, old.clone() if old is not None else torch.ones_like(p))
        mask = masks[key][1]
        index = [slice(None)] * mask.dim()
        index[dim] = torch.tensor(sorted(idxs), dtype=torch.long, device=mask.device)
        mask[tuple(index)] = 0

    for name, idxs in removed.items():
        if not idxs:
            continue
        root = modules[name]
        group = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, idxs=list(idxs))
        for item in group:
            module, idx = item.dep.target.module, list(item.idxs)
            if not isinstance(module, nn.Module) or module not in known:
                continue
            if dg.is_in_channel_pruning_fn(item.dep.handler):
                # a depthwise convolution's input channels are its output rows, masked as such
                if isinstance(module, nn.Linear) or (
                    isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1
                ):
                    cut(module, "weight", 1, idx)
                continue
            for pname, p in list(module.named_parameters(recurse=False)):
                base = pname[:-5] if pname.endswith("_orig") else pname
                if p.dim() >= 1 and p.shape[0] > max(idx) and not (isinstance(module, nn.PReLU) and p.numel() == 1):
                    cut(module, base, 0, idx)
    for (_, pname), (module, mask) in masks.items():
        if hasattr(module, pname + "_mask"):
            torch_prune.remove(module, pname)
        torch_prune.custom_from_mask(module, pname, mask)
