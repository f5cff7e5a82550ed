"""CLI commands on Rollouts: ``status``, ``list``, ``promote``, ``abort``, ``retry``,
``pause``, ``resume`` and ``set image``.

They read and write the Rollout through the API server only; the controller does the
rest. Manual intents are annotations naming the revision they were issued against
(:mod:`controller.api.intents`), so a command can never act on a later release.

``status`` exit codes (documented in the README, relied on by CI pipelines):

====  ==============================================================
0     promoted and healthy
1     rolled back (aborted) or degraded
2     paused, waiting for approval (only with ``--exit-on-pause``)
3     timed out (``--timeout``)
4     not found, or the API server could not be reached
====  ==============================================================

Only some pauses are "waiting for approval" (see :func:`awaiting_approval`): a timed
pause ends by itself and ``spec.paused`` needs a ``resume``, so neither exits 2.

Without a terminal (CI), ``status --watch`` prints timestamped lines: the status lines
that changed since the last poll (so every analysis verdict change), and every new Event
of the Rollout once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from controller.api import intents
from controller.api.base import parse_duration
from controller.api.rollout import GROUP, VERSION
from controller.report import fmt_duration

PLURAL = "rollouts"
RESOURCE = f"{PLURAL}.{GROUP}"
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_PAUSED, EXIT_TIMEOUT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


class CliError(Exception):
    """A problem to print as one line, with the exit code to return."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code


class Api:
    """The few API calls the commands need, with errors turned into one-line messages."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            if kubeconfig or context:
                self.client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context
                )
            else:
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                    self.client = client.ApiClient()
                except config.ConfigException:
                    self.client = config.new_client_from_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as exc:
            raise CliError(
                f"cannot load a kubeconfig: {_short(exc)}: pass --kubeconfig or set KUBECONFIG"
            ) from exc
        self.server = self.client.configuration.host
        self.custom = client.CustomObjectsApi(self.client)
        self.core = client.CoreV1Api(self.client)

    def _call(self, verb: str, what: str, namespace: str | None, fn: Callable[[], Any]) -> Any:
        """``fn()``, with API errors turned into one line naming ``what`` and what to do."""
        try:
            return fn()
        except ApiException as exc:
            raise self._api_error(exc, verb, what, namespace) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            cause = _cause(exc)
            todo = (
                "check the server and certificate-authority of your kubeconfig's cluster"
                if cause.startswith("TLS")
                else "check that the cluster is up and that your kubeconfig points at it"
            )
            raise CliError(
                f"cannot reach the Kubernetes API at {self.server} to {verb} {what}"
                f" ({cause}): {todo} (--kubeconfig, --context, kubectl config current-context)"
            ) from exc

    def _api_error(
        self, exc: ApiException, verb: str, what: str, namespace: str | None
    ) -> CliError:
        said = _server_message(exc)
        if exc.status == 404:
            if not said:  # a plain "404 page not found": the API itself is not served
                return CliError(
                    f"the API server at {self.server} does not serve {RESOURCE}: install the"
                    " Stepwise CRDs (README: Installing on a cluster)"
                )
            return CliError(
                f"{what} not found: check the name and the namespace"
                " (-n NAMESPACE; stepwise list -A lists all rollouts)"
            )
        if exc.status == 401:
            return CliError(
                f"the API server at {self.server} rejected your credentials ({verb} {what}):"
                " check your kubeconfig user (kubectl config view --minify) or log in again"
            )
        if exc.status == 403:
            where = f"in namespace {namespace}" if namespace else "cluster-wide (or pass -n)"
            user = re.search(r'User "([^"]+)"', said)
            who = f" as {user.group(1)}" if user else ""
            return CliError(
                f"not allowed to {verb} {what}{who}: check your kubeconfig / RBAC:"
                f" needs {verb} on {RESOURCE} {where}"
            )
        if exc.status == 409:
            return CliError(f"{what} changed meanwhile; run the command again", 1)
        detail = f": {said}" if said else ""
        return CliError(
            f"cannot {verb} {what}: the API server answered {exc.status} {exc.reason}{detail}",
            EXIT_UNREACHABLE if exc.status is None or exc.status >= 500 else 1,
        )

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            "get",
            f"rollout {namespace}/{name}",
            namespace,
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=10
            ),
        )
        return found

    def list_rollouts(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = self._call(
                "list",
                "rollouts in all namespaces",
                None,
                lambda: self.custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _request_timeout=10
                ),
            )
        else:
            result = self._call(
                "list",
                f"rollouts in namespace {namespace}",
                namespace,
                lambda: self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, _request_timeout=10
                ),
            )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def patch(self, namespace: str, name: str, body: Any, *, json_patch: bool = False) -> None:
        kwargs: dict[str, Any] = {"_request_timeout": 10}
        if json_patch:
            kwargs["_content_type"] = "application/json-patch+json"
        self._call(
            "patch",
            f"rollout {namespace}/{name}",
            namespace,
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body, **kwargs
            ),
        )

    def events(self, namespace: str, name: str, limit: int | None = 5) -> list[Any]:
        """The Rollout's Events, oldest first (the last ``limit``; all with None)."""
        try:
            items = self.core.list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.kind=Rollout,involvedObject.name={name}",
                _request_timeout=10,
            ).items
        except Exception:  # events are decoration; the status is what matters
            return []
        items.sort(key=_event_order)
        return list(items if limit is None else items[-limit:])


