"""The demo scenario, shared by ``make demo`` and the end-to-end test.

On a running cluster it starts the real data plane (:class:`~localcluster.dataplane.DataPlane`:
Traefik as the Gateway, a demo-app process serving each ``checkout`` pod on its pod IP,
and a Prometheus that discovers the pods through the API server), sets up a ``checkout``
Rollout routed through a Gateway API HTTPRoute on Traefik's Gateway, sends 60 requests/s
through the Gateway (every answer counted at the client, with the version that served
it), and starts the controller. Then:

1. ``v1`` becomes stable (first revision, no canary);
2. ``v2`` (healthy) goes through the steps under analysis and is promoted; every request
   during the promotion is counted by outcome;
3. ``v3`` starts healthy; once it has traffic its pods' error rate jumps to 40%, and the
   analysis rolls it back. The time from the jump to Traefik's weight reaching 0, and to
   the last request served by ``v3``, is measured.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from demodriver.client import GatewayLoad
from localcluster import install_crds
from localcluster.cluster import Endpoints
from localcluster.controller import ControllerProcess
from localcluster.dataplane import DataPlane, served_pod_template

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
GROUP, VERSION = "stepwise.dev", "v1alpha1"
ERROR_RATE_OF_BAD_RELEASE = 0.4
PORT = 8080
#: Pod IPs are reached directly, never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Result:
    """What happened, for the summary and the end-to-end test's assertions."""

    v1: str = ""
    v2: str = ""
    v3: str = ""
    good_promoted: bool = False
    good_seconds: float = 0.0
    bad_rolled_back: bool = False
    regression_to_weight_zero: float | None = None
    regression_to_last_bad_request: float | None = None
    versions_after_rollback: set[str] = field(default_factory=set)
    """Versions that served requests from 0.5 s after Traefik's weight reached 0."""
    bad_requests_seen: int = 0
    """Requests v3 answered with an error after its regression."""
    promotion_counts: dict[str, int] = field(default_factory=dict)
    """Requests by outcome from v2's release to its promotion (see demodriver.client)."""
    abort_message: str = ""
    bad_released_at: dt.datetime | None = None
    """Wall-clock instants of v3's story as the demo itself saw them: the image change,"""
    bad_from: dt.datetime | None = None
    """the error-rate jump,"""
    bad_weight_zero_at: dt.datetime | None = None
    """and Traefik's weight reaching 0."""
    bad_record: dict[str, Any] = field(default_factory=dict)
    """v3's entry in the Rollout's delivery record (``status.releases``)."""
    report: list[str] = field(default_factory=list)
    """What ``stepwise report`` printed at the end."""


def _last_seconds(load: GatewayLoad) -> str:
    """The client's count of the last 2 s: requests by version and outcome."""
    now = time.monotonic()
    answers = load.answers(since=now - 2)
    by = Counter((a.version or "-", a.outcome) for a in answers)
    shown = ", ".join(f"{v} {o} {n}" for (v, o), n in sorted(by.items()))
    return f"last 2 s at the client: {shown or 'no requests'}"


