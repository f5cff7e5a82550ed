r"""The comparative judge: is the canary's error rate worse than the stable's, measured
over the same windows? A sequential test that may decide after every interval while
holding a stated false-alarm rate.

Where it sits: a metric whose provider is ``judge`` (see
:class:`controller.api.analysis.ComparativeJudge`) is measured by four count queries per
interval (canary requests and errors, stable requests and errors, each over the last
``{{interval}}``), optionally two latency queries. The adapter runs them;
:func:`judge_measurement` turns the answers and the metric's latest measurement into an
Outcome. The test's :class:`JudgeState` travels in the measurements' ``value``
(:meth:`JudgeState.to_text`; :func:`resume` reads it back), so it survives a controller
restart like every other analysis counter. :func:`update` is the test itself, on plain
counts.

The test
--------

In interval :math:`i` the canary serves :math:`n_i` requests with :math:`x_i` errors and
the stable :math:`m_i` requests with :math:`y_i` errors. Model the errors as independent
Poisson counts, :math:`x_i \sim \mathrm{Poisson}(n_i \lambda^c_i)`,
:math:`y_i \sim \mathrm{Poisson}(m_i \lambda^s_i)`, and let
:math:`\rho = \lambda^c_i / \lambda^s_i` be the ratio of error rates (the same in every
interval). Conditioning on the interval's total :math:`t_i = x_i + y_i` removes the
unknown baseline rate:

.. math::

    x_i \mid t_i \sim \mathrm{Binomial}\bigl(t_i,\ \pi_i(\rho)\bigr),\qquad
    \pi_i(\rho) = \frac{\rho\, n_i}{\rho\, n_i + m_i}.

We test :math:`H_0: \rho \le \rho_0 = 1 + \mathrm{tolerance}` ("not worse beyond the
tolerance") against :math:`H_1: \rho \ge \rho_1 = \mathrm{worseRatio}` with the
log-likelihood ratio, summed over intervals:

.. math::

    \Lambda_k = \sum_{i \le k} \Bigl[ x_i \log\frac{\rho_1}{\rho_0}
                + t_i \log\frac{\rho_0 n_i + m_i}{\rho_1 n_i + m_i} \Bigr].

Verdicts after every interval (an SPRT with Wald's boundaries in their conservative,
always-valid form):

* **Fail** (canary worse) when :math:`\Lambda_k \ge \log(1/\alpha)`;
* **Pass** (not worse within the tolerance) when :math:`\Lambda_k \le \log\beta` *and*
  the canary has served at least ``minRequests`` requests in total;
* **Continue** otherwise.

Why alpha holds at every look: under :math:`\rho = \rho_0`, :math:`e^{\Lambda_k}` is a
non-negative martingale with mean 1 (for :math:`\rho < \rho_0` a supermartingale), so by
Ville's inequality :math:`P(\sup_k \Lambda_k \ge \log(1/\alpha)) \le \alpha`. The bound
does not depend on how many intervals are looked at, on stopping early, or on Pass being
held back by ``minRequests``: the false-alarm rate is at most alpha for any schedule.
Symmetrically, a canary at :math:`\rho_1` is passed with probability at most beta.

Assumptions, and what breaks them:

* *Independence*: errors are independent given the rates. Bursts of correlated errors
  inside one arm (one bad pod, a retry storm) over-disperse the counts and raise the
  false-alarm rate above alpha; errors shared by both arms (a dependency failing for
  everyone) are fine, as they move both arms together.
* *A common baseline per interval*: the baseline error rate may drift from interval to
  interval (traffic mix, time of day) because each interval is conditioned on its own
  total; what must hold is the ratio :math:`\rho` and that both arms are measured over
  the *same* window. Windows must not overlap (query ``[{{interval}}]`` every
  ``interval``), or errors are counted twice and the evidence is overstated.
* *Poisson versus binomial*: with binomial counts and equal rates, :math:`x_i \mid t_i`
  is hypergeometric, which Hoeffding (1963) shows is less dispersed than the binomial
  used here, so the alpha bound stays conservative at :math:`\rho = 1`. For large error
  rates (tens of percent) the rate ratio and the odds ratio differ, which changes power,
  not the false-alarm bound.
* *Zero traffic*: an interval with no canary or no stable requests, or no errors at all,
  carries no evidence (:math:`t_i = 0` adds nothing): the verdict stays Continue. A
  canary is therefore never failed for lack of traffic, and never passed before
  ``minRequests``. When neither revision ever errs the test cannot tell them apart and
  keeps saying Continue: pair the judge with an absolute error-rate metric.
* Counts from ``increase()`` are extrapolated floats; they are used as they are
  (negative values are clamped to 0, errors to at most the requests).

Measured with ``python -m bench.judge_simulation`` (seed 1; alpha 0.05, beta 0.05,
tolerance 0, worseRatio 2, minRequests 100; stable 1% errors; per interval about 800
stable and 200 canary requests (Poisson), errors drawn *binomially*; at most 60
intervals; 10,000 simulated canaries per row):

* healthy canary (equal rates): false-alarm rate **0.0228** (95% Wilson interval
  0.0201-0.0259), below alpha; 97.7% passed, median 7 and p95 18 intervals to Pass.
  With a 50/50 split 0.0249; with the shared baseline rate jumping from interval to
  interval (log-normal, sd 0.5) 0.0274.
* canary with twice the stable error rate: failed in **97.4%** of runs (2.6% wrongly
  passed, below beta); intervals to detection median **5**, p95 **15** (50/50 split:
  4 and 10). At a tenth of the traffic (20 canary requests per interval) detection
  needs a median of 31 intervals and a third of runs stay undecided after 60.

Latency is compared separately and deterministically (:func:`compare_latency`): the
canary's latency (for example its p99) may be at most ``stable * (1 + tolerance) +
slack``; this check has no error-rate guarantee, so give such a metric a
``failureLimit`` above 0 if one noisy window must not roll back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal

from controller.api.analysis import ComparativeJudge, LatencyComparison
from controller.api.base import parse_duration
from controller.api.rollout import Measurement, MeasurementPhase
from controller.core.measurement import Outcome, QueryResponse, fmt, read_series, total

Verdict = Literal["Pass", "Fail", "Continue"]


@dataclass(frozen=True)
class Counts:
    """Requests and errors of both revisions over one interval."""

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
    """The test's parameters (see the module docstring)."""

    alpha: float = 0.05
    """Highest probability of failing a canary that is not worse (false alarm)."""
    beta: float = 0.05
    """Highest probability of passing a canary that is ``worse_ratio`` times worse."""
    tolerance: float = 0.0
    """Relative increase of the error rate still counted as not worse (rho0 = 1 + it)."""
    worse_ratio: float = 2.0
    """The error-rate ratio the test is tuned to detect (rho1)."""
    min_requests: float = 100.0
    """Canary requests needed, in total, before a Pass."""

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
        """The error-rate ratio of the null hypothesis (not worse)."""
        return 1.0 + self.tolerance

    @property
    def rho1(self) -> float:
        """The error-rate ratio of the alternative (worse)."""
        return self.worse_ratio

    @property
    def fail_at(self) -> float:
        """The upper boundary: log(1/alpha)."""
        return -math.log(self.alpha)

    @property
    def pass_at(self) -> float:
        """The lower boundary: log(beta)."""
        return math.log(self.beta)

    @classmethod
    def of(cls, spec: ComparativeJudge) -> JudgeSettings:
        """The settings a template's judge block asks for."""
        return cls(
            alpha=spec.alpha,
            beta=spec.beta,
            tolerance=spec.tolerance,
            worse_ratio=spec.worse_ratio,
            min_requests=float(spec.min_requests),
        )


