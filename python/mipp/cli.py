"""Command-line interface: `mipp prune` (the MIPP pruning experiment, the README's main job) and
`mipp mi-demo` (KSG estimates against closed forms and an independent oracle)."""

from __future__ import annotations

import argparse
import os
import sys

# What each command needs beyond mipp itself, and the extra that installs it.
NEEDS = {"mi-demo": (["scipy", "sklearn"], "demo"), "prune": (["torch_pruning", "matplotlib"], "demo")}


def _require(command: str) -> None:
    import importlib.util

    modules, extra = NEEDS[command]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"mipp {command} needs {', '.join(missing)}: pip install 'mipp[{extra}]' (or pip install "
            f"{' '.join('scikit-learn' if m == 'sklearn' else m.replace('_', '-') for m in missing)})"
        )


class UsageError(Exception):
    """A problem with the command line or the files it names: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints the whole usage first; one line is enough
        raise UsageError(f"{self.prog}: error: {message}")


def _number(kind: str, low: float, high: float, low_open: bool, high_open: bool, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if value != value or below or above:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    parse.__name__ = kind
    return parse


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")


def main(argv: list[str] | None = None) -> int:
    """The ``mipp`` command; returns the exit code (2, with one line on stderr, for a bad command line,
    a missing or unreadable file, or inputs and weights that do not fit the model)."""
    traceback = "--traceback" in (sys.argv if argv is None else argv)
    try:
        return _main(argv)
    except UsageError as exc:
        if traceback:
            raise
        print(" ".join(str(exc).split()), file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    from mipp import __version__

    parser = _Parser(prog="mipp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mipp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "mi-demo",
        help="estimate MI on generated data and on sklearn's digits, against "
        "the closed form and an independent k-d tree oracle",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--n", type=int, default=4000, help="samples for the Gaussian checks")
    demo.add_argument("--k", type=int, default=3, help="KSG neighbours")
    prune = sub.add_parser(
        "prune",
        help="train a LeNet on offline MNIST digits, prune it with MIPP (after "
        "training and at init), and compare with the least-squares screen, "
        "random, L1 and Taylor at the same per-group counts, re-fitted alike",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prune.add_argument(
        "--model",
        default="lenet",
        help="a built-in experiment (lenet: 8/16/32 CNN; lenet5: 6-16-120-84; lenet300: "
        "784-300-100-10), or your own model as package.module:factory (a callable "
        "returning it), pruned with --inputs and written to --out",
    )
    prune.add_argument("--weights", help="your model: a state_dict file (torch.save) loaded into it")
    prune.add_argument("--inputs", help="your model: a file holding a tensor of input samples (torch.save)")
    prune.add_argument(
        "--out",
        default="mipp-out",
        help="your model: the output folder (pruned.pt, selection.json, report.txt, selection.png)",
    )
    prune.add_argument("--joint", action="store_true", help="decide residual streams against all consumers")
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument(
        "--tolerance",
        type=_number("tolerance", 0, float("inf"), False, True, "a finite number >= 0"),
        nargs="+",
        help="nats a node may add through the tolerance channel and still be removed (the "
        "experiment sweeps 0.2 0.5 1.0 by default; your own model: one value, default 0.2)",
    )
    budget = prune.add_mutually_exclusive_group()
    budget.add_argument(
        "--sparsity",
        type=_number("sparsity", 0, 1, True, True, "in (0, 1)"),
        help="your model: a budget, the fraction of the prunable nodes removed (one ranking and one cut)",
    )
    budget.add_argument(
        "--macs-removed",
        type=_number("macs-removed", 0, 1, True, True, "in (0, 1)"),
        help="your model: a budget, the fraction of the dense MACs removed (Torch-Pruning's count)",
    )
    budget.add_argument(
        "--macs",
        type=_number("macs", 0, 1, True, True, "in (0, 1)"),
        help="deprecated: the fraction of the dense MACs kept; pass --macs-removed (the fraction removed)",
    )
    prune.add_argument(
        "--refine",
        type=_int_at_least(0, "an integer >= 0"),
        default=0,
        help="your model with a budget: calibration-loss evaluations of the end-to-end allocation search "
        "(0: the one-shot cut alone)",
    )
    prune.add_argument("--traceback", action="store_true", help="show Python's traceback of an error")
    prune.add_argument(
        "--noise",
        type=float,
        default=0.01,
        help="tolerance-channel noise, a fraction of the consumers' pre-activation variance",
    )
    prune.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of each removal")
    prune.add_argument("--setting", nargs="+", choices=["trained", "init"], default=["trained", "init"])
    prune.add_argument("--k", type=_positive_int, default=3, help="KSG neighbours")
    prune.add_argument("--n-samples", type=_positive_int, default=1000, help="activations per group (N)")
    prune.add_argument(
        "--methods",
        nargs="+",
        default=["mipp", "screen", "random", "l1", "taylor"],
        choices=["mipp", "screen", "random", "l1", "taylor"],
    )
    prune.add_argument("--epochs", type=int, default=3)
    prune.add_argument("--finetune-epochs", type=int, default=1)
    prune.add_argument("--n-train", type=int, help="training images used (default: all 4,000)")
    prune.add_argument(
        "--no-refit",
        action="store_true",
        help="fold the removed nodes' mean contributions "
        "into the consumers' biases instead of the least-squares re-fit (every method alike)",
    )
    prune.add_argument("--csv", help="write the result rows to this CSV file")
    prune.add_argument("--plot", help="write a PNG of the first MIPP selection's report")
    prune.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        _require(args.command)
    except SystemExit as exc:
        raise UsageError(str(exc)) from None
    if args.command == "mi-demo":
        from mipp.demo import run_demo

        return run_demo(n=args.n, k=args.k)
    if args.command == "prune" and ":" in args.model:
        return prune_own_model(args)
    if args.command == "prune":
        from mipp.experiments.lenet import MODELS, Config, write_csv
        from mipp.experiments.lenet import main as run_experiment

        if args.model not in MODELS:
            parser.error(f"--model must be one of {sorted(MODELS)} or package.module:factory, got {args.model!r}")
        for flag in ("sparsity", "macs_removed", "macs", "inputs", "weights"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} applies to your own model (--model package.module:factory)")
        cfg = Config(
            model=args.model,
            seed=args.seed,
            epochs=args.epochs,
            finetune_epochs=args.finetune_epochs,
            tolerances=tuple(args.tolerance or Config.tolerances),
            settings=tuple(args.setting),
            k=args.k,
            alpha=args.alpha,
            noise=args.noise,
            n_samples=args.n_samples,
            n_train=args.n_train,
            refit=not args.no_refit,
            methods=tuple(args.methods),
            progress=not args.no_progress,
            plot=args.plot,
        )
        rows = run_experiment(cfg)
        if args.csv:
            write_csv(rows, args.csv)
        return 0
    return 2


def load_factory(spec: str):
    """``package.module:factory`` -> the callable (``factory`` may be a dotted attribute path). Modules are
    found in the current folder first, as ``python -m`` finds them (the ``mipp`` console script's own
    sys.path starts at its bin folder)."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"mipp prune: error: --model {spec!r} must be package.module:factory")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"mipp prune: error: cannot import {module_name!r} from --model {spec!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"mipp prune: error: {module_name!r} has no attribute {attr!r} (--model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"mipp prune: error: {spec!r} is not callable")
    return obj


def _load_file(flag: str, path: str):
    """torch.load of a user's file, with every failure one line naming the flag and the file."""
    import torch

    if not os.path.exists(path):
        raise UsageError(f"mipp prune: error: {flag} {path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"mipp prune: error: {flag} {path} is a folder, not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on a foreign or damaged file
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise UsageError(
            f"mipp prune: error: {flag} {path} is not a file torch.save wrote with tensors only ({detail})"
        ) from exc


def _load_weights(model, path: str) -> None:
    import torch

    state = _load_file("--weights", path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(
            f"mipp prune: error: --weights {path} must hold a state_dict (a dict of tensors), got "
            f"{type(state).__name__}"
        )
    own = model.state_dict()
    problems = [
        f"{k} has shape {list(state[k].shape)}, the model's {list(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems += [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UsageError(f"mipp prune: error: --weights {path} does not fit the model: {'; '.join(problems[:3])}{more}")
    model.load_state_dict(state)


def prune_own_model(args) -> int:
    """Select with MIPP on the user's model and inputs; write the pruned model, the selection and the report."""
    import torch

    from mipp.pruning import MIPP

    if not args.inputs:
        raise UsageError("mipp prune: error: --inputs is required with --model package.module:factory")
    if args.tolerance is not None and len(args.tolerance) != 1:
        raise UsageError("mipp prune: error: give one --tolerance for your own model")
    tolerance = args.tolerance[0] if args.tolerance else None
    factory = load_factory(args.model)
    try:
        model = factory()
    except Exception as exc:
        raise UsageError(f"mipp prune: error: {args.model}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"mipp prune: error: {args.model} returned {type(model).__name__}, not a torch.nn.Module")
    if args.weights:
        _load_weights(model, args.weights)
    inputs = _load_file("--inputs", args.inputs)
    if not isinstance(inputs, torch.Tensor):
        raise UsageError(f"mipp prune: error: --inputs must hold a tensor of samples, got {type(inputs).__name__}")
    if inputs.dim() == 0 or len(inputs) < 2:
        raise UsageError(f"mipp prune: error: --inputs {args.inputs} holds {inputs.numel()} value(s), not samples")
    macs_removed = args.macs_removed
    if args.macs is not None:
        macs_removed = 1 - args.macs
        print(
            f"mipp prune: warning: --macs (the fraction kept) is deprecated: pass --macs-removed {macs_removed:.6g}",
            file=sys.stderr,
        )
    try:
        sel = MIPP(
            k=args.k,
            alpha=args.alpha,
            tolerance=tolerance,
            sparsity=args.sparsity,
            macs_removed=macs_removed,
            noise=args.noise,
            n_samples=args.n_samples,
            joint=args.joint,
            seed=args.seed,
            progress=not args.no_progress,
            refine=args.refine,
        ).select(model, inputs)
        small = (
            sel.apply(model)
            if args.no_refit
            else sel.apply(model, refit=inputs[: args.n_samples], progress=not args.no_progress)
        )
    except (ValueError, TypeError) as exc:  # the inputs or settings do not fit the model (named in exc)
        raise UsageError(f"mipp prune: error: {exc}") from exc
    os.makedirs(args.out, exist_ok=True)
    torch.save(small, os.path.join(args.out, "pruned.pt"))
    sel.save(os.path.join(args.out, "selection.json"))
    report = sel.report(model)
    with open(os.path.join(args.out, "report.txt"), "w") as f:
        f.write(report + "\n")
    print(report)
    try:
        sel.plot(os.path.join(args.out, "selection.png"), model)
    except ImportError:
        print("mipp prune: matplotlib is missing, no plot (pip install matplotlib)")
    print(f"wrote {args.out}/pruned.pt (torch.load(..., weights_only=False)), selection.json, report.txt")
    return 0
