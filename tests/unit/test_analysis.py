"""Analysis runs (:mod:`controller.core.analysis`): how each judged measurement changes a
metric's tally, what the tally means (limits and the onNoData / onProviderError
policies, in the documented order), when measurements are due, and a run's phase."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.analysis import AnalysisTemplateSpec, Metric
from controller.api.base import parse_duration
from controller.api.rollout import (
    AnalysisArg,
    AnalysisPhase,
    Measurement,
    MeasurementPhase,
    MetricResult,
    RolloutAnalysis,
)
from controller.core import analysis as an
from controller.core.model import TemplateKey

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
INTERVAL = 30.0
ALL_PHASES: tuple[MeasurementPhase, ...] = (
    "Successful",
    "Failed",
    "Inconclusive",
    "Error",
    "NoData",
)


def metric(name: str = "m", **fields: Any) -> Metric:
    """A Prometheus metric measured every 30s, with the given limits and policies."""
    fields.setdefault("interval", "30s")
    return Metric.model_validate(
        {
            "name": name,
            "thresholdRange": {"min": 0.99},
            "provider": {"prometheus": {"query": "q"}},
            **fields,
        }
    )


def at(seconds: float) -> dt.datetime:
    """``seconds`` after T0."""
    return T0 + dt.timedelta(seconds=seconds)


def meas(phase: MeasurementPhase, message: str = "") -> Measurement:
    """A judged measurement."""
    return Measurement(phase=phase, message=message or phase.lower(), started_at=T0)


def feed(m: Metric, phases: Sequence[MeasurementPhase]) -> list[MetricResult]:
    """The metric's result after each measurement, one per interval from T0."""
    result = MetricResult(name=m.name, phase="Running", next_at=T0)
    out = []
    for i, phase in enumerate(phases):
        result = an.record(result, m, meas(phase), at(i * INTERVAL))
        out.append(result)
    return out


def last(m: Metric, phases: Sequence[MeasurementPhase]) -> MetricResult:
    """The metric's result after all the measurements."""
    results = feed(m, phases)
    assert results, "feed at least one measurement"
    return results[-1]


def resolved(*metrics: Metric) -> an.ResolvedAnalysis:
    """An analysis of these metrics, with no arguments."""
    return an.ResolvedAnalysis(tuple(metrics), (), ())


# -- policies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "phase", "tally", "says"),
    [
        pytest.param("Hold", "Running", (0, 0, 1), "holding (onNoData: Hold)", id="hold"),
        pytest.param("Fail", "Failed", (0, 1, 0), "more than failureLimit 0", id="fail"),
        pytest.param("Pass", "Successful", (1, 0, 0), "1 of 1", id="pass"),
    ],
)
def test_on_no_data_policy(
    policy: str, phase: AnalysisPhase, tally: tuple[int, int, int], says: str
) -> None:
    """onNoData: Hold counts nothing and waits, Fail counts a failure, Pass a success."""
    result = last(metric(onNoData=policy), ["NoData"])
    assert result.phase == phase
    assert (result.successful, result.failed, result.no_data) == tally
    assert says in result.message
    assert result.count == 1


@pytest.mark.parametrize(
    ("policy", "phases"),
    [
        pytest.param("Hold", ["Running", "Running", "Error"], id="hold-is-blind"),
        pytest.param("Fail", ["Running", "Running", "Failed"], id="fail-fails"),
        pytest.param("Pass", ["Running", "Running", "Successful"], id="pass-passes"),
    ],
)
def test_on_provider_error_policy_applies_past_the_limit(
    policy: str, phases: list[AnalysisPhase]
) -> None:
    """Errors up to consecutiveErrorLimit keep the metric Running; one more applies
    onProviderError (Hold: Error, Fail: Failed, Pass: Successful)."""
    m = metric(consecutiveErrorLimit=2, onProviderError=policy)
    results = feed(m, ["Error"] * 3)
    assert [r.phase for r in results] == phases
    assert [r.consecutive_errors for r in results] == [1, 2, 3]
    assert results[-1].failed == 0  # an error is never counted as a failed measurement
    assert results[-1].error == 3


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        pytest.param("Hold", "holding (onProviderError: Hold)", id="hold"),
        pytest.param("Fail", "onProviderError is Fail", id="fail"),
    ],
)
def test_provider_error_message_names_the_limit_and_the_cause(policy: str, says: str) -> None:
    """Past the limit, the message counts the errors, names the limit and quotes the error."""
    m = metric(consecutiveErrorLimit=0, onProviderError=policy)
    result = an.record(
        MetricResult(name="m", phase="Running"), m, meas("Error", "m: query failed (timeout)"), T0
    )
    assert "1 consecutive provider errors (limit 0)" in result.message
    assert "query failed (timeout)" in result.message
    assert says in result.message


