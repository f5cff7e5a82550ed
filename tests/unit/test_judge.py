"""The comparative canary-versus-stable judge: its statistic, its boundaries and the alpha
it spends across tests, exact counts from cumulative counters, its state, one measurement
end to end, its false-alarm rate over an hour and its speed by simulation (the controller's
own path and the benchmark's fast path, shown identical), and the judge block of the
AnalysisTemplate model."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.judge_simulation import SCENARIOS, Scenario, draw, fast_path, real_path, wilson
from controller.api.analysis import ComparativeJudge
from controller.api.rollout import Measurement
from controller.api.validation import validate_document
from controller.core.judge import (
    FORGET_AFTER,
    Counts,
    JudgeAnswers,
    JudgeSettings,
    JudgeState,
    TestState,
    advance,
    decide,
    interval_llr,
    judge,
    judge_measurement,
    resume,
    series_key,
    update,
)
from controller.core.measurement import QueryResponse, Series
from tests.support.invalid_cases import Case
from tests.support.judge_cases import JUDGE_CASES, judge_template

SETTINGS = JudgeSettings()  # alpha 0.05, beta 0.05, tolerance 0, worse ratio 2, 100 requests
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def binomial_llr(counts: Counts, settings: JudgeSettings) -> float:
    """The log-likelihood ratio written out as two binomial log-likelihoods."""
    n, x, m, y = (
        counts.canary_requests,
        counts.canary_errors,
        counts.stable_requests,
        counts.stable_errors,
    )
    t = x + y

    def loglik(rho: float) -> float:
        p = rho * n / (rho * n + m)
        return x * math.log(p) + (t - x) * math.log(1 - p)

    return loglik(settings.rho1) - loglik(settings.rho0)


@given(
    st.integers(1, 10_000),
    st.integers(0, 200),
    st.integers(1, 10_000),
    st.integers(0, 200),
    st.floats(0.0, 0.5),
)
def test_closed_form_matches_the_binomial_likelihood(
    n: int, x: int, m: int, y: int, tolerance: float
) -> None:
    """interval_llr is log L(rho1) - log L(rho0) of Binomial(t, rho n / (rho n + m))."""
    counts = Counts(n, min(x, n), m, min(y, m))
    settings = JudgeSettings(tolerance=tolerance, worse_ratio=2.0 + tolerance)
    assert interval_llr(counts, settings) == pytest.approx(
        binomial_llr(counts, settings), rel=1e-9, abs=1e-9
    )


@pytest.mark.parametrize(
    "counts",
    [
        pytest.param(Counts(0, 0, 800, 8), id="no-canary-traffic"),
        pytest.param(Counts(200, 2, 0, 0), id="no-stable-traffic"),
        pytest.param(Counts(200, 0, 800, 0), id="no-errors-anywhere"),
        pytest.param(Counts(0, 0, 0, 0), id="nothing"),
        pytest.param(Counts(-5, -1, -3, -2), id="negative-counts"),
    ],
)
def test_intervals_without_evidence_add_nothing(counts: Counts) -> None:
    """Zero traffic or zero errors carries no evidence: the LLR does not move."""
    assert interval_llr(counts, SETTINGS) == 0.0
    assert update(TestState(), counts, SETTINGS).verdict == "Continue"


def test_counts_are_cleaned() -> None:
    """Negative counts become 0 and errors are capped at the requests."""
    assert Counts(-1, 5, 10, 20).clean() == Counts(0, 0, 10, 10)


@pytest.mark.parametrize(
    ("intervals", "verdict", "says"),
    [
        pytest.param(
            [Counts(200, 12, 800, 8)] * 2, "Fail", "worse than stable", id="6x-worse-fails"
        ),
        pytest.param(
            [Counts(200, 2, 800, 8)] * 20, "Pass", "not worse than stable", id="equal-passes"
        ),
        pytest.param(
            [Counts(200, 2, 800, 8)], "Continue", "need more data", id="one-quiet-interval"
        ),
        pytest.param(
            [Counts(200, 0, 800, 0)] * 50,
            "Continue",
            "need more data",
            id="no-errors-never-decides",
        ),
        pytest.param(
            [Counts(20, 6, 0, 0)] * 50, "Continue", "need more data", id="no-stable-no-comparison"
        ),
        pytest.param([Counts(500, 10, 500, 0)] * 4, "Fail", "ratio +Inf", id="only-canary-errs"),
    ],
)
def test_verdicts(intervals: list[Counts], verdict: str, says: str) -> None:
    """One test decides as its boundaries say, stopping at its first verdict."""
    decision = judge(intervals, SETTINGS)
    assert decision.verdict == verdict, decision.message
    assert says in decision.message


@pytest.mark.parametrize("test", [1, 2, 3, 10, 100])
def test_the_kth_test_fails_at_log_pi2_k2_over_6_alpha(test: int) -> None:
    """Test k fails exactly at LLR >= log(pi^2 k^2 / (6 alpha)); every test passes at
    log(beta) once it has minRequests."""
    fail_at = math.log(math.pi**2 * test**2 / (6 * 0.05))
    enough = {"canary_requests": 1000.0, "test": test}
    assert decide(TestState(llr=fail_at, **enough), SETTINGS).verdict == "Fail"
    assert decide(TestState(llr=fail_at - 1e-9, **enough), SETTINGS).verdict == "Continue"
    assert decide(TestState(llr=math.log(0.05), **enough), SETTINGS).verdict == "Pass"
    assert decide(TestState(llr=math.log(0.05) + 1e-9, **enough), SETTINGS).verdict == "Continue"


def test_the_alpha_spent_by_all_tests_adds_up_to_at_most_alpha() -> None:
    """The Ville bounds exp(-boundary) of tests 1, 2, ... sum to alpha, never more."""
    spent = math.fsum(math.exp(-SETTINGS.fail_at(k)) for k in range(1, 200_001))
    assert 0.05 * 0.9999 < spent <= 0.05


@pytest.mark.parametrize(
    ("llr", "verdict"),
    [pytest.param(-5.0, "Pass", id="pass"), pytest.param(9.0, "Fail", id="fail")],
)
def test_a_verdict_starts_the_next_test_of_the_run(llr: float, verdict: str) -> None:
    """After a Pass or a Fail the test restarts with no evidence and its number one higher."""
    decision = decide(TestState(test=4, llr=llr, intervals=7, canary_requests=700.0), SETTINGS)
    assert decision.verdict == verdict
    assert decision.state == TestState(test=5, passed=verdict == "Pass")
    assert decision.decided.intervals == 7


def test_pass_waits_for_min_requests_but_fail_does_not() -> None:
    """Strong evidence of a good canary still waits for minRequests; a bad one fails at once."""
    few = TestState(llr=-10.0, canary_requests=99.0)
    assert decide(few, SETTINGS).verdict == "Continue"
    assert "waiting for 100 canary requests" in decide(few, SETTINGS).message
    assert decide(TestState(llr=-10.0, canary_requests=100.0), SETTINGS).verdict == "Pass"
    assert decide(TestState(llr=10.0, canary_requests=1.0), SETTINGS).verdict == "Fail"


def test_decision_reports_effect_size_and_evidence() -> None:
    """The message carries both rates, their ratio and difference, and the test's LLR."""
    decision = update(TestState(), Counts(1000, 30, 1000, 10), SETTINGS)
    assert "canary 3% (30/1000) vs stable 1% (10/1000): ratio 3, difference +2 pp" in (
        decision.message
    )
    assert "test 1: LLR" in decision.message
    assert "fail at 3.49" in decision.message


