"""The plan waits for the data plane where a lagging Gateway would drop requests: a
superseded canary keeps its Service and pods until the router shows it gets nothing and
the Gateway has taken that in, and old revisions are scaled down only once the Gateway
has taken in the last route change. And how the Gateway API router reads "taken in"
from an HTTPRoute's status."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from controller.adapters.traffic.gatewayapi import APPLY_SECONDS, applied, last_written, taken_in
from controller.api import intents
from controller.core.model import PinService, ScaleReplicaSet, SetWeight
from controller.core.plan import plan
from tests.support.plan import annotate, at, canary_of, make, new_image, stable_world
from tests.support.world import settle, step

STEPS = [{"setWeight": 30}, {"pause": {}}]


def test_a_superseded_canary_keeps_its_service_and_pods_until_the_gateway_moved() -> None:
    """A new revision while the canary carries 30%: the weight goes to 0 at once, but the
    canary Service keeps selecting the old canary, whose pods stay, until the Gateway has
    applied the weight; then the Service selects the new revision and the old canary
    goes."""
    ro, world = stable_world(make(STEPS, routed=True), routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(1))
    old = canary_of(ro)
    assert world.weight == 30
    ro = new_image(ro, "registry.local/app:v3")
    new = canary_of(ro)

    ro, first = step(ro, world, at(2))
    assert SetWeight(0) in first.actions
    assert not [a for a in first.actions if isinstance(a, PinService)]
    assert ScaleReplicaSet(old, 0) not in first.actions  # still reached by the Service
    assert world.services["app-canary"] == old
    assert first.status.wait_reason == "TrafficShifting"
    assert "waiting for the data plane" in first.status.message
    assert first.requeue_after is not None
    assert first.requeue_after <= 1

    again = plan(ro, world.observed(), at(2))  # the Gateway has not caught up yet
    assert not [a for a in again.actions if isinstance(a, PinService)]

    world.catch_up()
    _, second = step(ro, world, at(3))
    assert PinService("app-canary", new) in second.actions
    # The Gateway sends the canary Service nothing: the old canary goes in the same pass.
    assert ScaleReplicaSet(old, 0) in second.actions


def test_old_revisions_scale_down_only_once_the_gateway_took_in_the_promotion() -> None:
    """After promotion the old stable is scaled down when its delay has passed and the
    Gateway has taken in the last route write, not before."""
    ro, world = stable_world(
        make([{"setWeight": 50}], routed=True, scaleDownDelaySeconds=5), routed=True
    )
    first_stable = ro.status.stable_revision
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(1))
    assert ro.status.stable_revision == canary_of(ro)
    world.taken_in = False  # a route write the Gateway has not applied yet
    _, due = step(ro, world, at(30))
    assert ScaleReplicaSet(str(first_stable), 0) not in due.actions
    assert due.requeue_after is not None
    assert due.requeue_after <= 1
    world.catch_up()
    _, later = step(ro, world, at(31))
    assert ScaleReplicaSet(str(first_stable), 0) in later.actions


def test_the_first_share_waits_until_the_canary_pods_are_ready_endpoints() -> None:
    """Canary pods Ready are not yet pods the data plane routes to: the weight goes up
    from 0 only once the canary Service's EndpointSlices list them ready (when the
    runtime could read them: None means unknown, and the pods alone decide)."""
    ro, world = stable_world(make(STEPS, routed=True), routed=True)
    ro = new_image(ro)
    ro, _ = step(ro, world, at(1))  # the canary's ReplicaSet; the canary Service pinned
    world.ready_all()
    canary = canary_of(ro)
    assert world.services["app-canary"] == canary
    want = world.replica_sets[canary].replicas
    assert want > 0
    assert world.replica_sets[canary].ready == want

    for listed in (0, want - 1):
        held = plan(ro, dataclasses.replace(world.observed(), canary_endpoints=listed), at(5))
        assert not [a for a in held.actions if isinstance(a, SetWeight)], listed
        assert held.status.wait_reason == "PodsNotReady"
        assert f"{listed} of them ready endpoints of canary Service app-canary" in (
            held.status.message
        )
        assert held.requeue_after is not None
        assert held.requeue_after <= 1  # slices are not watched: look again soon

    for listed_or_unknown in (want, None):
        moved = plan(
            ro, dataclasses.replace(world.observed(), canary_endpoints=listed_or_unknown), at(5)
        )
        assert SetWeight(30) in moved.actions, listed_or_unknown


def route(generation: int, *observed: int) -> dict[str, Any]:
    """An HTTPRoute at ``generation`` whose parents report these observed generations."""
    return {
        "metadata": {"name": "app", "generation": generation},
        "status": {
            "parents": [
                {"conditions": [{"type": "Accepted", "observedGeneration": g}]} for g in observed
            ]
        },
    }


def test_a_route_is_taken_in_when_every_parent_reports_its_generation() -> None:
    """Every parent at the route's generation: taken in; one behind: not yet; no status
    at all (no implementation reports one): nothing to wait for."""
    assert taken_in(route(4, 4, 4))
    assert not taken_in(route(4, 4, 3))
    assert taken_in(route(4))
    assert taken_in({"metadata": {"name": "app", "generation": 2}})


def written(doc: dict[str, Any], at: dt.datetime, manager: str = "stepwise-controller") -> None:
    """Record that ``manager`` last updated the route's spec at ``at``."""
    doc["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Update", "time": "2026-01-01T00:00:00Z"},
        {"manager": manager, "operation": "Update", "time": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
        {"manager": "traefik", "operation": "Update", "subresource": "status",
         "time": (at + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")},
    ]  # fmt: skip


def test_a_route_is_applied_only_some_seconds_after_our_last_write() -> None:
    """Processed by every parent is not enough: the data plane may apply a processed
    route later, so Stepwise's own last write must be APPLY_SECONDS old."""
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    doc = route(4, 4)
    written(doc, now - dt.timedelta(seconds=1))
    assert last_written(doc) == now - dt.timedelta(seconds=1)
    assert not applied(doc, now)
    assert applied(doc, now + dt.timedelta(seconds=APPLY_SECONDS))
    assert not applied(route(4, 3), now)  # not processed yet
    assert applied(route(4, 4), now)  # nothing written by Stepwise


def annotate_abort(ro: Any) -> Any:
    """The Rollout with an abort of its current canary asked for."""
    return annotate(ro, **{intents.ABORT: canary_of(ro)})


def test_an_aborted_canary_at_zero_is_not_scheduled_again() -> None:
    """Once the aborted canary's scale-down has run, later passes leave the status as it
    is: no new scale-down entry, nothing to write (it was rescheduled every delay)."""
    ro, world = stable_world(make(STEPS, routed=True, abortScaleDownDelaySeconds=5), routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(1))
    ro = annotate_abort(ro)
    ro, _ = settle(ro, world, at(2))
    ro, _ = settle(ro, world, at(10))  # past the delay: the canary goes to 0
    assert world.replica_sets[canary_of(ro)].replicas == 0
    for seconds in (20, 30, 60):
        ro, later = step(ro, world, at(seconds))
        assert later.actions == ()
        assert later.status.scale_down == []
        assert later.status == ro.status


def test_no_pods_go_in_the_pass_that_moves_traffic_even_with_no_delay() -> None:
    """With scaleDownDelaySeconds and abortScaleDownDelaySeconds 0, a promotion and an
    abort still never scale a revision down in the pass that writes a weight or points a
    Service elsewhere: the Gateway has not applied that write yet."""
    for abort in (False, True):
        ro, world = stable_world(
            make(
                [{"setWeight": 50}, {"pause": {"duration": "1s"}}],
                routed=True,
                scaleDownDelaySeconds=0,
                abortScaleDownDelaySeconds=0,
            ),
            routed=True,
        )
        ro = new_image(ro)
        passes = []
        for second in range(1, 30):
            if abort and second == 3:
                ro = annotate_abort(ro)
            ro, result = step(ro, world, at(second))
            passes.append(result)
            world.ready_all()
            world.catch_up()
        moved = [r for r in passes if any(isinstance(a, SetWeight | PinService) for a in r.actions)]
        assert moved
        for result in moved:
            downs = [
                a for a in result.actions if isinstance(a, ScaleReplicaSet) and a.replicas == 0
            ]
            assert downs == [], (abort, result.actions)
        # ...and the scale-down does happen, in a later pass.
        assert any(
            isinstance(a, ScaleReplicaSet) and a.replicas == 0 for r in passes for a in r.actions
        ), abort
