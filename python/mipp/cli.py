"""Command-line interface: `mipp prune` (the MIPP pruning experiment, the README's main job) and
`mipp mi-demo` (KSG estimates against closed forms and an independent oracle)."""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mipp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("mi-demo", help="estimate MI on generated data and on sklearn's digits, against "
                                       "the closed form and an independent k-d tree oracle")
    demo.add_argument("--n", type=int, default=4000, help="samples for the Gaussian checks")
    demo.add_argument("--k", type=int, default=3)
    prune = sub.add_parser("prune", help="train a LeNet on offline MNIST digits, prune it with MIPP (after "
                                         "training and at init), and compare with the least-squares screen, "
                                         "random, L1 and Taylor at the same per-group counts, re-fitted alike",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    prune.add_argument("--model", choices=["lenet", "lenet5", "lenet300"], default="lenet",
                       help="lenet: 8/16/32 CNN; lenet5: 6-16-120-84; lenet300: 784-300-100-10")
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--tolerance", type=float, nargs="+", default=[0.2, 0.5, 1.0],
                       help="nats a node may add through the tolerance channel and still be removed")
    prune.add_argument("--noise", type=float, default=0.01,
                       help="tolerance-channel noise, a fraction of the consumers' pre-activation variance")
    prune.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of each removal")
    prune.add_argument("--setting", nargs="+", choices=["trained", "init"], default=["trained", "init"])
    prune.add_argument("--k", type=int, default=3, help="KSG neighbours")
    prune.add_argument("--n-samples", type=int, default=1000, help="activations per group (N)")
    prune.add_argument("--methods", nargs="+", default=["mipp", "screen", "random", "l1", "taylor"],
                       choices=["mipp", "screen", "random", "l1", "taylor"])
    prune.add_argument("--epochs", type=int, default=3)
    prune.add_argument("--finetune-epochs", type=int, default=1)
    prune.add_argument("--n-train", type=int, help="training images used (default: all 4,000)")
    prune.add_argument("--no-refit", action="store_true", help="fold the removed nodes' mean contributions "
                       "into the consumers' biases instead of the least-squares re-fit (every method alike)")
    prune.add_argument("--csv", help="write the result rows to this CSV file")
    prune.add_argument("--plot", help="write a PNG of the first MIPP selection's report")
    prune.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "mi-demo":
        from mipp.demo import run_demo
        return run_demo(n=args.n, k=args.k)
    if args.command == "prune":
        from mipp.pruning.experiment import Config, main as run_experiment, write_csv
        cfg = Config(model=args.model, seed=args.seed, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                     tolerances=tuple(args.tolerance), settings=tuple(args.setting), k=args.k, alpha=args.alpha,
                     noise=args.noise, n_samples=args.n_samples, n_train=args.n_train, refit=not args.no_refit,
                     methods=tuple(args.methods), progress=not args.no_progress, plot=args.plot)
        rows = run_experiment(cfg)
        if args.csv:
            write_csv(rows, args.csv)
        return 0
    return 2
