"""What happens to the consumers when nodes go: the mean fold, the least-squares re-fit, and masks.

Every selection (MIPP's or a baseline's) gets the same treatment:

* **mean fold** (default): a removed node's average contribution W[:, c] * mean(x_c) is added to the
  consumer's bias, so the consumer's mean pre-activation is unchanged (for a convolution, the mean of its
  receptive-field features gives the mean response over positions);
* **least-squares re-fit** (``refit=inputs``): for each consumer, in execution order, the weights on the kept
  inputs and the bias that best reproduce the *original* model's pre-activations, with the inputs taken from
  the pruned model (so upstream errors are compensated, as in He, Zhang & Sun 2017), solved from the normal
  equations with a small ridge (``ridge`` times the mean feature variance) for rank deficiency.

Both write an intercept. A consumer built without a bias whose output only a BatchNorm reads (conv -> BN, as in
every ResNet) keeps no bias: its intercept b goes into the norm's running mean (rm - b), which is the same
function in eval mode, and in train mode the batch mean cancels it as it would cancel a bias; so the pruned
state_dict loads into the architecture rebuilt at the new widths (``selection.rebuild``). Other bias-free
consumers get a bias.

Both work on a physically pruned copy and on a ``torch.nn.utils.prune``-masked model alike.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.grad import conv2d_weight
from torch.nn.utils import prune as torch_prune
from tqdm.auto import tqdm

from mipp.pruning.capture import (
    as_images,
    batch_size,
    channel_columns,
    conv_moments,
    feature_rows,
    flat_weight,
    gram_matrix,
    image_geometry,
    kernel_size,
    slice_batch,
    to_device,
    token_mask,
    valid_rows,
)
from mipp.pruning.structure import Structure, build_graph, eval_mode, run_model

_BatchNorm = nn.modules.batchnorm._BatchNorm


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


def intercept_sinks(model: nn.Module, example, names) -> dict[str, str]:
    """{consumer: BatchNorm} for the consumers in ``names`` built without a bias whose output is read by one
    BatchNorm and nothing else (Torch-Pruning's dependency graph of ``model`` on ``example``, built only when
    such a consumer exists): their intercepts go into that norm's running mean (see the module's notes)."""
    modules = dict(model.named_modules())
    bias_free = [n for n in names if _param(modules[n], "bias") is None]
    if not bias_free:
        return {}
    graph, module_names = build_graph(model, example), {m: n for n, m in modules.items()}
    sinks = {}
    for name in bias_free:
        readers = graph.module2node[modules[name]].outputs
        if len(readers) == 1 and isinstance(readers[0].module, _BatchNorm):
            sinks[name] = module_names[readers[0].module]
    return sinks


@torch.no_grad()
def _add_intercept(modules: dict, name: str, delta: torch.Tensor, sinks: dict[str, str], rows=None) -> None:
    """Add ``delta`` to consumer ``name``'s intercept (its ``rows``, all when None; ``modules``: the model's
    named modules): into its bias, or as -delta into the running mean of the BatchNorm that alone reads it
    (``sinks``); a norm that keeps no running statistics subtracts every batch's mean, so a per-channel
    shift before it changes nothing."""
    m = modules[name]
    if name in sinks:
        norm = modules[sinks[name]]
        if norm.running_mean is not None:
            target, delta = norm.running_mean, -delta
        else:
            return
    else:
        target = _ensure_bias(m)
    if rows is None:
        target.add_(delta.to(target.dtype))
    else:
        target[rows.to(target.device)] += delta.to(target.dtype)


@torch.no_grad()
def fold_means(model: nn.Module, plan, means: dict[str, torch.Tensor], sinks: dict[str, str]) -> None:
    """In place on the full-size (or masked) model: each consumer's intercept absorbs the removed inputs' mean
    contribution (``means``: consumer name -> mean feature row, as captured; ``sinks``: intercept_sinks)."""
    modules = dict(model.named_modules())
    for name, (cut, _, _) in plan.items():
        if name not in means:
            raise ValueError(f"no recorded mean input for {name!r}: fold needs the selection's means")
        m = modules[name]
        cols = _columns(m, cut)
        w = _param(m, "weight").detach().reshape(_n_out(m), -1)
        _add_intercept(modules, name, w[:, cols].double() @ means[name].to(w.device)[cols], sinks)


@torch.no_grad()
def refit_moments(model: nn.Module, original: nn.Module, plan, stats: dict, ridge: float = 1e-6) -> None:
    """In place on the physically pruned ``model``: each planned consumer's weights on its kept inputs and its
    bias re-fitted by least squares to ``original``'s pre-activations from the captured moments of its inputs
    (``stats``: consumer name -> ConsumerStats over every row), with no pass over data. Unlike :func:`refit`
    the inputs are the dense model's (each consumer alone, no correction of upstream drift): the cheap
    estimate of what a re-fit recovers that the budget refinement judges candidates by."""
    mods, orig_mods = dict(model.named_modules()), dict(original.named_modules())
    for name, (_, kept_in, kept_out) in plan.items():
        st, om = stats[name], orig_mods[name]
        w = flat_weight(om).double().cpu()
        b = om.bias.detach().double().cpu() if om.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        if kept_out is not None:
            w, b = w[kept_out], b[kept_out]
        # second moments of [x, 1] over the rows, the kept columns' rows of them only (the whole (F + 1)^2 matrix
        # was built at every candidate of a refinement); the target is z = W x + b
        k = _columns(om, kept_in)
        one = torch.ones(1, dtype=torch.float64)
        mk = st.mean[k]
        rows = torch.cat([st.cov[k] + torch.outer(mk, st.mean), mk[:, None]], 1)
        rows = torch.cat([rows, torch.cat([st.mean, one])[None]], 0)
        cross = rows @ torch.cat([w, b[:, None]], 1).T
        _solve_into(
            mods, name, rows[:, torch.cat([k, torch.tensor([len(st.mean)])])], cross, ridge, False, None, None, {}
        )


class _Stop(Exception):
    """Raised by a hook to end a forward pass once what it was run for has been seen."""


# Bytes of module outputs the re-fit keeps between consumers (over all batches); above it a batch's passes run
# whole. A ResNet-18 consumer in its third stage keeps about 0.8 MB per 32 x 32 image.
REPLAY_CACHE_BYTES = 2 << 30


class _Frame:
    """One module call open on the stack of a pass: its call index, the calls of every module inside it, and
    its children that finished, each (key, output, its version counters, the calls inside it)."""

    def __init__(self, module: nn.Module | None, index: int, args=()):
        self.module, self.index = module, index
        self.counts: dict[nn.Module, int] = {}
        self.children: list[tuple] = []
        self.storages = {_storage(t) for t in _tensors(args) or []}  # of the call's input tensors
        self.state: tuple = _state(module) if module is not None else ()
        self.changed = False  # the call, or one inside it, changed a module's attributes or buffers


class _Replay:
    """The re-fit's passes without recomputing what did not change. Consumer i's pass runs the pruned model up
    to consumer i with consumers 0 .. i-1 already re-fitted; consumer i + 1's pass would compute the same
    values again up to consumer i, whose weights alone changed. So when consumer i starts, the module calls
    that have finished (the finished children of every call still open: a cut of the computation before it)
    are kept with their outputs, and in the next pass over the same batch each such call returns its output
    instead of running (its inside calls counted as made, so that later calls keep their indices).

    A call is replayed only where that is the same as running it: its output is tensors (or tuples / lists of
    them and Nones) that nothing has modified in place since the call (their version counters, checked when
    kept and again when replayed; nothing is copied), none sharing its inputs' storage (an in-place module's
    effect on its input would be lost), no module inside it rebinding an attribute or writing a buffer (that
    change would be lost), none given an argument other than tensors, numbers, strings and tuples of them (a
    list, a dict or another object it might change, such as a cache); and nothing is kept where a module run
    before the consumer shares a parameter with it (its re-fit writes its weights in place). Anything else
    runs as before; the weights come out bit-identical. Not seen: a change to an object a module reaches other
    than through its arguments, its attributes' bindings and its plain list / dict / set attributes (a global,
    say).
    On the full-width ResNet-18 the re-fit's forward passes went from every stage before each consumer to
    the block it is in."""

    def __init__(self):
        self.kept: dict[int, dict[tuple[nn.Module, int], tuple]] = {}  # batch -> (module, call) -> output
        self.nbytes: dict[int, int] = {}

    def run(self, index: int, consumer: nn.Module, forward: Callable[[], None]) -> None:
        """``forward()`` (one pass of the pruned model on batch ``index``, ending after ``consumer``), replaying the
        calls kept by the previous pass over this batch and keeping those finished when ``consumer`` starts."""
        replay = self.kept.pop(index, {})
        self.nbytes.pop(index, None)
        counts: dict[nn.Module, int] = {}
        stack = [_Frame(None, 0)]
        thread = threading.get_ident()

        def pre(module, args):
            if threading.get_ident() != thread:  # another thread's model
                return
            i = counts.get(module, 0)
            counts[module] = i + 1
            for f in stack:
                f.counts[module] = f.counts.get(module, 0) + 1
            if module is consumer and i == 0:  # its first call (no kept call holds it: it ran after them)
                self._keep(index, stack, module, counts)
            stack.append(_Frame(module, i, args))

        def post(module, args, output):
            if threading.get_ident() != thread:
                return
            frame = stack.pop()
            if frame.module is not module:  # a call the stack lost track of: keep nothing from this pass
                raise _Untracked
            # a call that changes module state (self.h = ..., a buffer written) would lose that when replayed
            frame.changed |= _state(module) != frame.state
            stack[-1].changed |= frame.changed
            tensors = _tensors(output) or []
            ok = not frame.changed and bool(tensors)
            ok = ok and not any(t.is_inference() or _storage(t) in frame.storages for t in tensors)
            versions = [t._version for t in tensors] if ok else None
            stack[-1].children.append(((module, frame.index), output if ok else None, versions, frame.counts))

        def replayed(module):
            original = module.__dict__.get("forward")

            def fn(*args, **kwargs):
                top = stack[-1]
                hit = replay.get((module, top.index)) if top.module is module else None
                # not kept, changed in place since, or given an object it might change (a cache): run it
                if hit is None or _versions(hit[0]) != hit[1] or not _plain((*args, *kwargs.values())):
                    return (original or type(module).forward.__get__(module))(*args, **kwargs)
                output, _, inside = hit
                for m, c in inside.items():  # the calls the skipped call would have made
                    counts[m] = counts.get(m, 0) + c
                    for f in stack:
                        f.counts[m] = f.counts.get(m, 0) + c
                return output  # the same tensors: their versions tell whether the rest of a pass changed them

            return original, fn

        patched = {}
        for module, _ in replay:
            if module not in patched:
                patched[module], module.forward = replayed(module)
        handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(pre),
            torch.nn.modules.module.register_module_forward_hook(post),
        ]
        untracked = False
        try:
            forward()
        except _Untracked:
            untracked = True
        finally:
            for h in handles:
                h.remove()
            for module, original in patched.items():
                if original is None:
                    del module.forward
                else:
                    module.forward = original
        if untracked:  # again, untracked: nothing replayed, nothing kept
            self.kept.pop(index, None)
            self.nbytes.pop(index, None)
            forward()

    def _keep(self, index: int, stack: list[_Frame], consumer: nn.Module, called: dict[nn.Module, int]) -> None:
        """Keep the finished children of the open calls, but not those changed in place since they ended; and
        nothing when a module called before the consumer shares a parameter with it (tied weights: the re-fit
        writes the consumer's in place, so what was computed from them would be stale)."""
        tied = {_storage(p) for p in consumer.parameters()}
        if any(_storage(p) in tied for m in called if m is not consumer for p in m.parameters(recurse=False)):
            return
        kept, nbytes = {}, 0
        for f in stack:
            for key, output, versions, inside in f.children:
                if versions is None:  # not replayable: it runs again
                    continue
                tensors = _tensors(output) or []
                if [t._version for t in tensors] != versions:  # changed in place since: it runs again
                    continue
                kept[key] = (output, versions, dict(inside))
                nbytes += sum(t.numel() * t.element_size() for t in tensors)
        if nbytes + sum(self.nbytes.values()) <= REPLAY_CACHE_BYTES:
            self.kept[index], self.nbytes[index] = kept, nbytes


class _Untracked(Exception):
    """A module call ended that was not the last one begun (a forward the hooks did not see whole)."""


def _tensors(x) -> list[torch.Tensor] | None:
    """The tensors of a tensor or a (nested) plain tuple / list of tensors and Nones; None for anything else."""
    if isinstance(x, torch.Tensor):
        return [x]
    if x is None:
        return []
    if type(x) in (tuple, list):
        out: list[torch.Tensor] = []
        for v in x:
            t = _tensors(v)
            if t is None:
                return None
            out += t
        return out
    return None


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _state(module: nn.Module) -> tuple:
    """What a call could change of its module: the objects its attributes and buffers are bound to, the
    buffers' version counters, and the contents of plain container attributes. A pruned parameter
    (torch.nn.utils.prune) is left out: its mask's pre-hook rebinds it from ``<name>_orig`` and the mask at
    every call, the same tensor again."""
    return (
        tuple((k, id(v), _contents(v)) for k, v in module.__dict__.items() if f"{k}_orig" not in module._parameters),
        tuple((k, id(b), b._version if b is not None else 0) for k, b in module._buffers.items()),
    )


def _contents(v) -> tuple:
    """Enough of a plain list / dict / set attribute to see it appended to or assigned into (a cache or a log a
    module keeps): its length and what its last item or its values are bound to."""
    if type(v) is list:
        return (len(v), id(v[-1]) if v else 0)
    if type(v) is dict:
        return (len(v), *map(id, v.values())) if len(v) <= 64 else (len(v),)
    if type(v) is set:
        return (len(v),)
    return ()


def _plain(x) -> bool:
    """An argument a call cannot change outside itself: a tensor (versions are checked), a number, a string,
    None, or a tuple of them (a list or a dict could be appended to)."""
    if x is None or isinstance(x, (torch.Tensor, bool, int, float, str, torch.dtype, torch.device)):
        return True
    return type(x) is tuple and all(_plain(v) for v in x)


def _versions(x) -> list[int]:
    """The version counters of :func:`_tensors` (bumped by every in-place change of a tensor or its views)."""
    return [t._version for t in _tensors(x) or []]


def _forward(model: nn.Module, batch, hooks: dict[nn.Module, Callable], stops: list[nn.Module]) -> None:
    """Run ``model`` on ``batch`` with forward ``hooks`` (module -> fn(inputs, output)), ending the pass once
    every module of ``stops`` has run (the rest of the model is not computed)."""
    pending = set(stops)

    def wrap(module, fn):
        def hook(mod, inputs, output):
            fn(inputs, output)
            pending.discard(mod)
            if not pending:
                raise _Stop

        return hook

    handles = [m.register_forward_hook(wrap(m, fn)) for m, fn in hooks.items()]
    handles += [m.register_forward_hook(wrap(m, lambda i, o: None)) for m in pending if m not in hooks]
    try:
        run_model(model, batch)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()


def _stream_norm(model: nn.Module, consumer: nn.Module, batch) -> nn.Module | None:
    """The LayerNorm whose input is the consumer's output plus a residual stream (post-LN: LN(h + z); pre-LN:
    the next block's LN of h + z), found by perturbing the output: the first LayerNorm run after the consumer
    whose input moves by exactly the perturbation. None when there is none (no residual add, or a nonlinear
    or scaled path in between)."""
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    if not norms:
        return None
    seen: dict[int, list] = {0: [], 1: []}
    delta = {}

    def record(trial):
        def fn(module, inputs, output):
            seen[trial].append((module, inputs[0].detach().clone()))

        return fn

    def perturb(module, inputs, output):
        delta["d"] = torch.randn_like(output) * (output.detach().abs().mean() + 1e-6)
        return output + delta["d"]

    for trial in (0, 1):
        handles = [n.register_forward_hook(record(trial)) for n in norms]
        ran = []
        handles.append(consumer.register_forward_hook(lambda *a: ran.append(len(seen[trial]))))
        if trial:
            handles.append(consumer.register_forward_hook(perturb))
        try:
            with torch.no_grad():
                run_model(model, batch)
        finally:
            for h in handles:
                h.remove()
        start = ran[0] if ran else 0
        seen[trial] = seen[trial][start:]
    for (norm, x0), (_, x1) in zip(seen[0], seen[1]):
        diff = x1 - x0
        if diff.shape == delta["d"].shape and torch.allclose(
            diff, delta["d"], rtol=1e-4, atol=1e-5 * float(x0.abs().max())
        ):
            return norm
        if bool((diff != 0).any()):
            return None  # the perturbation reached a norm some other way first
    return None


# The dense model's targets are captured for as many consecutive consumers as fit in this many bytes, in one
# forward pass per batch (the dense model does not change while the re-fit runs); the pruned model is still
# run once per consumer, since each consumer reads the ones re-fitted before it (from where the consumer before
# it started: :class:`_Replay`). On MiniLM (6 consumers,
# 20,000 token rows) every target fits and the re-fit's dense passes fall from 6 to 1.
TARGET_CACHE_BYTES = 1 << 30


@torch.no_grad()
def refit(
    model: nn.Module,
    original: nn.Module,
    batches: list,
    plan,
    order: list[str],
    masked: bool,
    sinks: dict[str, str],
    ridge: float = 1e-6,
    stream: bool = True,
    progress: bool = False,
) -> None:
    """In place on ``model`` (pruned copy, or masked when ``masked``): least-squares re-fit of each planned
    consumer, in execution ``order``, from ``model``'s inputs to ``original``'s pre-activations
    (``progress``: a tqdm bar over consumers x batches).

    ``stream``: where the consumer's output is added to a residual stream that a LayerNorm reads next, the
    target is what restores that LayerNorm's input, z_orig + (stream_orig - stream_pruned), so the re-fit
    also corrects the error the pruned layers before it left in the stream (as Kwon et al. 2022 and K-prune
    re-fit toward the dense sublayer output plus the residual drift). Every pass ends at the last module it
    is run for (the rest of the model is not computed). Padding tokens (``attention_mask`` of a Mapping
    batch) are left out of the normal equations, as capture leaves them out of the statistics."""
    mods, orig_mods = dict(model.named_modules()), dict(original.named_modules())
    device = next(model.parameters()).device
    planned = [n for n in order if n in plan]
    # which norm reads a stream is a property of the graph: two samples show it
    probe = to_device(slice_batch(batches[0], min(2, batch_size(batches[0]))), device)
    bar = tqdm(
        total=len(planned) * len(batches),
        desc="MIPP re-fit",
        unit="batch",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    with bar, eval_mode(model), eval_mode(original):
        norms = {
            n: _stream_norm(original, orig_mods[n], probe) if stream and plan[n][2] is None else None for n in planned
        }
        # the dense model's side of each target: the consumer's output, or the input of the norm reading its stream
        taps = {n: (orig_mods[n], 1) if norms[n] is None else (norms[n], 0) for n in planned}
        per_sample = _tap_bytes(original, probe, taps)
        n_samples = sum(batch_size(b) for b in batches)
        dense: dict[str, list[torch.Tensor]] = {}
        replay = _Replay()
        for i, name in enumerate(planned):
            if name not in dense:
                window, used = [name], per_sample[name] * n_samples
                for nxt in planned[i + 1 :]:
                    used += per_sample[nxt] * n_samples
                    if used > TARGET_CACHE_BYTES:
                        break
                    window.append(nxt)
                dense = _dense_targets(original, batches, device, {n: taps[n] for n in window}, orig_mods)
            _, kept_in, kept_out = plan[name]
            m, norm = mods[name], norms[name]
            cols = _columns(m, kept_in) if masked else None
            pnorm = mods[_name_of(original, norm)] if norm is not None else None
            gram = cross = None
            for b, (batch, orig) in enumerate(zip(batches, dense.pop(name))):
                batch = to_device(batch, device)
                mask = token_mask(batch)
                got: dict[str, torch.Tensor] = {}
                hooks = {m: lambda inputs, output: got.update(x=inputs[0], zp=output)}
                if pnorm is not None:
                    hooks[pnorm] = lambda inputs, output: got.__setitem__("sp", inputs[0])
                stops = [pnorm if pnorm is not None else m]
                replay.run(b, m, lambda: _forward(model, batch, hooks, stops))
                # a stream read by a norm: restore the norm's input, z + h = (s - sp) + zp (padding tokens, a
                # Mapping batch's attention_mask, stay out, as they do from capture)
                target = orig
                if norm is not None:
                    target = orig - valid_rows(m, got["sp"], mask) + valid_rows(m, got["zp"], mask)
                g, c = _normal_equations(m, valid_rows(m, got["x"], mask), target, kept_out, cols)
                gram = g if gram is None else gram + g
                cross = c if cross is None else cross + c
                bar.update()
            assert gram is not None and cross is not None  # materialise() gives at least one batch
            _solve_into(mods, name, gram, cross, ridge, masked, cols, kept_out, sinks)


def _run_taps(model: nn.Module, batch, taps: dict) -> dict[str, torch.Tensor]:
    """Each tap's tensor (``taps``: name -> (module, 0 input / 1 output), the module's first call) from one
    pass of ``model`` on ``batch`` that ends once every tapped module has run; copied, so that an in-place
    operation later in the pass (a ReLU(inplace=True)) cannot change what was kept."""
    wanted: dict[nn.Module, set[int]] = {}
    for mod, which in taps.values():
        wanted.setdefault(mod, set()).add(which)
    seen: dict[nn.Module, dict[int, torch.Tensor]] = {}

    def keep(mod):
        def fn(inputs, output):
            if mod not in seen:
                seen[mod] = {w: (inputs[0], output)[w].clone() for w in wanted[mod]}

        return fn

    _forward(model, batch, {mod: keep(mod) for mod in wanted}, list(wanted))
    return {name: seen[mod][which] for name, (mod, which) in taps.items()}


def _tap_bytes(model: nn.Module, probe, taps: dict) -> dict[str, float]:
    """Bytes per sample of each tap, measured on the probe batch (an estimate: a sequence's length varies)."""
    n = batch_size(probe)
    return {name: t.numel() * t.element_size() / n for name, t in _run_taps(model, probe, taps).items()}


def _dense_targets(original: nn.Module, batches: list, device, taps: dict, orig_mods: dict) -> dict[str, list]:
    """Per consumer of ``taps``, its tapped tensor in every batch without the padding rows (one pass of the
    dense model per batch)."""
    out: dict[str, list] = {name: [] for name in taps}
    for batch in batches:
        batch = to_device(batch, device)
        mask = token_mask(batch)
        for name, t in _run_taps(original, batch, taps).items():
            out[name].append(valid_rows(orig_mods[name], t, mask))
    return out


def _name_of(model: nn.Module, module: nn.Module | None) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def _normal_equations(m: nn.Module, x: torch.Tensor, target: torch.Tensor, kept_out, cols):
    """The float64 Gram of [rows, 1] and its product with the target rows, for the consumer ``m`` reading
    ``x`` (its input) whose pre-activations should be ``target`` (its output's shape) at the outputs
    ``kept_out`` (None: all); ``cols`` restricts the rows' columns (a masked model). A stride-1
    convolution's come from its images (the Gram by :func:`conv_moments`, the product as the convolution's
    weight gradient) instead of its receptive-field rows."""
    geo = image_geometry(m, x)
    if geo is None:
        rows, _ = feature_rows(m, x)
        z = target.movedim(1, -1) if isinstance(m, nn.modules.conv._ConvNd) else target
        z = z.reshape(-1, z.shape[-1])
        z = (z if kept_out is None else z[:, kept_out.to(z.device)]).double()
        if cols is not None:
            rows = rows[:, cols.to(rows.device)]
        a = torch.cat([rows.double(), torch.ones(len(rows), 1, dtype=torch.float64, device=rows.device)], 1)
        return gram_matrix(a), a.T @ z
    images, z = as_images(m, x).double(), as_images(m, target)
    z = (z if kept_out is None else z[:, kept_out.to(z.device)]).double()
    sums, gram = conv_moments(images, geo)
    weight_shape = (z.shape[1], images.shape[1], *geo.kernel)
    cross = conv2d_weight(images, weight_shape, z, padding=geo.padding, dilation=geo.dilation)
    cross = cross.reshape(z.shape[1], -1).T  # (F, q), channel-major columns as the rows'
    if cols is not None:
        c = cols.to(gram.device)
        sums, gram, cross = sums[c], gram[c][:, c], cross[c]
    n = float(len(images) * math.prod(geo.out))
    g = torch.cat([torch.cat([gram, sums[:, None]], 1), torch.cat([sums, sums.new_tensor([n])])[None]], 0)
    return g, torch.cat([cross, z.sum((0, 2, 3))[None]], 0)


def _solve_into(modules: dict, name: str, gram, cross, ridge: float, masked: bool, cols, kept_out, sinks) -> None:
    """Solve the normal equations (``ridge`` times the mean feature variance on the diagonal, for rank
    deficiency) and write the weights and intercept of consumer ``name`` (its kept rows and columns when
    ``masked``; the intercept into its BatchNorm's running mean when ``sinks`` names one, else its bias)."""
    m = modules[name]
    diag = gram.diagonal()[:-1]
    scale = float(diag.mean()) if len(diag) else 0.0
    lam = ridge * (scale if scale > 0 else 1.0)  # dead (all-zero) kept inputs: weight 0, not singular
    reg = torch.zeros_like(gram)
    reg.diagonal()[:-1] = lam
    sol = torch.linalg.solve(gram + reg, cross)  # (F + 1, q)
    weight, bias = sol[:-1].T, sol[-1]
    w_param, rows = _param(m, "weight"), None
    if masked:
        assert cols is not None
        rows = kept_out if kept_out is not None else torch.arange(w_param.shape[0])
        flat = w_param.detach().reshape(w_param.shape[0], -1).clone()
        sub = flat[rows.to(flat.device)]
        sub[:, cols.to(flat.device)] = weight.to(flat.dtype)
        flat[rows.to(flat.device)] = sub
        w_param.copy_(flat.reshape(w_param.shape))
    else:
        w_param.copy_(weight.to(w_param.dtype).reshape(w_param.shape))
    if name not in sinks:  # the solved intercept replaces the bias (a sink's running mean is the dense one)
        b_param = _ensure_bias(m)
        b_param[... if rows is None else rows.to(b_param.device)] = 0
    _add_intercept(modules, name, bias, sinks, rows)


def mask_groups(model: nn.Module, example, structure: Structure, removed_nodes: dict[str, list[int]]) -> None:
    """In place: ``torch.nn.utils.prune`` masks that make ``model`` compute what the physically pruned one
    does (``removed_nodes``: per group, the nodes that go; a removed attention head's query / key / value
    rows and output columns are masked, so it contributes nothing, as if removed). For every module of each
    group (Torch-Pruning's dependencies): the parameters of a layer whose output channels go (weight rows,
    bias, batch / layer norm affine parameters, PReLU slopes) and the weight columns of a layer whose inputs
    go. Masking the consumers' columns makes the masked model exact
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

    removed = {
        name: sorted(j for i in nodes for j in structure.groups[name].producers[name][i])
        for name, nodes in removed_nodes.items()
    }
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
