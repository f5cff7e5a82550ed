"""The generic built-in templates measured for real: the demo canary, scraped with the
namespace and pod target labels a Kubernetes scrape gives, judged through the runtime's
PrometheusMeasurer (variables, escaping, adapter, evaluation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.api.analysis import ClusterAnalysisTemplate, Metric
from controller.api.rollout import Rollout, SecretKeyRef
from controller.runtime.measure import PrometheusMeasurer
from localcluster import LocalPrometheus
from tests.support.analysis import measure_until
from tests.support.demo import Demo
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

GENERIC = Path(__file__).resolve().parents[2] / "deploy" / "templates" / "generic.yaml"


def no_secrets(namespace: str, ref: SecretKeyRef) -> str:
    raise AssertionError("the generic templates read no Secret")


@pytest.fixture
def labelled(demo: Demo, prometheus: LocalPrometheus) -> Iterator[tuple[Demo, Rollout]]:
    """The demo canary scraped as pod checkout-<canary>-x7k2p in namespace shop."""
    ro = Rollout.model_validate(
        {**rollout_doc("checkout"), "metadata": {"name": "checkout", "namespace": "shop"}}
    )
    ro = ro.model_copy(
        update={
            "status": ro.status.model_copy(
                update={"canary_revision": "d5xq7", "stable_revision": "b2k9z"}
            )
        }
    )
    prometheus.add_target(
        "labelled-canary",
        f"127.0.0.1:{demo.canary.port}",
        {"namespace": "shop", "pod": "checkout-d5xq7-x7k2p"},
    )
    demo.canary.configure(errorRate=0.0)
    try:
        yield demo, ro
    finally:
        prometheus.remove_target("labelled-canary")
        demo.canary.configure(errorRate=0.0)


def metric(name: str) -> Metric:
    for doc in yaml.safe_load_all(GENERIC.read_text()):
        template = ClusterAnalysisTemplate.model_validate(doc)
        for m in template.spec.metrics:
            if m.name == name:
                # same query, a short window so the test is quick
                return m.model_copy(update={"interval": "5s"})
    raise AssertionError(name)


def test_generic_success_rate_and_latency_pass_a_healthy_canary(
    labelled: tuple[Demo, Rollout], prometheus: LocalPrometheus
) -> None:
    """Healthy canary pods: success rate 1 (Successful) and p99 under 0.5 s."""
    _, ro = labelled
    measurer = PrometheusMeasurer(no_secrets, default_address=prometheus.url)
    phase, value, message = measure_until(measurer, ro, metric("http-success-rate"), "Successful")
    assert phase == "Successful", message
    assert float(value or "nan") == pytest.approx(1.0)
    phase, _, message = measure_until(measurer, ro, metric("http-latency-p99"), "Successful")
    assert phase == "Successful", message


def test_generic_success_rate_fails_an_erroring_canary(
    labelled: tuple[Demo, Rollout], prometheus: LocalPrometheus
) -> None:
    """At 30% errors the canary pods' success rate is below 0.99: Failed."""
    demo, ro = labelled
    demo.canary.configure(errorRate=0.3)
    measurer = PrometheusMeasurer(no_secrets, default_address=prometheus.url)
    phase, value, message = measure_until(measurer, ro, metric("http-success-rate"), "Failed")
    assert phase == "Failed", message
    assert float(value or "nan") < 0.99
