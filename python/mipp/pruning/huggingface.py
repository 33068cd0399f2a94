"""Hugging Face models out of MIPP: a pruned ``PreTrainedModel`` saved so that it loads back through the
transformers API (transformers 5.x; ``pip install 'mipp[hf]'``).

    from mipp.pruning import huggingface as hf
    small = sel.apply(model, refit=batches)              # a pruned BertModel (FFN neurons, attention heads)
    hf.save_pretrained(small, "pruned/")                 # config.json, model.safetensors (+ mipp_pruned.py)
    hf.from_pretrained("pruned/")                        # back, without running code from the folder
    AutoModel.from_pretrained("pruned/", trust_remote_code=True)   # or through transformers alone, offline

What is written depends on what the pruning changed (``layout(model)``, against the architecture that
``model.config`` describes):

* nothing: the model as ``model.save_pretrained`` writes it;
* every changed layer explained by one config value (the same FFN width in every layer:
  ``intermediate_size``, ``ffn_dim``, ...): that value is updated in ``model.config`` and the folder is an
  ordinary checkpoint of the original class (``BertModel.from_pretrained`` loads it);
* otherwise (per-layer FFN widths, removed attention heads; transformers 5 dropped ``prune_heads`` and
  ``config.pruned_heads``): the config gets ``model_type`` ``"mipp_<type>"``, a ``mipp_layout`` field
  (``{"linear": {module: [in_features, out_features]}, "attributes": {module: {attribute: value}}}``: each
  Linear layer whose shape changed and each changed integer attribute, such as an attention module's
  ``num_attention_heads`` / ``all_head_size``), a ``mipp_base`` field (the original config and model classes)
  and an ``auto_map`` to ``mipp_pruned.py``, a file written beside it that needs only torch and transformers:
  a config subclass of the original config and a model subclass of the original model class that builds
  the smaller layers before the weights load. ``AutoModel.from_pretrained(path, trust_remote_code=True)``
  runs that file; :func:`from_pretrained` builds the same classes from mipp's own copy of it and runs nothing
  from the folder.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import types
from typing import Any

import torch
from torch import nn

LAYOUT = "mipp_layout"
BASE = "mipp_base"
CODE_FILE = "mipp_pruned.py"
# config values that set every FFN layer's width, in the architectures transformers ships
WIDTH_KEYS = ("intermediate_size", "ffn_dim", "d_ff", "n_inner", "encoder_ffn_dim", "dim_feedforward", "hidden_dim")

_TEMPLATE = '''"""A {model_cls} pruned by MIPP (mipp.pruning.huggingface): the layers whose sizes differ from what the
config's architecture builds are listed in config.mipp_layout and built at those sizes before the weights
load. Needs torch and transformers only."""

from torch import nn
from {config_module} import {config_cls}
from {model_module} import {model_cls}


def apply_layout(model, layout):
    """Rebuild each Linear layer listed in layout["linear"] ({{name: [in_features, out_features]}}) at its
    size and set the integer attributes of layout["attributes"] ({{module name: {{attribute: value}}}})."""
    modules = dict(model.named_modules())
    for name, (n_in, n_out) in layout.get("linear", {{}}).items():
        old = modules[name]
        parent, _, attr = name.rpartition(".")
        new = nn.Linear(
            n_in, n_out, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
        )
        setattr(modules[parent] if parent else model, attr, new)
    for name, attrs in layout.get("attributes", {{}}).items():
        module = modules[name] if name else model
        for key, value in attrs.items():
            setattr(module, key, value)


class Mipp{config_cls}({config_cls}):
    model_type = "{model_type}"
    _mipp_pruned = True

    def __init__(self, mipp_layout=None, mipp_base=None, **kwargs):
        super().__init__(**kwargs)
        self.mipp_layout = mipp_layout or {{"linear": {{}}, "attributes": {{}}}}
        self.mipp_base = mipp_base


class Mipp{model_cls}({model_cls}):
    config_class = Mipp{config_cls}
    _mipp_pruned = True

    def post_init(self):
        apply_layout(self, self.config.mipp_layout)
        super().post_init()
'''


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            "mipp.pruning.huggingface needs transformers 5: pip install 'mipp[hf]' (or transformers)"
        ) from exc
    return transformers


def _base_classes(model: nn.Module) -> tuple[type, type]:
    """The transformers config and model classes ``model`` was built from (a reloaded pruned model's
    classes are mipp's subclasses of them, marked ``_mipp_pruned``)."""
    cls, config_cls = type(model), type(model.config)
    while cls.__dict__.get("_mipp_pruned"):
        cls = cls.__bases__[0]
    while config_cls.__dict__.get("_mipp_pruned"):
        config_cls = config_cls.__bases__[0]
    return config_cls, cls


def _reference(model: nn.Module, config) -> nn.Module:
    """``model``'s class built from ``config`` without memory (meta tensors)."""
    _, cls = _base_classes(model)
    with torch.device("meta"):
        return cls(config)


def _base_config(model: nn.Module):
    """``model.config`` as its original config class, without mipp's fields."""
    config_cls, _ = _base_classes(model)
    return config_cls(**_plain(model.config))


def _compare(model: nn.Module, reference: nn.Module) -> dict:
    linear: dict[str, list[int]] = {}
    attributes: dict[str, dict[str, int]] = {}
    ref_modules = dict(reference.named_modules())
    for name, m in model.named_modules():
        ref = ref_modules.get(name)
        if ref is None:
            raise ValueError(f"{name!r} is not in the architecture the config describes: cannot save it")
        shapes = {n: tuple(p.shape) for n, p in m.named_parameters(recurse=False)}
        ref_shapes = {n: tuple(p.shape) for n, p in ref.named_parameters(recurse=False)}
        if shapes != ref_shapes:
            if not isinstance(m, nn.Linear) or set(shapes) != set(ref_shapes):
                raise NotImplementedError(
                    f"{name!r} ({type(m).__name__}) changed shape {ref_shapes} -> {shapes}: only Linear layers "
                    "can be rebuilt at a new size when loading"
                )
            linear[name] = [m.in_features, m.out_features]
        for key, value in vars(m).items():
            if key.startswith("_") or isinstance(value, bool) or not isinstance(value, int):
                continue
            if key in ("in_features", "out_features"):
                continue
            if getattr(ref, key, None) != value:
                attributes.setdefault(name, {})[key] = value
    return {"linear": linear, "attributes": attributes}


def layout(model: nn.Module) -> dict:
    """What differs in ``model`` from the architecture ``model.config`` describes:
    ``{"linear": {module: [in_features, out_features]}, "attributes": {module: {attribute: value}}}`` (the
    Linear layers whose shapes changed and the integer attributes that changed, such as head counts)."""
    _transformers()
    return _compare(model, _reference(model, _base_config(model)))


def _uniform_config(model: nn.Module, found: dict):
    """A copy of the base config with one width value (``intermediate_size``, ...) changed that explains
    every change, or None."""
    if found["attributes"] or not found["linear"]:
        return None
    config = _base_config(model)
    ref = dict(_reference(model, config).named_modules())
    changes = [
        (old, new)
        for name, dims in found["linear"].items()
        for old, new in zip((ref[name].in_features, ref[name].out_features), dims)
        if old != new
    ]
    for key in WIDTH_KEYS:
        value = getattr(config, key, None)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        widths = {new for old, new in changes if old == value}
        if len(widths) != 1 or any(old != value for old, _ in changes):
            continue
        trial = copy.deepcopy(config)
        setattr(trial, key, widths.pop())
        if _compare(model, _reference(model, trial)) == {"linear": {}, "attributes": {}}:
            return trial
    return None


def _render(config_cls: type, model_cls: type, model_type: str) -> str:
    return _TEMPLATE.format(
        config_module=config_cls.__module__,
        config_cls=config_cls.__name__,
        model_module=model_cls.__module__,
        model_cls=model_cls.__name__,
        model_type=f"mipp_{model_type}",
    )


def save_pretrained(model: nn.Module, path: str, **kwargs) -> str:
    """Save a pruned transformers model to the folder ``path`` so that it loads back (see the module
    docstring for the three cases); ``kwargs`` go to ``model.save_pretrained``. Returns ``path``."""
    _transformers()
    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise TypeError(f"{type(model).__name__} is not a transformers PreTrainedModel (no save_pretrained)")
    found = layout(model)
    code = os.path.join(path, CODE_FILE)
    if not found["linear"] and not found["attributes"]:
        model.config = _base_config(model)
        getattr(model, "save_pretrained")(path, **kwargs)  # noqa: B009 (a Module attribute, not typed)
        _remove(code)
        return path
    uniform = _uniform_config(model, found)
    if uniform is not None:
        model.config = uniform
        getattr(model, "save_pretrained")(path, **kwargs)  # noqa: B009 (a Module attribute, not typed)
        _remove(code)
        return path
    config_cls, model_cls = _base_classes(model)
    base = _base_config(model)
    classes = _classes(config_cls, model_cls, base.model_type)
    config = classes["config"](mipp_layout=found, mipp_base=_names(config_cls, model_cls), **_plain(base))
    config.auto_map = {
        "AutoConfig": f"{CODE_FILE[:-3]}.Mipp{config_cls.__name__}",
        "AutoModel": f"{CODE_FILE[:-3]}.Mipp{model_cls.__name__}",
    }
    config.architectures = [f"Mipp{model_cls.__name__}"]
    model.config = config
    os.makedirs(path, exist_ok=True)
    getattr(model, "save_pretrained")(path, **kwargs)  # noqa: B009
    with open(code, "w") as f:
        f.write(_render(config_cls, model_cls, base.model_type))
    return path


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def _names(config_cls: type, model_cls: type) -> dict:
    return {
        "config": f"{config_cls.__module__}.{config_cls.__name__}",
        "model": f"{model_cls.__module__}.{model_cls.__name__}",
    }


def _plain(config) -> dict:
    data = config.to_dict()
    for key in ("model_type", "transformers_version", LAYOUT, BASE, "auto_map"):
        data.pop(key, None)
    return data


_CACHE: dict[tuple[type, type], dict[str, type]] = {}


def _classes(config_cls: type, model_cls: type, model_type: str) -> dict[str, type]:
    """mipp's config and model subclasses of the given classes, from the same source as the file written
    beside a checkpoint (built once per pair of classes)."""
    key = (config_cls, model_cls)
    if key not in _CACHE:
        module = types.ModuleType("mipp_pruned")
        exec(compile(_render(config_cls, model_cls, model_type), CODE_FILE, "exec"), module.__dict__)
        _CACHE[key] = {
            "config": getattr(module, f"Mipp{config_cls.__name__}"),
            "model": getattr(module, f"Mipp{model_cls.__name__}"),
        }
    return _CACHE[key]


def _import(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def from_pretrained(path: str, **kwargs) -> nn.Module:
    """A model saved by :func:`save_pretrained` (or any transformers checkpoint), without running code from
    the folder: a pruned layout is built by mipp's own copy of ``mipp_pruned.py``. ``kwargs`` go to the
    model class's ``from_pretrained``."""
    transformers = _transformers()
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} holds no readable config.json ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or LAYOUT not in data:
        return transformers.AutoModel.from_pretrained(path, **kwargs)
    base = data.get(BASE)
    if not isinstance(base, dict) or not {"config", "model"} <= set(base):
        raise ValueError(f"{config_path}: field {BASE!r} must name the original config and model classes")
    config_cls, model_cls = _import(base["config"]), _import(base["model"])
    if not (issubclass(config_cls, transformers.PreTrainedConfig) and issubclass(model_cls, nn.Module)):
        raise ValueError(f"{config_path}: field {BASE!r} does not name transformers classes: {base}")
    model_type = str(data.get("model_type", "")).removeprefix("mipp_")
    classes = _classes(config_cls, model_cls, model_type)
    model_cls_: Any = classes["model"]
    return model_cls_.from_pretrained(path, **kwargs)
