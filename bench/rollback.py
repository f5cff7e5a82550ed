"""Regression to rollback, end to end: how long a canary that turns bad keeps traffic.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.rollback [--trials 5] [--intervals 1,5]

It reuses the demo's moving parts (:class:`demodriver.scenario.Scenario` on a real
control plane with kwok nodes: the real data plane of
:class:`~localcluster.dataplane.DataPlane`, that is Traefik as the Gateway, a demo-app
process serving each pod on its pod IP and a Prometheus that discovers the pods and
scrapes them every second; the controller process; 60 requests/s through the Gateway,
every answer counted at the client with the version that served it) and changes only the
analysis, through the API, after the demo has applied it: the metric's interval (1 s and
5 s), its rate window (5 s by default), a success-rate threshold of 0.95 (the demo's 0.9
would sit exactly on a 10% error rate) and a count large enough that the analysis never
finishes during a trial; the steps become ``setWeight 20`` then a one-hour pause, so the
canary holds 20% of the traffic until it is judged.

Each trial releases a new version (``t1``, ``t2`` ...: the image and the ``VERSION`` the
pods answer with), waits until Traefik gives it traffic and it has a Successful
measurement taken with a full rate window of that traffic, waits a random fraction of
the analysis interval (so the regression falls at a random point between measurements,
as a real one does), then sets its pods' error rate (to 100%, or to 10%) through the
demo app's ``POST /admin/config`` on each pod IP and measures from that instant:

* to the first Failed measurement (the controller's ``measured`` log line);
* to the controller deciding ``SetWeight 0`` (its ``action`` log line);
* to the canary's weight 0 written in the HTTPRoute (the route as a watch on the API
  server delivers it);
* to the canary's weight 0 in Traefik (Traefik's own API, polled every 10 ms): the
  Gateway's lag shows beside the controller's write;
* to the last request the bad version answered, at the client.

Before the next trial it waits until the aborted version's pods are gone (after
``abortScaleDownDelaySeconds``), so one trial's canary never serves in the next.

Beside each figure it prints the theoretical bound ``scrape + rate window + interval``
(the regression must reach a scrape, then enough of the window to cross the threshold,
then the next measurement), and for the 100%-error case the target
``scrape + interval + 2 s`` (for Traefik's weight 0). Each configuration has its own
namespace, data plane and controller. It writes ``bench/results/rollback.json``.
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench.harness import (
    LoadMonitor,
    Machine,
    bench_cluster,
    load_line,
    log_time,
    machine_line,
    parse_time,
    quiet_logs,
    render_table,
    seconds,
    summarize,
    write_results,
)
from controller.runtime.informer import Informer
from demodriver.scenario import GROUP, VERSION, Scenario, _release, manifests
from localcluster.cluster import Endpoints

#: The canary holds 20% until it is judged; the pause outlasts any trial.
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1h"}}]
#: Measurements before the analysis would finish: more than any trial takes.
COUNT = 10_000
THRESHOLD = 0.95
DEMO_WINDOW = "[5s]"
ROUTE, CANARY_SERVICE = "checkout", "checkout-canary"
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
#: Seconds the client keeps counting after Traefik's weight 0: requests in flight land.
SETTLE = 3.0


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
    version: str = ""
    """The version the canary's pods answer with (``X-Served-By``)."""
    phase: float = 0.0
    """Seconds between the last healthy measurement seen and the regression (random)."""
    to_failed_measurement: float | None = None
    to_weight_zero_decided: float | None = None
    to_route_written: float | None = None
    """... to the canary's weight 0 in the HTTPRoute, as the API server's watch gives it."""
    to_weight_zero: float | None = None
    """... to the canary's weight 0 in Traefik (its API)."""
    to_last_request: float | None = None
    """... to the last answer from the bad version, at the client."""
    bad_requests: int = 0
    """Requests the bad version answered after the regression."""
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


def _canary_share(route: dict[str, Any]) -> int | None:
    """The canary Service's share of a route's backendRefs weights, percent (None when
    the route has no weight at all)."""
    weights: dict[str, int] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            name = str(ref.get("name", ""))
            weights[name] = weights.get(name, 0) + int(ref.get("weight", 1))
    total = sum(weights.values())
    return round(100 * weights.get(CANARY_SERVICE, 0) / total) if total else None


