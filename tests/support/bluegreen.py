"""Blue-green Rollouts for the unit tests of :func:`controller.core.plan.plan`: the
Rollout model, a world it is stable in, and a new revision in preview."""

from __future__ import annotations

from typing import Any

from controller.api.rollout import Rollout
from controller.core.model import TemplateKey
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import TEMPLATE, at, canary_of, new_image
from tests.support.world import World, settle

ACTIVE, PREVIEW = "app-active", "app-preview"
CHECK = {"templates": [{"templateName": "errors"}]}
#: One measurement decides: a property's sequences reach verdicts sooner.
QUICK = {"templates": [{"templateName": "quick"}]}
QUICK_TEMPLATE = TEMPLATE.model_copy(
    update={"metrics": [TEMPLATE.metrics[0].model_copy(update={"count": 1})]}
)


def bg_rollout(replicas: int = 4, **blue_green: Any) -> Rollout:
    """A blue-green Rollout of ``replicas`` pods."""
    doc = rollout_doc("app", replicas=replicas)
    doc["spec"]["strategy"] = {
        "blueGreen": {"activeService": ACTIVE, "previewService": PREVIEW, **blue_green}
    }
    return Rollout.model_validate(doc)


def stable(ro: Rollout) -> tuple[Rollout, World]:
    """A world (with the templates errors and quick) in which the Rollout's first
    revision is stable and Ready."""
    world = World()
    world.templates[TemplateKey("errors")] = TEMPLATE
    world.templates[TemplateKey("quick")] = QUICK_TEMPLATE
    ro, _ = settle(ro, world, at(0))
    assert ro.status.phase == "Healthy", ro.status.message
    return ro, world


def in_preview(**blue_green: Any) -> tuple[Rollout, World, str, str]:
    """A stable blue-green Rollout (with ``blue_green`` fields) whose new revision has
    settled at T0 + 1 s: the Rollout, its world, the old and the new revision."""
    ro, world = stable(bg_rollout(**blue_green))
    old = str(ro.status.stable_revision)
    ro = new_image(ro)
    new = canary_of(ro)
    ro, _ = settle(ro, world, at(1))
    return ro, world, old, new
