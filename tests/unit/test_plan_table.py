"""The canary engine's transitions through :func:`plan`, table by table: setCanaryScale,
abort in each mode, resume after ``spec.paused``, background analysis from its
startingStep, Inconclusive analysis released by a promote, and invalid specs."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import intents
from controller.api.rollout import Measurement, Rollout, RolloutStatus
from controller.api.validation import problems_of
from controller.core import analysis as an
from controller.core.conditions import invalid_spec
from controller.core.model import Event, ScaleReplicaSet, SetWeight
from controller.core.plan import plan
from controller.core.replicas import canary_replicas
from tests.support.invalid_cases import CASES, Case
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import (
    ANALYSIS,
    ROUTED,
    annotate,
    at,
    canary_of,
    m,
    make,
    new_image,
    paused,
    stable_world,
)
from tests.support.world import T0, World, settle, step

# -- setCanaryScale ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "routed", "canary", "stable", "weight"),
    [
        pytest.param(
            [{"setWeight": 20}, {"setCanaryScale": {"replicas": 5}}, {"pause": {}}],
            True,
            5,
            10,
            20,
            id="routed-replicas-above-the-weight-share",
        ),
        pytest.param(
            [{"setCanaryScale": {"weight": 50}}, {"setWeight": 10}, {"pause": {}}],
            True,
            5,
            10,
            10,
            id="routed-scale-weight-sizes-the-canary-not-the-route",
        ),
        pytest.param(
            [
                {"setCanaryScale": {"replicas": 4}},
                {"setWeight": 10},
                {"setCanaryScale": {"matchTrafficWeight": True}},
                {"pause": {}},
            ],
            True,
            1,
            10,
            10,
            id="routed-match-traffic-weight-drops-the-override",
        ),
        pytest.param(
            [{"setCanaryScale": {"replicas": 20}}, {"pause": {}}],
            True,
            10,
            10,
            0,
            id="routed-replicas-capped-at-spec-replicas",
        ),
        pytest.param(
            [{"setCanaryScale": {"replicas": 3}}, {"pause": {}}],
            True,
            3,
            10,
            0,
            id="routed-canary-pods-before-any-traffic",
        ),
        pytest.param(
            [{"setCanaryScale": {"replicas": 2}}, {"setWeight": 50}, {"pause": {}}],
            True,
            5,
            10,
            50,
            id="routed-fewer-than-the-weight-share-is-raised-to-it",
        ),
        pytest.param(
            [{"setWeight": 20}, {"setCanaryScale": {"weight": 50}}, {"pause": {}}],
            False,
            5,
            8,
            38,
            id="ratio-scale-weight-keeps-the-stable-share",
        ),
        pytest.param(
            [
                {"setCanaryScale": {"replicas": 5}},
                {"setWeight": 20},
                {"setCanaryScale": {"matchTrafficWeight": True}},
                {"pause": {}},
            ],
            False,
            2,
            8,
            20,
            id="ratio-match-traffic-weight-returns-to-the-ratio",
        ),
    ],
)
def test_set_canary_scale_through_plan(
    steps: list[dict[str, Any]], routed: bool, canary: int, stable: int, weight: int
) -> None:
    """At the pause after setCanaryScale the canary has the pods it says, the route (or
    pod ratio) the weight the steps say, and the stable its share."""
    ro, world = stable_world(make(steps, routed=routed), routed=routed)
    old = ro.status.stable_revision or ""
    ro = new_image(ro)
    new = canary_of(ro)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.current_step_index == len(steps) - 1
    assert ro.status.phase == "Paused"
    assert (world.replica_sets[new].replicas, world.replica_sets[old].replicas) == (canary, stable)
    assert ro.status.canary_weight == weight
    if routed:
        assert world.weight == weight


@pytest.mark.parametrize(
    ("scale", "weight"),
    [
        pytest.param(2, 50, id="two-pods-for-half-the-traffic"),
        pytest.param(0, 30, id="no-pods-for-thirty-percent"),
        pytest.param(1, 11, id="share-rounds-up-to-two-pods"),
    ],
)
def test_routed_weight_rises_only_onto_ready_canary_pods(scale: int, weight: int) -> None:
    """With setCanaryScale below a setWeight's share, the weight moves only once the
    canary has ceil(weight * replicas / 100) Ready pods."""
    steps = [{"setCanaryScale": {"replicas": scale}}, {"setWeight": weight}, {"pause": {}}]
    ro, world = stable_world(make(steps, routed=True), routed=True)
    ro = new_image(ro)
    new = canary_of(ro)
    need = canary_replicas(weight, 10)
    for i in range(6):
        observed = world.observed()
        result = plan(ro, observed, at(i))
        canary = observed.replica_set(new)
        if any(isinstance(a, SetWeight) and a.weight > 0 for a in result.actions):
            assert canary is not None
            assert canary.ready >= need
        world.apply(result, at(i))
        ro = ro.model_copy(update={"status": result.status})
        world.ready_all()
    assert world.weight == weight
    assert world.replica_sets[new].replicas == need
    assert ro.status.current_step_index == 2


# -- abort ---------------------------------------------------------------------------------


def _trigger(kind: str, ro: Rollout, world: World) -> tuple[Rollout, dict[Any, Any]]:
    """What makes the canary abort: an abort intent or a failed measurement."""
    if kind == "manual":
        return annotate(ro, **{intents.ABORT: canary_of(ro)}), {}
    return ro, {("step-1", "errors"): m("Failed", "0.5")}


@pytest.mark.parametrize(
    ("routed", "trigger", "delay"),
    [
        pytest.param(False, "manual", 30, id="ratio-manual-canary-goes-at-once"),
        pytest.param(False, "analysis", 30, id="ratio-failed-analysis-canary-goes-at-once"),
        pytest.param(False, "manual", 0, id="ratio-manual-no-delay"),
        pytest.param(True, "manual", 30, id="routed-manual-canary-kept-for-the-delay"),
        pytest.param(True, "analysis", 7, id="routed-failed-analysis-short-delay"),
        pytest.param(True, "manual", 0, id="routed-manual-no-delay"),
    ],
)
def test_abort_restores_stable_first_then_removes_the_canary(
    routed: bool, trigger: str, delay: int
) -> None:
    """Abort: stable back to full size and Ready before anything else; then (routed)
    weight 0 and the canary kept for abortScaleDownDelaySeconds, or (replica ratio,
    where the canary's pods are its traffic) the canary scaled to 0 at once."""
    steps = [{"setWeight": 40}, ANALYSIS, {"pause": {}}]
    ro, world = stable_world(
        make(steps, routed=routed, abortScaleDownDelaySeconds=delay), routed=routed
    )
    stable = ro.status.stable_revision or ""
    ro = new_image(ro)
    canary = canary_of(ro)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.current_step_index == 1
    before = world.replica_sets[canary].replicas
    assert before == 4
    # The stable is not all Ready when the abort comes (in ratio mode it had shrunk).
    world.replica_sets[stable].ready = 6
    ro, measurements = _trigger(trigger, ro, world)
    ro, first = step(ro, world, at(1), measurements)
    assert ro.status.abort is not None
    assert ro.status.phase == "Degraded"
    assert world.replica_sets[stable].replicas == 10
    assert world.replica_sets[canary].replicas == before
    assert not any(isinstance(a, SetWeight) for a in first.actions)
    world.replica_sets[stable].ready = 10
    ro, second = step(ro, world, at(2))
    assert ro.status.canary_weight == 0
    if not routed:
        assert second.actions == (ScaleReplicaSet(canary, 0),)
        assert ro.status.scale_down == []
        return
    assert SetWeight(0) in second.actions
    assert world.weight == 0
    if delay:
        assert world.replica_sets[canary].replicas == before
        assert [s.at for s in ro.status.scale_down] == [at(2 + delay)]
        ro, _ = settle(ro, world, at(1 + delay))
        assert world.replica_sets[canary].replicas == before
    ro, _ = settle(ro, world, at(2 + delay))
    assert world.replica_sets[canary].replicas == 0
    assert ro.status.phase == "Degraded"


# -- resume after spec.paused ----------------------------------------------------------------


def test_resume_keeps_a_timed_pause_counting_from_its_start() -> None:
    """Paused and resumed during a timed pause: same step, same pauseStartTime, and the
    step ends when its duration from that start is up."""
    ro, world = stable_world(
        make([{"setWeight": 20}, {"pause": {"duration": "60s"}}, {"setWeight": 50}])
    )
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert (ro.status.current_step_index, ro.status.pause_start_time) == (1, at(0))
    ro, _ = settle(paused(ro), world, at(10))
    assert (ro.status.current_step_index, ro.status.pause_start_time) == (1, at(0))
    ro, result = step(paused(ro, False), world, at(40))
    assert (ro.status.current_step_index, ro.status.pause_start_time) == (1, at(0))
    assert result.requeue_after == pytest.approx(20.0)
    ro, _ = settle(ro, world, at(60))
    assert ro.status.current_step_index == 3


@pytest.mark.parametrize(
    ("steps", "routed", "index", "then"),
    [
        pytest.param(
            [{"setWeight": 30}, {"pause": {}}], True, 0, 1, id="routed-before-the-first-step"
        ),
        pytest.param(
            [{"setWeight": 30}, {"pause": {}}], False, 0, 1, id="ratio-before-the-first-step"
        ),
        pytest.param(
            [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}],
            True,
            1,
            3,
            id="routed-at-an-empty-pause-then-promoted",
        ),
        pytest.param(
            [{"setCanaryScale": {"replicas": 3}}, {"setWeight": 20}, {"pause": {}}],
            True,
            0,
            2,
            id="routed-at-set-canary-scale",
        ),
    ],
)
def test_resume_continues_the_same_step(
    steps: list[dict[str, Any]], routed: bool, index: int, then: int
) -> None:
    """While spec.paused the step index holds (even with a promote waiting); once cleared,
    the Rollout continues from that same step."""
    ro, world = stable_world(make(steps, routed=routed), routed=routed)
    ro = new_image(ro)
    rev = canary_of(ro)
    if index == 0:
        ro = paused(ro)
        ro, _ = step(ro, world, at(0))
    else:
        ro, _ = settle(ro, world, at(0))
        ro = paused(ro)
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(rev, index)})
    ro, _ = settle(ro, world, at(1))
    assert ro.status.current_step_index == index
    assert ro.status.phase == "Paused"
    assert "spec.paused" in ro.status.message
    ro, _ = settle(paused(ro, False), world, at(2))
    assert ro.status.current_step_index == then
    assert ro.status.canary_revision == rev
    assert ro.status.abort is None


