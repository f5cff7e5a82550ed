"""Analysis through the whole controller: a Rollout's analysis step measured against the
real Prometheus scraping demo-app processes. A healthy canary is promoted; an erroring
canary is aborted; Prometheus down holds the rollout blind instead of judging it (one
AnalysisHeld event), or aborts it with ``onProviderError: Fail``; a broken query says so,
naming the metric, with Prometheus's own message; a hostile argument value (from a
Secret) stays a label value and never passes a canary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from localcluster import LocalPrometheus
from localcluster.controller import ControllerProcess
from tests.support.analysis import create_template, template_doc
from tests.support.cluster import Cluster
from tests.support.demo import Demo
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

SUCCESS_RATE = (
    'sum(rate(http_requests_total{service="{{args.service}}",version="{{args.version}}",'
    'code!~"5.."}[{{interval}}])) / sum(rate(http_requests_total{service="{{args.service}}",'
    'version="{{args.version}}"}[{{interval}}]))'
)


def template(name: str, query: str, **metric: Any) -> dict[str, Any]:
    """An AnalysisTemplate ``name`` with one metric (named ``name`` unless ``metricName``
    says otherwise) measuring ``query``."""
    metric_name = metric.pop("metricName", name)
    measured = {
        "name": metric_name,
        "interval": "2s",
        "count": 3,
        "thresholdRange": {"min": 0.95},
        "provider": {"prometheus": {"query": query}},
        **metric,
    }
    return template_doc(name, measured, args=[{"name": "service"}, {"name": "version"}])


@pytest.fixture
def setup(
    kube: Cluster, measuring: ControllerProcess, prometheus: LocalPrometheus, demo: Demo
) -> Iterator[tuple[Cluster, Demo]]:
    demo.canary.configure(errorRate=0.0)
    try:
        yield kube, demo
    finally:
        demo.canary.configure(errorRate=0.0)
        if prometheus.component is not None and not prometheus.component.alive():
            prometheus.resume()


def analysed_rollout(
    kube: Cluster,
    demo: Demo,
    tmpl: str,
    *,
    service: dict[str, Any] | None = None,
    **metric: Any,
) -> str:
    """A healthy Rollout whose canary step 1 runs analysis ``tmpl``; returns the canary.
    ``service`` replaces the service argument (``{"value": ...}`` or ``{"valueFrom": ...}``)."""
    create_template(kube, template(tmpl, metric.pop("query", SUCCESS_RATE), **metric))
    steps = [
        {"setWeight": 20},
        {
            "analysis": {
                "templates": [{"templateName": tmpl}],
                "args": [
                    {"name": "service", **(service or {"value": demo.service})},
                    {"name": "version", "value": demo.canary.version},
                ],
            }
        },
        {"setWeight": 50},
    ]
    kube.create(rollout_doc("app", steps=steps))
    wait_for("healthy", lambda: kube.status("app").get("phase") == "Healthy")
    return kube.set_image("app", "registry.local/app:v2")


def run_of(kube: Cluster) -> dict[str, Any]:
    runs = kube.status("app").get("analysisRuns") or []
    return runs[0] if runs else {}


def test_healthy_canary_is_promoted(setup: tuple[Cluster, Demo]) -> None:
    """No errors: three successful measurements, then promotion."""
    kube, demo = setup
    canary = analysed_rollout(kube, demo, "success-rate")
    wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary, 60)
    metric = run_of(kube)["metrics"][0]
    assert metric["phase"] == "Successful"
    assert metric["successful"] >= 3


def test_erroring_canary_is_aborted(setup: tuple[Cluster, Demo]) -> None:
    """30% errors: the first failed measurement aborts with the metric named."""
    kube, demo = setup
    demo.canary.configure(errorRate=0.3)
    canary = analysed_rollout(kube, demo, "success-rate")
    status = kube.aborted_by_analysis("app", 60)
    assert status["stableRevision"] != canary
    assert "success-rate" in status["abort"]["message"]
    assert run_of(kube)["metrics"][0]["phase"] == "Failed"
    wait_for("canary gone", lambda: kube.ready("app", canary)[0] == 0)


def test_prometheus_down_holds_instead_of_judging(
    setup: tuple[Cluster, Demo], prometheus: LocalPrometheus
) -> None:
    """Prometheus stopped mid-analysis: Error measurements; with onProviderError Hold the
    rollout holds (no abort, no promotion); back up, it completes."""
    kube, demo = setup
    canary = analysed_rollout(kube, demo, "success-rate", count=20, consecutiveErrorLimit=1)
    wait_for(
        "measuring", lambda: (run_of(kube).get("metrics") or [{}])[0].get("successful", 0) >= 1, 40
    )
    prometheus.pause()
    try:
        wait_for("held blind", lambda: run_of(kube).get("phase") == "Error", 30)
        status = kube.status("app")
        assert "abort" not in status
        assert status["stableRevision"] != canary
        assert "holding" in status["message"]
        wait_for("held event", lambda: kube.event_messages("app", "AnalysisHeld"), 10)
        time.sleep(4)  # two more blind measurements: still one event
        (held,) = kube.event_messages("app", "AnalysisHeld")
        assert held.startswith(f"analysis of step 1 for canary {canary}, metric success-rate: ")
        assert "consecutive provider errors" in held
    finally:
        prometheus.resume()
    wait_for("measuring again", lambda: run_of(kube).get("phase") == "Running", 30)
    assert "abort" not in kube.status("app")


def test_prometheus_down_with_on_provider_error_fail_aborts(
    setup: tuple[Cluster, Demo], prometheus: LocalPrometheus
) -> None:
    """Prometheus stopped mid-analysis with onProviderError Fail: past the error limit the
    metric fails and the canary is aborted (Degraded), the reason naming the analysis and
    the metric; the canary's pods go."""
    kube, demo = setup
    canary = analysed_rollout(
        kube, demo, "success-rate", count=20, consecutiveErrorLimit=1, onProviderError="Fail"
    )
    wait_for(
        "measuring", lambda: (run_of(kube).get("metrics") or [{}])[0].get("successful", 0) >= 1, 40
    )
    prometheus.pause()
    try:
        kube.aborted_by_analysis("app", 30)
    finally:
        prometheus.resume()
    status = kube.status("app")
    assert status["stableRevision"] != canary
    message = status["abort"]["message"]
    assert message.startswith("analysis of step 1 failed: success-rate: ")
    assert "consecutive provider errors (limit 1)" in message
    assert "onProviderError is Fail" in message
    assert run_of(kube)["metrics"][0]["phase"] == "Failed"
    wait_for("degraded", lambda: kube.status("app").get("phase") == "Degraded", 30)
    aborted = next(c for c in kube.status("app")["conditions"] if c["type"] == "Aborted")
    assert (aborted["status"], aborted["reason"]) == ("True", "AnalysisFailed")
    wait_for("canary gone", lambda: kube.ready("app", canary)[0] == 0, 60)