# -- exact counts ------------------------------------------------------------------------


def s(pod: str, value: float) -> Series:
    """A series of one pod."""
    return Series((("pod", pod),), value, repr(value))


def key(pod: str) -> str:
    """The state key of a pod's series."""
    return series_key(s(pod, 0))


@pytest.mark.parametrize(
    ("before", "now", "increase"),
    [
        pytest.param({"a": 100.0}, [("a", 130.0)], 30.0, id="grows"),
        pytest.param({"a": 100.0}, [("a", 100.0)], 0.0, id="unchanged"),
        pytest.param({"a": 100.0}, [("a", 12.0)], 12.0, id="restarted-counts-from-zero"),
        pytest.param({"a": 100.0}, [("a", 110.0), ("b", 7.0)], 17.0, id="new-pod-counts-whole"),
        pytest.param({"a": 100.0, "b": 5.0}, [("a", 110.0)], 10.0, id="missing-pod-adds-nothing"),
        pytest.param({"a": 100.0}, [("a", math.nan)], 0.0, id="nan-is-no-reading"),
        pytest.param({}, [], 0.0, id="nothing"),
    ],
)
def test_counter_increases_are_exact(
    before: dict[str, float], now: list[tuple[str, float]], increase: float
) -> None:
    """advance() takes each series' own increase, counting a restarted process from 0."""
    readings = {key(p): (v, 0) for p, v in before.items()}
    got, _ = advance(readings, [s(p, v) for p, v in now], baseline=False)
    assert got == increase