def _event_order(event: Any) -> tuple[str, int]:
    """Oldest first; within one second (the timestamps' resolution), in the order the API
    server stored them (resourceVersion, an etcd revision, when it is a number)."""
    version = str(event.metadata.resource_version or "")
    return str(_event_time(event)), int(version) if version.isdigit() else 0


def _event_time(event: Any) -> dt.datetime | None:
    when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
    return when if isinstance(when, dt.datetime) else None


def _server_message(exc: ApiException) -> str:
    """The ``message`` of the Status the API server sent, or "" when it sent none."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(message).split())[:300] if message else ""


def _cause(exc: BaseException) -> str:
    """Why a connection failed, in a few words: the deepest known cause in urllib3's
    chain (its NewConnectionError is also a timeout error, so the root decides)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        reason = getattr(current, "reason", None)
        current = (
            reason
            if isinstance(reason, BaseException)
            else (current.__cause__ or current.__context__)
        )
    for cause in reversed(chain):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {str(cause.verify_message).rstrip('.')}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {getattr(cause, 'reason', None) or cause.strerror or cause}"
        if isinstance(cause, (TimeoutError, urllib3.exceptions.TimeoutError)):
            return "timed out"
    return _short(chain[-1])


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    try:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
        ns = active.get("context", {}).get("namespace")
        return str(ns) if ns else "default"
    except (config.ConfigException, OSError, TypeError):
        return "default"


# -- status ------------------------------------------------------------------------------


def awaiting_approval(rollout: dict[str, Any]) -> str | None:
    """The command that approves a Rollout paused for a person; None when it is not.

    ``status.waitReason`` says why a Rollout waits; two of its values need a person:
    ``AwaitingPromotion`` (a ``pause: {}`` step) and ``AnalysisInconclusive`` (a step or
    background analysis that could not decide). Timed pauses, ``spec.paused`` and every
    other wait end without approval. A promote or abort already written for this state,
    not yet acted on by the controller, means the decision was made: not waiting.
    """
    status = rollout.get("status") or {}
    if status.get("waitReason") not in ("AwaitingPromotion", "AnalysisInconclusive"):
        return None
    meta = rollout["metadata"]
    canary = status.get("canaryRevision")
    index = status.get("currentStepIndex") or 0
    given = intents.parse(meta.get("annotations"))
    if canary is None or canary in (given.promote_full, given.abort):
        return None
    if given.promotes(canary, index):
        return None
    return f"stepwise promote {meta['name']} -n {meta.get('namespace', 'default')}"


def verdict(rollout: dict[str, Any], *, exit_on_pause: bool = False) -> tuple[int | None, str]:
    """The exit code the Rollout's state means (None: still going), and why."""
    status = rollout.get("status") or {}
    generation = rollout.get("metadata", {}).get("generation")
    if status.get("observedGeneration") != generation:
        return None, "the controller has not seen the latest spec yet"
    phase = status.get("phase")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    invalid = conditions.get("InvalidSpec", {})
    if invalid.get("status") == "True":
        return EXIT_DEGRADED, str(invalid.get("message", "invalid spec"))
    if phase == "Degraded":
        abort = status.get("abort")
        if abort:
            return EXIT_DEGRADED, f"rolled back: {abort.get('reason')}: {abort.get('message')}"
        return EXIT_DEGRADED, f"degraded: {status.get('message', '')}"
    if phase == "Healthy" and status.get("stableRevision") == status.get("canaryRevision"):
        return EXIT_HEALTHY, f"revision {status.get('stableRevision')} is stable and healthy"
    if phase == "Paused":
        approve = awaiting_approval(rollout)
        if approve is None:
            return None, f"paused: {status.get('message', '')}"
        waiting = f"paused, waiting for approval: {status.get('message', '')}; run {approve}"
        return (EXIT_PAUSED if exit_on_pause else None), waiting
    return None, str(status.get("message", phase or "waiting for the controller"))