@pytest.mark.parametrize("policy", ["Hold", "Pass"])
def test_a_good_answer_clears_a_blind_metric(policy: str) -> None:
    """After errors past the limit, a Successful measurement resets the streak and counts."""
    m = metric(consecutiveErrorLimit=1, onProviderError=policy)
    results = feed(m, ["Error", "Error", "Successful"])
    assert results[-1].phase == "Successful"
    assert results[-1].consecutive_errors == 0


def test_provider_error_pass_counts_towards_count() -> None:
    """With onProviderError Pass, errors past the limit count towards ``count``."""
    m = metric(count=3, consecutiveErrorLimit=0, onProviderError="Pass")
    assert [r.phase for r in feed(m, ["Error"] * 3)] == ["Running", "Running", "Successful"]


# -- limits ----------------------------------------------------------------------------


#: Past each limit: the metric's phase, and what its message then says.
PAST_THE_LIMIT = {
    "failureLimit": ("Failed", "more than failureLimit {limit}"),
    "inconclusiveLimit": ("Inconclusive", "promote or abort"),
}

#: For each limit: (limit, count, the measurements' phases, the metric's phase).
LIMIT_CASES = {
    "failureLimit": [
        pytest.param(0, 1, ["Failed"], "Failed", id="limit-0-one-failure-fails"),
        pytest.param(2, 5, ["Failed", "Failed"], "Running", id="limit-2-tolerates-two"),
        pytest.param(2, 5, ["Failed"] * 3, "Failed", id="limit-2-third-failure-fails"),
        pytest.param(
            1, 5, ["Failed", "Successful", "Failed"], "Failed", id="failures-need-not-be-in-a-row"
        ),
        pytest.param(
            2, 3, ["Successful", "Failed", "Failed"], "Successful",
            id="tolerated-failures-count-towards-count",
        ),
        pytest.param(
            0, 1, ["Successful", "Failed"], "Failed", id="a-later-failure-fails-a-success"
        ),
    ],
    "inconclusiveLimit": [
        pytest.param(0, 5, ["Inconclusive"], "Inconclusive", id="limit-0-one-pauses"),
        pytest.param(1, 5, ["Inconclusive"], "Running", id="limit-1-tolerates-one"),
        pytest.param(1, 5, ["Inconclusive"] * 2, "Inconclusive", id="limit-1-second-pauses"),
        pytest.param(
            1, 2, ["Inconclusive", "Successful"], "Successful",
            id="tolerated-inconclusive-counts-towards-count",
        ),
        pytest.param(
            0, 5, ["Inconclusive", "Failed"], "Failed", id="a-failure-beats-inconclusive"
        ),
        pytest.param(
            0, 1, ["Inconclusive", "Successful"], "Inconclusive",
            id="inconclusive-stays-until-a-person-decides",
        ),
        pytest.param(
            5, 3, ["Inconclusive"] * 3, "Inconclusive",
            id="count-reached-with-nothing-successful-is-no-pass",
        ),
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "limit", "count", "phases", "phase"),
    [
        pytest.param(field, *case.values, id=case.id)
        for field, cases in LIMIT_CASES.items()
        for case in cases
    ],
)
def test_failure_and_inconclusive_limits(
    field: str, limit: int, count: int, phases: list[MeasurementPhase], phase: AnalysisPhase
) -> None:
    """More than failureLimit failed measurements fail the metric; more than
    inconclusiveLimit inconclusive ones pause it for a person; up to the limit, it goes on."""
    result = last(metric(**{field: limit}, count=count), phases)
    assert result.phase == phase
    past, says = PAST_THE_LIMIT[field]
    if phase == past:
        assert says.format(limit=limit) in result.message


