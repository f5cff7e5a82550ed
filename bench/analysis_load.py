"""Analysis under load, for :mod:`bench.scale`: stand-in Prometheus servers and the cases.

Two HTTP servers in the benchmark's process stand in for Prometheus, so the provider's
speed is the one the case names and nothing else:

- :class:`SlowPrometheus` answers every ``/api/v1/query`` with the vector ``[1]`` after
  ``delay`` seconds (200 ms by default: a loaded Prometheus);
- :class:`HungPrometheus` accepts connections and never answers (a Prometheus stuck in
  a long GC, or a proxy that lost its upstream).

The cases (run by :func:`analysis_case` and :func:`requests_case`) are described in
:mod:`bench.scale`'s docstring.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import Member, StatusRecorder, Usage, revision_with_image, summarize
from controller.api import intents
from localcluster.crds import install_crds
from localcluster.traefik import gateway_api_crds
from tests.support.http import send_json
from tests.support.manifests import rollout as rollout_manifest

GROUP, VERSION = "stepwise.dev", "v1alpha1"
JSON_PATCH = "application/json-patch+json"


# -- stand-in Prometheus servers ---------------------------------------------------------


class SlowPrometheus:
    """Answers every instant query with ``[1]`` after ``delay`` seconds."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.queries = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._answer()

            def _answer(self) -> None:
                time.sleep(outer.delay)
                with lock:
                    outer.queries += 1
                send_json(
                    self,
                    {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": [{"metric": {}, "value": [time.time(), "1"]}],
                        },
                    },
                )

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Its base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> SlowPrometheus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class HungPrometheus:
    """Accepts connections and never answers (they are held open until it stops)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        """Its base URL."""
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def _accept(self) -> None:
        self._sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1

    def __enter__(self) -> HungPrometheus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self._sock.close()


# -- manifests ---------------------------------------------------------------------------


def template(name: str, address: str, interval: str, count: int) -> dict[str, Any]:
    """An AnalysisTemplate with one metric on ``address`` (at least 1 passes)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "metrics": [
                {
                    "name": "ok",
                    "interval": interval,
                    "count": count,
                    "thresholdRange": {"min": 1},
                    "provider": {"prometheus": {"address": address, "query": "vector(1)"}},
                }
            ]
        },
    }


def analysis_steps(template_name: str) -> list[dict[str, Any]]:
    """Weight 50, then the analysis, then full weight."""
    return [
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": template_name}]}},
        {"setWeight": 100},
    ]


def apply_template(api: client.ApiClient, namespace: str, doc: dict[str, Any]) -> None:
    """Create or replace the template in ``namespace``."""
    custom = client.CustomObjectsApi(api)
    name = doc["metadata"]["name"]
    try:
        current = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "analysistemplates", name
        )
        assert isinstance(current, dict)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "analysistemplates", doc)
        return
    body = {
        **doc,
        "metadata": {**doc["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
    }
    custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, "analysistemplates", name, body
    )


def release(
    api: client.ApiClient,
    recorder: StatusRecorder,
    m: Member,
    image: str,
    steps: list[dict[str, Any]],
) -> str:
    """Give ``m`` these steps and a new image in one patch; the new revision."""
    cached = recorder.get(m.key)
    assert cached is not None
    revision = revision_with_image(cached, image)
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, m.namespace, "rollouts", m.name,
        [
            {"op": "replace", "path": "/spec/strategy/canary/steps", "value": steps},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image},
        ],
        _content_type=JSON_PATCH,
    )  # fmt: skip
    return revision


