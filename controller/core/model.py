"""What :func:`controller.core.plan.plan` reads and what it returns.

The runtime observes the world (owned ReplicaSets, the router, Services, analysis
templates, measurements taken this pass) into an :class:`Observed`; ``plan`` returns a
:class:`Plan`: the actions that move the world one step towards the desired state, in
the order they must be applied, the new status, the events to emit once that status is
written, and when to look again. Nothing here performs I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import HeaderMatch, Measurement, RolloutStatus, RouteMatch
from controller.api.types import LabelSelector

# -- observations ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaSetState:
    """One ReplicaSet the Rollout owns."""

    name: str
    revision: str
    """The pod-template hash label."""
    replicas: int
    """``spec.replicas``."""
    ready: int
    """``status.readyReplicas``."""
    created: dt.datetime | None = None
    role: str | None = None
    """The blue-green role metadata its pods carry (``<role>:<digest>``, from its
    ``stepwise.dev/role`` annotation), None when none was given."""


Weights = tuple[tuple[str, int], ...]
"""Traffic percentages by Service name, sorted by name (hashable, so frozen dataclasses
keep their equality and hash)."""


@dataclass(frozen=True)
class TrafficState:
    """What the router currently does, as read back from its object."""

    canary_weight: int
    header_routes: frozenset[str] = frozenset()
    problem: str | None = None
    """Set when the router object is missing or does not fit (no rule for the stable
    Service, say); the plan then holds traffic where it is and says why."""
    settled: bool = True
    """False while the data plane shows it has not yet taken in the router object's
    latest spec (a Gateway reports an older generation in the route's status). Only
    routers whose data plane reports it can say False; the others are always True."""
    extra_weights: Weights = ()
    """The weights the router object gives to the Services of weighted experiment
    templates (:func:`controller.core.experiment.routed_services`), by Service name; a
    Service the object does not route to is absent. Empty with no weighted experiment."""


@dataclass(frozen=True)
class TemplateKey:
    """An analysis template reference: name and scope."""

    name: str
    cluster_scope: bool = False


@dataclass(frozen=True)
class ExperimentSetState:
    """One ReplicaSet of an ``experiment`` step (labelled ``stepwise.dev/experiment``;
    never one of the Rollout's revisions)."""

    name: str
    template: str
    """The experiment template's name."""
    pod_hash: str
    """Its pods' ``stepwise.dev/revision`` label (the experiment's own hash)."""
    replicas: int
    """``spec.replicas``."""
    ready: int
    """``status.readyReplicas``."""
    service: str | None = None
    """The Service created for its pods, if any."""


@dataclass(frozen=True)
class Observed:
    """The world as the runtime saw it this pass (copies; never the cache itself)."""

    replica_sets: tuple[ReplicaSetState, ...] = ()
    traffic: TrafficState | None = None
    """None in replica-ratio mode (no router)."""
    service_revisions: Mapping[str, str | None] = field(default_factory=dict)
    """Service name -> the revision its selector is pinned to (None: not pinned)."""
    missing_services: frozenset[str] = frozenset()
    templates: Mapping[TemplateKey, AnalysisTemplateSpec | str] = field(default_factory=dict)
    """Referenced analysis templates, or the reason one could not be read."""
    measurements: Mapping[tuple[str, str], Measurement] = field(default_factory=dict)
    """Measurements taken this pass, keyed by (analysis run name, metric name)."""
    canary_endpoints: int | None = None
    """How many of the canary's pods are ready endpoints in the canary Service's
    EndpointSlices: read only while the canary carries no traffic and has Ready pods
    (the passes that may give it its first share); None when not read, unreadable, or
    when the Service has no EndpointSlice at all (nothing publishes them)."""
    measuring: frozenset[tuple[str, str]] = frozenset()
    """Measurements due but still being taken (run, metric): the runtime wakes the Rollout
    when each finishes, so they need no timer of their own."""
    experiment_sets: tuple[ExperimentSetState, ...] = ()
    """The ReplicaSets of experiment steps the Rollout owns."""

    def replica_set(self, revision: str | None) -> ReplicaSetState | None:
        """The ReplicaSet of a revision, if it exists."""
        for rs in self.replica_sets:
            if rs.revision == revision:
                return rs
        return None


# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleReplicaSet:
    """Create the revision's ReplicaSet (from the Rollout's template) if it is missing,
    and set its replica count."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class PinService:
    """Point a Service's selector at one revision (by pod-template hash)."""

    service: str
    revision: str


@dataclass(frozen=True)
class SetWeight:
    """Send this percentage of traffic to the canary (the router verifies the write).

    ``extra`` names the experiment Services the router splits to besides (Argo Rollouts'
    weighted experiment templates): each gets its percentage, the stable Service the rest
    (``100 - weight - sum(extra)``); a Service listed with 0 is taken out of the split.
    Other destinations of the router object are left as they are."""

    weight: int
    extra: Weights = ()


@dataclass(frozen=True)
class SetHeaderRoute:
    """Add or replace a header-matched route to the canary."""

    name: str
    match: tuple[HeaderMatch, ...]


@dataclass(frozen=True)
class SetMirrorRoute:
    """Add or replace a route that copies matching requests to the canary (the requests
    themselves are served as the weights say)."""

    name: str
    match: tuple[RouteMatch, ...]
    percentage: int
    """Percent of the matching requests copied."""


@dataclass(frozen=True)
class RemoveHeaderRoute:
    """Remove a header-matched route (or a mirror route: they share one namespace)."""

    name: str


@dataclass(frozen=True)
class DeleteReplicaSet:
    """Delete an old, scaled-down ReplicaSet beyond ``revisionHistoryLimit``."""

    name: str


@dataclass(frozen=True)
class SetRoleMetadata:
    """Give a revision's pods (and its ReplicaSet's pod template) a role's
    labels and annotations, removing the other role's; ``tag`` records it on the
    ReplicaSet (:attr:`ReplicaSetState.role`)."""

    revision: str
    tag: str
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    drop_labels: tuple[str, ...] = ()
    drop_annotations: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScaleExperimentSet:
    """Create an experiment template's ReplicaSet from the pod template of revision
    ``source`` (with ``labels`` and ``annotations`` added and the pods' revision label set
    to ``pod_hash``), or set its replica count; with ``service``, make sure a Service of
    that name selects exactly its pods."""

    name: str
    template: str
    pod_hash: str
    source: str
    spec_ref: Literal["stable", "canary"]
    """Where the pod template comes from: the Rollout's template (canary) or the stable
    revision's ReplicaSet (stable)."""
    replicas: int
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    selector: LabelSelector | None = None
    service: str | None = None


@dataclass(frozen=True)
class DeleteExperimentSet:
    """Delete an experiment ReplicaSet (its pods go with it) and its Service, if any."""

    name: str
    service: str | None = None


Action = (
    ScaleReplicaSet
    | PinService
    | SetWeight
    | SetHeaderRoute
    | SetMirrorRoute
    | RemoveHeaderRoute
    | DeleteReplicaSet
    | SetRoleMetadata
    | ScaleExperimentSet
    | DeleteExperimentSet
)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the Rollout once the status is written."""

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


@dataclass(frozen=True)
class Plan:
    """The outcome of one decision."""

    actions: tuple[Action, ...]
    status: RolloutStatus
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """Seconds until the plan must be made again even if nothing changes (a pause ends,
    a measurement is due); None when only a change in the world can matter."""