def test_resume_keeps_an_analysis_tally() -> None:
    """Paused during an analysis step, the run keeps its tally and is not restarted; after
    resuming one more success completes it."""
    ro, world = stable_world(
        make([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}], routed=True), routed=True
    )
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    ro, _ = step(ro, world, at(0), {("step-1", "errors"): m("Successful")})
    run = ro.status.analysis_runs[0]
    ro, _ = settle(paused(ro), world, at(10))
    assert ro.status.current_step_index == 1
    assert ro.status.analysis_runs == [run]
    ro, _ = step(paused(ro, False), world, at(20), {("step-1", "errors"): m("Successful")})
    after = ro.status.analysis_runs[0]
    assert (after.started_at, after.phase, after.metrics[0].successful) == (
        run.started_at,
        "Successful",
        2,
    )
    ro, _ = settle(ro, world, at(20))
    assert ro.status.stable_revision == ro.status.canary_revision


@pytest.mark.parametrize("routed", [True, False], ids=["routed", "ratio"])
def test_pausing_mid_step_does_not_undo_its_scaling(routed: bool) -> None:
    """Pausing while a setWeight step's canary pods start leaves every ReplicaSet as is."""
    ro, world = stable_world(make([{"setWeight": 30}, {"pause": {}}], routed=routed), routed=routed)
    ro = new_image(ro)
    ro, _ = step(ro, world, at(0))
    assert world.replica_sets[canary_of(ro)].replicas == 3
    ro, result = step(paused(ro), world, at(1))
    assert not any(isinstance(a, ScaleReplicaSet) for a in result.actions)
    assert result.actions == ()
    assert ro.status.phase == "Paused"
    ro, _ = settle(paused(ro, False), world, at(2))
    assert ro.status.current_step_index == 1
    assert world.replica_sets[canary_of(ro)].replicas == 3


