"""Scale: the controller with 100 and then 1,000 Rollouts, 10% of them progressing.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.scale [--sizes 100,1000] [--idle-window 60]

A local control plane with four kwok nodes and the controller as a process
(:class:`localcluster.controller.ControllerProcess`, 4 workers, all namespaces, no leader
election). Rollouts are in replica-ratio mode (no router, no Services) so each costs one
ReplicaSet and one or two pods; every tenth has 2 replicas and is the one that will
progress, the others have 1. For each size, cumulatively (the 1,000 case adds 900 to the
100 of the first):

1. the new Rollouts are created by a few client threads, and the benchmark waits until
   every one is Healthy, then until the controller has run no reconcile for 10 s (the
   ReplicaSet controller catches up on status updates, each of which queues a Rollout);
2. **idle window**: nothing changes for ``--idle-window`` seconds; the controller's CPU
   time (``/proc/<pid>/stat``), ``stepwise_api_requests_total`` (every request the
   controller makes: ReplicaSets, Services, status, Events, and the informers' lists and
   watch renewals, which an idle fleet shares; this mode has no traffic routers) and
   ``stepwise_reconcile_total`` are read before and after;
3. **progressing window**: the 10% get a new image and go through ``setWeight 50``,
   three 5 s pauses and ``setWeight 100`` to promotion; the same counters are read from
   the trigger until the last of them is Healthy. Requests per progressing Rollout are
   what the window used beyond the idle rate of the others, per minute and per release
   (the whole progression);
4. **pause lateness**: from every status version the benchmark's watch saw, each pause
   ended ``stepStartTime(i + 1) - pauseStartTime(i) - duration`` late (both stamped by
   the controller at the reconcile that decided).

Two analysis cases follow (``--no-analysis`` skips them):

5. **requests** (before the sizes, on a quiet cluster): one Gateway API Rollout (two
   Services, an HTTPRoute) whose analysis step measures every 1 s against a stand-in
   Prometheus answering in 200 ms (:mod:`bench.analysis_load`). The controller's
   ``stepwise_api_requests_total`` is read over ``--requests-window`` seconds while it is
   idle, then over as long while the canary is in analysis; the difference per minute is
   what a progressing canary costs (Flagger measured 104 a minute at a 10 s interval).
6. **analysis at scale** (after the last size): the 10% get a new image whose second
   step is an analysis measuring every 10 s against the 200 ms stand-in, so about 10
   queries a second are in flight. After ``--analysis-window`` seconds, ``--aborts``
   of them are aborted by annotation (abort latency: acknowledgement of the annotation
   to the first status with the abort and canary weight 0; the stable ReplicaSet, at
   half size during the step, must be back at full size and Ready before the canary
   goes, so the table also gives the time to the first status recording the abort,
   which is the controller's own reaction), and ``--reconciles`` Rollouts without
   analysis get a spec change (``spec.paused`` flipped; reconcile latency:
   acknowledgement to the first status that shows the new generation). Then 20 of the
   Rollouts in analysis get a release whose analysis uses a provider that accepts
   connections and never answers, and both latencies are measured again (half of the
   aborts on those 20, half on the others).

RSS is sampled every second (``/proc/<pid>/status``) for the peak. 429 answers are
counted three ways: the controller's metric (``code="429"``: counted once per call,
after retries), the controller's retry log lines with status 429, and the API server's
own ``apiserver_request_total{code="429"}`` (any client). It prints one column per size
and writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from bench import analysis_load as al
from bench.harness import (
    Fleet,
    LoadMonitor,
    Machine,
    Member,
    ProcessSampler,
    StatusRecorder,
    Usage,
    apiserver_429s,
    bench_cluster,
    create_namespace,
    healthy_on,
    load_line,
    machine_line,
    pause_lateness,
    quiet_logs,
    render_table,
    retried_429s,
    revision_with_image,
    rss_bytes,
    summarize,
    write_results,
)
from localcluster import LocalCluster
from localcluster.controller import ControllerProcess

STEPS: list[dict[str, Any]] = [
    {"setWeight": 50},
    {"pause": {"duration": "5s"}},
    {"pause": {"duration": "5s"}},
    {"pause": {"duration": "5s"}},
    {"setWeight": 100},
]
PER_NAMESPACE = 100
RSS_TARGET_MB = 300.0
MB = 1024 * 1024


@dataclass
class SizeResult:
    """What one size did."""

    rollouts: int
    progressing: int
    create_seconds: float = 0.0
    healthy_seconds: float | None = None
    not_healthy: int = 0
    settle_seconds: float = 0.0
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0
    cpu_idle_percent: float = 0.0
    cpu_progressing_percent: float = 0.0
    idle_window_seconds: float = 0.0
    progress_window_seconds: float = 0.0
    not_promoted: int = 0
    requests_per_min_idle: float = 0.0
    reconciles_per_min_idle: float = 0.0
    requests_per_min_progressing: float = 0.0
    requests_per_release: float = 0.0
    lateness: list[float] = field(default_factory=list)
    passes_per_release: float = 0.0
    """Reconcile passes in the progressing window, per progressing Rollout."""
    cpu_ms_per_pass: float = 0.0
    """Controller CPU in the progressing window, per reconcile pass."""
    controller_429: float = 0.0
    retried_429: int = 0
    apiserver_429: float = 0.0
    load: dict[str, float] = field(default_factory=dict)


def members(start: int, stop: int) -> list[Member]:
    """Rollouts ``start`` to ``stop - 1``: 100 a namespace, every tenth with 2 replicas."""
    return [
        Member(f"scale-{i // PER_NAMESPACE:02d}", f"r{i:04d}", 2 if i % 10 == 0 else 1)
        for i in range(start, stop)
    ]


@dataclass
class Bench:
    """The running pieces every size uses."""

    cluster: LocalCluster
    fleet: Fleet
    recorder: StatusRecorder
    controller: ControllerProcess
    sampler: ProcessSampler
    args: argparse.Namespace
    say: Callable[[str], None]
    existing: list[Member] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The controller's process id."""
        assert self.controller.proc is not None
        return self.controller.proc.pid

    def usage(self) -> Usage:
        """The controller's CPU time and API request counters now."""
        return Usage.of(self.pid, self.controller.metrics())

    def measure(self, size: int) -> SizeResult:
        """Grow the fleet to ``size`` and measure it idle and with 10% progressing."""
        fresh = members(len(self.existing), size)
        self.existing.extend(fresh)
        progressing = [m for m in self.existing if m.replicas == 2]
        result = SizeResult(rollouts=size, progressing=len(progressing))
        api_429_before = apiserver_429s(self.cluster.endpoints)
        start = self.usage()
        log_mark = time.time()
        with LoadMonitor() as load:
            self.grow(fresh, result)
            idle_rate = self.idle(result)
            self.progress(progressing, idle_rate, result)
        result.load = load.summary()
        result.rss_peak_mb = self.sampler.peak_rss / MB
        result.controller_429 = self.usage().requests_429 - start.requests_429
        result.retried_429 = retried_429s(self.controller.logs(), since=log_mark)
        result.apiserver_429 = apiserver_429s(self.cluster.endpoints) - api_429_before
        return result

    def grow(self, fresh: list[Member], result: SizeResult) -> None:
        """Create the new Rollouts and wait until every Rollout is Healthy."""
        for namespace in sorted({m.namespace for m in fresh}):
            create_namespace(self.recorder.api, namespace)
        self.say(f"  creating {len(fresh)} Rollouts ...")
        started = time.monotonic()
        result.create_seconds = self.fleet.create(fresh, STEPS)
        late = self.recorder.wait_all(
            [m.key for m in self.existing],
            healthy_on(),
            self.args.healthy_timeout,
            what="Healthy",
            progress=self.say,
        )
        result.not_healthy = len(late)
        if not late:
            result.healthy_seconds = time.monotonic() - started
        self.say(f"  {result.rollouts - len(late)}/{result.rollouts} Healthy; settling")
        result.settle_seconds = self.settle()

    def settle(self) -> float:
        """Wait until the controller has run no reconcile for ``--quiet`` seconds (the
        ReplicaSet controller may still be catching up on status updates, each of which
        queues a Rollout), at most ``--settle`` seconds; returns the time waited."""
        started = time.monotonic()
        last, changed = self.usage().reconciles, time.monotonic()
        while time.monotonic() - started < self.args.settle:
            time.sleep(1.0)
            now = self.usage().reconciles
            if now != last:
                last, changed = now, time.monotonic()
            elif time.monotonic() - changed >= self.args.quiet:
                break
        return time.monotonic() - started

    def idle(self, result: SizeResult) -> float:
        """The idle window; returns API requests per second per idle Rollout."""
        self.say(f"  idle window {self.args.idle_window:.0f}s")
        before = self.usage()
        time.sleep(self.args.idle_window)
        after = self.usage()
        window = after.at - before.at
        rate = (after.requests - before.requests) / result.rollouts / window
        result.idle_window_seconds = window
        result.requests_per_min_idle = rate * 60
        passes = after.reconciles - before.reconciles
        result.reconciles_per_min_idle = passes / result.rollouts / window * 60
        result.cpu_idle_percent = 100 * (after.cpu - before.cpu) / window
        result.rss_idle_mb = rss_bytes(self.pid) / MB
        return rate

    def progress(self, progressing: list[Member], idle_rate: float, result: SizeResult) -> None:
        """Release a new image on the 10% and measure until all are promoted."""
        image = f"registry.local/app:size{result.rollouts}"
        wanted: dict[str, str] = {}
        for m in progressing:
            cached = self.recorder.get(m.key)
            assert cached is not None
            wanted[m.key] = revision_with_image(cached, image)
        self.say(f"  {len(progressing)} Rollouts progressing")
        before = self.usage()
        self.fleet.set_image(progressing, image)
        stragglers = self.recorder.wait_each(
            {key: healthy_on(revision) for key, revision in wanted.items()},
            self.args.progress_timeout,
            what="promoted",
            progress=self.say,
        )
        after = self.usage()
        window = after.at - before.at
        idle_share = idle_rate * (result.rollouts - len(progressing)) * window
        beyond_idle = after.requests - before.requests - idle_share
        result.not_promoted = len(stragglers)
        result.progress_window_seconds = window
        result.requests_per_min_progressing = beyond_idle / len(progressing) / window * 60
        result.requests_per_release = beyond_idle / len(progressing)
        result.cpu_progressing_percent = 100 * (after.cpu - before.cpu) / window
        passes = after.reconciles - before.reconciles
        result.passes_per_release = passes / len(progressing)
        result.cpu_ms_per_pass = 1000 * (after.cpu - before.cpu) / max(passes, 1)
        for key, revision in wanted.items():
            snapshots = self.recorder.snapshots(key)
            result.lateness += pause_lateness(snapshots, revision, STEPS).values()