@pytest.mark.parametrize(
    ("phases", "phase"),
    [
        pytest.param(["Error", "Error"], "Failed", id="two-in-a-row-exceed-1"),
        pytest.param(["Error", "Successful", "Error"], "Running", id="a-success-resets"),
        pytest.param(["Error", "Failed", "Error"], "Running", id="a-failure-resets"),
        pytest.param(["Error", "NoData", "Error"], "Running", id="no-data-resets"),
        pytest.param(["Error", "Successful", "Error", "Error"], "Failed", id="new-streak"),
    ],
)
def test_consecutive_error_limit_counts_errors_in_a_row(
    phases: list[MeasurementPhase], phase: AnalysisPhase
) -> None:
    """consecutiveErrorLimit counts errors in a row: any other answer resets the streak."""
    m = metric(consecutiveErrorLimit=1, onProviderError="Fail", count=10, failureLimit=5)
    result = last(m, phases)
    assert result.phase == phase
    assert result.consecutive_errors == (2 if phase == "Failed" else 1)


@pytest.mark.parametrize(
    ("tally", "policy", "phase"),
    [
        pytest.param(
            {"failed": 1, "consecutive_errors": 5, "inconclusive": 1}, "Hold", "Failed",
            id="failures-first",
        ),
        pytest.param(
            {"consecutive_errors": 5, "inconclusive": 1, "successful": 3}, "Hold", "Error",
            id="errors-before-inconclusive-and-count",
        ),
        pytest.param(
            {"consecutive_errors": 5, "inconclusive": 1}, "Pass", "Inconclusive",
            id="pass-errors-still-checks-inconclusive",
        ),
        pytest.param(
            {"inconclusive": 1, "successful": 3}, "Hold", "Inconclusive",
            id="inconclusive-before-count",
        ),
        pytest.param({"successful": 3}, "Hold", "Successful", id="count-reached"),
        pytest.param({"successful": 2}, "Hold", "Running", id="count-not-reached"),
    ],
)  # fmt: skip
def test_assess_checks_the_rules_in_the_documented_order(
    tally: dict[str, int], policy: str, phase: AnalysisPhase
) -> None:
    """failureLimit, then consecutiveErrorLimit, then inconclusiveLimit, then count."""
    m = metric(count=3, consecutiveErrorLimit=4, onProviderError=policy)
    result = MetricResult.model_validate({"name": "m", "phase": "Running", **tally})
    assert an.assess(result, m, meas("Error"))[0] == phase


@pytest.mark.parametrize(
    ("count", "phases", "phase", "says"),
    [
        pytest.param(3, ["Successful"] * 2, "Running", "2 of 3 measurement(s) taken", id="2-of-3"),
        pytest.param(3, ["Successful"] * 3, "Successful", "3 of 3", id="3-of-3"),
        pytest.param(
            3, ["Successful", "NoData", "Successful"], "Running", "2 of 3",
            id="held-no-data-not-counted",
        ),
        pytest.param(
            3, ["Successful", "Error", "Successful"], "Running", "2 of 3", id="errors-not-counted"
        ),
        pytest.param(1, ["Successful"], "Successful", "1 of 1", id="default-count-1"),
    ],
)  # fmt: skip
def test_count_counted_measurements_succeed_the_metric(
    count: int, phases: list[MeasurementPhase], phase: AnalysisPhase, says: str
) -> None:
    """``count`` counted measurements (not held NoData, not errors) make it Successful."""
    result = last(metric(count=count), phases)
    assert result.phase == phase
    assert says in result.message
    assert result.count == len(phases)


def test_record_keeps_the_latest_measurements() -> None:
    """A metric keeps its last KEEP_MEASUREMENTS measurements, newest last."""
    m = metric(count=100, failureLimit=100)
    result = MetricResult(name="m", phase="Running")
    for i in range(an.KEEP_MEASUREMENTS + 3):
        result = an.record(result, m, meas("Successful", f"n{i}"), at(i))
    assert len(result.measurements) == an.KEEP_MEASUREMENTS
    assert result.measurements[-1].message == f"n{an.KEEP_MEASUREMENTS + 2}"
    assert result.measurements[0].message == "n3"


