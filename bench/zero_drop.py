"""Zero dropped requests: promotions and aborts under load through a real Gateway.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.zero_drop [--healthy 20] [--bad 20] [--rps 100]

(``--healthy 2 --bad 2`` is a smoke run of a minute and a half.)

One local control plane (one kwok node, its pods' loopback IPs in a /16 of their own, so
that a test or another benchmark serving pods on the machine at the same time holds none
of them), the real data plane
(:class:`localcluster.dataplane.DataPlane`: Traefik as the Gateway API implementation,
a demo-app process for each pod on its loopback pod IP with the EndpointSlices published,
a Prometheus discovering the pods and scraping them every second) and the controller
process (:class:`localcluster.controller.ControllerProcess`, ``--workers``, Prometheus
= the data plane's). One Rollout, ``checkout``, 4 replicas, routed by a Gateway API
HTTPRoute on Traefik's Gateway, stable and canary Services with a port named ``http``
whose ``targetPort`` is the pods' ``http`` port; steps ``setWeight 20``, a pause,
``setWeight 50``, a pause, ``setWeight 100`` (``--weights``, ``--pause``), then
promotion; a background analysis on the demo's success-rate query against the canary's
discovered pods (``pod=~"{{rollout}}-{{canaryRevision}}-.*"``, interval 1 s, ``[5s]``
rate window, threshold 0.9, ``minSamples`` 5 requests, ``count`` 3, no failure allowed).

``--rps`` requests a second (:class:`demodriver.client.GatewayLoad`) go through Traefik's
Gateway for the whole run. Then the healthy and the bad releases are interleaved (a
healthy one first): each sets a new ``VERSION`` and image in the pod template; a bad
one also sets ``ERROR_RATE`` (``--bad-error-rate``) in the pod env, so its pods fail
from their first request and the analysis aborts it. Each release waits until it is
over before the next: promoted with only the new pods left, or aborted with traffic back
on stable and the bad pods gone (``scaleDownDelaySeconds`` and
``abortScaleDownDelaySeconds`` are ``--scale-down-delay``), then ``--gap`` seconds more.

Every request is counted at the client by outcome (ok; app error: a 5xx with the app's
``X-Served-By``; gateway error: a 5xx without it; no answer) and by the version that
answered. The Rollout's status is watched (every distinct status, with the time it was
seen), and Traefik's own view of the route (its weights and each backend's servers) is
polled every 50 ms. A release's window runs from its template change to the next
one's; the failures are attributed:

* (a) gateway errors and requests without an answer in a healthy release's window
  (its promotion, and the old pods going): the target is 0;
* (b) the same in a bad release's window (its abort, and the bad pods going): target 0;
* (c) app errors from a bad version answered before its abort finished (Traefik's
  weight for the canary at 0, plus 0.5 s for requests in flight): expected, the cost of
  judging by the canary's own errors; with the time from the release to the last request
  the bad version answered;
* (d) anything else: app errors from a healthy version, a bad version answering after
  its abort had finished, gateway errors or no answer before the first release.

It also counts the requests a new version answered before Traefik gave the canary any
weight (they reached it through an address the Gateway still held for a pod that is
gone: kwok gives a deleted pod's IP to the next pod), and reports pods that could not be
served and answers from versions this run never released (the environment interfering).
From the controller's log it counts the status writes refused as conflicts and the times
the stable Service went back to a revision it had left (a promotion undone by a pass that
replanned from the status before it).

Failures of (a), (b) and (d) are grouped into incidents (no gap over a second), and each
comes with the timeline around it: the status history, the controller's actions (its
log), the Services' selectors, the EndpointSlices, the pods and the HTTPRoute as the
watches saw them, and Traefik's weights and servers, so the order of events that caused
them can be read; the whole run's timeline is written to ``timeline.log`` in the work
directory. Per release it gives the times from the template change to the
promotion (the first status with the new stable revision) and to the old pods gone, or
to the abort (the first status with the abort), to Traefik's canary weight 0 and to the
last request answered by the bad version. It prints the tables with the configuration,
the machine and the load average, and writes ``bench/results/zero_drop.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from bench.harness import (
    LoadMonitor,
    Machine,
    Snapshot,
    StatusRecorder,
    bench_cluster,
    create_namespace,
    load_line,
    log_time,
    machine_line,
    render_table,
    seconds,
    summarize,
    write_results,
)
from controller.api.rollout import GROUP, VERSION, PodTemplate
from controller.core.hashing import template_hash
from demodriver.client import Answer, GatewayLoad
from localcluster import cluster as cluster_module
from localcluster.controller import ControllerProcess
from localcluster.dataplane import DataPlane, served_pod_template
from localcluster.traefik import GATEWAY_GROUP, GATEWAY_VERSION, LocalTraefik

NAMESPACE = "zero-drop"
ROLLOUT = "checkout"
KEY = f"{NAMESPACE}/{ROLLOUT}"
APP = {"app": "checkout"}
STABLE, CANARY = "checkout-stable", "checkout-canary"
REVISION_LABEL = "stepwise.dev/revision"
REPLICAS = 4
THRESHOLD = 0.9
COUNT = 3
#: A bad version's app errors count as (c) until Traefik's canary weight 0 plus this.
IN_FLIGHT = 0.5
#: Failures further apart than this are separate incidents.
INCIDENT_GAP = 1.0
#: The timeline shown around an incident: from this long before it to this long after.
BEFORE, AFTER = 3.0, 1.0
FAILED = ("gateway error", "no answer")
OUTCOMES = ("ok", "app error", "gateway error", "no answer")


# -- the objects -----------------------------------------------------------------------


def container(version: str, error_rate: float) -> dict[str, Any]:
    """The checkout container of one release: its image and VERSION, and ERROR_RATE for
    a bad one (the demo app fails that share of its requests from the first)."""
    env = {"VERSION": version, "SERVICE": "checkout", "LATENCY_MS": "10", "JITTER_MS": "5"}
    if error_rate:
        env["ERROR_RATE"] = f"{error_rate:g}"
    found: dict[str, Any] = served_pod_template(APP, env, name="checkout")["spec"]["containers"][0]
    return found


def manifests(
    parent_ref: dict[str, Any], weights: Sequence[int], pause: float, scale_down_delay: int
) -> list[tuple[str, dict[str, Any]]]:
    """(kind, body) of the Services, the AnalysisTemplate, the HTTPRoute and the Rollout
    (whose first revision, ``v0``, becomes stable directly)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {
            "selector": dict(APP),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    canary_pods = 'namespace="{{namespace}}",pod=~"{{rollout}}-{{canaryRevision}}-.*"'
    template = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "success-rate"},
        "spec": {
            "metrics": [
                {
                    "name": "success-rate",
                    "interval": "1s",
                    "count": COUNT,
                    "failureLimit": 0,
                    "thresholdRange": {"min": THRESHOLD},
                    "minSamples": {
                        "query": f"sum(increase(http_requests_total{{{canary_pods}}}[5s]))",
                        "min": 5,
                    },
                    "provider": {
                        "prometheus": {
                            "query": f'sum(rate(http_requests_total{{{canary_pods},code!~"5.."}}'
                            f"[5s])) / sum(rate(http_requests_total{{{canary_pods}}}[5s]))"
                        }
                    },
                }
            ]
        },
    }
    route = {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": ROLLOUT},
        "spec": {
            "parentRefs": [parent_ref],
            "rules": [{"backendRefs": [{"name": STABLE, "port": 80, "weight": 100}]}],
        },
    }
    steps: list[dict[str, Any]] = []
    for i, weight in enumerate(weights):
        steps.append({"setWeight": weight})
        if i < len(weights) - 1:
            steps.append({"pause": {"duration": f"{pause:g}s"}})
    pod_template = served_pod_template(APP, {}, name="checkout")
    pod_template["spec"]["containers"] = [container("v0", 0.0)]
    rollout = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": ROLLOUT},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": dict(APP)},
            "template": pod_template,
            "strategy": {
                "canary": {
                    "stableService": STABLE,
                    "canaryService": CANARY,
                    "trafficRouting": {"gatewayAPI": {"httpRoute": ROLLOUT}},
                    "steps": steps,
                    "analysis": {"templates": [{"templateName": "success-rate"}]},
                    "scaleDownDelaySeconds": scale_down_delay,
                    "abortScaleDownDelaySeconds": scale_down_delay,
                }
            },
        },
    }
    return [
        ("service", {**service, "metadata": {"name": STABLE}}),
        ("service", {**service, "metadata": {"name": CANARY}}),
        ("template", template),
        ("route", route),
        ("rollout", rollout),
    ]


