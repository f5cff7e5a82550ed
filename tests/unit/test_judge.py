"""The comparative canary-versus-stable judge: its statistic, its boundaries, its state,
the latency check, one measurement end to end, its false-alarm rate and power by
simulation, and the judge block of the AnalysisTemplate model."""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.judge_simulation import Scenario, run_once, simulate
from controller.api.analysis import ComparativeJudge
from controller.api.rollout import Measurement
from controller.api.validation import validate_document
from controller.core.judge import (
    Counts,
    JudgeAnswers,
    JudgeSettings,
    JudgeState,
    compare_latency,
    decide,
    interval_llr,
    judge,
    judge_measurement,
    resume,
    update,
)
from controller.core.measurement import QueryResponse
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
    assert update(JudgeState(), counts, SETTINGS).verdict == "Continue"


def test_counts_are_cleaned() -> None:
    """Negative counts become 0 and errors are capped at the requests."""
    assert Counts(-1, 5, 10, 20).clean() == Counts(0, 0, 10, 10)


@pytest.mark.parametrize(
    ("intervals", "verdict", "says"),
    [
        pytest.param(
            [Counts(200, 12, 800, 8)] * 2, "Fail", "canary error rate worse", id="6x-worse-fails"
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
        pytest.param([Counts(500, 10, 500, 0)] * 3, "Fail", "ratio +Inf", id="only-canary-errs"),
    ],
)
def test_verdicts(intervals: list[Counts], verdict: str, says: str) -> None:
    """The sequential test decides as the boundaries say, stopping at the first verdict."""
    decision = judge(intervals, SETTINGS)
    assert decision.verdict == verdict, decision.message
    assert says in decision.message


def test_fail_and_pass_boundaries_are_log_one_over_alpha_and_log_beta() -> None:
    """Fail exactly at LLR >= log(1/alpha); Pass at LLR <= log(beta) once traffic suffices."""
    fail_at, pass_at = -math.log(0.05), math.log(0.05)
    enough = {"canary_requests": 1000.0}
    assert decide(JudgeState(llr=fail_at, **enough), SETTINGS).verdict == "Fail"
    assert decide(JudgeState(llr=fail_at - 1e-9, **enough), SETTINGS).verdict == "Continue"
    assert decide(JudgeState(llr=pass_at, **enough), SETTINGS).verdict == "Pass"
    assert decide(JudgeState(llr=pass_at + 1e-9, **enough), SETTINGS).verdict == "Continue"


def test_pass_waits_for_min_requests_but_fail_does_not() -> None:
    """Strong evidence of a good canary still waits for minRequests; a bad one fails at once."""
    few = JudgeState(llr=-10.0, canary_requests=99.0)
    assert decide(few, SETTINGS).verdict == "Continue"
    assert "waiting for 100 canary requests" in decide(few, SETTINGS).message
    assert decide(JudgeState(llr=-10.0, canary_requests=100.0), SETTINGS).verdict == "Pass"
    assert decide(JudgeState(llr=10.0, canary_requests=1.0), SETTINGS).verdict == "Fail"


def test_decision_reports_effect_size_and_evidence() -> None:
    """The decision carries rates, their ratio and difference, and the LLR with bounds."""
    decision = update(JudgeState(), Counts(1000, 30, 1000, 10), SETTINGS)
    assert decision.canary_rate == pytest.approx(0.03)
    assert decision.stable_rate == pytest.approx(0.01)
    assert decision.ratio == pytest.approx(3.0)
    assert decision.difference == pytest.approx(0.02)
    assert "ratio 3, difference +2 pp" in decision.message
    assert "LLR" in decision.message
    assert "fail at 3" in decision.message


@given(
    st.floats(-1e6, 1e6),
    st.integers(0, 10**6),
    *[st.floats(0, 1e12) for _ in range(4)],
)
def test_state_text_round_trips(
    llr: float, n: int, cr: float, ce: float, sr: float, se: float
) -> None:
    """A state written into a measurement's value reads back (6 significant digits of LLR)."""
    state = JudgeState(llr, n, cr, ce, sr, se)
    back = JudgeState.from_text(state.to_text())
    assert back is not None
    assert back.intervals == n
    assert back.llr == pytest.approx(llr, rel=1e-5, abs=1e-5)
    assert (back.canary_requests, back.canary_errors) == pytest.approx((cr, ce), rel=1e-9)
    assert (back.stable_requests, back.stable_errors) == pytest.approx((sr, se), rel=1e-9)


@pytest.mark.parametrize(
    ("phase", "value", "fresh"),
    [
        pytest.param(
            "NoData", "llr=1.5 intervals=3 canary=3/600 stable=6/2400", False, id="continue"
        ),
        pytest.param("Error", "llr=1.5 intervals=3 canary=3/600 stable=6/2400", False, id="error"),
        pytest.param(
            "Failed", "llr=3.5 intervals=4 canary=9/800 stable=6/3200", True, id="after-fail"
        ),
        pytest.param(
            "Successful", "llr=-3.5 intervals=9 canary=1/1800 stable=9/7200", True, id="after-pass"
        ),
        pytest.param("NoData", "garbage", True, id="unreadable"),
    ],
)
def test_resume(phase: Any, value: str, fresh: bool) -> None:
    """The test continues after Continue or an Error, and starts over after a verdict."""
    previous = Measurement(phase=phase, value=value, started_at=NOW)
    state = resume(previous)
    assert (state == JudgeState()) is fresh
    assert resume(None) == JudgeState()


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        pytest.param(0.120, 0.100, "Fail", id="20pc-slower-fails"),
        pytest.param(0.108, 0.100, "Pass", id="8pc-slower-passes"),
        pytest.param(0.112, 0.100, "Pass", id="slack-absorbs-noise"),
        pytest.param(0.001, 0.0, "Pass", id="tiny-latencies-slack"),
        pytest.param(math.nan, 0.1, "Continue", id="canary-nan"),
        pytest.param(0.1, math.nan, "Continue", id="stable-nan"),
        pytest.param(math.inf, 0.1, "Fail", id="canary-beyond-buckets"),
        pytest.param(math.inf, math.inf, "Continue", id="both-beyond-buckets"),
    ],
)
def test_latency_comparison(canary: float, stable: float, verdict: str) -> None:
    """Canary latency may be at most stable * 1.1 + 5 ms."""
    assert compare_latency(canary, stable, tolerance=0.1, slack=0.005).verdict == verdict


