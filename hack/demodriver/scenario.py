"""The demo scenario, shared by ``make demo`` and the end-to-end test.

On a running cluster and Prometheus it sets up a ``checkout`` Rollout routed through a
Gateway API HTTPRoute, a weighted proxy that follows the route (the stand-in for a
Gateway implementation), one demo-app process per revision (scraped by Prometheus with
the ``namespace``/``pod`` labels a Kubernetes scrape gives), load through the proxy,
and the controller. Then:

1. ``v1`` becomes stable (first revision, no canary);
2. ``v2`` (healthy) goes through the steps under analysis and is promoted;
3. ``v3`` starts healthy; once it has traffic its error rate jumps to 40%, and the
   analysis rolls it back. The time from the jump to the route weight reaching 0, and to
   the last request reaching ``v3``, is measured.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from demodriver.proxy import WeightedProxy
from localcluster import LocalPrometheus, free_port, install_crds
from localcluster.controller import ControllerProcess

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
GROUP, VERSION = "stepwise.dev", "v1alpha1"
ERROR_RATE_OF_BAD_RELEASE = 0.4


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
    revisions_after_rollback: set[str] = field(default_factory=set)
    bad_requests_seen: int = 0
    abort_message: str = ""


class Timeline:
    """Prints what changed, with the time since the start."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.start = time.monotonic()
        self.last = ""

    def note(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.start:6.1f}s] {text}")

    def observe(self, rollout: dict[str, Any], route_weight: int | None) -> None:
        s = rollout.get("status") or {}
        line = (
            f"{s.get('phase', '-'):<11} step {s.get('currentStepIndex', '-')}"
            f"  route weight {route_weight if route_weight is not None else '-':>3}%"
            f"  stable {s.get('stableRevision', '-')}  canary {s.get('canaryRevision', '-')}"
            f"  {s.get('message', '')[:90]}"
        )
        if line != self.last:
            self.note(line)
            self.last = line


class Apps:
    """One demo-app process per revision, registered with Prometheus."""

    def __init__(self, prometheus: LocalPrometheus, namespace: str, workdir: Path) -> None:
        self.prometheus = prometheus
        self.namespace = namespace
        self.workdir = workdir
        self.ports: dict[str, int] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def ensure(self, revision: str, version: str) -> None:
        if revision in self.ports:
            return
        port = free_port()
        log = (self.workdir / f"app-{version}-{revision}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "demoapp",
                    "--port",
                    str(port),
                    "--version",
                    version,
                    "--service",
                    "checkout",
                    "--latency-ms",
                    "10",
                    "--jitter-ms",
                    "5",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
        )
        log.close()
        deadline = time.monotonic() + 15
        while not _ok(f"http://127.0.0.1:{port}/healthz"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"demo app {version} did not start")
            time.sleep(0.1)
        self.prometheus.add_target(
            f"checkout-{revision}",
            f"127.0.0.1:{port}",
            {"namespace": self.namespace, "pod": f"checkout-{revision}-local"},
        )
        self.ports[revision] = port

    def configure(self, revision: str, **changes: float) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[revision]}/admin/config",
            data=json.dumps(changes).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback
            pass

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for revision in self.ports:
            self.prometheus.remove_target(f"checkout-{revision}")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HACK)])}


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except OSError:
        return False