def test_pausing_holds_the_route_weight_and_the_pods() -> None:
    """Paused while a later setWeight step's pods start: the router keeps its weight and
    no ReplicaSet, Service or route changes, however long the pause; resume goes on."""
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    ro, world = stable_world(make(steps, routed=True), routed=True)
    ro = new_image(ro)
    rev = canary_of(ro)
    ro, _ = settle(ro, world, at(0))
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(rev, 1)})
    ro, _ = step(ro, world, at(1))
    assert (ro.status.current_step_index, world.weight) == (2, 20)
    sizes = {r: s.replicas for r, s in world.replica_sets.items()}
    ro = paused(ro)
    for t in (2, 50, 5000):
        ro, result = step(ro, world, at(t))
        assert result.actions == ()
        assert (ro.status.current_step_index, world.weight) == (2, 20)
        assert {r: s.replicas for r, s in world.replica_sets.items()} == sizes
    assert ro.status.abort is None, "paused time does not count toward the progress deadline"
    ro, _ = settle(paused(ro, False), world, at(5001))
    assert (ro.status.current_step_index, world.weight) == (3, 60)


def test_the_progress_deadline_restarts_on_resume() -> None:
    """Pods still not Ready after a long pause: the deadline counts from the resume."""
    ro, world = stable_world(make([{"setWeight": 30}, {"pause": {}}], routed=True), routed=True)
    ro = new_image(ro)
    ro, _ = step(ro, world, at(0))
    ro, _ = step(paused(ro), world, at(1))
    ro, _ = step(paused(ro, False), world, at(1000))
    assert ro.status.abort is None
    ro, _ = step(ro, world, at(1599))
    assert ro.status.abort is None
    ro, _ = step(ro, world, at(1600))
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "ProgressDeadlineExceeded"


