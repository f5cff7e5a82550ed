"""The ``stepwise`` command (also ``kubectl stepwise`` and ``python -m controller``).

Each subcommand is a small function taking parsed arguments and returning an exit code;
errors a user can act on are printed as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from controller import __version__
from controller.api.validation import is_stepwise, validate_document


def cmd_lint(args: argparse.Namespace) -> int:
    """Validate manifests offline; one ``file: kind/name: field: reason`` line a problem."""
    bad = 0
    checked = 0
    for path in args.files:
        try:
            text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
            docs = list(yaml.safe_load_all(text))
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            bad += 1
            continue
        except yaml.YAMLError as exc:
            print(f"{path}: not valid YAML: {exc}".replace("\n", " "), file=sys.stderr)
            bad += 1
            continue
        for doc in docs:
            if not is_stepwise(doc):
                continue
            checked += 1
            for problem in validate_document(doc):
                print(f"{path}: {problem}")
                bad += 1
    if not args.quiet:
        summary = "valid" if bad == 0 else f"{bad} problem(s)"
        print(f"{checked} Stepwise object(s) checked: {summary}", file=sys.stderr)
    return 0 if bad == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="stepwise",
        description="Stepwise: progressive canary delivery for Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"stepwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    lint = sub.add_parser(
        "lint",
        help="validate Rollout and AnalysisTemplate manifests offline",
        description="Validate manifests with the same rules as the API server. "
        "Exit 0 when all are valid, 1 otherwise.",
    )
    lint.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' for stdin)")
    lint.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    lint.set_defaults(func=cmd_lint)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = args.func(args)
    return code
