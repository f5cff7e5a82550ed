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
* leader election: ``stepwise_leader`` (1 while this replica leads).

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
from collections.abc import Callable
from typing import Any, get_args

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.adapters.retry import dedicated_client
from controller.api.rollout import Phase

log = structlog.get_logger()

#: Every phase a Rollout can report; each gets a series so alerts can match on 0 or 1.
PHASES: tuple[str, ...] = get_args(Phase)

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROLLBACK_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """The controller's metrics in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
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
        self.rollout_phase = Gauge(
            "stepwise_rollout_phase",
            "1 for the Rollout's current phase, 0 for the others.",
            ["namespace", "rollout", "phase"],
            registry=r,
        )
        self.rollout_canary_weight = Gauge(
            "stepwise_rollout_canary_weight",
            "Percent of traffic the canary receives.",
            ["namespace", "rollout"],
            registry=r,
        )
        self.analysis_measurements_total = Counter(
            "stepwise_analysis_measurements_total",
            "Analysis measurements taken, by metric and measurement phase.",
            ["namespace", "rollout", "metric", "phase"],
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

    def set_leader(self, leading: bool) -> None:
        """Whether this replica leads (wire to the elector's callbacks)."""
        self.leader.set(1.0 if leading else 0.0)

    def forget_rollout(self, namespace: str, rollout: str) -> None:
        """Drop every series of a deleted Rollout."""
        labels = {"namespace": namespace, "rollout": rollout}
        self.rollout_phase.remove_by_labels(labels)
        self.rollout_canary_weight.remove_by_labels(labels)
        self.analysis_measurements_total.remove_by_labels(labels)

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
