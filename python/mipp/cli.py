"""Command-line interface: `mipp prune` (the MIPP pruning experiment, the README's main job) and
`mipp mi-demo` (KSG estimates against closed forms and an independent oracle)."""
from __future__ import annotations

import argparse


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mipp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("mi-demo", help="estimate MI on generated data and on sklearn's digits, against "
                                       "the closed form and an independent k-d tree oracle")
    demo.add_argument("--n", type=int, default=4000, help="samples for the Gaussian checks")
    demo.add_argument("--k", type=int, default=3)
    prune = sub.add_parser("prune", help="train a LeNet-style CNN on offline MNIST digits, prune it with "
                                         "MIPP (after training and at init), fine-tune, and compare with "
                                         "random / L1 / Taylor channels at the same per-layer sparsity")
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--alpha", type=float, nargs="+", default=[0.01, 0.05, 0.2], help="test level(s)")
    prune.add_argument("--setting", nargs="+", choices=["trained", "init"], default=["trained", "init"])
    prune.add_argument("--k", type=int, default=3)
    prune.add_argument("--n-samples", type=int, default=500, help="activations per layer (N)")
    prune.add_argument("--n-permutations", type=int, default=99, help="surrogates per node test")
    prune.add_argument("--direction", choices=["backward", "forward"], default="backward")
    prune.add_argument("--reduce", choices=["max", "mean"], default="max",
                       help="a conv channel's value per sample: its max or mean over space")
    prune.add_argument("--y-components", type=_optional_int, default=None,
                       help="project Y onto this many principal components ('none': never)")
    prune.add_argument("--z-components", type=_optional_int, default=None,
                       help="project the conditioning set onto this many principal components")
    prune.add_argument("--epochs", type=int, default=3)
    prune.add_argument("--finetune-epochs", type=int, default=1)
    prune.add_argument("--hidden", type=int, default=32, help="width of the hidden Linear layer")
    prune.add_argument("--n-train", type=int, help="training images used (default: all 4,000)")
    prune.add_argument("--no-fold", action="store_true", help="do not fold the removed nodes' mean "
                       "contributions into the consumers' biases (every method alike)")
    prune.add_argument("--csv", help="write the result rows to this CSV file")
    prune.add_argument("--plot", help="write a PNG of the first MIPP selection's report")
    prune.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "mi-demo":
        from mipp.demo import run_demo
        return run_demo(n=args.n, k=args.k)
    if args.command == "prune":
        from mipp.pruning.experiment import Config, main as run_experiment, write_csv
        cfg = Config(seed=args.seed, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                     alphas=tuple(args.alpha), settings=tuple(args.setting), k=args.k,
                     n_samples=args.n_samples, n_permutations=args.n_permutations, direction=args.direction,
                     reduce=args.reduce, y_components=args.y_components, z_components=args.z_components,
                     hidden=args.hidden, n_train=args.n_train, fold=not args.no_fold,
                     progress=not args.no_progress, plot=args.plot)
        rows = run_experiment(cfg)
        if args.csv:
            write_csv(rows, args.csv)
        return 0
    return 2
