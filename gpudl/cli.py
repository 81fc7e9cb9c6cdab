"""The ``gpudl`` command line: ``info``, ``train``, ``bench`` and ``tune`` (one module each in gpudl/commands/).

Exit codes: 0 success, 2 bad arguments, 1 failure (with a one-line reason on stderr, or the full
traceback with ``GPUDL_DEBUG=1``).
"""
import argparse
import os
import sys
import traceback

from . import backend as _backend
from .commands import CommandError, bench, info, train, tune


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="gpudl", description="gpudl: deep learning on NumPy (CPU) or CuPy (GPU)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (info, train, bench, tune):
        command.add_parser(commands)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``gpudl`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (_backend.BackendError, CommandError, OSError, ValueError) as exc:
        if os.environ.get("GPUDL_DEBUG") == "1":
            traceback.print_exc()
        else:
            print(f"gpudl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpudl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