# -- one measurement -------------------------------------------------------------------


def count(value: float) -> QueryResponse:
    """A one-series vector answer."""
    return QueryResponse.ok("vector", [{"metric": {}, "value": [1.0, repr(value)]}])


EMPTY = QueryResponse.ok("vector", [])
SPEC = ComparativeJudge.model_validate(
    {
        "canary": {"requests": "cr", "errors": "ce"},
        "stable": {"requests": "sr", "errors": "se"},
        "latency": {"canary": "cl", "stable": "sl", "tolerance": 0.1, "slack": "5ms"},
    }
)


def answers(
    cr: float, ce: QueryResponse | float, sr: float, se: QueryResponse | float, **extra: Any
) -> JudgeAnswers:
    """Answers for the four counts (and optional latencies)."""
    latency = {"canary_latency": count(0.1), "stable_latency": count(0.1)} | extra
    return JudgeAnswers(
        count(cr),
        ce if isinstance(ce, QueryResponse) else count(ce),
        count(sr),
        se if isinstance(se, QueryResponse) else count(se),
        **latency,
    )


def test_measurements_carry_the_test_forward() -> None:
    """Continue is NoData with the state as value; the next look resumes it; Fail is Failed."""
    first = judge_measurement("errors", SPEC, answers(200, 8, 800, 8), None)
    assert first.phase == "NoData"
    assert first.value is not None
    assert first.value.startswith("llr=")
    assert "need more data after 1 interval(s)" in first.message
    previous = first.measurement(NOW)
    second = judge_measurement("errors", SPEC, answers(200, 8, 800, 8), previous)
    assert second.phase == "Failed", second.message
    assert second.message.startswith("errors: canary error rate worse than stable")
    assert "intervals=2" in (second.value or "")


