"""The comparative judge counts exactly what the apps served, measured as users run it:
a real Prometheus scraping every 15 s, a measurement every 30 s through the runtime's
measurer (the previous measurement fed back from the status), and a canary process that
restarts (its counters start again from 0) in the middle of the run.

``increase(x[30s])`` over a 15 s scrape is extrapolated and would not give these counts;
the judge reads the cumulative counters and differences them itself."""

from __future__ import annotations

import datetime as dt
import http.client
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from controller.api.analysis import Metric
from controller.api.rollout import AnalysisRunStatus, MetricResult, Rollout
from controller.core import analysis as an
from controller.core.judge import JudgeState
from controller.runtime.measure import PrometheusMeasurer
from localcluster import LocalPrometheus
from tests.support.demo import App, judge_counts, start_app, wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

SCRAPE = 15
INTERVAL = 30
INTERVALS = 5
RESTART_BEFORE = 3
"""The canary process restarts before this interval's requests."""


@pytest.fixture(scope="module")
def slow_prometheus() -> Iterator[LocalPrometheus]:
    """A Prometheus scraping every 15 s, as many installations do."""
    prom = LocalPrometheus(scrape_interval=f"{SCRAPE}s")
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


def serve(app: App, requests: int, out: dict[str, tuple[int, int]]) -> None:
    """Send ``requests`` GETs over one keep-alive connection; record (served, 5xx)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    errors = 0
    try:
        for _ in range(requests):
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            errors += resp.status >= 500
    finally:
        conn.close()
    out[app.version] = (requests, errors)


def scraped(prom: LocalPrometheus, service: str, app: App) -> bool:
    """Whether Prometheus's latest sample of the app's counter is the app's own value."""
    query = f'sum(http_requests_total{{service="{service}",version="{app.version}"}})'
    result = prom.query(query)["result"]
    return bool(result) and float(result[0]["value"][1]) == app.requests_served()


def judge_metric(service: str, address: str) -> Metric:
    """The judge as the README's example writes it: cumulative counters by instance."""
    return Metric.model_validate(
        {
            "name": "errors-vs-stable",
            "interval": f"{INTERVAL}s",
            "provider": {
                "judge": {
                    "address": address,
                    "canary": judge_counts(service, "{{canaryRevision}}"),
                    "stable": judge_counts(service, "{{stableRevision}}"),
                }
            },
        }
    )


def test_judge_counts_equal_the_requests_served_with_a_15s_scrape(
    slow_prometheus: LocalPrometheus,
) -> None:
    """Over five 30 s intervals, each interval's counts in the judge's state are exactly
    the requests and errors the apps served in it, across a canary restart; a healthy
    canary (same error rate) is never failed."""
    service = f"exact-{uuid.uuid4().hex[:6]}"
    stable = start_app(service, "v1")
    canary = start_app(service, "v2")
    apps = {"v1": stable, "v2": canary}
    try:
        for app in apps.values():
            app.configure(errorRate=0.05)
            slow_prometheus.add_target(f"{service}-{app.version}", f"127.0.0.1:{app.port}")
        for app in apps.values():
            wait_for(lambda app=app: scraped(slow_prometheus, service, app), "first scrape", 60)  # type: ignore[misc]

        metric = judge_metric(service, slow_prometheus.url)
        measurer = PrometheusMeasurer(lambda ns, ref: "", default_address=slow_prometheus.url)
        base = Rollout.model_validate(rollout_doc("app"))
        result = MetricResult(name=metric.name, phase="Running")
        started = dt.datetime.now(dt.UTC)

        def measure() -> MetricResult:
            run = AnalysisRunStatus(
                name="background", revision="v2", phase="Running", started_at=started,
                metrics=[result],
            )  # fmt: skip
            status = base.status.model_copy(
                update={"canary_revision": "v2", "stable_revision": "v1", "analysis_runs": [run]}
            )
            rollout = base.model_copy(update={"status": status})
            now = dt.datetime.now(dt.UTC)
            due = [an.Due("background", metric, (), ())]
            got = measurer.measure(rollout, due, now)[("background", metric.name)]
            return an.record(result, metric, got, now)

        result = measure()
        assert result.measurements[-1].phase == "NoData"
        assert "baseline" in result.measurements[-1].message
        judged: list[tuple[float, ...]] = []
        served: list[tuple[float, ...]] = []
        for interval in range(1, INTERVALS + 1):
            began = time.monotonic()
            if interval == RESTART_BEFORE:
                canary.proc.kill()
                canary.proc.wait()
                canary = apps["v2"] = start_app(service, "v2", port=canary.port)
                canary.configure(errorRate=0.05)
            out: dict[str, tuple[int, int]] = {}
            threads = [
                threading.Thread(target=serve, args=(canary, 300, out)),
                threading.Thread(target=serve, args=(stable, 900, out)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - began)))
            for app in apps.values():
                wait_for(lambda app=app: scraped(slow_prometheus, service, app), "scrape", 30)  # type: ignore[misc]
            result = measure()
            latest = result.measurements[-1]
            state = JudgeState.from_text(latest.value)
            assert state is not None, latest
            judged.append(state.last)
            served.append((*out["v2"], *out["v1"]))
            assert latest.phase != "Failed", latest.message
        assert judged == [(float(a), float(b), float(c), float(d)) for a, b, c, d in served]
        assert result.phase != "Failed"
    finally:
        for app in apps.values():
            app.proc.kill()
            app.proc.wait()
            slow_prometheus.remove_target(f"{service}-{app.version}")
