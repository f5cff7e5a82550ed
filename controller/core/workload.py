"""``spec.workloadRef``: a Rollout that runs the pod template of an existing Deployment.

Where it sits: the reconciler reads the referenced Deployment (from its informer) into a
:class:`Deployment`, and before anything else is decided asks :func:`resolve` for the
Rollout as if the Deployment's pod template (and, when the Rollout has no selector of its
own, the Deployment's selector) were written in its spec. From there on nothing else
knows about the reference: the revision is the hash of that template, so a change to the
Deployment's template starts a new revision exactly as a template change does. A
reference that cannot be resolved (no such Deployment, a kind other than an ``apps/v1``
Deployment, a template or selector the Rollout's rules refuse) is a list of problems,
each naming its field, which the reconciler reports as InvalidSpec.

After the plan, :func:`scale_deployment` decides what ``scaleDown`` asks of the
Deployment's own replicas (the runtime patches them and annotates the Deployment):

==============  ===================================================================
scaleDown       the Deployment's ``spec.replicas``
==============  ===================================================================
never           left alone
onsuccess       0 once the Rollout is Healthy; left alone before
progressively   ``spec.replicas`` minus the Rollout's Ready pods (never above what the
                Deployment had before Stepwise first scaled it, never below 0), so the
                two together stay about ``spec.replicas``; 0 once the Rollout is Healthy
==============  ===================================================================

Like Argo Rollouts (which does it for the Rollout's first revision only), the scale-down
is the migration: once the Deployment has been scaled to 0 with the Rollout Healthy, it is
marked done and never scaled again (a Deployment scaled up again later by a person, or
its pods started by a later template change, is theirs). Worked example, progressively,
``spec.replicas: 3``, the Deployment running 3 pods: Rollout Ready 0 -> 3 (unchanged);
Ready 1 -> 2; Ready 2 -> 1; Ready 3 but not yet Healthy -> 0; Healthy -> 0 and done. If
the Rollout's pods stop being Ready before it is Healthy (Ready 3 -> 1), the Deployment
goes back up (2), as in Argo Rollouts.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from controller.api.rollout import Rollout, RolloutSpec, ScaleDown, WorkloadRef
from controller.api.validation import problems_of

SUPPORTED_API_VERSION: Final = "apps/v1"
SUPPORTED_KIND: Final = "Deployment"

SCALED_BY_ANNOTATION: Final = "stepwise.dev/scaled-down-by"
"""On a Deployment Stepwise scaled: the Rollout that did it (``spec.workloadRef``)."""
REPLICAS_BEFORE_ANNOTATION: Final = "stepwise.dev/replicas-before-scale-down"
"""On a Deployment Stepwise scaled: its ``spec.replicas`` before the first scale-down."""
SCALE_DOWN_ANNOTATION: Final = "stepwise.dev/scale-down"
"""On a Deployment Stepwise scaled: ``in-progress`` while it follows the Rollout's Ready
pods, ``done`` once it was scaled to 0 with the Rollout Healthy (never scaled again)."""


@dataclass(frozen=True)
class Deployment:
    """What the reconciler read of the referenced Deployment (wire form, camelCase)."""

    name: str
    namespace: str
    replicas: int
    """``spec.replicas`` (1 when unset, as the API server defaults it)."""
    template: Mapping[str, Any]
    """``spec.template``: a PodTemplateSpec."""
    selector: Mapping[str, Any]
    """``spec.selector``: a LabelSelector."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """``metadata.annotations``."""
    resource_version: str | None = None
    """``metadata.resourceVersion`` (a write guarded by it fails on a stale read)."""

    @property
    def replicas_before(self) -> int | None:
        """The replicas it had before Stepwise first scaled it (None: never scaled, or
        an annotation that is not a count)."""
        raw = self.annotations.get(REPLICAS_BEFORE_ANNOTATION)
        if raw is None or not raw.isdigit():
            return None
        return int(raw)

    @property
    def scale_down_done(self) -> bool:
        """Whether Stepwise finished the migration's scale-down (see the module)."""
        return self.annotations.get(SCALE_DOWN_ANNOTATION) == "done"


