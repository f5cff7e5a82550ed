"""Judging one query answer against one metric: every result shape, every criterion,
the minSamples guard."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.analysis import Metric
from controller.core.measurement import (
    Outcome,
    QueryResponse,
    evaluate,
    evaluate_samples,
    fmt,
    measure,
    read_series,
    total,
)

T = 1_795_000_000.0


def metric(**fields: Any) -> Metric:
    """A metric named success-rate with the given criteria."""
    fields.setdefault("provider", {"prometheus": {"query": "q"}})
    if not {"thresholdRange", "successCondition", "failureCondition"} & set(fields):
        fields["thresholdRange"] = {"min": 0.99}
    return Metric.model_validate({"name": "success-rate", **fields})


def scalar(value: str) -> QueryResponse:
    """A scalar answer."""
    return QueryResponse.ok("scalar", [T, value])


def vector(*values: str, labels: list[dict[str, str]] | None = None) -> QueryResponse:
    """A vector answer, one series per value (labels pod=p0, p1, ... by default)."""
    names = labels or [{"pod": f"p{i}"} for i in range(len(values))]
    return QueryResponse.ok(
        "vector", [{"metric": m, "value": [T, v]} for m, v in zip(names, values, strict=True)]
    )


AT_LEAST_99 = metric()
AT_MOST_HALF = metric(thresholdRange={"max": 0.5})


@pytest.mark.parametrize(
    ("response", "m", "phase", "value", "says"),
    [
        pytest.param(scalar("0.995"), AT_LEAST_99, "Successful", "0.995", "", id="scalar-pass"),
        pytest.param(
            scalar("0.98"), AT_LEAST_99, "Failed", "0.98", "below thresholdRange.min 0.99",
            id="scalar-fail",
        ),
        pytest.param(
            vector("0.999", labels=[{}]), AT_LEAST_99, "Successful", "0.999", "",
            id="vector-one-series-pass",
        ),
        pytest.param(
            vector("0.5", labels=[{}]), AT_LEAST_99, "Failed", "0.5", "0.5 is below",
            id="vector-one-series-fail",
        ),
        pytest.param(
            vector("0.995", "0.999"), AT_LEAST_99, "Successful", "[0.995, 0.999]", "",
            id="several-series-all-pass",
        ),
        pytest.param(
            vector("0.995", "0.9"), AT_LEAST_99, "Failed", "[0.995, 0.9]", '{pod="p1"}',
            id="several-series-one-fails",
        ),
        pytest.param(
            vector(), AT_LEAST_99, "NoData", None, "empty vector", id="empty-vector-is-nodata"
        ),
        pytest.param(scalar("NaN"), AT_LEAST_99, "NoData", "NaN", "blind", id="nan-is-nodata"),
        pytest.param(
            vector("NaN", labels=[{}]), AT_LEAST_99, "NoData", "NaN", "0/0",
            id="nan-vector-is-nodata",
        ),
        pytest.param(
            vector("0.999", "NaN"), AT_LEAST_99, "NoData", "[0.999, NaN]", "1 of 2 series are NaN",
            id="partly-nan-never-passes",
        ),
        pytest.param(
            vector("0.5", "NaN"), AT_LEAST_99, "Failed", "[0.5, NaN]", '{pod="p0"}',
            id="partly-nan-still-fails",
        ),
        pytest.param(
            scalar("+Inf"), AT_MOST_HALF, "Failed", "+Inf", "above thresholdRange.max 0.5",
            id="plus-inf-breaks-max",
        ),
        pytest.param(
            scalar("+Inf"), AT_LEAST_99, "Successful", "+Inf", "", id="plus-inf-meets-min"
        ),
        pytest.param(
            scalar("-Inf"), AT_LEAST_99, "Failed", "-Inf", "below", id="minus-inf-breaks-min"
        ),
        pytest.param(
            QueryResponse.ok("matrix", [{"metric": {}, "values": [[T, "1"], [T + 1, "2"]]}]),
            AT_LEAST_99, "Error", None, "range vector (matrix)", id="matrix-is-rejected",
        ),
        pytest.param(
            QueryResponse.ok("matrix", []), AT_LEAST_99, "Error", None, "range vector",
            id="empty-matrix-is-rejected",
        ),
        pytest.param(
            QueryResponse.ok("string", [T, "hello"]), AT_LEAST_99, "Error", None, "a string",
            id="string-is-rejected",
        ),
        pytest.param(
            QueryResponse.ok(
                "vector", [{"metric": {}, "histogram": [T, {"count": "3", "sum": "1"}]}]
            ),
            AT_LEAST_99, "Error", None, "native histogram", id="native-histogram-is-rejected",
        ),
        pytest.param(
            QueryResponse.failed(
                "bad_data",
                'Prometheus answered HTTP 400 (bad_data): invalid parameter "query": 1:16: '
                "parse error: unclosed left parenthesis",
                400,
            ),
            AT_LEAST_99, "Error", None, "success-rate: query failed (bad_data): Prometheus "
            'answered HTTP 400 (bad_data): invalid parameter "query": 1:16: parse error',
            id="promql-syntax-error",
        ),
        pytest.param(
            QueryResponse.failed("timeout", "no answer from http://p:9090 within 10.0s"),
            AT_LEAST_99, "Error", None, "success-rate: query failed (timeout)", id="timeout",
        ),
        pytest.param(
            QueryResponse.failed("unreachable", "cannot connect: [Errno 111] Connection refused"),
            AT_LEAST_99, "Error", None, "Connection refused", id="unreachable",
        ),
        pytest.param(
            QueryResponse(), AT_LEAST_99, "Error", None, "unknown result type None",
            id="neither-result-nor-error",
        ),
        pytest.param(
            QueryResponse.ok("vector", {"not": "a list"}), AT_LEAST_99, "Error", None,
            "malformed vector", id="malformed-vector",
        ),
        pytest.param(
            QueryResponse.ok("vector", [{"metric": {}, "value": [T, "abc"]}]), AT_LEAST_99,
            "Error", None, "malformed vector sample", id="value-not-a-number",
        ),
        pytest.param(
            QueryResponse.ok("scalar", "1"), AT_LEAST_99, "Error", None, "malformed scalar",
            id="malformed-scalar",
        ),
    ],
)  # fmt: skip
def test_every_result_shape_has_a_stated_outcome(
    response: QueryResponse, m: Metric, phase: str, value: str | None, says: str
) -> None:
    """Each shape of answer gets the phase, value and message the module docstring states."""
    outcome = evaluate(response, m)
    assert (outcome.phase, outcome.value) == (phase, value), outcome
    assert says in outcome.message
    if phase != "Successful":
        assert outcome.message.startswith("success-rate: ")


@pytest.mark.parametrize(
    ("m", "response", "phase", "says"),
    [
        pytest.param(
            metric(successCondition="result >= 0.99"), scalar("0.995"), "Successful", "",
            id="success-condition-holds",
        ),
        pytest.param(
            metric(successCondition="result >= 0.99"), scalar("0.9"), "Failed",
            "successCondition 'result >= 0.99' does not hold for the result 0.9",
            id="success-condition-fails",
        ),
        pytest.param(
            metric(failureCondition="result < 0.9"), scalar("0.5"), "Failed",
            "failureCondition 'result < 0.9' holds", id="failure-condition-holds",
        ),
        pytest.param(
            metric(failureCondition="result < 0.9"), scalar("0.95"), "Successful", "",
            id="failure-condition-misses",
        ),
        pytest.param(
            metric(successCondition="result >= 0.99", failureCondition="result < 0.9"),
            scalar("0.95"), "Inconclusive", "neither successCondition", id="neither-holds",
        ),
        pytest.param(
            metric(successCondition="result >= 0.99", failureCondition="result < 0.9"),
            scalar("0.5"), "Failed", "failureCondition", id="both-failure-wins",
        ),
        pytest.param(
            metric(successCondition="result >= 0.99", failureCondition="result < 0.9"),
            scalar("0.999"), "Successful", "", id="both-success",
        ),
        pytest.param(
            metric(thresholdRange={"min": 0.99}, successCondition="result < 2"), scalar("0.5"),
            "Failed", "thresholdRange.min", id="range-and-condition-both-apply",
        ),
        pytest.param(
            metric(thresholdRange={"min": 0.1, "max": 0.2}), scalar("0.2"), "Successful", "",
            id="range-bounds-inclusive",
        ),
        pytest.param(
            metric(successCondition="result > 0.5"), vector("0.7", "0.1"), "Failed",
            '1 of 2 series: {pod="p1"}=0.1', id="each-series-must-pass",
        ),
        pytest.param(
            metric(failureCondition="result > 0.5"), vector("0.7", "0.1"), "Failed",
            '1 of 2 series: {pod="p0"}=0.7', id="any-series-fails",
        ),
        pytest.param(
            metric(successCondition="all(result > 0.5)"), vector("0.7", "0.1"), "Failed",
            "the result [0.7, 0.1]", id="vector-reduced",
        ),
        pytest.param(
            metric(successCondition="len(result) == 2 and result[0] > result[1]"),
            vector("0.7", "0.1"), "Successful", "", id="vector-aware-condition",
        ),
        pytest.param(
            metric(successCondition="result[3] > 0"), vector("0.7", "0.1"), "Error",
            "cannot evaluate the condition: index 3 is out of range", id="index-out-of-range",
        ),
        pytest.param(
            metric(successCondition="__import__('os')"), scalar("1"), "Error",
            "calling __import__() is not allowed", id="unsafe-condition",
        ),
        pytest.param(
            metric(successCondition="result"), scalar("1"), "Error", "gives a number",
            id="condition-not-boolean",
        ),
    ],
)  # fmt: skip
def test_criteria_combine_as_documented(
    m: Metric, response: QueryResponse, phase: str, says: str
) -> None:
    """failureCondition, thresholdRange and successCondition combine in the documented order."""
    outcome = evaluate(response, m)
    assert outcome.phase == phase, outcome
    assert says in outcome.message


@pytest.mark.parametrize(
    ("response", "minimum", "phase", "message"),
    [
        pytest.param(scalar("12"), 50, "NoData", "too little traffic: 12 < 50", id="below"),
        pytest.param(scalar("50"), 50, "Successful", "", id="at-minimum"),
        pytest.param(vector("30", "25"), 50, "Successful", "", id="series-are-summed"),
        pytest.param(
            vector(), 50, "NoData", "too little traffic: 0 < 50", id="empty-is-zero"
        ),
        pytest.param(
            scalar("NaN"), 1, "NoData", "too little traffic: 0 < 1", id="nan-is-zero"
        ),
        pytest.param(
            scalar("12.5"), 50, "NoData", "too little traffic: 12.5 < 50", id="fraction"
        ),
        pytest.param(
            QueryResponse.failed("unreachable", "refused"), 50, "Error",
            "query failed (unreachable): refused", id="error",
        ),
        pytest.param(
            QueryResponse.ok("matrix", []), 50, "Error", "range vector", id="matrix",
        ),
    ],
)  # fmt: skip
def test_min_samples_guard(
    response: QueryResponse, minimum: float, phase: str, message: str
) -> None:
    """Too little traffic is NoData (held by onNoData), never Failed; an error stays an Error."""
    outcome = evaluate_samples(response, minimum)
    assert outcome.phase == phase
    assert message in outcome.message


def test_measure_applies_the_guard_before_judging() -> None:
    """A failing value with too little traffic is NoData (held), not Failed."""
    m = metric(minSamples={"query": "sum(x)", "min": 50})
    guarded = measure(scalar("0.2"), m, samples=scalar("12"))
    assert guarded == Outcome("NoData", "12", "success-rate: too little traffic: 12 < 50")
    assert measure(scalar("0.2"), m, samples=scalar("120")).phase == "Failed"
    assert measure(scalar("0.2"), m).phase == "Error"  # the guard's answer is missing
    assert measure(scalar("0.999"), metric()).phase == "Successful"  # no guard


def test_outcome_becomes_a_measurement() -> None:
    """The runtime stamps an Outcome with its times."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    m = Outcome("Failed", "0.5", "why").measurement(now, now + dt.timedelta(seconds=1))
    assert (m.phase, m.value, m.message, m.started_at) == ("Failed", "0.5", "why", now)


