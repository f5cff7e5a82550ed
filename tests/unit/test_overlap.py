"""Overlapping selectors (:mod:`controller.core.overlap`): the later Rollout stands back."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.api.types import LabelSelector
from controller.core.overlap import Selecting, older_overlap, overlaps

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def ro(name: str, minutes: float, selector: dict[str, str], **labels: str) -> Selecting:
    """A Rollout created ``minutes`` after T0 selecting ``selector``, pods labelled ``labels``."""
    return Selecting(
        name, T0 + dt.timedelta(minutes=minutes), LabelSelector(match_labels=selector), labels
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(ro("a", 0, {"app": "x"}, app="x"), ro("b", 1, {"app": "y"}, app="y"), False,
                     id="disjoint"),
        pytest.param(ro("a", 0, {"app": "x"}, app="x"), ro("b", 1, {"app": "x"}, app="x"), True,
                     id="same-selector"),
        pytest.param(ro("a", 0, {"app": "x"}, app="x", tier="web"),
                     ro("b", 1, {"app": "x", "tier": "api"}, app="x", tier="api"), True,
                     id="a-wider-selects-b"),
        pytest.param(ro("a", 0, {"app": "x", "tier": "web"}, app="x", tier="web"),
                     ro("b", 1, {"app": "x", "tier": "api"}, app="x", tier="api"), False,
                     id="siblings-apart"),
    ],
)  # fmt: skip
def test_overlaps(a: Selecting, b: Selecting, expected: bool) -> None:
    """Two Rollouts overlap when either selector matches the other's pod labels."""
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


def test_the_later_rollout_stands_back() -> None:
    """Only the later of two overlapping Rollouts is named, and it names the older one."""
    first = ro("first", 0, {"app": "x"}, app="x")
    second = ro("second", 5, {"app": "x"}, app="x")
    third = ro("third", 9, {"app": "z"}, app="z")
    everyone = [first, second, third]
    assert older_overlap(first, everyone) is None
    assert older_overlap(second, everyone) == first
    assert older_overlap(third, everyone) is None


def test_a_tie_in_creation_time_goes_to_the_name() -> None:
    """Created in the same second: the name that sorts first keeps going."""
    a = ro("a", 0, {"app": "x"}, app="x")
    b = ro("b", 0, {"app": "x"}, app="x")
    assert older_overlap(a, [a, b]) is None
    assert older_overlap(b, [a, b]) == a