def in_analysis(revision: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: the canary ``revision`` is at step 1 (its analysis)."""

    def check(status: dict[str, Any]) -> bool:
        return status.get("canaryRevision") == revision and status.get("currentStepIndex") == 1

    return check


def aborted(revision: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: the status records an abort of ``revision``."""
    return lambda status: (status.get("abort") or {}).get("revision") == revision


def aborted_off(revision: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: ``revision`` is aborted and its weight is 0 (traffic all on stable)."""

    def check(status: dict[str, Any]) -> bool:
        abort = status.get("abort") or {}
        return abort.get("revision") == revision and status.get("canaryWeight") == 0

    return check


def generation_seen(generation: int) -> Callable[[dict[str, Any]], bool]:
    """Predicate: the status describes spec generation ``generation`` or later."""
    return lambda status: int(status.get("observedGeneration") or 0) >= generation


# -- the analysis case -------------------------------------------------------------------


@dataclass
class LatencyResult:
    """One provider condition of the analysis case."""

    name: str
    in_analysis: int = 0
    abort_seconds: list[float] = field(default_factory=list)
    abort_missed: int = 0
    abort_seen_seconds: list[float] = field(default_factory=list)
    """To the first status with the abort (the controller's reaction; the rest of
    ``abort_seconds`` is the stable's pods coming back before the canary goes)."""
    reconcile_seconds: list[float] = field(default_factory=list)
    reconcile_missed: int = 0
    provider_queries: int = 0

    def p99(self, values: Sequence[float]) -> str:
        q = summarize(values)
        return f"{q['p99']:.2f}s" if q["n"] else "-"


def abort_latency(
    api: client.ApiClient,
    recorder: StatusRecorder,
    targets: dict[Member, str],
    timeout: float,
) -> tuple[list[float], int, list[float]]:
    """Annotate each target with an abort of its revision (all at once); seconds from
    each annotation's acknowledgement to the first status with the abort and weight 0,
    how many never got there, and seconds to the first status with the abort."""
    custom = client.CustomObjectsApi(api)
    acked: dict[str, float] = {}
    for m, revision in targets.items():
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, m.namespace, "rollouts", m.name,
            {"metadata": {"annotations": {intents.ABORT: revision}}},
        )  # fmt: skip
        acked[m.key] = time.monotonic()
    late = recorder.wait_each(
        {m.key: aborted_off(r) for m, r in targets.items()}, timeout, what="aborted"
    )
    out, reacted = [], []
    for m, revision in targets.items():
        seen = recorder.first(m.key, aborted_off(revision))
        if seen is not None and m.key not in late:
            out.append(max(0.0, seen.at - acked[m.key]))
        first = recorder.first(m.key, aborted(revision))
        if first is not None:
            reacted.append(max(0.0, first.at - acked[m.key]))
    return out, len(late), reacted


def reconcile_latency(
    api: client.ApiClient, recorder: StatusRecorder, members: Sequence[Member], timeout: float
) -> tuple[list[float], int]:
    """Flip ``spec.paused`` on Rollouts that have no analysis; seconds from each patch's
    acknowledgement to the first status that describes the new generation."""
    custom = client.CustomObjectsApi(api)
    acked: dict[str, tuple[float, int]] = {}
    for m in members:
        cached = recorder.get(m.key) or {}
        paused = bool((cached.get("spec") or {}).get("paused"))
        done = custom.patch_namespaced_custom_object(
            GROUP, VERSION, m.namespace, "rollouts", m.name, {"spec": {"paused": not paused}}
        )
        assert isinstance(done, dict)
        acked[m.key] = (time.monotonic(), int(done["metadata"]["generation"]))
    late = recorder.wait_each(
        {k: generation_seen(g) for k, (_, g) in acked.items()}, timeout, what="reconciled"
    )
    out = []
    for key, (at, generation) in acked.items():
        seen = recorder.first(key, generation_seen(generation))
        if seen is not None and key not in late:
            out.append(max(0.0, seen.at - at))
    return out, len(late)


# -- the requests case -------------------------------------------------------------------


@dataclass
class RequestsResult:
    """API requests of one Gateway API canary in analysis at a 1 s interval."""

    idle_per_min: float = 0.0
    analysis_per_min: float = 0.0
    window_seconds: float = 0.0
    measurements: float = 0.0
    by_verb: dict[str, float] = field(default_factory=dict)


def gateway_rollout(name: str, template_name: str) -> dict[str, Any]:
    """A Gateway API Rollout of 2 pods whose analysis step runs on ``template_name``."""
    return rollout_manifest(
        name,
        replicas=2,
        steps=[
            {"setWeight": 20},
            {"analysis": {"templates": [{"templateName": template_name}]}},
            {"setWeight": 100},
        ],
        stableService=f"{name}-stable",
        canaryService=f"{name}-canary",
        trafficRouting={"gatewayAPI": {"httpRoute": name}},
    )


def gateway_objects(api: client.ApiClient, namespace: str, name: str) -> None:
    """The two Services and the HTTPRoute a Gateway API Rollout needs."""
    install_crds(api, gateway_api_crds())
    core = client.CoreV1Api(api)
    for svc in (f"{name}-stable", f"{name}-canary"):
        core.create_namespaced_service(
            namespace,
            client.V1Service(
                metadata=client.V1ObjectMeta(name=svc),
                spec=client.V1ServiceSpec(
                    selector={"app": name}, ports=[client.V1ServicePort(port=80)]
                ),
            ),
        )
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "rules": [
                    {"backendRefs": [
                        {"group": "", "kind": "Service", "name": f"{name}-stable", "port": 80}
                    ]}
                ]
            },
        },
    )  # fmt: skip


def requests_by_verb(metrics_text: str) -> dict[str, float]:
    """``stepwise_api_requests_total`` summed per verb."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "stepwise_api_requests_total":
                verb = sample.labels.get("verb", "?")
                out[verb] = out.get(verb, 0.0) + sample.value
    return out


def usage_delta(before: Usage, after: Usage) -> float:
    """Requests between two readings."""
    return after.requests - before.requests
