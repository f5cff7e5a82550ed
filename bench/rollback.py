"""Regression to rollback, end to end: how long a canary that turns bad keeps traffic.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.rollback [--trials 5] [--intervals 1,5]

It reuses the demo's moving parts (:class:`demodriver.scenario.Scenario`: a real
control plane with kwok nodes, the controller process, one demo-app process per
revision scraped by a real Prometheus every second, the weighted proxy that follows the
HTTPRoute, 60 requests/s of load) and changes only the analysis, through the API, after
the demo has applied it: the metric's interval (1 s and 5 s), its rate window (5 s by
default), a success-rate threshold of 0.95 (the demo's 0.9 would sit exactly on a 10%
error rate) and a count large enough that the analysis never finishes during a trial;
the steps become ``setWeight 20`` then a one-hour pause, so the canary holds 20% of the
traffic until it is judged.

Each trial releases a new revision, waits until it has traffic and a Successful
measurement taken with a full rate window of its traffic, waits a random fraction of the
analysis interval (so the regression falls at a random point between measurements, as a
real one does), then sets its error rate (to 100%, or to 10%) through the demo app's
``POST /admin/config`` and measures from that instant:

* to the first Failed measurement (the controller's ``measured`` log line);
* to the controller deciding ``SetWeight 0`` (its ``action`` log line);
* to the route weight reaching 0 as the proxy sees it (the proxy re-reads the route
  every 100 ms);
* to the last request the proxy sent to the bad revision.

Beside each figure it prints the theoretical bound ``scrape + rate window + interval``
(the regression must reach a scrape, then enough of the window to cross the threshold,
then the next measurement), and for the 100%-error case the target
``scrape + interval + 2 s``. It writes ``bench/results/rollback.json``.
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    LoadMonitor,
    Machine,
    bench_cluster,
    load_line,
    log_time,
    machine_line,
    parse_time,
    render_table,
    seconds,
    summarize,
    write_results,
)
from demodriver.scenario import GROUP, VERSION, Scenario, _set_image, manifests
from localcluster import LocalPrometheus

#: The canary holds 20% until it is judged; the pause outlasts any trial.
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1h"}}]
#: Measurements before the analysis would finish: more than any trial takes.
COUNT = 10_000
THRESHOLD = 0.95
DEMO_WINDOW = "[5s]"


@dataclass(frozen=True)
class Config:
    """One configuration of the benchmark."""

    error_rate: float
    """The canary's error rate after the regression (it is 0 before)."""
    interval: int
    """Seconds between analysis measurements."""
    window: int
    """The rate window of the success-rate query, seconds."""
    scrape: int
    """Prometheus's scrape interval, seconds."""

    @property
    def label(self) -> str:
        """For the table."""
        return f"{self.error_rate:.0%} errors, interval {self.interval}s"

    @property
    def bound(self) -> float:
        """Scrape + rate window + analysis interval."""
        return float(self.scrape + self.window + self.interval)

    @property
    def target(self) -> float | None:
        """The p95 target of the 100%-error case: scrape + interval + 2 s."""
        return float(self.scrape + self.interval + 2) if self.error_rate >= 1.0 else None


@dataclass
class Trial:
    """What one regression did (seconds from the regression; None if never seen)."""

    revision: str
    phase: float = 0.0
    """Seconds between the last healthy measurement seen and the regression (random)."""
    to_failed_measurement: float | None = None
    to_weight_zero_decided: float | None = None
    to_weight_zero: float | None = None
    to_last_request: float | None = None
    bad_requests: int = 0
    abort_reason: str = ""
    abort_message: str = ""


@dataclass
class ConfigResult:
    """Every trial of one configuration."""

    config: Config
    trials: list[Trial] = field(default_factory=list)

    def values(self, name: str) -> list[float]:
        """One measure over the trials (those that saw it)."""
        out = [getattr(t, name) for t in self.trials]
        return [float(v) for v in out if v is not None]


