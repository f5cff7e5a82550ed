"""Analysis through the whole controller: a Rollout's analysis step measured against the
real Prometheus scraping demo-app processes. A healthy canary is promoted; an erroring
canary is aborted; Prometheus down holds the rollout blind instead of judging it; a
broken query says so, naming the metric, with Prometheus's own message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster import LocalPrometheus
from localcluster.controller import ControllerProcess
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
    return {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "args": [{"name": "service"}, {"name": "version"}],
            "metrics": [
                {
                    "name": name,
                    "interval": "2s",
                    "count": 3,
                    "thresholdRange": {"min": 0.95},
                    "provider": {"prometheus": {"query": query}},
                    **metric,
                }
            ],
        },
    }


@pytest.fixture
def setup(
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
    kubeconfig: Path,
    tmp_path: Path,
    prometheus: LocalPrometheus,
    demo: Demo,
) -> Iterator[tuple[Cluster, Demo]]:
    kube = Cluster(api_client, namespace)
    proc = ControllerProcess(
        kubeconfig,
        tmp_path,
        namespaces=[namespace],
        extra=[f"--prometheus-address={prometheus.url}"],
    )
    proc.start()
    demo.canary.configure(errorRate=0.0)
    try:
        yield kube, demo
    finally:
        proc.stop()
        demo.canary.configure(errorRate=0.0)
        if prometheus.component is not None and not prometheus.component.alive():
            prometheus.resume()


def analysed_rollout(kube: Cluster, demo: Demo, tmpl: str, **metric: Any) -> str:
    """A healthy Rollout whose canary step 1 runs analysis ``tmpl``; returns the canary."""
    kube.custom.create_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "analysistemplates",
        template(tmpl, metric.pop("query", SUCCESS_RATE), **metric),
    )  # fmt: skip
    steps = [
        {"setWeight": 20},
        {
            "analysis": {
                "templates": [{"templateName": tmpl}],
                "args": [
                    {"name": "service", "value": demo.service},
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
    wait_for(
        "aborted",
        lambda: (kube.status("app").get("abort") or {}).get("reason") == "AnalysisFailed",
        60,
    )
    status = kube.status("app")
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
    finally:
        prometheus.resume()
    wait_for("measuring again", lambda: run_of(kube).get("phase") == "Running", 30)
    assert "abort" not in kube.status("app")


def test_broken_query_names_the_metric_and_carries_prometheus_message(
    setup: tuple[Cluster, Demo],
) -> None:
    """A PromQL syntax error: Error measurements whose message names the metric and quotes
    Prometheus; the rollout holds and says so in its status."""
    kube, demo = setup
    analysed_rollout(
        kube, demo, "bad-query", query="sum(rate(http_requests_total[1m]", consecutiveErrorLimit=0
    )
    wait_for("held", lambda: run_of(kube).get("phase") == "Error", 40)
    message = kube.status("app")["message"]
    assert "bad-query" in message
    assert "parse error" in message
    progressing = next(c for c in kube.status("app")["conditions"] if c["type"] == "Progressing")
    assert "parse error" in progressing["message"]
