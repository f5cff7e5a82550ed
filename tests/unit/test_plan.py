"""The canary engine's transitions, one scenario each, in a simulated world."""

from __future__ import annotations

import pytest

from controller.api import intents
from controller.api.rollout import Rollout
from controller.core.hashing import template_hash
from controller.core.model import (
    Event,
    PinService,
    RemoveHeaderRoute,
    ScaleReplicaSet,
    SetWeight,
    TemplateKey,
)
from controller.core.plan import plan
from controller.core.replicas import canary_replicas
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import (
    HEADER_ROUTE,
    TEMPLATE,
    analysis_rollout,
    annotate,
    at,
    canary_at,
    canary_of,
    deadline_canary,
    m,
    make,
    new_image,
    paused,
    retried,
    stable_world,
)
from tests.support.world import T0, World, settle, step

# -- first revision and steady state -----------------------------------------------------


def test_first_revision_goes_straight_to_stable() -> None:
    """A new Rollout's first revision is scaled to full size and becomes stable: no canary."""
    ro = make([{"setWeight": 20}, {"pause": {}}])
    world = World()
    ro, first = step(ro, world, T0)
    rev = template_hash(ro.spec.template)
    assert first.actions == (ScaleReplicaSet(rev, 10),)
    assert ro.status.stable_revision == rev == ro.status.canary_revision
    assert ro.status.phase == "Progressing"
    assert [e.reason for e in first.events] == ["Initialized"]
    world.ready_all()
    ro, second = step(ro, world, T0)
    assert second.actions == ()
    assert ro.status.phase == "Healthy"
    assert ro.status.current_step_index == 2


def test_steady_state_is_a_fixpoint() -> None:
    """A healthy Rollout whose world matches gets no actions, no events, no requeue."""
    ro, world = stable_world(make([{"setWeight": 20}]))
    before = ro.status
    ro, result = step(ro, world, at(3600))
    assert result.actions == ()
    assert result.events == ()
    assert result.requeue_after is None
    assert ro.status == before


# -- replica ratio mode -------------------------------------------------------------------


def test_ratio_mode_walks_the_steps_and_promotes() -> None:
    """[setWeight 20, pause 2s, setWeight 50, pause {}]: canary 2 then 5 Ready pods, a
    wait at the empty pause, and promotion on request."""
    ro, world = stable_world(
        make([{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {}}])
    )
    old = ro.status.stable_revision
    ro = new_image(ro)
    new = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    assert (world.replica_sets[new].ready, world.replica_sets[old].ready) == (2, 8)
    assert ro.status.current_step_index == 1
    assert ro.status.phase == "Paused"
    assert ro.status.pause_start_time == at(0)
    ro, result = step(ro, world, at(1))
    assert result.requeue_after == pytest.approx(1.0)
    ro, _ = settle(ro, world, at(2))
    assert (world.replica_sets[new].ready, world.replica_sets[old].ready) == (5, 5)
    assert ro.status.current_step_index == 3
    assert ro.status.phase == "Paused"
    assert ro.status.canary_weight == 50
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(new, 3)})
    ro, _ = settle(ro, world, at(3))
    assert ro.status.stable_revision == new
    assert ro.status.phase == "Healthy"
    assert (world.replica_sets[new].replicas, world.replica_sets[old].replicas) == (10, 0)


def test_ratio_mode_respects_surge_and_availability() -> None:
    """Moving to weight 50 never exceeds replicas+maxSurge pods nor drops below
    replicas-maxUnavailable Ready pods."""
    ro, world = stable_world(make([{"setWeight": 50}, {"pause": {}}], maxSurge=2, maxUnavailable=1))
    ro = new_image(ro)
    for i in range(30):
        ro, _ = step(ro, world, at(i))
        total = sum(rs.replicas for rs in world.replica_sets.values())
        assert total <= 12
        # pods become Ready one pass later
        ready = sum(rs.ready for rs in world.replica_sets.values())
        assert ready >= 9
        world.ready_all()
    assert ro.status.current_step_index == 1
    assert sorted(rs.replicas for rs in world.replica_sets.values()) == [5, 5]