HUNG_RELEASES = 20


def requests_case(bench: Bench, prom: al.SlowPrometheus) -> al.RequestsResult:
    """Requests of one Gateway API canary in analysis at a 1 s interval (case 5)."""
    api, say, window = bench.recorder.api, bench.say, bench.args.requests_window
    namespace, name = "scale-requests", "web"
    create_namespace(api, namespace)
    al.gateway_objects(api, namespace, name)
    al.apply_template(api, namespace, al.template("every-second", prom.url, "1s", 100000))
    custom = client.CustomObjectsApi(api)
    doc = al.gateway_rollout(name, "every-second")
    custom.create_namespaced_custom_object(al.GROUP, al.VERSION, namespace, "rollouts", doc)
    key = f"{namespace}/{name}"
    bench.recorder.wait_all([key], healthy_on(), 120, what="Healthy")
    bench.settle()
    result = al.RequestsResult()
    say(f"  requests: idle window {window:.0f}s")
    before = bench.usage()
    time.sleep(window)
    after = bench.usage()
    result.idle_per_min = al.usage_delta(before, after) / (after.at - before.at) * 60
    member = Member(namespace, name, 2)
    revision = al.release(
        api,
        bench.recorder,
        member,
        "registry.local/app:req",
        doc["spec"]["strategy"]["canary"]["steps"],
    )
    late = bench.recorder.wait_each({key: al.in_analysis(revision)}, 120, what="in analysis")
    if late:
        raise RuntimeError(f"{key} never reached its analysis step")
    time.sleep(5)  # the first measurement is taken and written
    say(f"  requests: analysis window {window:.0f}s")
    verbs_before = al.requests_by_verb(bench.controller.metrics())
    queries_before = prom.queries
    before = bench.usage()
    time.sleep(window)
    after = bench.usage()
    verbs_after = al.requests_by_verb(bench.controller.metrics())
    minutes = (after.at - before.at) / 60
    result.window_seconds = after.at - before.at
    result.analysis_per_min = al.usage_delta(before, after) / minutes - result.idle_per_min
    result.measurements = (prom.queries - queries_before) / minutes
    result.by_verb = {
        verb: round((verbs_after.get(verb, 0) - verbs_before.get(verb, 0)) / minutes, 1)
        for verb in sorted(verbs_after)
    }
    client.CoreV1Api(api).delete_namespace(namespace)
    say(
        f"  requests/min: idle {result.idle_per_min:.1f}, in analysis beyond idle "
        f"{result.analysis_per_min:.1f} ({result.by_verb})"
    )
    return result


