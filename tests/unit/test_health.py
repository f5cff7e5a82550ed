"""The health server over real HTTP on 127.0.0.1, with fake informers and a fake clock."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controller.runtime.health import HealthServer
from controller.runtime.metrics import Metrics
from tests.support.clock import FakeClock


@dataclass
class FakeInformer:
    """Stands in for an Informer: a name, a heartbeat and a synced flag."""

    name: str
    last_heartbeat: float | None = None
    synced: bool = False

    def has_synced(self) -> bool:
        return self.synced


@dataclass
class FakeWorker:
    """Stands in for a worker thread."""

    alive: bool = True

    def is_alive(self) -> bool:
        return self.alive


def get(server: HealthServer, path: str) -> tuple[int, str, str]:
    """Status, content type and body of a real HTTP GET."""
    try:
        with urllib.request.urlopen(server.url + path, timeout=2) as resp:  # noqa: S310
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture
def clock() -> FakeClock:
    """The clock shared by the server and the fake informers."""
    return FakeClock()


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry."""
    return Metrics()


@pytest.fixture
def server(clock: FakeClock, metrics: Metrics) -> Iterator[HealthServer]:
    """A running health server on a free port."""
    health = HealthServer(port=0, registry=metrics.registry, clock=clock, heartbeat_timeout=60)
    health.start()
    try:
        yield health
    finally:
        health.stop()


def test_healthz_is_200_while_heartbeats_are_fresh_and_workers_alive(
    server: HealthServer, clock: FakeClock
) -> None:
    """Fresh heartbeats and live workers give 200 ok."""
    server.add_informer(
        FakeInformer("rollouts", last_heartbeat=clock.monotonic() - 59, synced=True)
    )
    server.add_informer(FakeInformer("replicasets", last_heartbeat=clock.monotonic(), synced=True))
    server.add_worker("worker-0", FakeWorker())
    assert get(server, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_healthz_is_500_naming_the_informer_whose_heartbeat_is_stale(
    server: HealthServer, clock: FakeClock
) -> None:
    """A heartbeat older than the limit fails liveness with a one-line reason."""
    server.add_informer(FakeInformer("replicasets", last_heartbeat=clock.monotonic()))
    server.add_informer(FakeInformer("rollouts", last_heartbeat=clock.monotonic() - 30))
    assert get(server, "/healthz")[0] == 200
    clock.advance(31)
    status, _, body = get(server, "/healthz")
    assert status == 500
    assert body == "informer rollouts has had no heartbeat for 61s (limit 60s)\n"


def test_healthz_recovers_when_the_heartbeat_moves_again(
    server: HealthServer, clock: FakeClock
) -> None:
    """Liveness follows the heartbeat: stale then fresh again gives 500 then 200."""
    informer = FakeInformer("rollouts", last_heartbeat=clock.monotonic())
    server.add_informer(informer)
    clock.advance(120)
    assert get(server, "/healthz")[0] == 500
    informer.last_heartbeat = clock.monotonic()
    assert get(server, "/healthz")[0] == 200


def test_healthz_is_500_for_an_informer_that_never_started(server: HealthServer) -> None:
    """An informer without any heartbeat is not running."""
    server.add_informer(FakeInformer("services"))
    assert get(server, "/healthz")[0::2] == (500, "informer services is not running\n")


def test_healthz_is_500_when_a_worker_thread_died(server: HealthServer, clock: FakeClock) -> None:
    """A worker thread that has exited fails liveness, naming it."""
    server.add_informer(FakeInformer("rollouts", last_heartbeat=clock.monotonic()))
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    server.add_worker("worker-0", FakeWorker())
    server.add_worker("worker-1", finished)
    assert get(server, "/healthz")[0::2] == (500, "worker worker-1 is not running\n")


def test_readyz_waits_for_every_informer_to_sync(server: HealthServer, clock: FakeClock) -> None:
    """Readiness is 500 listing unsynced informers, then 200 once all have synced."""
    rollouts = FakeInformer("rollouts", last_heartbeat=clock.monotonic())
    services = FakeInformer("services", last_heartbeat=clock.monotonic())
    server.add_informer(rollouts)
    server.add_informer(services)
    assert get(server, "/readyz")[0::2] == (500, "informers not synced: rollouts, services\n")
    rollouts.synced = True
    assert get(server, "/readyz")[0::2] == (500, "informers not synced: services\n")
    services.synced = True
    assert get(server, "/readyz")[0::2] == (200, "ok\n")


def test_readyz_ignores_heartbeat_age(server: HealthServer, clock: FakeClock) -> None:
    """Readiness is about sync only; a stale heartbeat is liveness's business."""
    server.add_informer(FakeInformer("rollouts", last_heartbeat=clock.monotonic(), synced=True))
    clock.advance(1000)
    assert get(server, "/readyz")[0] == 200
    assert get(server, "/healthz")[0] == 500


def test_metrics_serves_the_controller_registry(server: HealthServer, metrics: Metrics) -> None:
    """/metrics returns the Prometheus text format of the given registry."""
    metrics.observe_reconcile("success", 0.02)
    metrics.set_leader(True)
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    assert 'stepwise_reconcile_total{result="success"} 1.0' in body
    assert "stepwise_leader 1.0" in body
    assert "python_gc_objects_collected_total" not in body, "not the global registry"


def test_unknown_paths_are_404(server: HealthServer) -> None:
    """Anything else is not found."""
    assert get(server, "/")[0] == 404
    assert get(server, "/healthz/extra")[0] == 404


def test_no_registry_means_no_metrics_page(clock: FakeClock) -> None:
    """Without a registry, /metrics is 404 and the probes still work."""
    health = HealthServer(clock=clock)
    health.start()
    try:
        assert get(health, "/metrics")[0] == 404
        assert get(health, "/healthz")[0] == 200
    finally:
        health.stop()


def test_stop_closes_the_port(clock: FakeClock) -> None:
    """After stop() nothing answers on the port."""
    health = HealthServer(clock=clock)
    health.start()
    url = health.url
    health.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=1)  # noqa: S310
