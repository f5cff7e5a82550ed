"""Simulated canaries through the comparative judge, watched for an hour the way the
controller drives a background analysis: false alarms, and time to catch a regression.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.judge_simulation [--runs 10000] [--check 1000]

Every canary is measured every 10 s for 60 minutes (360 intervals after the baseline
reading) with 100 requests/s in all, 10% of them to the canary unless a row says
otherwise, the stable at 1% errors, and the judge's template defaults (alpha 0.05, beta
0.05, tolerance 0, worseRatio 2, minRequests 100). Requests per interval are Poisson, the
canary's share of them binomial by its weight, and errors (and slow requests) binomial per
request. A run ends at its first Failed measurement (``failureLimit: 0``).

Two implementations run here:

* **the controller's own path** (:func:`real_path`): cumulative counters, one series per
  pod (with a pod restart and a pod that appears mid-run), turned into Prometheus answers
  and fed to :func:`controller.core.judge.judge_measurement`, whose measurement is recorded
  by :func:`controller.core.analysis.record`; the metric's latest measurement is fed back
  into the next, exactly as the runtime does;
* **a vectorised re-implementation** (:func:`fast_path`, numpy, thousands of canaries at
  once) of the same tests, used for the table.

Before the table, ``--check`` canaries of several scenarios run through both on the same
draws and must fail at the same interval (or both never); the count of disagreements is
printed (it must be 0). The table gives each cell's 95% interval (Wilson for rates,
order statistics for quantiles). It writes ``bench/results/judge_simulation.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.api.analysis import Metric
from controller.api.rollout import Measurement, MetricResult
from controller.core import analysis
from controller.core.judge import JudgeAnswers, judge_measurement
from controller.core.measurement import QueryResponse

RESULTS = Path(__file__).resolve().parent / "results"
INTERVAL = 10.0
INTERVALS = 360
"""An hour of 10 s intervals after the baseline."""
NEVER = math.inf

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def slow_share_when_doubled(sigma: float, base: float = 0.01) -> float:
    """The share of a canary's requests above the stable's (1 - ``base``) quantile when
    every latency doubles, for log-normal latencies of log-sd ``sigma``."""
    z = _normal_quantile(1.0 - base)
    return 0.5 * math.erfc((z - math.log(2.0) / sigma) / math.sqrt(2.0))


def _normal_quantile(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


LATENCY_SIGMA = 1.0
"""Log-sd of the simulated latencies (a long tail: the effect of a doubled p99 is small)."""
DOUBLED_P99 = slow_share_when_doubled(LATENCY_SIGMA)


@dataclass(frozen=True)
class Scenario:
    """One kind of canary."""

    name: str
    goal: str
    rps: float = 100.0
    """Requests per second to both revisions together."""
    weights: tuple[tuple[int, float], ...] = ((0, 0.10),)
    """(from interval, canary weight) steps."""
    stable_rate: float = 0.01
    """The stable's error probability per request."""
    ratio: float = 1.0
    """The canary's error rate over the stable's once the regression starts."""
    regression_from: int = 0
    """The interval from which the canary is worse (0: from the start)."""
    burst_sd: float = 0.0
    """Log-sd of a per-interval multiplier of the error rate shared by both revisions."""
    latency: bool = False
    """The metric also judges slow requests (stable 1% slow)."""
    slow_canary: float = 0.01
    """The canary's slow share once the regression starts (with ``latency``)."""
    spend: bool = True
    """Spend alpha across tests (False: the old judge, a fresh test after every Pass)."""

    @property
    def healthy(self) -> bool:
        """Whether the canary is never worse (false alarms are counted)."""
        return self.ratio == 1.0 and self.slow_canary == 0.01


@dataclass(frozen=True)
class Draws:
    """Per-run, per-interval counts (runs x intervals)."""

    n: Ints
    """Canary requests."""
    x: Ints
    """Canary errors."""
    m: Ints
    """Stable requests."""
    y: Ints
    """Stable errors."""
    xs: Ints
    """Canary slow requests."""
    ys: Ints
    """Stable slow requests."""