_STATE_TEXT: Final = re.compile(
    r"llr=(?P<llr>\S+) intervals=(?P<n>\d+) "
    r"canary=(?P<ce>\S+)/(?P<cr>\S+) stable=(?P<se>\S+)/(?P<sr>\S+)"
)


@dataclass(frozen=True)
class JudgeState:
    """Everything the test carries from one interval to the next."""

    llr: float = 0.0
    """The log-likelihood ratio so far."""
    intervals: int = 0
    """Intervals counted."""
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    stable_requests: float = 0.0
    stable_errors: float = 0.0

    def to_text(self) -> str:
        """A compact text for a measurement's value, read back by :meth:`from_text`:
        ``llr=1.2345 intervals=3 canary=12/1210 stable=40/4790``."""
        return (
            f"llr={self.llr:.6g} intervals={self.intervals} "
            f"canary={self.canary_errors:.10g}/{self.canary_requests:.10g} "
            f"stable={self.stable_errors:.10g}/{self.stable_requests:.10g}"
        )

    @classmethod
    def from_text(cls, text: str | None) -> JudgeState | None:
        """The state written by :meth:`to_text`, or None for anything else."""
        match = _STATE_TEXT.search(text or "")
        if match is None:
            return None
        try:
            return cls(
                llr=float(match["llr"]),
                intervals=int(match["n"]),
                canary_requests=float(match["cr"]),
                canary_errors=float(match["ce"]),
                stable_requests=float(match["sr"]),
                stable_errors=float(match["se"]),
            )
        except ValueError:
            return None