@pytest.mark.parametrize("routed", [True, False], ids=["routed", "ratio"])
def test_abort_works_while_paused(routed: bool) -> None:
    """An abort intent is carried out while spec.paused: stable at full size, all traffic
    on stable, the canary removed (after its delay when routed)."""
    steps = [{"setWeight": 30}, {"pause": {}}]
    ro, world = stable_world(make(steps, routed=routed), routed=routed)
    stable = ro.status.stable_revision
    ro = new_image(ro)
    rev = canary_of(ro)
    ro, _ = settle(ro, world, at(0))
    ro = annotate(paused(ro), **{intents.ABORT: rev})
    ro, _ = settle(ro, world, at(1))
    assert ro.status.abort is not None
    assert ro.status.phase == "Degraded"
    assert world.weight == 0
    assert stable is not None
    assert world.replica_sets[stable].replicas == 10
    ro, _ = settle(ro, world, at(1000))
    assert world.replica_sets[rev].replicas == 0


@pytest.mark.parametrize("background", [False, True], ids=["step", "background"])
def test_a_failed_analysis_aborts_while_paused(background: bool) -> None:
    """A running analysis keeps being measured while spec.paused, and its failure aborts."""
    ro, world, _, run = _at_analysis(background)
    ro = paused(ro)
    ro, _ = step(ro, world, at(1), {(run, "errors"): m("Successful")})
    assert _phase_of(ro, run) == ["Running"]
    assert ro.status.analysis_runs[0].metrics[0].successful == 1
    ro, _ = step(ro, world, at(11), {(run, "errors"): m("Failed")})
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "AnalysisFailed"
    ro, _ = settle(ro, world, at(12))
    assert world.weight == 0


def test_an_abort_while_paused_drains_a_superseded_canary() -> None:
    """Paused, superseded, then the new revision's background analysis fails: the abort
    takes the old canary's pods too, and the result is a fixpoint (planning again does
    nothing)."""
    steps = [{"setWeight": 30}, {"pause": {}}]
    ro, world = stable_world(make(steps, routed=True, **ANALYSIS), routed=True)
    ro = new_image(ro)
    old = canary_of(ro)
    ro, _ = settle(ro, world, at(0))
    ro = new_image(paused(ro), "registry.local/app:v3")
    ro, _ = settle(ro, world, at(1))
    assert world.replica_sets[old].replicas == 3
    ro, _ = step(ro, world, at(2), {(an.BACKGROUND, "errors"): m("Failed")})
    assert ro.status.abort is not None
    assert world.replica_sets[old].replicas == 0
    assert world.weight == 0
    assert plan(ro, world.observed(), at(2)).actions == ()


