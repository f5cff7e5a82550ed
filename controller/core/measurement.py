"""One query answer judged against one metric: the measurement of canary analysis.

Where it sits in the flow::

    analysis.due() ─▶ runtime renders the query (core.promql.render)
                  ─▶ adapters.prometheus runs it and fills a QueryResponse (never raises)
                  ─▶ measure()/evaluate() here: QueryResponse + Metric ─▶ Outcome
                  ─▶ runtime stamps the times (Outcome.measurement) ─▶ analysis.record()

The adapter reports *what Prometheus said*; this module alone decides *what it means*.
Every shape of answer has a stated outcome:

=================================  ==========================================================
answer                             outcome
=================================  ==========================================================
``scalar`` ``[t, "0.99"]``         judged as one value
``vector`` with one series         judged as one value
``vector`` with several series     judged per series: Successful only if **each** series
                                   passes; Failed if any fails (the message names it)
``vector`` that is empty           NoData: nothing matched (no traffic yet, a label typo);
                                   the metric's ``onNoData`` decides (default Hold)
value ``NaN``                      NoData, never Failed: ``0/0`` (no requests in the
                                   window) is *blind*, not *bad*. With several series, the
                                   non-NaN ones are still judged: a failure among them is
                                   Failed; otherwise the measurement is NoData (a partly
                                   blind measurement never passes)
value ``+Inf`` / ``-Inf``          compared as numbers: Prometheus produces them for real
                                   reasons (``histogram_quantile`` beyond the largest
                                   bucket, ``x/0`` with ``x > 0``), and their order is
                                   meaningful (``+Inf`` breaks any ``max``)
``matrix`` (range vector)          Error: an instant query returns one only for a bare
                                   range selector such as ``x[5m]``; that is a query
                                   mistake (a missing ``rate()`` or ``*_over_time()``),
                                   and judging some sample of it would judge the wrong
                                   thing silently
``string``                         Error: not a number
native-histogram sample            Error: not a number (use ``histogram_quantile`` etc.)
error ``bad_data`` (HTTP 400)      Error; the message names the metric and carries
                                   Prometheus's own text (for example ``1:16: parse error:
                                   unclosed left parenthesis``)
error ``execution`` (HTTP 422)     Error, likewise (for example many-to-many matching)
``timeout`` / ``unreachable`` /    Error with the adapter's explanation; the metric's
``tls`` / ``auth`` / ``http`` ...  ``consecutiveErrorLimit`` and ``onProviderError`` decide
a malformed answer                 Error (``bad_response``)
=================================  ==========================================================

How the criteria combine (on the values that are not NaN), checked in this order:

====================================================  ======================================
criterion                                             outcome
====================================================  ======================================
``failureCondition`` holds for any series             Failed
a series lies outside ``thresholdRange`` [min, max]   Failed (bounds inclusive)
``successCondition`` holds for every series           Successful
``successCondition`` fails, no ``failureCondition``   Failed
``successCondition`` fails, ``failureCondition``      Inconclusive (neither holds: a person
given but it did not hold either                      decides, as in Argo Rollouts)
no ``successCondition`` (and nothing failed)          Successful
a condition that cannot be evaluated                  Error (names the metric and the reason)
====================================================  ======================================

``minSamples`` is a guard checked first (:func:`evaluate_samples`): its query's series
are summed (an empty answer or NaN counts as zero traffic) and below ``min`` the
measurement is NoData ("too little traffic: 12 < 50", governed by ``onNoData``), never
Failed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from controller.api.analysis import Metric
from controller.api.rollout import Measurement, MeasurementPhase
from controller.core import expr

ResultType = Literal["scalar", "vector", "matrix", "string"]
ErrorKind = Literal[
    "timeout",  # the query ran out of time (client deadline or Prometheus's own timeout)
    "canceled",  # Prometheus canceled the query
    "unreachable",  # no connection (refused, reset, DNS)
    "tls",  # the TLS handshake failed (certificate, CA)
    "auth",  # 401/403, or the credentials could not be read
    "throttled",  # 429 beyond the retry budget
    "bad_data",  # 400: Prometheus rejected the query (PromQL syntax error, bad parameter)
    "execution",  # 422: the query failed while running
    "internal",  # 500 with a Prometheus error payload
    "unavailable",  # 503 with a Prometheus error payload
    "http",  # any other HTTP error status
    "bad_response",  # an answer that is not the Prometheus API's JSON
    "client",  # anything unexpected inside the client (still never raised)
]

MAX_VALUES_SHOWN: Final = 10


@dataclass(frozen=True)
class QueryError:
    """Why a query gave no result."""

    kind: ErrorKind
    """A short machine-readable reason."""
    message: str
    """The explanation, including Prometheus's own error text when it sent one."""
    status: int | None = None
    """The HTTP status, when there was an HTTP answer."""