def test_the_baseline_reads_and_counts_nothing() -> None:
    """The first reading of a run only remembers the counters."""
    got, readings = advance({}, [s("a", 1000.0), s("b", 5.0)], baseline=True)
    assert got == 0.0
    assert readings == {key("a"): (1000.0, 0), key("b"): (5.0, 0)}


def test_a_series_that_vanishes_and_returns_counts_only_its_increase() -> None:
    """A failed scrape hides a series (a stale marker); when it comes back, its history is
    not counted again, unless it was gone for FORGET_AFTER measurements."""
    _, readings = advance({}, [s("a", 1000.0)], baseline=True)
    for _ in range(FORGET_AFTER - 1):
        got, readings = advance(readings, [], baseline=False)
        assert got == 0.0
    assert readings[key("a")] == (1000.0, FORGET_AFTER - 1)
    got, back = advance(readings, [s("a", 1010.0)], baseline=False)
    assert got == 10.0
    assert back[key("a")] == (1010.0, 0)
    _, gone = advance(readings, [], baseline=False)
    assert gone == {}


# -- the state ---------------------------------------------------------------------------


@given(
    st.integers(1, 10**6),
    st.floats(-1e6, 1e6),
    *[st.floats(0, 1e12) for _ in range(4)],
    st.dictionaries(st.text(min_size=1, max_size=12), st.floats(0, 1e15), max_size=5),
)
def test_state_text_round_trips(
    test: int, llr: float, cr: float, ce: float, sr: float, se: float, series: dict[str, float]
) -> None:
    """A state written into a measurement's value reads back exactly."""
    state = JudgeState(
        errors=TestState(test, llr, 3, cr, ce, sr, se, True),
        readings={"cr": {k: (v, 2) for k, v in series.items()}},
        last=(cr, ce, sr, se),
    )
    assert JudgeState.from_text(state.to_text()) == state


@pytest.mark.parametrize("phase", ["NoData", "Error", "Successful", "Failed"])
def test_resume_continues_the_run_after_any_measurement(phase: Any) -> None:
    """Whatever the latest measurement's phase, the next continues its tests and readings
    (a Pass no longer starts the count of tests over); an unreadable value starts afresh."""
    state = JudgeState(errors=TestState(test=3), readings={"cr": {"k": (5.0, 0)}})
    previous = Measurement(phase=phase, value=state.to_text(), started_at=NOW)
    assert resume(previous) == state
    garbage = Measurement(phase=phase, value="llr=1 intervals=2", started_at=NOW)
    assert resume(garbage) == JudgeState()
    assert resume(None) == JudgeState()


# -- one measurement ---------------------------------------------------------------------