# -- when measurements are due -----------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "seconds", "measured"),
    [
        pytest.param(0, 0, True, id="no-delay-measures-at-once"),
        pytest.param("1m", 0, False, id="nothing-at-start"),
        pytest.param("1m", 59, False, id="nothing-just-before"),
        pytest.param("1m", 60, True, id="measured-at-the-delay"),
        pytest.param("1m", 90, True, id="measured-after-the-delay"),
    ],
)
def test_initial_delay(delay: str | int, seconds: float, measured: bool) -> None:
    """Nothing is measured before initialDelay; the first measurement is due at it."""
    m = metric(initialDelay=delay)
    r = resolved(m)
    run = an.start("step-0", "rev", r, T0)
    assert run.metrics[0].next_at == at(60 if delay else 0)
    assert bool(an.due(run, r, at(seconds), background=False)) is measured


@pytest.mark.parametrize(
    ("seconds", "measured"),
    [
        pytest.param(0, False, id="not-right-after"),
        pytest.param(29.9, False, id="not-before-the-interval"),
        pytest.param(30, True, id="due-at-the-interval"),
        pytest.param(45, True, id="due-after-the-interval"),
    ],
)
def test_next_measurement_is_due_one_interval_later(seconds: float, measured: bool) -> None:
    """After a measurement, the next is due ``interval`` later."""
    m = metric(count=3)
    r = resolved(m)
    run = an.start("step-0", "rev", r, T0)
    run = an.apply_measurements(run, r, {("step-0", "m"): meas("Successful")}, T0)
    assert run.metrics[0].next_at == at(INTERVAL)
    assert an.next_due(run, background=False) == at(INTERVAL)
    due = an.due(run, r, at(seconds), background=False)
    assert [d.metric.name for d in due] == (["m"] if measured else [])


@pytest.mark.parametrize(
    ("query", "delay", "first"),
    [
        pytest.param("sum(rate(x[{{interval}}]))", "0s", 30, id="interval-window"),
        pytest.param("sum(rate(x[5m]))", "0s", 300, id="five-minute-window"),
        pytest.param("sum(rate(x[{{args.window}}]))", "0s", 120, id="window-from-an-argument"),
        pytest.param("sum(rate(x[1m]))", "2m", 120, id="initial-delay-longer"),
        pytest.param("up", "0s", 0, id="instant-query"),
    ],
)
def test_a_run_judges_only_its_own_data(query: str, delay: str, first: int) -> None:
    """A metric's first measurement waits until its query's window lies within the run
    (or its initialDelay, if longer), and its message says why."""
    m = Metric.model_validate(
        {
            "name": "m",
            "interval": "30s",
            "initialDelay": delay,
            "thresholdRange": {"min": 0.99},
            "provider": {"prometheus": {"query": query}},
        }
    )
    r = an.ResolvedAnalysis((m,), (), (AnalysisArg(name="window", value="2m"),))
    run = an.start("step-0", "rev", r, T0)
    assert run.metrics[0].next_at == at(first)
    reads_back = first > parse_duration(delay)
    assert ("judges only data from after it started" in run.metrics[0].message) is reads_back


def test_a_metric_being_measured_needs_no_timer() -> None:
    """A metric whose measurement is already being taken (its result wakes the Rollout) is
    due again only BUSY_RECHECK later, so a pass never spins waiting for it; the others
    keep their own times."""
    fast, slow = metric("fast", interval="10s"), metric("slow", interval="1m", initialDelay="5s")
    run = an.start("step-0", "rev", resolved(fast, slow), T0)
    now = at(1)
    assert an.next_due(run, background=False, busy={"fast"}, now=now) == at(5)
    both = an.next_due(run, background=False, busy={"fast", "slow"}, now=now)
    assert both == now + an.BUSY_RECHECK


def test_next_due_is_the_earliest_metric() -> None:
    """A run wakes for whichever metric is due first."""
    fast, slow = metric("fast", interval="10s"), metric("slow", interval="1m", initialDelay="5s")
    r = resolved(fast, slow)
    run = an.start("step-0", "rev", r, T0)
    assert an.next_due(run, background=False) == T0
    run = an.apply_measurements(run, r, {("step-0", "fast"): meas("Successful")}, T0)
    assert an.next_due(run, background=False) == at(5)
    assert [d.metric.name for d in an.due(run, r, at(5), background=False)] == ["slow"]


