"""A write the API server refused (:mod:`controller.core.conditions`): the status names the
object and the server's words, blocks the rollout, says once that the refusal is new, and
the write is tried again after as long as it has been refused (5 s to a minute)."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.api.rollout import HeaderMatch, RolloutStatus
from controller.core.conditions import REFUSED_RETRY, describe_action, refused, refused_retry
from controller.core.model import (
    Action,
    DeleteReplicaSet,
    PinService,
    RemoveHeaderRoute,
    ScaleReplicaSet,
    SetHeaderRoute,
    SetWeight,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("action", "what"),
    [
        (ScaleReplicaSet("7f9c", 3), "ReplicaSet app-7f9c: create or scale to 3"),
        (PinService("app-stable", "7f9c"), "Service app-stable: select revision 7f9c"),
        (DeleteReplicaSet("app-old"), "ReplicaSet app-old: delete"),
        (SetWeight(20), "traffic router: set the canary weight to 20"),
        (
            SetHeaderRoute("beta", (HeaderMatch.model_validate(
                {"headerName": "x", "headerValue": {"exact": "1"}}),)),
            "traffic router: header route beta",
        ),
        (RemoveHeaderRoute("beta"), "traffic router: header route beta"),
    ],
)  # fmt: skip
def test_an_action_is_described_by_the_object_it_writes(action: Action, what: str) -> None:
    """For a person reading the status: which object, and what was asked of it."""
    assert describe_action(action, "app") == what


def test_a_refusal_blocks_the_rollout_and_is_new_once() -> None:
    """Degraded, Blocked, the message in the status and in ActionRefused (the server's
    reason as the condition's); the same refusal again is not new and keeps its time."""
    status, new = refused(RolloutStatus(), "Service s: select", 422, "Invalid", "bad", T0)
    message = "Service s: select: refused by the API server (422 Invalid): bad"
    assert (status.phase, status.wait_reason, status.message, new) == (
        "Degraded",
        "Blocked",
        message,
        True,
    )
    (condition,) = status.conditions
    assert (condition.type, condition.status, condition.reason) == (
        "ActionRefused",
        "True",
        "Invalid",
    )
    later = T0 + dt.timedelta(seconds=30)
    again, new = refused(status, "Service s: select", 422, "Invalid", "bad", later)
    assert (again, new) == (status, False)
    other, new = refused(status, "Service s: select", 403, "", "denied", later)
    assert new
    assert other.conditions[0].reason == "Refused"


@pytest.mark.parametrize(
    ("refused_for", "retry"),
    [(0.0, REFUSED_RETRY[0]), (12.0, 12.0), (600.0, REFUSED_RETRY[1])],
)
def test_a_refused_write_is_retried_after_as_long_as_it_has_been_refused(
    refused_for: float, retry: float
) -> None:
    """Within 5 s and a minute."""
    status, _ = refused(RolloutStatus(), "x", 422, "Invalid", "bad", T0)
    assert refused_retry(status, T0 + dt.timedelta(seconds=refused_for)) == retry
