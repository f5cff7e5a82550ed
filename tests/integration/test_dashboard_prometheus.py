"""The Grafana dashboard's queries, run by a real Prometheus against the controller's real
``/metrics`` endpoint (:class:`controller.runtime.health.HealthServer` serving a
:class:`controller.runtime.metrics.Metrics`): every query is valid PromQL once Grafana's
variables are filled in, and the Delivery row's figures come out of the releases that
were counted exactly as their definitions say (bucket interpolation included)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from controller.api.rollout import Release
from controller.runtime.health import HealthServer
from controller.runtime.metrics import Metrics
from localcluster import LocalPrometheus
from tests.support.kube import wait_for
from tests.unit.test_grafana_dashboard import DASHBOARD, expressions, row_panels
from tests.unit.test_metrics import ABORTED, PROMOTED, rel

pytestmark = pytest.mark.integration

#: A namespace no other test's series use (the Prometheus is shared by the session).
NAMESPACE = f"dashboard-{uuid.uuid4().hex[:8]}"
#: What Grafana puts for each variable: one Rollout picked, a five-minute delivery window.
VARIABLES = {
    "$namespace": NAMESPACE,
    "$rollout": "web",
    "$window": "5m",
    "$__rate_interval": "1m",
    "$__range_s": "300",
    "$__range": "5m",
}


def filled(expr: str) -> str:
    """``expr`` as Grafana sends it to Prometheus."""
    for variable, value in VARIABLES.items():  # $__range_s before $__range
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


@pytest.fixture
def served(prometheus: LocalPrometheus) -> Iterator[Metrics]:
    """A Metrics registry on the controller's own /metrics endpoint, scraped every second."""
    metrics = Metrics()
    health = HealthServer(port=0, registry=metrics.registry)
    health.start()
    prometheus.add_target("dashboard", f"127.0.0.1:{health.port}", {"app": "dashboard"})
    try:
        yield metrics
    finally:
        prometheus.remove_target("dashboard")
        health.stop()


def series(prometheus: LocalPrometheus, expr: str) -> list[dict[str, Any]]:
    """The instant vector ``expr`` evaluates to (a query Prometheus rejects raises)."""
    data = prometheus.query(expr)
    assert data["resultType"] == "vector", (expr, data)
    return list(data["result"])


def by_rollout(prometheus: LocalPrometheus, expr: str) -> dict[str, float]:
    """Each Rollout's value of ``expr``."""
    return {s["metric"]["rollout"]: float(s["value"][1]) for s in series(prometheus, expr)}


def scraped(prometheus: LocalPrometheus, expr: str, expected: float) -> bool:
    """Whether the single value of ``expr`` has reached ``expected`` (or more)."""
    got = series(prometheus, expr)
    return bool(got) and float(got[0]["value"][1]) >= expected


def test_dashboard_queries_run_and_delivery_figures_match_the_releases(
    prometheus: LocalPrometheus, served: Metrics
) -> None:
    """Three promotions and one abort of web (detected after 40 s, restored in 3 s, each
    promotion 600 s after its change) and one abort of api: web's change failure rate is
    1/4, api's 1, and each percentile is the linear interpolation in the bucket its
    observations fell in; every other query of the dashboard is accepted."""
    dashboard = json.loads(DASHBOARD.read_text())
    mine = f'{{namespace="{NAMESPACE}"}}'
    zeros = f"count_over_time(stepwise_releases_total{mine}[1m])"
    for rollout in ("web", "api"):  # their first passes: the series are born at 0
        served.observe_releases(NAMESPACE, rollout, [], [])
    # Five scrapes of the zeros: increase() then reads from a known start, and its
    # extrapolation past the last scrape adds at most a fifth.
    wait_for("the zero series scraped", lambda: scraped(prometheus, f"count({zeros})", 12))
    wait_for("five scrapes of them", lambda: scraped(prometheus, f"min({zeros})", 5))
    promoted = [PROMOTED.model_copy(update={"revision": f"p{i}"}) for i in range(3)]
    running: list[Release] = [*(rel(r.revision) for r in promoted), rel(ABORTED.revision)]
    served.observe_releases(NAMESPACE, "web", running, [*promoted, ABORTED])
    api_aborted = ABORTED.model_copy(update={"revision": "a1"})
    served.observe_releases(NAMESPACE, "api", [rel("a1")], [api_aborted])
    wait_for(
        "the releases scraped",
        lambda: scraped(prometheus, f"sum(stepwise_releases_total{mine})", 5),
    )

    for expr in expressions(dashboard):
        series(prometheus, filled(expr))  # accepted, and an instant vector

    delivery = {
        title: [filled(t["expr"]) for t in panel["targets"]]
        for title, panel in row_panels(dashboard, "Delivery").items()
    }
    [failure_rate] = delivery["Change failure rate"]
    assert by_rollout(prometheus, failure_rate) == {"web": pytest.approx(0.25)}
    assert by_rollout(prometheus, failure_rate.replace('"web"', '".*"')) == {
        "web": pytest.approx(0.25),
        "api": pytest.approx(1.0),
    }
    [frequency] = delivery["Deploy frequency"]
    per_day = by_rollout(prometheus, frequency)["web"]
    # Three promotions in a five-minute window are 864 a day; Prometheus extrapolates past
    # the last scrape by at most a scrape interval (of five or more), so it reads a little
    # more, never less.
    assert 864 <= per_day <= 864 * 1.25
    [outcomes] = delivery["Releases by outcome"]
    assert {  # an empty label is no label in Prometheus
        (s["metric"]["outcome"], s["metric"].get("reason", ""))
        for s in series(prometheus, outcomes)
    } == {("Promoted", ""), ("Aborted", "AnalysisFailed")}
    # All observations of a Rollout in one bucket: quantile q lies q of the way through it.
    for title, (low, high), quantiles in [
        ("Time to detect", (30.0, 60.0), (0.5, 0.9)),  # 40 s
        ("Time to restore", (2.0, 5.0), (0.5, 0.9)),  # 3 s
        ("Lead time", (300.0, 900.0), (0.5,)),  # 600 s, three times
    ]:
        got = [by_rollout(prometheus, expr)["web"] for expr in delivery[title]]
        assert got == pytest.approx([low + (high - low) * q for q in quantiles]), title