class Timeline:
    """Prints what changed, with the time since the start."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.start = time.monotonic()
        self.last = ""

    def note(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.start:6.1f}s] {text}")

    def observe(
        self, rollout: dict[str, Any], route_weight: int | None, load: GatewayLoad | None
    ) -> None:
        s = rollout.get("status") or {}
        line = (
            f"{s.get('phase', '-'):<11} step {s.get('currentStepIndex', '-')}"
            f"  Traefik weight {route_weight if route_weight is not None else '-':>3}%"
            f"  stable {s.get('stableRevision', '-')}  canary {s.get('canaryRevision', '-')}"
            f"  {s.get('message', '')[:80]}"
        )
        if line != self.last:
            self.note(line + (f"\n{' ' * 10}{_last_seconds(load)}" if load else ""))
            self.last = line


VERSION_ENV = {"SERVICE": "checkout", "LATENCY_MS": "10", "JITTER_MS": "5"}


def container(version: str) -> dict[str, Any]:
    """The checkout container of release ``version`` (its image and ``VERSION``)."""
    template = served_pod_template({"app": "checkout"}, {"VERSION": version, **VERSION_ENV})
    found: dict[str, Any] = template["spec"]["containers"][0]
    found["name"] = "checkout"
    found["image"] = f"demo/checkout:{version}"
    return found


def manifests(parent_ref: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The objects the demo applies: (kind, body); the HTTPRoute attaches to ``parent_ref``."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {
            "selector": {"app": "checkout"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    template = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "success-rate"},
        "spec": {
            "metrics": [
                {
                    "name": "success-rate",
                    "interval": "1s",
                    "count": 8,
                    "failureLimit": 0,
                    "thresholdRange": {"min": 0.9},
                    "minSamples": {
                        "query": 'sum(increase(http_requests_total{namespace="{{namespace}}",'
                        'pod=~"{{rollout}}-{{canaryRevision}}-.*"}[5s]))',
                        "min": 5,
                    },
                    "provider": {
                        "prometheus": {
                            "query": 'sum(rate(http_requests_total{namespace="{{namespace}}",'
                            'pod=~"{{rollout}}-{{canaryRevision}}-.*",code!~"5.."}[5s]))'
                            ' / sum(rate(http_requests_total{namespace="{{namespace}}",'
                            'pod=~"{{rollout}}-{{canaryRevision}}-.*"}[5s]))'
                        }
                    },
                }
            ]
        },
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout"},
        "spec": {
            "parentRefs": [parent_ref],
            "rules": [{"backendRefs": [{"name": "checkout-stable", "port": 80, "weight": 100}]}],
        },
    }
    pod_template = served_pod_template({"app": "checkout"}, {"VERSION": "v1", **VERSION_ENV})
    pod_template["spec"]["containers"] = [container("v1")]
    rollout = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": "checkout"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": pod_template,
            "strategy": {
                "canary": {
                    "stableService": "checkout-stable",
                    "canaryService": "checkout-canary",
                    "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout"}},
                    "steps": [
                        {"setWeight": 20},
                        {"pause": {"duration": "6s"}},
                        {"setWeight": 50},
                        {"pause": {"duration": "6s"}},
                    ],
                    "analysis": {"templates": [{"templateName": "success-rate"}]},
                    "scaleDownDelaySeconds": 5,
                    "abortScaleDownDelaySeconds": 5,
                }
            },
        },
    }
    return [
        ("service", {**service, "metadata": {"name": "checkout-stable"}}),
        ("service", {**service, "metadata": {"name": "checkout-canary"}}),
        ("template", template),
        ("route", route),
        ("rollout", rollout),
    ]


class Scenario:
    """The demo's moving parts and its three acts."""

    def __init__(
        self, endpoints: Endpoints, workdir: Path, say: Callable[[str], None], namespace: str
    ) -> None:
        self.api = config.new_client_from_config(config_file=str(endpoints.kubeconfig))  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.namespace = namespace
        self.timeline = Timeline(say)
        self.dataplane = DataPlane(endpoints, [namespace], workdir=workdir / "dataplane")
        self.kubeconfig, self.workdir = endpoints.kubeconfig, workdir
        self.controller: ControllerProcess | None = None
        self.load: GatewayLoad | None = None
        self.bad_pods: set[str] = set()
        """v3 pods whose error rate was raised."""
        self.bad_rate: float | None = None
        self.result = Result()

    # -- reading the world ------------------------------------------------------------

    def rollout(self) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "rollouts", "checkout"
        )
        assert isinstance(found, dict)
        return found

    def status(self) -> dict[str, Any]:
        return self.rollout().get("status") or {}

    def route_weight(self) -> int | None:
        """The canary's share of the route as Traefik applies it (None before it has the
        route)."""
        try:
            weights = self.dataplane.traefik.weights(self.namespace, "checkout")
        except OSError:
            return None
        total = sum(weights.values())
        return round(100 * weights.get("checkout-canary", 0) / total) if total else None

    def sync(self) -> None:
        """Raise the error rate of any new bad pod; note what changed."""
        if self.bad_rate is not None:
            self._make_bad(self.result.v3, self.bad_rate)
        self.timeline.observe(self.rollout(), self.route_weight(), self.load)

    def wait(self, what: str, done: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sync()
                if done(self.status()):
                    return True
            except client.exceptions.ApiException:
                pass
            time.sleep(0.2)
        self.timeline.note(f"gave up waiting for {what} after {timeout:.0f}s")
        return False

    def _make_bad(self, revision: str, rate: float) -> None:
        """Set ``errorRate`` on every Running pod of ``revision`` not yet changed."""
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"stepwise.dev/revision={revision}"
        ).items
        for pod in pods:
            name = str(pod.metadata.name) if pod.metadata else ""
            status = pod.status
            if name in self.bad_pods or status is None or status.phase != "Running":
                continue
            ip = status.pod_ip
            if not ip:
                continue
            request = urllib.request.Request(
                f"http://{ip}:{PORT}/admin/config",
                data=json.dumps({"errorRate": rate}).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with _DIRECT.open(request, timeout=2):
                    self.bad_pods.add(name)
            except OSError:
                continue  # not serving yet: tried again on the next sync

    # -- the acts ---------------------------------------------------------------------

    def setup(self) -> None:
        install_crds(self.api, sorted((REPO / "deploy" / "crds").glob("*.yaml")))
        ns = client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        self.core.create_namespace(ns)
        self.dataplane.start()  # Traefik installs the Gateway API's standard CRDs
        self.timeline.note(
            f"data plane up: Traefik's Gateway at {self.dataplane.url}, pods served on "
            f"loopback pod IPs, Prometheus at {self.dataplane.prometheus.url}"
        )
        # Prometheus has its port once started: the controller is made after it.
        self.controller = ControllerProcess(
            self.kubeconfig, self.workdir, namespaces=[self.namespace],
            extra=[f"--prometheus-address={self.dataplane.prometheus.url}", "--workers=2"],
        )  # fmt: skip
        self.controller.start()
        self.timeline.note(f"controller running (log: {self.controller.log_path})")
        plurals = {"template": "analysistemplates", "rollout": "rollouts"}
        for kind, body in manifests(self.dataplane.parent_ref()):
            if kind == "service":
                self.core.create_namespaced_service(self.namespace, body)  # type: ignore[arg-type]
            elif kind == "route":
                self.custom.create_namespaced_custom_object(
                    "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", body
                )
            else:
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plurals[kind], body
                )
        self.timeline.note("applied Services, HTTPRoute, AnalysisTemplate, Rollout checkout (v1)")

    def first_release(self) -> None:
        self.wait("v1 to become stable", lambda s: s.get("phase") == "Healthy", 60)
        self.result.v1 = str(self.status()["stableRevision"])
        self.wait("Traefik to route to v1", lambda s: self.route_weight() is not None, 30)
        self.load = GatewayLoad(self.dataplane.url, rps=60).start()
        self.timeline.note(
            f"v1 stable; 60 requests/s through Traefik's Gateway {self.dataplane.url}"
        )

    def good_release(self) -> None:
        r = self.result
        started = time.monotonic()
        _release(self.custom, self.namespace, "v2")
        self.timeline.note("release v2 (healthy): image set to demo/checkout:v2")
        self.wait("v2 to start", lambda s: s.get("canaryRevision") != r.v1, 30)
        r.v2 = str(self.status()["canaryRevision"])
        r.good_promoted = self.wait(
            "v2 promoted",
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == r.v2,
            180,
        )
        r.good_seconds = time.monotonic() - started
        time.sleep(3)  # the old pods go after scaleDownDelaySeconds: count through that
        assert self.load is not None
        r.promotion_counts = self.load.counts(started, time.monotonic())
        counts = _counts(r.promotion_counts)
        self.timeline.note(
            f"v2 promoted in {r.good_seconds:.1f}s; requests meanwhile: {counts}"
            if r.good_promoted
            else "v2 NOT promoted"
        )

    def bad_release(self) -> None:
        r = self.result
        r.bad_released_at = _wall()
        _release(self.custom, self.namespace, "v3")
        self.timeline.note("release v3 (turns bad): image set to demo/checkout:v3")
        self.wait("v3 to start", lambda s: s.get("canaryRevision") != r.v2, 30)
        r.v3 = str(self.status()["canaryRevision"])
        self.wait("v3 to take traffic", lambda s: (self.route_weight() or 0) > 0, 90)
        time.sleep(2)
        self.bad_rate = ERROR_RATE_OF_BAD_RELEASE
        self._make_bad(r.v3, self.bad_rate)
        jump = time.monotonic()
        r.bad_from = _wall()
        self.timeline.note(f"v3 error rate jumps to {ERROR_RATE_OF_BAD_RELEASE:.0%}")
        zero = self._until_rolled_back(jump)
        time.sleep(3)
        assert self.load is not None
        bad = [a for a in self.load.answers(since=jump) if a.version == "v3"]
        r.bad_requests_seen = sum(1 for a in bad if a.outcome == "app error")
        if bad:
            r.regression_to_last_bad_request = max(a.at for a in bad) - jump
        if zero is not None:
            r.versions_after_rollback = set(self.load.versions(since=zero + 0.5))
        releases = self.status().get("releases") or []
        r.bad_record = next((e for e in reversed(releases) if e.get("revision") == r.v3), {})
        self.timeline.observe(self.rollout(), self.route_weight(), self.load)

    def _until_rolled_back(self, jump: float) -> float | None:
        r = self.result
        zero: float | None = None
        deadline = jump + 120
        while time.monotonic() < deadline:
            self.sync()
            if zero is None and self.route_weight() == 0:
                zero = time.monotonic()
                r.bad_weight_zero_at = _wall()
                r.regression_to_weight_zero = zero - jump
                self.timeline.note(
                    f"Traefik's weight 0, all traffic on stable: {zero - jump:.1f}s after the jump"
                )
            abort = self.status().get("abort") or {}
            if zero is not None and abort.get("revision") == r.v3:
                r.bad_rolled_back = True
                r.abort_message = str(abort.get("message", ""))
                return zero
            time.sleep(0.1)
        return zero

    def report(self) -> None:
        """What ``stepwise report`` says about the three releases (from the status)."""
        argv = [sys.executable, "-m", "controller", "report", "checkout", "--since", "1d"]
        argv += [f"--kubeconfig={self.kubeconfig}", f"--namespace={self.namespace}"]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
        self.result.report = done.stdout.rstrip().splitlines()
        self.timeline.note("stepwise report checkout --since 1d:")
        for line in self.result.report or done.stderr.splitlines():
            self.timeline.say(f"    {line}")

    def close(self) -> None:
        if self.load is not None:
            self.load.stop()
        if self.controller is not None:
            self.controller.stop()
        self.dataplane.stop()


