r"""The comparative judge: is the canary worse than the stable (more errors, or more slow
requests), over the same stretches of time? Sequential tests that may decide at every
measurement and, over the whole life of an analysis run, fail a canary that is not worse
with probability at most ``alpha``.

Where it sits: a metric whose provider is ``judge`` (see
:class:`controller.api.analysis.ComparativeJudge`) is measured by four queries (eight with
``latency``), all evaluated at the same instant. Each returns a **cumulative** counter, one
series per process. The adapter runs them; :func:`judge_measurement` turns the answers and
the metric's latest measurement into an Outcome. Everything the judge carries from one
measurement to the next (the counter readings, the running test) is a :class:`JudgeState`,
written as JSON into the measurement's ``value`` (:meth:`JudgeState.to_text`) and read
back by :func:`resume`, so a restarted controller continues the same test.

Exact counts
------------

``increase(x[w])`` is extrapolated to the window: with a 15 s scrape and ``w = 30s`` it can
double the counts, and the evidence with them. So the judge never asks for a window. At
each measurement it reads every series' counter and differences it itself
(:func:`advance`):

* a series seen before: its increase since then; a value lower than before is a restarted
  process, whose counter started again from 0, so the increase is the new value;
* a series not seen before in this run: all of it (a pod started since the last reading);
  at the run's first measurement every series is only read: that measurement is the
  baseline and judges nothing, so a run judges only requests served after it started;
* a series missing from an answer (a failed scrape writes a stale marker, a pod went) is
  remembered for :data:`FORGET_AFTER` measurements, so that when it comes back only its
  increase counts, never its whole history again.

The counts are then exact: every request a scrape saw between two measurements is counted
once, in the interval in which Prometheus first saw it, whatever the scrape interval.

The test on one interval
------------------------

In interval :math:`i` the canary serves :math:`n_i` requests with :math:`x_i` errors and
the stable :math:`m_i` with :math:`y_i`. Model the errors as independent Poisson counts
with rates :math:`\lambda^c_i, \lambda^s_i` per request and let
:math:`\rho = \lambda^c_i / \lambda^s_i`. Conditioning on the interval's total
:math:`t_i = x_i + y_i` removes the unknown, possibly drifting, shared baseline:

.. math::

    x_i \mid t_i \sim \mathrm{Binomial}\bigl(t_i,\ \pi_i(\rho)\bigr),\qquad
    \pi_i(\rho) = \frac{\rho\, n_i}{\rho\, n_i + m_i},

with each interval's own share :math:`n_i/(n_i+m_i)`, so weight steps change nothing. A
test of :math:`H_0: \rho \le \rho_0 = 1 + \mathrm{tolerance}` against
:math:`H_1: \rho \ge \rho_1 = \mathrm{worseRatio}` adds up the log-likelihood ratio

.. math::

    \Lambda = \sum_i \Bigl[ x_i \log\frac{\rho_1}{\rho_0}
                + t_i \log\frac{\rho_0 n_i + m_i}{\rho_1 n_i + m_i} \Bigr].

Under :math:`H_0`, :math:`e^{\Lambda}` is a non-negative supermartingale with mean at most
1, so by Ville's inequality it ever reaches :math:`1/a` with probability at most
:math:`a`, however many intervals are looked at.

One guarantee over the whole run: alpha spent across tests
----------------------------------------------------------

A test ends with **Pass** when :math:`\Lambda \le \log\beta` and the canary has served
``minRequests`` requests in it (the canary is shown not worse than the tolerance), or with
**Fail** when it reaches its boundary. A background run, and a step run with ``count`` above
1, keep measuring after a Pass; a fresh test then starts, so that a regression that begins
later is not masked by the evidence gathered while the canary was good. Restarting with
the same boundary would spend ``alpha`` again with every test (55% false alarms in an hour
at 10 s intervals). Instead the :math:`k`-th test of a run fails at

.. math::

    \Lambda \ge \log\frac{\pi^2 k^2}{6\,\alpha},\qquad\text{so that}\qquad
    \sum_{k \ge 1} \frac{6\,\alpha}{\pi^2 k^2} = \alpha,

and by the union bound a canary that is not worse is failed by *any* test of the run with
probability at most ``alpha``: whatever the number of intervals, passes, weight steps or
controller restarts (the test number is in the state). A Fail ends the run unless
``failureLimit`` allows more; the next test is then numbered on, so the bound is on the
first failure either way.

With ``latency``, the slow requests (slower than the threshold the queries name) are
judged by a second test of the same kind, on the same intervals, with its own tolerance and
worseRatio; ``alpha`` is split evenly between the two, so the metric keeps the bound. A
measurement is Successful when every test has passed since the previous Successful one,
Failed when any test fails, and otherwise NoData ("need more data": the analysis holds).

Assumptions, and what breaks them:

* *Independence*: errors are independent given the rates. Correlated bursts inside one arm
  (one bad pod, a retry storm) raise the false-alarm rate; bursts shared by both arms (a
  dependency failing for everyone) do not, as each interval is conditioned on its own
  total.
* *Poisson versus binomial*: with binomial counts and equal rates, :math:`x_i \mid t_i` is
  hypergeometric, less dispersed than the binomial used here, so the bound stays
  conservative at :math:`\rho = 1`.
* *Aligned intervals*: both arms are read at the same instant, each at its last scrape;
  the two scrapes may be up to one scrape interval apart, a negligible shift at steady
  rates.
* *Zero traffic*: an interval with no canary or stable requests, or no errors at all,
  carries no evidence and changes nothing; a canary is never failed for lack of traffic
  and never passed before ``minRequests``. When neither revision ever errs the test cannot
  tell them apart and keeps saying NoData: pair it with an absolute error-rate metric.

Measured by ``python -m bench.judge_simulation`` (the README's judge section has the table
and its conditions).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from controller.api.analysis import ComparativeJudge
from controller.api.rollout import Measurement, MeasurementPhase
from controller.core.measurement import Outcome, QueryResponse, Series, fmt, read_series

Verdict = Literal["Pass", "Fail", "Continue"]

FORGET_AFTER: Final = 30
"""Measurements a series may be missing from its answers before the judge forgets it."""
MAX_SERIES: Final = 200
"""Series one count query may return (aggregate by pod or instance)."""


@dataclass(frozen=True)
class Counts:
    """Requests and errors (or slow requests) of both revisions over one interval."""

    canary_requests: float
    canary_errors: float
    stable_requests: float
    stable_errors: float

    def clean(self) -> Counts:
        """Negative counts as 0, errors at most the requests."""
        cr = max(0.0, self.canary_requests)
        sr = max(0.0, self.stable_requests)
        return Counts(
            cr, min(cr, max(0.0, self.canary_errors)), sr, min(sr, max(0.0, self.stable_errors))
        )


@dataclass(frozen=True)
class JudgeSettings:
    """One test's parameters (see the module docstring)."""

    alpha: float = 0.05
    """Highest probability that any test of a run fails a canary that is not worse."""
    beta: float = 0.05
    """Highest probability that one test passes a canary ``worse_ratio`` times worse."""
    tolerance: float = 0.0
    """Relative increase still counted as not worse (rho0 = 1 + it)."""
    worse_ratio: float = 2.0
    """The ratio the test is tuned to detect (rho1)."""
    min_requests: float = 100.0
    """Canary requests needed in a test before it may pass."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0 or not 0.0 < self.beta < 1.0:
            raise ValueError("alpha and beta must lie strictly between 0 and 1")
        if self.tolerance < 0.0:
            raise ValueError("tolerance must not be negative")
        if self.worse_ratio <= self.rho0:
            raise ValueError(f"worse_ratio must exceed 1 + tolerance ({fmt(self.rho0)})")
        if self.min_requests < 0.0:
            raise ValueError("min_requests must not be negative")

    @property
    def rho0(self) -> float:
        """The ratio of the null hypothesis (not worse)."""
        return 1.0 + self.tolerance

    @property
    def rho1(self) -> float:
        """The ratio of the alternative (worse)."""
        return self.worse_ratio

    def fail_at(self, test: int = 1) -> float:
        """The fail boundary of the ``test``-th test of a run: log(pi^2 k^2 / (6 alpha))."""
        return math.log(math.pi**2 * test * test / (6.0 * self.alpha))

    @property
    def pass_at(self) -> float:
        """The pass boundary of every test: log(beta)."""
        return math.log(self.beta)

    @classmethod
    def errors(cls, spec: ComparativeJudge) -> JudgeSettings:
        """The error test a template's judge block asks for (half of alpha with latency)."""
        return cls(
            alpha=spec.alpha / 2 if spec.latency is not None else spec.alpha,
            beta=spec.beta,
            tolerance=spec.tolerance,
            worse_ratio=spec.worse_ratio,
            min_requests=float(spec.min_requests),
        )

    @classmethod
    def latency(cls, spec: ComparativeJudge) -> JudgeSettings:
        """The slow-request test (the other half of alpha)."""
        assert spec.latency is not None
        return cls(
            alpha=spec.alpha / 2,
            beta=spec.beta,
            tolerance=spec.latency.tolerance,
            worse_ratio=spec.latency.worse_ratio,
            min_requests=float(spec.min_requests),
        )