@pytest.mark.parametrize(
    ("replicas", "weight", "surge", "unavailable", "canary", "stable", "share"),
    [
        pytest.param(1, 50, "25%", 0, 1, 1, 50, id="one-replica-half-is-one-each"),
        pytest.param(3, 50, "25%", 0, 2, 2, 50, id="three-replicas-half-is-two-each"),
        pytest.param(10, 25, "25%", 0, 3, 8, 27, id="ten-at-25-keeps-8-stable"),
        pytest.param(4, 25, "25%", 0, 1, 3, 25, id="exact-split-adds-no-pod"),
        pytest.param(1, 50, 0, 1, 1, 0, 100, id="no-surge-room-gives-the-pod-up"),
    ],
)
def test_ratio_mode_share_never_runs_ahead_of_the_step(
    replicas: int,
    weight: int,
    surge: int | str,
    unavailable: int,
    canary: int,
    stable: int,
    share: int,
) -> None:
    """Both counts round up, so a small Rollout's canary does not take all the traffic
    at a partial step; the extra pod comes from maxSurge, and without it there is none."""
    doc = rollout_doc(
        "app",
        replicas=replicas,
        steps=[{"setWeight": weight}, {"pause": {}}],
        maxSurge=surge,
        maxUnavailable=unavailable,
    )
    ro, world = stable_world(Rollout.model_validate(doc))
    old = ro.status.stable_revision
    ro = new_image(ro)
    new = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.current_step_index == 1
    assert (world.replica_sets[new].replicas, world.replica_sets[old].replicas) == (canary, stable)
    assert ro.status.canary_weight == share
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(new, 1)})
    ro, _ = settle(ro, world, at(1))
    assert ro.status.phase == "Healthy"
    assert (world.replica_sets[new].replicas, world.replica_sets[old].replicas) == (replicas, 0)


# -- routed mode --------------------------------------------------------------------------


def test_routed_weight_moves_only_after_canary_pods_are_ready() -> None:
    """setWeight scales the canary first; the route weight changes only once enough
    canary pods are Ready; the stable keeps every pod."""
    ro, world = stable_world(make([{"setWeight": 30}, {"pause": {}}], routed=True), routed=True)
    old = ro.status.stable_revision
    ro = new_image(ro)
    new = template_hash(ro.spec.template)
    ro, first = step(ro, world, at(0))
    assert ScaleReplicaSet(new, 3) in first.actions
    assert PinService("app-canary", new) in first.actions
    assert not any(isinstance(a, SetWeight) for a in first.actions)
    assert world.weight == 0
    world.replica_sets[new].ready = 2
    ro, second = step(ro, world, at(1))
    assert not any(isinstance(a, SetWeight) for a in second.actions)
    assert "2 of 3 pods Ready" in ro.status.message
    world.ready_all()
    ro, third = step(ro, world, at(2))
    assert SetWeight(30) in third.actions
    assert world.weight == 30
    assert world.replica_sets[old].replicas == 10
    assert ro.status.phase == "Paused"


def test_routed_promotion_pins_stable_service_then_restores_traffic() -> None:
    """Promotion scales the canary to full size, points the stable Service at it before
    the weight goes back to 0, and keeps the old pods for scaleDownDelaySeconds."""
    ro, world = stable_world(
        make([{"setWeight": 50}], routed=True, scaleDownDelaySeconds=30), routed=True
    )
    old = ro.status.stable_revision
    ro = new_image(ro)
    new = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.stable_revision == new
    pin = world.log.index(repr(PinService("app-stable", new)))
    back = max(i for i, entry in enumerate(world.log) if entry == repr(SetWeight(0)))
    assert pin < back
    assert world.weight == 0
    assert world.replica_sets[old].replicas == 10
    assert ro.status.scale_down[0].revision == old
    ro, _ = settle(ro, world, at(29))
    assert world.replica_sets[old].replicas == 10
    ro, _ = settle(ro, world, at(30))
    assert world.replica_sets[old].replicas == 0
    assert ro.status.phase == "Healthy"
    assert ro.status.scale_down == []


def test_header_route_added_then_removed_at_promotion() -> None:
    """setHeaderRoute adds a header route; promotion removes it."""
    steps = [{"setWeight": 10}, HEADER_ROUTE, {"pause": {}}]
    ro, world = stable_world(make(steps, routed=True), routed=True)
    ro = new_image(ro)
    new = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    assert set(world.header_routes) == {"beta"}
    assert any(entry.startswith("SetHeaderRoute(name='beta'") for entry in world.log)
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(new, 2)})
    ro, _ = settle(ro, world, at(1))
    assert world.header_routes == {}
    assert any(entry == repr(RemoveHeaderRoute("beta")) for entry in world.log)
    assert ro.status.stable_revision == new