def analysis_case(
    bench: Bench, slow: al.SlowPrometheus, hung: al.HungPrometheus
) -> list[al.LatencyResult]:
    """Abort and reconcile latency with 10% in analysis, then with one provider hung (6)."""
    api, say, args = bench.recorder.api, bench.say, bench.args
    progressing = [m for m in bench.existing if m.replicas == 2]
    idle = [m for m in bench.existing if m.replicas == 1]
    for namespace in sorted({m.namespace for m in progressing}):
        al.apply_template(api, namespace, al.template("slow", slow.url, "10s", 100000))
        al.apply_template(api, namespace, al.template("hung", hung.url, "10s", 100000))
    results = []
    running: dict[Member, str] = {}
    for condition, template_name, releasing in (
        ("200 ms provider", "slow", progressing),
        ("one provider hung", "hung", progressing[args.aborts : args.aborts + HUNG_RELEASES]),
    ):
        result = al.LatencyResult(condition)
        image = f"registry.local/app:{template_name}"
        say(f"  analysis ({condition}): releasing {len(releasing)}")
        for m in releasing:
            running[m] = al.release(api, bench.recorder, m, image, al.analysis_steps(template_name))
        late = bench.recorder.wait_each(
            {m.key: al.in_analysis(running[m]) for m in releasing}, 300, what="in analysis"
        )
        result.in_analysis = len(running) - len(late)
        queries = slow.queries
        time.sleep(args.analysis_window)
        result.provider_queries = round((slow.queries - queries) / args.analysis_window, 1)
        if template_name == "slow":
            targets = progressing[: args.aborts]
        else:
            half = args.aborts // 2
            others = [m for m in running if m not in releasing]
            targets = releasing[:half] + others[-(args.aborts - half) :]
        result.abort_seconds, result.abort_missed, result.abort_seen_seconds = al.abort_latency(
            api, bench.recorder, {m: running.pop(m) for m in targets}, 120
        )
        chosen = (
            idle[: args.reconciles]
            if template_name == "slow"
            else idle[args.reconciles : 2 * args.reconciles]
        )
        result.reconcile_seconds, result.reconcile_missed = al.reconcile_latency(
            api, bench.recorder, chosen, 120
        )
        say(
            f"  abort p99 {result.p99(result.abort_seconds)}, "
            f"reconcile p99 {result.p99(result.reconcile_seconds)}"
        )
        results.append(result)
    return results


