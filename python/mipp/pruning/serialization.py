"""A selection on disk: strict JSON (NaN / inf written as null), with a format name and version that guard
loads. Version 2 names the record fields neutrally (``score``, ``statistic``); version 1 files (``gaussian``,
``upper``) still load."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields

import torch
from torch import nn

from mipp.pruning.selection import LayerResult, NodeRecord, Selection
from mipp.pruning.structure import analyse

FORMAT = "mipp.Selection"
VERSION = 2
READABLE = (1, 2)
EXAMPLE_MAX_ELEMENTS = 1 << 16
# version 1's record fields, by their version 2 names
_RENAMED = {"gaussian": "score", "upper": "statistic"}


def save(selection: Selection, path: str) -> str:
    """Write the selection as JSON: kept nodes per group (module names), the settings, the per-group results
    and decisions, the consumers' mean inputs (for the fold), the model's structure signature and the
    example input when it is a tensor of at most 65,536 elements."""
    ex = selection.example
    structure = selection.structure
    data = {
        "format": FORMAT,
        "version": VERSION,
        "settings": selection.settings,
        "keep": {name: idx.tolist() for name, idx in selection.keep.items()},
        "groups": {
            name: {
                "n_nodes": g.n_nodes,
                "prunable": g.prunable,
                "reason": g.reason,
                "consumers": [c.name for c in g.consumers],
                "members": g.members,
            }
            for name, g in structure.groups.items()
        },
        "signature": {
            name: [t, [[n, list(sh)] for n, sh in shapes]] for name, (t, shapes) in structure.signature.items()
        },
        "layers": {
            name: {
                **{f.name: getattr(r, f.name) for f in fields(r) if f.name != "records"},
                "records": [_finite(asdict(rec)) for rec in r.records],
            }
            for name, r in selection.layers.items()
        },
        "means": None if selection.means is None else {k: v.tolist() for k, v in selection.means.items()},
        "seconds": selection.seconds,
        "example": ex.tolist() if isinstance(ex, torch.Tensor) and ex.numel() <= EXAMPLE_MAX_ELEMENTS else None,
        "example_dtype": str(ex.dtype).removeprefix("torch.") if isinstance(ex, torch.Tensor) else None,
    }
    with open(path, "w") as f:
        json.dump(_finite(data), f, indent=1, allow_nan=False)
    return path


def load(path: str, model: nn.Module, example=None) -> Selection:
    """A selection saved by :func:`save`, for ``model`` (the unpruned model it was made on, or a masked copy
    of it). ``example``: a small input batch, needed when the file holds none."""
    with open(path) as f:
        data = json.load(f)
    if data.get("format") != FORMAT or data.get("version") not in READABLE:
        raise ValueError(
            f"{path} is not a mipp selection of format version {VERSION} (found "
            f"{data.get('format')!r} version {data.get('version')!r})"
        )
    if example is None:
        if data["example"] is None:
            raise ValueError(f"{path} holds no example input: pass example= (a small input batch)")
        example = torch.tensor(data["example"], dtype=getattr(torch, data["example_dtype"]))
    structure = analyse(model, example, joint=data["settings"].get("joint", False))
    saved = {name: (t, tuple((n, tuple(sh)) for n, sh in shapes)) for name, (t, shapes) in data["signature"].items()}
    if saved != structure.signature:
        raise ValueError(f"the model's structure differs from the one {path} was made on")
    layers = {}
    for name, r in data["layers"].items():
        records = [
            NodeRecord(**{_RENAMED.get(k, k): (math.nan if v is None else v) for k, v in rec.items()})  # type: ignore[arg-type]
            for rec in r.pop("records")
        ]
        layers[name] = LayerResult(**r, records=records)
    means = (
        None if data["means"] is None else {k: torch.tensor(v, dtype=torch.float64) for k, v in data["means"].items()}
    )
    keep = {k: torch.tensor(v, dtype=torch.long) for k, v in data["keep"].items()}
    return Selection(structure, keep, example, layers, means, data["seconds"], data["settings"])


def _finite(value):
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
