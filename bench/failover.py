"""Failover: the leader is killed (SIGKILL) while 100 Rollouts go through timed pauses.

Not part of the test command. Run it with::

    PYTHONPATH=hack .venv/bin/python -m bench.failover [--trials 3] [--long-trials 2]

A local control plane with two kwok nodes and two controller processes
(:class:`localcluster.controller.ControllerProcess`) electing a leader through one Lease,
first with the short lease the integration tests use (4 s duration, 3 s renew deadline,
0.5 s retry period) and then with the defaults (15 s, 10 s, 2 s). 100 Rollouts in
replica-ratio mode (1 replica each) go through ``setWeight 50``, four 5 s pauses and
``setWeight 100``. In each trial every Rollout gets a new image; ``--kill-after``
seconds later the leader gets SIGKILL (it cannot release the Lease), and the follower
must wait for the Lease to expire and take over. The killed process is started again as
the follower for the next trial.

Measured per trial, from the kill (wall clock) to the new leader's JSON log lines:

* ``leading``: its ``started leading`` line (the Lease is its);
* ``steps resume``: its first ``status written`` line;
* ``first step``: its first ``StepCompleted`` event line.

And, once every Rollout is promoted (or none has moved for a minute, or
``--finish-timeout`` has passed: a Rollout still progressing then is reported as
unfinished, and its steps are not judged), whether each step ran exactly once: the
``StepCompleted`` Kubernetes Events of the trial's revision are counted per Rollout and
per step (the controller names the step and the revision in each message), the same
count is made from both processes' log lines, the step index seen by the watch must
never go backwards, and no pause may end before its duration. A step without an Event
whose completion the status shows (the index moved past it; a pause lasted its
duration) is reported as an Event lost, not a step missed: the controller emits Events
after the status write, so a process killed between the two loses the Event, not the
step.
Targets: failover (steps resume) within lease duration + 2 s, and zero missed or
repeated steps. It writes ``bench/results/failover.json``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.harness import (
    Fleet,
    LoadMonitor,
    Machine,
    Member,
    StatusRecorder,
    bench_cluster,
    create_namespace,
    healthy_on,
    load_line,
    log_time,
    machine_line,
    pause_lateness,
    quiet_logs,
    render_table,
    revision_with_image,
    seconds,
    summarize,
    write_results,
)
from localcluster import LocalCluster
from localcluster.controller import ControllerProcess

NAMESPACE = "failover"
PAUSES = 4
PAUSE = "5s"
STEPS: list[dict[str, Any]] = [
    {"setWeight": 50},
    *[{"pause": {"duration": PAUSE}} for _ in range(PAUSES)],
    {"setWeight": 100},
]
STEP_COMPLETED = re.compile(r"^step (\d+) \(\w+\) of canary (\S+) completed$")


@dataclass(frozen=True)
class Lease:
    """Leader-election timing of one configuration."""

    duration: float
    renew_deadline: float
    retry_period: float

    def flags(self) -> list[str]:
        """The controller's flags for it."""
        return [
            f"--lease-duration={self.duration:g}",
            f"--renew-deadline={self.renew_deadline:g}",
            f"--retry-period={self.retry_period:g}",
        ]


SHORT = Lease(4, 3, 0.5)
DEFAULT = Lease(15, 10, 2)


@dataclass
class Trial:
    """One kill: seconds from it (None if never seen), and the step accounting."""

    lease: float
    killed: str
    rollouts: int
    leading: float | None = None
    resumed: float | None = None
    first_step: float | None = None
    promoted: int = 0
    missing_events: list[str] = field(default_factory=list)
    """``rollout/step`` without a StepCompleted Event."""
    repeated_events: list[str] = field(default_factory=list)
    """``rollout/step`` with more than one StepCompleted Event."""
    missing_logs: list[str] = field(default_factory=list)
    repeated_logs: list[str] = field(default_factory=list)
    index_went_back: list[str] = field(default_factory=list)
    """Rollouts whose step index was seen to decrease (a step done again)."""
    pauses_cut_short: list[str] = field(default_factory=list)
    """``rollout/step`` of pauses that ended before their duration."""
    events_lost: list[str] = field(default_factory=list)
    """Missing Events whose step the status shows completed (and, for a pause, honoured):
    the process died between the status write and the Event."""
    pause_lateness: list[float] = field(default_factory=list)

    @property
    def steps_missed(self) -> int:
        """Steps with no Event and no evidence in the status, plus pauses cut short."""
        return len(set(self.missing_events) - set(self.events_lost)) + len(self.pauses_cut_short)

    @property
    def steps_repeated(self) -> int:
        """Steps with several Events, plus Rollouts whose index went back."""
        return len(self.repeated_events) + len(self.index_went_back)


