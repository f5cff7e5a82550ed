"""The controller's own Prometheus metrics, served on ``/metrics`` by :mod:`.health`.

Everything lives in one :class:`prometheus_client.CollectorRegistry` per
:class:`Metrics` (never the global registry), so tests and several controllers in one
process do not share series. The reconciler, the work queue and the leader elector
report through the small methods here, and every Kubernetes API request through the hook
:func:`count_requests` installs on the API client; nothing reads these back to make a
decision.

Series, by where in the flow they are updated:

* work queue: ``stepwise_workqueue_depth`` (read from the queue at scrape time);
* reconcile: ``stepwise_reconcile_total{result}``,
  ``stepwise_reconcile_duration_seconds``;
* every Kubernetes API request: ``stepwise_api_requests_total{verb,code}``;
* after a Rollout's status is written: ``stepwise_rollout_phase{namespace,rollout,phase}``
  (1 for the current phase, 0 for the others), ``stepwise_rollout_canary_weight``,
  ``stepwise_analysis_measurements_total{namespace,rollout,metric,phase}``,
  ``stepwise_rollback_seconds`` (first failed measurement to traffic restored);
* when a status write gives a release of the delivery record (``status.releases``) its
  outcome or one of its times: ``stepwise_releases_total{namespace,rollout,outcome,reason}``
  and the histograms ``stepwise_release_time_to_detect_seconds``,
  ``stepwise_release_time_to_restore_seconds`` and ``stepwise_release_lead_time_seconds``
  (``{namespace,rollout}``); see :func:`release_changes`;
* leader election: ``stepwise_leader`` (1 while this replica leads).

The delivery record in the status keeps only the last ``spec.releaseHistoryLimit``
releases; these series are where the long record lives, so they are counted from status
*transitions*, never from the list as it stands: :func:`release_changes` compares the
releases before a pass with those the pass wrote, matched by revision and attempt, and
reports only what the pass newly set. A restarted controller or a new leader, whose first
pass reads a status that already has every outcome, counts nothing; a release that falls
off the bounded list is not an event. Counting happens after the write succeeded, so a
process that dies between its write and its count loses that one count (at most once,
never twice); so does, for ``increase()``, an outcome decided in the very first pass a
new process makes for a Rollout, whose series is then born at 1. Only the leader
reconciles, so the replicas' series add up (``sum by (namespace, rollout)``).

Cardinality is bounded by the number of Rollouts: every per-Rollout label comes from the
Rollout's name and namespace or from a fixed set the API declares (``phase``; ``outcome``
Promoted, Aborted or Superseded; ``reason`` one of the four abort reasons, or empty unless
Aborted), with one exception, ``metric`` on measurements, which comes from the Rollout's
own analysis templates. A revision, image or person never becomes a label. Per Rollout the
delivery series are at most six ``stepwise_releases_total`` series (Promoted, Superseded,
and Aborted with each reason, created at 0 on the first pass so that ``increase()`` sees
the first release) and three histograms of :data:`DETECT_BUCKETS` /
:data:`LEAD_TIME_BUCKETS` buckets. :meth:`Metrics.forget_rollout`, called when a Rollout
is deleted, removes all of its series.

Request accounting: :func:`count_requests` wraps an ``ApiClient``'s ``call_api``, the
single method every generated API call goes through (lists, watches, gets, writes,
Lease calls), and reports each request's verb (``get``, ``list``, ``watch``, ``create``,
``update``, ``patch``, ``delete``, ``deletecollection``: from the method and the URL, as
the API server names them) and the HTTP status it was answered with (0: no answer).
Clients derived with :func:`dedicated` keep the hook. A watch counts once, with the
status of its HTTP response (200), when it is opened; an ERROR event inside the stream
(such as 410 Gone) is not an HTTP answer and is not counted again.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.adapters.retry import dedicated_client
from controller.api.rollout import AbortReason, Phase, Release, ReleaseOutcome

log = structlog.get_logger()

S = TypeVar("S", Counter, Gauge, Histogram)

#: Every phase a Rollout can report; each gets a series so alerts can match on 0 or 1.
PHASES: tuple[str, ...] = get_args(Phase)

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROLLBACK_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)

#: Every release outcome, and every abort reason: the only values of the ``outcome`` and
#: ``reason`` labels (reason is empty unless the outcome is Aborted).
OUTCOMES: tuple[str, ...] = get_args(ReleaseOutcome)
ABORT_REASONS: tuple[str, ...] = get_args(AbortReason)

#: Time to detect and time to restore: a restore takes seconds (the router's write), a
#: detection from a few seconds (a manual abort) to an hour (a slow analysis after a
#: long bake), so the buckets run from half a second to an hour.
DETECT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Lead time, from the template change to the promotion: a minute (no steps) to a week
#: (a release that waited for a person over a weekend).
LEAD_TIME_BUCKETS = (
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    172800.0,
    604800.0,
)


@dataclass(frozen=True)
class ReleaseChange:
    """What one pass newly set on one release of the delivery record: each field is set
    only when the pass set it (``None``: unchanged or still unknown)."""

    revision: str
    attempt: int
    outcome: str | None = None
    """Promoted, Aborted or Superseded, when the pass decided it."""
    reason: str = ""
    """With ``outcome`` Aborted: the abort reason; empty otherwise."""
    time_to_detect_seconds: float | None = None
    time_to_restore_seconds: float | None = None
    lead_time_seconds: float | None = None


def release_changes(before: Sequence[Release], after: Sequence[Release]) -> list[ReleaseChange]:
    """What a pass newly set on the releases it wrote (``after``), compared with those it
    read (``before``), matched by revision and attempt, in ``after``'s order.

    Pure, so that counting once per transition is tested without a process. A field
    counts when it is set after and was unset (or the release absent) before: a release
    that appears with its outcome already decided (the rollback window promotes in the
    pass that starts it) counts in full. A release only in ``before`` (dropped off the
    bounded list) counts nothing, and neither does a field that changes from one value to
    another: the core sets an outcome and each time once, so a change would be a
    correction, not a second release. ``release_changes(x, x)`` is empty, which is what a
    restarted controller's first pass sees. A revision and attempt listed twice (which the
    core never writes) count once, as their last entry."""
    seen = {(r.revision, r.attempt): r for r in before}
    latest = {(r.revision, r.attempt): r for r in after}
    changes: list[ReleaseChange] = []
    for (revision, attempt), now in latest.items():
        was = seen.get((revision, attempt)) or Release(
            revision=revision, attempt=attempt, changed_at=now.changed_at, started_at=now.started_at
        )
        outcome = now.outcome if was.outcome is None else None
        change = ReleaseChange(
            revision=revision,
            attempt=attempt,
            outcome=outcome,
            reason=(now.reason or "") if outcome == "Aborted" else "",
            time_to_detect_seconds=(
                now.time_to_detect_seconds if was.time_to_detect_seconds is None else None
            ),
            time_to_restore_seconds=(
                now.time_to_restore_seconds if was.time_to_restore_seconds is None else None
            ),
            lead_time_seconds=now.lead_time_seconds if was.lead_time_seconds is None else None,
        )
        if change != ReleaseChange(revision, attempt):
            changes.append(change)
    return changes


class Metrics:
    """The controller's metrics in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._per_rollout: list[Counter | Gauge | Histogram] = []
        """The series labelled by Rollout, which :meth:`forget_rollout` removes."""

        def per_rollout(kind: type[S], name: str, doc: str, *labels: str, **options: Any) -> S:
            series = kind(name, doc, ["namespace", "rollout", *labels], registry=r, **options)
            self._per_rollout.append(series)
            return series

        self.reconcile_total = Counter(
            "stepwise_reconcile_total",
            "Reconcile passes, by result (success, requeue, error, invalid, ...).",
            ["result"],
            registry=r,
        )
        self.reconcile_duration_seconds = Histogram(
            "stepwise_reconcile_duration_seconds",
            "Duration of one reconcile pass.",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.workqueue_depth = Gauge(
            "stepwise_workqueue_depth", "Keys ready in the work queue.", registry=r
        )
        self.api_requests_total = Counter(
            "stepwise_api_requests_total",
            "Kubernetes API requests, by verb and HTTP status code (0: no answer).",
            ["verb", "code"],
            registry=r,
        )
        self.rollback_seconds = Histogram(
            "stepwise_rollback_seconds",
            "Seconds from the first failed measurement to traffic restored to stable.",
            buckets=ROLLBACK_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            "stepwise_leader", "1 while this replica holds the leader lease.", registry=r
        )
        self.rollout_phase = per_rollout(
            Gauge,
            "stepwise_rollout_phase",
            "1 for the Rollout's current phase, 0 for the others.",
            "phase",
        )
        self.rollout_canary_weight = per_rollout(
            Gauge, "stepwise_rollout_canary_weight", "Percent of traffic the canary receives."
        )
        self.analysis_measurements_total = per_rollout(
            Counter,
            "stepwise_analysis_measurements_total",
            "Analysis measurements taken, by metric and measurement phase.",
            "metric",
            "phase",
        )
        self.releases_total = per_rollout(
            Counter,
            "stepwise_releases_total",
            "Releases that reached an outcome (Promoted, Aborted, Superseded); reason: the "
            "abort reason, empty unless Aborted.",
            "outcome",
            "reason",
        )
        self.release_time_to_detect_seconds = per_rollout(
            Histogram,
            "stepwise_release_time_to_detect_seconds",
            "Aborted releases: seconds from the template change to the start of the first "
            "failing measurement's window (or to a manual abort).",
            buckets=DETECT_BUCKETS,
        )
        self.release_time_to_restore_seconds = per_rollout(
            Histogram,
            "stepwise_release_time_to_restore_seconds",
            "Aborted releases: seconds from the abort until all traffic was on stable.",
            buckets=DETECT_BUCKETS,
        )
        self.release_lead_time_seconds = per_rollout(
            Histogram,
            "stepwise_release_lead_time_seconds",
            "Promoted releases: seconds from the template change to the promotion.",
            buckets=LEAD_TIME_BUCKETS,
        )

    # -- reporting ------------------------------------------------------------------

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        """Read the queue depth at scrape time, e.g. ``track_queue_depth(lambda: len(q))``."""
        self.workqueue_depth.set_function(lambda: float(depth()))

    def observe_reconcile(self, result: str, seconds: float) -> None:
        """One reconcile pass finished with ``result`` after ``seconds``."""
        self.reconcile_total.labels(result=result).inc()
        self.reconcile_duration_seconds.observe(seconds)

    def count_api_request(self, verb: str, code: int) -> None:
        """One Kubernetes API request answered with ``code``; a :data:`RequestHook`."""
        self.api_requests_total.labels(verb=verb, code=str(code)).inc()

    def set_rollout_phase(self, namespace: str, rollout: str, phase: str) -> None:
        """The Rollout is now in ``phase``: its series is 1, every other phase 0."""
        for known in (*PHASES, *(() if phase in PHASES else (phase,))):
            value = 1.0 if known == phase else 0.0
            self.rollout_phase.labels(namespace=namespace, rollout=rollout, phase=known).set(value)

    def set_canary_weight(self, namespace: str, rollout: str, weight: float) -> None:
        """The canary's current traffic weight, in percent."""
        self.rollout_canary_weight.labels(namespace=namespace, rollout=rollout).set(weight)

    def count_measurement(self, namespace: str, rollout: str, metric: str, phase: str) -> None:
        """One analysis measurement of ``metric`` ended in ``phase``."""
        self.analysis_measurements_total.labels(
            namespace=namespace, rollout=rollout, metric=metric, phase=phase
        ).inc()

    def observe_rollback(self, seconds: float) -> None:
        """A rollback restored stable traffic ``seconds`` after the first failed measurement."""
        self.rollback_seconds.observe(seconds)

    def observe_releases(
        self, namespace: str, rollout: str, before: Sequence[Release], after: Sequence[Release]
    ) -> None:
        """Count what a pass newly set on the Rollout's releases: ``before`` as it read
        them, ``after`` as it wrote them (see :func:`release_changes`).

        The Rollout's release series exist from its first pass on, at 0: ``increase()``
        cannot see a counter's first increment when the series is born at 1, so a
        Rollout's first abort would otherwise be lost from the change failure rate."""
        labels = {"namespace": namespace, "rollout": rollout}
        for outcome in OUTCOMES:
            for reason in ABORT_REASONS if outcome == "Aborted" else ("",):
                self.releases_total.labels(**labels, outcome=outcome, reason=reason)
        detect = self.release_time_to_detect_seconds.labels(**labels)
        restore = self.release_time_to_restore_seconds.labels(**labels)
        lead = self.release_lead_time_seconds.labels(**labels)
        if before == after:  # most passes: nothing to match up
            return
        for change in release_changes(before, after):
            if change.outcome is not None:
                self.releases_total.labels(
                    **labels, outcome=change.outcome, reason=change.reason
                ).inc()
            if change.time_to_detect_seconds is not None:
                detect.observe(change.time_to_detect_seconds)
            if change.time_to_restore_seconds is not None:
                restore.observe(change.time_to_restore_seconds)
            if change.lead_time_seconds is not None:
                lead.observe(change.lead_time_seconds)

    def set_leader(self, leading: bool) -> None:
        """Whether this replica leads (wire to the elector's callbacks)."""
        self.leader.set(1.0 if leading else 0.0)

    def forget_rollout(self, namespace: str, rollout: str) -> None:
        """Drop every series of a deleted Rollout."""
        for series in self._per_rollout:
            series.remove_by_labels({"namespace": namespace, "rollout": rollout})

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


# -- request accounting -------------------------------------------------------------

#: ``hook(verb, code)``: one API request, answered with HTTP status ``code`` (0: none).
RequestHook = Callable[[str, int], None]

_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_verb(method: str, url: str) -> str:
    """The Kubernetes verb of a request: ``GET .../pods`` is ``list`` (``watch`` with
    ``watch=true``), ``GET .../pods/web`` and its subresources ``get``, ``POST`` is
    ``create``, ``PUT`` ``update``, ``PATCH`` ``patch``, ``DELETE`` of a named object
    ``delete`` and of a collection ``deletecollection``."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["api"]:
        rest = segments[2:]  # /api/v1/...
    elif segments[:1] == ["apis"]:
        rest = segments[3:]  # /apis/group/version/...
    else:
        rest = segments
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # namespaces/{ns}/{resource}/...; "namespaces/{ns}" is a namespace
    named = len(rest) >= 2
    method = method.upper()
    if method == "GET":
        if named:
            return "get"
        watch = urllib.parse.parse_qs(parts.query).get("watch", [""])[-1].lower()
        return "watch" if watch in ("true", "1") else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return _WRITE_VERBS.get(method, method.lower())


class _CountedCall:
    """Stands in for ``ApiClient.call_api``: the request, then ``hook(verb, status)``."""

    def __init__(self, call: Callable[..., Any], hook: RequestHook) -> None:
        self.call = call
        self.hook = hook

    def __call__(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        verb = request_verb(method, url)
        try:
            response = self.call(method, url, *args, **kwargs)
        except ApiException as exc:
            self._report(verb, int(exc.status or 0))
            raise
        except Exception:
            self._report(verb, 0)
            raise
        self._report(verb, int(getattr(response, "status", 0) or 0))
        return response

    def _report(self, verb: str, code: int) -> None:
        try:
            self.hook(verb, code)
        except Exception:  # accounting must never fail a request
            log.exception("api request hook failed", verb=verb, code=code)


def count_requests(api_client: client.ApiClient, hook: RequestHook) -> None:
    """Report every request made through ``api_client`` (and clients derived from it
    with :func:`dedicated` from now on) to ``hook(verb, code)``. Calling it again
    replaces the hook; a request is never counted twice."""
    current = api_client.__dict__.get("call_api")
    if isinstance(current, _CountedCall):
        current.hook = hook
        return
    setattr(api_client, "call_api", _CountedCall(api_client.call_api, hook))  # noqa: B010


def request_hook(api_client: client.ApiClient) -> RequestHook | None:
    """The hook :func:`count_requests` installed on ``api_client``, if any."""
    current = api_client.__dict__.get("call_api")
    return current.hook if isinstance(current, _CountedCall) else None


def dedicated(api_client: client.ApiClient) -> client.ApiClient:
    """:func:`controller.adapters.retry.dedicated_client` (own pool, no urllib3 retries)
    that keeps ``api_client``'s request hook. Watches and leader election use it."""
    own = dedicated_client(api_client)
    hook = request_hook(api_client)
    if hook is not None:
        count_requests(own, hook)
    return own
