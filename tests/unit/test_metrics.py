"""The controller's metrics: own registry, phase gauges, forgetting a Rollout."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from controller.runtime.metrics import PHASES, Metrics
from controller.runtime.queue import WorkQueue


def value(m: Metrics, name: str, **labels: str) -> float | None:
    """A sample's value from the metrics' registry."""
    return m.registry.get_sample_value(name, labels)


def test_metrics_live_in_their_own_registry() -> None:
    """Two Metrics objects do not share series, and the global registry is untouched."""
    a, b = Metrics(), Metrics()
    a.observe_reconcile("success", 0.1)
    assert value(a, "stepwise_reconcile_total", result="success") == 1.0
    assert value(b, "stepwise_reconcile_total", result="success") is None
    given = CollectorRegistry()
    assert Metrics(given).registry is given


def test_rollout_phase_is_one_for_the_current_phase_and_zero_for_the_others() -> None:
    """Setting a phase sets its series to 1 and every other phase to 0; a change flips them."""
    m = Metrics()
    m.set_rollout_phase("shop", "web", "Progressing")
    for phase in PHASES:
        expected = 1.0 if phase == "Progressing" else 0.0
        got = value(m, "stepwise_rollout_phase", namespace="shop", rollout="web", phase=phase)
        assert got == expected, phase
    m.set_rollout_phase("shop", "web", "Degraded")
    labels = {"namespace": "shop", "rollout": "web"}
    assert value(m, "stepwise_rollout_phase", **labels, phase="Degraded") == 1.0
    assert value(m, "stepwise_rollout_phase", **labels, phase="Progressing") == 0.0


def test_an_unknown_phase_still_gets_its_series() -> None:
    """A phase outside the API's list is recorded, with the known phases at 0."""
    m = Metrics()
    m.set_rollout_phase("shop", "web", "Mystery")
    assert value(m, "stepwise_rollout_phase", namespace="shop", rollout="web", phase="Mystery") == 1
    assert value(m, "stepwise_rollout_phase", namespace="shop", rollout="web", phase="Healthy") == 0


def test_forget_rollout_drops_only_that_rollouts_series() -> None:
    """A deleted Rollout's phase, weight and measurement series go; others stay."""
    m = Metrics()
    for name in ("web", "api"):
        m.set_rollout_phase("shop", name, "Progressing")
        m.set_canary_weight("shop", name, 20)
        m.count_measurement("shop", name, "success-rate", "Successful")
    m.forget_rollout("shop", "web")
    page = m.exposition().decode()
    assert 'rollout="web"' not in page
    assert value(m, "stepwise_rollout_canary_weight", namespace="shop", rollout="api") == 20
    assert (
        value(
            m,
            "stepwise_analysis_measurements_total",
            namespace="shop",
            rollout="api",
            metric="success-rate",
            phase="Successful",
        )
        == 1
    )


def test_queue_depth_is_read_from_the_queue_at_scrape_time() -> None:
    """The depth gauge follows the queue without anyone setting it."""
    m = Metrics()
    q = WorkQueue()
    m.track_queue_depth(lambda: len(q))
    assert value(m, "stepwise_workqueue_depth") == 0
    q.add("ns/a")
    q.add("ns/b")
    assert value(m, "stepwise_workqueue_depth") == 2


def test_api_requests_leader_and_histograms() -> None:
    """Request counts by verb and code, the leader flag and both histograms record."""
    m = Metrics()
    m.count_api_request("patch", 200)
    m.count_api_request("patch", 409)
    m.count_api_request("patch", 409)
    m.set_leader(True)
    m.set_leader(False)
    m.observe_rollback(4.2)
    m.observe_reconcile("error", 0.3)
    assert value(m, "stepwise_api_requests_total", verb="patch", code="409") == 2
    assert value(m, "stepwise_api_requests_total", verb="patch", code="200") == 1
    assert value(m, "stepwise_leader") == 0
    assert value(m, "stepwise_rollback_seconds_count") == 1
    assert value(m, "stepwise_rollback_seconds_bucket", le="5.0") == 1
    assert value(m, "stepwise_rollback_seconds_bucket", le="3.0") == 0
    assert value(m, "stepwise_reconcile_duration_seconds_sum") == 0.3