def test_broken_query_names_the_metric_and_carries_prometheus_message(
    setup: tuple[Cluster, Demo],
) -> None:
    """A PromQL syntax error: Error measurements whose message names the metric and quotes
    Prometheus; the rollout holds and says so in its status."""
    kube, demo = setup
    analysed_rollout(
        kube,
        demo,
        "bad-query",
        metricName="broken-rate",  # distinct from the template's name
        query="sum(rate(http_requests_total[{{interval}}]",
        consecutiveErrorLimit=0,
    )
    wait_for("held", lambda: run_of(kube).get("phase") == "Error", 40)
    message = kube.status("app")["message"]
    assert "broken-rate: query failed (bad_data)" in message
    assert "parse error" in message
    progressing = next(c for c in kube.status("app")["conditions"] if c["type"] == "Progressing")
    assert "broken-rate: query failed (bad_data)" in progressing["message"]
    assert "parse error" in progressing["message"]
    assert "broken-rate" in run_of(kube)["metrics"][0]["message"]
    wait_for("held event", lambda: kube.event_messages("app", "AnalysisHeld"), 10)
    (held,) = kube.event_messages("app", "AnalysisHeld")
    assert "metric broken-rate" in held
    assert "parse error" in held


INJECTION = 'demo"} or vector(1) #'