def unsupported(ref: WorkloadRef) -> str | None:
    """Why the reference cannot be resolved whatever exists (None when it can be)."""
    if ref.api_version == SUPPORTED_API_VERSION and ref.kind == SUPPORTED_KIND:
        return None
    return (
        f"spec.workloadRef.kind: {ref.api_version} {ref.kind} is not supported; Stepwise "
        f"takes the pod template of an {SUPPORTED_API_VERSION} {SUPPORTED_KIND} only"
    )


def missing(ref: WorkloadRef, namespace: str) -> str:
    """The problem of a reference to a Deployment that does not exist."""
    return (
        f'spec.workloadRef.name: Deployment "{ref.name}" not found in namespace {namespace}; '
        "the Rollout takes no action until it exists"
    )


def pod_template(deployment: Deployment) -> dict[str, Any]:
    """The Deployment's pod template as the Rollout runs it: the pod spec as the API
    server holds it (defaults included), and of the template's metadata only its labels
    and annotations (the fields a Rollout's template has)."""
    template = copy.deepcopy(dict(deployment.template))
    meta = template.get("metadata") or {}
    kept = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
    return {"metadata": kept, "spec": template.get("spec") or {}}


@dataclass(frozen=True)
class Resolved:
    """A workloadRef Rollout with the Deployment's pod template (and selector) in its
    spec, and those two in wire form for the objects built from them."""

    rollout: Rollout
    template: dict[str, Any]
    selector: dict[str, Any]


def resolve(rollout: Rollout, deployment: Deployment | None) -> Resolved | list[str]:
    """``rollout`` with ``spec.template`` (and ``spec.selector``, unless it has its own)
    taken from ``deployment`` and ``workloadRef`` dropped, validated by every rule of
    the spec; or the problems, each naming its field. ``rollout`` must have a
    ``workloadRef``."""
    ref = rollout.spec.workload_ref
    if ref is None:
        raise ValueError("resolve() needs a Rollout with spec.workloadRef")
    why = unsupported(ref)
    if why is not None:
        return [why]
    namespace = rollout.metadata.namespace or ""
    if deployment is None:
        return [missing(ref, namespace)]
    template = pod_template(deployment)
    own = rollout.spec.selector
    selector = own.wire() if own is not None else copy.deepcopy(dict(deployment.selector))
    wire = rollout.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    wire.pop("workloadRef", None)
    wire["template"], wire["selector"] = template, selector
    try:
        spec = RolloutSpec.model_validate(wire)
    except ValidationError as exc:
        source = f'Deployment "{deployment.name}"'
        return [
            f"spec.{where}: {reason} (with the pod template"
            + (", selector" if own is None else "")
            + f" of {source}, spec.workloadRef.name)"
            for where, reason in problems_of(exc)
        ]
    return Resolved(rollout.model_copy(update={"spec": spec}), template, selector)


@dataclass(frozen=True)
class ScaleDeployment:
    """Set the referenced Deployment's ``spec.replicas`` and Stepwise's annotations."""

    name: str
    replicas: int
    """The Deployment's new ``spec.replicas``."""
    before: int
    """Its replicas before Stepwise first scaled it (recorded in an annotation)."""
    done: bool
    """Whether this ends the migration's scale-down (the Rollout is Healthy)."""
    previous: int
    """Its ``spec.replicas`` now, for the log and the event."""


def scale_deployment(
    scale_down: ScaleDown,
    deployment: Deployment,
    *,
    replicas: int,
    ready: int,
    healthy: bool,
) -> ScaleDeployment | None:
    """What ``scaleDown`` asks of ``deployment`` when the Rollout wants ``replicas`` pods,
    has ``ready`` Ready pods and is (or is not) ``healthy``; None when nothing is to be
    written (see the module's table)."""
    if scale_down == "never" or deployment.scale_down_done:
        return None
    before = deployment.replicas_before
    if before is None:
        before = deployment.replicas
    if healthy:
        return ScaleDeployment(deployment.name, 0, before, True, deployment.replicas)
    if scale_down == "onsuccess":
        return None
    target = max(0, min(before, replicas - ready))
    if target == deployment.replicas:
        return None
    return ScaleDeployment(deployment.name, target, before, False, deployment.replicas)
