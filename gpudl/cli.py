"""The ``gpudl`` command line: ``gpudl info`` (more sub-commands live in gpudl/commands/)."""
import argparse
import sys

from . import backend as _backend


def _info(args) -> int:
    """Print the backend that ``GPUDL_BACKEND`` selects, its device and the library versions."""
    import platform
    requested = _backend.requested_backend()
    device = _backend.default_device()
    chosen = _backend.backend_for(device)
    print(f"gpudl {__import__('gpudl').__version__}")
    print(f"python {platform.python_version()} ({platform.machine()})")
    print(f"GPUDL_BACKEND={requested} -> backend {chosen.name}"
          + (" (auto: no usable CUDA GPU, using the CPU)" if requested == "auto" and chosen.name == "numpy" else ""))
    print(f"device: {device} ({chosen.describe_device(device)})")
    print(f"numpy {_backend.NUMPY.version()}")
    print(f"cupy {_backend.installed_cupy_version() or 'not installed'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="gpudl", description="gpudl: deep learning on NumPy (CPU) or CuPy (GPU)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="show the backend, device and versions")
    info.set_defaults(run=_info)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``gpudl`` console script; returns the exit code (0 ok, 1 failure, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except _backend.BackendError as exc:
        print(f"gpudl: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
