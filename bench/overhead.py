"""Controller overhead: from a failing measurement being available to the route write.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.overhead [--trials 100]

The controller runs in this process, unmodified: a
:class:`controller.runtime.manager.Manager` (informers, work queue, workers, the real
:class:`~controller.runtime.reconciler.Reconciler` and Kubernetes adapter) against a
real local API server, with the real Gateway API router writing a real HTTPRoute. Two
things are injected through the Manager's constructor, as its tests do:

* the **measurer** (:class:`InjectedMeasurer`) answers Successful until a trial arms it,
  then Failed; it notes the instant it returns the first Failed measurement;
* the **router factory** wraps each router the registry builds in a
  :class:`TimedRouter`, which notes when ``set_weight(0)`` is called and when it
  returns (the router has then read the route, patched it, and read it back to verify).

So the figures are the controller's own work between the two: building the observed
world, ``core.plan`` deciding the abort, and the route write with its verification;
nothing of Prometheus or of the analysis interval. The objects are the demo's
(:func:`demodriver.scenario.manifests`), with the canary held at 20% by a long pause and
a 1 s analysis interval. There is no data plane: the HTTPRoute names a Gateway that no
implementation serves (:data:`PARENT_REF`), and the pods are not opted in to being
served, so kwok makes them Ready by itself. Each trial releases a new revision, waits
until it has 20% and a Successful measurement, arms the measurer and waits for the
rollback. It prints p50, p95, p99 and max and writes ``bench/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kubernetes import client

from bench.harness import (
    LoadMonitor,
    Machine,
    bench_cluster,
    create_namespace,
    load_line,
    machine_line,
    quiet_logs,
    render_table,
    summarize,
    write_results,
)
from controller.adapters.traffic import Router
from controller.adapters.traffic import registry as traffic_registry
from controller.api.rollout import HeaderMatch, Rollout, RolloutStatus, RouteMatch
from controller.core import analysis as an
from controller.core.measurement import Outcome
from controller.core.model import TrafficState, Weights
from controller.runtime.manager import Manager
from controller.settings import Settings
from demodriver.scenario import GROUP, VERSION, manifests
from podrunner import SERVE_ANNOTATION

NAMESPACE = "overhead"
#: The HTTPRoute's parent: a Gateway that nothing implements (only the route's weights
#: are measured here, as the controller writes them).
PARENT_REF: dict[str, Any] = {"name": "demo-gateway"}
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1h"}}]
PLURALS = {"template": "analysistemplates", "rollout": "rollouts"}


class InjectedMeasurer:
    """A Taker: Successful measurements until armed, then Failed ones."""

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.failed_at: float | None = None
        self._lock = threading.Lock()

    def arm(self) -> None:
        """Fail from the next measurement on."""
        with self._lock:
            self.failed_at = None
        self.armed.set()

    def disarm(self) -> None:
        """Succeed again."""
        self.armed.clear()

    def take(self, rollout: Rollout, item: an.Due) -> Outcome:
        """One measurement: Failed while armed, else Successful."""
        if not self.armed.is_set():
            return Outcome("Successful", "1", "")
        with self._lock:
            if self.failed_at is None:
                self.failed_at = time.perf_counter()
        return Outcome("Failed", "0.5", "bench: injected failure")


@dataclass(frozen=True)
class Sample:
    """One rollback: seconds from the Failed measurement's return."""

    to_call: float
    """... to ``set_weight(0)`` being called."""
    to_written: float
    """... to ``set_weight(0)`` returning (route patched and read back)."""


class Probe:
    """Pairs the measurer's Failed return with the next ``set_weight(0)``."""

    def __init__(self, measurer: InjectedMeasurer) -> None:
        self.measurer = measurer
        self.sample: Sample | None = None
        self.done = threading.Event()

    def reset(self) -> None:
        """Before a trial."""
        self.sample = None
        self.done.clear()

    def weight_zero(self, called: float, returned: float) -> None:
        """``set_weight(0)`` ran from ``called`` to ``returned`` (perf_counter)."""
        failed = self.measurer.failed_at
        if failed is None or self.done.is_set() or called < failed:
            return
        self.sample = Sample(called - failed, returned - failed)
        self.done.set()


class TimedRouter:
    """A Router that times ``set_weight(0)`` and delegates everything to the real one."""

    def __init__(self, inner: Router, probe: Probe) -> None:
        self.inner = inner
        self.probe = probe

    def observe(self) -> TrafficState:
        """The real router's view."""
        return self.inner.observe()

    def set_weight(self, weight: int, extra: Weights = ()) -> None:
        """Write through the real router; time it when the weight is 0."""
        called = time.perf_counter()
        self.inner.set_weight(weight, extra)
        if weight == 0:
            self.probe.weight_zero(called, time.perf_counter())

    def set_header_route(self, name: str, match: tuple[HeaderMatch, ...]) -> None:
        """Delegated."""
        self.inner.set_header_route(name, match)

    def remove_header_route(self, name: str) -> None:
        """Delegated."""
        self.inner.remove_header_route(name)

    def set_mirror_route(self, name: str, match: tuple[RouteMatch, ...], percentage: int) -> None:
        """Delegated."""
        self.inner.set_mirror_route(name, match, percentage)

    def planned(self, status: RolloutStatus) -> None:
        """Delegated."""
        self.inner.planned(status)