def analysis_table(
    requests: al.RequestsResult | None, latency: Sequence[al.LatencyResult], size: int
) -> str:
    """The analysis cases."""
    rows: list[list[str]] = []
    if requests is not None:
        rows += [
            ["requests/min, one Gateway API canary idle", f"{requests.idle_per_min:.1f}", ""],
            [
                "requests/min beyond idle, in analysis at 1 s",
                f"{requests.analysis_per_min:.1f}",
                "< 104 (Flagger at 10 s)",
            ],
            [
                "  by verb (raw, per min)",
                ", ".join(f"{v} {n:g}" for v, n in requests.by_verb.items()),
                "",
            ],
            ["  measurements/min in that window", f"{requests.measurements:.0f}", ""],
        ]
    for r in latency:

        def q(values: Sequence[float], missed: int) -> str:
            s = summarize(values)
            if not s["n"]:
                return f"none ({missed} missed)"
            text = f"{s['median']:.2f} / {s['p99']:.2f} / {s['max']:.2f}s (n={s['n']:.0f})"
            return text + (f", {missed} missed" if missed else "")

        rows += [
            [f"{size:,} Rollouts, {r.name}: in analysis", str(r.in_analysis), ""],
            ["  200 ms provider queries/s", f"{r.provider_queries:g}", ""],
            [
                "  abort latency median / p99 / max",
                q(r.abort_seconds, r.abort_missed),
                "p99 <= 2 s",
            ],
            [
                "    of which to the abort in status",
                q(r.abort_seen_seconds, 0),
                "",
            ],
            [
                "  no-analysis reconcile median / p99 / max",
                q(r.reconcile_seconds, r.reconcile_missed),
                "p99 <= 2 s",
            ],
        ]
    return render_table(["analysis cases", "measured", "target"], rows)


