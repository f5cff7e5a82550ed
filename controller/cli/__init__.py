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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from pydantic import ValidationError

from controller import __version__, logs
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.validation import is_stepwise, validate_document
from controller.cli import convert as convert_cmd
from controller.cli import report as report_cmd
from controller.cli import rollouts
from controller.core import analysis as an
from controller.errors import ConfigError
from controller.runtime.informer import READ_GRACE
from controller.runtime.manager import Manager
from controller.runtime.measure import PrometheusMeasurer, kube_secret_reader
from controller.runtime.measure_job import job_taker
from controller.runtime.measure_web import WebMeasurer
from controller.runtime.measuring import Taker
from controller.settings import Settings


def cmd_lint(args: argparse.Namespace) -> int:
    """Validate manifests offline; one ``file: kind/name: field: reason`` line a problem.

    It agrees with the API server (strict types, nulls dropped, ``metadata.name``) and goes
    further where the server cannot look: every success and failure condition is parsed
    by the runtime's own parser. A file with no Stepwise object, or one that is not UTF-8
    YAML, is a problem too.
    """
    bad = 0
    checked = 0
    for path in args.files:
        try:
            data = sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
            docs = list(yaml.safe_load_all(data.decode("utf-8")))
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            bad += 1
            continue
        except UnicodeDecodeError as exc:
            print(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8", file=sys.stderr)
            bad += 1
            continue
        except yaml.YAMLError as exc:
            print(f"{path}: not valid YAML: {exc}".replace("\n", " "), file=sys.stderr)
            bad += 1
            continue
        ours = [doc for doc in docs if is_stepwise(doc)]
        if not ours:
            print(f"{path}: {_no_object(docs)}", file=sys.stderr)
            bad += 1
        for doc in ours:
            checked += 1
            problems = [str(p) for p in validate_document(doc)]
            if not problems and doc.get("kind") != "Rollout":
                spec = AnalysisTemplateSpec.model_validate(doc["spec"])
                where = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '(unnamed)')}"
                problems = [f"{where}: {f}: {r}" for f, r in an.condition_problems(spec)]
            for problem in problems:
                print(f"{path}: {problem}")
                bad += 1
    if not args.quiet:
        summary = "valid" if bad == 0 else f"{bad} problem(s)"
        print(f"{checked} Stepwise object(s) checked: {summary}", file=sys.stderr)
    return 0 if bad == 0 else 1