def vector(*values: tuple[str, float]) -> QueryResponse:
    """A vector answer, one series per (pod, value)."""
    return QueryResponse.ok(
        "vector", [{"metric": {"pod": p}, "value": [1.0, repr(v)]} for p, v in values]
    )


EMPTY = QueryResponse.ok("vector", [])
COUNTS = {
    "canary": {"requests": "sum by (pod) (cr)", "errors": "sum by (pod) (ce)"},
    "stable": {"requests": "sum by (pod) (sr)", "errors": "sum by (pod) (se)"},
}
SPEC = ComparativeJudge.model_validate(COUNTS)
WITH_LATENCY = ComparativeJudge.model_validate(
    {
        **COUNTS,
        "latency": {
            "canary": {"requests": "sum by (pod) (lcr)", "slow": "sum by (pod) (lcs)"},
            "stable": {"requests": "sum by (pod) (lsr)", "slow": "sum by (pod) (lss)"},
        },
    }
)


class Counters:
    """Cumulative counters of one canary pod and one stable pod, advanced per interval."""

    def __init__(self) -> None:
        self.values = {"cr": 5000.0, "ce": 50.0, "sr": 9000.0, "se": 90.0}
        self.values |= {"lcr": 5000.0, "lcs": 50.0, "lsr": 9000.0, "lss": 90.0}

    def add(self, **counts: float) -> None:
        """Serve ``counts`` more (cr=200, ce=2, ...)."""
        for name, value in counts.items():
            self.values[name] += value

    def answers(self, **override: QueryResponse) -> JudgeAnswers:
        """Every query's answer now."""
        pods = {"c": ("cr", "ce", "lcr", "lcs"), "s": ("sr", "se", "lsr", "lss")}
        got = {q: vector((pod, self.values[q])) for pod, qs in pods.items() for q in qs}
        got |= override
        return JudgeAnswers(got["cr"], got["ce"], got["sr"], got["se"], got["lcr"],
                            got["lcs"], got["lsr"], got["lss"])  # fmt: skip


def step(spec: ComparativeJudge, counters: Counters, previous: Measurement | None) -> Measurement:
    """One measurement, fed back as the runtime does."""
    return judge_measurement("judge", spec, counters.answers(), previous).measurement(NOW)


def state_of(m: Measurement) -> JudgeState:
    """The state a measurement carries."""
    state = JudgeState.from_text(m.value)
    assert state is not None
    return state


def test_the_first_measurement_is_the_baseline() -> None:
    """The run's first measurement reads the counters and judges nothing, even when the
    counters already hold a history of errors (older data never judges the new run)."""
    counters = Counters()
    counters.add(ce=4000.0)
    first = step(SPEC, counters, None)
    assert first.phase == "NoData"
    assert "baseline: counters read (canary requests 1" in first.message
    assert state_of(first).errors == TestState()


def test_each_interval_counts_exactly_what_was_served() -> None:
    """The counts judged are the counters' increases, pod restarts included."""
    counters = Counters()
    previous = step(SPEC, counters, None)
    counters.add(cr=200, ce=2, sr=800, se=8)
    previous = step(SPEC, counters, previous)
    assert state_of(previous).last == (200.0, 2.0, 800.0, 8.0)
    counters.values["cr"], counters.values["ce"] = 150.0, 1.0  # the canary pod restarted
    counters.add(sr=800, se=8)
    previous = step(SPEC, counters, previous)
    assert state_of(previous).last == (150.0, 1.0, 800.0, 8.0)
    assert state_of(previous).errors.canary_requests == 350.0


def test_an_empty_error_answer_counts_as_zero_errors() -> None:
    """An error counter that has no series yet means no errors, not no data."""
    counters = Counters()
    previous = step(SPEC, counters, None)
    counters.add(cr=200, sr=800)
    answers = counters.answers(ce=EMPTY, se=EMPTY)
    outcome = judge_measurement("judge", SPEC, answers, previous)
    assert outcome.phase == "NoData"
    state = JudgeState.from_text(outcome.value)
    assert state is not None
    assert state.last == (200.0, 0.0, 800.0, 0.0)


