"""Properties of the canary engine over random step lists and random event sequences:
pods becoming Ready (or not), time passing, verdicts (Inconclusive and NoData
included), aborts, promotes, retries, new revisions and controller restarts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.api import intents
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import Measurement, Rollout, RolloutStatus
from controller.core import analysis as an
from controller.core.hashing import template_hash
from controller.core.model import Observed, Plan, ScaleReplicaSet, SetWeight, TemplateKey
from controller.core.plan import plan
from controller.core.replicas import canary_replicas
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import ANALYSIS
from tests.support.world import T0, World

TEMPLATE = AnalysisTemplateSpec.model_validate(
    {
        "metrics": [
            {
                "name": "errors",
                "interval": "5s",
                "count": 2,
                "failureLimit": 0,
                "thresholdRange": {"max": 0.01},
                "provider": {"prometheus": {"query": "vector(0)"}},
            }
        ]
    }
)

QUIET = dt.timedelta(seconds=0.5)
"""A step of time in which nothing falls due: every duration, interval, delay and tick
in these histories is a whole number of seconds, so anything still to come is at least
one second away."""

step_st = st.one_of(
    st.integers(0, 100).map(lambda w: {"setWeight": w}),
    st.sampled_from([{"pause": {}}, {"pause": {"duration": "5s"}}, {"pause": {"duration": 1}}]),
    st.just(ANALYSIS),
    st.sampled_from(
        [
            {"setCanaryScale": {"replicas": 2}},
            {"setCanaryScale": {"weight": 40}},
            {"setCanaryScale": {"matchTrafficWeight": True}},
        ]
    ),
)

MEASURED = {
    "measure-ok": "Successful",
    "measure-bad": "Failed",
    "measure-error": "Error",
    "measure-inconclusive": "Inconclusive",
    "measure-nodata": "NoData",
}

event_st = st.sampled_from(
    [
        "ready",
        "ready",
        "ready",
        "partly-ready",
        "tick",
        "tick",
        "measure-ok",
        "measure-ok",
        "measure-bad",
        "measure-error",
        "measure-inconclusive",
        "measure-nodata",
        "promote",
        "promote",
        "promote-full",
        "abort",
        "retry",
        "new-revision",
        "restart",
        "pause-toggle",
    ]
)

drain_st = st.lists(st.sampled_from(["ready", "partly-ready", "tick", "restart"]), max_size=12)


def target_weight(steps: list[dict[str, Any]], index: int) -> int:
    """The last setWeight at or before ``index`` (0 if none)."""
    weight = 0
    for s in steps[: index + 1]:
        if "setWeight" in s:
            weight = s["setWeight"]
    return weight


class Harness:
    """A Rollout in a simulated world, driven by events, checking invariants each pass."""

    def __init__(
        self,
        steps: list[dict[str, Any]],
        routed: bool,
        replicas: int,
        background: bool,
        abort_delay: int = 30,
    ) -> None:
        canary: dict[str, Any] = {"abortScaleDownDelaySeconds": abort_delay}
        if routed:
            canary.update(
                stableService="s",
                canaryService="c",
                trafficRouting={"gatewayAPI": {"httpRoute": "r"}},
            )
        if background:
            canary["analysis"] = {"templates": [{"templateName": "errors"}]}
        doc = rollout_doc("app", replicas=replicas, steps=steps, **canary)
        self.steps = steps
        self.ro = Rollout.model_validate(doc)
        self.world = World(routed=routed)
        self.world.templates[TemplateKey("errors")] = TEMPLATE
        self.now = T0
        self.version = 1
        self.promoted_full: set[str] = set()
        self.released: set[tuple[str, str]] = set()
        """(revision, run name) of Inconclusive runs a promote intent named in a pass."""
        self.passes: list[tuple[dt.datetime, Observed, Plan]] = []
        """Every pass: when, the world it saw, and its plan."""

    # -- events ------------------------------------------------------------------------

    def annotate(self, **ann: str | None) -> None:
        current = dict(self.ro.metadata.annotations or {})
        for key, value in ann.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        meta = self.ro.metadata.model_copy(update={"annotations": current})
        self.ro = self.ro.model_copy(update={"metadata": meta})

    def event(self, name: str) -> dict[tuple[str, str], Measurement]:
        self.world.catch_up()  # time passes between events: the Gateway takes writes in
        status = self.ro.status
        rev = status.canary_revision or ""
        measurements: dict[tuple[str, str], Measurement] = {}
        if name == "ready":
            self.world.ready_all()
        elif name == "partly-ready":
            for rs in self.world.replica_sets.values():
                rs.ready = max(rs.ready, rs.replicas // 2)
        elif name == "tick":
            self.now += dt.timedelta(seconds=3)
        elif name in MEASURED:
            for run in status.analysis_runs:
                if run.revision == rev:
                    measurements[(run.name, "errors")] = Measurement.model_validate(
                        {"phase": MEASURED[name], "value": "0", "startedAt": self.now}
                    )
        elif name == "promote" and status.current_step_index is not None:
            self.annotate(
                **{intents.PROMOTE: intents.promote_value(rev, status.current_step_index)}
            )
        elif name == "promote-full" and rev:
            self.annotate(**{intents.PROMOTE_FULL: rev})
            self.promoted_full.add(rev)
        elif name == "abort" and rev:
            self.annotate(**{intents.ABORT: rev})
        elif name == "retry" and status.abort is not None:
            self.annotate(
                **{
                    intents.ABORT: None,
                    intents.RETRY: intents.retry_value(status.abort.revision, status.abort.attempt),
                }
            )
        elif name == "new-revision":
            self.version += 1
            doc = self.ro.model_dump(mode="json", by_alias=True, exclude_none=True)
            doc["spec"]["template"]["spec"]["containers"][0]["image"] = f"app:v{self.version}"
            self.ro = Rollout.model_validate(doc)
        elif name == "restart":
            # A new process: only what was persisted survives a JSON round trip.
            self.ro = Rollout.model_validate(self.ro.model_dump(mode="json", by_alias=True))
        elif name == "pause-toggle":
            spec = self.ro.spec.model_copy(update={"paused": not self.ro.spec.paused})
            self.ro = self.ro.model_copy(update={"spec": spec})
        return measurements

    # -- one reconcile with its invariants ----------------------------------------------

    def reconcile(self, measurements: dict[tuple[str, str], Measurement]) -> None:
        before = self.ro.status
        observed = self.world.observed(measurements)
        result = plan(self.ro, observed, self.now)
        self.passes.append((self.now, observed, result))
        status = result.status
        self.check_abort_order(result, status)
        self.check_weight_follows_ready(observed, result)
        self.world.apply(result, self.now)
        self.ro = self.ro.model_copy(update={"status": status})
        self.note_releases(status)

        # Idempotence: once its actions are applied, planning again gives no new actions
        # and no events; and a world that does not change leaves the status (timestamps
        # and conditions included) exactly as it is, now and a moment later.
        again = plan(self.ro, self.world.observed(), self.now)
        assert again.actions == (), again.actions
        assert again.events == (), again.events
        settled = self.ro.model_copy(update={"status": again.status})
        third = plan(settled, self.world.observed(), self.now)
        assert third.actions == ()
        assert third.status == again.status
        assert third.requeue_after is None or third.requeue_after == 0 or third.requeue_after >= 1
        later = plan(settled, self.world.observed(), self.now + QUIET)
        assert later.actions == (), later.actions
        assert later.events == (), later.events
        assert later.status == again.status, (again.status, later.status)

        self.check_weight(status)
        if status.stable_revision != before.stable_revision and before.stable_revision:
            self.check_promotion(status.stable_revision or "")

    def note_releases(self, status: RolloutStatus) -> None:
        """Remember the Inconclusive runs that a promote intent named in this pass."""
        wanted = intents.parse(self.ro.metadata.annotations)
        rev = status.canary_revision
        for run in status.analysis_runs:
            if run.revision != rev or run.phase != "Inconclusive":
                continue
            index = (
                len(self.steps)
                if run.name == an.BACKGROUND
                else int(run.name.removeprefix("step-"))
            )
            if wanted.promotes(rev, index):
                self.released.add((run.revision, run.name))

    def check_weight(self, status: RolloutStatus) -> None:
        """With no canary all traffic is on stable with no header routes; during a canary
        the routed weight never exceeds the current step's target (while promoting, the
        largest weight any step set)."""
        index = status.current_step_index
        assert index is not None
        if status.canary_revision == status.stable_revision:
            assert self.world.weight == 0
            assert not self.world.header_routes
            return
        if not self.world.routed or status.abort is not None:
            return
        if index < len(self.steps):
            bound = target_weight(self.steps, index)
        else:
            # Promoting (promote-full may have skipped steps): no more than a step gave.
            bound = max((s["setWeight"] for s in self.steps if "setWeight" in s), default=0)
        assert self.world.weight <= bound, (self.world.weight, index, self.steps)

    def check_weight_follows_ready(self, observed: Observed, result: Plan) -> None:
        """The routed weight rises only onto canary pods already Ready for it:
        ceil(weight * replicas / 100) of them when the weight is set."""
        if observed.traffic is None:
            return
        canary = observed.replica_set(result.status.canary_revision)
        ready = canary.ready if canary else 0
        weight = observed.traffic.canary_weight
        for action in result.actions:
            if (
                isinstance(action, ScaleReplicaSet)
                and canary
                and action.revision == canary.revision
            ):
                ready = min(ready, action.replicas)
            if isinstance(action, SetWeight):
                if action.weight > weight:
                    need = canary_replicas(action.weight, self.ro.spec.replicas)
                    assert ready >= need, (action, ready, need, self.steps)
                weight = action.weight

    def check_abort_order(self, result: Plan, status: RolloutStatus) -> None:
        """Once aborted, the canary shrinks only after stable is full and Ready and (routed)
        traffic is at 0."""
        if status.abort is None:
            return
        canary = status.abort.revision
        stable = status.stable_revision
        weight = self.world.weight
        for action in result.actions:
            if isinstance(action, SetWeight):
                weight = action.weight
            if isinstance(action, ScaleReplicaSet) and action.revision == canary:
                current = self.world.replica_sets.get(canary)
                if current is not None and action.replicas < current.replicas:
                    stable_rs = self.world.replica_sets.get(stable or "")
                    total = self.ro.spec.replicas
                    assert stable_rs is not None
                    assert stable_rs.replicas == total
                    assert stable_rs.ready == total
                    if self.world.routed:
                        assert weight == 0

    def check_promotion(self, revision: str) -> None:
        """A revision becomes stable only if every analysis that applied to it succeeded,
        or was Inconclusive and a promote intent released it, or promote-full was used."""
        if revision in self.promoted_full:
            return
        runs = {r.name: r for r in self.ro.status.analysis_runs if r.revision == revision}

        def released(name: str) -> bool:
            run = runs.get(name)
            return (
                run is not None
                and run.phase == "Inconclusive"
                and (revision, name) in self.released
            )

        for index, s in enumerate(self.steps):
            if "analysis" in s:
                name = an.step_run_name(index)
                run = runs.get(name)
                succeeded = run is not None and run.phase == "Successful"
                assert succeeded or released(name), (index, runs)
        if self.ro.spec.strategy.canary.analysis is not None:
            background = runs.get(an.BACKGROUND)
            succeeded = background is not None and an.background_succeeded(background)
            assert succeeded or released(an.BACKGROUND), runs

    # -- after an abort -----------------------------------------------------------------

    def abort_now(self) -> None:
        """Abort the canary in progress (starting one first if there is none)."""
        if self.ro.status.abort is not None:
            return
        if self.ro.status.canary_revision == self.ro.status.stable_revision:
            self.event("new-revision")
            self.reconcile({})
        self.event("abort")
        self.reconcile({})
        assert self.ro.status.abort is not None

    def drain(self) -> None:
        """Pods become Ready and time passes beyond every delay, until nothing is left."""
        delay = self.ro.spec.strategy.canary.abort_scale_down_delay_seconds
        for _ in range(3):
            self.world.ready_all()
            self.world.catch_up()
            self.reconcile({})
        self.now += dt.timedelta(seconds=delay + 1)
        for _ in range(3):
            self.world.ready_all()
            self.world.catch_up()
            self.reconcile({})
        assert self.passes[-1][2].actions == ()

    def check_abort_sequence(self) -> None:
        """From the pass that aborted on: traffic reaches 0 with stable at full Ready size
        before any canary pod goes, and the canary ends at 0 replicas: with a router not
        before abortScaleDownDelaySeconds after traffic left it, by replica ratio at once."""
        abort = self.ro.status.abort
        assert abort is not None
        start = len(self.passes)
        while start > 0 and self.passes[start - 1][2].status.abort == abort:
            start -= 1
        total = self.ro.spec.replicas
        routed = self.world.routed
        delay = dt.timedelta(seconds=self.ro.spec.strategy.canary.abort_scale_down_delay_seconds)
        canary, stable = abort.revision, self.ro.status.stable_revision
        restored_at: dt.datetime | None = None
        gone_at: dt.datetime | None = None
        for now, observed, result in self.passes[start:]:
            stable_rs = observed.replica_set(stable)
            stable_full = stable_rs is not None and stable_rs.ready >= total
            weight = observed.traffic.canary_weight if observed.traffic else 0
            canary_rs = observed.replica_set(canary)
            size = canary_rs.replicas if canary_rs else 0
            for action in result.actions:
                if isinstance(action, SetWeight):
                    weight = action.weight
                elif isinstance(action, ScaleReplicaSet) and action.revision == canary:
                    if action.replicas < size:
                        assert stable_full, (now, observed)
                        assert weight == 0, (now, observed)
                        # Traffic left the canary in this pass at the latest.
                        restored_at = restored_at or now
                        if routed:
                            assert now >= restored_at + delay, (now, restored_at)
                    size = action.replicas
            if restored_at is None and stable_full and weight == 0:
                restored_at = now
            if gone_at is None and size == 0:
                gone_at = now
        assert restored_at is not None
        assert gone_at is not None
        if not routed:
            # By replica ratio the canary's pods are its traffic: they go as soon as stable
            # can take it all (abortScaleDownDelaySeconds applies to routed traffic only).
            assert gone_at <= restored_at
        assert self.world.weight == 0
        assert not self.world.header_routes
        assert self.world.replica_sets[stable or ""].replicas == total
        assert (
            canary not in self.world.replica_sets or self.world.replica_sets[canary].replicas == 0
        )
        assert self.ro.status.phase == "Degraded"


#: Hypothesis settings for whole histories: slow to run and large to generate by design.
HISTORIES = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


#: The Rollout of a history besides its steps: routed or by ratio, its size, and whether
#: its analysis runs in the background.
ROLLOUT_SHAPE = {
    "routed": st.booleans(),
    "replicas": st.integers(1, 12),
    "background": st.booleans(),
}


def run_history(h: Harness, events: list[str]) -> None:
    """Start stable, bring in a new revision, then play the events, one pass each."""
    h.reconcile({})
    h.world.ready_all()
    h.reconcile({})
    h.event("new-revision")
    for name in events:
        measurements = h.event(name)
        h.reconcile(measurements)


@settings(HISTORIES, max_examples=500)
@given(
    steps=st.lists(step_st, min_size=0, max_size=6),
    **ROLLOUT_SHAPE,
    events=st.lists(event_st, min_size=1, max_size=40),
)
def test_invariants_hold_over_random_histories(
    steps: list[dict[str, Any]], routed: bool, replicas: int, background: bool, events: list[str]
) -> None:
    """Weight bound, abort order, idempotence, quiet timestamps and judged promotion hold
    after every pass."""
    run_history(Harness(steps, routed, replicas, background), events)


@settings(HISTORIES, max_examples=150)
@given(
    steps=st.lists(step_st, min_size=0, max_size=5),
    **ROLLOUT_SHAPE,
    delay=st.sampled_from([0, 7, 30]),
    events=st.lists(event_st, max_size=20),
    drain=drain_st,
)
def test_abort_restores_stable_then_traffic_then_removes_the_canary(
    steps: list[dict[str, Any]],
    routed: bool,
    replicas: int,
    background: bool,
    delay: int,
    events: list[str],
    drain: list[str],
) -> None:
    """After an abort at any point, traffic reaches 0 with stable full and Ready before any
    canary scale-down, and the canary eventually has 0 replicas (routed: after the delay)."""
    h = Harness(steps, routed, replicas, background, abort_delay=delay)
    run_history(h, events)
    h.abort_now()
    for name in drain:
        h.reconcile(h.event(name))
    h.drain()
    h.check_abort_sequence()


@settings(HISTORIES, max_examples=150)
@given(
    before=st.lists(step_st, max_size=3),
    after=st.lists(step_st, max_size=2),
    routed=st.booleans(),
    background=st.booleans(),
    verdicts=st.lists(st.sampled_from(sorted(set(MEASURED) - {"measure-bad"})), max_size=30),
    promote_analysis=st.booleans(),
)
def test_an_unjudged_analysis_is_released_only_by_a_promote(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    routed: bool,
    background: bool,
    verdicts: list[str],
    promote_analysis: bool,
) -> None:
    """Inconclusive, NoData and Error measurements never let a revision reach stable
    unless a promote names the Inconclusive analysis (pauses are always promoted)."""
    steps = [*before, ANALYSIS, *after]
    h = Harness(steps, routed, 4, background)
    run_history(h, [])
    new = template_hash(h.ro.spec.template)
    for verdict in verdicts:
        h.event("ready")
        h.event("tick")
        measurements = h.event(verdict)
        index = h.ro.status.current_step_index or 0
        at_pause = index < len(steps) and "pause" in steps[index]
        if h.ro.status.phase == "Paused" and (at_pause or promote_analysis):
            h.event("promote")
        h.reconcile(measurements)
    if not promote_analysis and h.ro.status.stable_revision == new:
        runs = [r for r in h.ro.status.analysis_runs if r.revision == new]
        assert all(r.phase == "Successful" for r in runs if r.name != an.BACKGROUND), runs


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(step_st, min_size=0, max_size=6),
    routed=st.booleans(),
    background=st.booleans(),
    verdict=st.sampled_from(["measure-ok", "measure-inconclusive"]),
)
def test_a_healthy_canary_always_reaches_stable(
    steps: list[dict[str, Any]], routed: bool, background: bool, verdict: str
) -> None:
    """With Ready pods, passing time, good (or Inconclusive) measurements and a promote
    whenever the Rollout is Paused, every step list ends with the new revision stable and
    Healthy."""
    h = Harness(steps, routed, 5, background)
    h.reconcile({})
    h.world.ready_all()
    h.reconcile({})
    h.event("new-revision")
    new = template_hash(h.ro.spec.template)
    for _ in range(200):
        if h.ro.status.stable_revision == new and h.ro.status.phase == "Healthy":
            break
        h.event("ready")
        h.event("tick")
        h.event("tick")
        measurements = h.event(verdict)
        if h.ro.status.phase == "Paused":
            h.event("promote")
        h.reconcile(measurements)
    assert h.ro.status.stable_revision == new, h.ro.status.message
    assert h.ro.status.phase == "Healthy"
    assert h.world.weight == 0