@pytest.mark.parametrize(
    ("background", "measuring"),
    [
        pytest.param(False, False, id="step-run-stops"),
        pytest.param(True, True, id="background-run-keeps-measuring"),
    ],
)
def test_a_successful_run_measures_again_only_in_the_background(
    background: bool, measuring: bool
) -> None:
    """A step run stops when it succeeds; a background run keeps measuring until promotion."""
    m = metric()
    r = resolved(m)
    name = an.BACKGROUND if background else an.step_run_name(0)
    run = an.start(name, "rev", r, T0)
    run = an.apply_measurements(run, r, {(name, "m"): meas("Successful")}, T0)
    assert run.phase == "Successful"
    later = at(INTERVAL)
    assert bool(an.due(run, r, later, background=background)) is measuring
    assert (an.next_due(run, background=background) == later) is measuring
    if measuring:  # and a later failure still fails it
        run = an.apply_measurements(run, r, {(name, "m"): meas("Failed")}, later)
        assert run.phase == "Failed"


def test_a_failed_run_measures_nothing_more() -> None:
    """A Failed run is final: nothing is due and new measurements do not change it."""
    m = metric()
    r = resolved(m)
    for background in (False, True):
        run = an.start("background", "rev", r, T0)
        run = an.apply_measurements(run, r, {("background", "m"): meas("Failed")}, T0)
        assert run.phase == "Failed"
        assert an.due(run, r, at(3600), background=background) == []
        again = {("background", "m"): meas("Successful")}
        assert an.apply_measurements(run, r, again, at(60)) == run


def test_a_blind_metric_keeps_being_measured() -> None:
    """A metric held in Error (errors past the limit, Hold) is still due every interval."""
    m = metric(consecutiveErrorLimit=0)
    r = resolved(m)
    run = an.start("step-0", "rev", r, T0)
    run = an.apply_measurements(run, r, {("step-0", "m"): meas("Error")}, T0)
    assert run.phase == "Error"
    assert [d.metric.name for d in an.due(run, r, at(INTERVAL), background=False)] == ["m"]


# -- runs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "phase"),
    [
        pytest.param(["Failed", "Running"], "Failed", id="one-failed-fails"),
        pytest.param(["Successful", "Failed"], "Failed", id="failed-beats-successful"),
        pytest.param(["Failed", "Error", "Inconclusive"], "Failed", id="failed-beats-all"),
        pytest.param(["Error", "Inconclusive"], "Error", id="blind-beats-inconclusive"),
        pytest.param(["Successful", "Error"], "Error", id="one-blind-holds"),
        pytest.param(["Inconclusive", "Successful"], "Inconclusive", id="one-inconclusive"),
        pytest.param(["Successful", "Running"], "Running", id="one-running-keeps-running"),
        pytest.param(["Successful", "Pending"], "Running", id="one-pending-keeps-running"),
        pytest.param(["Successful", "Successful"], "Successful", id="all-succeeded"),
        pytest.param([], "Running", id="no-metrics"),
    ],
)
def test_run_phase(phases: list[AnalysisPhase], phase: AnalysisPhase) -> None:
    """Failed if any failed; else Error; else Inconclusive; else Successful if all are."""
    metrics = [MetricResult(name=f"m{i}", phase=p) for i, p in enumerate(phases)]
    assert an.run_phase(metrics) == phase


@pytest.mark.parametrize(
    ("taken", "phase", "says"),
    [
        pytest.param(
            {"latency": "Failed", "errors": "Successful"}, "Failed", "latency: 1 failed",
            id="one-failed-fails-the-run",
        ),
        pytest.param(
            {"latency": "Successful"}, "Running", "errors: ", id="one-unmeasured-keeps-it-running"
        ),
        pytest.param(
            {"latency": "Successful", "errors": "Error"}, "Running", "errors: 0 of 1",
            id="an-error-below-the-limit-keeps-it-running",
        ),
        pytest.param(
            {"latency": "Inconclusive", "errors": "Successful"}, "Inconclusive", "latency: ",
            id="one-inconclusive-pauses-the-run",
        ),
        pytest.param(
            {"latency": "Successful", "errors": "Successful"}, "Successful", "",
            id="all-succeeded-succeeds-the-run",
        ),
    ],
)  # fmt: skip
def test_a_run_aggregates_its_metrics(
    taken: dict[str, MeasurementPhase], phase: AnalysisPhase, says: str
) -> None:
    """A run's phase follows its metrics; its message names the metric that decides it."""
    r = resolved(metric("latency"), metric("errors"))
    run = an.start("step-1", "rev", r, T0)
    run = an.apply_measurements(run, r, {("step-1", k): meas(v) for k, v in taken.items()}, T0)
    assert run.phase == phase
    assert run.message.startswith(says)
    assert (run.message == "") == (phase == "Successful")