class Pair:
    """Two controller processes sharing one Lease."""

    def __init__(self, kubeconfig: Path, workdir: Path, lease: Lease) -> None:
        self.processes = [
            ControllerProcess(
                kubeconfig,
                workdir,
                name=f"{side}-lease{lease.duration:g}",
                namespaces=[NAMESPACE],
                leader_election=True,
                lease_name="bench-failover",
                lease_namespace=NAMESPACE,
                extra=["--log-level=info", "--workers=4", *lease.flags()],
            )
            for side in ("a", "b")
        ]

    def start(self) -> None:
        """Start both; the first leads."""
        first, second = self.processes
        first.start()
        self.leader(timeout=30)
        second.start()

    def stop(self) -> None:
        """Stop both (the leader releases the Lease)."""
        for proc in self.processes:
            proc.stop()

    def leader(self, timeout: float) -> ControllerProcess:
        """The process that leads now (waits up to ``timeout`` for one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.alive() and "stepwise_leader 1.0" in _metrics(proc):
                    return proc
            time.sleep(0.05)
        raise RuntimeError(f"no leader after {timeout:.0f}s")


def _metrics(proc: ControllerProcess) -> str:
    try:
        return proc.metrics()
    except OSError:
        return ""


def _first(
    entries: Iterable[Mapping[str, Any]], since: float, match: Callable[[Mapping[str, Any]], bool]
) -> float | None:
    for entry in entries:
        if log_time(entry) >= since and match(entry):
            return log_time(entry) - since
    return None


def count_steps(messages: Iterable[tuple[str, str]], revisions: Mapping[str, str]) -> Counter[Any]:
    """StepCompleted per (Rollout, step) for each Rollout's revision, from
    (rollout name, message) pairs."""
    counts: Counter[Any] = Counter()
    for name, message in messages:
        found = STEP_COMPLETED.match(message)
        if found and revisions.get(name) == found.group(2):
            counts[(name, int(found.group(1)))] += 1
    return counts


def missing_and_repeated(counts: Counter[Any], names: Iterable[str]) -> tuple[list[str], list[str]]:
    """``rollout/step`` counted zero times, and more than once."""
    missing: list[str] = []
    repeated: list[str] = []
    for name in names:
        for index in range(len(STEPS)):
            n = counts[(name, index)]
            if n == 0:
                missing.append(f"{name}/{index}")
            elif n > 1:
                repeated.append(f"{name}/{index}")
    return missing, repeated


class Failover:
    """The running benchmark: cluster objects, watch, fleet."""

    def __init__(
        self,
        cluster: LocalCluster,
        api: client.ApiClient,
        workdir: Path,
        rollouts: int,
        finish_timeout: float = 420.0,
        stall: float = 60.0,
    ) -> None:
        self.finish_timeout = finish_timeout
        self.stall = stall
        self.cluster = cluster
        self.api = api
        self.workdir = workdir
        self.core = client.CoreV1Api(api)
        self.recorder = StatusRecorder(api)
        self.fleet = Fleet(api, workers=8)
        self.members = [Member(NAMESPACE, f"f{i:03d}", 1) for i in range(rollouts)]
        self.trials = 0

    def setup(self, lease: Lease, timeout: float) -> None:
        """Create the namespace and the Rollouts and wait until they are Healthy."""
        create_namespace(self.api, NAMESPACE)
        self.recorder.start()
        pair = Pair(self.cluster.endpoints.kubeconfig, self.workdir, lease)
        pair.start()
        try:
            self.fleet.create(self.members, STEPS)
            keys = [m.key for m in self.members]
            if self.recorder.wait_all(keys, healthy_on(), timeout):
                raise RuntimeError("not every Rollout became Healthy")
        finally:
            pair.stop()

    def run(
        self, lease: Lease, trials: int, kill_after: float, say: Callable[[str], None]
    ) -> list[Trial]:
        """``trials`` kills with this lease timing."""
        pair = Pair(self.cluster.endpoints.kubeconfig, self.workdir, lease)
        pair.start()
        out: list[Trial] = []
        try:
            for _ in range(trials):
                out.append(self.trial(pair, lease, kill_after))
                t = out[-1]
                say(
                    f"  lease {lease.duration:g}s: leading {seconds(t.leading)}, steps resume "
                    f"{seconds(t.resumed)}, steps missed/repeated {t.steps_missed}/"
                    f"{t.steps_repeated}, Events lost {len(t.events_lost)}"
                )
        finally:
            pair.stop()
        return out

    def trial(self, pair: Pair, lease: Lease, kill_after: float) -> Trial:
        """Release a new image on every Rollout, kill the leader, follow the successor."""
        self.trials += 1
        image = f"registry.local/app:failover{self.trials}"
        wanted: dict[str, str] = {}
        for m in self.members:
            cached = self.recorder.get(m.key)
            assert cached is not None
            wanted[m.key] = revision_with_image(cached, image)
        leader = pair.leader(timeout=30)
        follower = next(p for p in pair.processes if p is not leader)
        self.fleet.set_image(self.members, image)
        time.sleep(kill_after)
        killed_at = time.time()
        leader.sigkill()
        trial = Trial(lease=lease.duration, killed=leader.name, rollouts=len(wanted))
        pair.leader(timeout=lease.duration * 3 + 10)
        late = self.until_promoted(wanted)
        trial.promoted = len(wanted) - len(late)
        entries = follower.logs()
        trial.leading = _first(entries, killed_at, lambda e: e.get("event") == "started leading")
        trial.resumed = _first(entries, killed_at, lambda e: e.get("event") == "status written")
        trial.first_step = _first(
            entries,
            killed_at,
            lambda e: e.get("event") == "event" and e.get("reason") == "StepCompleted",
        )
        finished = {k: r for k, r in wanted.items() if k not in late}
        self.account(trial, finished, [leader, follower])
        leader.start()  # the follower of the next trial
        return trial

    def until_promoted(self, wanted: Mapping[str, str]) -> list[str]:
        """Wait until every Rollout is promoted, none has moved for ``stall`` seconds, or
        ``finish_timeout`` has passed; the keys not promoted."""
        checks = {k: healthy_on(r) for k, r in wanted.items()}
        deadline = time.monotonic() + self.finish_timeout
        seen, moved = -1, time.monotonic()
        late = sorted(checks)
        while late and time.monotonic() < deadline and time.monotonic() - moved < self.stall:
            late = self.recorder.wait_each({k: checks[k] for k in late}, 5.0)
            versions = sum(len(self.recorder.snapshots(k)) for k in late)
            if versions != seen:
                seen, moved = versions, time.monotonic()
        return late

    def account(
        self, trial: Trial, wanted: Mapping[str, str], processes: Sequence[ControllerProcess]
    ) -> None:
        """Every step of every finished Rollout exactly once, by Events, by logs, by
        status."""
        names = [key.partition("/")[2] for key in wanted]
        revisions = {key.partition("/")[2]: rev for key, rev in wanted.items()}
        events = self.core.list_namespaced_event(
            NAMESPACE, field_selector="reason=StepCompleted"
        ).items
        by_events = count_steps(
            ((str(e.involved_object.name), str(e.message)) for e in events),
            revisions,
        )
        trial.missing_events, trial.repeated_events = missing_and_repeated(by_events, names)
        lines = [
            (str(e.get("rollout")), str(e.get("message")))
            for proc in processes
            for e in proc.logs()
            if e.get("event") == "event" and e.get("reason") == "StepCompleted"
        ]
        trial.missing_logs, trial.repeated_logs = missing_and_repeated(
            count_steps(lines, revisions), names
        )
        completed: set[str] = set()
        for key, revision in wanted.items():
            name = key.partition("/")[2]
            snapshots = self.recorder.snapshots(key)
            indexes = [
                int(s.status["currentStepIndex"])
                for s in snapshots
                if s.status.get("canaryRevision") == revision
                and s.status.get("currentStepIndex") is not None
            ]
            if any(b < a for a, b in pairwise(indexes)):
                trial.index_went_back.append(name)
            lateness = pause_lateness(snapshots, revision, STEPS)
            trial.pause_lateness += lateness.values()
            trial.pauses_cut_short += [f"{name}/{i}" for i, v in lateness.items() if v < -0.05]
            for index, step in enumerate(STEPS):
                passed = bool(indexes) and max(indexes) > index
                honoured = "pause" not in step or lateness.get(index, -1.0) >= -0.05
                if passed and honoured:
                    completed.add(f"{name}/{index}")
        trial.events_lost = [step for step in trial.missing_events if step in completed]


def table(trials: Sequence[Trial]) -> str:
    """One row per lease configuration: figures over its trials."""
    rows: list[list[str]] = []
    for lease in sorted({t.lease for t in trials}):
        mine = [t for t in trials if t.lease == lease]
        for i, (label, name) in enumerate(
            (
                ("kill -> new leader leads", "leading"),
                ("kill -> steps resume", "resumed"),
                ("kill -> first StepCompleted", "first_step"),
            )
        ):
            q = summarize([float(v) for t in mine if (v := getattr(t, name)) is not None])
            verdict = ""
            if name == "resumed" and q["n"]:
                verdict = "met" if q["max"] <= lease + 2 else "MISSED"
            rows.append(
                [
                    f"{lease:g}s" if i == 0 else "",
                    str(len(mine)) if i == 0 else "",
                    label,
                    seconds(q.get("median")),
                    seconds(q.get("p95")),
                    seconds(q.get("max")),
                    f"{lease + 2:g}s" if name == "resumed" else "",
                    verdict,
                ]
            )
    header = ["lease", "trials", "", "median", "p95", "max", "target", ""]
    return render_table(header, rows)


def steps_table(trials: Sequence[Trial]) -> str:
    """Step accounting per lease configuration, summed over its trials."""
    rows: list[list[str]] = []
    for lease in sorted({t.lease for t in trials}):
        mine = [t for t in trials if t.lease == lease]
        late = summarize([v for t in mine for v in t.pause_lateness])
        missed = sum(t.steps_missed for t in mine)
        repeated = sum(t.steps_repeated for t in mine)

        def total(name: str, mine: list[Trial] = mine) -> int:
            return sum(len(getattr(t, name)) for t in mine)

        rows.append(
            [
                f"{lease:g}s",
                f"{sum(t.promoted for t in mine)}/{sum(t.rollouts for t in mine)}",
                f"{missed} / {repeated}",
                f"{total('missing_events')} / {total('repeated_events')}",
                f"{total('missing_logs')} / {total('repeated_logs')}",
                str(total("events_lost")),
                " / ".join(f"{late.get(k, 0):.2f}" for k in ("median", "p95", "max")) + "s",
                "met" if missed == repeated == 0 else "MISSED",
            ]
        )
    header = [
        "lease", "promoted", "steps missed / repeated", "Events missing / repeated",
        "log lines missing / repeated", "Events lost (step done)",
        "pause lateness med / p95 / max", "",
    ]  # fmt: skip
    return render_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trials of both lease configurations, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=100)
    parser.add_argument("--trials", type=int, default=3, help="kills with the 4 s lease")
    parser.add_argument("--long-trials", type=int, default=1, help="kills with the 15 s lease")
    parser.add_argument("--kill-after", type=float, default=8.0, help="seconds after release")
    parser.add_argument(
        "--finish-timeout", type=float, default=420.0, help="seconds for a trial to finish"
    )
    args = parser.parse_args(argv)
    quiet_logs()
    workdir = Path(tempfile.mkdtemp(prefix="stepwise-bench-failover-"))
    machine = Machine.current()
    started = time.monotonic()
    print(f"failover benchmark: {args.rollouts} Rollouts; logs in {workdir}", flush=True)

    def say(line: str) -> None:
        print(line, flush=True)

    trials: list[Trial] = []
    with LoadMonitor() as load, bench_cluster(nodes=2) as (cluster, api):
        bench = Failover(cluster, api, workdir, args.rollouts, args.finish_timeout)
        try:
            bench.setup(SHORT, timeout=300)
            for lease, count in ((SHORT, args.trials), (DEFAULT, args.long_trials)):
                if count:
                    trials += bench.run(lease, count, args.kill_after, say)
        finally:
            bench.recorder.stop()
    took = time.monotonic() - started
    print()
    print(
        f"Failover: leader SIGKILLed {args.kill_after:g}s after {args.rollouts} Rollouts got a "
        f"new image (setWeight 50, {PAUSES} x {PAUSE} pauses, setWeight 100)"
    )
    print("two controller processes, 4 workers each; renew deadline / retry: 3/0.5s, 10/2s")
    print(machine_line(machine))
    print(load_line(load.summary()))
    print()
    print(table(trials))
    print()
    print(steps_table(trials))
    print(f"\nin {took:.0f}s")
    path = write_results(
        "failover",
        {
            "machine": asdict(machine),
            "load": load.summary(),
            "seconds": round(took, 1),
            "config": vars(args),
            "steps": STEPS,
            "leases": [asdict(SHORT), asdict(DEFAULT)],
            "trials": [asdict(t) for t in trials],
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