# -- one sequential test ---------------------------------------------------------------


@dataclass(frozen=True)
class TestState:
    """One running test: its number in the run, its evidence and its counts so far."""

    __test__ = False  # not a pytest class

    test: int = 1
    """Which test of the run this is (1 for the first); sets the fail boundary."""
    llr: float = 0.0
    """The log-likelihood ratio of this test so far."""
    intervals: int = 0
    """Intervals counted in this test."""
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    stable_requests: float = 0.0
    stable_errors: float = 0.0
    passed: bool = False
    """A test of this kind passed since the last Successful measurement."""

    def wire(self) -> list[Any]:
        """The JSON form (a list, to keep the status small)."""
        return [self.test, self.llr, self.intervals, self.canary_requests, self.canary_errors,
                self.stable_requests, self.stable_errors, int(self.passed)]  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> TestState:
        """Read :meth:`wire` back (ValueError for anything else)."""
        if not isinstance(raw, list) or len(raw) != 8:
            raise ValueError("not a test state")
        test, llr, intervals, cr, ce, sr, se, passed = raw
        return cls(int(test), float(llr), int(intervals), float(cr), float(ce), float(sr),
                   float(se), bool(passed))  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """One test after one interval: the verdict, the test (already restarted after a
    verdict), and the numbers behind it."""

    verdict: Verdict
    state: TestState
    """The test to continue with: after Pass or Fail, the next test of the run."""
    decided: TestState
    """The test as it stood when it decided (or continues)."""
    boundary: float
    """The fail boundary the test was held against."""
    message: str