def describe(rollout: dict[str, Any], events: list[Any]) -> list[str]:
    """A few lines saying where the rollout is."""
    meta, spec = rollout["metadata"], rollout.get("spec", {})
    status = rollout.get("status") or {}
    strategy = spec.get("strategy") or {}
    steps = (strategy.get("canary") or {}).get("steps") or []
    step = status.get("currentStepIndex")
    if "blueGreen" in strategy:
        selectors = status.get("blueGreen") or {}
        where = (
            f"  active {selectors.get('activeSelector') or '-'}"
            f"   preview {selectors.get('previewSelector') or '-'}"
            f"   stable {status.get('stableRevision', '-')}"
            f"   new {status.get('canaryRevision', '-')}"
        )
    else:
        where = (
            f"  step {step if step is not None else '-'}/{len(steps)}"
            f"   weight {status.get('canaryWeight', 0)}%"
            f"   stable {status.get('stableRevision', '-')}"
            f"   canary {status.get('canaryRevision', '-')}"
        )
    lines = [
        f"Rollout {meta.get('namespace')}/{meta['name']}: {status.get('phase', 'Unknown')}"
        f" ({status.get('message', '')})",
        where
        + f"   ready {status.get('readyReplicas', 0)}/{spec.get('replicas', '?')}"
        + (f"   waiting: {status['waitReason']}" if status.get("waitReason") else ""),
    ]
    blind = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "AnalysisBlind" and c.get("status") == "True"
        ),
        None,
    )
    if blind is not None:
        lines.append(f"  BLIND ({blind.get('reason')}): {blind.get('message')}")
    experiment = status.get("experiment")
    if experiment and experiment.get("revision") == status.get("canaryRevision"):
        sets = ", ".join(
            f"{t['name']}={t.get('replicaSet')}" for t in experiment.get("templates") or []
        )
        lines.append(
            f"  experiment step {experiment.get('step')}: {experiment.get('phase')} {sets}".rstrip()
        )
    release = _release_line((status.get("releases") or [None])[-1])
    if release:
        lines.append(release)
    for run in status.get("analysisRuns") or []:
        metrics = ", ".join(
            f"{m['name']}={m.get('phase')} "
            f"({m.get('successful', 0)} ok, {m.get('failed', 0)} failed)"
            for m in run.get("metrics", [])
        )
        lines.append(f"  analysis {run['name']}: {run.get('phase')} {metrics}".rstrip())
    for event in events:
        lines.append(f"  event {event.reason}: {event.message}")
    return lines


def _release_line(entry: dict[str, Any] | None) -> str | None:
    """The latest release of the delivery record in one line (see ``stepwise report``)."""
    if not entry:
        return None
    who = f" by {entry['changedBy']}" if entry.get("changedBy") else ""
    head = f"  release {entry.get('revision')}#{entry.get('attempt', 1)}{who}: "
    outcome = entry.get("outcome")
    if outcome == "Aborted":
        detect = fmt_duration(entry.get("timeToDetectSeconds"))
        restore = entry.get("timeToRestoreSeconds")
        restored = f"restored in {fmt_duration(restore)}" if restore is not None else "restoring"
        return (
            f"{head}Aborted ({entry.get('reason')}), detected {detect} after the change, {restored}"
        )
    if outcome == "Promoted":
        return f"{head}Promoted, {fmt_duration(entry.get('leadTimeSeconds'))} after the change"
    return head + (outcome or f"in progress since {entry.get('startedAt')}")


class PlainView:
    """Output without a terminal (CI): timestamped lines for what changed since the last
    poll. Each Event of the Rollout is printed once, stamped with its own time; status
    lines (phase, step and weight, one per analysis with its verdict and tallies) are
    printed when they change, so every verdict change is a line."""

    RECENT = 5
    """Events that existed before the first poll and are still printed."""

    def __init__(self, now: Callable[[], dt.datetime] | None = None) -> None:
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._previous: list[str] = []
        self._seen: set[str] | None = None

    def update(self, lines: list[str], events: list[Any]) -> list[str]:
        """The lines to print for this poll: new events (oldest first), changed lines."""
        stamp = self._now().astimezone(dt.UTC).strftime("%H:%M:%S")
        if self._seen is None:  # older events are history, not news
            self._seen = {_event_key(e) for e in events[: -self.RECENT]}
        out: list[str] = []
        for event in events:
            key = _event_key(event)
            if key in self._seen:
                continue
            self._seen.add(key)
            when = _event_time(event)
            at = when.astimezone(dt.UTC).strftime("%H:%M:%S") if when else stamp
            kind = "warning " if event.type == "Warning" else ""
            out.append(f"{at} {kind}event {event.reason}: {event.message}")
        out.extend(f"{stamp} {line.strip()}" for line in lines if line not in self._previous)
        self._previous = lines
        return out