def run(
    endpoints: Endpoints,
    workdir: Path,
    say: Callable[[str], None] = print,
    namespace: str = "demo",
) -> Result:
    """Run the whole scenario; returns what was measured."""
    demo = Scenario(endpoints, workdir, say, namespace)
    try:
        demo.setup()
        demo.first_release()
        demo.good_release()
        demo.bad_release()
        demo.report()
        return demo.result
    finally:
        demo.close()


def _release(custom: client.CustomObjectsApi, namespace: str, version: str) -> None:
    ops = [
        {"op": "replace", "path": "/spec/template/spec/containers/0", "value": container(version)}
    ]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "rollouts", "checkout", ops,
        _content_type="application/json-patch+json",
    )  # fmt: skip


def _wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _counts(counts: dict[str, int]) -> str:
    order = ("ok", "app error", "gateway error", "no answer")
    return ", ".join(f"{counts.get(k, 0)} {k}" for k in order)


def summary(result: Result) -> list[str]:
    """The closing lines of the demo."""
    lines = [
        "",
        "Summary",
        f"  good release v2 ({result.v2}): "
        + (f"promoted in {result.good_seconds:.1f}s" if result.good_promoted else "NOT promoted"),
        f"  bad release v3 ({result.v3}): "
        + ("rolled back automatically" if result.bad_rolled_back else "NOT rolled back"),
    ]
    if result.regression_to_weight_zero is not None:
        lines.append(
            f"  regression to weight 0 in Traefik: {result.regression_to_weight_zero:.1f}s"
            " (bound: scrape 1s + rate window 5s + analysis interval 1s = 7s)"
        )
    if result.regression_to_last_bad_request is not None:
        last = result.regression_to_last_bad_request
        lines.append(f"  regression to the last request served by v3: {last:.1f}s")
    if result.promotion_counts:
        lines.append(
            f"  requests during v2's release and promotion: {_counts(result.promotion_counts)}"
        )
    lines.append(f"  versions serving after the rollback: {sorted(result.versions_after_rollback)}")
    if result.abort_message:
        lines.append(f"  why: {result.abort_message}")
    record = result.bad_record
    if record.get("timeToDetectSeconds") is not None:
        lines.append(
            f"  v3 in the delivery record: {record.get('outcome')} ({record.get('reason')}), "
            f"time to detect {record['timeToDetectSeconds']:.1f}s, time to restore "
            f"{record.get('timeToRestoreSeconds') or 0:.1f}s"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines.append(f"  ({stamp})")
    return lines