class RouteWatch:
    """Every change of the canary's share of the HTTPRoute, as a watch on the API server
    delivers it (the controller's own informer: list, watch, relist on 410)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.key = f"{namespace}/{ROUTE}"
        self.changes: list[tuple[float, int | None]] = []
        """(monotonic time seen, canary share) for each change."""
        self._lock = threading.Lock()
        self._informer = Informer.custom_resources(
            api,
            group=GATEWAY_GROUP,
            version=GATEWAY_VERSION,
            plural="httproutes",
            namespace=namespace,
        )
        self._informer.add_handler(self._seen)

    def start(self, timeout: float = 30.0) -> None:
        """Start watching; returns once the first list is in."""
        self._informer.start()
        if not self._informer.wait_for_sync(timeout):
            raise TimeoutError("the HTTPRoute watch did not sync")

    def stop(self) -> None:
        """Stop watching."""
        self._informer.stop()

    def _seen(self, key: str) -> None:
        if key != self.key:
            return
        route = self._informer.get(key)
        if route is None:
            return
        share = _canary_share(route)
        with self._lock:
            if not self.changes or self.changes[-1][1] != share:
                self.changes.append((time.monotonic(), share))

    def first(self, share: int, since: float) -> float | None:
        """When the canary's share first became ``share`` at or after ``since``."""
        with self._lock:
            return next((at for at, s in self.changes if at >= since and s == share), None)


