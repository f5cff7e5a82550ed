"""The ``stepwise`` command (also ``kubectl stepwise`` and ``python -m controller``).

Each subcommand is a small function taking parsed arguments and returning an exit code;
errors a user can act on are printed as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from pydantic import ValidationError

from controller import __version__, logs
from controller.api.validation import is_stepwise, validate_document
from controller.cli import rollouts
from controller.errors import ConfigError
from controller.runtime.manager import Manager
from controller.runtime.measure import PrometheusMeasurer, kube_secret_reader
from controller.runtime.reconciler import Measurer
from controller.settings import Settings


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


def cmd_run(args: argparse.Namespace) -> int:
    """Run the controller until SIGTERM or SIGINT."""
    try:
        settings = Settings(
            kubeconfig=args.kubeconfig,
            namespaces=tuple(args.namespace or ()),
            workers=args.workers,
            leader_election=args.leader_election,
            lease_name=args.lease_name,
            lease_namespace=args.lease_namespace,
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
            identity=args.identity,
            health_port=args.health_port,
            bind_address=args.bind_address,
            log_format=args.log_format,
            log_level=args.log_level,
            prometheus_address=args.prometheus_address,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"stepwise run: invalid settings: {problems}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    try:
        api_client = _api_client(settings.kubeconfig)
        manager = Manager(settings, api_client, measurer=_measurer(settings, api_client))
    except ConfigError as exc:
        print(f"stepwise run: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    manager.run(stop)
    return 0


def _api_client(kubeconfig: str | None) -> Any:
    """An API client from a kubeconfig, the in-cluster configuration, or ~/.kube/config."""
    try:
        if kubeconfig:
            return config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            return config.new_client_from_config()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(f"cannot load Kubernetes configuration: {exc}") from exc


def _measurer(settings: Settings, api_client: client.ApiClient) -> Measurer:
    """Measurements from Prometheus, with Secrets read through the API."""
    return PrometheusMeasurer(
        kube_secret_reader(api_client), default_address=settings.prometheus_address
    )


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"STEPWISE_{name.upper().replace('-', '_')}", default)


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the controller",
        description="Run the controller. Every flag can also be set as STEPWISE_<FLAG> "
        "(for example STEPWISE_LOG_FORMAT=json).",
    )
    run.add_argument("--kubeconfig", default=_env("kubeconfig"))
    run.add_argument(
        "--namespace",
        action="append",
        default=[n for n in (_env("namespaces") or "").split(",") if n],
        help="watch this namespace (repeat for several; default: all)",
    )
    run.add_argument("--workers", type=int, default=int(_env("workers", "4") or 4))
    run.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=(_env("leader_election", "true") or "true").lower() == "true",
    )
    run.add_argument("--lease-name", default=_env("lease_name", "stepwise-controller"))
    run.add_argument("--lease-namespace", default=_env("lease_namespace", "default"))
    run.add_argument(
        "--lease-duration", type=float, default=float(_env("lease_duration", "15") or 15)
    )
    run.add_argument(
        "--renew-deadline", type=float, default=float(_env("renew_deadline", "10") or 10)
    )
    run.add_argument("--retry-period", type=float, default=float(_env("retry_period", "2") or 2))
    run.add_argument("--identity", default=_env("identity") or os.environ.get("POD_NAME"))
    run.add_argument("--health-port", type=int, default=int(_env("health_port", "8081") or 8081))
    run.add_argument("--bind-address", default=_env("bind_address", "0.0.0.0"))  # noqa: S104
    run.add_argument(
        "--log-format", choices=["json", "console", "auto"], default=_env("log_format", "auto")
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=_env("log_level", "info"),
    )
    run.add_argument("--prometheus-address", default=_env("prometheus_address"))
    run.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per command."""
    # Installed as kubectl-stepwise, kubectl runs it as a plugin: ``kubectl stepwise ...``.
    plugin = Path(sys.argv[0]).name.startswith("kubectl-")
    parser = argparse.ArgumentParser(
        prog="kubectl stepwise" if plugin else "stepwise",
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
    _add_run(sub)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    common.add_argument("--context", default=None, help="kubeconfig context")
    common.add_argument("-n", "--namespace", default=None, help="default: the context's")
    rollouts.add_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.func(args)
    except rollouts.CliError as exc:
        print(f"stepwise: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return code