@dataclass(frozen=True)
class Decision:
    """The verdict after one interval, its evidence and the effect size."""

    verdict: Verdict
    state: JudgeState
    canary_rate: float | None
    """Canary errors per request, over all intervals (None without requests)."""
    stable_rate: float | None
    """Stable errors per request, over all intervals."""
    ratio: float | None
    """canary_rate / stable_rate (inf when only the canary errs; None when undefined)."""
    difference: float | None
    """canary_rate - stable_rate."""
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


def update(state: JudgeState, counts: Counts, settings: JudgeSettings) -> Decision:
    """Add one interval to the test and decide."""
    c = counts.clean()
    new = JudgeState(
        llr=state.llr + interval_llr(c, settings),
        intervals=state.intervals + 1,
        canary_requests=state.canary_requests + c.canary_requests,
        canary_errors=state.canary_errors + c.canary_errors,
        stable_requests=state.stable_requests + c.stable_requests,
        stable_errors=state.stable_errors + c.stable_errors,
    )
    return decide(new, settings)


def decide(state: JudgeState, settings: JudgeSettings) -> Decision:
    """The verdict for a state (the boundaries of the module docstring)."""
    canary_rate = _rate(state.canary_errors, state.canary_requests)
    stable_rate = _rate(state.stable_errors, state.stable_requests)
    ratio: float | None = None
    difference: float | None = None
    if canary_rate is not None and stable_rate is not None:
        difference = canary_rate - stable_rate
        if stable_rate > 0.0:
            ratio = canary_rate / stable_rate
        elif canary_rate > 0.0:
            ratio = math.inf
    effect = (
        f"canary errors {_pct(canary_rate)} ({fmt(state.canary_errors)}/"
        f"{fmt(state.canary_requests)}) vs stable {_pct(stable_rate)} "
        f"({fmt(state.stable_errors)}/{fmt(state.stable_requests)})"
    )
    if ratio is not None and difference is not None:
        effect += f": ratio {fmt(ratio)}, difference {difference * 100:+.3g} pp"
    evidence = (
        f"LLR {state.llr:.3g} (fail at {settings.fail_at:.3g}, pass at {settings.pass_at:.3g})"
    )
    verdict: Verdict
    if state.llr >= settings.fail_at:
        verdict = "Fail"
        why = (
            f"canary error rate worse than stable (alpha {fmt(settings.alpha)}); "
            f"{effect}; {evidence}"
        )
    elif state.llr <= settings.pass_at and state.canary_requests >= settings.min_requests:
        verdict = "Pass"
        why = (
            f"canary not worse than stable within tolerance {fmt(settings.tolerance)}; "
            f"{effect}; {evidence}"
        )
    else:
        verdict = "Continue"
        need = (
            f"; waiting for {fmt(settings.min_requests)} canary requests"
            if state.canary_requests < settings.min_requests
            else ""
        )
        why = f"need more data after {state.intervals} interval(s){need}; {effect}; {evidence}"
    return Decision(verdict, state, canary_rate, stable_rate, ratio, difference, why)


def judge(intervals: Iterable[Counts], settings: JudgeSettings) -> Decision:
    """Run the test over intervals from the start; stops at the first Pass or Fail."""
    decision = decide(JudgeState(), settings)
    for counts in intervals:
        decision = update(decision.state, counts, settings)
        if decision.verdict != "Continue":
            break
    return decision


def _rate(errors: float, requests: float) -> float | None:
    return errors / requests if requests > 0.0 else None


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.3g}%"


# -- latency ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyDecision:
    """The canary's latency against the stable's."""

    verdict: Verdict
    canary: float
    stable: float
    limit: float
    """stable * (1 + tolerance) + slack."""
    message: str


