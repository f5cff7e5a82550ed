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
                  names the object, the field and the server's words (set by the
                  runtime; only present once it has been True)
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

from controller.api.rollout import RolloutStatus
from controller.api.types import Condition, ConditionStatus


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
    status: RolloutStatus, previous: list[Condition], now: dt.datetime
) -> list[Condition]:
    """The conditions that ``status`` implies, keeping timestamps from ``previous``."""
    phase = status.phase
    conds = list(previous)
    rolling = phase in ("Progressing", "Paused")
    conds = set_condition(
        conds,
        "Progressing",
        "True" if rolling else "False",
        {"Healthy": "RolloutCompleted", "Degraded": "RolloutDegraded"}.get(
            phase or "", "RolloutProgressing"
        ),
        status.message,
        now,
    )
    conds = set_condition(
        conds,
        "Healthy",
        "True" if phase == "Healthy" else "False",
        "AllReplicasReady" if phase == "Healthy" else "RolloutNotHealthy",
        status.message if phase == "Healthy" else f"phase {phase}",
        now,
    )
    conds = set_condition(
        conds,
        "Paused",
        "True" if phase == "Paused" else "False",
        "RolloutPaused" if phase == "Paused" else "RolloutNotPaused",
        status.message if phase == "Paused" else "",
        now,
    )
    abort = status.abort
    conds = set_condition(
        conds,
        "Aborted",
        "True" if abort else "False",
        abort.reason if abort else "NotAborted",
        abort.message if abort else "",
        now,
    )
    if any(c.type == "InvalidSpec" for c in conds):
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
