"""``python -m daxfs.bench NAME [options]``: dispatch to the benchmark modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import BENCHMARKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m daxfs.bench",
        description="daxfs benchmarks.  Each prints a Rich table and a plain-text block "
        "(with the exact command line) to paste into a README.",
        epilog="Run 'python -m daxfs.bench NAME --help' for what a benchmark measures.",
    )
    sub = parser.add_subparsers(dest="bench", metavar="NAME", title="benchmarks")
    for name, modname in BENCHMARKS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(run=mod.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bench is None:
        parser.print_help()
        return 0
    args.argv = argv
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