@pytest.mark.parametrize("source", ["value", "secret"])
def test_an_injected_argument_never_passes_the_canary(
    setup: tuple[Cluster, Demo], source: str
) -> None:
    """An argument carrying ``"} or vector(1) #`` (literally, or from a Secret) is escaped
    into the label value: it matches no series, so the analysis is blind (NoData, held)
    instead of measuring the injected 1.0, and the canary is not promoted. (Rollout and
    Service names cannot carry it: the API server accepts only DNS names for them.)"""
    kube, demo = setup
    arg: dict[str, Any] = {"value": INJECTION}
    if source == "secret":
        kube.core.create_namespaced_secret(
            kube.ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="svc"), string_data={"name": INJECTION}
            ),
        )
        arg = {"valueFrom": {"secretKeyRef": {"name": "svc", "key": "name"}}}
    canary = analysed_rollout(kube, demo, "success-rate", service=arg)
    wait_for("blind", lambda: (run_of(kube).get("metrics") or [{}])[0].get("noData", 0) >= 3, 40)
    status = kube.status("app")
    assert status["stableRevision"] != canary
    metric = run_of(kube)["metrics"][0]
    assert (metric["phase"], metric["successful"], metric["failed"]) == ("Running", 0, 0)
    assert "no data" in status["message"]
    (held,) = kube.event_messages("app", "AnalysisHeld")
    assert "metric success-rate: blind, holding: no data" in held
    assert INJECTION not in held


@pytest.mark.parametrize(
    "field",
    [
        pytest.param({"metadata": {"name": 'app"} or vector(1) #'}}, id="rollout-name"),
        pytest.param({"stableService": 'svc"} or vector(1) #'}, id="stable-service"),
        pytest.param({"canaryService": 'svc"} or vector(1) #'}, id="canary-service"),
    ],
)
def test_names_cannot_carry_an_injection(
    setup: tuple[Cluster, Demo], field: dict[str, Any]
) -> None:
    """The {{rollout}}, {{stableService}} and {{canaryService}} variables come from names
    the API server accepts only as DNS labels: a quote never reaches a query."""
    kube, _ = setup
    doc = rollout_doc("app", steps=[{"setWeight": 20}])
    if "metadata" in field:
        doc["metadata"] = field["metadata"]
    else:
        doc["spec"]["strategy"]["canary"].update(field)
    with pytest.raises(client.exceptions.ApiException) as exc:
        kube.create(doc)
    assert exc.value.status == 422


def test_a_dry_run_metric_that_fails_never_stops_the_rollout(
    setup: tuple[Cluster, Demo],
) -> None:
    """30% errors, judged by a metric the Rollout marks dryRun: measured, Failed and
    reported, and the canary is promoted anyway. Its count and failureLimit come from
    arguments (two failures to fail it), and the status keeps only the
    measurementRetention limit of its measurements (one)."""
    kube, demo = setup
    demo.canary.configure(errorRate=0.3)
    doc = template(
        "trial-rate", SUCCESS_RATE, count="{{args.count}}", failureLimit="{{args.fails}}"
    )
    doc["spec"]["args"] += [{"name": "count", "value": "9"}, {"name": "fails", "value": "1"}]
    doc["spec"]["measurementRetention"] = [{"metricName": "trial-.*", "limit": 1}]
    create_template(kube, doc)
    steps = [
        {"setWeight": 20},
        {
            "analysis": {
                "templates": [{"templateName": "trial-rate"}],
                "args": [
                    {"name": "service", "value": demo.service},
                    {"name": "version", "value": demo.canary.version},
                    {"name": "count", "value": "3"},
                ],
                "dryRun": [{"metricName": "trial-rate"}],
            }
        },
        {"setWeight": 50},
    ]
    kube.create(rollout_doc("app", steps=steps))
    wait_for("healthy", lambda: kube.status("app").get("phase") == "Healthy")
    canary = kube.set_image("app", "registry.local/app:v2")
    wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary, 90)
    status = kube.status("app")
    assert not status.get("abort"), status.get("abort")
    run = run_of(kube)
    (metric,) = run["metrics"]
    assert metric["dryRun"] is True
    assert metric["phase"] == "Failed", metric
    assert "more than failureLimit 1" in metric["message"], metric
    assert metric["failed"] == 2, metric
    assert len(metric["measurements"]) == 1, metric
    assert "dry run (not counted): trial-rate Failed" in run["message"], run
    assert run["phase"] == "Successful", run