def test_promote_full_waits_for_resume() -> None:
    """promote-full while paused skips nothing and promotes nothing until resume."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}], routed=True), routed=True)
    ro = new_image(ro)
    rev = canary_of(ro)
    ro, _ = settle(ro, world, at(0))
    ro = annotate(paused(ro), **{intents.PROMOTE_FULL: rev})
    ro, result = step(ro, world, at(1))
    assert result.actions == ()
    assert ro.status.current_step_index == 1
    assert ro.status.stable_revision != rev
    ro, _ = settle(paused(ro, False), world, at(2))
    assert ro.status.stable_revision == rev


def test_a_new_revision_while_paused_takes_traffic_off_the_old_canary_only() -> None:
    """A newer template while paused supersedes the canary: its traffic returns to
    stable at once (an unjudged canary never keeps traffic), but no ReplicaSet is scaled
    until resume; then the new canary starts from step 0."""
    ro, world = stable_world(make([{"setWeight": 30}, {"pause": {}}], routed=True), routed=True)
    ro = new_image(ro)
    old = canary_of(ro)
    ro, _ = settle(ro, world, at(0))
    assert world.weight == 30
    ro = new_image(paused(ro), "registry.local/app:v3")
    ro, result = step(ro, world, at(1))
    assert result.actions == (SetWeight(0),)
    assert (ro.status.canary_revision, ro.status.current_step_index) == (canary_of(ro), 0)
    assert world.replica_sets[old].replicas == 3
    assert "spec.paused" in ro.status.message
    ro, _ = settle(paused(ro, False), world, at(2))
    assert world.replica_sets[old].replicas == 0
    assert (ro.status.current_step_index, world.weight) == (1, 30)


# -- background analysis from startingStep ------------------------------------------------

BACKGROUND_STEPS = [
    {"setWeight": 10},
    {"pause": {}},
    {"setWeight": 30},
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {}},
]


@pytest.mark.parametrize(
    ("starting", "index", "present"),
    [
        pytest.param(0, 1, True, id="from-0-present-at-the-first-pause"),
        pytest.param(2, 1, False, id="from-2-absent-at-step-1"),
        pytest.param(2, 3, True, id="from-2-present-at-step-3"),
        pytest.param(3, 3, True, id="from-3-present-on-its-own-step"),
        pytest.param(4, 3, False, id="from-4-absent-at-step-3"),
        pytest.param(5, 5, True, id="from-5-present-at-the-last-step"),
    ],
)
def test_background_analysis_starts_at_its_starting_step(
    starting: int, index: int, present: bool
) -> None:
    """The background run exists only once the step index reaches startingStep; before
    that its measurements are ignored and nothing about it is in the status."""
    analysis = {**ANALYSIS["analysis"], "startingStep": starting}
    ro, world = stable_world(make(BACKGROUND_STEPS, routed=True, analysis=analysis), routed=True)
    ro = new_image(ro)
    rev = canary_of(ro)
    reached: dt.datetime | None = None
    for pause in (1, 3, 5):
        ro, _ = settle(ro, world, at(10 * pause))
        assert ro.status.current_step_index == pause
        if pause >= starting and reached is None:
            reached = at(10 * pause)
        if pause == index:
            break
        ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(rev, pause)})
    ro, _ = step(ro, world, at(10 * index), {(an.BACKGROUND, "errors"): m("Successful")})
    runs = [r for r in ro.status.analysis_runs if r.name == an.BACKGROUND]
    if not present:
        assert runs == []
        return
    assert len(runs) == 1
    assert runs[0].revision == rev
    assert reached is not None
    assert runs[0].started_at == reached


# -- an Inconclusive analysis and the promote intent -----------------------------------------


def _at_analysis(background: bool) -> tuple[Rollout, World, str, str]:
    """A canary at step 1 with its analysis (the step's, or the background one) running:
    the Rollout, its world, the canary revision and the run's name."""
    if background:
        ro = make([{"setWeight": 20}], routed=True, **ANALYSIS)
        run = an.BACKGROUND
    else:
        ro = make([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}], routed=True)
        run = an.step_run_name(1)
    ro, world = stable_world(ro, routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.current_step_index == 1
    return ro, world, canary_of(ro), run


def _phase_of(ro: Rollout, run: str) -> list[str]:
    return [r.phase for r in ro.status.analysis_runs if r.name == run]


@pytest.mark.parametrize(
    ("background", "promote", "released"),
    [
        pytest.param(False, "this-step", True, id="step-released-by-a-promote-of-its-step"),
        pytest.param(False, None, False, id="step-waits-without-a-promote"),
        pytest.param(False, "previous-step", False, id="step-not-released-by-a-stale-promote"),
        pytest.param(False, "other-revision", False, id="step-not-released-for-another-revision"),
        pytest.param(True, "this-step", True, id="background-released-by-stepwise-promote"),
        pytest.param(True, None, False, id="background-waits-without-a-promote"),
        pytest.param(True, "previous-step", False, id="background-not-released-by-a-stale-promote"),
        pytest.param(
            True, "other-revision", False, id="background-not-released-for-another-revision"
        ),
    ],
)
def test_inconclusive_analysis_is_released_only_by_its_promote(
    background: bool, promote: str | None, released: bool
) -> None:
    """An Inconclusive analysis pauses the canary until a promote names this revision and
    the current step index (what `stepwise promote` writes); then it is promoted."""
    ro, world, rev, run = _at_analysis(background)
    ro, _ = step(ro, world, at(0), {(run, "errors"): m("Inconclusive")})
    assert _phase_of(ro, run) == ["Inconclusive"]
    assert ro.status.phase == "Paused"
    value = {
        "this-step": intents.promote_value(rev, 1),
        "previous-step": intents.promote_value(rev, 0),
        "other-revision": intents.promote_value("other", 1),
    }.get(promote or "")
    if value is not None:
        ro = annotate(ro, **{intents.PROMOTE: value})
    ro, _ = settle(ro, world, at(1))
    if released:
        assert ro.status.stable_revision == rev
        assert ro.status.phase == "Healthy"
        return
    assert ro.status.stable_revision != rev
    assert ro.status.phase == "Paused"
    assert "inconclusive" in ro.status.message


@pytest.mark.parametrize("background", [False, True], ids=["step", "background"])
def test_blind_analysis_is_not_released_by_a_promote(background: bool) -> None:
    """A run held blind (provider errors, onProviderError Hold) is never promoted by a
    plain promote: only promote-full skips it."""
    ro, world, rev, run = _at_analysis(background)
    for i in range(6):
        ro, _ = step(ro, world, at(10 * i), {(run, "errors"): m("Error")})
    assert _phase_of(ro, run) == ["Error"]
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(rev, 1)})
    ro, _ = settle(ro, world, at(100))
    assert ro.status.stable_revision != rev
    ro = annotate(ro, **{intents.PROMOTE_FULL: rev})
    ro, _ = settle(ro, world, at(101))
    assert ro.status.stable_revision == rev