def test_measurements_of_other_runs_are_ignored() -> None:
    """A run records only measurements keyed by its own name; with none it is unchanged."""
    r = resolved(metric())
    run = an.start("step-0", "rev", r, T0)
    other = {("background", "m"): meas("Failed"), ("step-0", "unknown"): meas("Failed")}
    assert an.apply_measurements(run, r, other, T0) is run


# -- notices: blind and Inconclusive transitions -------------------------------------------


def passes(m: Metric, phases: Sequence[MeasurementPhase]) -> list[list[an.Notice]]:
    """The notices of each pass of a one-metric run fed one measurement per pass, and of
    a second pass on the same state after each (which must be empty)."""
    r = resolved(m)
    run = an.start("step-1", "rev", r, T0)
    out = []
    for i, phase in enumerate(phases):
        after = an.apply_measurements(run, r, {("step-1", m.name): meas(phase)}, at(i * 30))
        out.append(an.notices(run, after, r))
        again = an.apply_measurements(after, r, {}, at(i * 30))
        assert an.notices(after, again, r) == []
        run = after
    return out


HELD, INCONCLUSIVE = "AnalysisHeld", "AnalysisInconclusive"


@pytest.mark.parametrize(
    ("fields", "phases", "reasons"),
    [
        pytest.param({"count": 9}, ["NoData"] * 3, [[HELD], [], []], id="no-data-held-once"),
        pytest.param(
            {"count": 9}, ["NoData", "Successful", "NoData"], [[HELD], [], [HELD]],
            id="no-data-again-after-a-good-answer-is-a-new-transition",
        ),
        pytest.param(
            {"count": 9, "onNoData": "Fail", "failureLimit": 5}, ["NoData"] * 2, [[], []],
            id="no-data-fail-is-not-blind",
        ),
        pytest.param(
            {"count": 9, "onNoData": "Pass"}, ["NoData"] * 2, [[], []],
            id="no-data-pass-is-not-blind",
        ),
        pytest.param(
            {"count": 9, "consecutiveErrorLimit": 1}, ["Error"] * 4, [[], [HELD], [], []],
            id="errors-held-once-past-the-limit",
        ),
        pytest.param(
            {"count": 9, "consecutiveErrorLimit": 0, "onProviderError": "Fail"}, ["Error"],
            [[]], id="errors-that-fail-are-not-blind",
        ),
        pytest.param(
            {"count": 9, "consecutiveErrorLimit": 0, "onProviderError": "Pass"}, ["Error"] * 2,
            [[], []], id="errors-that-pass-are-not-blind",
        ),
        pytest.param(
            {"count": 9, "consecutiveErrorLimit": 0}, ["NoData", "Error", "Error"],
            [[HELD], [HELD], []], id="from-no-data-to-errors-is-a-new-cause",
        ),
        pytest.param(
            {"count": 9, "inconclusiveLimit": 1}, ["Inconclusive"] * 3, [[], [INCONCLUSIVE], []],
            id="inconclusive-once-past-the-limit",
        ),
        pytest.param(
            {"count": 2}, ["Successful", "Successful"], [[], []], id="a-good-run-says-nothing"
        ),
    ],
)  # fmt: skip
def test_notices_name_each_transition_once(
    fields: dict[str, Any], phases: list[MeasurementPhase], reasons: list[list[str]]
) -> None:
    """A metric going blind (NoData or errors under Hold) or Inconclusive is named in the
    pass it happens; staying there, or re-planning the same state, names it no more."""
    got = passes(metric("errors", **fields), phases)
    assert [[n.reason for n in pass_] for pass_ in got] == reasons
    assert all(n.metric == "errors" for pass_ in got for n in pass_)


