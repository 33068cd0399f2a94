"""The Torch-Pruning bridge: MIPP's decisions inside Torch-Pruning's own pruners.

``torch_pruning_pruner(selection, model, example)`` returns a configured ``tp.pruner.MetaPruner`` that removes
exactly MIPP's nodes from every decided group (in one step or over ``iterative_steps``) and leaves every
other group alone. Two traps of a hand-configured pruner are closed here:

* Torch-Pruning turns a ratio r into a kept count int(n * (1 - r)); the float product for a ratio of exactly
  (n - k) / n can fall just below k and keep k - 1 channels. The ratios used are half a channel below it,
  so int(k + 0.5) = k exactly.
* after an iterative step the channels are renumbered; :class:`MIPPImportance` maps the current channels
  back to the original ones through the dependency graph's pruning history, so later steps still score the
  channels MIPP kept, and it raises when a channel MIPP kept has already been removed (a ``pruning_ratio``
  larger than MIPP's would do that; Torch-Pruning gives an importance no way to stop it within one step).
"""

from __future__ import annotations

import torch
from torch import nn

from mipp.pruning.selection import Selection
from mipp.pruning.structure import load_torch_pruning


class MIPPImportance:
    """A Torch-Pruning importance (``tp.importance.Importance`` protocol: group -> per-channel scores): nodes
    MIPP kept score 1, removed ones 0. For a group MIPP did not decide (the output layer, a residual stream
    without ``joint``, an unsupported consumer) it returns None, and Torch-Pruning leaves the group alone."""

    def __init__(self, selection: Selection, model: nn.Module):
        selection.structure.check_model(model)
        modules = dict(model.named_modules())
        self._names = {modules[name]: name for name in selection.keep}
        self._keep = {name: set(idx.tolist()) for name, idx in selection.keep.items()}
        self._n = {name: selection.structure.groups[name].n_nodes for name in selection.keep}

    def _alive(self, name: str, group) -> list[int]:
        """Original indices of the root's current channels, replaying Torch-Pruning's pruning history."""
        alive = list(range(self._n[name]))
        dg = getattr(group, "_DG", None)
        for root_name, is_out, idxs in dg.pruning_history() if dg is not None else []:
            if root_name == name and is_out:
                gone = set(int(i) for i in idxs)
                alive = [a for j, a in enumerate(alive) if j not in gone]
        return alive

    def __call__(self, group, **kwargs) -> torch.Tensor | None:
        name = self._names.get(group[0].dep.target.module)
        if name is None:
            return None
        alive = self._alive(name, group)
        missing = self._keep[name] - set(alive)
        if missing:
            raise RuntimeError(
                f"Torch-Pruning removed nodes {sorted(missing)[:5]} of {name!r} that MIPP kept: its "
                "pruning ratio exceeds MIPP's decision. Use "
                "mipp.pruning.integrations.torch_pruning_pruner(selection, model, example)"
            )
        original = [alive[int(i)] for i in group[0].root_idxs]
        return torch.tensor([float(o in self._keep[name]) for o in original])


def torch_pruning_ratios(selection: Selection, model: nn.Module) -> dict[nn.Module, float]:
    """{root module: ratio} for ``pruning_ratio_dict`` that keeps exactly MIPP's count in every decided group."""
    modules = dict(model.named_modules())
    out = {}
    for name, idx in selection.keep.items():
        n = selection.structure.groups[name].n_nodes
        out[modules[name]] = (n - len(idx) - 0.5) / n if len(idx) < n else 0.0
    return out


def torch_pruning_pruner(selection: Selection, model: nn.Module, example=None, iterative_steps: int = 1, **kwargs):
    """A ``tp.pruner.MetaPruner`` on ``model`` (pruned in place by ``pruner.step()``, as Torch-Pruning works)
    that removes exactly MIPP's nodes after ``iterative_steps`` steps and nothing else. Extra keyword
    arguments go to MetaPruner (those that set ratios or the importance are MIPP's and refused)."""
    tp = load_torch_pruning()
    for key in ("importance", "pruning_ratio", "pruning_ratio_dict", "global_pruning"):
        if key in kwargs:
            raise TypeError(f"{key!r} is set by MIPP's selection and cannot be passed")
    return tp.pruner.MetaPruner(
        model,
        selection.example if example is None else example,
        importance=MIPPImportance(selection, model),
        pruning_ratio=0.0,
        pruning_ratio_dict=torch_pruning_ratios(selection, model),
        iterative_steps=iterative_steps,
        global_pruning=False,
        **kwargs,
    )