# -- analysis events: blind and Inconclusive ------------------------------------------------


def _analysis_events(ro: Rollout, world: World, run: str, phases: list[str]) -> list[list[str]]:
    """Feed one measurement per pass (10s apart) and return each pass's analysis event
    reasons; after each pass the same world is planned again and must emit nothing."""
    out: list[list[str]] = []
    for i, phase in enumerate(phases):
        ro, result = step(ro, world, at(10 * i), {(run, "errors"): m(phase)})
        out.append([e.reason for e in result.events if e.reason.startswith("Analysis")])
        assert plan(ro, world.observed(), at(10 * i)).events == ()
        assert plan(ro, world.observed(), at(10 * i + 1)).events == ()
    return out


@pytest.mark.parametrize("background", [False, True], ids=["step", "background"])
@pytest.mark.parametrize(
    ("phases", "reasons"),
    [
        pytest.param(
            ["Error"] * 7, [[], [], [], [], ["AnalysisHeld"], [], []], id="provider-errors"
        ),
        pytest.param(["NoData"] * 3, [["AnalysisHeld"], [], []], id="no-data"),
        pytest.param(
            ["NoData", "Successful", "NoData"],
            [["AnalysisHeld"], [], ["AnalysisHeld"]],
            id="no-data-again-is-a-new-transition",
        ),
        pytest.param(["Inconclusive"] * 3, [["AnalysisInconclusive"], [], []], id="inconclusive"),
    ],
)
def test_analysis_events_once_per_transition(
    background: bool, phases: list[str], reasons: list[list[str]]
) -> None:
    """A metric that goes blind (held) or Inconclusive gets one Warning event in the pass
    it happens, naming the run and the metric; staying there emits nothing more."""
    ro, world, _, run = _at_analysis(background)
    assert _analysis_events(ro, world, run, phases) == reasons


