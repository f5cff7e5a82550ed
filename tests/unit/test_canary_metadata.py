"""``canaryMetadata`` and ``stableMetadata`` (Argo's ephemeral labels): the canary's pods
carry the canary role's labels and annotations while it is the canary, and the stable
role's once promoted; the stable revision's pods carry the stable role's throughout."""

from __future__ import annotations

from controller.api import intents
from controller.api.validation import validate_document
from controller.core.plan import plan
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import annotate, at, canary_of, make, new_image, stable_world
from tests.support.world import settle

STABLE = {"labels": {"role": "stable"}, "annotations": {"team/tier": "live"}}
CANARY = {"labels": {"role": "canary", "canary": "yes"}}


def test_roles_follow_the_revision_from_canary_to_stable() -> None:
    ro, world = stable_world(
        make([{"setWeight": 50}, {"pause": {}}], stableMetadata=STABLE, canaryMetadata=CANARY)
    )
    old = str(ro.status.stable_revision)
    assert world.replica_sets[old].labels == {"role": "stable"}
    assert world.replica_sets[old].annotations == {"team/tier": "live"}
    ro = new_image(ro)
    new = canary_of(ro)
    ro, _ = settle(ro, world, at(1))
    assert ro.status.current_step_index == 1  # paused at the second step
    assert world.replica_sets[new].labels == {"role": "canary", "canary": "yes"}
    assert world.replica_sets[old].labels == {"role": "stable"}
    assert not plan(ro, world.observed(), at(1)).actions  # once per role
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(new, 1)})
    ro, _ = settle(ro, world, at(2))
    assert ro.status.stable_revision == new
    # "canary" is taken off; the stable role's labels and annotation are put on
    assert world.replica_sets[new].labels == {"role": "stable"}
    assert world.replica_sets[new].annotations == {"team/tier": "live"}


def test_without_role_metadata_nothing_is_written() -> None:
    ro, world = stable_world(make([{"setWeight": 50}, {"pause": {}}]))
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(1))
    assert all(not rs.labels for rs in world.replica_sets.values())


def test_a_role_label_may_not_be_a_selector_label() -> None:
    for role in ("stableMetadata", "canaryMetadata"):
        doc = rollout_doc("app")
        doc["spec"]["strategy"]["canary"][role] = {"labels": {"app": "x"}}
        problems = validate_document(doc)
        assert [(p.field, p.reason) for p in problems] == [
            (
                "spec.strategy.canary",
                "stableMetadata and canaryMetadata must not set a selector label or "
                "stepwise.dev/revision: a pod would leave its ReplicaSet",
            )
        ], role