@dataclass(frozen=True)
class QueryResponse:
    """What the adapter got back: a result of a type, or an error. Filled by the adapter,
    read here; it carries the ``data.result`` JSON of the Prometheus HTTP API as is."""

    result_type: ResultType | None = None
    """``data.resultType`` of the answer."""
    result: Any = None
    """``data.result`` of the answer (JSON)."""
    error: QueryError | None = None
    """Set when there is no result."""
    warnings: tuple[str, ...] = ()
    """Warnings Prometheus attached to a successful answer."""

    @classmethod
    def ok(
        cls, result_type: ResultType, result: Any, warnings: tuple[str, ...] = ()
    ) -> QueryResponse:
        """A successful answer."""
        return cls(result_type=result_type, result=result, warnings=warnings)

    @classmethod
    def failed(cls, kind: ErrorKind, message: str, status: int | None = None) -> QueryResponse:
        """A failed query."""
        return cls(error=QueryError(kind, message, status))


@dataclass(frozen=True)
class Series:
    """One value of an answer with the labels of its series."""

    labels: tuple[tuple[str, str], ...]
    value: float
    text: str
    """The value as Prometheus wrote it (``0.995``, ``NaN``, ``+Inf``)."""

    def describe(self) -> str:
        """The label set in PromQL notation, ``{}`` for none."""
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels if k != "__name__")
        name = dict(self.labels).get("__name__", "")
        return f"{name}{{{inner}}}"


@dataclass(frozen=True)
class Outcome:
    """A judged measurement without its timestamps."""

    phase: MeasurementPhase
    value: str | None = None
    message: str = ""
    error_kind: ErrorKind | None = None
    """For an Error from a failed query, its kind (``timeout`` ...); the runtime's
    measuring pool opens a provider's breaker on timeouts. Not part of the status."""

    def measurement(
        self, started_at: dt.datetime, finished_at: dt.datetime | None = None
    ) -> Measurement:
        """The status record of this outcome."""
        return Measurement(
            phase=self.phase,
            value=self.value,
            message=self.message,
            started_at=started_at,
            finished_at=finished_at,
        )


# -- reading an answer -----------------------------------------------------------------


def read_series(response: QueryResponse) -> tuple[Series, ...] | Outcome:
    """The values of an answer, sorted by label set, or the Outcome that ends the
    measurement (Error, or NoData for an empty vector). Messages here do not yet name
    the metric."""
    if response.error is not None:
        err = response.error
        return Outcome("Error", None, f"query failed ({err.kind}): {err.message}", err.kind)
    kind = response.result_type
    result = response.result
    if kind == "scalar":
        sample = _sample(result)
        if sample is None:
            return _malformed("scalar")
        return (Series((), *sample),)
    if kind == "vector":
        if not isinstance(result, list):
            return _malformed("vector")
        if not result:
            return Outcome("NoData", None, "the query returned an empty vector (no series)")
        series: list[Series] = []
        for item in result:
            one = _vector_item(item)
            if isinstance(one, Outcome):
                return one
            series.append(one)
        return tuple(sorted(series, key=lambda s: s.labels))
    if kind == "matrix":
        return Outcome(
            "Error",
            None,
            "the query returned a range vector (matrix); an instant query needs a single "
            "value per series: wrap the range selector in rate(), increase() or an "
            "*_over_time() function",
        )
    if kind == "string":
        return Outcome("Error", None, "the query returned a string, not a number")
    return Outcome("Error", None, f"query failed (bad_response): unknown result type {kind!r}")