def test_series_are_sorted_by_labels_and_counted() -> None:
    """read_series orders series by label set; total sums them, skipping NaN."""
    resp = vector("2", "NaN", "1", labels=[{"pod": "b"}, {"pod": "c"}, {"pod": "a"}])
    series = read_series(resp)
    assert not isinstance(series, Outcome)
    assert [s.describe() for s in series] == ['{pod="a"}', '{pod="b"}', '{pod="c"}']
    assert total(resp) == 3.0


@pytest.mark.parametrize(
    ("value", "text"),
    [(12.0, "12"), (0.125, "0.125"), (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf")],
)
def test_fmt(value: float, text: str) -> None:
    """Numbers in messages: whole numbers bare, NaN and infinities as Prometheus writes them."""
    assert fmt(value) == text


@given(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
def test_threshold_range_property(value: float, a: float, b: float) -> None:
    """A finite value is Successful exactly when it lies in [min, max]."""
    low, high = min(a, b), max(a, b)
    m = metric(thresholdRange={"min": low, "max": high})
    outcome = evaluate(scalar(repr(value)), m)
    assert (outcome.phase == "Successful") == (low <= value <= high)
    assert outcome.phase in ("Successful", "Failed")


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=5) | st.integers(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(st.sampled_from(["scalar", "vector", "matrix", "string"]), _JSON)
def test_any_answer_gets_a_phase_and_never_raises(kind: Any, result: Any) -> None:
    """Whatever JSON the adapter hands over, evaluate returns an Outcome (no exception)."""
    outcome = evaluate(QueryResponse.ok(kind, result), AT_LEAST_99)
    assert outcome.phase in ("Successful", "Failed", "Inconclusive", "Error", "NoData")
