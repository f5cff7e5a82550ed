"""Two Rollouts whose selectors reach each other's pods: which one must stand back.

Where it sits: the reconciler asks :func:`older_overlap` before planning. Each Rollout's
pods carry its template's labels; if a Rollout's selector matches the labels of another
Rollout's pod template (or the other way round), the two would count, scale or route each
other's pods. The Rollout created first keeps going; the later one is reported (an
InvalidSpec naming the other) and takes no action until one of the selectors changes, so
neither touches the other's pods. Ties in creation time go to the name that sorts first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.api.types import LabelSelector

_NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Selecting:
    """What matters of a Rollout here: who it is, when it came, what it selects, and the
    labels its pods carry."""

    name: str
    created: dt.datetime | None
    selector: LabelSelector
    labels: Mapping[str, str]

    @property
    def age_key(self) -> tuple[dt.datetime, str]:
        """Older first; the name breaks a tie."""
        return (self.created or _NEVER, self.name)


def overlaps(a: Selecting, b: Selecting) -> bool:
    """Whether either Rollout's selector matches the other's pod template labels."""
    return a.selector.matches(dict(b.labels)) or b.selector.matches(dict(a.labels))


def older_overlap(me: Selecting, others: Iterable[Selecting]) -> Selecting | None:
    """The earliest of ``others`` (Rollouts of the same namespace), created before ``me``,
    whose pods ``me`` would reach or that would reach ``me``'s (None when there is none)."""
    found = [o for o in others if o.name != me.name and o.age_key < me.age_key and overlaps(me, o)]
    return min(found, key=lambda o: o.age_key) if found else None


def overlap_problem(other: Selecting) -> str:
    """The InvalidSpec line for the later Rollout."""
    return (
        f"spec.selector: overlaps Rollout {other.name} (created earlier): one selector "
        "matches the other's pod template labels, so each would manage the other's pods; "
        "this Rollout takes no action until one of the selectors or templates changes"
    )
