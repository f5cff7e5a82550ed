"""The ``stepwise`` command (also ``kubectl stepwise`` and ``python -m controller``).

Each subcommand is a small function taking parsed arguments and returning an exit code;
errors a user can act on are printed as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from controller import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="stepwise",
        description="Stepwise: progressive canary delivery for Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"stepwise {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0