def interval_llr(counts: Counts, settings: JudgeSettings) -> float:
    """One interval's log-likelihood ratio (0 when it carries no evidence)."""
    c = counts.clean()
    errors = c.canary_errors + c.stable_errors
    if c.canary_requests <= 0.0 or c.stable_requests <= 0.0 or errors <= 0.0:
        return 0.0
    n, m = c.canary_requests, c.stable_requests
    rho0, rho1 = settings.rho0, settings.rho1
    return c.canary_errors * math.log(rho1 / rho0) + errors * math.log(
        (rho0 * n + m) / (rho1 * n + m)
    )


def update(state: TestState, counts: Counts, settings: JudgeSettings) -> Decision:
    """Add one interval to the running test and decide; after a Pass or a Fail the
    returned ``state`` is the next test of the run (its number one higher)."""
    c = counts.clean()
    new = replace(
        state,
        llr=state.llr + interval_llr(c, settings),
        intervals=state.intervals + 1,
        canary_requests=state.canary_requests + c.canary_requests,
        canary_errors=state.canary_errors + c.canary_errors,
        stable_requests=state.stable_requests + c.stable_requests,
        stable_errors=state.stable_errors + c.stable_errors,
    )
    return decide(new, settings)


def decide(state: TestState, settings: JudgeSettings) -> Decision:
    """The verdict for a test's state (the boundaries of the module docstring)."""
    boundary = settings.fail_at(state.test)
    evidence = (
        f"test {state.test}: LLR {state.llr:.3g} (fail at {boundary:.3g}, "
        f"pass at {settings.pass_at:.3g})"
    )
    effect = _effect(state)
    if state.llr >= boundary:
        return Decision(
            "Fail",
            TestState(test=state.test + 1, passed=state.passed),
            state,
            boundary,
            f"worse than stable (alpha {fmt(settings.alpha)}); {effect}; {evidence}",
        )
    if state.llr <= settings.pass_at and state.canary_requests >= settings.min_requests:
        return Decision(
            "Pass",
            TestState(test=state.test + 1, passed=True),
            state,
            boundary,
            f"not worse than stable within tolerance {fmt(settings.tolerance)}; {effect}; "
            f"{evidence}",
        )
    need = (
        f"; waiting for {fmt(settings.min_requests)} canary requests"
        if state.canary_requests < settings.min_requests
        else ""
    )
    return Decision(
        "Continue",
        state,
        state,
        boundary,
        f"need more data after {state.intervals} interval(s){need}; {effect}; {evidence}",
    )


def judge(intervals: Iterable[Counts], settings: JudgeSettings) -> Decision:
    """Run one test over intervals from the start; stops at its first Pass or Fail."""
    decision = decide(TestState(), settings)
    for counts in intervals:
        decision = update(decision.state, counts, settings)
        if decision.verdict != "Continue":
            break
    return decision