def test_a_failed_query_is_an_error_and_the_next_reading_counts_everything_since() -> None:
    """A provider error keeps the state; the next good measurement counts both intervals."""
    counters = Counters()
    previous = step(SPEC, counters, None)
    counters.add(cr=200, ce=2, sr=800, se=8)
    broken = counters.answers(ce=QueryResponse.failed("unreachable", "refused"))
    error = judge_measurement("judge", SPEC, broken, previous)
    assert error.phase == "Error"
    assert error.message == "judge: canary errors: query failed (unreachable): refused"
    assert error.value == previous.value
    counters.add(cr=200, ce=2, sr=800, se=8)
    after = step(SPEC, counters, error.measurement(NOW))
    assert state_of(after).last == (400.0, 4.0, 1600.0, 16.0)


def test_too_many_series_is_an_error_naming_the_fix() -> None:
    """An unaggregated query (one series per path, per code, ...) is refused with a hint."""
    many = vector(*[(f"p{i}", 1.0) for i in range(201)])
    counters = Counters()
    outcome = judge_measurement("judge", SPEC, counters.answers(cr=many), None)
    assert outcome.phase == "Error"
    assert "returned 201 series" in outcome.message
    assert "sum by (pod)" in outcome.message


def test_a_worse_canary_fails_and_a_good_one_passes_through_measurements() -> None:
    """Six times the errors fails within a few intervals; equal rates pass, the run goes
    on, and the next test is number 2."""
    bad, good = Counters(), Counters()
    bad_m, good_m = step(SPEC, bad, None), step(SPEC, good, None)
    phases: list[str] = []
    for _ in range(20):
        bad.add(cr=200, ce=12, sr=800, se=8)
        bad_m = step(SPEC, bad, bad_m)
        good.add(cr=200, ce=2, sr=800, se=8)
        good_m = step(SPEC, good, good_m)
        phases.append(good_m.phase)
        if bad_m.phase == "Failed":
            break
    assert bad_m.phase == "Failed", bad_m.message
    assert bad_m.message.startswith("judge: error rate worse than stable")
    for _ in range(20):
        good.add(cr=200, ce=2, sr=800, se=8)
        good_m = step(SPEC, good, good_m)
        phases.append(good_m.phase)
    assert "Successful" in phases
    assert "Failed" not in phases
    assert state_of(good_m).errors.test > 1


def test_latency_is_a_second_test_with_half_of_alpha() -> None:
    """With latency, each test has alpha/2; a canary with many slow requests fails on
    latency alone; Successful needs both tests to have passed."""
    assert JudgeSettings.errors(WITH_LATENCY).alpha == 0.025
    assert JudgeSettings.latency(WITH_LATENCY).alpha == 0.025
    assert JudgeSettings.errors(SPEC).alpha == 0.05
    slow = Counters()
    m = step(WITH_LATENCY, slow, None)
    for _ in range(10):
        slow.add(cr=200, ce=2, sr=800, se=8, lcr=200, lcs=20, lsr=800, lss=8)
        m = step(WITH_LATENCY, slow, m)
        if m.phase != "NoData":
            break
    assert m.phase == "Failed", m.message
    assert m.message.startswith("judge: slow requests worse than stable")
    fine = Counters()
    m = step(WITH_LATENCY, fine, None)
    seen = []
    for _ in range(40):
        fine.add(cr=200, ce=2, sr=800, se=8, lcr=200, lcs=2, lsr=800, lss=8)
        m = step(WITH_LATENCY, fine, m)
        state = state_of(m)
        seen.append(m.phase)
        if m.phase == "Successful":
            assert not state.errors.passed
            assert not state.latency.passed
    assert "Successful" in seen
    assert "Failed" not in seen


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"alpha": 0.0}, id="alpha-zero"),
        pytest.param({"beta": 1.0}, id="beta-one"),
        pytest.param({"tolerance": -0.1}, id="negative-tolerance"),
        pytest.param({"tolerance": 1.0, "worse_ratio": 2.0}, id="ratio-not-above-rho0"),
        pytest.param({"min_requests": -1.0}, id="negative-min-requests"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, float]) -> None:
    """Impossible settings are rejected when they are made."""
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        JudgeSettings(**kwargs)


