"""The ``pycgn`` command line. Each subcommand lives in its own module, which defines
``register_cli(subparsers)``; bad arguments exit with status 2 and one line on stderr."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

# module -> defines register_cli(subparsers) adding one or more subcommands
COMMAND_MODULES = (
    "pycgn.api",         # generate, grid, interpolate, info
    "pycgn.export",      # export
    "pycgn.synth.command",  # synth
    "pycgn.train",       # train
    "pycgn.evaluate",    # evaluate
)


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    parser = argparse.ArgumentParser(prog="pycgn", description="Counterfactual images from CGNs.")
    parser.add_argument("--version", action="version", version=f"pycgn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that part of pycgn is not there yet
                continue
            raise
        module.register_cli(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the shell's command line, for commands that record how they were run (synth's manifest);
    # an argv passed in code is not one, and those commands then record an equivalent line
    args.argv = sys.argv[1:] if argv is None else None
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .checkpoint import CheckpointError
    try:
        return int(args.func(args) or 0)
    except (UsageError, CheckpointError, ValueError, TypeError, FileNotFoundError, PermissionError,
            IsADirectoryError, NotADirectoryError) as e:
        msg = " ".join(str(e).split())
        print(f"pycgn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pycgn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
