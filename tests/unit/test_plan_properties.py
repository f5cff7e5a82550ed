"""Properties of the canary engine over random step lists and random event sequences:
pods becoming Ready (or not), time passing, verdicts, aborts, promotes, retries, new
revisions and controller restarts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.api import intents
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import Measurement, Rollout
from controller.core import analysis as an
from controller.core.hashing import template_hash
from controller.core.model import ScaleReplicaSet, SetWeight, TemplateKey
from controller.core.plan import plan
from tests.support.manifests import rollout as rollout_doc
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

step_st = st.one_of(
    st.integers(0, 100).map(lambda w: {"setWeight": w}),
    st.sampled_from([{"pause": {}}, {"pause": {"duration": "5s"}}, {"pause": {"duration": 1}}]),
    st.just({"analysis": {"templates": [{"templateName": "errors"}]}}),
    st.sampled_from(
        [
            {"setCanaryScale": {"replicas": 2}},
            {"setCanaryScale": {"weight": 40}},
            {"setCanaryScale": {"matchTrafficWeight": True}},
        ]
    ),
)

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
        "promote",
        "promote-full",
        "abort",
        "retry",
        "new-revision",
        "restart",
        "pause-toggle",
    ]
)


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
        self, steps: list[dict[str, Any]], routed: bool, replicas: int, background: bool
    ) -> None:
        canary: dict[str, Any] = {}
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
        self.released: set[tuple[str, int]] = set()
        self.promoted_full: set[str] = set()
        self.measured_ok: dict[str, set[str]] = {}

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
        elif name.startswith("measure"):
            phase = {"measure-ok": "Successful", "measure-bad": "Failed", "measure-error": "Error"}[
                name
            ]
            for run in status.analysis_runs:
                if run.revision == rev:
                    measurements[(run.name, "errors")] = Measurement.model_validate(
                        {"phase": phase, "value": "0", "startedAt": self.now}
                    )
        elif name == "promote" and status.current_step_index is not None:
            self.annotate(
                **{intents.PROMOTE: intents.promote_value(rev, status.current_step_index)}
            )
            self.released.add((rev, status.current_step_index))
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
        before_stable = self.ro.status.stable_revision
        result = plan(self.ro, self.world.observed(measurements), self.now)
        status = result.status
        self.check_abort_order(result, status)
        self.world.apply(result, self.now)
        self.ro = self.ro.model_copy(update={"status": status})

        # Idempotence: once its actions are applied, planning again gives no new actions
        # and no events; and a world that does not change leaves the status (timestamps
        # and conditions included) exactly as it is.
        again = plan(self.ro, self.world.observed(), self.now)
        assert again.actions == (), again.actions
        assert again.events == (), again.events
        settled = self.ro.model_copy(update={"status": again.status})
        third = plan(settled, self.world.observed(), self.now)
        assert third.actions == ()
        assert third.status == again.status

        self.check_weight(status)
        if status.stable_revision != before_stable and before_stable is not None:
            self.check_promotion(status.stable_revision or "")

    def check_weight(self, status: Any) -> None:
        """The routed weight never exceeds the current step's target."""
        if not self.world.routed or status.abort is not None:
            return
        index = status.current_step_index
        if status.canary_revision == status.stable_revision or index is None:
            assert self.world.weight == 0 or index is not None
            return
        if index < len(self.steps):
            assert self.world.weight <= target_weight(self.steps, index), (
                self.world.weight,
                index,
                self.steps,
            )

    def check_abort_order(self, result: Any, status: Any) -> None:
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
        """A revision becomes stable only if all its analyses succeeded (or a person
        released them or asked for promote-full)."""
        if revision in self.promoted_full:
            return
        runs = {r.name: r for r in self.ro.status.analysis_runs if r.revision == revision}
        for index, s in enumerate(self.steps):
            if "analysis" in s:
                run = runs.get(an.step_run_name(index))
                released = (revision, index) in self.released
                assert released or (run is not None and run.phase == "Successful"), (index, runs)
        background = runs.get(an.BACKGROUND)
        if self.ro.spec.strategy.canary.analysis is not None:
            assert background is not None
            assert an.background_succeeded(background)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    steps=st.lists(step_st, min_size=0, max_size=6),
    routed=st.booleans(),
    replicas=st.integers(1, 12),
    background=st.booleans(),
    events=st.lists(event_st, min_size=1, max_size=40),
)
def test_invariants_hold_over_random_histories(
    steps: list[dict[str, Any]], routed: bool, replicas: int, background: bool, events: list[str]
) -> None:
    """Weight bound, abort order, idempotence and judged promotion hold after every pass."""
    h = Harness(steps, routed, replicas, background)
    h.reconcile({})
    h.world.ready_all()
    h.reconcile({})
    h.event("new-revision")
    for name in events:
        measurements = h.event(name)
        h.reconcile(measurements)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step_st, min_size=0, max_size=6), routed=st.booleans())
def test_a_healthy_canary_always_reaches_stable(steps: list[dict[str, Any]], routed: bool) -> None:
    """With Ready pods, passing time, good measurements and promotes at empty pauses, every
    step list ends with the new revision stable and Healthy."""
    h = Harness(steps, routed, 5, background=False)
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
        measurements = h.event("measure-ok")
        if h.ro.status.phase == "Paused":
            h.event("promote")
        h.reconcile(measurements)
    assert h.ro.status.stable_revision == new
    assert h.ro.status.phase == "Healthy"
    assert h.world.weight == 0