def _effect(state: TestState) -> str:
    canary = _rate(state.canary_errors, state.canary_requests)
    stable = _rate(state.stable_errors, state.stable_requests)
    text = (
        f"canary {_pct(canary)} ({fmt(state.canary_errors)}/{fmt(state.canary_requests)}) "
        f"vs stable {_pct(stable)} ({fmt(state.stable_errors)}/{fmt(state.stable_requests)})"
    )
    if canary is not None and stable is not None and (canary > 0.0 or stable > 0.0):
        ratio = canary / stable if stable > 0.0 else math.inf
        text += f": ratio {fmt(ratio)}, difference {(canary - stable) * 100:+.3g} pp"
    return text


def _rate(errors: float, requests: float) -> float | None:
    return errors / requests if requests > 0.0 else None


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.3g}%"


# -- exact counts from cumulative counters ---------------------------------------------

Reading = tuple[float, int]
"""A series' last counter value and how many measurements it has been missing since."""


def series_key(series: Series) -> str:
    """A short stable name for a series' label set (its state is keyed by it)."""
    text = ",".join(f"{k}={v}" for k, v in series.labels)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def advance(
    readings: Mapping[str, Reading], series: Iterable[Series], *, baseline: bool
) -> tuple[float, dict[str, Reading]]:
    """The exact increase of a counter query since ``readings``, and the new readings.

    See "Exact counts" in the module docstring; with ``baseline`` the series are only
    read (the increase is 0).
    """
    new: dict[str, Reading] = {}
    increase = 0.0
    for s in series:
        if math.isnan(s.value) or math.isinf(s.value):
            continue
        key = series_key(s)
        before = readings.get(key)
        if not baseline:
            if before is None or s.value < before[0]:
                increase += s.value
            else:
                increase += s.value - before[0]
        new[key] = (s.value, 0)
    for key, (value, missing) in readings.items():
        if key not in new and missing + 1 < FORGET_AFTER:
            new[key] = (value, missing + 1)
    return increase, new


# -- the state a judge metric carries --------------------------------------------------

COUNTERS: Final = ("cr", "ce", "sr", "se")
"""Canary requests, canary errors, stable requests, stable errors."""
LATENCY_COUNTERS: Final = ("lcr", "lcs", "lsr", "lss")
"""The same from the latency histogram: canary requests, canary slow, stable ..."""


