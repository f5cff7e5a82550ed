"""The ``web`` analysis provider through the whole controller, on the local cluster: the
controller process calls a local HTTP gate (in this test process) for each measurement.
A gate that says no twice and then yes holds the canary at its analysis step through the
failures its ``failureLimit`` tolerates, then promotes it; a gate that keeps saying no
aborts it, naming the metric and the condition. A hostile argument (path, query and
fragment delimiters, quotes) reaches the gate escaped: in one path segment, one query
value and one JSON string."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from localcluster.controller import ControllerProcess
from tests.support.analysis import create_template, template_doc
from tests.support.cluster import Cluster
from tests.support.http import send_json
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

HOLD = 60
HOSTILE = 'a/../admin?role=admin&x=1#frag", "admin": true, "z": "'


@dataclass
class Gate:
    """A local HTTP gate: answers ``{"data": {"ok": false}}`` to the first ``no``
    requests, then ``{"data": {"ok": true}}`` once ``release`` is set; records every
    request. Until the test releases it, the first "yes" is held (up to ``HOLD`` seconds,
    inside the metric's ``timeoutSeconds``), so the Rollout cannot move past the analysis
    step while the test looks at it, however slowly the machine writes status."""

    url: str = ""
    no: int = 0
    seen: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, method: str, target: str, body: bytes) -> dict[str, Any]:
        with self.lock:
            self.seen.append((method, target, json.loads(body) if body else None))
            ok = len(self.seen) > self.no
        if ok:
            self.release.wait(HOLD)
        return {"data": {"ok": ok}}


@pytest.fixture
def gate() -> Iterator[Gate]:
    """The gate, listening on 127.0.0.1 (the controller process runs on this host)."""
    state = Gate()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            send_json(self, state.answer(self.command, self.path, body))

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def web_template(kube: Cluster, gate: Gate, **metric: Any) -> None:
    """The ``gate`` template: one web metric POSTing to the gate every second, with the
    ``service`` argument in the path, the query and the JSON body."""
    measured = {
        "name": "gate",
        "interval": "1s",
        "successCondition": "result.ok == true",
        "provider": {
            "web": {
                "method": "POST",
                "url": f"{gate.url}/gate/{{{{args.service}}}}/{{{{canaryRevision}}}}"
                "?service={{args.service}}&ns={{namespace}}",
                "jsonBody": {"service": "{{args.service}}", "rollout": "{{rollout}}"},
                "jsonPath": "{$.data}",
                "timeoutSeconds": HOLD + 30,
            }
        },
        **metric,
    }
    create_template(kube, template_doc("gate", measured, args=[{"name": "service"}]))


def start_canary(kube: Cluster) -> str:
    """A Rollout whose step 1 runs the gate with the hostile service name; v1 becomes
    Healthy, then v2 rolls out. Returns v2's revision."""
    analysis = {
        "templates": [{"templateName": "gate"}],
        "args": [{"name": "service", "value": HOSTILE}],
    }
    doc = rollout_doc("web", replicas=2, steps=[{"setWeight": 50}, {"analysis": analysis}])
    doc["spec"]["strategy"]["canary"]["scaleDownDelaySeconds"] = 0
    kube.create(doc)
    wait_for("v1 healthy", lambda: kube.healthy("web"), 30)
    return kube.set_image("web", "registry.local/app:v2")


def metric_of(kube: Cluster) -> dict[str, Any]:
    """The gate metric's tally in the Rollout's status (empty before it starts)."""
    runs = kube.status("web").get("analysisRuns") or []
    metrics = runs[0].get("metrics") or [] if runs else []
    return metrics[0] if metrics else {}


def test_a_gate_that_says_no_then_yes_holds_then_promotes(
    kube: Cluster, gate: Gate, controller: ControllerProcess
) -> None:
    """Two "no" answers are Failed measurements within failureLimit 2: the canary stays
    at its analysis step; the "yes" answers that follow promote it. Every request carried
    the hostile argument escaped, in one path segment, one query value and one string."""
    gate.no = 2
    web_template(kube, gate, count=4, failureLimit=2)
    canary = start_canary(kube)
    wait_for("two failed measurements", lambda: metric_of(kube).get("failed", 0) >= 2, 30)
    status = kube.status("web")
    assert status["stableRevision"] != canary
    assert "abort" not in status
    assert status["currentStepIndex"] == 1  # held at the analysis step
    gate.release.set()
    failed = [m for m in metric_of(kube)["measurements"] if m["phase"] == "Failed"]
    assert failed[0]["value"] == '{"ok":false}'
    assert "successCondition 'result.ok == true' does not hold" in failed[0]["message"]
    wait_for(
        "v2 promoted",
        lambda: (
            kube.status("web").get("stableRevision") == canary
            and kube.status("web").get("phase") == "Healthy"
        ),
        40,
    )
    tally = kube.status("web")["analysisRuns"][0]["metrics"][0]
    assert (tally["phase"], tally["failed"], tally["successful"]) == ("Successful", 2, 2)
    escaped = (
        "a%2F..%2Fadmin%3Frole%3Dadmin%26x%3D1%23frag%22%2C%20%22admin%22%3A%20true"
        "%2C%20%22z%22%3A%20%22"
    )
    assert len(gate.seen) == 4
    for method, target, body in gate.seen:
        assert method == "POST"
        assert target == f"/gate/{escaped}/{canary}?service={escaped}&ns={kube.ns}"
        assert body == {"service": HOSTILE, "rollout": "web"}
    logs = [e for e in controller.logs() if e.get("event") == "web request answered"]
    assert logs
    assert logs[0]["url"] == f"{gate.url}/gate/{escaped}/{canary}"


def test_a_gate_that_keeps_saying_no_aborts(
    kube: Cluster, gate: Gate, controller: ControllerProcess
) -> None:
    """With failureLimit 0 the first "no" fails the metric and aborts the canary, the
    abort naming the metric and the condition that did not hold."""
    gate.no = 1000
    gate.release.set()
    web_template(kube, gate, count=3)
    canary = start_canary(kube)
    status = kube.aborted_by_analysis("web", 30)
    assert status["stableRevision"] != canary
    assert "gate" in status["abort"]["message"]
    assert metric_of(kube)["phase"] == "Failed"
    assert "does not hold" in metric_of(kube)["message"]
    assert len(gate.seen) == 1