def _no_object(docs: list[Any]) -> str:
    """Why a file holds nothing to lint, naming a peer's manifest when it is one."""
    peers = sorted(
        {
            str(d.get("apiVersion"))
            for d in docs
            if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("argoproj.io/")
        }
    )
    hint = (
        f"; it holds {', '.join(peers)} objects: change their apiVersion to stepwise.dev/v1alpha1"
        if peers
        else ""
    )
    return (
        "no Stepwise object (apiVersion stepwise.dev/v1alpha1, kind Rollout, "
        f"AnalysisTemplate or ClusterAnalysisTemplate){hint}"
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run the controller until SIGTERM or SIGINT."""
    try:
        settings = run_settings(args, os.environ)
    except ConfigError as exc:
        print(f"stepwise run: {exc}", file=sys.stderr)
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


def run_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings of ``stepwise run``: each flag, else its ``STEPWISE_<FLAG>``
    environment variable, else the default (``--identity`` falls back to ``POD_NAME``;
    ``STEPWISE_NAMESPACE`` is a comma-separated list). Raises :class:`ConfigError`
    naming the flag or variable a bad value came from."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for flag, field in _RUN_FLAGS.items():
        dest = flag.replace("-", "_")
        given = getattr(args, dest, None)
        name = _env_name(flag)
        if given is not None and given != []:
            values[field], sources[field] = given, f"--{flag}"
        elif environ.get(name, "").strip():
            values[field], sources[field] = environ[name].strip(), f"{name}={environ[name]!r}"
    if "namespaces" in values:
        raw = values["namespaces"]
        items = raw.split(",") if isinstance(raw, str) else raw
        values["namespaces"] = tuple(n.strip() for n in items if n.strip())
    if "identity" not in values and environ.get("POD_NAME"):
        values["identity"], sources["identity"] = environ["POD_NAME"], "POD_NAME"
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{sources.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else ''}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


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


def _measurer(settings: Settings, api_client: client.ApiClient) -> Taker:
    """Measurements from Prometheus, web and Job providers, with Secrets read through the API."""
    return PrometheusMeasurer(
        kube_secret_reader(api_client),
        default_address=settings.prometheus_address,
        web=WebMeasurer(),
        job=job_taker(api_client),
    )


#: ``stepwise run`` flag -> Settings field. Each flag's variable is STEPWISE_<FLAG>.
_RUN_FLAGS: dict[str, str] = {
    "kubeconfig": "kubeconfig",
    "namespace": "namespaces",
    "workers": "workers",
    "leader-election": "leader_election",
    "lease-name": "lease_name",
    "lease-namespace": "lease_namespace",
    "lease-duration": "lease_duration",
    "renew-deadline": "renew_deadline",
    "retry-period": "retry_period",
    "identity": "identity",
    "health-port": "health_port",
    "bind-address": "bind_address",
    "log-format": "log_format",
    "log-level": "log_level",
    "prometheus-address": "prometheus_address",
    "watch-timeout": "watch_timeout",
    "heartbeat-timeout": "heartbeat_timeout",
    "notifications-config": "notifications_config",
    "notifications-namespace": "notifications_namespace",
    "notifications-max-age": "notifications_max_age",
}


def _env_name(flag: str) -> str:
    """``--lease-name`` is also ``STEPWISE_LEASE_NAME``."""
    return "STEPWISE_" + flag.upper().replace("-", "_")


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the controller",
        description="Run the controller. Every flag can also be set as STEPWISE_<FLAG> "
        "(for example STEPWISE_LOG_FORMAT=json, STEPWISE_NAMESPACE=shop,payments); a flag "
        "wins over its variable.",
    )
    fields = Settings.model_fields

    def add(flag: str, what: str, **kwargs: Any) -> None:
        default = fields[_RUN_FLAGS[flag]].default
        shown = "none" if default in (None, ()) else default
        if isinstance(shown, bool):
            shown = "on" if shown else "off"
        extra = kwargs.pop("default_help", f"default: {shown}")
        run.add_argument(
            f"--{flag}", default=None, help=f"{what} (env {_env_name(flag)}; {extra})", **kwargs
        )

    add(
        "kubeconfig",
        "path of a kubeconfig",
        default_help="default: in-cluster, else ~/.kube/config",
    )
    add(
        "namespace",
        "watch this namespace; repeat for several (the variable takes a comma-separated list)",
        action="append",
        default_help="default: all",
    )
    add("workers", "reconciles run in parallel", type=int)
    add(
        "leader-election",
        "only the holder of the Lease writes",
        action=argparse.BooleanOptionalAction,
    )
    add("lease-name", "name of the Lease")
    add("lease-namespace", "namespace of the Lease")
    add("lease-duration", "seconds a lease is valid without renewal", type=float)
    add("renew-deadline", "seconds the leader tries to renew before it stops writing", type=float)
    add("retry-period", "seconds between lease attempts", type=float)
    add(
        "identity",
        "this replica's identity in the Lease",
        default_help="default: $POD_NAME, else the hostname and a random suffix",
    )
    add("health-port", "port of /healthz, /readyz and /metrics (0: any free port)", type=int)
    add("bind-address", "address the health and metrics server listens on")
    add(
        "log-format",
        "json lines, or console (auto: console on a terminal)",
        choices=["json", "console", "auto"],
    )
    add("log-level", "lowest level logged", choices=["debug", "info", "warning", "error"])
    add(
        "prometheus-address",
        "Prometheus for analysis templates that name no address",
    )
    add(
        "watch-timeout",
        "seconds after which the server ends a watch and it is renewed; a watch read "
        f"silent for this plus {READ_GRACE:g}s is abandoned client-side and reconnected",
        type=float,
    )
    add(
        "heartbeat-timeout",
        "/healthz fails when a watch has shown no sign of life for this many seconds "
        f"(must exceed the watch timeout plus {READ_GRACE:g}s)",
        type=float,
    )
    add("notifications-config", "ConfigMap listing the notification webhook targets")
    add(
        "notifications-namespace",
        "namespace of that ConfigMap, its Secrets and the delivery ledger",
        default_help="default: the lease namespace",
    )
    add(
        "notifications-max-age",
        "seconds after which a notification is no longer sent nor retried",
        type=float,
    )
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
    convert_cmd.add_command(sub)
    _add_run(sub)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    common.add_argument("--context", default=None, help="kubeconfig context")
    common.add_argument("-n", "--namespace", default=None, help="default: the context's")
    rollouts.add_commands(sub, common)
    report_cmd.add_command(sub, common)
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
