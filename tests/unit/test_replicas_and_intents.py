"""Replica math under maxSurge/maxUnavailable, and parsing of manual intents."""

from __future__ import annotations

import pytest

from controller.api import intents
from controller.api.rollout import SetCanaryScale
from controller.core.replicas import SetSize, canary_replicas, step_towards, surge_limits


@pytest.mark.parametrize(
    ("canary", "stable", "targets", "budget", "expected"),
    [
        ((0, 0), (10, 10), (2, 8), (3, 0), (2, 10)),
        ((2, 0), (10, 10), (2, 8), (3, 0), (2, 10)),
        ((2, 2), (10, 10), (2, 8), (3, 0), (2, 8)),
        ((0, 0), (10, 10), (5, 5), (1, 0), (1, 10)),
        ((0, 0), (10, 10), (5, 5), (0, 2), (2, 8)),
        ((0, 0), (8, 8), (5, 5), (0, 2), (2, 8)),
        ((5, 5), (5, 5), (0, 10), (3, 0), (5, 8)),
        ((5, 1), (5, 5), (0, 10), (0, 1), (1, 9)),
        ((3, 3), (7, 7), (3, 7), (1, 0), (3, 7)),
    ],
    ids=[
        "grow-canary-within-surge",
        "unready-canary-holds-stable",
        "ready-canary-frees-stable",
        "surge-one-at-a-time",
        "no-surge-sheds-stable-then-fills",
        "no-surge-then-grows-canary",
        "stable-grows-before-canary-shrinks",
        "unready-canary-pods-go-first",
        "at-target-nothing-moves",
    ],
)
def test_step_towards(
    canary: tuple[int, int],
    stable: tuple[int, int],
    targets: tuple[int, int],
    budget: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    """One pass of replica-ratio scaling toward (canary, stable) targets, 10 replicas."""
    got = step_towards(SetSize(*canary), SetSize(*stable), *targets, 10, *budget)
    assert got == expected


@pytest.mark.parametrize(
    ("surge", "unavailable", "total", "expected"),
    [("25%", "25%", 10, (3, 2)), (0, 0, 10, (1, 0)), ("100%", 0, 3, (3, 0)), (2, "10%", 5, (2, 0))],
    ids=["percent-rounding", "both-zero-surges-one", "full-surge", "mixed"],
)
def test_surge_limits(
    surge: int | str, unavailable: int | str, total: int, expected: tuple[int, int]
) -> None:
    """Surge rounds up, unavailability rounds down; both zero would deadlock, so surge is 1."""
    assert surge_limits(surge, unavailable, total) == expected


@pytest.mark.parametrize(
    ("scale", "weight", "expected"),
    [
        (None, 30, 3),
        (SetCanaryScale(replicas=4), 30, 4),
        (SetCanaryScale(replicas=40), 30, 10),
        (SetCanaryScale(weight=50), 0, 5),
    ],
    ids=["by-weight", "fixed-replicas", "fixed-capped-at-total", "scale-weight"],
)
def test_canary_scale_overrides(scale: SetCanaryScale | None, weight: int, expected: int) -> None:
    """setCanaryScale overrides the weight-derived canary size (10 replicas)."""
    assert canary_replicas(weight, 10, scale) == expected


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, intents.Intents()),
        ({intents.PROMOTE: "abc/2"}, intents.Intents(promote=("abc", 2))),
        ({intents.PROMOTE: "abc"}, intents.Intents()),
        ({intents.PROMOTE: "abc/x"}, intents.Intents()),
        ({intents.PROMOTE_FULL: "abc"}, intents.Intents(promote_full="abc")),
        ({intents.ABORT: "abc"}, intents.Intents(abort="abc")),
        ({intents.RETRY: "abc/1"}, intents.Intents(retry=("abc", 1))),
        ({intents.RETRY: "/1"}, intents.Intents()),
    ],
    ids=[
        "none",
        "promote",
        "promote-without-step",
        "promote-bad-step",
        "promote-full",
        "abort",
        "retry",
        "retry-without-revision",
    ],
)
def test_intent_parsing(annotations: dict[str, str], expected: intents.Intents) -> None:
    """Intent annotations parse to the state they name; malformed values are ignored."""
    assert intents.parse(annotations) == expected
