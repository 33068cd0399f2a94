"""A selection on disk: compact, strict JSON (NaN / inf written as null) with a format name and version that
guard loads.

Version 3 (written now) holds what loading needs without tracing the model again: the structure (every
group's nodes, producers, consumers, members, heads, and why a group is left alone), the model's structure
signature (module types and parameter shapes), the kept nodes, the settings, the per-group results, the
consumers' mean inputs (float64, base64) and the example input (tensors, base64). ``Selection.load`` then
only compares the signature with the model's. Per-node decision records are written only when asked
(``save(path, records=True)``). Index lists with a regular layout (node i -> channels a + i s ... + w - 1:
a neuron, a flattened channel, an attention head) are written as that rule.

Versions 1 and 2 (indented JSON with every record; version 1 names ``score`` / ``statistic`` ``gaussian`` /
``upper``) still load; they hold no structure, so loading them traces the model (``analyse``).

Every problem in a file (not JSON, truncated, another format or version, a missing or mistyped field, a
record with unknown fields, a group or node the model does not have, a different model) raises one
:class:`SelectionFileError` naming the file and the field; nothing is applied to the model by loading.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, fields

import torch
from torch import nn

from mipp.pruning.selection import LayerResult, NodeRecord, Selection
from mipp.pruning.structure import Consumer, Group, Heads, Structure, analyse, signature

FORMAT = "mipp.Selection"
VERSION = 3
READABLE = (1, 2, 3)
EXAMPLE_MAX_ELEMENTS = 1 << 16
# version 1's record fields, by their version 2 names
_RENAMED = {"gaussian": "score", "upper": "statistic"}
_RECORD_FIELDS = {f.name for f in fields(NodeRecord)}
_LAYER_FIELDS = {f.name for f in fields(LayerResult)}


class SelectionFileError(ValueError):
    """A selection file that cannot be loaded, naming the file and the field."""


# -- encoding --------------------------------------------------------------------------------------------


def _tensor(t: torch.Tensor) -> dict:
    t = t.detach().cpu().contiguous()
    return {
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "data": base64.b64encode(t.numpy().tobytes()).decode("ascii"),
    }


def _batch(x):
    """A batch (tensor, Mapping or tuple / list of them, JSON scalars) as JSON, or None when it holds
    something else."""
    if isinstance(x, torch.Tensor):
        return {"tensor": _tensor(x)} if x.numel() <= EXAMPLE_MAX_ELEMENTS else None
    if isinstance(x, Mapping):
        items = {str(k): _batch(v) for k, v in x.items()}
        return None if any(v is None for v in items.values()) else {"mapping": items}
    if isinstance(x, (tuple, list)):
        items_ = [_batch(v) for v in x]
        return None if any(v is None for v in items_) else {"sequence": items_, "tuple": isinstance(x, tuple)}
    if x is None or isinstance(x, (bool, int, float, str)):
        return {"value": x}
    return None


def _nodes(per_node: list[list[int]]):
    """Per-node index lists: {"start", "stride", "width", "n"} when node i holds
    range(start + i stride, start + i stride + width), else the lists."""
    n = len(per_node)
    if n and per_node[0]:
        width, start = len(per_node[0]), per_node[0][0]
        stride = per_node[1][0] - start if n > 1 and per_node[1] else width
        if all(lst == list(range(start + i * stride, start + i * stride + width)) for i, lst in enumerate(per_node)):
            return {"start": start, "stride": stride, "width": width, "n": n}
    return per_node


def _structure(structure: Structure) -> dict:
    return {
        "order": structure.order,
        "groups": {
            name: {
                "n_nodes": g.n_nodes,
                "prunable": g.prunable,
                "reason": g.reason,
                "coupled": g.coupled,
                "members": g.members,
                "producers": {p: _nodes(rows) for p, rows in g.producers.items()},
                "consumers": [[c.name, c.kind, _nodes(c.columns)] for c in g.consumers],
                "heads": None if g.heads is None else asdict(g.heads),
            }
            for name, g in structure.groups.items()
        },
    }


def save(selection: Selection, path: str, records: bool = False) -> str:
    """Write the selection as compact JSON (module docstring); ``records``: also every node's decision
    record (what ``report`` / ``plot`` show per node). Returns ``path``."""
    structure = selection.structure
    layers = {}
    for name, r in selection.layers.items():
        entry = {f.name: getattr(r, f.name) for f in fields(r) if f.name != "records"}
        entry["n_records"] = len(r.records)
        if records:
            entry["records"] = [asdict(rec) for rec in r.records]
        layers[name] = entry
    data = {
        "format": FORMAT,
        "version": VERSION,
        "settings": selection.settings,
        "keep": {name: idx.tolist() for name, idx in selection.keep.items()},
        "signature": {
            name: [t, [[n, list(sh)] for n, sh in shapes]] for name, (t, shapes) in structure.signature.items()
        },
        "structure": _structure(structure),
        "layers": layers,
        "means": None if selection.means is None else {k: _tensor(v) for k, v in selection.means.items()},
        "seconds": selection.seconds,
        "example": _batch(selection.example),
    }
    text = json.dumps(_finite(data), allow_nan=False, separators=(",", ":"))
    with open(path, "w") as f:
        f.write(text)
    return path


def _finite(value):
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- decoding --------------------------------------------------------------------------------------------


class _Reader:
    """Typed access to a parsed file, every failure a SelectionFileError naming the field."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, field: str, problem: str) -> SelectionFileError:
        name = f"'{field}'" if field.isidentifier() else field
        return SelectionFileError(f"{self.path}: field {name} {problem}")

    def get(self, obj: dict, key: str, kinds, field: str, optional: bool = False):
        if key not in obj:
            if optional:
                return None
            raise self.fail(field, "is missing")
        value = obj[key]
        if value is None and optional:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
            raise self.fail(field, f"must be {_kind_name(kinds)}, got {_json_type(value)}")
        return value

    def tensor(self, obj, field: str) -> torch.Tensor:
        if not isinstance(obj, dict):
            raise self.fail(field, f"must be an encoded tensor (object), got {_json_type(obj)}")
        dtype_name = self.get(obj, "dtype", str, field + ".dtype")
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise self.fail(field + ".dtype", f"is not a torch dtype: {dtype_name!r}")
        shape = self.get(obj, "shape", list, field + ".shape")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise self.fail(field + ".shape", f"must be a list of sizes, got {shape!r}")
        try:
            raw = base64.b64decode(self.get(obj, "data", str, field + ".data"), validate=True)
            flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            return flat.reshape(shape).clone()
        except (ValueError, RuntimeError, TypeError) as exc:
            raise self.fail(field + ".data", f"does not hold a {dtype_name} tensor of shape {shape} ({exc})") from None

    def ints(self, value, field: str) -> list[int]:
        if not isinstance(value, list):
            raise self.fail(field, f"must be a list of integers, got {_json_type(value)}")
        for v in value:
            if not isinstance(v, int) or isinstance(v, bool):
                raise self.fail(field, f"must be a list of integers, got a list holding {_json_type(v)}")
        return value

    def nodes(self, value, field: str) -> list[list[int]]:
        if isinstance(value, dict):
            try:
                start, stride, width, n = (int(value[k]) for k in ("start", "stride", "width", "n"))
            except (KeyError, TypeError, ValueError):
                raise self.fail(field, "must hold start, stride, width and n") from None
            return [list(range(start + i * stride, start + i * stride + width)) for i in range(n)]
        if not isinstance(value, list):
            raise self.fail(field, f"must be per-node index lists, got {_json_type(value)}")
        return [self.ints(v, f"{field}[{i}]") for i, v in enumerate(value)]

    def batch(self, value, field: str):
        if not isinstance(value, dict) or len(value) not in (1, 2):
            raise self.fail(field, f"must be an encoded input batch, got {_json_type(value)}")
        if "tensor" in value:
            return self.tensor(value["tensor"], field + ".tensor")
        if "mapping" in value:
            items = self.get(value, "mapping", dict, field + ".mapping")
            return {k: self.batch(v, f"{field}.{k}") for k, v in items.items()}
        if "sequence" in value:
            items_ = self.get(value, "sequence", list, field + ".sequence")
            out = [self.batch(v, f"{field}[{i}]") for i, v in enumerate(items_)]
            return tuple(out) if value.get("tuple", True) else out
        if "value" in value:
            return value["value"]
        raise self.fail(field, f"has none of tensor / mapping / sequence / value (keys {sorted(value)})")