def _malformed(what: str) -> Outcome:
    return Outcome("Error", None, f"query failed (bad_response): malformed {what} in the answer")


def _sample(value: Any) -> tuple[float, str] | None:
    if not isinstance(value, list | tuple) or len(value) != 2 or not isinstance(value[1], str):
        return None
    try:
        return float(value[1]), value[1]
    except ValueError:
        return None


def _vector_item(item: Any) -> Series | Outcome:
    if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
        return _malformed("vector sample")
    labels = tuple(sorted((str(k), str(v)) for k, v in item.get("metric", {}).items()))
    if "value" not in item and "histogram" in item:
        return Outcome(
            "Error",
            None,
            "the query returned a native histogram sample, not a number: use "
            "histogram_quantile(), histogram_count() or histogram_sum()",
        )
    sample = _sample(item.get("value"))
    if sample is None:
        return _malformed("vector sample")
    return Series(labels, *sample)


def total(response: QueryResponse) -> float | Outcome:
    """The sum of an answer's values as a count: an empty vector and NaN count as zero
    (nothing was counted). Errors, matrices and strings give an Error Outcome."""
    series = read_series(response)
    if isinstance(series, Outcome):
        return 0.0 if series.phase == "NoData" else series
    return math.fsum(s.value for s in series if not math.isnan(s.value))


# -- judging ---------------------------------------------------------------------------


def evaluate(response: QueryResponse, metric: Metric) -> Outcome:
    """Judge an answer against the metric's thresholdRange and conditions (see the
    module docstring for every shape and rule)."""
    series = read_series(response)
    if isinstance(series, Outcome):
        return _named(series, metric.name)
    shown = _values_text(series)
    blind = [s for s in series if math.isnan(s.value)]
    seen = [s for s in series if not math.isnan(s.value)]
    if not seen:
        return Outcome(
            "NoData",
            shown,
            f"{metric.name}: the query returned NaN (for example 0/0: no requests in the "
            "window); blind, not bad",
        )
    judged = _judge(metric, tuple(seen))
    if blind and judged.phase not in ("Failed", "Error"):
        names = ", ".join(s.describe() for s in blind[:MAX_VALUES_SHOWN])
        return Outcome(
            "NoData",
            shown,
            f"{metric.name}: {len(blind)} of {len(series)} series are NaN (no data): {names}; "
            "a partly blind measurement does not pass",
        )
    return Outcome(judged.phase, shown, judged.message)


def evaluate_samples(response: QueryResponse, minimum: float, *, metric: str = "") -> Outcome:
    """The ``minSamples`` guard: NoData while the summed count is below ``minimum``
    ("too little traffic: 12 < 50"), Successful with the count otherwise. Too little
    traffic is blindness, not a verdict: it falls under ``onNoData`` (Hold by default),
    so a quiet canary neither passes nor pauses for a person."""
    count = total(response)
    if isinstance(count, Outcome):
        return _named(count, metric) if metric else count
    prefix = f"{metric}: " if metric else ""
    if count < minimum:
        return Outcome(
            "NoData",
            fmt(count),
            f"{prefix}too little traffic: {fmt(count)} < {fmt(minimum)}",
        )
    return Outcome("Successful", fmt(count), "")


def measure(
    response: QueryResponse, metric: Metric, samples: QueryResponse | None = None
) -> Outcome:
    """The whole measurement: the ``minSamples`` guard (when the metric has one, on the
    ``samples`` answer), then :func:`evaluate`."""
    if metric.min_samples is not None:
        if samples is None:
            return Outcome(
                "Error", None, f"{metric.name}: the minSamples query was not run (no answer)"
            )
        guard = evaluate_samples(samples, metric.min_samples.min, metric=metric.name)
        if guard.phase != "Successful":
            return guard
    return evaluate(response, metric)