def draw(s: Scenario, runs: int, rng: np.random.Generator) -> Draws:
    """The counts of ``runs`` canaries of one scenario."""
    shape = (runs, INTERVALS)
    weight = np.zeros(INTERVALS)
    for start, w in s.weights:
        weight[start:] = w
    total = rng.poisson(s.rps * INTERVAL, size=shape)
    n = rng.binomial(total, np.broadcast_to(weight, shape))
    m = total - n
    rate = np.full(shape, s.stable_rate)
    if s.burst_sd:
        rate = rate * np.exp(rng.normal(-(s.burst_sd**2) / 2, s.burst_sd, size=shape))
    worse = np.arange(INTERVALS) >= s.regression_from
    canary_rate = np.where(worse, rate * s.ratio, rate)
    x = rng.binomial(n, np.minimum(1.0, canary_rate))
    y = rng.binomial(m, np.minimum(1.0, rate))
    zeros = np.zeros(shape, dtype=np.int64)
    xs, ys = zeros, zeros
    if s.latency:
        xs = rng.binomial(n, np.where(worse, s.slow_canary, 0.01))
        ys = rng.binomial(m, 0.01)
    return Draws(n, x, m, y, xs, ys)


# -- the fast path ---------------------------------------------------------------------

ALPHA, BETA, TOLERANCE, WORSE, MIN_REQUESTS = 0.05, 0.05, 0.0, 2.0, 100.0


