"""The measuring pool (:mod:`controller.runtime.measuring`): a reconcile never waits on a
provider; finished measurements are handed over on the next pass and wake the Rollout;
deadlines, the per-provider limit, the breaker, and results of runs that moved on."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from controller.api.analysis import Metric
from controller.api.rollout import AnalysisRunStatus, Measurement, Rollout
from controller.core import analysis as an
from controller.core.measurement import ErrorKind, Outcome
from controller.runtime.measuring import MeasuringPool
from tests.support.clock import FakeClock
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Provider:
    """A blocking taker whose answers the test releases, per metric; ``errors`` makes a
    metric's answers Errors (message, error kind)."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.calls: list[str] = []
        self.errors: dict[str, tuple[str, ErrorKind | None]] = {}
        self.lock = threading.Lock()
        self.contexts: list[dict[str, Any]] = []
        """The structlog context each call ran in."""

    def gate(self, metric: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(metric, threading.Event())

    def take(self, rollout: Rollout, item: an.Due) -> Outcome:
        self.contexts.append(structlog.contextvars.get_contextvars())
        with self.lock:
            self.calls.append(item.metric.name)
        self.gate(item.metric.name).wait(timeout=30)
        if item.metric.name in self.errors:
            message, kind = self.errors[item.metric.name]
            return Outcome("Error", None, message, kind)
        return Outcome("Successful", "1")


def metric(name: str, address: str = "http://prom-a:9090") -> Metric:
    """A Prometheus metric sent to ``address``."""
    return Metric.model_validate(
        {
            "name": name,
            "thresholdRange": {"min": 0},
            "provider": {"prometheus": {"query": "up", "address": address}},
        }
    )


def rollout(run: str = "background", started: dt.datetime = T0) -> Rollout:
    """A Rollout whose status has one analysis run for canary revision c1."""
    ro = Rollout.model_validate(rollout_doc("app"))
    runs = [AnalysisRunStatus(name=run, revision="c1", phase="Running", started_at=started)]
    status = ro.status.model_copy(update={"canary_revision": "c1", "analysis_runs": runs})
    return ro.model_copy(update={"status": status})


def due(*metrics: Metric, run: str = "background") -> list[an.Due]:
    """Those metrics due in ``run``."""
    return [an.Due(run, m, (), ()) for m in metrics]


def measure_m(pool: MeasuringPool) -> dict[tuple[str, str], Measurement]:
    """One pass that finds metric ``m`` due: the measurements the pool hands over."""
    return pool.measure(rollout(), due(metric("m")), T0)


def answer_m(pool: MeasuringPool) -> dict[tuple[str, str], Measurement]:
    """A pass that starts ``m``, the wait for its answer, and the pass that collects it."""
    measure_m(pool)
    wait_for("answered", lambda: pool.in_flight("default/app") == 0, 5)
    return measure_m(pool)


@pytest.fixture
def world() -> Iterator[tuple[MeasuringPool, Provider, FakeClock, list[str]]]:
    """A pool over a gated provider, a fake clock, and the keys it woke."""
    provider, clock, woken = Provider(), FakeClock(), list[str]()
    pool = MeasuringPool(
        provider, woken.append, per_provider=2, deadline=30, breaker_after=2, cooldown=60,
        clock=clock,
    )  # fmt: skip
    try:
        yield pool, provider, clock, woken
    finally:
        for gate in provider.gates.values():
            gate.set()
        pool.close()


def test_a_due_measurement_is_started_not_waited_for(world: Any) -> None:
    """The first pass gets nothing back (the provider hangs) and returns; when the answer
    comes the Rollout is woken, and the next pass gets the measurement once."""
    pool, provider, _, woken = world
    ro = rollout()
    assert pool.measure(ro, due(metric("m")), T0) == {}
    wait_for("the provider called", lambda: provider.calls == ["m"], 5)
    assert pool.measure(ro, due(metric("m")), T0) == {}  # still running: not started twice
    assert pool.in_flight("default/app") == 1
    provider.gate("m").set()
    wait_for("the wake", lambda: woken == ["default/app"], 5)
    got = pool.measure(ro, due(metric("m")), T0)
    assert got[("background", "m")].phase == "Successful"
    assert provider.calls == ["m"]
    assert pool.in_flight("default/app") == 0


def test_a_hung_provider_holds_only_its_own_workers(world: Any) -> None:
    """Provider A hangs on two measurements (its limit); a third of A waits its turn, and
    provider B's measurement is taken and delivered meanwhile."""
    pool, provider, _, woken = world
    a = [metric(f"a{i}") for i in range(3)]
    b = metric("b", address="http://prom-b:9090")
    pool.measure(rollout(), due(*a, b), T0)
    provider.gate("b").set()
    wait_for("b answered", lambda: "default/app" in woken, 5)
    assert sorted(provider.calls) == ["a0", "a1", "b"]
    got = pool.measure(rollout(), due(*a, b), T0)
    assert list(got) == [("background", "b")]


def test_the_deadline_turns_a_hung_measurement_into_an_error(world: Any) -> None:
    """Past the deadline the measurement is an Error naming the provider, the Rollout is
    woken, and the late answer is dropped."""
    pool, provider, clock, woken = world
    measure_m(pool)
    wait_for("the provider called", lambda: provider.calls == ["m"], 5)
    clock.advance(31)
    wait_for("the wake", lambda: woken == ["default/app"], 5)
    got = measure_m(pool)[("background", "m")]
    assert got.phase == "Error"
    assert "provider http://prom-a:9090 gave no answer within 30s" in got.message
    assert "(timeout)" in got.message
    provider.gate("m").set()
    assert measure_m(pool) == {}  # a new one, not the late one


def test_the_breaker_opens_after_timeouts_and_a_trial_closes_it(world: Any) -> None:
    """Two timeouts in a row open the breaker: due measurements are Errors at once, with
    no provider call; after the cool-down one trial goes through, and its answer closes
    the breaker."""
    pool, provider, clock, _ = world
    provider.errors["m"] = ("m: query failed (timeout): read timed out", "timeout")
    provider.gate("m").set()
    for _ in range(2):
        assert answer_m(pool)[("background", "m")].phase == "Error"
    calls = len(provider.calls)
    refused = measure_m(pool)[("background", "m")]
    assert "breaker open" in refused.message
    assert len(provider.calls) == calls
    clock.advance(61)
    provider.errors.pop("m")
    assert measure_m(pool) == {}  # the trial
    wait_for("trial answered", lambda: pool.in_flight("default/app") == 0, 5)
    assert measure_m(pool)[("background", "m")].phase == "Successful"
    assert measure_m(pool) == {}  # asked again: closed


def test_a_result_never_reaches_a_newer_run(world: Any) -> None:
    """An answer for a run that restarted (new start time) is dropped, not recorded."""
    pool, provider, _, woken = world
    measure_m(pool)
    provider.gate("m").set()
    wait_for("the wake", lambda: woken, 5)
    newer = rollout(started=T0 + dt.timedelta(minutes=1))
    assert pool.measure(newer, due(metric("m")), T0) == {}
    wait_for("the new run's own", lambda: len(provider.calls) == 2, 5)


def test_only_a_timeout_kind_counts_for_the_breaker(world: Any) -> None:
    """An Error whose text mentions a timeout but whose kind is another (a Prometheus
    error, a condition) never opens the breaker; two timeouts by kind do."""
    pool, provider, _, _ = world
    provider.errors["m"] = ("m: query failed (execution): step (timeout) too small", "execution")
    provider.gate("m").set()
    for _ in range(3):
        assert answer_m(pool)[("background", "m")].phase == "Error"
    assert measure_m(pool) == {}  # asked again: not open
    wait_for("answered", lambda: pool.in_flight("default/app") == 0, 5)
    measure_m(pool)
    provider.errors["m"] = ("m: no answer", "timeout")
    for _ in range(2):
        answer_m(pool)
    refused = measure_m(pool)[("background", "m")]
    assert "breaker open" in refused.message


def test_a_measurement_logs_with_its_rollout_and_namespace(world: Any) -> None:
    """The worker thread's log lines name the Rollout and namespace, as the reconcile's
    do (the measurement runs outside the reconcile's logging context)."""
    pool, provider, _, _ = world
    provider.gate("m").set()
    measure_m(pool)
    wait_for("answered", lambda: pool.in_flight("default/app") == 0, 5)
    assert provider.contexts == [{"rollout": "app", "namespace": "default"}]