def test_an_empty_error_answer_counts_as_zero_errors() -> None:
    """An error counter that has no series yet means no errors, not no data."""
    outcome = judge_measurement("errors", SPEC, answers(200, EMPTY, 800, EMPTY), None)
    assert outcome.phase == "NoData"
    assert "canary=0/200 stable=0/800" in (outcome.value or "")


def test_a_failed_query_is_an_error_that_keeps_the_state() -> None:
    """A provider error does not touch the test's state."""
    previous = Measurement(
        phase="NoData", value="llr=2 intervals=1 canary=8/200 stable=8/800", started_at=NOW
    )
    broken = QueryResponse.failed("unreachable", "refused")
    outcome = judge_measurement("errors", SPEC, answers(200, broken, 800, 8), previous)
    assert outcome.phase == "Error"
    assert outcome.message == "errors: canary errors: query failed (unreachable): refused"
    restored = JudgeState.from_text(previous.value)
    assert restored is not None
    assert outcome.value == restored.to_text()


@pytest.mark.parametrize(
    ("canary_latency", "phase", "says"),
    [
        pytest.param(count(0.2), "Failed", "canary slower", id="slow-canary-fails"),
        pytest.param(EMPTY, "NoData", "no latency data", id="no-latency-data-holds"),
        pytest.param(
            QueryResponse.ok(
                "vector",
                [
                    {"metric": {"pod": "a"}, "value": [1, "1"]},
                    {"metric": {"pod": "b"}, "value": [1, "1"]},
                ],
            ),
            "Error",
            "returned 2 series",
            id="unaggregated-latency",
        ),
    ],
)
def test_latency_joins_the_verdict(canary_latency: QueryResponse, phase: str, says: str) -> None:
    """A slow canary fails even with equal error rates; missing latency holds a Pass back."""
    previous = Measurement(
        phase="NoData", value="llr=-10 intervals=9 canary=18/1800 stable=72/7200", started_at=NOW
    )
    outcome = judge_measurement(
        "errors", SPEC, answers(200, 2, 800, 8, canary_latency=canary_latency), previous
    )
    assert outcome.phase == phase, outcome.message
    assert says in outcome.message


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


# -- simulation ------------------------------------------------------------------------

RUNS = 2000
#: Canaries at 20% of 1000 requests per interval, 1% stable errors (bench's main case).
HEALTHY = Scenario("healthy", 0.01, 0.01)
TWICE = Scenario("twice the errors", 0.02, 0.01)
DETECTION_BOUND = 25


def test_false_alarm_rate_stays_within_alpha() -> None:
    """Over 2,000 seeded healthy canaries, Fail happens at most alpha + 3 standard errors."""
    summary = simulate(HEALTHY, SETTINGS, RUNS, seed=11)
    standard_error = math.sqrt(SETTINGS.alpha * (1 - SETTINGS.alpha) / RUNS)
    assert summary.fail_rate <= SETTINGS.alpha + 3 * standard_error, summary


def test_twice_the_error_rate_is_detected_within_the_bound() -> None:
    """Of 2,000 seeded canaries with twice the errors, at least 95% fail within 25 intervals."""
    # bench/judge_simulation.py measures a median of 5 and a p95 of 15 intervals
    rng = random.Random(12)  # noqa: S311 - a simulation
    runs = [run_once(TWICE, SETTINGS, rng) for _ in range(RUNS)]
    detected = sum(1 for verdict, at in runs if verdict == "Fail" and at <= DETECTION_BOUND)
    assert detected / RUNS >= 0.95, detected / RUNS


# -- the model -------------------------------------------------------------------------


def test_a_judge_metric_is_valid_without_thresholds() -> None:
    """A judge metric needs no thresholdRange or condition."""
    assert validate_document(judge_template()) == []


@pytest.mark.parametrize("case", JUDGE_CASES, ids=lambda c: c.id)
def test_judge_blocks_are_validated(case: Case) -> None:
    """Lint rejects judge metrics that mix in thresholds or misuse the options."""
    problems = validate_document(case.doc)
    assert problems
    assert any(p.field.startswith(case.field) for p in problems), problems
