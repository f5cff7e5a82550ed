"""Rollouts and simulated worlds for the unit tests of :func:`controller.core.plan.plan`:
builders for the Rollout model, its revisions and intents, and worlds it is stable in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.api import intents
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import Measurement, Rollout
from controller.core.hashing import template_hash
from controller.core.model import TemplateKey
from tests.support.manifests import rollout as rollout_doc
from tests.support.world import T0, World, settle, step

ROUTED = {
    "stableService": "app-stable",
    "canaryService": "app-canary",
    "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
}
#: The "errors" AnalysisTemplate every stable world holds: two measurements 10 s apart.
TEMPLATE = AnalysisTemplateSpec.model_validate(
    {
        "metrics": [
            {
                "name": "errors",
                "interval": "10s",
                "count": 2,
                "thresholdRange": {"max": 0.01},
                "provider": {"prometheus": {"query": "vector(0)"}},
            }
        ]
    }
)
#: A step analysis with the "errors" template.
ANALYSIS = {"analysis": {"templates": [{"templateName": "errors"}]}}
#: A step adding the header route "beta" (requests with ``x-beta: 1``).
HEADER_ROUTE = {
    "setHeaderRoute": {
        "name": "beta",
        "match": [{"headerName": "x-beta", "headerValue": {"exact": "1"}}],
    }
}


def make(steps: list[dict[str, Any]], *, routed: bool = False, **canary: Any) -> Rollout:
    """A Rollout model with the given steps (replicas 10)."""
    extra = {**ROUTED, **canary} if routed else canary
    return Rollout.model_validate(rollout_doc("app", steps=steps, **extra))


def new_image(ro: Rollout, image: str = "registry.local/app:v2") -> Rollout:
    """The same Rollout with a changed image (a new revision)."""
    doc = ro.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
    doc["metadata"]["generation"] = (ro.metadata.generation or 1) + 1
    return Rollout.model_validate(doc)


def _with_annotations(ro: Rollout, annotations: dict[str, str]) -> Rollout:
    return ro.model_copy(
        update={"metadata": ro.metadata.model_copy(update={"annotations": annotations})}
    )


def annotate(ro: Rollout, **ann: str) -> Rollout:
    """The Rollout with these annotations added."""
    return _with_annotations(ro, {**(ro.metadata.annotations or {}), **ann})


def retried(ro: Rollout) -> Rollout:
    """The aborted Rollout as ``stepwise retry`` leaves it: the abort annotation removed,
    and a retry annotation naming the aborted revision and attempt."""
    abort = ro.status.abort
    assert abort is not None
    kept = {k: v for k, v in (ro.metadata.annotations or {}).items() if k != intents.ABORT}
    return _with_annotations(
        ro, {**kept, intents.RETRY: intents.retry_value(abort.revision, abort.attempt)}
    )


def paused(ro: Rollout, value: bool = True) -> Rollout:
    """The Rollout with ``spec.paused`` set (or cleared)."""
    return ro.model_copy(update={"spec": ro.spec.model_copy(update={"paused": value})})


def canary_of(ro: Rollout) -> str:
    """The revision of the Rollout's current template."""
    return template_hash(ro.spec.pod_template)


def stable_world(ro: Rollout, *, routed: bool = False) -> tuple[Rollout, World]:
    """A world in which the Rollout's first revision is stable and Ready."""
    world = World(routed=routed)
    world.templates[TemplateKey("errors")] = TEMPLATE
    ro, _ = settle(ro, world, T0)
    assert ro.status.phase == "Healthy"
    return ro, world


def canary_at(steps: list[dict[str, Any]], **canary: Any) -> tuple[Rollout, World]:
    """A Rollout whose new revision has settled at its first waiting step."""
    ro, world = stable_world(make(steps, **canary), routed=bool(canary.get("routed")))
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    return ro, world


def deadline_canary(**spec: Any) -> tuple[Rollout, World]:
    """A routed Rollout with a 60 s progress deadline (and ``spec`` fields) whose new
    revision has had one pass at T0 + 0 and whose pods never become Ready."""
    doc = rollout_doc("app", steps=[{"setWeight": 20}, {"pause": {}}], **ROUTED)
    doc["spec"] |= {"progressDeadlineSeconds": 60, **spec}
    ro, world = stable_world(Rollout.model_validate(doc), routed=True)
    ro, _ = step(new_image(ro), world, at(0))
    return ro, world


def analysis_rollout(routed: bool = True) -> tuple[Rollout, World]:
    """A new revision, not yet planned, of a stable Rollout whose steps are
    [setWeight 20, analysis "errors", setWeight 60]."""
    steps = [{"setWeight": 20}, ANALYSIS, {"setWeight": 60}]
    ro, world = stable_world(make(steps, routed=routed), routed=routed)
    return new_image(ro), world


def m(phase: str, value: str = "0") -> Measurement:
    """A judged measurement."""
    return Measurement.model_validate({"phase": phase, "value": value, "startedAt": T0})


def at(seconds: float) -> dt.datetime:
    """``seconds`` after T0."""
    return T0 + dt.timedelta(seconds=seconds)
