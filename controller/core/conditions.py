"""Standard conditions derived from the status, with stable timestamps.

A condition's ``lastTransitionTime`` changes only when its ``status`` flips; a changed
reason or message keeps the old time (a fresh timestamp on every pass would make every
status write differ and every reconcile hot-loop).

================  =============================================================
type              True when
================  =============================================================
Progressing       a revision is being rolled out (Progressing or Paused phase)
Healthy           the stable revision is the desired one and all its pods are Ready
Paused            the rollout waits for a person or for ``spec.paused``
Aborted           the current canary was aborted (reason: why)
InvalidSpec       the spec cannot be acted on (only present once it has been True)
ActionRefused     the API server refused a write (422, 400, 403, 404): the message
                  names the object, the field and the server's words (set by
                  :func:`refused` when the runtime reports a refusal; only present
                  once it has been True)
AnalysisBlind     a metric of the canary's analysis is held blind: no data, or its
                  provider failing (reason NoData or ProviderError; the message names
                  each metric; set by :mod:`controller.core.plan`, only present once it
                  has been True)
================  =============================================================

``kubectl wait --for=condition=Healthy rollout/NAME`` waits for a finished rollout;
``--for=condition=Aborted`` for a rollback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from controller.api.rollout import RolloutStatus
from controller.api.types import Condition, ConditionStatus
from controller.core.model import (
    Action,
    DeleteExperimentSet,
    DeleteReplicaSet,
    PinService,
    ScaleExperimentSet,
    ScaleReplicaSet,
    SetMirrorRoute,
    SetRoleMetadata,
    SetWeight,
)


def set_condition(
    existing: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: dt.datetime,
) -> list[Condition]:
    """``existing`` with one condition set; its transition time moves only on a flip."""
    out: list[Condition] = []
    found = False
    for cond in existing:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        when = cond.last_transition_time if cond.status == status else now
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=when,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_, status=status, reason=reason, message=message, last_transition_time=now
            )
        )
    return out


def conditions_for(
    status: RolloutStatus,
    previous: list[Condition],
    now: dt.datetime,
    invalid: Sequence[str] = (),
) -> list[Condition]:
    """The conditions that ``status`` implies, keeping timestamps from ``previous``;
    ``invalid`` names the analyses whose templates or arguments cannot be used (then
    InvalidSpec is True with reason InvalidAnalysis)."""
    phase = status.phase
    abort = status.abort
    healthy, paused = phase == "Healthy", phase == "Paused"
    progress = {"Healthy": "RolloutCompleted", "Degraded": "RolloutDegraded"}.get(phase or "")
    # type, whether True, reason, message
    derived: tuple[tuple[str, bool, str, str], ...] = (
        ("Progressing", phase in ("Progressing", "Paused"), progress or "RolloutProgressing",
         status.message),
        ("Healthy", healthy, "AllReplicasReady" if healthy else "RolloutNotHealthy",
         status.message if healthy else f"phase {phase}"),
        ("Paused", paused, "RolloutPaused" if paused else "RolloutNotPaused",
         status.message if paused else ""),
        ("Aborted", abort is not None, abort.reason if abort else "NotAborted",
         abort.message if abort else ""),
    )  # fmt: skip
    conds = list(previous)
    for type_, true, reason, message in derived:
        conds = set_condition(conds, type_, "True" if true else "False", reason, message, now)
    if invalid:
        message = "; ".join(invalid)
        conds = set_condition(conds, "InvalidSpec", "True", "InvalidAnalysis", message, now)
    elif any(c.type == "InvalidSpec" for c in conds):
        conds = set_condition(conds, "InvalidSpec", "False", "SpecValid", "", now)
    if any(c.type == "ActionRefused" for c in conds):
        # Set True by the runtime when the API server refuses a write; a pass whose
        # plan was carried out in full clears it.
        conds = set_condition(conds, "ActionRefused", "False", "Accepted", "", now)
    return conds


def invalid_spec(status: RolloutStatus, problems: list[str], now: dt.datetime) -> RolloutStatus:
    """The status of a Rollout whose spec cannot be acted on: InvalidSpec, no actions."""
    message = "invalid spec: " + "; ".join(problems)
    conds = set_condition(
        list(status.conditions), "InvalidSpec", "True", "InvalidSpec", message, now
    )
    return status.model_copy(update={"phase": "Degraded", "message": message, "conditions": conds})


REFUSED_RETRY = (5.0, 60.0)
"""A refused action is tried again after as long as it has been refused, within these."""


def describe_action(action: Action, rollout: str) -> str:
    """The object an action of the Rollout ``rollout`` writes and what it asks, for a
    person."""
    if isinstance(action, ScaleReplicaSet):
        return f"ReplicaSet {rollout}-{action.revision}: create or scale to {action.replicas}"
    if isinstance(action, PinService):
        return f"Service {action.service}: select revision {action.revision}"
    if isinstance(action, DeleteReplicaSet):
        return f"ReplicaSet {action.name}: delete"
    if isinstance(action, SetWeight):
        return f"traffic router: set the canary weight to {action.weight}"
    if isinstance(action, SetRoleMetadata):
        role = action.tag.partition(":")[0]
        return f"pods of revision {action.revision}: {role} labels and annotations"
    if isinstance(action, ScaleExperimentSet):
        return f"experiment ReplicaSet {action.name}: create or scale to {action.replicas}"
    if isinstance(action, DeleteExperimentSet):
        return f"experiment ReplicaSet {action.name}: delete"
    if isinstance(action, SetMirrorRoute):
        return f"traffic router: mirror route {action.name}"
    return f"traffic router: header route {action.name}"


def refused(
    status: RolloutStatus, what: str, code: int, reason: str, error: str, now: dt.datetime
) -> tuple[RolloutStatus, bool]:
    """The status that reports a write the API server refused with HTTP ``code``,
    ``reason`` and the text ``error``, and whether the refusal is new (the ActionRefused
    condition was not True with this message)."""
    message = f"{what}: refused by the API server ({code} {reason}): {error}"
    before = next((c for c in status.conditions if c.type == "ActionRefused"), None)
    changed = before is None or before.status != "True" or before.message != message
    conditions = set_condition(
        list(status.conditions), "ActionRefused", "True", reason or "Refused", message, now
    )
    return (
        status.model_copy(
            update={
                "phase": "Degraded",
                "message": message,
                "wait_reason": "Blocked",
                "conditions": conditions,
            }
        ),
        changed,
    )


def refused_retry(status: RolloutStatus, now: dt.datetime) -> float:
    """Seconds until a refused action is tried again: as long as it has been refused."""
    since = next(
        (c.last_transition_time for c in status.conditions if c.type == "ActionRefused"), now
    )
    low, high = REFUSED_RETRY
    return min(high, max(low, (now - since).total_seconds()))
