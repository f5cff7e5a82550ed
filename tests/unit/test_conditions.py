"""Conditions keep their timestamps unless their status flips; invalid specs say why."""

from __future__ import annotations

import datetime as dt

from controller.api.rollout import RolloutStatus
from controller.core.conditions import conditions_for, invalid_spec, set_condition

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def test_message_change_keeps_the_transition_time() -> None:
    """A new reason or message with the same status keeps lastTransitionTime."""
    first = set_condition([], "Paused", "True", "A", "one", T0)
    second = set_condition(first, "Paused", "True", "B", "two", T1)
    assert second[0].last_transition_time == T0
    assert (second[0].reason, second[0].message) == ("B", "two")


def test_status_flip_moves_the_transition_time() -> None:
    """A flip from True to False stamps the new time."""
    first = set_condition([], "Paused", "True", "A", "", T0)
    second = set_condition(first, "Paused", "False", "A", "", T1)
    assert second[0].last_transition_time == T1


def test_conditions_for_a_healthy_status() -> None:
    """Healthy: Healthy True, Progressing False (RolloutCompleted), Paused/Aborted False."""
    status = RolloutStatus(phase="Healthy", message="fine")
    conds = {c.type: c for c in conditions_for(status, [], T0)}
    assert conds["Healthy"].status == "True"
    assert (conds["Progressing"].status, conds["Progressing"].reason) == (
        "False",
        "RolloutCompleted",
    )
    assert conds["Paused"].status == "False"
    assert conds["Aborted"].status == "False"
    assert "InvalidSpec" not in conds


def test_conditions_are_stable_when_nothing_changes() -> None:
    """Computing conditions twice from the same status gives equal lists (no fresh times)."""
    status = RolloutStatus(phase="Paused", message="waiting")
    once = conditions_for(status, [], T0)
    twice = conditions_for(status, once, T1)
    assert once == twice


def test_invalid_spec_sets_the_condition_and_clears_when_fixed() -> None:
    """An invalid spec gives InvalidSpec True with the problems; once valid, it is False."""
    bad = invalid_spec(RolloutStatus(), ["spec.replicas: must be >= 0"], T0)
    cond = next(c for c in bad.conditions if c.type == "InvalidSpec")
    assert (cond.status, cond.reason) == ("True", "InvalidSpec")
    assert "spec.replicas: must be >= 0" in cond.message
    assert bad.phase == "Degraded"
    fixed = conditions_for(RolloutStatus(phase="Healthy"), list(bad.conditions), T1)
    assert next(c for c in fixed if c.type == "InvalidSpec").status == "False"