# -- pauses -------------------------------------------------------------------------------


def test_pause_keeps_its_remaining_time_across_a_restart() -> None:
    """A timed pause counts from the persisted pauseStartTime, not from the restart."""
    ro, world = stable_world(make([{"pause": {"duration": "60s"}}, {"setWeight": 50}]))
    ro = new_image(ro)
    ro, _ = step(ro, world, at(0))
    assert ro.status.pause_start_time == at(0)
    # A new controller process sees only the persisted status.
    restarted = Rollout.model_validate(ro.model_dump(mode="json", by_alias=True))
    result = plan(restarted, world.observed(), at(45))
    assert result.requeue_after == pytest.approx(15.0)
    assert result.status.pause_start_time == at(0)
    assert f"until {at(60).isoformat()}" in result.status.message


def test_spec_paused_holds_the_step() -> None:
    """With spec.paused the step does not advance even when its pause has ended."""
    ro, world = stable_world(make([{"pause": {"duration": "1s"}}, {"setWeight": 50}]))
    ro = new_image(ro)
    ro, _ = step(ro, world, at(0))
    held, _ = settle(paused(ro), world, at(10))
    assert held.status.current_step_index == 0
    assert held.status.phase == "Paused"
    assert "spec.paused" in held.status.message


# -- analysis -----------------------------------------------------------------------------


def test_analysis_step_waits_for_its_verdict_then_continues() -> None:
    """The analysis step measures at its interval and completes after `count` successes."""
    ro, world = analysis_rollout()
    ro, _ = settle(ro, world, at(0))
    assert ro.status.current_step_index == 1
    run = ro.status.analysis_runs[0]
    assert (run.name, run.phase) == ("step-1", "Running")
    ro, _ = step(ro, world, at(0), {("step-1", "errors"): m("Successful")})
    ro, result = step(ro, world, at(5))
    assert result.requeue_after == pytest.approx(5.0)
    ro, result = step(ro, world, at(10), {("step-1", "errors"): m("Successful")})
    assert "AnalysisSucceeded" in [e.reason for e in result.events]
    ro, _ = settle(ro, world, at(10))
    assert ro.status.stable_revision == ro.status.canary_revision
    assert ro.status.current_step_index == 3
    run = ro.status.analysis_runs[0]
    assert (run.phase, run.metrics[0].successful) == ("Successful", 2)


def test_failed_analysis_aborts_stable_first_then_traffic_then_canary_later() -> None:
    """A failed step analysis aborts: stable is full and Ready, weight returns to 0, and
    the canary keeps its pods for abortScaleDownDelaySeconds."""
    ro, world = analysis_rollout()
    canary = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    assert world.weight == 20
    ro, result = step(ro, world, at(1), {("step-1", "errors"): m("Failed", "0.5")})
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "AnalysisFailed"
    assert "errors" in ro.status.abort.message
    assert SetWeight(0) in result.actions
    assert ro.status.phase == "Degraded"
    assert world.replica_sets[canary].replicas == 2
    ro, _ = settle(ro, world, at(30))
    assert world.replica_sets[canary].replicas == 2
    ro, _ = settle(ro, world, at(31))
    assert world.replica_sets[canary].replicas == 0
    assert {c.type: c.status for c in ro.status.conditions}["Aborted"] == "True"


def test_abort_does_not_move_traffic_onto_an_unready_stable() -> None:
    """If stable pods are not all Ready, the abort scales stable up and waits before the
    weight changes."""
    ro, world = analysis_rollout()
    ro, _ = settle(ro, world, at(0))
    stable = ro.status.stable_revision
    assert stable is not None
    world.replica_sets[stable].ready = 6
    ro, result = step(ro, world, at(1), {("step-1", "errors"): m("Failed")})
    assert not any(isinstance(a, SetWeight) for a in result.actions)
    assert "waiting for 10 stable pods" in ro.status.message
    world.ready_all()
    ro, result = step(ro, world, at(2))
    assert SetWeight(0) in result.actions


def test_blind_analysis_holds_instead_of_failing() -> None:
    """Provider errors beyond the limit with onProviderError Hold block the step but do
    not abort; a good measurement resumes it."""
    ro, world = analysis_rollout()
    ro, _ = settle(ro, world, at(0))
    for i in range(6):
        ro, _ = step(ro, world, at(10 * i), {("step-1", "errors"): m("Error")})
    assert ro.status.abort is None
    assert ro.status.analysis_runs[0].phase == "Error"
    assert "holding" in ro.status.message
    ro, _ = step(ro, world, at(60), {("step-1", "errors"): m("Successful")})
    assert ro.status.analysis_runs[0].phase == "Running"


