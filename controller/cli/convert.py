"""``stepwise convert FILE...``: write Stepwise manifests from Argo Rollouts or Flagger ones.

The I/O edge of :mod:`controller.convert`: read and parse the files, convert them all at
once (a Canary's MetricTemplates and Deployment may be in other files), write the result
to stdout or one file per input under ``-o DIR``, and print one line per thing not
carried over on stderr (``FILE: Kind/name: field: why``).

Exit codes, as ``stepwise lint``'s: 0 when everything carried over, 1 when anything was
dropped, 2 when an input could not be read (not UTF-8, not YAML) or none of them holds an
Argo Rollouts or Flagger object. A file without one (a Deployment a Canary targets, say)
is read for context and written back unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from controller.convert import Options, convert, is_peer

EXIT_DROPPED = 1
EXIT_UNREADABLE = 2


def read_documents(path: str) -> tuple[list[Any] | None, str | None]:
    """The parsed documents of ``path`` (``-``: stdin), or None and why it is unreadable."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        docs = [d for d in yaml.safe_load_all(data.decode("utf-8")) if d is not None]
    except OSError as exc:
        return None, f"cannot read: {exc.strerror}"
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start}): save it as UTF-8"
    except yaml.YAMLError as exc:
        return None, f"not valid YAML: {exc}".replace("\n", " ")
    return docs, None


class _Dumper(yaml.SafeDumper):
    """YAML without anchors and aliases: a repeated step is written out each time."""

    def ignore_aliases(self, data: Any) -> bool:
        """Never share a node."""
        return True


def dump(docs: list[dict[str, Any]]) -> str:
    """Documents as one YAML stream (keys in the order written, no aliases)."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _out_name(path: str, taken: set[str]) -> str:
    """The output file name of input ``path`` under ``-o DIR`` (unique within the run)."""
    base = "stdin.yaml" if path == "-" else Path(path).name
    name, n = base, 1
    while name in taken:
        n += 1
        stem, dot, ext = base.rpartition(".")
        name = f"{stem}-{n}.{ext}" if dot else f"{base}-{n}"
    taken.add(name)
    return name


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert the files; see the module docstring for output and exit codes."""
    inputs: dict[str, list[Any]] = {}
    unreadable = False
    for path in args.files:
        docs, why = read_documents(str(path))
        if docs is None:
            print(f"{path}: {why}", file=sys.stderr)
            unreadable = True
            continue
        inputs[str(path)] = docs
    if inputs and not any(is_peer(d) for docs in inputs.values() for d in docs):
        print(
            f"{', '.join(inputs)}: no Argo Rollouts (argoproj.io) or Flagger (flagger.app) "
            "object: nothing to convert",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    result = convert(inputs, Options(flagger_provider=args.flagger_provider))
    if args.output is not None:
        out_dir = Path(args.output)
        out_dir.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        for source, docs in result.outputs.items():
            (out_dir / _out_name(source, taken)).write_text(dump(docs), encoding="utf-8")
    else:
        chunks = []
        for source, docs in result.outputs.items():
            if docs:
                chunks.append(f"# stepwise convert {source}\n{dump(docs)}")
        sys.stdout.write("---\n".join(chunks))
    for line in result.dropped:
        print(line, file=sys.stderr)
    if unreadable:
        return EXIT_UNREADABLE
    return EXIT_DROPPED if result.dropped else 0


def add_command(sub: Any) -> None:
    """Register ``convert`` on the ``stepwise`` subparsers."""
    parser = sub.add_parser(
        "convert",
        help="write Stepwise manifests from Argo Rollouts or Flagger manifests",
        description="Convert Argo Rollouts (Rollout, AnalysisTemplate, "
        "ClusterAnalysisTemplate) and Flagger (Canary, MetricTemplate) manifests to "
        "Stepwise's; other objects pass through unchanged. Each thing that does not carry "
        "over is one line on stderr. Exit 0 when everything carried over, 1 when anything "
        "was dropped, 2 when a file cannot be read.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' for stdin)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=None,
        help="write one file per input into DIR (default: all to stdout)",
    )
    parser.add_argument(
        "--flagger-provider",
        default="istio",
        metavar="PROVIDER",
        help="mesh provider of Canaries without spec.provider (Flagger's -mesh-provider; "
        "default: istio)",
    )
    parser.set_defaults(func=cmd_convert)
