"""Turn a selection (kept node indices per layer) into a smaller model, or into torch.nn.utils.prune masks.

Both act on the same plan (graph.ModelPlan): the producer loses output rows (weight and bias), its batch
norms lose the same channels (affine parameters and running statistics), and every consumer loses the
input columns that read them; after a Flatten, channel c is the block of ``expansion`` consecutive
features c*expansion ... (c+1)*expansion - 1.

Removing a node also removes its average contribution to each consumer, W[:, c] * mean(a_c): every
pre-activation downstream shifts, and the batch norms' running statistics no longer fit. ``fold_means``
keeps that average: it adds the consumer's response to the removed nodes' sample mean input to the
consumer's bias (the mean response over output positions for a convolution, whose bias is per channel),
so the pruned layer outputs the same mean as before in expectation. It acts on the model before slicing
and applies to every selection alike (MIPP or a baseline), given the means recorded on the same model.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from mipp.pruning.graph import ModelPlan


def expand_index(idx: torch.Tensor, expansion: int) -> torch.Tensor:
    """Channel indices -> the consumer's input feature indices (channel-major Flatten order)."""
    if expansion == 1:
        return idx
    return (idx[:, None] * expansion + torch.arange(expansion)).reshape(-1)


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.clone(), requires_grad=old.requires_grad))
    else:
        setattr(module, name, value.clone())


def _slice_out(module: nn.Module, idx: torch.Tensor) -> None:
    _replace(module, "weight", module.weight.detach()[idx])
    if module.bias is not None:
        _replace(module, "bias", module.bias.detach()[idx])
    if isinstance(module, nn.Conv2d):
        module.out_channels = len(idx)
    else:
        module.out_features = len(idx)


def _slice_in(module: nn.Module, idx: torch.Tensor) -> None:
    _replace(module, "weight", module.weight.detach()[:, idx])
    if isinstance(module, nn.Conv2d):
        module.in_channels = len(idx)
    else:
        module.in_features = len(idx)


def _slice_norm(module: nn.Module, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        if getattr(module, name, None) is not None:
            _replace(module, name, getattr(module, name).detach()[idx])
    module.num_features = len(idx)


def check_keep(plan: ModelPlan, keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validated copy of ``keep``: prunable layers only, sorted unique in-range indices, at least one."""
    out = {}
    for name, idx in sorted(keep.items(), key=lambda item: list(plan.layers).index(item[0])
                            if item[0] in plan.layers else -1):
        if name not in plan.layers or not plan.layers[name].prunable:
            reason = plan.layers[name].reason if name in plan.layers else "not a Linear/Conv2d of the model"
            raise ValueError(f"layer {name!r} cannot be pruned: {reason}")
        idx = torch.as_tensor(idx, dtype=torch.long).unique(sorted=True)
        n = plan.layers[name].n_nodes
        if len(idx) == 0 or int(idx[0]) < 0 or int(idx[-1]) >= n:
            raise ValueError(f"keep[{name!r}] must hold 1..{n} indices in [0, {n}), got {idx.tolist()}")
        out[name] = idx
    return out


def _removed_mask(n: int, idx: torch.Tensor, expansion: int) -> torch.Tensor:
    """Boolean mask of the consumer's input features that belong to removed nodes."""
    removed = torch.ones(n, dtype=torch.bool)
    removed[idx] = False
    return removed.repeat_interleave(expansion)


def fold_means(model: nn.Module, plan: ModelPlan, keep: dict[str, torch.Tensor],
               means: dict[str, torch.Tensor]) -> nn.Module:
    """In place, on the full-size ``model``: add to each consumer's bias its response to the sample mean of
    the inputs that ``keep`` removes (``means``: consumer input fx node -> mean of one sample's input, as
    recorded by :func:`graph.record`). A consumer without a bias gets one. Returns ``model``."""
    keep = check_keep(plan, keep)
    with torch.no_grad():
        for name, idx in keep.items():
            lp = plan.layers[name]
            for consumer in lp.consumers:
                if consumer.source not in means:
                    raise ValueError(f"no recorded mean for {consumer.source!r} (the input of "
                                     f"{consumer.name!r}); record the means on this model first")
                module = model.get_submodule(consumer.name)
                mean = means[consumer.source].to(module.weight.device, module.weight.dtype)
                removed = _removed_mask(lp.n_nodes, idx, consumer.expansion).to(mean.device)
                shape = (-1,) + (1,) * (mean.dim() - 1)
                mean = mean * removed.view(shape)                    # kept inputs contribute nothing
                if isinstance(module, nn.Conv2d):
                    out = F.conv2d(mean[None], module.weight, None, module.stride, module.padding,
                                   module.dilation, module.groups)
                    delta = out[0].mean(dim=(1, 2))
                else:
                    delta = F.linear(mean, module.weight)
                if module.bias is None:
                    module.bias = nn.Parameter(delta.clone(), requires_grad=module.weight.requires_grad)
                else:
                    module.bias.add_(delta)
    return model


def apply_keep(model: nn.Module, plan: ModelPlan, keep: dict[str, torch.Tensor],
               means: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A physically smaller deep copy of ``model`` that keeps only ``keep[layer]`` nodes of each layer; with
    ``means``, the removed nodes' mean contributions are folded into the consumers' biases first."""
    keep = check_keep(plan, keep)
    small = copy.deepcopy(model)
    if means is not None:
        fold_means(small, plan, keep, means)
    with torch.no_grad():
        for name, idx in keep.items():
            lp = plan.layers[name]
            _slice_out(small.get_submodule(name), idx)
            for norm in lp.norms:
                _slice_norm(small.get_submodule(norm), idx)
            for consumer in lp.consumers:
                _slice_in(small.get_submodule(consumer.name), expand_index(idx, consumer.expansion))
    return small


def _mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    torch_prune.custom_from_mask(module, name, mask.to(getattr(module, name).device))


def mask_keep(model: nn.Module, plan: ModelPlan, keep: dict[str, torch.Tensor],
              means: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Structured ``torch.nn.utils.prune`` masks, in place (as torch.nn.utils.prune works), returns ``model``;
    with ``means``, the consumers' biases are folded first (as in :func:`apply_keep`).

    The producer's rows and bias, its batch norms' weight and bias, and the consumers' input columns are
    masked. Masking the consumer's columns makes the masked model compute exactly what the smaller one
    does whatever the activation (sigmoid(0) != 0); the producer-side masks make the removed channels read
    0 as well, so that fine-tuning with the masks does not grow them back."""
    keep = check_keep(plan, keep)
    if means is not None:
        fold_means(model, plan, keep, means)
    for name, idx in keep.items():
        lp = plan.layers[name]
        producer = model.get_submodule(name)
        rows = ~_removed_mask(lp.n_nodes, idx, 1)
        _mask(producer, "weight", rows.view(-1, *[1] * (producer.weight.dim() - 1)).expand_as(producer.weight))
        if producer.bias is not None:
            _mask(producer, "bias", rows)
        for norm_name in lp.norms:
            norm = model.get_submodule(norm_name)
            if norm.affine:
                _mask(norm, "weight", rows)
                _mask(norm, "bias", rows)
        for consumer in lp.consumers:
            module = model.get_submodule(consumer.name)
            cols = ~_removed_mask(lp.n_nodes, idx, consumer.expansion)
            shape = [1, -1] + [1] * (module.weight.dim() - 2)
            _mask(module, "weight", cols.view(*shape).expand_as(module.weight))
    return model