def _load(r: SizeResult) -> str:
    return f"{r.load.get('load1_mean', 0):.2f} / {r.load.get('load1_max', 0):.2f}"


def table(results: Sequence[SizeResult]) -> str:
    """One column per size."""

    def each(fn: Callable[[SizeResult], str]) -> list[str]:
        return [fn(r) for r in results]

    def late(r: SizeResult) -> str:
        q = summarize(r.lateness)
        if not q["n"]:
            return "-"
        return f"{q['median']:.2f} / {q['p95']:.2f} / {q['max']:.2f}s (n={q['n']:.0f})"

    rows = [
        ["progressing (10%)", *each(lambda r: str(r.progressing)), ""],
        ["created in (4 client threads)", *each(lambda r: f"{r.create_seconds:.0f}s"), ""],
        [
            "until all Healthy",
            *each(
                lambda r: (
                    f"{r.healthy_seconds:.0f}s"
                    if r.healthy_seconds is not None
                    else f"{r.not_healthy} never"
                )
            ),
            "",
        ],
        ["then until no reconcile for 10 s", *each(lambda r: f"{r.settle_seconds:.0f}s"), ""],
        ["controller RSS, idle", *each(lambda r: f"{r.rss_idle_mb:.0f} MB"), ""],
        [
            "controller RSS, peak so far",
            *each(lambda r: f"{r.rss_peak_mb:.0f} MB"),
            f"< {RSS_TARGET_MB:.0f} MB at 1,000",
        ],
        ["controller CPU, idle (% of a core)", *each(lambda r: f"{r.cpu_idle_percent:.1f}%"), ""],
        [
            "controller CPU, 10% progressing",
            *each(lambda r: f"{r.cpu_progressing_percent:.1f}%"),
            "",
        ],
        [
            "reconcile passes per release / CPU per pass",
            *each(lambda r: f"{r.passes_per_release:.1f} / {r.cpu_ms_per_pass:.1f} ms"),
            "",
        ],
        [
            "API requests/min per idle Rollout",
            *each(lambda r: f"{r.requests_per_min_idle:.3f}"),
            "",
        ],
        [
            "reconcile passes/min per idle Rollout",
            *each(lambda r: f"{r.reconciles_per_min_idle:.3f}"),
            "",
        ],
        [
            "API requests/min per progressing Rollout",
            *each(lambda r: f"{r.requests_per_min_progressing:.1f}"),
            "",
        ],
        [
            "API requests per release (whole progression)",
            *each(lambda r: f"{r.requests_per_release:.1f}"),
            "",
        ],
        [
            "progressing window (all promoted)",
            *each(
                lambda r: (
                    f"{r.progress_window_seconds:.0f}s"
                    + (f" ({r.not_promoted} not)" if r.not_promoted else "")
                )
            ),
            "",
        ],
        ["pause lateness median / p95 / max", *each(late), ""],
        [
            "429s: metric / retried (logs) / API server",
            *each(lambda r: f"{r.controller_429:.0f} / {r.retried_429} / {r.apiserver_429:.0f}"),
            "none at 1,000",
        ],
        ["load avg 1 min mean / max", *each(_load), ""],
    ]
    header = ["", *[f"{r.rollouts:,} Rollouts" for r in results], "target"]
    return render_table(header, rows)


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="cumulative fleet sizes")
    parser.add_argument("--idle-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--settle", type=float, default=180.0, help="max seconds to settle")
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds without reconciles")
    parser.add_argument("--healthy-timeout", type=float, default=900.0, help="seconds")
    parser.add_argument("--progress-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--no-analysis", action="store_true", help="skip cases 5 and 6")
    parser.add_argument("--requests-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--analysis-window", type=float, default=30.0, help="seconds")
    parser.add_argument("--aborts", type=int, default=10)
    parser.add_argument("--reconciles", type=int, default=50)
    return parser.parse_args(argv)


