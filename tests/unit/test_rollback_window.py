"""``spec.rollbackWindow`` (Argo's meaning): setting the template back to one of the
revisions just before the stable one promotes it without steps or analysis; anything
older, or any new template, goes through the steps."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import intents
from controller.api.rollout import Rollout
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import annotate, at, canary_of, new_image
from tests.support.world import World, settle, step

STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]


def released(ro: Rollout, world: World, image: str, when: float) -> Rollout:
    """Roll ``image`` out through the steps (promoted by hand at the pause)."""
    ro = new_image(ro, image)
    revision = canary_of(ro)
    ro, _ = settle(ro, world, at(when))
    assert ro.status.current_step_index == 1, ro.status.message  # held at the pause
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(revision, 1)})
    ro, _ = settle(ro, world, at(when + 1))
    assert ro.status.stable_revision == revision
    return ro


def history(revisions: int | None) -> tuple[Rollout, World, list[str]]:
    """v1 (first), then v2 and v3 released: three ReplicaSets, v3 stable."""
    doc = rollout_doc("app", steps=STEPS)
    if revisions is not None:
        doc["spec"]["rollbackWindow"] = {"revisions": revisions}
    ro, world = Rollout.model_validate(doc), World()
    ro, _ = settle(ro, world, at(0))
    seen = [canary_of(ro)]
    for n, image in enumerate(("registry.local/app:v2", "registry.local/app:v3"), 1):
        ro = released(ro, world, image, 10 * n)
        seen.append(canary_of(ro))
    return ro, world, seen


@pytest.mark.parametrize("back_to", ["v2", "v1"])
def test_a_rollback_within_the_window_skips_steps_and_analysis(back_to: str) -> None:
    ro, world, seen = history(revisions=3)
    ro = new_image(ro, f"registry.local/app:{back_to}")
    target = canary_of(ro)
    assert target in seen[:2]
    ro, first = step(ro, world, at(100))
    assert [e.message for e in first.events if e.reason == "RollbackWindow"] == [
        f"revision {target} is within the rollback window: skipping steps 0..1 and analysis"
    ]
    ro, _ = settle(ro, world, at(100))
    assert ro.status.stable_revision == target  # no pause step held it
    assert ro.status.phase == "Healthy"


def test_the_window_is_counted_from_the_stable_revision_back() -> None:
    """revisions: 2 takes the one revision before stable (v2) only; v1 runs the steps."""
    ro, world, _ = history(revisions=2)
    ro = new_image(ro, "registry.local/app:v1")
    ro, _ = settle(ro, world, at(100))
    assert ro.status.current_step_index == 1  # held at the pause like any new template
    assert ro.status.stable_revision != canary_of(ro)


def test_without_a_window_a_rollback_runs_the_steps() -> None:
    ro, world, _ = history(revisions=None)
    ro = new_image(ro, "registry.local/app:v2")
    ro, _ = settle(ro, world, at(100))
    assert ro.status.current_step_index == 1
    assert ro.status.stable_revision != canary_of(ro)


def test_a_new_template_is_never_in_the_window() -> None:
    ro, world, _ = history(revisions=3)
    ro = new_image(ro, "registry.local/app:v4")
    ro, _ = settle(ro, world, at(100))
    assert ro.status.current_step_index == 1


def test_blue_green_rollback_within_the_window_switches_without_the_pause() -> None:
    """Without auto-promotion each new revision waits for a promote; going back to the
    previous revision within the window switches the active Service as soon as it is
    Ready."""
    doc = rollout_doc("app", replicas=2)
    doc["spec"]["strategy"] = {
        "blueGreen": {"activeService": "app-active", "autoPromotionEnabled": False}
    }
    doc["spec"]["rollbackWindow"] = {"revisions": 2}
    ro, world = Rollout.model_validate(doc), World()
    ro, _ = settle(ro, world, at(0))
    first = canary_of(ro)
    ro = new_image(ro)
    second = canary_of(ro)
    ro, _ = settle(ro, world, at(10))
    assert ro.status.stable_revision == first  # waiting for a promote
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(second, 0)})
    ro, _ = settle(ro, world, at(20))
    assert ro.status.stable_revision == second
    ro = new_image(ro, "registry.local/app:v1")
    assert canary_of(ro) == first
    ro, _ = settle(ro, world, at(30))
    assert ro.status.stable_revision == first
    assert world.services["app-active"] == first


def test_revisions_created_in_the_same_second_are_not_taken_by_the_window() -> None:
    """ReplicaSet creation times have whole seconds; when the previous revision was made in
    the same second as the one before it, their order is unknown and the steps run."""
    doc = rollout_doc("app", steps=STEPS)
    doc["spec"]["rollbackWindow"] = {"revisions": 2}
    ro, world = Rollout.model_validate(doc), World()
    ro, _ = settle(ro, world, at(0))
    ro = released(ro, world, "registry.local/app:v2", 0)  # same second as v1
    ro = released(ro, world, "registry.local/app:v3", 10)
    ro = new_image(ro, "registry.local/app:v2")
    ro, _ = settle(ro, world, at(100))
    assert ro.status.current_step_index == 1  # held at the pause: no fast track
