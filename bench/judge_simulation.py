"""Simulated canaries through the comparative judge: false alarms and time to detection.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.judge_simulation [--runs 10000] [--seed 1]

It prints a table and writes ``bench/results/judge_simulation.json``. Each run draws,
interval by interval, Poisson-ish request counts for both revisions and *binomial* error
counts (real requests fail one by one; the judge's model is Poisson, so this also checks
the robustness the docstring of :mod:`controller.core.judge` claims), feeds them to
:func:`controller.core.judge.update` and stops at the first Pass or Fail, or after
``max_intervals`` (undecided). ``tests/unit/test_judge.py`` runs a smaller version.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from controller.core.judge import Counts, JudgeSettings, JudgeState, Verdict, update

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Scenario:
    """One kind of canary."""

    name: str
    canary_rate: float
    """The canary's error probability per request."""
    stable_rate: float
    """The stable's error probability per request."""
    canary_requests: float = 200.0
    """Mean canary requests per interval (for example 20 rps for 10 s)."""
    stable_requests: float = 800.0
    """Mean stable requests per interval."""
    max_intervals: int = 60
    """Give up (undecided) after this many intervals, like a metric's ``count``."""
    drift: float = 0.0
    """Per-interval multiplicative jitter of the shared baseline (both arms move
    together: traffic mix, time of day)."""


@dataclass
class Summary:
    """What a batch of runs of one scenario did."""

    scenario: str
    runs: int
    fails: int
    passes: int
    undecided: int
    fail_rate: float
    fail_rate_ci95: tuple[float, float]
    intervals_to_fail: dict[str, float] = field(default_factory=dict)
    intervals_to_pass: dict[str, float] = field(default_factory=dict)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: exact (inversion) for small means, normal approximation above 50."""
    if mean <= 0.0:
        return 0
    if mean > 50.0:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    u, k, p = rng.random(), 0, math.exp(-mean)
    cdf = p
    while u > cdf:
        k += 1
        p *= mean / k
        cdf += p
        if p < 1e-300:
            break
    return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw: inversion for small ``n * p``, normal approximation above 50."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if n * p > 50.0:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    q = 1.0 - p
    pk = q**n
    cdf, k, u = pk, 0, rng.random()
    while u > cdf and k < n:
        pk *= (n - k) / (k + 1) * p / q
        k += 1
        cdf += pk
    return k


def run_once(
    scenario: Scenario, settings: JudgeSettings, rng: random.Random
) -> tuple[Verdict, int]:
    """One simulated canary: the verdict and the interval it came at."""
    state = JudgeState()
    for interval in range(1, scenario.max_intervals + 1):
        scale = math.exp(rng.gauss(0.0, scenario.drift)) if scenario.drift else 1.0
        n = poisson(rng, scenario.canary_requests)
        m = poisson(rng, scenario.stable_requests)
        x = binomial(rng, n, min(1.0, scenario.canary_rate * scale))
        y = binomial(rng, m, min(1.0, scenario.stable_rate * scale))
        decision = update(state, Counts(n, x, m, y), settings)
        if decision.verdict != "Continue":
            return decision.verdict, interval
        state = decision.state
    return "Continue", scenario.max_intervals


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if trials == 0:
        return (0.0, 1.0)
    phat = successes / trials
    denom = 1 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * math.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _quantiles(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "median": float(statistics.median(ordered)),
        "p95": float(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]),
        "max": float(ordered[-1]),
    }


def simulate(scenario: Scenario, settings: JudgeSettings, runs: int, seed: int) -> Summary:
    """``runs`` independent canaries of one scenario (deterministic for a seed)."""
    rng = random.Random(f"{seed}:{scenario.name}")  # noqa: S311 - a simulation
    to_fail: list[int] = []
    to_pass: list[int] = []
    for _ in range(runs):
        verdict, interval = run_once(scenario, settings, rng)
        if verdict == "Fail":
            to_fail.append(interval)
        elif verdict == "Pass":
            to_pass.append(interval)
    fails, passes = len(to_fail), len(to_pass)
    return Summary(
        scenario=scenario.name,
        runs=runs,
        fails=fails,
        passes=passes,
        undecided=runs - fails - passes,
        fail_rate=fails / runs,
        fail_rate_ci95=wilson(fails, runs),
        intervals_to_fail=_quantiles(to_fail),
        intervals_to_pass=_quantiles(to_pass),
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthy 1% (20/80 split)", 0.01, 0.01),
    Scenario("2x worse 2% vs 1% (20/80)", 0.02, 0.01),
    Scenario("healthy 1% (50/50 split)", 0.01, 0.01, 500.0, 500.0),
    Scenario("2x worse (50/50 split)", 0.02, 0.01, 500.0, 500.0),
    Scenario("1.5x worse (20/80)", 0.015, 0.01),
    Scenario("healthy, drifting baseline", 0.01, 0.01, drift=0.5),
    Scenario("healthy, low traffic (2 rps canary)", 0.01, 0.01, 20.0, 80.0),
    Scenario("2x worse, low traffic", 0.02, 0.01, 20.0, 80.0),
    Scenario("no canary traffic", 0.01, 0.01, 0.0, 800.0),
)


def _table(rows: list[Summary], settings: JudgeSettings) -> str:
    head = (
        f"judge: alpha={settings.alpha} beta={settings.beta} tolerance={settings.tolerance} "
        f"worseRatio={settings.worse_ratio} minRequests={settings.min_requests:g}\n"
    )
    cols = f"{'scenario':<38} {'runs':>6} {'Fail':>7} {'95% CI':>17} {'Pass':>7} {'undec.':>7} "
    cols += f"{'to Fail med/p95':>16} {'to Pass med/p95':>16}"
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        lo, hi = r.fail_rate_ci95
        tf = r.intervals_to_fail
        tp = r.intervals_to_pass
        lines.append(
            f"{r.scenario:<38} {r.runs:>6} {r.fail_rate:>7.4f} {f'{lo:.4f}-{hi:.4f}':>17} "
            f"{r.passes / r.runs:>7.4f} {r.undecided / r.runs:>7.4f} "
            f"{_pair(tf):>16} {_pair(tp):>16}"
        )
    return "\n".join(lines)


def _pair(q: dict[str, float]) -> str:
    return f"{q['median']:g}/{q['p95']:g}" if q else "-"


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Run every scenario, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--beta", type=float, default=0.05)
    args = parser.parse_args(argv)
    settings = JudgeSettings(alpha=args.alpha, beta=args.beta)
    started = time.monotonic()
    rows = [simulate(s, settings, args.runs, args.seed) for s in SCENARIOS]
    out(_table(rows, settings))
    out(f"\n{len(rows) * args.runs} simulated canaries in {time.monotonic() - started:.1f}s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "judge_simulation.json"
    path.write_text(
        json.dumps(
            {
                "settings": asdict(settings),
                "seed": args.seed,
                "scenarios": [asdict(s) for s in SCENARIOS],
                "results": [asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    out(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