@dataclass
class Outcome:
    """Everything one run measured."""

    results: list[SizeResult] = field(default_factory=list)
    requests: al.RequestsResult | None = None
    latency: list[al.LatencyResult] = field(default_factory=list)


def run(
    args: argparse.Namespace, sizes: list[int], workdir: Path
) -> tuple[Outcome, dict[str, float]]:
    """Start the cluster and the controller, run every case; the outcome and the load."""
    out = Outcome()

    def say(line: str) -> None:
        print(line, flush=True)

    with (
        LoadMonitor() as load,
        bench_cluster(nodes=args.nodes) as (cluster, api),
        al.SlowPrometheus(0.2) as slow,
        al.HungPrometheus() as hung,
    ):
        controller = ControllerProcess(
            cluster.endpoints.kubeconfig,
            workdir,
            name="scale",
            extra=["--log-level=info", "--workers=4"],
        )
        recorder = StatusRecorder(api)
        recorder.start()
        controller.start()
        assert controller.proc is not None
        sampler = ProcessSampler(controller.proc.pid)
        sampler.start()
        bench = Bench(cluster, Fleet(api, workers=4), recorder, controller, sampler, args, say)
        try:
            if not args.no_analysis:
                say("requests case")
                out.requests = requests_case(bench, slow)
            for size in sizes:
                say(f"{size} Rollouts")
                out.results.append(bench.measure(size))
            if not args.no_analysis:
                say(f"analysis case at {sizes[-1]:,}")
                out.latency = analysis_case(bench, slow, hung)
        finally:
            sampler.stop()
            controller.stop()
            recorder.stop()
    return out, load.summary()


def main(argv: Sequence[str] | None = None) -> int:
    """Run each size and case, print the tables, write the JSON."""
    args = arguments(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="stepwise-bench-scale-"))
    machine = Machine.current()
    started = time.monotonic()
    quiet_logs()
    print(f"scale benchmark: sizes {sizes}; logs in {workdir}", flush=True)
    out, load = run(args, sizes, workdir)
    took = time.monotonic() - started
    print()
    print("Scale: the controller process with N Rollouts (replica-ratio mode, kwok nodes)")
    print(
        f"{args.nodes} kwok nodes, 4 workers, 10% progressing through setWeight 50, three "
        f"5s pauses, setWeight 100; idle window {args.idle_window:.0f}s"
    )
    print(machine_line(machine))
    print(load_line(load))
    print()
    print(table(out.results))
    if not args.no_analysis:
        print()
        print(analysis_table(out.requests, out.latency, sizes[-1]))
    print(f"\nin {took:.0f}s")
    path = write_results(
        "scale",
        {
            "machine": asdict(machine),
            "load": load,
            "seconds": round(took, 1),
            "steps": STEPS,
            "config": vars(args),
            "results": [
                {**asdict(r), "lateness_summary": summarize(r.lateness)} for r in out.results
            ],
            "requests": asdict(out.requests) if out.requests is not None else None,
            "analysis": [asdict(r) for r in out.latency],
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
