"""Command-line interface: `mipp demo` (the README's main job) and its subcommands."""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mipp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="estimate MI on generated data and on sklearn's digits, against "
                                       "the closed form and an independent k-d tree oracle")
    demo.add_argument("--n", type=int, default=4000, help="samples for the Gaussian checks")
    demo.add_argument("--k", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from mipp.demo import run_demo
        return run_demo(n=args.n, k=args.k)
    return 2