@dataclass(frozen=True)
class JudgeState:
    """What a judge metric carries from one measurement to the next."""

    errors: TestState = field(default_factory=TestState)
    """The running error test."""
    latency: TestState = field(default_factory=TestState)
    """The running slow-request test (unused without ``latency``)."""
    readings: Mapping[str, Mapping[str, Reading]] = field(default_factory=dict)
    """The counter readings of the last good measurement, per query (:data:`COUNTERS`,
    :data:`LATENCY_COUNTERS`), per series."""
    last: tuple[float, ...] = ()
    """The latest interval's counts, in the order of the queries (empty before one)."""

    @property
    def baseline_taken(self) -> bool:
        """Whether the counters were read at least once in this run."""
        return bool(self.readings)

    def to_text(self) -> str:
        """Compact JSON for a measurement's value, read back by :meth:`from_text`."""
        return json.dumps(
            {
                "errors": self.errors.wire(),
                "latency": self.latency.wire(),
                "last": list(self.last),
                "readings": {
                    q: {k: [v, missing] for k, (v, missing) in series.items()}
                    for q, series in self.readings.items()
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str | None) -> JudgeState | None:
        """The state written by :meth:`to_text`, or None for anything else."""
        try:
            raw = json.loads(text or "")
            return cls(
                errors=TestState.from_wire(raw["errors"]),
                latency=TestState.from_wire(raw["latency"]),
                readings={
                    str(q): {str(k): (float(v), int(missing)) for k, (v, missing) in s.items()}
                    for q, s in raw["readings"].items()
                },
                last=tuple(float(x) for x in raw["last"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def resume(previous: Measurement | None) -> JudgeState:
    """The state to continue from: the one the metric's latest measurement of this run
    carries, whatever its phase (a fresh run, or an unreadable value, starts afresh)."""
    if previous is None:
        return JudgeState()
    return JudgeState.from_text(previous.value) or JudgeState()


# -- one measurement of a judge metric -------------------------------------------------


@dataclass(frozen=True)
class JudgeAnswers:
    """The adapter's answers to a judge metric's queries, all at one instant."""

    canary_requests: QueryResponse
    canary_errors: QueryResponse
    stable_requests: QueryResponse
    stable_errors: QueryResponse
    canary_latency_requests: QueryResponse | None = None
    canary_slow: QueryResponse | None = None
    stable_latency_requests: QueryResponse | None = None
    stable_slow: QueryResponse | None = None


_PHASES: Final[dict[Verdict, MeasurementPhase]] = {
    "Fail": "Failed",
    "Pass": "Successful",
    "Continue": "NoData",
}

_LABELS: Final = {
    "cr": "canary requests",
    "ce": "canary errors",
    "sr": "stable requests",
    "se": "stable errors",
    "lcr": "canary latency requests",
    "lcs": "canary slow requests",
    "lsr": "stable latency requests",
    "lss": "stable slow requests",
}


def judge_measurement(
    metric: str,
    spec: ComparativeJudge,
    answers: JudgeAnswers,
    previous: Measurement | None,
) -> Outcome:
    """One measurement of a judge metric, continuing from ``previous`` (the metric's
    latest measurement in this run, see :func:`resume`).

    The first measurement of a run reads the counters only (NoData, "baseline"). After
    that: Failed when a test fails, Successful when every test has passed since the last
    Successful measurement, otherwise NoData ("need more data": the analysis holds, which
    is why a judge metric requires ``onNoData: Hold``). A failed query is an Error that
    carries the state unchanged, so the next good measurement counts everything since
    the last good reading. The Outcome's value is :meth:`JudgeState.to_text`.
    """
    state = resume(previous)
    queries: dict[str, QueryResponse | None] = {
        "cr": answers.canary_requests,
        "ce": answers.canary_errors,
        "sr": answers.stable_requests,
        "se": answers.stable_errors,
    }
    if spec.latency is not None:
        queries |= {
            "lcr": answers.canary_latency_requests,
            "lcs": answers.canary_slow,
            "lsr": answers.stable_latency_requests,
            "lss": answers.stable_slow,
        }
    baseline = not state.baseline_taken
    readings: dict[str, dict[str, Reading]] = {}
    increases: dict[str, float] = {}
    for name, answer in queries.items():
        read = _read(answer)
        if isinstance(read, Outcome):
            return Outcome(
                "Error",
                state.to_text(),
                f"{metric}: {_LABELS[name]}: {read.message}",
                read.error_kind,
            )
        increases[name], readings[name] = advance(
            state.readings.get(name, {}), read, baseline=baseline
        )
    if baseline:
        shown = ", ".join(f"{_LABELS[q]} {len(r)}" for q, r in readings.items())
        return Outcome(
            "NoData",
            replace(state, readings=readings).to_text(),
            f"{metric}: baseline: counters read ({shown} series); judging starts with the "
            "next measurement",
        )
    last = tuple(increases[q] for q in queries)
    tests = [("errors", state.errors, COUNTERS, JudgeSettings.errors(spec))]
    if spec.latency is not None:
        tests.append(("latency", state.latency, LATENCY_COUNTERS, JudgeSettings.latency(spec)))
    decisions = {
        kind: update(test, Counts(*(increases[q] for q in names)), settings)
        for kind, test, names, settings in tests
    }
    failed = [kind for kind, d in decisions.items() if d.verdict == "Fail"]
    everyone_passed = all(d.state.passed for d in decisions.values())
    verdict: Verdict = "Fail" if failed else ("Pass" if everyone_passed else "Continue")
    after = {
        kind: replace(d.state, passed=False) if verdict == "Pass" else d.state
        for kind, d in decisions.items()
    }
    new = JudgeState(
        errors=after["errors"],
        latency=after.get("latency", state.latency),
        readings=readings,
        last=last,
    )
    named = failed or list(decisions)
    message = "; ".join(f"{_NAMES[kind]} {decisions[kind].message}" for kind in named)
    return Outcome(_PHASES[verdict], new.to_text(), f"{metric}: {message}")


_NAMES: Final = {"errors": "error rate", "latency": "slow requests"}


def _read(answer: QueryResponse | None) -> tuple[Series, ...] | Outcome:
    """The series of an answer (none for NoData), or the Error it is."""
    if answer is None:
        return Outcome("Error", None, "the query was not run")
    series = read_series(answer)
    if isinstance(series, Outcome):
        return () if series.phase == "NoData" else series
    if len(series) > MAX_SERIES:
        return Outcome(
            "Error",
            None,
            f"the query returned {len(series)} series (at most {MAX_SERIES}); aggregate "
            "it to one series per process, for example with sum by (pod) (...)",
        )
    return series