def manifests(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    """The objects the demo applies: (kind, body)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
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
            "parentRefs": [{"name": "demo-gateway"}],
            "rules": [{"backendRefs": [{"name": "checkout-stable", "port": 80, "weight": 100}]}],
        },
    }
    rollout = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": "checkout"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {
                    "containers": [{"name": "checkout", "image": "demo/checkout:v1"}],
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                },
            },
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
        self,
        kubeconfig: Path,
        prometheus: LocalPrometheus,
        workdir: Path,
        say: Callable[[str], None],
        namespace: str,
    ) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(self.api)
        self.apps_api = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.namespace = namespace
        self.timeline = Timeline(say)
        self.apps = Apps(prometheus, namespace, workdir)
        self.controller = ControllerProcess(
            kubeconfig, workdir, namespaces=[namespace],
            extra=[f"--prometheus-address={prometheus.url}", "--workers=2"],
        )  # fmt: skip
        self.proxy: WeightedProxy | None = None
        self.load: subprocess.Popen[bytes] | None = None
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
        """The canary's share of the route, as the proxy follows it."""
        if self.proxy is None:
            return None
        backends = self.proxy.backends
        total = sum(b.weight for b in backends) or 1
        return sum(
            round(100 * b.weight / total) for b in backends if b.service == "checkout-canary"
        )

    def sync(self) -> None:
        """Start a demo-app process for any new revision; note what changed."""
        ro = self.rollout()
        s = ro.get("status") or {}
        for rev in {s.get("stableRevision"), s.get("canaryRevision")} - {None}:
            rs = self.apps_api.read_namespaced_replica_set(f"checkout-{rev}", self.namespace)
            image = str(rs.spec.template.spec.containers[0].image)  # type: ignore[union-attr]
            self.apps.ensure(str(rev), image.rsplit(":", 1)[-1])
        self.timeline.observe(ro, self.route_weight())

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

    # -- the acts ---------------------------------------------------------------------

    def setup(self) -> None:
        install_crds(
            self.api,
            [
                *sorted((REPO / "deploy" / "crds").glob("*.yaml")),
                REPO / "hack" / "crds" / "gateway-api-httproute.yaml",
            ],
        )
        ns = client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        self.core.create_namespace(ns)
        self.controller.start()
        self.timeline.note(f"controller running (log: {self.controller.log_path})")
        plurals = {"template": "analysistemplates", "rollout": "rollouts"}
        for kind, body in manifests(self.namespace):
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
        self.proxy = WeightedProxy(self.api, self.namespace, "checkout", self.apps.ports.get)
        self.proxy.start()
        self.load = subprocess.Popen(
            [sys.executable, "-m", "demoapp.load", "--target", self.proxy.url, "--rps", "60",
             "--duration", "900"],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.timeline.note(f"v1 stable; 60 requests/s through the weighted proxy {self.proxy.url}")

    def good_release(self) -> None:
        r = self.result
        _set_image(self.custom, self.namespace, "demo/checkout:v2")
        started = time.monotonic()
        self.timeline.note("release v2 (healthy): image set to demo/checkout:v2")
        self.wait("v2 to start", lambda s: s.get("canaryRevision") != r.v1, 30)
        r.v2 = str(self.status()["canaryRevision"])
        r.good_promoted = self.wait(
            "v2 promoted",
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == r.v2,
            180,
        )
        r.good_seconds = time.monotonic() - started
        self.timeline.note(
            f"v2 promoted in {r.good_seconds:.1f}s" if r.good_promoted else "v2 NOT promoted"
        )

    def bad_release(self) -> None:
        r = self.result
        _set_image(self.custom, self.namespace, "demo/checkout:v3")
        self.timeline.note("release v3 (turns bad): image set to demo/checkout:v3")
        self.wait("v3 to start", lambda s: s.get("canaryRevision") != r.v2, 30)
        r.v3 = str(self.status()["canaryRevision"])
        self.wait("v3 to take traffic", lambda s: (self.route_weight() or 0) > 0, 90)
        time.sleep(2)
        self.apps.configure(r.v3, errorRate=ERROR_RATE_OF_BAD_RELEASE)
        jump = time.monotonic()
        self.timeline.note(f"v3 error rate jumps to {ERROR_RATE_OF_BAD_RELEASE:.0%}")
        zero = self._until_rolled_back(jump)
        time.sleep(3)
        assert self.proxy is not None
        bad = [s for s in list(self.proxy.served) if s.revision == r.v3 and s.at >= jump]
        r.bad_requests_seen = len(bad)
        if bad:
            r.regression_to_last_bad_request = max(s.at for s in bad) - jump
        if zero is not None:
            r.revisions_after_rollback = self.proxy.revisions_since(zero + 0.5)
        self.timeline.observe(self.rollout(), self.route_weight())

    def _until_rolled_back(self, jump: float) -> float | None:
        r = self.result
        zero: float | None = None
        deadline = jump + 120
        while time.monotonic() < deadline:
            self.sync()
            if zero is None and self.route_weight() == 0:
                zero = time.monotonic()
                r.regression_to_weight_zero = zero - jump
                self.timeline.note(
                    f"route weight 0, all traffic on stable: {zero - jump:.1f}s after the jump"
                )
            abort = self.status().get("abort") or {}
            if zero is not None and abort.get("revision") == r.v3:
                r.bad_rolled_back = True
                r.abort_message = str(abort.get("message", ""))
                return zero
            time.sleep(0.1)
        return zero

    def close(self) -> None:
        if self.load is not None:
            self.load.kill()
            self.load.wait()
        if self.proxy is not None:
            self.proxy.stop()
        self.controller.stop()
        self.apps.stop()


def run(
    kubeconfig: Path,
    prometheus: LocalPrometheus,
    workdir: Path,
    say: Callable[[str], None] = print,
    namespace: str = "demo",
) -> Result:
    """Run the whole scenario; returns what was measured."""
    demo = Scenario(kubeconfig, prometheus, workdir, say, namespace)
    try:
        demo.setup()
        demo.first_release()
        demo.good_release()
        demo.bad_release()
        return demo.result
    finally:
        demo.close()


def _set_image(custom: client.CustomObjectsApi, namespace: str, image: str) -> None:
    ops = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "rollouts", "checkout", ops,
        _content_type="application/json-patch+json",
    )  # fmt: skip


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
            f"  regression to route weight 0: {result.regression_to_weight_zero:.1f}s"
            " (bound: scrape 1s + rate window 5s + analysis interval 1s = 7s)"
        )
    if result.regression_to_last_bad_request is not None:
        last = result.regression_to_last_bad_request
        lines.append(f"  regression to the last request served by v3: {last:.1f}s")
    lines.append(
        f"  revisions serving after the rollback: {sorted(result.revisions_after_rollback)}"
    )
    if result.abort_message:
        lines.append(f"  why: {result.abort_message}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines.append(f"  ({stamp})")
    return lines