# -- simulation ----------------------------------------------------------------------------

HEALTHY = SCENARIOS[0]
STEPS = SCENARIOS[1]


def test_false_alarms_over_an_hour_stay_within_alpha() -> None:
    """2,000 seeded healthy canaries measured every 10 s for an hour, with weight steps:
    the upper 95% bound of the false-alarm rate is within alpha."""
    for scenario in (HEALTHY, STEPS):
        failed = fast_path(scenario, draw(scenario, 2000, np.random.default_rng(11)))
        assert wilson(int(np.isfinite(failed).sum()), 2000)[1] <= 0.05, scenario.name


def test_the_old_construction_fails_half_the_healthy_canaries() -> None:
    """Restarting a full-alpha test after every Pass (the old judge) is what the spending
    fixes: it fails far more than alpha of healthy canaries in an hour."""
    old = Scenario("old", "", spend=False)
    failed = fast_path(old, draw(old, 1000, np.random.default_rng(12)))
    assert np.isfinite(failed).mean() > 0.3


def test_twice_the_error_rate_is_caught_within_minutes() -> None:
    """2x worse: 95% of 1,000 seeded canaries fail within 6 minutes (36 intervals)."""
    twice = SCENARIOS[5]
    failed = fast_path(twice, draw(twice, 1000, np.random.default_rng(13)))
    assert (failed <= 36).mean() >= 0.95


@pytest.mark.parametrize("scenario", [STEPS, SCENARIOS[8], SCENARIOS[10]], ids=lambda s: s.name)
def test_the_fast_path_is_the_controller_path(scenario: Scenario) -> None:
    """On the same draws, the benchmark's vectorised judge fails each canary at the same
    interval as judge_measurement + analysis.record fed their own previous measurement
    (with a pod restart and a pod that appears mid-run)."""
    d = draw(scenario, 6, np.random.default_rng(14))
    fast = fast_path(scenario, d)
    assert [real_path(scenario, d, run) for run in range(6)] == list(fast)


# -- the model -------------------------------------------------------------------------


def test_a_judge_metric_is_valid_without_thresholds() -> None:
    """A judge metric needs no thresholdRange or condition."""
    assert validate_document(judge_template()) == []


@pytest.mark.parametrize("case", JUDGE_CASES, ids=lambda c: c.id)
def test_judge_blocks_are_validated(case: Case) -> None:
    """Lint rejects judge metrics that mix in thresholds, misuse the options or ask for a
    windowed count."""
    problems = validate_document(case.doc)
    assert problems
    assert any(p.field.startswith(case.field) for p in problems), problems


def test_a_windowed_count_is_refused_with_the_reason() -> None:
    """increase()/rate() over {{interval}} is refused, saying what to write instead."""
    doc = judge_template(
        provider={
            "judge": {
                **COUNTS,
                "canary": {"requests": "sum(increase(x[{{interval}}]))", "errors": "e"},
            }
        }
    )
    (problem,) = validate_document(doc)
    assert "cumulative counter" in problem.reason
    assert "increase() is extrapolated" in problem.reason


def test_an_old_quantile_latency_block_is_refused_with_the_new_shape() -> None:
    """A latency block from before (two quantile queries) is refused, naming the new form."""
    doc = judge_template(
        provider={"judge": {**COUNTS, "latency": {"canary": "histogram_quantile(...)",
                                                   "stable": "histogram_quantile(...)"}}}
    )  # fmt: skip
    problems = validate_document(doc)
    assert problems
    assert "{requests, slow} cumulative counts" in problems[0].reason
