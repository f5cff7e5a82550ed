"""Burst: 200 Rollouts get a new image at once; how long until every one has moved.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.burst [--rollouts 200] [--clients 16]

A local control plane with two kwok nodes and the controller as a process (4 workers by
default, ``--workers``; no leader election). The Rollouts are in replica-ratio mode with
1 replica and the steps ``setWeight 50`` then an indefinite pause. Once all are Healthy,
every image is changed by ``--clients`` threads as fast as the API server takes it, and
the benchmark's watch notes, for each Rollout, the first status of the new revision that
has taken its first step (``currentStepIndex >= 1`` or ``canaryWeight > 0``).

Reported: the time from each Rollout's own image change to the controller creating its
canary ReplicaSet (from the controller's log: its own share) and to its first step
(which also waits for the cluster to start and ready a pod), the time
from the first image change until every Rollout has moved, the work queue's deepest
point (``stepwise_workqueue_depth`` sampled every 250 ms), reconcile passes and their
mean duration, and 429 answers three ways (the controller's metric, counted once per
call after retries; its retry log lines with status 429; the API server's
``apiserver_request_total{code="429"}``, any client). It writes
``bench/results/burst.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.harness import (
    Fleet,
    LoadMonitor,
    Machine,
    Member,
    StatusRecorder,
    apiserver_429s,
    bench_cluster,
    create_namespace,
    healthy_on,
    load_line,
    log_time,
    machine_line,
    metric_sum,
    quiet_logs,
    render_table,
    retried_429s,
    revision_with_image,
    seconds,
    summarize,
    write_results,
)
from localcluster import LocalCluster
from localcluster.controller import ControllerProcess

STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]


class DepthSampler:
    """Samples the controller's work-queue depth while the burst runs."""

    def __init__(self, controller: ControllerProcess, every: float = 0.25) -> None:
        self.controller = controller
        self.every = every
        self.depths: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="depth-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                text = self.controller.metrics()
            except OSError:
                continue
            self.depths.append(metric_sum(text, "stepwise_workqueue_depth"))

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)


def first_step(revision: str) -> Any:
    """Predicate: the status shows ``revision`` as the canary and its first step taken."""

    def check(status: dict[str, Any]) -> bool:
        return status.get("canaryRevision") == revision and (
            int(status.get("currentStepIndex") or 0) >= 1
            or int(status.get("canaryWeight") or 0) > 0
        )

    return check


def canary_sets_created(
    entries: Sequence[Mapping[str, Any]],
    wanted: Mapping[str, str],
    acknowledged: Mapping[str, float],
    since: float,
) -> list[float]:
    """Per Rollout, seconds from its acknowledged image change to the controller's
    ``replicaset created`` log line for the new revision (log times are wall-clock, the
    acknowledgements monotonic: one offset converts)."""
    offset = time.time() - time.monotonic()
    found: list[float] = []
    for e in entries:
        if e.get("event") != "replicaset created" or log_time(e) < since:
            continue
        key = f"{e.get('namespace')}/{e.get('rollout')}"
        if wanted.get(key) == e.get("revision") and key in acknowledged:
            found.append(log_time(e) - offset - acknowledged[key])
    return found


@dataclass
class BurstResult:
    """What the burst did."""

    sent: float = 0.0
    """Seconds to send every image change."""
    from_patch: list[float] = field(default_factory=list)
    """Per Rollout: its image change acknowledged -> its first step seen."""
    from_first: list[float] = field(default_factory=list)
    """Per Rollout: the first image change sent -> its first step seen."""
    to_canary_set: list[float] = field(default_factory=list)
    """Per Rollout: its image change acknowledged -> the controller created the canary
    ReplicaSet (the controller's own share; the rest is the cluster starting a pod)."""
    never_moved: list[str] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    passes: float = 0.0
    mean_pass: float = 0.0
    metric_429: float = 0.0
    retried_429: int = 0
    apiserver_429: float = 0.0