def test_analysis_held_event_names_the_metric_and_the_error() -> None:
    """The held event is a Warning naming the run, the metric and the provider's message."""
    ro, world, rev, run = _at_analysis(False)
    error = Measurement.model_validate(
        {"phase": "Error", "message": "errors: Prometheus unreachable", "startedAt": T0}
    )
    events: list[Event] = []
    for i in range(5):
        ro, result = step(ro, world, at(10 * i), {(run, "errors"): error})
        events.extend(e for e in result.events if e.reason == "AnalysisHeld")
    (held,) = events
    assert held.type == "Warning"
    assert held.message.startswith(f"analysis of step 1 for canary {rev}, metric errors: ")
    assert "5 consecutive provider errors (limit 4): errors: Prometheus unreachable" in (
        held.message
    )


def test_analysis_inconclusive_event_is_a_warning_naming_the_metric() -> None:
    """The Inconclusive event names the background run and the metric and says what to do."""
    ro, world, rev, run = _at_analysis(True)
    ro, result = step(ro, world, at(0), {(run, "errors"): m("Inconclusive")})
    (event,) = [e for e in result.events if e.reason == "AnalysisInconclusive"]
    assert event.type == "Warning"
    assert event.message.startswith(f"background analysis of canary {rev}, metric errors: ")
    assert "promote or abort" in event.message


# -- invalid specs -----------------------------------------------------------------------------

ROLLOUT_CASES = [c for c in CASES if c.doc["kind"] == "Rollout"]


@pytest.mark.parametrize("case", ROLLOUT_CASES, ids=[c.id for c in ROLLOUT_CASES])
def test_invalid_spec_never_reaches_plan(case: Case) -> None:
    """plan() only takes a parsed Rollout: an invalid spec fails parsing, and the
    reconciler (runtime/reconciler.py, _invalid) writes only InvalidSpec, no actions."""
    doc = copy.deepcopy(case.doc)
    doc["status"] = {"stableRevision": "abc", "currentStepIndex": 1, "canaryWeight": 20}
    with pytest.raises(ValidationError) as exc:
        Rollout.model_validate(doc)
    current = RolloutStatus.model_validate(doc["status"])
    status = invalid_spec(current, [f"{f}: {r}" for f, r in problems_of(exc.value)], T0)
    conditions = {c.type: c for c in status.conditions}
    assert conditions["InvalidSpec"].status == "True"
    assert case.field in status.message
    assert status.phase == "Degraded"
    # Where the canary was is kept, so a fixed spec resumes there.
    assert (status.stable_revision, status.current_step_index, status.canary_weight) == (
        "abc",
        1,
        20,
    )


def test_a_fixed_spec_clears_invalid_spec() -> None:
    """Once the spec parses again, plan sets InvalidSpec False and goes on."""
    doc = rollout_doc("app", steps=[{"setWeight": 20}], **ROUTED)
    ro = Rollout.model_validate(doc)
    marked = invalid_spec(RolloutStatus(), ["spec.replicas: bad"], T0)
    ro = ro.model_copy(update={"status": marked})
    result = plan(ro, World(routed=True).observed(), at(5))
    conditions = {c.type: c for c in result.status.conditions}
    assert (conditions["InvalidSpec"].status, conditions["InvalidSpec"].reason) == (
        "False",
        "SpecValid",
    )
    assert result.actions