def test_notices_say_why_the_metric_is_blind() -> None:
    """The held notice says no data or quotes the provider error; Inconclusive says what
    a person can do."""
    m = metric(count=9, consecutiveErrorLimit=0)
    r = resolved(m)
    run = an.start("step-1", "rev", r, T0)
    blind = an.apply_measurements(run, r, {("step-1", "m"): meas("NoData", "empty vector")}, T0)
    (nodata,) = an.notices(run, blind, r)
    assert "no data: empty vector (onNoData: Hold)" in nodata.message
    failing = meas("Error", "m: query failed (timeout)")
    erring = an.apply_measurements(blind, r, {("step-1", "m"): failing}, at(30))
    (error,) = an.notices(blind, erring, r)
    assert "1 consecutive provider errors (limit 0): m: query failed (timeout)" in error.message
    (inconclusive,) = passes(metric(count=9), ["Inconclusive"])
    assert "promote or abort" in inconclusive[0].message


@pytest.mark.parametrize(
    ("templates", "says"),
    [
        pytest.param({}, "AnalysisTemplate t was not read", id="missing"),
        pytest.param(
            {TemplateKey("t", False): "forbidden"}, "AnalysisTemplate t: forbidden", id="unreadable"
        ),
    ],
)
def test_a_missing_template_makes_the_run_error(
    templates: dict[TemplateKey, AnalysisTemplateSpec | str], says: str
) -> None:
    """A template that cannot be read makes the run Error from the start, with the reason."""
    analysis = RolloutAnalysis.model_validate({"templates": [{"templateName": "t"}]})
    r = an.resolve(analysis, templates)
    assert r.problem == says
    run = an.start("step-0", "rev", r, T0)
    assert (run.phase, run.message, run.metrics) == ("Error", says, [])
    assert an.due(run, r, T0, background=False) == []


def test_resolve_collects_the_metrics_of_every_template() -> None:
    """Every referenced template's metrics are measured."""
    spec = AnalysisTemplateSpec.model_validate(
        {
            "metrics": [
                {
                    "name": "a",
                    "thresholdRange": {"max": 1},
                    "provider": {"prometheus": {"query": "q"}},
                }
            ]
        }
    )
    other = AnalysisTemplateSpec.model_validate(
        {
            "metrics": [
                {
                    "name": "b",
                    "thresholdRange": {"max": 1},
                    "provider": {"prometheus": {"query": "q"}},
                }
            ]
        }
    )
    analysis = RolloutAnalysis.model_validate(
        {"templates": [{"templateName": "one"}, {"templateName": "two", "clusterScope": True}]}
    )
    r = an.resolve(analysis, {TemplateKey("one", False): spec, TemplateKey("two", True): other})
    assert r.problem is None
    assert [m.name for m in r.metrics] == ["a", "b"]


# -- properties ------------------------------------------------------------------------

limits = st.fixed_dictionaries(
    {
        "count": st.integers(1, 5),
        "failureLimit": st.integers(0, 3),
        "inconclusiveLimit": st.integers(0, 3),
        "consecutiveErrorLimit": st.integers(0, 5),
    }
)
policy = st.sampled_from(["Hold", "Fail", "Pass"])
phases = st.lists(st.sampled_from(ALL_PHASES), min_size=1, max_size=25)


@given(limits, st.lists(st.sampled_from(["NoData", "Error"]), min_size=1, max_size=30))
def test_blind_measurements_never_decide_by_default(
    fields: dict[str, int], blind: list[MeasurementPhase]
) -> None:
    """With Hold policies, only NoData and errors never make a metric or run decide."""
    m = metric(**fields)
    for result in feed(m, blind):
        assert result.phase not in ("Successful", "Failed")
        assert an.run_phase([result]) not in ("Successful", "Failed")


@given(limits, policy, st.lists(st.just("Error"), min_size=1, max_size=30))
def test_errors_fail_a_metric_only_with_on_provider_error_fail(
    fields: dict[str, int], on_error: str, errors: list[MeasurementPhase]
) -> None:
    """A Prometheus outage alone fails a metric only when onProviderError is Fail."""
    m = metric(onProviderError=on_error, **fields)
    failed = any(r.phase == "Failed" for r in feed(m, errors))
    assert failed == (on_error == "Fail" and len(errors) > fields["consecutiveErrorLimit"])