def burst(
    cluster: LocalCluster, api: client.ApiClient, workdir: Path, args: argparse.Namespace
) -> BurstResult:
    """Create the Rollouts, wait until all are Healthy, change every image, measure."""
    members = [Member(f"burst-{i // 100}", f"b{i:03d}", 1) for i in range(args.rollouts)]
    keys = [m.key for m in members]
    controller = ControllerProcess(
        cluster.endpoints.kubeconfig,
        workdir,
        name="burst",
        extra=["--log-level=info", f"--workers={args.workers}"],
    )
    recorder = StatusRecorder(api)
    recorder.start()
    controller.start()
    result = BurstResult()
    try:
        for namespace in sorted({m.namespace for m in members}):
            create_namespace(api, namespace)
        Fleet(api, workers=4).create(members, STEPS)
        if recorder.wait_all(keys, healthy_on(), args.timeout):
            raise RuntimeError("not every Rollout became Healthy")
        time.sleep(5)
        image = "registry.local/app:burst"
        wanted: dict[str, str] = {}
        for key in keys:
            cached = recorder.get(key)
            assert cached is not None
            wanted[key] = revision_with_image(cached, image)
        before = controller.metrics()
        api_429_before = apiserver_429s(cluster.endpoints)
        log_mark = time.time()
        depth = DepthSampler(controller)
        depth.start()
        print(f"  changing {args.rollouts} images with {args.clients} threads", flush=True)
        t0 = time.monotonic()
        acknowledged = Fleet(api, workers=args.clients).set_image(members, image)
        result.sent = time.monotonic() - t0
        checks = {k: first_step(r) for k, r in wanted.items()}
        result.never_moved = recorder.wait_each(checks, args.timeout, what="first step")
        depth.stop()
        result.depths = depth.depths
        after = controller.metrics()
        for key, check in checks.items():
            seen = recorder.first(key, check)
            if seen is not None:
                result.from_patch.append(seen.at - acknowledged[key])
                result.from_first.append(seen.at - t0)
        result.apiserver_429 = apiserver_429s(cluster.endpoints) - api_429_before
        logs = controller.logs()
        result.retried_429 = retried_429s(logs, since=log_mark)
        result.to_canary_set = canary_sets_created(logs, wanted, acknowledged, since=log_mark)
    finally:
        controller.stop()
        recorder.stop()

    def delta(name: str, **labels: str) -> float:
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    result.passes = delta("stepwise_reconcile_duration_seconds_count")
    if result.passes:
        result.mean_pass = delta("stepwise_reconcile_duration_seconds_sum") / result.passes
    result.metric_429 = delta("stepwise_api_requests_total", code="429")
    return result


def tables(r: BurstResult) -> str:
    """The latency table and the counters."""
    latency = [
        [label, *(seconds(q.get(k)) for k in ("median", "p95", "max"))]
        for label, q in (
            ("its image change acknowledged -> canary set created", summarize(r.to_canary_set)),
            ("its image change acknowledged -> first step", summarize(r.from_patch)),
            ("first image change sent -> first step", summarize(r.from_first)),
        )
    ]
    counters = [
        ["image changes sent in", seconds(r.sent)],
        ["all Rollouts moved after", seconds(max(r.from_first, default=None))],
        ["never moved", str(len(r.never_moved))],
        ["work queue depth, max", f"{max(r.depths, default=0):.0f}"],
        ["reconcile passes / mean duration", f"{r.passes:.0f} / {r.mean_pass * 1000:.0f} ms"],
        ["429s: controller metric (after retries)", f"{r.metric_429:.0f}"],
        ["429s: retried by the controller (logs)", str(r.retried_429)],
        ["429s: API server, any client", f"{r.apiserver_429:.0f}"],
    ]
    return "\n\n".join(
        (
            render_table(["per Rollout", "median", "p95", "max"], latency),
            render_table(["", "value"], counters),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Create, trigger, measure, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16, help="threads changing images")
    parser.add_argument("--workers", type=int, default=4, help="the controller's workers")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for each phase")
    parser.add_argument(
        "--controller-manager-qps",
        type=int,
        default=None,
        help="raise kube-controller-manager's client rate limit (default 20 QPS, burst 30)",
    )
    args = parser.parse_args(argv)
    quiet_logs()
    workdir = Path(tempfile.mkdtemp(prefix="stepwise-bench-burst-"))
    machine = Machine.current()
    started = time.monotonic()
    print(f"burst benchmark: {args.rollouts} Rollouts; logs in {workdir}", flush=True)
    with (
        LoadMonitor() as load,
        bench_cluster(nodes=2, controller_manager_qps=args.controller_manager_qps) as (
            cluster,
            api,
        ),
    ):
        result = burst(cluster, api, workdir, args)
    took = time.monotonic() - started
    print()
    print(f"Burst: {args.rollouts} Rollouts get a new image at once (replica-ratio, 1 replica)")
    print(f"controller: {args.workers} workers, no leader election; {args.clients} client threads")
    qps = args.controller_manager_qps
    print(
        "kube-controller-manager client rate: "
        + (f"{qps} QPS, burst {qps * 3 // 2}" if qps else "default (20 QPS, burst 30)")
    )
    print(machine_line(machine))
    print(load_line(load.summary()))
    print()
    print(tables(result))
    print(f"\nin {took:.0f}s")
    path = write_results(
        "burst",
        {
            "machine": asdict(machine),
            "load": load.summary(),
            "seconds": round(took, 1),
            "config": vars(args),
            "steps": STEPS,
            "summary": {
                "from_patch": summarize(result.from_patch),
                "from_first": summarize(result.from_first),
            },
            "result": asdict(result),
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