def _tuple(kinds):
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _kind_name(kinds) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
    }
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kinds))


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "an integer"}.get(
        type(value), "a number" if isinstance(value, float) else type(value).__name__
    )


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise SelectionFileError(f"cannot read the selection file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SelectionFileError(f"{path} is not a mipp selection (not a text file)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        opened = sum(text.count(c) for c in "{[") - sum(text.count(c) for c in "}]")
        hint = " (the file ends early: truncated?)" if opened > 0 or exc.pos >= len(text.rstrip()) else ""
        raise SelectionFileError(f"{path} is not valid JSON{hint}: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise SelectionFileError(f"{path} is not a mipp selection: the top level is {_json_type(data)}, not an object")
    if data.get("format") != FORMAT:
        raise SelectionFileError(f"{path}: field 'format' must be {FORMAT!r}, found {data.get('format')!r}")
    if data.get("version") not in READABLE:
        raise SelectionFileError(
            f"{path}: field 'version' must be one of {list(READABLE)} (this mipp writes {VERSION}), found "
            f"{data.get('version')!r}"
        )
    return data


def _structure_from(r: _Reader, data: dict, sig: dict) -> Structure:
    raw = r.get(data, "structure", dict, "structure")
    order = r.get(raw, "order", list, "structure.order")
    groups: dict[str, Group] = {}
    for name, g in r.get(raw, "groups", dict, "structure.groups").items():
        f = f"structure.groups[{name!r}]"
        if not isinstance(g, dict):
            raise r.fail(f, f"must be an object, got {_json_type(g)}")
        n = r.get(g, "n_nodes", int, f + ".n_nodes")
        consumers = []
        for i, c in enumerate(r.get(g, "consumers", list, f + ".consumers")):
            cf = f"{f}.consumers[{i}]"
            if not (isinstance(c, list) and len(c) == 3 and isinstance(c[0], str) and c[1] in ("linear", "conv")):
                raise r.fail(cf, "must be [name, 'linear' | 'conv', per-node columns]")
            consumers.append(Consumer(c[0], c[1], r.nodes(c[2], cf + "[2]")))
        producers = {
            p: r.nodes(rows, f"{f}.producers[{p!r}]")
            for p, rows in r.get(g, "producers", dict, f + ".producers").items()
        }
        heads = r.get(g, "heads", dict, f + ".heads", optional=True)
        try:
            heads_ = None if heads is None else Heads(**heads)
        except TypeError as exc:
            raise r.fail(f + ".heads", f"has the wrong fields ({exc})") from None
        for label, lists in [("producers", producers.values()), ("consumers", [c.columns for c in consumers])]:
            if any(len(lst) != n for lst in lists):
                raise r.fail(f"{f}.{label}", f"must list the indices of each of the {n} nodes")
        groups[name] = Group(
            name=name,
            n_nodes=n,
            consumers=consumers,
            members=[str(m) for m in r.get(g, "members", list, f + ".members")],
            producers=producers,
            prunable=r.get(g, "prunable", bool, f + ".prunable"),
            reason=r.get(g, "reason", str, f + ".reason"),
            coupled=r.get(g, "coupled", bool, f + ".coupled"),
            heads=heads_,
        )
    return Structure(groups, sig, [str(o) for o in order])


def _layers_from(r: _Reader, data: dict) -> dict[str, LayerResult]:
    layers = {}
    for name, raw in r.get(data, "layers", dict, "layers").items():
        f = f"layers[{name!r}]"
        if not isinstance(raw, dict):
            raise r.fail(f, f"must be an object, got {_json_type(raw)}")
        recs = []
        for i, rec in enumerate(r.get(raw, "records", list, f + ".records", optional=True) or []):
            if not isinstance(rec, dict):
                raise r.fail(f"{f}.records[{i}]", f"must be an object, got {_json_type(rec)}")
            rec = {_RENAMED.get(k, k): (math.nan if v is None else v) for k, v in rec.items()}
            if set(rec) != _RECORD_FIELDS:
                missing, extra = sorted(_RECORD_FIELDS - set(rec)), sorted(set(rec) - _RECORD_FIELDS)
                raise r.fail(f"{f}.records[{i}]", f"has the wrong fields (missing {missing}, unknown {extra})")
            recs.append(NodeRecord(**rec))
        values = {k: v for k, v in raw.items() if k not in ("records", "n_records")}
        if set(values) != _LAYER_FIELDS - {"records"}:
            missing, extra = sorted(_LAYER_FIELDS - {"records"} - set(values)), sorted(set(values) - _LAYER_FIELDS)
            raise r.fail(f, f"has the wrong fields (missing {missing}, unknown {extra})")
        for key in ("recon_error", "info_removed"):
            values[key] = math.nan if values[key] is None else values[key]
        for key, kind in (("n_before", int), ("n_after", int), ("consumers", list), ("seconds", dict)):
            r.get(values, key, kind, f"{f}.{key}")
        for key in ("recon_error", "info_removed"):
            r.get(values, key, (int, float), f"{f}.{key}")
        layers[name] = LayerResult(**values, records=recs)
    return layers


def _signature_from(r: _Reader, data: dict) -> dict:
    out = {}
    for name, entry in r.get(data, "signature", dict, "signature").items():
        f = f"signature[{name!r}]"
        try:
            t, shapes = entry
            out[name] = (str(t), tuple((str(n), tuple(int(s) for s in sh)) for n, sh in shapes))
        except (TypeError, ValueError):
            raise r.fail(f, "must be [module type, [[parameter name, shape], ...]]") from None
    return out


def _difference(saved: dict, now: dict) -> str:
    for name in saved:
        if name not in now:
            return f"module {name!r} is in the file, not in the model"
        if saved[name] != now[name]:
            return f"module {name!r} is {_module_text(saved[name])} in the file, {_module_text(now[name])} in the model"
    extra = sorted(set(now) - set(saved))
    return f"module {extra[0]!r} is in the model, not in the file" if extra else ""


def _module_text(entry: tuple) -> str:
    t, shapes = entry
    return f"{t}(" + ", ".join(f"{n} {list(sh)}" for n, sh in shapes) + ")"


def load(path: str, model: nn.Module, example=None) -> Selection:
    """A selection saved by :func:`save`, for ``model`` (the unpruned model it was made on, or a masked copy
    of it). ``example``: a small input batch, needed when the file holds none. Raises
    :class:`SelectionFileError` naming the field for any problem with the file or a different model."""
    data = _read(path)
    r = _Reader(path)
    version = data["version"]
    settings = r.get(data, "settings", dict, "settings")
    sig = _signature_from(r, data)
    now = signature(model)
    if sig != now:
        raise SelectionFileError(
            f"{path} was made on another model (field 'signature': {_difference(sig, now)}); a selection applies "
            "only to the unpruned model it was made on"
        )
    if example is None:
        raw = data.get("example")
        if raw is None:
            raise SelectionFileError(f"{path}: field 'example' is empty: pass example= (a small input batch)")
        if version < 3:
            dtype = getattr(torch, str(data.get("example_dtype")), None)
            if not isinstance(dtype, torch.dtype):
                raise r.fail("example_dtype", f"is not a torch dtype: {data.get('example_dtype')!r}")
            try:
                example = torch.tensor(raw, dtype=dtype)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise r.fail("example", f"is not a tensor ({exc})") from None
        else:
            example = r.batch(raw, "example")
    if version >= 3:
        structure = _structure_from(r, data, sig)
    else:
        structure = analyse(model, example, joint=bool(settings.get("joint", False)))
    layers = _layers_from(r, data)
    raw_means = r.get(data, "means", dict, "means", optional=True)
    means = None
    if raw_means is not None:
        means = {
            k: (r.tensor(v, f"means[{k!r}]") if version >= 3 else _list_tensor(r, v, f"means[{k!r}]")).to(torch.float64)
            for k, v in raw_means.items()
        }
    keep = {}
    for name, idx in r.get(data, "keep", dict, "keep").items():
        keep[name] = torch.tensor(r.ints(idx, f"keep[{name!r}]"), dtype=torch.long)
    seconds = r.get(data, "seconds", dict, "seconds", optional=True) or {}
    try:
        return Selection(structure, keep, example, layers, means, seconds, settings)
    except ValueError as exc:
        raise r.fail("keep", f"does not fit the model: {exc}") from None


def _list_tensor(r: _Reader, value, field: str) -> torch.Tensor:
    try:
        return torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise r.fail(field, "must be a list of numbers") from None