@given(limits, policy, policy, phases)
def test_the_tally_adds_up(
    fields: dict[str, int], on_no_data: str, on_error: str, taken: list[MeasurementPhase]
) -> None:
    """Every measurement lands in exactly one counter, and the next is one interval later."""
    m = metric(onNoData=on_no_data, onProviderError=on_error, **fields)
    for i, r in enumerate(feed(m, taken), start=1):
        assert r.count == i
        assert r.successful + r.failed + r.inconclusive + r.no_data + r.error == i
        assert r.next_at == at(i * INTERVAL)


@given(limits, policy, policy, phases, phases)
def test_a_failed_run_is_final(
    fields: dict[str, int],
    on_no_data: str,
    on_error: str,
    before: list[MeasurementPhase],
    after: list[MeasurementPhase],
) -> None:
    """Once a run fails (the rollout aborts), no later measurement brings it back."""
    m = metric(onNoData=on_no_data, onProviderError=on_error, **fields)
    r = resolved(m)
    run = an.start("background", "rev", r, T0)
    failures: list[MeasurementPhase] = ["Failed"] * (fields["failureLimit"] + 1)
    seen: list[AnalysisPhase] = []
    for i, phase in enumerate([*before, *failures, *after]):
        run = an.apply_measurements(run, r, {("background", "m"): meas(phase)}, at(i * INTERVAL))
        seen.append(run.phase)
    first = seen.index("Failed")
    assert set(seen[first:]) == {"Failed"}


@given(limits, phases)
def test_failures_past_the_limit_always_fail(
    fields: dict[str, int], taken: list[MeasurementPhase]
) -> None:
    """A metric whose failed count exceeds failureLimit is Failed, whatever else happened."""
    m = metric(**fields)
    for r in feed(m, taken):
        assert (r.phase == "Failed") == (r.failed > fields["failureLimit"])


@given(limits, st.integers(1, 10))
def test_successes_alone_succeed_exactly_at_count(fields: dict[str, int], n: int) -> None:
    """Only successful measurements: Running before ``count`` of them, Successful from it."""
    m = metric(**fields)
    for i, r in enumerate(feed(m, ["Successful"] * n), start=1):
        assert r.phase == ("Successful" if i >= fields["count"] else "Running")


@given(st.lists(st.sampled_from(["Successful", "Failed", "Inconclusive", "Error", "Running"])))
def test_a_run_succeeds_only_when_every_metric_does(metric_phases: list[AnalysisPhase]) -> None:
    """A run is Successful exactly when it has metrics and all are; Failed when any is."""
    metrics = [MetricResult(name=f"m{i}", phase=p) for i, p in enumerate(metric_phases)]
    phase = an.run_phase(metrics)
    assert (phase == "Successful") == (bool(metrics) and set(metric_phases) == {"Successful"})
    assert (phase == "Failed") == ("Failed" in metric_phases)


@given(st.sampled_from([0, 5, 60]), st.sampled_from(["10s", "1m"]), st.floats(0, 600))
def test_due_agrees_with_next_due(delay: int, interval: str, seconds: float) -> None:
    """A metric is due exactly when ``next_due`` has passed (so a wakeup finds work)."""
    m = metric(initialDelay=delay, interval=interval, count=5)
    r = resolved(m)
    for name in ("step-0", an.BACKGROUND):
        background = name == an.BACKGROUND
        run = an.start(name, "rev", r, T0)
        run = an.apply_measurements(run, r, {(name, "m"): meas("Successful")}, at(delay))
        wake = an.next_due(run, background=background)
        assert wake is not None
        now = at(delay + seconds)
        assert bool(an.due(run, r, now, background=background)) == (wake <= now)


def test_tolerated_failures_alone_never_pass_a_metric() -> None:
    """failureLimit tolerates failures beside successes; a count of nothing but tolerated
    failures is for a person to judge (Argo would pass it)."""
    result = last(metric(failureLimit=2, count=2), ["Failed", "Failed"])
    assert result.phase == "Inconclusive"
    assert "none successful (2 failed, 0 inconclusive)" in result.message
    assert last(metric(failureLimit=2, count=2), ["Failed", "Successful"]).phase == "Successful"