def _event_key(event: Any) -> str:
    return str(event.metadata.uid or event.metadata.name)


def cmd_status(args: argparse.Namespace) -> int:
    """Show a rollout; with --watch, follow it until it settles and exit with its verdict."""
    api = Api(args.kubeconfig, args.context)
    namespace = _namespace(args)
    deadline = time.monotonic() + parse_duration(args.timeout) if args.timeout else None
    tty = sys.stdout.isatty() and not args.plain
    plain = PlainView()
    drawn = 0
    while True:
        rollout = api.get(namespace, args.name)
        code, reason = verdict(rollout, exit_on_pause=args.exit_on_pause)
        if tty:
            lines = describe(rollout, api.events(namespace, args.name))
            if drawn:
                sys.stdout.write(f"\x1b[{drawn}F\x1b[J")
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            drawn = len(lines)
        else:
            events = api.events(namespace, args.name, limit=None)
            for line in plain.update(describe(rollout, []), events):
                print(line, flush=True)
        if not args.watch:
            return code if code is not None else EXIT_HEALTHY
        if code is not None:
            print(reason, file=sys.stderr if code else sys.stdout)
            return code
        if deadline is not None and time.monotonic() > deadline:
            print(f"timed out after {args.timeout}: {reason}", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(args.interval)  # noqa: TID251 - the CLI polls; it is not the controller


# -- list --------------------------------------------------------------------------------


def _age(created: str | None) -> str:
    if not created:
        return "?"
    then = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = int((dt.datetime.now(dt.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cmd_list(args: argparse.Namespace) -> int:
    """A table of rollouts, like ``kubectl get``."""
    api = Api(args.kubeconfig, args.context)
    items = api.list_rollouts(None if args.all_namespaces else _namespace(args))
    header = ["NAMESPACE", "NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE", "MESSAGE"]
    rows = [header]
    for ro in sorted(items, key=lambda r: (r["metadata"]["namespace"], r["metadata"]["name"])):
        s = ro.get("status") or {}
        steps = len(
            ((ro.get("spec", {}).get("strategy") or {}).get("canary") or {}).get("steps") or []
        )
        step = s.get("currentStepIndex")
        rows.append([
            ro["metadata"]["namespace"],
            ro["metadata"]["name"],
            s.get("phase", "-"),
            f"{step}/{steps}" if step is not None else f"-/{steps}",
            f"{s.get('canaryWeight', 0)}%",
            s.get("stableRevision", "-"),
            s.get("canaryRevision", "-"),
            _age(ro["metadata"].get("creationTimestamp")),
            (s.get("message") or "")[:60],
        ])  # fmt: skip
    if len(rows) == 1:
        print("No rollouts found.", file=sys.stderr)
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


# -- intents -----------------------------------------------------------------------------


def _canary(rollout: dict[str, Any], verb: str) -> tuple[str, dict[str, Any]]:
    status = rollout.get("status") or {}
    canary, stable = status.get("canaryRevision"), status.get("stableRevision")
    name = f"{rollout['metadata']['namespace']}/{rollout['metadata']['name']}"
    if not canary or canary == stable:
        raise CliError(f"rollout {name} has no canary in progress; nothing to {verb}", 1)
    return canary, status


class _Target:
    """The Rollout a command writes to: read it, patch it and say what was done."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.api = Api(args.kubeconfig, args.context)
        self.namespace = _namespace(args)
        self.name: str = args.name

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def get(self) -> dict[str, Any]:
        return self.api.get(self.namespace, self.name)

    def patch(self, body: Any, done: str, *, json_patch: bool = False) -> int:
        """Patch the Rollout, print ``rollout NAMESPACE/NAME: {done}``; exit code 0."""
        self.api.patch(self.namespace, self.name, body, json_patch=json_patch)
        print(f"rollout {self}: {done}")
        return 0


def _annotate(target: _Target, annotations: dict[str, str | None], done: str) -> int:
    return target.patch({"metadata": {"annotations": annotations}}, done)


def cmd_promote(args: argparse.Namespace) -> int:
    """Release the current pause (or, with --full, skip every remaining step)."""
    target = _Target(args)
    canary, status = _canary(target.get(), "promote")
    if args.full:
        return _annotate(
            target,
            {intents.PROMOTE_FULL: canary},
            f"promoting revision {canary} fully (skipping steps and analysis)",
        )
    step = status.get("currentStepIndex") or 0
    return _annotate(
        target,
        {intents.PROMOTE: intents.promote_value(canary, step)},
        f"released step {step} of revision {canary}",
    )


def cmd_abort(args: argparse.Namespace) -> int:
    """Abort the canary: stable back to full size, all traffic to stable."""
    target = _Target(args)
    canary, _ = _canary(target.get(), "abort")
    return _annotate(target, {intents.ABORT: canary}, f"aborting revision {canary}")


def cmd_retry(args: argparse.Namespace) -> int:
    """Restart an aborted canary from step 0."""
    target = _Target(args)
    abort = (target.get().get("status") or {}).get("abort")
    if not abort:
        raise CliError(f"rollout {target} is not aborted; nothing to retry", 1)
    retry = intents.retry_value(abort["revision"], abort.get("attempt", 1))
    return _annotate(
        target,
        {intents.ABORT: None, intents.RETRY: retry},
        f"retrying revision {abort['revision']} from step 0",
    )


def cmd_pause(args: argparse.Namespace) -> int:
    """Set spec.paused (or clear it, for resume)."""
    target = _Target(args)
    paused = args.command == "pause"
    return target.patch({"spec": {"paused": paused}}, "paused" if paused else "resumed")


def cmd_set_image(args: argparse.Namespace) -> int:
    """Change one container's image (this starts a canary)."""
    target = _Target(args)
    container, sep, image = args.assignment.partition("=")
    if not sep or not container or not image:
        raise CliError("expected CONTAINER=IMAGE, for example app=registry.example.com/app:1.2", 2)
    containers = target.get()["spec"]["template"]["spec"].get("containers") or []
    names = [c.get("name") for c in containers]
    if container not in names:
        raise CliError(f"rollout {target} has no container {container!r} (it has {names})", 2)
    index = names.index(container)
    path = f"/spec/template/spec/containers/{index}"
    ops = [
        {"op": "test", "path": f"{path}/name", "value": container},
        {"op": "replace", "path": f"{path}/image", "value": image},
    ]
    return target.patch(ops, f"container {container} set to {image}", json_patch=True)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the rollout commands."""
    status = sub.add_parser(
        "status",
        parents=[common],
        help="show a rollout; --watch follows it and exits with its verdict",
        description="Exit codes with --watch: 0 promoted and healthy, 1 rolled back or "
        "degraded, 2 paused waiting for approval (with --exit-on-pause), 3 timed out, "
        "4 not found or unreachable.",
    )
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="follow until it settles")
    status.add_argument("--timeout", default=None, help="give up after this long (10m, 90s)")
    status.add_argument(
        "--exit-on-pause",
        action="store_true",
        help="exit 2 at a pause that waits for approval (pause: {} or an inconclusive "
        "analysis); timed pauses and spec.paused are waited through",
    )
    status.add_argument("--plain", action="store_true", help="timestamped lines even on a terminal")
    status.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    status.set_defaults(func=cmd_status)

    lst = sub.add_parser("list", parents=[common], help="list rollouts")
    lst.add_argument("-A", "--all-namespaces", action="store_true")
    lst.set_defaults(func=cmd_list)

    promote = sub.add_parser("promote", parents=[common], help="release the current pause")
    promote.add_argument("name")
    promote.add_argument(
        "--full", action="store_true", help="skip all remaining steps and analysis"
    )
    promote.set_defaults(func=cmd_promote)

    for verb, func, text in (
        ("abort", cmd_abort, "abort the canary: traffic and capacity back to stable"),
        ("retry", cmd_retry, "restart an aborted canary from step 0"),
        ("pause", cmd_pause, "pause the rollout (spec.paused)"),
        ("resume", cmd_pause, "resume a paused rollout"),
    ):
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("name")
        p.set_defaults(func=func)

    setp = sub.add_parser("set", help="change a rollout")
    setsub = setp.add_subparsers(dest="what", metavar="WHAT", required=True)
    image = setsub.add_parser("image", parents=[common], help="set a container image")
    image.add_argument("name")
    image.add_argument("assignment", metavar="CONTAINER=IMAGE")
    image.set_defaults(func=cmd_set_image)
