"""The Torch-Pruning bridge: MIPP's decisions inside Torch-Pruning's own pruners.

``torch_pruning_pruner(selection, model, example)`` returns a configured ``tp.pruner.MetaPruner`` that removes
exactly MIPP's nodes from every decided group (in one step or over ``iterative_steps``) and leaves every
other group alone. The traps of a hand-configured pruner are closed here:

* Torch-Pruning turns a ratio r into a kept count int(n * (1 - r)); the float product for a ratio of exactly
  (n - k) / n can fall just below k and keep k - 1 channels. The ratios used are half a channel below it,
  so int(k + 0.5) = k exactly.
* after an iterative step the channels are renumbered; :class:`MIPPImportance` maps the current channels
  back to the original ones through the dependency graph's pruning history, so later steps still score the
  channels MIPP kept.
* Torch-Pruning removes the n lowest-scored channels whatever their scores (local pruning), or every channel
  scored at or below a global threshold: a ``pruning_ratio`` above MIPP's decision would remove channels
  MIPP kept. :class:`MIPPImportance` raises before anything is removed: when the MetaPruner that asks for
  the scores would remove more channels of a group than MIPP did (read from the pruner's own ratio for the
  step), and, for the cases that count cannot foresee (global pruning, ``round_to``), when a pruning group
  about to be applied holds a channel MIPP kept (Torch-Pruning's ``check_pruning_group``, wrapped on the
  dependency graph the groups come from).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from mipp.pruning.selection import Selection
from mipp.pruning.structure import load_torch_pruning, tp_example

try:
    import torch_pruning as _tp
except ImportError:  # say what to install
    load_torch_pruning()


class MIPPImportance(_tp.importance.Importance):
    """A Torch-Pruning importance (``tp.importance.Importance``: group -> per-channel scores): nodes MIPP kept
    score 1, removed ones 0. For a group MIPP did not decide (the output layer, a residual stream without
    ``joint``, an unsupported consumer) it returns None, and Torch-Pruning leaves the group alone. Raises a
    RuntimeError, before anything is pruned, when the pruner would remove a channel MIPP kept."""

    def __init__(self, selection: Selection, model: nn.Module):
        selection.structure.check_model(model)
        modules = dict(model.named_modules())
        self._names = {modules[name]: name for name in selection.keep}
        self._keep = {name: set(idx.tolist()) for name, idx in selection.keep.items()}
        self._n = {name: selection.structure.groups[name].n_nodes for name in selection.keep}

    def _alive(self, name: str, dg) -> list[int]:
        """Original indices of the root's current channels, replaying Torch-Pruning's pruning history."""
        alive = list(range(self._n[name]))
        for root_name, is_out, idxs in dg.pruning_history() if dg is not None else []:
            if root_name == name and is_out:
                gone = set(int(i) for i in idxs)
                alive = [a for j, a in enumerate(alive) if j not in gone]
        return alive

    def _refuse(self, name: str, why: str) -> RuntimeError:
        return RuntimeError(
            f"Torch-Pruning {why} of {name!r}, which MIPP kept: the pruner's pruning_ratio exceeds MIPP's "
            f"decision ({len(self._keep[name])} of {self._n[name]} kept). Use "
            "mipp.pruning.integrations.torch_pruning_pruner(selection, model, example), or pass "
            "pruning_ratio_dict=torch_pruning_ratios(selection, model) and pruning_ratio=0"
        )

    def _guard(self, dg) -> None:
        """Wrap the graph's check_pruning_group (called on every group right before a pruner applies it) so
        that a group removing a channel MIPP kept raises instead."""
        if getattr(dg, "_mipp_guarded", False):
            return
        check = dg.check_pruning_group

        def guarded(group) -> bool:
            name = self._names.get(group[0].dep.target.module)
            if name is not None and dg.is_out_channel_pruning_fn(group[0].dep.handler):
                alive = self._alive(name, dg)
                hit = sorted(alive[int(i)] for i in group[0].idxs if alive[int(i)] in self._keep[name])
                if hit:
                    raise self._refuse(name, f"was about to remove nodes {hit[:5]}")
            return check(group)

        dg.check_pruning_group = guarded
        dg._mipp_guarded = True

    def _check_count(self, pruner, name: str, root: nn.Module, n_now: int) -> None:
        """Refuse, before any pruning, a local step that removes more channels than MIPP left removable."""
        if pruner.global_pruning or getattr(pruner, "isomorphic", False) or getattr(pruner, "round_to", None):
            return  # the guard on check_pruning_group catches these
        if root in getattr(pruner, "ignored_layers", ()):
            return
        try:
            scope = pruner._layer_to_scope[root][0] if root in pruner._layer_to_scope else pruner.DG._module2name[root]
            initial = pruner._scope_initial_channels.get(scope, n_now)
            ratio = pruner.get_target_pruning_ratio(root)
        except (AttributeError, KeyError, IndexError):
            return  # another Torch-Pruning version: the guard still holds
        n_pruned = n_now - int(initial * (1 - ratio))
        removable = n_now - len(self._keep[name])
        if n_pruned > removable:
            raise self._refuse(
                name, f"would remove {n_pruned} channels at step {pruner.current_step} (MIPP: {removable} more)"
            )

    def __call__(self, group) -> torch.Tensor | None:
        root = group[0].dep.target.module
        name = self._names.get(root)
        if name is None:
            return None
        dg = getattr(group, "_DG", None)
        if dg is not None:
            self._guard(dg)
        alive = self._alive(name, dg)
        missing = self._keep[name] - set(alive)
        if missing:
            raise self._refuse(name, f"removed nodes {sorted(missing)[:5]}")
        pruner = _calling_pruner()
        if pruner is not None:
            self._check_count(pruner, name, root, len(alive))
        original = [alive[int(i)] for i in group[0].root_idxs]
        return torch.tensor([float(o in self._keep[name]) for o in original])


def _calling_pruner():
    """The Torch-Pruning pruner whose ``estimate_importance`` is calling the importance, if any."""
    frame = sys._getframe(2)
    for _ in range(4):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, _tp.pruner.BasePruner):
            return owner
        frame = frame.f_back
    return None


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
    example = selection.example if example is None else example
    return tp.pruner.MetaPruner(
        model,
        tp_example(model, example),
        importance=MIPPImportance(selection, model),
        pruning_ratio=0.0,
        pruning_ratio_dict=torch_pruning_ratios(selection, model),
        iterative_steps=iterative_steps,
        global_pruning=False,
        **kwargs,
    )