# -- what the request path depended on, over time ---------------------------------------


@dataclass(frozen=True)
class Change:
    """One observed change of something on the request path."""

    at: float
    """``time.monotonic()`` when it was seen (for the controller's log: when it was
    written, converted from its wall-clock timestamp)."""
    source: str
    name: str
    text: str


def _conditions_true(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def pod_line(pod: dict[str, Any]) -> str:
    """A pod as the request path sees it."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    revision = (meta.get("labels") or {}).get(REVISION_LABEL, "-")
    serving = (meta.get("annotations") or {}).get("stepwise.dev/serving", "-")
    return (
        f"rev {revision} {status.get('phase', '-')} ip {status.get('podIP', '-')} "
        f"ready={_conditions_true(pod, 'Ready')} serving={serving}"
        + (" DELETING" if meta.get("deletionTimestamp") else "")
    )


def slice_line(item: dict[str, Any]) -> str:
    """An EndpointSlice: its Service and each endpoint's pod, address and conditions."""
    service = ((item.get("metadata") or {}).get("labels") or {}).get(
        "kubernetes.io/service-name", "?"
    )
    parts = []
    for endpoint in item.get("endpoints") or []:
        cond = endpoint.get("conditions") or {}
        flags = "".join(
            letter if cond.get(name) else "-"
            for letter, name in (("R", "ready"), ("S", "serving"), ("T", "terminating"))
        )
        pod = (endpoint.get("targetRef") or {}).get("name", "?")
        parts.append(f"{pod}@{','.join(endpoint.get('addresses') or [])}[{flags}]")
    return f"{service}: " + (", ".join(sorted(parts)) or "(no endpoints)")


def service_line(item: dict[str, Any]) -> str:
    """A Service's selector."""
    selector = (item.get("spec") or {}).get("selector") or {}
    return "selector " + ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def route_line(item: dict[str, Any]) -> str:
    """An HTTPRoute's weights, generation and the generations its parents reported."""
    refs = [
        f"{ref.get('name')}={ref.get('weight', 1)}"
        for rule in (item.get("spec") or {}).get("rules") or []
        for ref in rule.get("backendRefs") or []
    ]
    seen = sorted(
        {
            c.get("observedGeneration")
            for parent in (item.get("status") or {}).get("parents") or []
            for c in parent.get("conditions") or []
            if c.get("observedGeneration") is not None
        }
    )
    generation = (item.get("metadata") or {}).get("generation")
    return f"{' '.join(refs)}; generation {generation}, parents observed {seen}"


def _no_return_type(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` without its docstring, so that a watch hands its objects over as plain
    dicts (the watch deserialises into the type its docstring names)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return call


class Trace:
    """Watches pods, EndpointSlices, Services and HTTPRoutes of the namespace, and polls
    Traefik's view of the route every 50 ms; keeps each change with the time it was seen.

    It also keeps the pods as they are now (for "only the stable's pods are left") and
    Traefik's weights over time (for "Traefik's canary weight reached 0")."""

    def __init__(self, api: client.ApiClient, traefik: LocalTraefik, every: float = 0.05) -> None:
        self.traefik = traefik
        self.every = every
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        custom = client.CustomObjectsApi(api)
        self._sources: list[tuple[str, Callable[..., Any], Callable[[dict[str, Any]], str]]] = [
            ("pod", _no_return_type(core.list_namespaced_pod), pod_line),
            ("slice", _no_return_type(discovery.list_namespaced_endpoint_slice), slice_line),
            ("service", _no_return_type(core.list_namespaced_service), service_line),
            (
                "route",
                _no_return_type(
                    lambda namespace, **kw: custom.list_namespaced_custom_object(
                        GATEWAY_GROUP, GATEWAY_VERSION, namespace, "httproutes", **kw
                    )
                ),
                route_line,
            ),
        ]
        self.changes: list[Change] = []
        self.pods: dict[str, dict[str, Any]] = {}
        self.weights: list[tuple[float, dict[str, int]]] = []
        """Traefik's weights by Service, each time they changed."""
        self.polls: list[float] = []
        """When Traefik was polled successfully."""
        self.poll_errors = 0
        self.unserved: set[str] = set()
        """Pods the pod runner marked not serving while Running and not being deleted:
        their process could not start or died (another data plane on this machine
        holding the same loopback pod IP, say)."""
        self._last: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the watches and the poller."""
        for source, func, line in self._sources:
            thread = threading.Thread(
                target=self._watch, args=(source, func, line), name=f"trace-{source}", daemon=True
            )
            self._threads.append(thread)
        self._threads.append(threading.Thread(target=self._poll, name="trace-traefik", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop watching and polling."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def record(self, source: str, name: str, text: str, at: float | None = None) -> None:
        """Keep a change (nothing when the text is what was last seen)."""
        with self._lock:
            if self._last.get((source, name)) == text:
                return
            self._last[(source, name)] = text
            self.changes.append(Change(time.monotonic() if at is None else at, source, name, text))

    def between(self, start: float, end: float) -> list[Change]:
        """The changes seen within ``[start, end]``."""
        with self._lock:
            return [c for c in self.changes if start <= c.at <= end]

    def current_pods(self) -> dict[str, dict[str, Any]]:
        """The namespace's pods now (a copy)."""
        with self._lock:
            return dict(self.pods)

    def weight_at(self, at: float) -> dict[str, int]:
        """Traefik's weights as last polled at ``at``."""
        with self._lock:
            found: dict[str, int] = {}
            for when, weights in self.weights:
                if when > at:
                    break
                found = weights
            return found

    def canary_zero_since(self, start: float) -> float | None:
        """When Traefik gave the canary Service no weight from ``start`` on: ``start``
        itself if it had none then, else the first poll after it showing none."""
        if not self.weight_at(start).get(CANARY, 0):
            return start
        with self._lock:
            samples = list(self.weights)
        return next(
            (when for when, w in samples if when > start and w and not w.get(CANARY, 0)), None
        )

    def last_text(self, source: str, name: str) -> str:
        """What was last seen of one thing ("" if nothing)."""
        with self._lock:
            return self._last.get((source, name), "")

    # -- the watches -----------------------------------------------------------------

    def _watch(
        self, source: str, func: Callable[..., Any], line: Callable[[dict[str, Any]], str]
    ) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(source, func, line)
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    func, NAMESPACE, resource_version=version, timeout_seconds=10
                )
                for event in stream:
                    obj = event["object"]
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    self._seen(source, event["type"], obj, line)
                    if self._stop.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # expired: list again
                self._stop.wait(0.2)
            except Exception:  # a dropped connection: watch again
                self._stop.wait(0.2)

    def _list(
        self, source: str, func: Callable[..., Any], line: Callable[[dict[str, Any]], str]
    ) -> str:
        """List afresh (what went away meanwhile is recorded as deleted); the version."""
        resp = func(NAMESPACE, _preload_content=False)
        listing = json.loads(resp.data)
        items = listing.get("items") or []
        names = {str((o.get("metadata") or {}).get("name")) for o in items}
        with self._lock:
            known = {name for (src, name), text in self._last.items() if src == source}
            gone = {name for name in known if self._last[(source, name)] != "DELETED"} - names
        for name in gone:
            self._seen(source, "DELETED", {"metadata": {"name": name}}, line)
        for obj in items:
            self._seen(source, "ADDED", obj, line)
        return str(listing["metadata"]["resourceVersion"])

    def _seen(
        self, source: str, kind: str, obj: dict[str, Any], line: Callable[[dict[str, Any]], str]
    ) -> None:
        name = str((obj.get("metadata") or {}).get("name", "?"))
        text = "DELETED" if kind == "DELETED" else line(obj)
        if source == "pod":
            with self._lock:
                if kind == "DELETED":
                    self.pods.pop(name, None)
                else:
                    self.pods[name] = obj
                    if " serving=false" in text and "DELETING" not in text:
                        self.unserved.add(name)
        self.record(source, name, text)

    # -- Traefik ----------------------------------------------------------------------

    def _poll(self) -> None:
        query = urllib.parse.urlencode({"per_page": 10000})
        while not self._stop.wait(self.every):
            try:
                services = self.traefik.api(f"/api/http/services?{query}")
            except Exception:
                self.poll_errors += 1
                continue
            self._traefik_seen(services)

    def _traefik_seen(self, services: list[dict[str, Any]]) -> None:
        at = time.monotonic()
        by_name = {str(s.get("name", "")).split("@", 1)[0]: s for s in services}
        prefix = f"httproute-{NAMESPACE}-{ROLLOUT}-gw-"
        weights: dict[str, int] = {}
        for name, service in sorted(by_name.items()):
            if not name.startswith(prefix) or "weighted" not in service:
                continue
            for backend in (service.get("weighted") or {}).get("services") or []:
                child = str(backend.get("name", "")).split("@", 1)[0]
                svc = _backend_service(child)
                weight = int(backend.get("weight", 1))
                weights[svc] = weights.get(svc, 0) + weight
                servers = sorted(
                    str(s.get("url", "?")).removeprefix("http://")
                    for s in ((by_name.get(child) or {}).get("loadBalancer") or {}).get("servers")
                    or []
                )
                status = (by_name.get(child) or {}).get("status", "?")
                self.record(
                    "traefik",
                    svc,
                    f"weight {weight}, {status}, servers {', '.join(servers) or '(none)'}",
                    at,
                )
        with self._lock:
            self.polls.append(at)
            if not self.weights or self.weights[-1][1] != weights:
                self.weights.append((at, weights))

    def canary_unrouted_until(self, start: float, end: float) -> float:
        """The last poll within ``[start, end]`` that still showed Traefik giving the
        canary no weight before it first gave it some (``end`` if it never did): up to
        then, nothing reached the canary Service through the Gateway."""
        with self._lock:
            routed = next(
                (when for when, w in self.weights if start < when <= end and w.get(CANARY, 0)),
                None,
            )
            if routed is None:
                return end
            return max((t for t in self.polls if start <= t < routed), default=start)


def _backend_service(traefik_name: str) -> str:
    """The Service in a route backend's name (see :func:`localcluster.traefik._backend_service`)."""
    marker = f"-svc-{NAMESPACE}-"
    if marker not in traefik_name:
        return traefik_name
    return traefik_name.rsplit(marker, 1)[1].rsplit("-", 1)[0]


# -- the releases ----------------------------------------------------------------------


@dataclass
class Release:
    """One template change and what followed (seconds from the change unless noted)."""

    number: int
    version: str
    bad: bool
    revision: str = ""
    started: float = 0.0
    """``time.monotonic()`` when the API server acknowledged the template change."""
    started_wall: str = ""
    end: float = 0.0
    """Monotonic end of the window (the next release's start, or the end of the load)."""
    outcome: str = "timed out"
    """promoted, aborted, or timed out."""
    seen: float | None = None
    """The first status naming the revision as canary."""
    first_weight: float | None = None
    """The first status giving the canary traffic."""
    promoted: float | None = None
    """The first status with the revision as stable."""
    aborted: float | None = None
    """The first status with the abort of the revision."""
    abort_reason: str = ""
    abort_message: str = ""
    status_weight_zero: float | None = None
    """The first status with the abort and canary weight 0."""
    traefik_weight_zero: float | None = None
    """The first poll after the abort with Traefik's canary weight 0."""
    settled: float | None = None
    """Only the stable's pods left (all Ready), with all traffic on stable."""
    traefik_unrouted: float | None = None
    """The last poll in which Traefik still gave the canary no weight (before it gave it
    some)."""
    early_answers: int = 0
    """Requests this version answered before that: they reached it through another
    route (an address the Gateway still had for a pod gone, now another pod's)."""
    first_answer: float | None = None
    """The first request this version answered."""
    last_answer: float | None = None
    """The last request this version answered."""
    requests: dict[str, int] = field(default_factory=dict)
    """Requests in the window by outcome."""
    versions: dict[str, int] = field(default_factory=dict)
    """Requests in the window by the version that answered."""
    bad_app_errors: int = 0
    """(c): this bad version's app errors before its abort finished."""
    window_failures: int = 0
    """(a) or (b): gateway errors and no answer in the window."""
    other_failures: int = 0
    """(d) failures in the window."""

    @property
    def kind(self) -> str:
        """healthy or bad."""
        return "bad" if self.bad else "healthy"

    def since(self, at: float | None) -> float | None:
        """Seconds from the template change to ``at``."""
        return None if at is None else round(at - self.started, 3)


def release_plan(healthy: int, bad: int) -> list[tuple[str, bool]]:
    """(version, bad) in order: healthy and bad interleaved, a healthy one first."""
    out: list[tuple[str, bool]] = []
    for i in range(max(healthy, bad)):
        if i < healthy:
            out.append((f"g{len(out) + 1:02d}", False))
        if i < bad:
            out.append((f"b{len(out) + 1:02d}", True))
    return out


class ZeroDrop:
    """The moving parts of one run and its releases."""

    def __init__(
        self,
        api: client.ApiClient,
        dataplane: DataPlane,
        recorder: StatusRecorder,
        trace: Trace,
        controller: ControllerProcess,
        args: argparse.Namespace,
        say: Callable[[str], None],
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.dataplane = dataplane
        self.recorder = recorder
        self.trace = trace
        self.controller = controller
        self.load: GatewayLoad | None = None
        self.args = args
        self.say = say
        self.releases: list[Release] = []

    # -- setting up ------------------------------------------------------------------

    def apply(self) -> None:
        """Create the Services, the AnalysisTemplate, the HTTPRoute and the Rollout."""
        weights = [int(w) for w in self.args.weights.split(",")]
        plurals = {"template": "analysistemplates", "rollout": "rollouts"}
        for kind, body in manifests(
            self.dataplane.parent_ref(), weights, self.args.pause, self.args.scale_down_delay
        ):
            if kind == "service":
                self.core.create_namespaced_service(NAMESPACE, body)  # type: ignore[arg-type]
            elif kind == "route":
                self.custom.create_namespaced_custom_object(
                    GATEWAY_GROUP, GATEWAY_VERSION, NAMESPACE, "httproutes", body
                )
            else:
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, plurals[kind], body
                )

    def wait_first(self, timeout: float = 120.0) -> None:
        """Until v0 is stable with its pods Ready and Traefik routes to them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.trace.unserved:
                raise RuntimeError(
                    f"pods {sorted(self.trace.unserved)} could not be served (see the pod "
                    "runner's log): is another data plane using the loopback pod IPs?"
                )
            stable = self.recorder.latest(KEY).get("stableRevision")
            if stable and self._settled(str(stable)) and self._routed_to_stable():
                return
            time.sleep(0.2)
        raise RuntimeError(f"v0 did not become stable and routed within {timeout:.0f}s")

    def _routed_to_stable(self) -> bool:
        weights = self.trace.weight_at(time.monotonic())
        if not weights.get(STABLE) or weights.get(CANARY, 0):
            return False
        # Traefik has servers for the stable Service only once its slice is in.
        text = self.trace.last_text("traefik", STABLE)
        return bool(text) and "(none)" not in text

    def _settled(self, stable: str) -> bool:
        """Only ``stable``'s pods, all of them Ready and none being deleted."""
        pods = self.trace.current_pods().values()
        return len(pods) == REPLICAS and all(
            (p.get("metadata") or {}).get("labels", {}).get(REVISION_LABEL) == stable
            and _conditions_true(p, "Ready")
            and not (p.get("metadata") or {}).get("deletionTimestamp")
            for p in pods
        )

    # -- one release -----------------------------------------------------------------

    def release(self, number: int, version: str, bad: bool) -> Release:
        """Change the template, then wait until the release is over."""
        r = Release(number, version, bad)
        error_rate = self.args.bad_error_rate if bad else 0.0
        ops = [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0",
                "value": container(version, error_rate),
            }
        ]
        answer = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "rollouts", ROLLOUT, ops,
            _content_type="application/json-patch+json",
        )  # fmt: skip
        r.started = time.monotonic()
        r.started_wall = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        assert isinstance(answer, dict)
        r.revision = template_hash(PodTemplate.model_validate(answer["spec"]["template"]))
        self.releases.append(r)
        deadline = r.started + self.args.release_timeout
        over = self._aborted_over if bad else self._promoted_over
        while time.monotonic() < deadline:
            status = self.recorder.latest(KEY)
            abort = status.get("abort") or {}
            if abort.get("revision") == r.revision:
                r.outcome = "aborted"
            elif status.get("stableRevision") == r.revision:
                r.outcome = "promoted"
            if over(r, status):
                r.settled = r.since(time.monotonic())
                break
            time.sleep(0.1)
        verdict = r.outcome + ("" if r.settled is not None else ", not settled")
        self.say(
            f"  {number:>3} {r.kind:<7} {version} ({r.revision}): {verdict} after "
            f"{time.monotonic() - r.started:.1f}s"
        )
        time.sleep(self.args.gap)
        return r

    def _promoted_over(self, r: Release, status: dict[str, Any]) -> bool:
        return (
            status.get("stableRevision") == r.revision
            and status.get("canaryRevision") == r.revision
            and status.get("phase") == "Healthy"
            and self._settled(r.revision)
        )

    def _aborted_over(self, r: Release, status: dict[str, Any]) -> bool:
        abort = status.get("abort") or {}
        stable = status.get("stableRevision")
        return (
            abort.get("revision") == r.revision
            and status.get("canaryWeight") == 0
            and stable is not None
            and self._settled(str(stable))
        )

    # -- after the run ---------------------------------------------------------------

    def milestones(self) -> None:
        """Fill each release's times in from the status history and Traefik's weights."""
        snapshots = self.recorder.snapshots(KEY)
        for r in self.releases:
            self._milestones_of(r, [s for s in snapshots if r.started <= s.at <= r.end])

    def _milestones_of(self, r: Release, mine: list[Snapshot]) -> None:
        rev = r.revision
        seen = _first(mine, lambda s: s.get("canaryRevision") == rev)
        weighted = _first(
            mine, lambda s: s.get("canaryRevision") == rev and bool(s.get("canaryWeight"))
        )
        promoted = _first(mine, lambda s: s.get("stableRevision") == rev)
        aborted = _first(mine, lambda s: (s.get("abort") or {}).get("revision") == rev)
        r.seen = r.since(seen.at if seen else None)
        r.traefik_unrouted = r.since(self.trace.canary_unrouted_until(r.started, r.end))
        r.first_weight = r.since(weighted.at if weighted else None)
        r.promoted = r.since(promoted.at if promoted else None)
        if aborted is None:
            return
        r.aborted = r.since(aborted.at)
        r.abort_reason = str(aborted.status["abort"].get("reason", ""))
        r.abort_message = str(aborted.status["abort"].get("message", ""))
        zero = _first(
            [s for s in mine if s.at >= aborted.at],
            lambda s: (s.get("abort") or {}).get("revision") == rev and not s.get("canaryWeight"),
        )
        r.status_weight_zero = r.since(zero.at if zero else None)
        r.traefik_weight_zero = r.since(self.trace.canary_zero_since(aborted.at))

    def abort_done(self, r: Release) -> float:
        """Monotonic time by which a bad release's abort had finished for the client."""
        for rel in (r.traefik_weight_zero, r.status_weight_zero):
            if rel is not None:
                return r.started + rel + IN_FLIGHT
        return r.end


def _first(
    snapshots: Sequence[Snapshot], when: Callable[[dict[str, Any]], bool]
) -> Snapshot | None:
    return next((s for s in snapshots if when(s.status)), None)


# -- attributing every request ---------------------------------------------------------


@dataclass
class Failure:
    """One failed request, and where it came from."""

    at: float
    category: str
    """a, b, c or d."""
    outcome: str
    status: int
    version: str | None
    release: int | None
    """The release whose window it fell in (None: before the first)."""
    since_release: float | None
    failure: str
    why: str


@dataclass
class Incident:
    """Failures of (a), (b) or (d) close together, with the timeline around them."""

    category: str
    release: int | None
    release_kind: str
    start: float
    """Seconds from the release (or from the start of the load, before the first)."""
    end: float
    requests: dict[str, int]
    """By "outcome status version"."""
    failures: list[str]
    status_then: str
    timeline: list[str]


def attribute(
    bench: ZeroDrop, answers: Sequence[Answer], load_start: float
) -> tuple[dict[str, int], list[Failure]]:
    """Count the requests by outcome and every release's window, and attribute each
    failure to (a)-(d)."""
    totals: Counter[str] = Counter()
    failures: list[Failure] = []
    by_version = {r.version: r for r in bench.releases}
    releases = bench.releases
    index = 0
    for answer in sorted(answers, key=lambda a: a.at):
        totals[answer.outcome] += 1
        while index < len(releases) and releases[index].started <= answer.at:
            index += 1
        window = releases[index - 1] if index else None
        own = by_version.get(answer.version or "")
        _count(answer, window, own)
        if answer.outcome == "ok":
            continue
        category, why = _classify(bench, answer, window, own)
        failures.append(
            Failure(
                at=answer.at,
                category=category,
                outcome=answer.outcome,
                status=answer.status,
                version=answer.version,
                release=window.number if window else None,
                since_release=round(answer.at - (window.started if window else load_start), 3),
                failure=answer.failure,
                why=why,
            )
        )
    return dict(totals), failures


def _count(answer: Answer, window: Release | None, own: Release | None) -> None:
    """Count a request in its window, and for the version that answered it."""
    if window is not None:
        window.requests[answer.outcome] = window.requests.get(answer.outcome, 0) + 1
        if answer.version:
            window.versions[answer.version] = window.versions.get(answer.version, 0) + 1
    if own is not None:
        if own.first_answer is None:
            own.first_answer = own.since(answer.at)
        own.last_answer = own.since(answer.at)
        if own.traefik_unrouted is not None and answer.at < own.started + own.traefik_unrouted:
            own.early_answers += 1


def _classify(
    bench: ZeroDrop, answer: Answer, window: Release | None, own: Release | None
) -> tuple[str, str]:
    """(category, why) of a failed request (and the counts of its release)."""
    if answer.outcome in FAILED:
        if window is None:
            return "d", "before the first release"
        window.window_failures += 1
        return ("b", "during an abort") if window.bad else ("a", "during a promotion")
    # An app error: from a bad version before its abort finished, it is expected.
    if own is not None and own.bad and answer.at <= bench.abort_done(own):
        own.bad_app_errors += 1
        return "c", "bad canary before its abort finished"
    if window is not None:
        window.other_failures += 1
    if own is None:
        return "d", f"app error from {answer.version}, not a bad release"
    if own.bad:
        return "d", f"bad version {answer.version} answered after its abort had finished"
    return "d", f"app error from healthy version {answer.version}"


def incidents(bench: ZeroDrop, failures: Sequence[Failure], load_start: float) -> list[Incident]:
    """(a), (b) and (d) failures grouped, each with the timeline around it."""
    groups: list[list[Failure]] = []
    for f in sorted((f for f in failures if f.category != "c"), key=lambda f: f.at):
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and f.at - last.at <= INCIDENT_GAP
            and (f.release, f.category) == (last.release, last.category)
        ):
            groups[-1].append(f)
        else:
            groups.append([f])
    by_number = {r.number: r for r in bench.releases}
    actions = controller_changes(bench)
    shown = [f for group in groups for f in group]
    out: list[Incident] = []
    for group in groups:
        start, end = group[0].at, group[-1].at
        release = by_number.get(group[0].release) if group[0].release is not None else None
        origin = release.started if release else load_start
        counts = Counter(f"{f.outcome} {f.status or '-'} {f.version or '-'}" for f in group)
        messages = sorted({f.failure for f in group if f.failure})[:3]
        status = _status_at(bench, start)
        lines = timeline(bench, actions, start - BEFORE, end + AFTER, origin, shown)
        out.append(
            Incident(
                category=group[0].category,
                release=group[0].release,
                release_kind=release.kind if release else "-",
                start=round(start - origin, 3),
                end=round(end - origin, 3),
                requests=dict(counts),
                failures=messages,
                status_then=status,
                timeline=lines,
            )
        )
    return out


def _status_at(bench: ZeroDrop, at: float) -> str:
    found: dict[str, Any] = {}
    for snap in bench.recorder.snapshots(KEY):
        if snap.at > at:
            break
        found = snap.status
    return status_text(found)


def status_text(s: dict[str, Any]) -> str:
    """A status as one line."""
    abort = s.get("abort") or {}
    return (
        f"{s.get('phase', '-')} step {s.get('currentStepIndex', '-')} weight "
        f"{s.get('canaryWeight', '-')} stable {s.get('stableRevision', '-')} canary "
        f"{s.get('canaryRevision', '-')}"
        + (f" ABORTED {abort.get('revision')}" if abort else "")
        + f" | {str(s.get('message', ''))[:90]}"
    )


def controller_record(bench: ZeroDrop) -> dict[str, Any]:
    """From the controller's log: its status writes refused as conflicts, and the stable
    Service pinned back to a revision it had already left (a promotion undone)."""
    conflicts = 0
    pins: list[str] = []
    undone: list[str] = []
    for entry in bench.controller.logs():
        if entry.get("event") == "conflict; retrying with a fresh read":
            conflicts += 1
        if entry.get("action") == "PinService" and entry.get("service") == STABLE:
            revision = str(entry.get("revision"))
            if pins and pins[-1] != revision and revision in pins:
                undone.append(f"{entry.get('timestamp')} stable -> {revision} (was {pins[-1]})")
            pins.append(revision)
    return {"status_conflicts": conflicts, "stable_pinned_back": undone}


def controller_changes(bench: ZeroDrop) -> list[Change]:
    """The controller's actions and events from its log, on the monotonic clock."""
    offset = time.time() - time.monotonic()
    out: list[Change] = []
    for entry in bench.controller.logs():
        event = entry.get("event")
        if event == "action":
            fields = {
                k: v
                for k, v in entry.items()
                if k not in ("event", "timestamp", "level", "logger", "rollout", "namespace")
                and not k.startswith("_")
            }
            text = " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
        elif event == "event":
            text = f"event {entry.get('reason')}: {entry.get('message')}"
        else:
            continue
        out.append(Change(log_time(entry) - offset, "controller", str(event), text))
    return out


def timeline(
    bench: ZeroDrop,
    actions: Sequence[Change],
    start: float,
    end: float,
    origin: float,
    failed: Sequence[Answer | Failure] | None = None,
) -> list[str]:
    """Everything seen within ``[start, end]``, in order, times from ``origin``, with the
    ``failed`` requests (default: every request that was not ok)."""
    changes = [c for c in actions if start <= c.at <= end] + bench.trace.between(start, end)
    for snap in bench.recorder.snapshots(KEY):
        if start <= snap.at <= end:
            changes.append(Change(snap.at, "status", ROLLOUT, status_text(snap.status)))
    if failed is None:
        answers = bench.load.answers(start, end) if bench.load else []
        failed = [a for a in answers if a.outcome != "ok"]
    for a in failed:
        if start <= a.at <= end:
            text = f"{a.status or '-'} {a.version or '-'} {a.failure}"
            changes.append(Change(a.at, "REQUEST", a.outcome, text))
    changes.sort(key=lambda c: c.at)
    return [f"{c.at - origin:+8.3f}s {c.source:<10} {c.name:<28} {c.text}" for c in changes]


# -- the tables ------------------------------------------------------------------------


def totals_table(
    bench: ZeroDrop, totals: dict[str, int], failures: Sequence[Failure]
) -> tuple[str, dict[str, Any]]:
    """Releases, requests by outcome, and the failures attributed."""
    healthy = [r for r in bench.releases if not r.bad]
    bad = [r for r in bench.releases if r.bad]
    by = Counter(f.category for f in failures)
    per_abort = [r.bad_app_errors for r in bad]
    requests = sum(totals.values())
    bad_windows = sum(
        sum(r.requests.values()) for r in bad
    )  # the requests of every bad release's window
    c_share = by["c"] / bad_windows if bad_windows else 0.0
    d_kinds = Counter(f.why for f in failures if f.category == "d")
    q = summarize(per_abort)
    early = sum(r.early_answers for r in bench.releases)
    promoted = sum(r.outcome == "promoted" for r in healthy)
    aborted = sum(r.outcome == "aborted" for r in bad)

    def verdict(n: int) -> str:
        return "met" if not n else "MISSED"

    rows = [
        [
            "healthy releases promoted",
            f"{promoted} of {len(healthy)}",
            "all",
            verdict(len(healthy) - promoted),
        ],
        ["bad releases aborted", f"{aborted} of {len(bad)}", "all", verdict(len(bad) - aborted)],
        ["requests answered or failed", f"{requests:,}", "", ""],
        *[[f"  {o}", f"{totals.get(o, 0):,}", "", ""] for o in OUTCOMES],
        ["(a) gateway errors + no answer during promotions", str(by["a"]), "0", verdict(by["a"])],
        ["(b) gateway errors + no answer during aborts", str(by["b"]), "0", verdict(by["b"])],
        [
            "(c) app errors from bad canaries before their abort finished",
            f"{by['c']:,} ({c_share:.2%} of the aborts' windows)",
            "expected",
            "",
        ],
        [
            "    per abort, median / max",
            f"{q.get('median', 0):.0f} / {q.get('max', 0):.0f}" if q["n"] else "-",
            "",
            "",
        ],
        ["(d) other failures", str(by["d"]), "0", verdict(by["d"])],
        *[[f"    {why}", str(n), "", ""] for why, n in sorted(d_kinds.items())],
        [
            "answers from a new version before Traefik gave its canary weight",
            str(early),
            "0",
            verdict(early),
        ],
    ]  # fmt: skip
    summary = {
        "healthy_promoted": promoted,
        "healthy": len(healthy),
        "bad_aborted": aborted,
        "bad": len(bad),
        "requests": requests,
        "by_outcome": totals,
        "a": by["a"],
        "b": by["b"],
        "c": by["c"],
        "c_per_abort": q,
        "c_share_of_abort_windows": round(c_share, 5),
        "early_answers": early,
        "d": by["d"],
        "d_by_kind": dict(d_kinds),
    }
    return render_table(["", "measured", "target", ""], rows), summary


TIMES: tuple[tuple[str, str, bool], ...] = (
    ("promoted", "healthy: release -> promoted (status)", False),
    ("settled", "healthy: release -> only the new pods left", False),
    ("aborted", "bad: release -> aborted (status)", True),
    ("to_traefik_zero", "bad: abort -> Traefik's canary weight 0", True),
    ("traefik_weight_zero", "bad: release -> Traefik's canary weight 0", True),
    ("last_answer", "bad: release -> last request the bad version answered", True),
    ("bad_settled", "bad: release -> the bad pods gone", True),
)


def release_times(r: Release) -> dict[str, float | None]:
    """The per-release measures of :data:`TIMES`."""
    settled = r.settled
    zero = (
        round(r.traefik_weight_zero - r.aborted, 3)
        if r.traefik_weight_zero is not None and r.aborted is not None
        else None
    )
    return {
        "promoted": r.promoted,
        "settled": settled if not r.bad else None,
        "aborted": r.aborted,
        "to_traefik_zero": zero,
        "traefik_weight_zero": r.traefik_weight_zero,
        "last_answer": r.last_answer,
        "bad_settled": settled if r.bad else None,
    }


def times_table(releases: Sequence[Release]) -> tuple[str, dict[str, Any]]:
    """Median, p95 and max of each per-release time."""
    rows = []
    out: dict[str, Any] = {}
    for name, label, bad in TIMES:
        values = [v for r in releases if r.bad == bad and (v := release_times(r)[name]) is not None]
        q = summarize(values)
        out[name] = q
        rows.append(
            [
                label,
                str(q["n"]),
                seconds(q.get("median")),
                seconds(q.get("p95")),
                seconds(q.get("max")),
            ]
        )
    return render_table(["from the template change", "n", "median", "p95", "max"], rows), out


def releases_table(releases: Sequence[Release]) -> str:
    """One row per release."""
    rows = []
    for r in releases:
        t = release_times(r)
        failures = r.window_failures + r.other_failures
        rows.append(
            [
                str(r.number),
                r.kind,
                r.version,
                r.revision,
                r.outcome,
                seconds(t["promoted"] if not r.bad else t["aborted"]),
                seconds(t["to_traefik_zero"]),
                seconds(t["last_answer"]) if r.bad else "",
                seconds(r.settled),
                str(sum(r.requests.values())),
                str(r.bad_app_errors) if r.bad else "",
                str(failures),
            ]
        )
    header = [
        "#", "kind", "version", "revision", "outcome", "-> promoted/aborted",
        "abort -> Traefik 0", "-> last bad answer", "-> settled", "requests",
        "(c)", "(a)/(b)/(d)",
    ]  # fmt: skip
    return render_table(header, rows)


# -- running it ------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Set everything up, run the releases, attribute; the results document."""
    plan = release_plan(args.healthy, args.bad)
    machine = Machine.current()
    started = time.monotonic()
    with LoadMonitor() as load_monitor, bench_cluster(nodes=1) as (cluster, api):
        create_namespace(api, NAMESPACE)
        dataplane = DataPlane(cluster.endpoints, [NAMESPACE], workdir=workdir / "dataplane")
        dataplane.start()
        recorder = StatusRecorder(api)
        trace = Trace(api, dataplane.traefik)
        controller = ControllerProcess(
            cluster.endpoints.kubeconfig, workdir, namespaces=[NAMESPACE],
            extra=[f"--prometheus-address={dataplane.prometheus.url}", f"--workers={args.workers}"],
        )  # fmt: skip
        bench = ZeroDrop(api, dataplane, recorder, trace, controller, args, say)
        try:
            recorder.start()
            trace.start()
            controller.start()
            bench.apply()
            bench.wait_first()
            setup = time.monotonic() - started
            say(f"set up in {setup:.0f}s: v0 stable and routed; {args.rps:g} requests/s from now")
            load = bench.load = GatewayLoad(
                dataplane.url, rps=args.rps, connections=args.connections
            )
            load.start()
            load_start = time.monotonic()
            time.sleep(args.gap)
            for number, (version, bad) in enumerate(plan, start=1):
                bench.release(number, version, bad)
            time.sleep(args.gap)
            load.stop()
            load_end = time.monotonic()
            for this, following in zip(bench.releases, [*bench.releases[1:], None], strict=True):
                this.end = following.started if following else load_end
            bench.milestones()
            answers = load.answers()
            totals, failures = attribute(bench, answers, load_start)
            found = incidents(bench, failures, load_start)
            load_summary = load_monitor.summary()
            environment = interference(bench, answers)
            record = controller_record(bench)
            everything = timeline(
                bench, controller_changes(bench), started, time.monotonic(), load_start
            )
            (workdir / "timeline.log").write_text("\n".join(everything) + "\n")
        finally:
            if bench.load is not None:
                bench.load.stop()
            trace.stop()
            recorder.stop()
            controller.stop()
            dataplane.stop()
    took = time.monotonic() - started
    totals_text, summary = totals_table(bench, totals, failures)
    times_text, times = times_table(bench.releases)
    return {
        "machine": machine,
        "load": load_summary,
        "seconds": round(took, 1),
        "setup_seconds": round(setup, 1),
        "load_seconds": round(load_end - load_start, 1),
        "traefik_poll_errors": trace.poll_errors,
        "environment": environment,
        "controller": record,
        "code": code_version(),
        "summary": summary,
        "times": times,
        "releases": bench.releases,
        "incidents": found,
        "failures": [asdict(f) for f in failures if f.category != "c"],
        "_text": (totals_text, times_text, releases_table(bench.releases)),
    }


def interference(bench: ZeroDrop, answers: Sequence[Answer]) -> list[str]:
    """What the environment did to the run: pods that could not be served, and answers
    from versions this run never released (another data plane on the same pod IPs)."""
    out = [
        f"pod {name} could not be served (its process did not start or died)"
        for name in sorted(bench.trace.unserved)
    ]
    ours = {"v0", *(r.version for r in bench.releases)}
    foreign = Counter(a.version for a in answers if a.version and a.version not in ours)
    out += [f"{n} answers from version {v!r}, not one of this run's" for v, n in foreign.items()]
    return out


def code_version() -> dict[str, Any]:
    """The commit the controller ran from, and the files of controller/ changed beside it."""
    repo = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=repo, check=False, capture_output=True, text=True)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "controller")
    return {"commit": git("rev-parse", "HEAD"), "controller_changes": changed.splitlines()}


def listeners(prefix: str) -> list[str]:
    """Sockets listening on addresses starting with ``prefix`` on this machine."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        ip = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
        if fields[3] == "0A" and ip.startswith(prefix):
            found.append(f"{ip}:{int(port, 16)}")
    return sorted(found)


@contextmanager
def own_pod_ips() -> Iterator[str]:
    """Give the cluster started within a /16 of loopback pod IPs no other data plane on
    this machine uses (kwok's ``--cidr`` is :data:`localcluster.cluster.POD_CIDR`, read when
    kwok starts). Every LocalCluster hands out 127.1.0.1, 127.1.0.2 ... by default, so a
    test or another benchmark serving pods at the same time would hold this run's pod
    addresses: its pods could not start, or would answer this run's requests."""
    rng = random.Random()  # noqa: S311 - picking an address range, not a secret
    for _ in range(50):
        second = rng.randrange(16, 250)
        if not listeners(f"127.{second}."):
            break
    else:
        raise RuntimeError("no free 127.x.0.0/16 for the pod IPs")
    saved = cluster_module.POD_CIDR
    cluster_module.POD_CIDR = f"127.{second}.0.0/16"
    try:
        yield cluster_module.POD_CIDR
    finally:
        cluster_module.POD_CIDR = saved


def print_incidents(found: Sequence[Incident], limit: int, lines: int) -> None:
    """The first ``limit`` incidents with their timelines (at most ``lines`` lines each)."""
    if not found:
        return
    print(f"\n{len(found)} incident(s) of (a), (b) or (d); the first {min(limit, len(found))}:")
    for inc in found[:limit]:
        where = (
            f"release {inc.release} ({inc.release_kind})" if inc.release else "before the releases"
        )
        print(
            f"\n({inc.category}) {where}, {inc.start:+.3f}s .. {inc.end:+.3f}s from its start: "
            + ", ".join(f"{n} x {k}" for k, n in sorted(inc.requests.items()))
        )
        for message in inc.failures:
            print(f"    {message}")
        print(f"    status then: {inc.status_then}")
        shown = inc.timeline if len(inc.timeline) <= lines else inc.timeline[:lines]
        for line in shown:
            print(f"    {line}")
        if len(inc.timeline) > lines:
            print(f"    ... {len(inc.timeline) - lines} more lines in the JSON")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--healthy", type=int, default=20, help="healthy releases (promoted)")
    parser.add_argument("--bad", type=int, default=20, help="bad releases (aborted)")
    parser.add_argument("--rps", type=float, default=100.0, help="requests/s through the Gateway")
    parser.add_argument("--connections", type=int, default=8, help="client keep-alive connections")
    parser.add_argument("--weights", default="20,50,100", help="the setWeight steps")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds of each pause step")
    parser.add_argument(
        "--bad-error-rate", type=float, default=0.5, help="ERROR_RATE of a bad release's pods"
    )
    parser.add_argument(
        "--scale-down-delay", type=int, default=3,
        help="scaleDownDelaySeconds and abortScaleDownDelaySeconds",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=4, help="controller workers")
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between releases")
    parser.add_argument(
        "--release-timeout", type=float, default=180.0, help="seconds for a release to finish"
    )
    parser.add_argument("--show-incidents", type=int, default=5, help="incidents printed")
    parser.add_argument("--timeline-lines", type=int, default=60, help="lines per incident")
    return parser.parse_args(argv)


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Print the configuration, the tables and the incidents."""
    totals_text, times_text, releases_text = result["_text"]
    weights = [int(w) for w in args.weights.split(",")]
    steps = f", pause {args.pause:g}s, ".join(f"setWeight {w}" for w in weights)
    print()
    print(
        f"Zero drop: {args.rps:g} requests/s through Traefik's Gateway while {args.healthy} "
        f"healthy releases are promoted and {args.bad} bad ones aborted, interleaved"
    )
    print(
        f"Rollout: {REPLICAS} replicas, Gateway API HTTPRoute, steps {steps}, then promotion; "
        f"scale-down delays {args.scale_down_delay}s"
    )
    print(
        f"background analysis: success rate >= {THRESHOLD} of the canary's pods, every 1s over "
        f"[5s], count {COUNT}, minSamples 5; bad releases ERROR_RATE={args.bad_error_rate:g}"
    )
    code = result["code"]
    changed = f" with {len(code['controller_changes'])} file(s) of controller/ changed"
    print(
        f"controller process, {args.workers} workers, from {code['commit'][:7]}"
        f"{changed if code['controller_changes'] else ''}; Prometheus scraping every 1s; "
        f"{args.connections} client connections"
    )
    print(machine_line(result["machine"]))
    print(load_line(result["load"]))
    print()
    print(totals_text)
    print()
    print(times_text)
    print()
    print(releases_text)
    print_incidents(result["incidents"], args.show_incidents, args.timeline_lines)
    record = result["controller"]
    print(
        f"\ncontroller: {record['status_conflicts']} status writes refused as conflicts; "
        f"{len(record['stable_pinned_back'])} times the stable Service went back to a "
        "revision it had left"
    )
    for line in record["stable_pinned_back"]:
        print(f"    {line}")
    if result["environment"]:
        print("\nTHE ENVIRONMENT INTERFERED; the counts above are not the controller's alone:")
        for line in result["environment"]:
            print(f"    {line}")
    print(
        f"\nin {result['seconds']:.0f}s ({result['setup_seconds']:.0f}s set-up, "
        f"{result['load_seconds']:.0f}s under load)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the releases, print the tables, write the JSON."""
    args = parse(argv)
    workdir = Path(tempfile.mkdtemp(prefix="stepwise-bench-zero-drop-"))
    plan = release_plan(args.healthy, args.bad)
    with own_pod_ips() as cidr:
        print(
            f"zero-drop benchmark: {len(plan)} releases ({args.healthy} healthy, {args.bad} bad)"
            f" at {args.rps:g} requests/s; pod IPs in {cidr}; logs in {workdir}",
            flush=True,
        )
        result = run(args, workdir, lambda line: print(line, flush=True))
    report(args, result)
    path = write_results(
        "zero_drop",
        {
            **{k: v for k, v in result.items() if k not in ("releases", "_text")},
            "machine": asdict(result["machine"]),
            "config": vars(args),
            "releases": [{**asdict(r), "times": release_times(r)} for r in result["releases"]],
            "incidents": [asdict(i) for i in result["incidents"]],
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
