"""``stepwise report``: the delivery record's DORA-style figures per Rollout.

The I/O edge of :mod:`controller.report` (which holds the arithmetic, the definitions and
the rendering): read the Rollouts through the same :class:`~controller.cli.rollouts.Api`
as ``status`` and ``list`` (so the same one-line errors and exit codes), and, only when
``--prometheus`` is given and some Rollout's status does not hold the whole period, ask
Prometheus through the controller's own adapter, one query per figure for all Rollouts.

Exit codes: 0 the report was printed; 1 a status or a Prometheus answer that cannot be
read; 2 a bad argument; 4 a Rollout not found, the API server or Prometheus unreachable,
or Prometheus without the series a Rollout needed (its figures are then the status's,
marked partial, and the report is still printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from controller import logs
from controller.adapters.prometheus import PrometheusClient, PrometheusSettings
from controller.api.rollout import Release
from controller.cli.rollouts import EXIT_UNREACHABLE, Api, CliError, _namespace
from controller.core.measurement import Outcome, QueryResponse, Series, read_series
from controller.report import (
    DEFAULT_HISTORY_LIMIT,
    RELEASES_TOTAL,
    RENDERERS,
    Period,
    RolloutReport,
    build,
    covers,
    prometheus_queries,
)

EXIT_BAD_ANSWER, EXIT_USAGE = 1, 2
#: Query failures that mean "Prometheus is not there" rather than "it said no".
_UNREACHABLE_KINDS = frozenset({"unreachable", "timeout", "tls", "unavailable", "throttled"})


def releases_of(rollout: dict[str, Any]) -> list[Release]:
    """The Rollout's ``status.releases``, oldest first. Raises :class:`CliError` (exit 1)
    naming the Rollout when the status holds one this CLI cannot read."""
    meta = rollout["metadata"]
    try:
        return [
            Release.model_validate(item)
            for item in (rollout.get("status") or {}).get("releases") or []
        ]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(
            f"rollout {meta.get('namespace')}/{meta['name']}: status.releases cannot be "
            f"read ({where}: {first['msg']}): is this CLI older than the controller?",
            EXIT_BAD_ANSWER,
        ) from exc


def ask_prometheus(url: str, queries: Mapping[str, str]) -> dict[str, tuple[Series, ...]]:
    """Each query's series (an empty vector: none), through the controller's Prometheus
    adapter (its retries and timeouts). Raises :class:`CliError` naming the URL: exit 4
    when Prometheus cannot be reached, 1 when it answers with an error."""
    try:
        settings = PrometheusSettings(url=url, timeout=30.0)
    except ValueError as exc:
        raise CliError(f"--prometheus {url}: {exc}", EXIT_USAGE) from exc
    # The adapter logs each query for the controller; here stdout is the report and a
    # failure is the one-line error below, so only errors are logged (on stderr).
    logs.configure("auto", "error")
    client = PrometheusClient(settings)
    answers: dict[str, tuple[Series, ...]] = {}
    try:
        for key, promql in queries.items():
            answers[key] = _series(client.query(promql, metric="report"), promql, settings)
    finally:
        client.close()
    return answers


def _series(
    response: QueryResponse, promql: str, settings: PrometheusSettings
) -> tuple[Series, ...]:
    if response.error is not None:
        err = response.error
        unreachable = err.kind in _UNREACHABLE_KINDS or (err.status or 0) >= 500
        raise CliError(
            f"cannot query Prometheus at {settings.safe_url} ({err.kind}): {err.message}"
            + (": check the URL and that Prometheus is up" if unreachable else ""),
            EXIT_UNREACHABLE if unreachable else EXIT_BAD_ANSWER,
        )
    found = read_series(response)
    if isinstance(found, Outcome):
        if found.phase == "NoData":
            return ()
        raise CliError(
            f"Prometheus at {settings.safe_url} answered {promql!r} with something "
            f"unexpected: {found.message}",
            EXIT_BAD_ANSWER,
        )
    return found


def _rollouts(api: Api, args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    """The Rollouts in scope, and the namespace they are in (None: all)."""
    if args.all_namespaces:
        if args.name:
            raise CliError("a NAME needs its namespace (-n NAMESPACE), not -A", EXIT_USAGE)
        return api.list_rollouts(None), None
    namespace = _namespace(args)
    if args.name:
        return [api.get(namespace, args.name)], namespace
    return api.list_rollouts(namespace), namespace


def cmd_report(
    args: argparse.Namespace, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
) -> int:
    """Print the figures and releases of each Rollout in scope over ``--since``."""
    try:
        period = Period.ending(args.since, now())
    except ValueError as exc:
        raise CliError(f"--since: {exc}", EXIT_USAGE) from exc
    url = ""
    if args.prometheus:
        try:
            url = PrometheusSettings(url=args.prometheus).safe_url
        except ValueError as exc:
            raise CliError(f"--prometheus {args.prometheus}: {exc}", EXIT_USAGE) from exc
    api = Api(args.kubeconfig, args.context)
    items, namespace = _rollouts(api, args)
    items.sort(key=lambda r: (r["metadata"].get("namespace", ""), r["metadata"]["name"]))
    scope: list[tuple[str, str, list[Release], int]] = [
        (
            ro["metadata"].get("namespace", ""),
            ro["metadata"]["name"],
            releases_of(ro),
            int((ro.get("spec") or {}).get("releaseHistoryLimit", DEFAULT_HISTORY_LIMIT)),
        )
        for ro in items
    ]
    if not scope:
        print("No rollouts found.", file=sys.stderr)
        return 0
    answers = None
    if args.prometheus and any(not covers(rel, limit, period) for _, _, rel, limit in scope):
        answers = ask_prometheus(
            args.prometheus, prometheus_queries(period, namespace, args.name or None)
        )
    reports = [build(ns, name, rel, limit, period, answers, url) for ns, name, rel, limit in scope]
    sys.stdout.write(RENDERERS[args.output](reports, period))
    sys.stdout.flush()
    missing = [f"{r.namespace}/{r.name}" for r in reports if _lacks_series(r, answers)]
    if missing:
        raise CliError(
            f"Prometheus at {url} has no {RELEASES_TOTAL} series for {', '.join(missing)} "
            f"in the last {period.text}: check that it scrapes the controller's /metrics; "
            "the figures shown for it are the status's, partial",
            EXIT_UNREACHABLE,
        )
    return 0


def _lacks_series(report: RolloutReport, answers: Mapping[str, Sequence[Series]] | None) -> bool:
    return answers is not None and not report.complete and report.figures.source == "status"


def add_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``report`` on the ``stepwise`` subparsers."""
    report = sub.add_parser(
        "report",
        parents=[common],
        help="delivery figures per rollout: deploys per day, change failure rate, "
        "time to detect and to restore, lead time, and the releases",
        description="Per Rollout, over the period: deploys per day (releases promoted / "
        "days in the period); change failure rate (aborted / (promoted + aborted): a "
        "superseded release, replaced by a newer template before it was promoted or "
        "aborted, counts for neither); median and p90 time to detect (the change to the "
        "start of the first failing measurement's window, or to a manual abort) and time to "
        "restore (the abort to all traffic on stable); median lead time (the change to "
        "its promotion). A release counts in the period its outcome fell in. The status "
        "holds the last spec.releaseHistoryLimit releases (default 10): for a longer period "
        "pass --prometheus, whose counters and histograms the controller keeps. Exit 0 "
        "printed, 1 a status or answer that cannot be read, 2 a bad argument, 4 not found "
        "or unreachable (the API server, or Prometheus or its series).",
    )
    report.add_argument("name", nargs="?", default=None, help="one rollout (default: all of -n)")
    report.add_argument(
        "-A", "--all-namespaces", action="store_true", help="rollouts of every namespace"
    )
    report.add_argument(
        "--since", default="30d", help="the period, ending now: 30d, 2w, 12h (default: 30d)"
    )
    report.add_argument(
        "-o", "--output", choices=sorted(RENDERERS), default="table", help="default: table"
    )
    report.add_argument(
        "--prometheus",
        metavar="URL",
        default=None,
        help="Prometheus scraping the controller: figures of periods longer than a status "
        "holds come from its stepwise_releases_total and release histograms",
    )
    report.set_defaults(func=cmd_report)