def compare_latency(
    canary: float, stable: float, *, tolerance: float, slack: float
) -> LatencyDecision:
    """Pass when ``canary <= stable * (1 + tolerance) + slack`` (seconds), Fail when above,
    Continue when either is NaN (no requests) or the stable's is infinite (beyond the
    histogram's largest bucket: nothing to compare with)."""
    limit = stable * (1.0 + tolerance) + slack
    shown = f"canary {fmt(canary)}s, stable {fmt(stable)}s, limit {fmt(limit)}s"
    if math.isnan(canary) or math.isnan(stable):
        return LatencyDecision("Continue", canary, stable, limit, f"no latency data ({shown})")
    if math.isinf(stable):
        return LatencyDecision(
            "Continue", canary, stable, limit, f"stable latency is beyond the histogram ({shown})"
        )
    if canary > limit:
        return LatencyDecision("Fail", canary, stable, limit, f"canary slower: {shown}")
    return LatencyDecision("Pass", canary, stable, limit, f"latency within limit: {shown}")


# -- one measurement of a judge metric -------------------------------------------------


@dataclass(frozen=True)
class JudgeAnswers:
    """The adapter's answers to a judge metric's queries for one interval."""

    canary_requests: QueryResponse
    canary_errors: QueryResponse
    stable_requests: QueryResponse
    stable_errors: QueryResponse
    canary_latency: QueryResponse | None = None
    stable_latency: QueryResponse | None = None


def resume(previous: Measurement | None) -> JudgeState:
    """The state to continue from, given the metric's latest measurement: the state it
    carries after Continue (NoData) or a provider Error; a fresh test after a Pass or
    Fail (a background analysis that keeps measuring starts over), or without one."""
    if previous is None or previous.phase not in ("NoData", "Error"):
        return JudgeState()
    return JudgeState.from_text(previous.value) or JudgeState()


_PHASES: Final[dict[Verdict, MeasurementPhase]] = {
    "Fail": "Failed",
    "Pass": "Successful",
    "Continue": "NoData",
}


def judge_measurement(
    metric: str,
    spec: ComparativeJudge,
    answers: JudgeAnswers,
    previous: Measurement | None,
) -> Outcome:
    """One measurement of a judge metric, continuing the test from ``previous`` (the
    metric's latest measurement, see :func:`resume`).

    Fail → Failed, Pass → Successful, Continue → **NoData** ("need more data": the
    analysis holds, neither promoting nor rolling back, which is why a judge metric
    requires ``onNoData: Hold``). The Outcome's value is :meth:`JudgeState.to_text` of
    the state after this interval; a failed query gives Error and carries the state
    unchanged.
    """
    state = resume(previous)
    counts: list[float] = []
    for label, answer in (
        ("canary requests", answers.canary_requests),
        ("canary errors", answers.canary_errors),
        ("stable requests", answers.stable_requests),
        ("stable errors", answers.stable_errors),
    ):
        value = total(answer)
        if isinstance(value, Outcome):
            return Outcome("Error", state.to_text(), f"{metric}: {label}: {value.message}")
        counts.append(value)
    decision = update(state, Counts(*counts), JudgeSettings.of(spec))
    verdict, message = decision.verdict, decision.message
    if spec.latency is not None:
        latency = _latency(metric, spec.latency, answers)
        if isinstance(latency, Outcome):
            return replace(latency, value=state.to_text())
        if latency.verdict == "Fail":
            verdict, message = "Fail", f"{latency.message}; errors: {message}"
        elif latency.verdict == "Continue" and verdict == "Pass":
            verdict, message = "Continue", f"{latency.message}; errors: {message}"
        else:
            message = f"{message}; {latency.message}"
    return Outcome(_PHASES[verdict], decision.state.to_text(), f"{metric}: {message}")


def _latency(
    metric: str, spec: LatencyComparison, answers: JudgeAnswers
) -> LatencyDecision | Outcome:
    values: list[float] = []
    for label, answer in (
        ("canary latency", answers.canary_latency),
        ("stable latency", answers.stable_latency),
    ):
        if answer is None:
            return Outcome("Error", None, f"{metric}: {label}: the query was not run")
        series = read_series(answer)
        if isinstance(series, Outcome):
            if series.phase == "NoData":
                values.append(math.nan)
                continue
            return Outcome("Error", None, f"{metric}: {label}: {series.message}")
        if len(series) != 1:
            return Outcome(
                "Error",
                None,
                f"{metric}: {label}: the query returned {len(series)} series; aggregate it "
                "to one (for example with histogram_quantile(0.99, sum by (le) (...)))",
            )
        values.append(series[0].value)
    return compare_latency(
        values[0], values[1], tolerance=spec.tolerance, slack=parse_duration(spec.slack)
    )