def _family(
    canary: Ints, errors: Ints, stable: Ints, stable_errors: Ints, alpha: float, spend: bool
) -> Floats:
    """The interval (1-based) at which one test family first fails each run (inf never)."""
    runs = canary.shape[0]
    test = np.ones(runs)
    llr = np.zeros(runs)
    requests = np.zeros(runs)
    failed_at = np.full(runs, NEVER)
    rho0, rho1 = 1.0 + TOLERANCE, WORSE
    pass_at = math.log(BETA)
    log_ratio = math.log(rho1 / rho0)
    for i in range(canary.shape[1]):
        n = canary[:, i].astype(np.float64)
        m = stable[:, i].astype(np.float64)
        x = errors[:, i].astype(np.float64)
        t = x + stable_errors[:, i]
        evidence = (n > 0) & (m > 0) & (t > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = x * log_ratio + t * np.log((rho0 * n + m) / (rho1 * n + m))
        llr = llr + np.where(evidence, step, 0.0)
        requests = requests + n
        k = test if spend else np.ones(runs)
        fail = (llr >= np.log(math.pi**2 * k * k / (6.0 * alpha))) & (failed_at == NEVER)
        failed_at[fail] = i + 1
        passed = (llr <= pass_at) & (requests >= MIN_REQUESTS) & ~fail
        test = np.where(passed, test + 1, test)
        llr = np.where(passed | fail, 0.0, llr)
        requests = np.where(passed | fail, 0.0, requests)
    return failed_at


def fast_path(s: Scenario, d: Draws) -> Floats:
    """The interval at which each run's metric first fails (inf: never in the hour)."""
    alpha = ALPHA / 2 if s.latency else ALPHA
    # The old judge kept alpha, and its single fixed boundary log(1/alpha).
    first = _family(d.n, d.x, d.m, d.y, alpha if s.spend else alpha * math.pi**2 / 6, s.spend)
    if not s.latency:
        return first
    return np.minimum(first, _family(d.n, d.xs, d.m, d.ys, alpha, s.spend))


# -- the controller's own path -----------------------------------------------------------


def judge_metric(latency: bool) -> Metric:
    """The metric a background analysis would measure (template defaults)."""
    counts = {"requests": "c_requests", "errors": "c_errors"}
    provider: dict[str, Any] = {
        "canary": counts,
        "stable": {"requests": "s_requests", "errors": "s_errors"},
    }
    if latency:
        provider["latency"] = {
            "canary": {"requests": "c_requests", "slow": "c_slow"},
            "stable": {"requests": "s_requests", "slow": "s_slow"},
        }
    return Metric.model_validate(
        {"name": "judge", "interval": "10s", "provider": {"judge": provider}}
    )


RESTART_AT = 100
"""The canary's pod restarts (its counters start again from 0) before this interval."""
SECOND_POD_AT = 50
"""A second stable pod appears at this interval and serves a third of the stable's."""


class _Counters:
    """Cumulative counters of one revision's pods, as Prometheus would show them."""

    def __init__(self, pods: list[str]) -> None:
        self.values: dict[str, list[int]] = {p: [1000, 10, 1000, 10] for p in pods}

    def add(self, pod: str, requests: int, errors: int, slow: int) -> None:
        v = self.values.setdefault(pod, [0, 0, 0, 0])
        v[0] += requests
        v[1] += errors
        v[2] += requests
        v[3] += slow

    def answer(self, index: int, now: float) -> QueryResponse:
        result = [
            {"metric": {"pod": pod}, "value": [now, str(v[index])]}
            for pod, v in self.values.items()
            if v[index] > 0 or index in (0, 2)
        ]
        return QueryResponse.ok("vector", result)


def real_path(s: Scenario, d: Draws, run: int) -> float:
    """One canary through the controller's code: the interval of its first Failed
    measurement (inf: never)."""
    metric = judge_metric(s.latency)
    spec = metric.provider.judge
    assert spec is not None
    canary, stable = _Counters(["c-0"]), _Counters(["s-0"])
    result = MetricResult(name="judge", phase="Running")
    previous: Measurement | None = None
    t0 = 1.7e9
    for i in range(INTERVALS + 1):
        if i > 0:
            j = i - 1
            if i == RESTART_AT:
                canary.values["c-0"] = [0, 0, 0, 0]
            canary.add("c-0", int(d.n[run, j]), int(d.x[run, j]), int(d.xs[run, j]))
            m, y, ys = int(d.m[run, j]), int(d.y[run, j]), int(d.ys[run, j])
            if i >= SECOND_POD_AT:
                stable.add("s-1", m // 3, y // 3, ys // 3)
                m, y, ys = m - m // 3, y - y // 3, ys - ys // 3
            stable.add("s-0", m, y, ys)
        now = t0 + i * INTERVAL
        answers = JudgeAnswers(
            canary.answer(0, now),
            canary.answer(1, now),
            stable.answer(0, now),
            stable.answer(1, now),
            canary.answer(2, now) if s.latency else None,
            canary.answer(3, now) if s.latency else None,
            stable.answer(2, now) if s.latency else None,
            stable.answer(3, now) if s.latency else None,
        )
        outcome = judge_measurement("judge", spec, answers, previous)
        at = _utc(now)
        result = analysis.record(result, metric, outcome.measurement(at, at), at)
        previous = result.measurements[-1]
        if result.phase == "Failed":
            return float(i)
    return NEVER


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


# -- the table ---------------------------------------------------------------------------


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthy (100 rps, weight 10%, 1% errors)", "<= 5%"),
    Scenario(
        "healthy, weight steps 5 -> 20 -> 50%", "<= 5%", weights=((0, 0.05), (120, 0.2), (240, 0.5))
    ),
    Scenario("healthy at 10 rps", "<= 5%", rps=10.0),
    Scenario("healthy, stable at 0.1% errors", "<= 5%", stable_rate=0.001),
    Scenario("healthy, error bursts shared by both arms", "<= 5%", burst_sd=0.7),
    Scenario("canary 2x worse", "<= 180 / 360 s", ratio=2.0),
    Scenario("canary 10x worse", "p95 <= 30 s", ratio=10.0),
    Scenario("canary 1.5x worse", "median <= 480 s", ratio=1.5),
    Scenario(
        "2x worse after 30 healthy minutes", "median <= 300 s", ratio=2.0, regression_from=180
    ),
    Scenario("latency judged too: healthy", "<= 5%", latency=True),
    Scenario(
        "latency: canary p99 doubled", "median <= 300 s", latency=True, slow_canary=DOUBLED_P99
    ),
    Scenario("before: a fresh test after every Pass", "(reference)", spend=False),
)

CHECKED: tuple[Scenario, ...] = (
    SCENARIOS[1],
    SCENARIOS[4],
    SCENARIOS[8],
    SCENARIOS[10],
)


@dataclass
class Row:
    """One scenario's figures."""

    scenario: str
    goal: str
    runs: int
    failed: int
    fail_rate: float
    fail_rate_ci95: tuple[float, float]
    median_s: float | None
    p95_s: float | None
    median_ci95_s: tuple[float, float] | None
    p95_ci95_s: tuple[float, float] | None
    false_alarms_before_regression: int


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if trials == 0:
        return (0.0, 1.0)
    phat = successes / trials
    denom = 1 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * math.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def quantile_ci(values: Floats, q: float, z: float = 1.959964) -> tuple[float, float, float]:
    """A quantile of ``values`` (inf included: "never") and its 95% order-statistic
    interval."""
    ordered = np.sort(values)
    count = len(ordered)
    centre = math.ceil(q * count) - 1
    half = z * math.sqrt(count * q * (1 - q))
    lo = max(0, math.floor(q * count - half) - 1)
    hi = min(count - 1, math.ceil(q * count + half))
    return float(ordered[centre]), float(ordered[lo]), float(ordered[hi])


def summarise(s: Scenario, failed_at: Floats) -> Row:
    """The row of one scenario from each run's failing interval."""
    runs = len(failed_at)
    failed = int(np.isfinite(failed_at).sum())
    early = 0
    median = p95 = None
    median_ci = p95_ci = None
    if not s.healthy:
        early = int((failed_at <= s.regression_from).sum())
        seconds = (failed_at[failed_at > s.regression_from] - s.regression_from) * INTERVAL
        med, mlo, mhi = quantile_ci(seconds, 0.5)
        top, plo, phi = quantile_ci(seconds, 0.95)
        median, p95, median_ci, p95_ci = med, top, (mlo, mhi), (plo, phi)
    return Row(s.name, s.goal, runs, failed, failed / runs, wilson(failed, runs), median, p95,
               median_ci, p95_ci, early)  # fmt: skip


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    return "never" if math.isinf(v) else f"{v:g}"


def table(rows: list[Row]) -> str:
    """The printed table."""
    cols = (f"{'scenario':<44} {'runs':>6} {'failed in 60 min (95% CI)':>28} "
            f"{'to fail median / p95 s (95% CIs)':>40} {'goal':>16}")  # fmt: skip
    lines = [cols, "-" * len(cols)]
    for r in rows:
        lo, hi = r.fail_rate_ci95
        rate = f"{r.fail_rate * 100:.2f}% ({lo * 100:.2f}-{hi * 100:.2f})"
        times = "-"
        if r.median_s is not None and r.median_ci95_s and r.p95_ci95_s:
            times = (
                f"{_secs(r.median_s)} ({_secs(r.median_ci95_s[0])}-{_secs(r.median_ci95_s[1])})"
                f" / {_secs(r.p95_s)} ({_secs(r.p95_ci95_s[0])}-{_secs(r.p95_ci95_s[1])})"
            )
        lines.append(f"{r.scenario:<44} {r.runs:>6} {rate:>28} {times:>40} {r.goal:>16}")
    return "\n".join(lines)


def check(runs: int, seed: int, out: Callable[[str], None]) -> int:
    """Run ``runs`` canaries through both paths on the same draws; the disagreements."""
    per = max(1, runs // len(CHECKED))
    disagreements = 0
    started = time.monotonic()
    for s in CHECKED:
        d = draw(s, per, np.random.default_rng([seed, 7, len(s.name)]))
        fast = fast_path(s, d)
        for run in range(per):
            if real_path(s, d, run) != fast[run]:
                disagreements += 1
    out(
        f"identity check: {per * len(CHECKED)} canaries through the controller's path and "
        f"the fast path on the same draws: {disagreements} disagreement(s) "
        f"({time.monotonic() - started:.0f}s)"
    )
    return disagreements


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Check the fast path, run every scenario, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10_000, help="canaries per row")
    parser.add_argument("--check", type=int, default=1_000, help="canaries in the check")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    disagreements = check(args.check, args.seed, out) if args.check else 0
    started = time.monotonic()
    rows = []
    for index, s in enumerate(SCENARIOS):
        d = draw(s, args.runs, np.random.default_rng([args.seed, index]))
        rows.append(summarise(s, fast_path(s, d)))
    out(
        f"\njudge over 60 min, background mode: a measurement every {INTERVAL:g} s, alpha "
        f"{ALPHA}, beta {BETA}, tolerance {TOLERANCE}, worseRatio {WORSE}, minRequests "
        f"{MIN_REQUESTS:g}; latency rows: slow = above the stable's p99, log-normal "
        f"latencies (log-sd {LATENCY_SIGMA:g}), doubled p99 = {DOUBLED_P99 * 100:.1f}% slow"
    )
    out(table(rows))
    out(f"\n{len(rows) * args.runs} simulated canaries in {time.monotonic() - started:.1f}s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "judge_simulation.json"
    path.write_text(
        json.dumps(
            {
                "seed": args.seed,
                "identity_check": {"canaries": args.check, "disagreements": disagreements},
                "scenarios": [asdict(s) for s in SCENARIOS],
                "results": [asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    out(f"wrote {path}")
    return 1 if disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