class RollbackScenario(Scenario):
    """The demo scenario with the analysis and steps of one :class:`Config`, and a
    regression per trial instead of the demo's three acts."""

    def __init__(
        self,
        endpoints: Endpoints,
        workdir: Path,
        say: Callable[[str], None],
        namespace: str,
        config: Config,
    ) -> None:
        super().__init__(endpoints, workdir, say, namespace)
        self.config = config
        self.rng = random.Random(f"rollback:{namespace}")  # noqa: S311 - a benchmark
        self.route_watch: RouteWatch | None = None

    def tune(self) -> None:
        """Give the demo's AnalysisTemplate and Rollout this configuration's settings, and
        start watching the HTTPRoute."""
        objects = manifests(self.dataplane.parent_ref())
        template = next(body for kind, body in objects if kind == "template")
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
        self.route_watch = RouteWatch(self.api, self.namespace)
        self.route_watch.start()

    def trial(self, number: int) -> Trial:
        """Release a new version, let it take traffic healthily, turn it bad, measure,
        and wait until its pods are gone."""
        before = self.status()
        old = {before.get("canaryRevision"), before.get("stableRevision")}
        version = f"t{number}"
        _release(self.custom, self.namespace, version)
        if not self.wait("the new canary", lambda s: s.get("canaryRevision") not in old, 60):
            raise RuntimeError(f"{version} did not start")
        revision = str(self.status()["canaryRevision"])
        if not self.wait("canary traffic", lambda s: (self.route_weight() or 0) > 0, 90):
            raise RuntimeError(f"canary {version} ({revision}) got no traffic in Traefik")
        settled = time.time() + self.config.window + self.config.scrape
        if not self.wait(
            "a healthy measurement over a full window",
            lambda s: _healthy_since(s, revision, settled),
            60 + self.config.interval,
        ):
            raise RuntimeError(f"canary {version} ({revision}) was never measured healthy")
        # A regression does not wait for the next measurement: start it at a random point
        # of the interval (right after a measurement would be the worst case every time).
        phase = self.rng.uniform(0, self.config.interval)
        time.sleep(phase)
        self.bad_pods.clear()
        self._make_bad(revision, self.config.error_rate)
        jump, jump_wall = time.monotonic(), time.time()
        if not self.bad_pods:
            raise RuntimeError(f"no pod of {version} ({revision}) took the new error rate")
        self.timeline.note(
            f"{version} ({revision}) error rate jumps to {self.config.error_rate:.0%} "
            f"on {len(self.bad_pods)} pod(s)"
        )
        trial = Trial(revision, version=version, phase=phase)
        trial.to_weight_zero = self._until_weight_zero(revision, jump, deadline=jump + 120)
        abort = self._abort_of(revision, timeout=30)
        trial.abort_reason = str(abort.get("reason", ""))
        trial.abort_message = str(abort.get("message", ""))
        if trial.to_weight_zero is not None:
            time.sleep(max(0.0, jump + trial.to_weight_zero + SETTLE - time.monotonic()))
        assert self.load is not None
        assert self.route_watch is not None
        answers = self.load.answers(since=jump)
        bad = [a for a in answers if a.version == version]
        trial.bad_requests = len(bad)
        if bad:
            trial.to_last_request = max(a.at for a in bad) - jump
        written = self.route_watch.first(0, since=jump)
        trial.to_route_written = None if written is None else written - jump
        self._from_logs(trial, jump_wall)
        failed = sum(1 for a in answers if a.outcome in ("gateway error", "no answer"))
        self.timeline.note(
            f"{version}: route written {seconds(trial.to_route_written)}, Traefik weight 0 "
            f"after {seconds(trial.to_weight_zero)}, last answer from {version} "
            f"{seconds(trial.to_last_request)} ({trial.abort_reason}); "
            f"{failed} requests failed at the Gateway meanwhile"
        )
        self._until_gone(revision, version)
        return trial

    def _until_weight_zero(self, revision: str, jump: float, deadline: float) -> float | None:
        """Seconds from ``jump`` until Traefik gives the canary 0% (its API polled every
        10 ms); a pod of ``revision`` that starts meanwhile gets the error rate too."""
        next_pods = jump + 0.5
        while time.monotonic() < deadline:
            if self.route_weight() == 0:
                return time.monotonic() - jump
            if time.monotonic() >= next_pods:
                self._make_bad(revision, self.config.error_rate)
                next_pods = time.monotonic() + 0.5
            time.sleep(0.01)
        return None

    def _abort_of(self, revision: str, timeout: float) -> dict[str, Any]:
        """The status's abort once it names ``revision`` (empty if it never does)."""
        found: dict[str, Any] = {}

        def aborted(status: dict[str, Any]) -> bool:
            abort = status.get("abort") or {}
            if abort.get("revision") == revision:
                found.update(abort)
                return True
            return False

        self.wait(f"the abort of {revision}", aborted, timeout)
        return found

    def _until_gone(self, revision: str, version: str, timeout: float = 60) -> None:
        """Wait until ``revision`` has no pod left (its ReplicaSet goes to 0 after
        ``abortScaleDownDelaySeconds``), so that nothing of this trial serves during the
        next."""

        def gone(_: dict[str, Any]) -> bool:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"stepwise.dev/revision={revision}"
            ).items
            return not pods

        if not self.wait(f"the pods of {version} to go", gone, timeout):
            raise RuntimeError(f"the pods of {version} ({revision}) were not scaled down")
        self.bad_pods.clear()

    def _from_logs(self, trial: Trial, jump_wall: float) -> None:
        """The first Failed measurement and the SetWeight 0 decision after the jump (the
        ``measured`` line names no Rollout; this controller watches only this namespace,
        whose one Rollout is ``checkout``)."""
        assert self.controller is not None
        for entry in self.controller.logs():
            if entry.get("rollout") not in (None, "checkout") or log_time(entry) < jump_wall:
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

    def close(self) -> None:
        """Stop the route watch, then the scenario; delete the HTTPRoute, so that the next
        configuration's Gateway (same name) does not also take this namespace's route."""
        try:
            if self.route_watch is not None:
                self.route_watch.stop()
        finally:
            super().close()
        try:
            self.custom.delete_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes", ROUTE
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


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
    endpoints: Endpoints,
    workdir: Path,
    config: Config,
    trials: int,
    say: Callable[[str], None],
    index: int,
) -> ConfigResult:
    """Every trial of one configuration, with its own namespace, data plane and
    controller."""
    namespace = f"rollback-{index}"
    (workdir / namespace).mkdir(parents=True, exist_ok=True)
    scenario = RollbackScenario(endpoints, workdir / namespace, say, namespace, config)
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
    ("to_route_written", "-> weight 0 in the HTTPRoute"),
    ("to_weight_zero", "-> weight 0 in Traefik"),
    ("to_last_request", "-> last answer from canary"),
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
    quiet_logs()  # the HTTPRoute watch runs the controller's informer in this process
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
    with LoadMonitor() as load, bench_cluster(nodes=1) as (cluster, _):
        for index, config in enumerate(configs):
            print(f"  {config.label} ...", flush=True)
            results.append(run_config(cluster.endpoints, workdir, config, args.trials, say, index))
    timeline.close()
    took = time.monotonic() - started
    print()
    print(
        "Regression to rollback (demo-app pods, 60 req/s through Traefik's Gateway, canary at 20%)"
    )
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
