"""The ``pycgn`` command line, in one place: each module here registers its subcommands with
``register(subparsers)``, and every subcommand reports bad input the same way, in one line on
stderr with exit status 2 (argparse's own errors included)."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

# pycgn.cli modules, each defining register(subparsers) for one or more subcommands
COMMAND_MODULES = (
    "images",      # generate, grid, interpolate, info
    "export",      # export
    "synth",       # synth
    "benchmark",   # benchmark make, benchmark evaluate
    "train",       # train
    "evaluate",    # evaluate
    "cache",       # cache
    "explore",     # explore
)


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


# What a user can cause with bad input or a bad file: one line, exit 2. Anything else is a bug in
# pycgn and keeps its traceback. (CheckpointError and ExportError are ValueErrors.)
USER_ERRORS = (UsageError, ValueError, TypeError, OSError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors in one line (by default it prints the usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__
    parser = OneLineParser(prog="pycgn", description="Counterfactual images from CGNs.")
    parser.add_argument("--version", action="version", version=f"pycgn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if extra:  # argparse would name the top-level parser; the subcommand is what the user typed
        print(f"pycgn {args.command}: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    # the shell's command line, for commands that record how they were run (synth's manifest); an
    # argv passed in code is not one, and those commands then record an equivalent line
    args.argv = sys.argv[1:] if argv is None else None
    if getattr(args, "quiet", False):
        from .._status import quiet
        quiet(True)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"pycgn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pycgn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
