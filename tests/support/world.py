"""A simulated world for pure tests of :func:`controller.core.plan.plan`.

It holds ReplicaSets, a router and Services as plain data, applies a plan's actions the
way the adapters would, and makes pods Ready when told to. No process, no clock: tests
move ``now`` themselves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import Measurement, Rollout
from controller.core.model import (
    DeleteReplicaSet,
    Observed,
    PinService,
    Plan,
    RemoveHeaderRoute,
    ReplicaSetState,
    ScaleReplicaSet,
    SetHeaderRoute,
    SetMirrorRoute,
    SetRoleMetadata,
    SetWeight,
    TemplateKey,
    TrafficState,
)
from controller.core.plan import plan

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class RS:
    """A simulated ReplicaSet."""

    replicas: int
    ready: int = 0
    created: dt.datetime = T0
    role: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    """Labels a role (blue-green's or the canary's) added to its pods."""
    annotations: dict[str, str] = field(default_factory=dict)
    """Annotations a role added to its pods."""


@dataclass
class World:
    """Everything outside the Rollout."""

    routed: bool = False
    replica_sets: dict[str, RS] = field(default_factory=dict)
    weight: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    """Weights of experiment Services in the simulated router (absent: not routed to)."""
    header_routes: dict[str, Any] = field(default_factory=dict)
    services: dict[str, str | None] = field(default_factory=dict)
    missing_services: set[str] = field(default_factory=set)
    templates: dict[TemplateKey, AnalysisTemplateSpec | str] = field(default_factory=dict)
    router_problem: str | None = None
    weight_history: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    taken_in: bool = True
    """Whether the data plane has taken in the last weight written: False from a
    SetWeight until :meth:`catch_up` (time passing), as a Gateway that applies a route
    change a moment after it is written."""

    def observed(self, measurements: dict[tuple[str, str], Measurement] | None = None) -> Observed:
        """The world as the runtime would observe it."""
        return Observed(
            replica_sets=tuple(
                ReplicaSetState(f"app-{rev}", rev, rs.replicas, rs.ready, rs.created, rs.role)
                for rev, rs in sorted(self.replica_sets.items())
            ),
            traffic=TrafficState(
                self.weight,
                frozenset(self.header_routes),
                self.router_problem,
                self.taken_in,
                tuple(sorted(self.extra.items())),
            )
            if self.routed
            else None,
            service_revisions=dict(self.services),
            missing_services=frozenset(self.missing_services),
            templates=dict(self.templates),
            measurements=measurements or {},
        )

    def apply(self, result: Plan, now: dt.datetime) -> None:
        """Carry out a plan's actions in order."""
        for action in result.actions:
            self.log.append(repr(action))
            if isinstance(action, ScaleReplicaSet):
                rs = self.replica_sets.setdefault(action.revision, RS(0, 0, now))
                rs.replicas = action.replicas
                rs.ready = min(rs.ready, rs.replicas)
            elif isinstance(action, SetWeight):
                self.weight = action.weight
                self.weight_history.append(action.weight)
                for name, w in action.extra:
                    if w:
                        self.extra[name] = w
                    else:
                        self.extra.pop(name, None)
                self.taken_in = False
            elif isinstance(action, PinService):
                self.services[action.service] = action.revision
            elif isinstance(action, SetHeaderRoute):
                self.header_routes[action.name] = action.match
            elif isinstance(action, SetMirrorRoute):
                self.header_routes[action.name] = (action.match, action.percentage)
            elif isinstance(action, RemoveHeaderRoute):
                self.header_routes.pop(action.name, None)
            elif isinstance(action, SetRoleMetadata):
                target = self.replica_sets[action.revision]
                target.role = action.tag
                for key in action.drop_labels:
                    target.labels.pop(key, None)
                target.labels.update(action.labels)
                for key in action.drop_annotations:
                    target.annotations.pop(key, None)
                target.annotations.update(action.annotations)
            elif isinstance(action, DeleteReplicaSet):
                rev = action.name.removeprefix("app-")
                self.replica_sets.pop(rev, None)

    def ready_all(self) -> None:
        """Every pod becomes Ready."""
        for rs in self.replica_sets.values():
            rs.ready = rs.replicas

    def catch_up(self) -> None:
        """The data plane takes in the last weight written."""
        self.taken_in = True


def step(
    rollout: Rollout,
    world: World,
    now: dt.datetime,
    measurements: dict[tuple[str, str], Measurement] | None = None,
) -> tuple[Rollout, Plan]:
    """One reconcile: plan, apply the actions, persist the status."""
    result = plan(rollout, world.observed(measurements), now)
    world.apply(result, now)
    return rollout.model_copy(update={"status": result.status}), result


def settle(
    rollout: Rollout, world: World, now: dt.datetime, passes: int = 20
) -> tuple[Rollout, Plan]:
    """Reconcile with pods becoming Ready until the plan has no actions left."""
    result: Plan | None = None
    for _ in range(passes):
        rollout, result = step(rollout, world, now)
        world.ready_all()
        world.catch_up()
        if not result.actions:
            rollout, result = step(rollout, world, now)
            if not result.actions:
                return rollout, result
    assert result is not None
    raise AssertionError(f"no fixpoint after {passes} passes: {result.actions}")