def apply_demo_objects(api: client.ApiClient) -> None:
    """The demo's Services, HTTPRoute, AnalysisTemplate and Rollout, with a 1 s interval,
    a count that outlasts the run, and the canary held at 20%."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    for kind, body in manifests(PARENT_REF):
        if kind == "service":
            core.create_namespaced_service(NAMESPACE, body)  # type: ignore[arg-type]
            continue
        if kind == "route":
            custom.create_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", body
            )
            continue
        if kind == "template":
            body["spec"]["metrics"][0].update(interval="1s", count=100_000)
        else:
            body["spec"]["strategy"]["canary"]["steps"] = STEPS
            # No pod runner here: a pod that asks to be served would never be Ready.
            body["spec"]["template"]["metadata"]["annotations"].pop(SERVE_ANNOTATION)
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURALS[kind], body)


def _measured_successfully(status: Mapping[str, Any], revision: str) -> bool:
    for run in status.get("analysisRuns") or []:
        if run.get("revision") == revision:
            for metric in run.get("metrics") or []:
                if metric.get("successful", 0) > 0:
                    return True
    return False


def run(api: client.ApiClient, trials: int, say: Any) -> tuple[list[Sample], int]:
    """Start the in-process controller, run the trials; (samples, trials that timed out)."""
    measurer = InjectedMeasurer()
    probe = Probe(measurer)
    build = traffic_registry.factory(api, lambda: None)

    def routers(rollout: Rollout) -> Router | None:
        inner = build(rollout)
        return None if inner is None else TimedRouter(inner, probe)

    settings = Settings(
        namespaces=(NAMESPACE,),
        workers=4,
        leader_election=False,
        health_port=0,
        bind_address="127.0.0.1",
        log_format="console",
        log_level="warning",
    )
    create_namespace(api, NAMESPACE)
    manager = Manager(settings, api, measurer=measurer, routers=routers)
    manager.start()
    custom = client.CustomObjectsApi(api)
    key = f"{NAMESPACE}/checkout"
    samples: list[Sample] = []
    missed = 0

    def status() -> dict[str, Any]:
        cached = manager.informers.rollouts.get(key) or {}
        return dict(cached.get("status") or {})

    def wait(check: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(status()):
                return True
            time.sleep(0.05)
        return False

    try:
        apply_demo_objects(api)
        if not wait(lambda s: s.get("phase") == "Healthy", 60):
            raise RuntimeError("the first revision never became Healthy")
        for number in range(1, trials + 1):
            measurer.disarm()
            probe.reset()
            old = {status().get("canaryRevision"), status().get("stableRevision")}
            ops = [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": f"demo/checkout:o{number}",
                }
            ]
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "rollouts", "checkout", ops,
                _content_type="application/json-patch+json",
            )  # fmt: skip
            ready = wait(
                lambda s, old=old: (
                    s.get("canaryRevision") not in old
                    and s.get("canaryWeight") == 20
                    and _measured_successfully(s, str(s.get("canaryRevision")))
                ),
                60,
            )
            if not ready:
                raise RuntimeError(f"trial {number}: the canary never reached 20% healthily")
            measurer.arm()
            if probe.done.wait(30) and probe.sample is not None:
                samples.append(probe.sample)
            else:
                missed += 1
            if number % 10 == 0:
                say(f"  {number}/{trials} trials")
    finally:
        manager.stop()
    return samples, missed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trials, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args(argv)
    quiet_logs()
    machine = Machine.current()
    started = time.monotonic()
    print(f"overhead benchmark: {args.trials} rollbacks, controller in-process", flush=True)
    with LoadMonitor() as load, bench_cluster(nodes=1) as (_, api):
        samples, missed = run(api, args.trials, lambda s: print(s, flush=True))
    took = time.monotonic() - started
    to_call = summarize([s.to_call * 1000 for s in samples])
    to_written = summarize([s.to_written * 1000 for s in samples])
    target = 100.0
    rows = [
        [label, str(int(q["n"]))]
        + [f"{q[k]:.1f}" for k in ("median", "p95", "p99", "max")]
        + [
            f"{target:.0f}" if last else "",
            ("met" if q["p99"] < target else "MISSED") if last else "",
        ]
        for label, q, last in (
            ("-> set_weight(0) called", to_call, False),
            ("-> route written and verified", to_written, True),
        )
    ]
    print()
    print("Controller overhead: a Failed measurement returned -> the route write (ms)")
    print(
        "controller in-process (Manager, 4 workers, no leader election), real API server, "
        "real Gateway API router and HTTPRoute, injected measurer"
    )
    print(machine_line(machine))
    print(load_line(load.summary()))
    print()
    header = ["from the Failed measurement", "n", "p50", "p95", "p99", "max", "target p99", ""]
    print(render_table(header, rows))
    print(f"\n{len(samples)} samples, {missed} trials without a rollback, in {took:.0f}s")
    path = write_results(
        "overhead",
        {
            "machine": asdict(machine),
            "load": load.summary(),
            "seconds": round(took, 1),
            "trials": args.trials,
            "missed": missed,
            "summary_ms": {"to_call": to_call, "to_written": to_written},
            "target_p99_ms": target,
            "samples": [asdict(s) for s in samples],
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