class RollbackScenario(Scenario):
    """The demo scenario with the analysis and steps of one :class:`Config`, and a
    regression per trial instead of the demo's three acts."""

    def __init__(
        self,
        kubeconfig: Path,
        prometheus: LocalPrometheus,
        workdir: Path,
        say: Callable[[str], None],
        namespace: str,
        config: Config,
    ) -> None:
        super().__init__(kubeconfig, prometheus, workdir, say, namespace)
        self.config = config
        self.rng = random.Random(f"rollback:{namespace}")  # noqa: S311 - a benchmark

    def tune(self) -> None:
        """Give the demo's AnalysisTemplate and Rollout this configuration's settings."""
        template = next(body for kind, body in manifests(self.namespace) if kind == "template")
        metric = copy.deepcopy(template["spec"]["metrics"][0])
        metric.update(
            interval=f"{self.config.interval}s",
            count=COUNT,
            thresholdRange={"min": THRESHOLD},
        )
        for query in (metric["provider"]["prometheus"], metric["minSamples"]):
            if DEMO_WINDOW not in query["query"]:
                raise RuntimeError(f"the demo's query changed; no {DEMO_WINDOW} in it")
            query["query"] = query["query"].replace(DEMO_WINDOW, f"[{self.config.window}s]")
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "analysistemplates", "success-rate",
            {"spec": {"metrics": [metric]}},
        )  # fmt: skip
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "rollouts", "checkout",
            {"spec": {"strategy": {"canary": {"steps": STEPS}}}},
        )  # fmt: skip

    def trial(self, number: int) -> Trial:
        """Release a new revision, let it take traffic healthily, turn it bad, measure."""
        before = self.status()
        old = {before.get("canaryRevision"), before.get("stableRevision")}
        _set_image(self.custom, self.namespace, f"demo/checkout:t{number}")
        if not self.wait("the new canary", lambda s: s.get("canaryRevision") not in old, 60):
            raise RuntimeError("the new revision did not start")
        revision = str(self.status()["canaryRevision"])
        if not self.wait("canary traffic", lambda s: (self.route_weight() or 0) > 0, 90):
            raise RuntimeError(f"canary {revision} got no traffic")
        settled = time.time() + self.config.window + self.config.scrape
        if not self.wait(
            "a healthy measurement over a full window",
            lambda s: _healthy_since(s, revision, settled),
            60 + self.config.interval,
        ):
            raise RuntimeError(f"canary {revision} was never measured healthy")
        # A regression does not wait for the next measurement: start it at a random point
        # of the interval (right after a measurement would be the worst case every time).
        phase = self.rng.uniform(0, self.config.interval)
        time.sleep(phase)
        self.apps.configure(revision, errorRate=self.config.error_rate)
        jump, jump_wall = time.monotonic(), time.time()
        self.timeline.note(f"{revision} error rate jumps to {self.config.error_rate:.0%}")
        trial = Trial(revision, phase=phase)
        trial.to_weight_zero = self._until_weight_zero(jump, deadline=jump + 120)
        time.sleep(3)  # requests in flight at the switch still land
        assert self.proxy is not None
        bad = [s for s in list(self.proxy.served) if s.revision == revision and s.at >= jump]
        trial.bad_requests = len(bad)
        if bad:
            trial.to_last_request = max(s.at for s in bad) - jump
        abort = self.status().get("abort") or {}
        trial.abort_reason = str(abort.get("reason", ""))
        trial.abort_message = str(abort.get("message", ""))
        self._from_logs(trial, jump_wall)
        self.timeline.note(
            f"{revision}: weight 0 after {seconds(trial.to_weight_zero)}, last request "
            f"{seconds(trial.to_last_request)} ({trial.abort_reason})"
        )
        return trial

    def _until_weight_zero(self, jump: float, deadline: float) -> float | None:
        """Seconds from ``jump`` until the proxy's view of the route gives the canary 0%
        (polled every 10 ms; the proxy itself re-reads the route every 100 ms)."""
        while time.monotonic() < deadline:
            if self.route_weight() == 0:
                return time.monotonic() - jump
            time.sleep(0.01)
        return None

    def _from_logs(self, trial: Trial, jump_wall: float) -> None:
        """The first Failed measurement and the SetWeight 0 decision after the jump."""
        for entry in self.controller.logs():
            if entry.get("rollout") != "checkout" or log_time(entry) < jump_wall:
                continue
            since = log_time(entry) - jump_wall
            if (
                trial.to_failed_measurement is None
                and entry.get("event") == "measured"
                and entry.get("phase") == "Failed"
            ):
                trial.to_failed_measurement = since
            if (
                trial.to_weight_zero_decided is None
                and entry.get("event") == "action"
                and entry.get("action") == "SetWeight"
                and entry.get("weight") == 0
            ):
                trial.to_weight_zero_decided = since


def _healthy_since(status: dict[str, Any], revision: str, since: float) -> bool:
    """The background analysis of ``revision`` has a Successful measurement started at or
    after ``since`` (epoch seconds)."""
    for run in status.get("analysisRuns") or []:
        if run.get("name") != "background" or run.get("revision") != revision:
            continue
        for metric in run.get("metrics") or []:
            latest = (metric.get("measurements") or [None])[-1]
            if (
                latest
                and latest.get("phase") == "Successful"
                and parse_time(latest["startedAt"]) >= since
            ):
                return True
    return False