def test_missing_template_holds_with_a_reason() -> None:
    """An analysis whose template cannot be read holds the rollout and names the template."""
    ro, world = analysis_rollout()
    world.templates.clear()
    world.templates[TemplateKey("errors")] = "not found"
    ro, _ = settle(ro, world, at(0))
    assert ro.status.current_step_index == 1
    assert "AnalysisTemplate errors: not found" in ro.status.message
    assert ro.status.abort is None


@pytest.mark.parametrize("background", [False, True], ids=["step", "background"])
def test_a_template_that_appears_later_starts_the_analysis(background: bool) -> None:
    """A run that started while its template was missing starts afresh, with its metrics,
    once the template can be read (it does not stay blind for ever)."""
    analysis = {"templates": [{"templateName": "errors"}]}
    if background:
        ro = make([{"setWeight": 20}, {"pause": {}}], analysis=analysis)
    else:
        ro = make([{"setWeight": 20}, {"analysis": analysis}, {"setWeight": 60}])
    ro, world = stable_world(ro)
    ro = new_image(ro)
    world.templates[TemplateKey("errors")] = "not found"
    ro, _ = settle(ro, world, at(0))
    assert [(r.phase, r.metrics) for r in ro.status.analysis_runs] == [("Error", [])]
    world.templates[TemplateKey("errors")] = TEMPLATE
    ro, _ = settle(ro, world, at(10))
    (run,) = ro.status.analysis_runs
    assert (run.phase, [mr.name for mr in run.metrics], run.started_at) == (
        "Running",
        ["errors"],
        at(10),
    )