def _judge(metric: Metric, series: tuple[Series, ...]) -> Outcome:
    values = tuple(s.value for s in series)
    try:
        if metric.failure_condition is not None:
            hits = _where(expr.parse(metric.failure_condition).evaluate(values), series)
            if hits:
                return failure_held(metric, _which(hits, series))
        for s in series:
            outside = outside_range(metric, s.value, f"{s.text}{_of(s, series)}")
            if outside is not None:
                return outside
        if metric.success_condition is not None:
            held = expr.parse(metric.success_condition).evaluate(values)
            misses = _where(_negate(held), series)
            if misses:
                return success_missed(metric, _which(misses, series))
    except expr.ExpressionError as exc:
        return unevaluable(metric, exc)
    return Outcome("Successful", None, "")


# -- the verdicts of a metric's conditions, shared with the web provider -----------------


def failure_held(metric: Metric, what: str) -> Outcome:
    """Failed: the failureCondition holds for ``what`` (the result, or the series)."""
    return Outcome(
        "Failed",
        None,
        f"{metric.name}: failureCondition {metric.failure_condition!r} holds for {what}",
    )


def outside_range(metric: Metric, value: float, shown: str) -> Outcome | None:
    """Failed when ``value`` (written ``shown``) lies outside the metric's thresholdRange;
    None when it lies within, or the metric has none."""
    if metric.threshold_range is None:
        return None
    low, high = metric.threshold_range.min, metric.threshold_range.max
    if low is not None and not value >= low:
        return Outcome(
            "Failed", None, f"{metric.name}: {shown} is below thresholdRange.min {fmt(low)}"
        )
    if high is not None and not value <= high:
        return Outcome(
            "Failed", None, f"{metric.name}: {shown} is above thresholdRange.max {fmt(high)}"
        )
    return None


def success_missed(metric: Metric, what: str) -> Outcome:
    """The successCondition does not hold for ``what``: Inconclusive when a failureCondition
    is set (it did not hold either), Failed without one."""
    if metric.failure_condition is not None:
        return Outcome(
            "Inconclusive",
            None,
            f"{metric.name}: neither successCondition {metric.success_condition!r} "
            f"nor failureCondition {metric.failure_condition!r} holds",
        )
    return Outcome(
        "Failed",
        None,
        f"{metric.name}: successCondition {metric.success_condition!r} does not hold for {what}",
    )


def unevaluable(metric: Metric, exc: expr.ExpressionError) -> Outcome:
    """Error: a condition of the metric cannot be evaluated on the result."""
    return Outcome("Error", None, f"{metric.name}: cannot evaluate the condition: {exc}")


def _negate(held: bool | tuple[bool, ...]) -> bool | tuple[bool, ...]:
    return (not held) if isinstance(held, bool) else tuple(not h for h in held)


def _where(held: bool | tuple[bool, ...], series: tuple[Series, ...]) -> list[int]:
    """Indexes of the series for which ``held`` is true ([-1] for a single true that
    does not belong to one series)."""
    if isinstance(held, bool):
        return [-1] if held else []
    if len(held) == len(series):
        return [i for i, h in enumerate(held) if h]
    return [-1] if any(held) else []


def _which(hits: list[int], series: tuple[Series, ...]) -> str:
    if hits == [-1] or all(not s.labels for s in series):
        return "the result " + _values_text(series)
    parts = [f"{series[i].describe()}={series[i].text}" for i in hits[:MAX_VALUES_SHOWN]]
    more = f" and {len(hits) - MAX_VALUES_SHOWN} more" if len(hits) > MAX_VALUES_SHOWN else ""
    return f"{len(hits)} of {len(series)} series: " + ", ".join(parts) + more


def _of(s: Series, series: tuple[Series, ...]) -> str:
    return f" ({s.describe()})" if len(series) > 1 or s.labels else ""


def _values_text(series: tuple[Series, ...]) -> str:
    if len(series) == 1:
        return series[0].text
    shown = [s.text for s in series[:MAX_VALUES_SHOWN]]
    more = f", +{len(series) - MAX_VALUES_SHOWN} more" if len(series) > MAX_VALUES_SHOWN else ""
    return "[" + ", ".join(shown) + more + "]"


def _named(outcome: Outcome, metric: str) -> Outcome:
    return replace(outcome, message=f"{metric}: {outcome.message}")


def fmt(value: float) -> str:
    """A number for a message: whole numbers without a point, others with 6 digits,
    NaN and infinities as Prometheus writes them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