def run_config(
    kubeconfig: Path,
    prometheus: LocalPrometheus,
    workdir: Path,
    config: Config,
    trials: int,
    say: Callable[[str], None],
    index: int,
) -> ConfigResult:
    """Every trial of one configuration, with its own namespace and controller."""
    namespace = f"rollback-{index}"
    (workdir / namespace).mkdir(parents=True, exist_ok=True)
    scenario = RollbackScenario(kubeconfig, prometheus, workdir / namespace, say, namespace, config)
    result = ConfigResult(config)
    try:
        scenario.setup()
        scenario.tune()
        scenario.first_release()
        for number in range(1, trials + 1):
            result.trials.append(scenario.trial(number))
    finally:
        scenario.close()
    return result


MEASURES: tuple[tuple[str, str], ...] = (
    ("to_failed_measurement", "-> first Failed measurement"),
    ("to_weight_zero_decided", "-> SetWeight 0 decided"),
    ("to_weight_zero", "-> route weight 0 (proxy)"),
    ("to_last_request", "-> last request to canary"),
)


def table(results: Sequence[ConfigResult]) -> str:
    """One block of rows per configuration."""
    rows: list[list[str]] = []
    for r in results:
        c = r.config
        ok = sum(1 for t in r.trials if t.abort_reason == "AnalysisFailed")
        for i, (name, label) in enumerate(MEASURES):
            q = summarize(r.values(name))
            verdict = ""
            if name == "to_weight_zero" and c.target is not None and q["n"]:
                verdict = "met" if q["p95"] <= c.target else "MISSED"
            rows.append(
                [
                    c.label if i == 0 else "",
                    f"{ok}/{len(r.trials)}" if i == 0 else "",
                    label,
                    seconds(q.get("median")),
                    seconds(q.get("p95")),
                    seconds(q.get("max")),
                    seconds(c.bound, 0) if name != "to_failed_measurement" else "",
                    seconds(c.target, 0) if name == "to_weight_zero" and c.target else "",
                    verdict,
                ]
            )
    header = [
        "configuration", "rolled back", "from the regression", "median", "p95", "max",
        "bound", "target p95", "",
    ]  # fmt: skip
    return render_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every configuration, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="regressions per configuration")
    parser.add_argument("--intervals", default="1,5", help="analysis intervals, seconds")
    parser.add_argument("--error-rates", default="1.0,0.1", help="error rates after the jump")
    parser.add_argument("--window", type=int, default=5, help="rate window, seconds")
    parser.add_argument("--verbose", action="store_true", help="print the timeline")
    args = parser.parse_args(argv)
    configs = [
        Config(float(rate), int(interval), args.window, 1)
        for rate in args.error_rates.split(",")
        for interval in args.intervals.split(",")
    ]
    workdir = Path(tempfile.mkdtemp(prefix="stepwise-bench-rollback-"))
    timeline = (workdir / "timeline.log").open("w")

    def say(line: str) -> None:
        timeline.write(line + "\n")
        timeline.flush()
        if args.verbose:
            print(line, flush=True)

    machine = Machine.current()
    started = time.monotonic()
    results: list[ConfigResult] = []
    print(
        f"rollback benchmark: {len(configs)} configurations x {args.trials} trials; "
        f"logs in {workdir}",
        flush=True,
    )
    with (
        LoadMonitor() as load,
        bench_cluster(nodes=1) as (cluster, _),
        LocalPrometheus(scrape_interval="1s") as prom,
    ):
        for index, config in enumerate(configs):
            print(f"  {config.label} ...", flush=True)
            kubeconfig = cluster.endpoints.kubeconfig
            results.append(run_config(kubeconfig, prom, workdir, config, args.trials, say, index))
    timeline.close()
    took = time.monotonic() - started
    print()
    print("Regression to rollback (demo app, 60 req/s through the weighted proxy, canary at 20%)")
    print(
        f"scrape 1s, rate window {args.window}s, threshold success rate >= {THRESHOLD}, "
        f"{args.trials} trials per configuration; bound = scrape + window + interval"
    )
    print(machine_line(machine))
    print(load_line(load.summary()))
    print()
    print(table(results))
    print(f"\n{sum(len(r.trials) for r in results)} trials in {took:.0f}s")
    path = write_results(
        "rollback",
        {
            "machine": asdict(machine),
            "load": load.summary(),
            "seconds": round(took, 1),
            "threshold": THRESHOLD,
            "steps": STEPS,
            "results": [
                {
                    "config": asdict(r.config),
                    "bound": r.config.bound,
                    "target": r.config.target,
                    "summary": {name: summarize(r.values(name)) for name, _ in MEASURES},
                    "trials": [asdict(t) for t in r.trials],
                }
                for r in results
            ],
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