def test_background_analysis_failure_aborts_at_any_step() -> None:
    """Background analysis from startingStep aborts the canary when it fails."""
    steps = [{"setWeight": 10}, {"pause": {}}]
    ro = make(
        steps, routed=True, analysis={"templates": [{"templateName": "errors"}], "startingStep": 1}
    )
    ro, world = stable_world(ro, routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert [r.name for r in ro.status.analysis_runs] == ["background"]
    ro, _ = step(ro, world, at(1), {("background", "errors"): m("Failed")})
    assert ro.status.abort is not None
    assert "background analysis failed" in ro.status.abort.message


def test_background_analysis_must_succeed_before_promotion() -> None:
    """After the last step, promotion waits for the background analysis to succeed."""
    ro = make(
        [{"setWeight": 10}], routed=True, analysis={"templates": [{"templateName": "errors"}]}
    )
    ro, world = stable_world(ro, routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.stable_revision != ro.status.canary_revision
    assert "waiting for background analysis" in ro.status.message
    ro, _ = step(ro, world, at(0), {("background", "errors"): m("Successful")})
    ro, _ = step(ro, world, at(10), {("background", "errors"): m("Successful")})
    ro, _ = settle(ro, world, at(10))
    assert ro.status.stable_revision == ro.status.canary_revision


# -- manual intents ------------------------------------------------------------------------


def test_manual_abort_and_retry() -> None:
    """An abort intent aborts this revision; a retry intent naming the abort restarts it
    from step 0, and is inert afterwards."""
    ro, world = canary_at([{"setWeight": 20}, {"pause": {}}], routed=True)
    ro = annotate(ro, **{intents.ABORT: canary_of(ro)})
    ro, _ = settle(ro, world, at(1))
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "Manual"
    assert world.weight == 0
    ro, _ = settle(retried(ro), world, at(2))
    assert ro.status.abort is None
    assert ro.status.current_step_index == 1
    assert world.weight == 20


def test_promote_intent_for_another_step_is_inert() -> None:
    """A promote intent naming a different step or revision does not release the pause."""
    ro, world = stable_world(make([{"pause": {}}, {"setWeight": 50}]))
    ro = new_image(ro)
    rev = template_hash(ro.spec.template)
    for value in (intents.promote_value(rev, 1), intents.promote_value("other", 0)):
        held = annotate(ro, **{intents.PROMOTE: value})
        held, _ = settle(held, world, at(0))
        assert held.status.current_step_index == 0


def test_promote_full_skips_steps_and_analysis() -> None:
    """promote-full for the revision skips the remaining steps and analysis."""
    ro, world = analysis_rollout()
    rev = template_hash(ro.spec.template)
    ro = annotate(ro, **{intents.PROMOTE_FULL: rev})
    ro, _ = settle(ro, world, at(0))
    assert ro.status.stable_revision == rev
    assert ro.status.analysis_runs == []


# -- revisions -------------------------------------------------------------------------


def test_new_revision_mid_rollout_restarts_from_step_zero() -> None:
    """A newer template mid-canary supersedes the canary: step 0 again, old canary drained."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}], routed=True), routed=True)
    ro = new_image(ro, "registry.local/app:v2")
    v2 = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.current_step_index == 1
    ro = new_image(ro, "registry.local/app:v3")
    v3 = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(1))
    assert ro.status.canary_revision == v3
    assert ro.status.current_step_index == 1
    assert world.replica_sets[v2].replicas == 0
    assert world.replica_sets[v3].replicas == 2


def test_reapplying_the_stable_template_rolls_back_without_a_canary() -> None:
    """A template equal to stable goes straight back: traffic to stable, canary drained."""
    ro, world = stable_world(make([{"setWeight": 40}, {"pause": {}}], routed=True), routed=True)
    original = ro
    ro = new_image(ro)
    canary = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    assert world.weight == 40
    back = ro.model_copy(update={"spec": original.spec})
    back, _ = settle(back, world, at(1))
    assert world.weight == 0
    assert world.replica_sets[canary].replicas == 0
    assert back.status.phase == "Healthy"
    assert back.status.canary_revision == back.status.stable_revision


def test_progress_deadline_aborts_a_stuck_step() -> None:
    """Canary pods that never become Ready abort the rollout after progressDeadlineSeconds."""
    ro, world = deadline_canary()
    ro, result = step(ro, world, at(30))
    assert ro.status.abort is None
    assert result.requeue_after == pytest.approx(30.0)
    ro, _ = step(ro, world, at(61))
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "ProgressDeadlineExceeded"


def test_without_progress_deadline_abort_a_stuck_step_is_only_reported() -> None:
    """progressDeadlineAbort: false (Argo's default): past the deadline the Rollout is
    Degraded and says why, nothing is aborted or moved, and it goes on once pods are
    Ready."""
    ro, world = deadline_canary(progressDeadlineAbort=False)
    ro, result = step(ro, world, at(61))
    assert ro.status.abort is None
    assert not result.actions
    assert (ro.status.phase, ro.status.wait_reason) == ("Degraded", "PodsNotReady")
    assert ro.status.message.startswith(
        "step 0 made no progress for 60s (progressDeadlineAbort is false): "
    ), ro.status.message
    world.ready_all()
    ro, _ = settle(ro, world, at(62))
    assert ro.status.current_step_index == 1  # the pause: it went on
    assert world.weight == 20


def test_missing_service_is_reported_and_not_pinned() -> None:
    """A Service that does not exist gets a Degraded message naming it, no pin action."""
    ro = make([{"setWeight": 20}], routed=True)
    world = World(routed=True, missing_services={"app-canary"})
    ro, result = step(ro, world, T0)
    assert not any(isinstance(a, PinService) and a.service == "app-canary" for a in result.actions)
    assert "Service app-canary does not exist" in ro.status.message


def test_a_canary_service_gone_while_it_carries_traffic_takes_the_traffic_back() -> None:
    """At 20% the canary Service disappears: the canary is aborted at once (weight 0,
    naming the Service), whatever else the router reports; a retry after it is back
    starts over."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}], routed=True), routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert world.weight == 20
    world.missing_services.add("app-canary")
    world.router_problem = "canary Service app-canary does not exist"
    ro, _ = step(ro, world, at(1))
    assert world.weight == 0
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "CanaryServiceMissing"
    assert "canary Service app-canary disappeared while it carried 20%" in ro.status.abort.message
    assert ro.status.canary_weight == 0


def test_a_canary_service_gone_takes_its_header_routes_away_too() -> None:
    """With a header route to the canary, the Service disappearing removes the header
    route as well as the weight: a header-matched request must not reach a missing
    backend either (the router problem does not hold that back)."""
    steps = [{"setWeight": 20}, HEADER_ROUTE, {"pause": {}}]
    ro, world = stable_world(make(steps, routed=True), routed=True)
    ro, _ = settle(new_image(ro), world, at(0))
    assert set(world.header_routes) == {"beta"}
    world.missing_services.add("app-canary")
    world.router_problem = "canary Service app-canary does not exist"
    ro, _ = step(ro, world, at(1))
    assert (world.weight, world.header_routes) == (0, {})
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "CanaryServiceMissing"


def test_a_canary_service_missing_before_any_traffic_only_blocks() -> None:
    """With no traffic on the canary yet, a missing canary Service blocks (nothing to take
    back): no abort."""
    ro, world = stable_world(make([{"setWeight": 20}], routed=True), routed=True)
    world.missing_services.add("app-canary")
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.abort is None
    assert ro.status.wait_reason == "Blocked"


def test_router_problem_leaves_traffic_and_says_why() -> None:
    """A misconfigured router blocks the weight change with the router's reason."""
    ro, world = stable_world(make([{"setWeight": 20}], routed=True), routed=True)
    world.router_problem = "HTTPRoute app has no rule referencing Service app-stable"
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert world.weight == 0
    assert ro.status.phase == "Degraded"
    assert "no rule referencing" in ro.status.message


def test_revision_history_limit_deletes_the_oldest() -> None:
    """Scaled-down revisions beyond revisionHistoryLimit are deleted, oldest first."""
    ro, world = stable_world(make([]))
    for i in range(5):
        ro = new_image(ro, f"registry.local/app:v{i + 2}")
        ro, _ = settle(ro, world, at(i))
    # stable + 3 kept
    assert len(world.replica_sets) == 4


@pytest.mark.parametrize(
    ("weight", "total", "expected"),
    [(0, 10, 0), (5, 10, 1), (20, 10, 2), (50, 3, 2), (100, 7, 7), (1, 1000, 10)],
    ids=["zero", "rounds-up", "exact", "odd-total", "all", "large"],
)
def test_canary_replicas_round_up(weight: int, total: int, expected: int) -> None:
    """The canary gets ceil(weight * replicas / 100) pods."""
    assert canary_replicas(weight, total) == expected


def test_router_problem_at_a_pause_is_reported() -> None:
    """A route that breaks while the canary waits at a pause shows up in the status."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}], routed=True), routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    assert ro.status.phase == "Paused"
    world.router_problem = "HTTPRoute app not found"
    ro, result = step(ro, world, at(1))
    assert ro.status.phase == "Degraded"
    assert "HTTPRoute app not found" in ro.status.message
    assert [e.reason for e in result.events] == ["Blocked"]
    assert result.requeue_after is not None


def test_an_analysis_that_cannot_be_used_is_an_invalid_spec_that_holds_the_canary() -> None:
    """A template the runtime cannot use (here: its condition does not parse) blocks the
    Rollout with InvalidSpec (reason InvalidAnalysis) naming the template and field, and
    a Warning; the canary keeps its 20% and nothing advances; a fixed template clears
    it and the run starts."""
    ro, world = analysis_rollout()
    world.templates[TemplateKey("errors")] = (
        "invalid: spec.metrics[0].successCondition: cannot parse 'result >== 0.9 )'"
    )
    events: list[Event] = []
    for _ in range(6):  # the passes of settle, keeping every pass's events
        ro, result = step(ro, world, at(0))
        events += result.events
        world.ready_all()
        world.catch_up()
    conditions = {c.type: c for c in ro.status.conditions}
    assert (ro.status.phase, ro.status.wait_reason) == ("Degraded", "Blocked")
    assert conditions["InvalidSpec"].status == "True"
    assert conditions["InvalidSpec"].reason == "InvalidAnalysis"
    assert "successCondition" in conditions["InvalidSpec"].message
    assert ro.status.current_step_index == 1
    assert world.weight == 20
    [blocked] = [e for e in events if e.reason == "Blocked"]
    assert blocked.type == "Warning"
    assert "successCondition" in blocked.message
    ro, again = step(ro, world, at(5))  # the same problem: no new event, no new write
    assert not again.events
    assert again.status == ro.status
    world.templates[TemplateKey("errors")] = TEMPLATE
    ro, _ = settle(ro, world, at(6))
    conditions = {c.type: c for c in ro.status.conditions}
    assert conditions["InvalidSpec"].status == "False"
    assert ro.status.analysis_runs[0].phase == "Running"
    assert ro.status.wait_reason == "AnalysisRunning"
