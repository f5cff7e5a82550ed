"""``dynamicStableScale`` (Argo's meaning): with a traffic router the stable is scaled to
the share of traffic it carries rather than kept at full size, and on abort it is scaled
back up with traffic moved back as its pods become Ready. The stable never has fewer
pods than the share it carries, on any pass."""

from __future__ import annotations

from typing import Any

from controller.api import intents
from controller.api.rollout import Rollout
from controller.api.validation import validate_document
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import ROUTED, annotate, at, canary_of, make, new_image, stable_world
from tests.support.world import World, settle, step

STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {}},
]


def at_step(index: int) -> tuple[Rollout, World, str, str]:
    """A 10-pod routed Rollout with dynamicStableScale, its canary held at the pause
    ``index`` (1 or 3)."""
    ro, world = stable_world(make(STEPS, routed=True, dynamicStableScale=True), routed=True)
    stable = str(ro.status.stable_revision)
    ro = new_image(ro)
    canary = canary_of(ro)
    ro, _ = settle(ro, world, at(1))
    if index == 3:
        ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(canary, 1)})
        ro, _ = settle(ro, world, at(2))
    assert ro.status.current_step_index == index
    return ro, world, stable, canary


def carries_its_share(world: World) -> bool:
    """Whether the revision the stable Service selects has Ready pods for the share of
    the 10 pods' traffic the router leaves it."""
    size = world.replica_sets[str(world.services["app-stable"])]
    return 100 * size.ready >= (100 - world.weight) * 10


def test_the_stable_shrinks_to_its_share_only_after_the_weight_moved() -> None:
    _, world, stable, canary = at_step(1)
    assert world.weight == 20
    assert world.replica_sets[stable].replicas == 8
    assert world.replica_sets[canary].replicas == 2
    _, world, stable, canary = at_step(3)
    assert world.weight == 60
    assert world.replica_sets[stable].replicas == 4
    assert world.replica_sets[canary].replicas == 6


def test_every_pass_leaves_the_stable_enough_ready_pods_for_its_traffic() -> None:
    ro, world = stable_world(make(STEPS, routed=True, dynamicStableScale=True), routed=True)
    ro = new_image(ro)
    canary = canary_of(ro)
    for second in range(40):
        ro, _ = step(ro, world, at(second))
        assert carries_its_share(world), (world.weight, world.replica_sets)
        world.ready_all()
        world.catch_up()
        if ro.status.current_step_index in (1, 3):
            index = ro.status.current_step_index
            ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(canary, index)})
    assert ro.status.stable_revision == canary


def test_an_abort_moves_traffic_back_as_the_stable_pods_become_ready() -> None:
    ro, world, stable, canary = at_step(3)
    ro = annotate(ro, **{intents.ABORT: canary})
    ro, _ = step(ro, world, at(10))
    assert world.replica_sets[stable].replicas == 10
    assert world.weight == 60  # 4 Ready stable pods carry 40%, no more
    world.replica_sets[stable].ready = 7
    ro, _ = step(ro, world, at(11))
    assert world.weight == 30
    world.ready_all()
    ro, _ = settle(ro, world, at(12))
    assert world.weight == 0
    assert ro.status.phase == "Degraded"


def test_without_it_the_stable_stays_at_full_size() -> None:
    ro, world = stable_world(make(STEPS, routed=True), routed=True)
    stable = str(ro.status.stable_revision)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(1))
    assert world.weight == 20
    assert world.replica_sets[stable].replicas == 10


def test_it_needs_a_traffic_router() -> None:
    doc = rollout_doc("app", steps=STEPS, dynamicStableScale=True)
    assert [(p.field, p.reason) for p in validate_document(doc)] == [
        (
            "spec.strategy.canary.dynamicStableScale",
            "dynamicStableScale needs trafficRouting (without a router traffic follows the "
            "pods, so the stable is already scaled to its share)",
        )
    ]
    assert not validate_document(rollout_doc("app", steps=STEPS, dynamicStableScale=True, **ROUTED))


def test_the_stable_waits_for_the_data_plane_to_take_the_new_weight_in() -> None:
    """A Gateway applies a route change a moment after it is written: until it has, the
    stable may still get its former share, so it keeps the pods for it."""
    ro, world, stable, canary = at_step(1)
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(canary, 1)})
    for second in range(2, 12):  # pods become Ready; the data plane never catches up
        ro, _ = step(ro, world, at(second))
        world.ready_all()
        if world.weight == 60:
            break
    assert world.weight == 60
    assert not world.taken_in
    for second in range(12, 16):
        ro, _ = step(ro, world, at(second))
        assert world.replica_sets[stable].replicas == 8  # the share of weight 20
    world.catch_up()
    ro, _ = step(ro, world, at(20))
    assert world.replica_sets[stable].replicas == 4
