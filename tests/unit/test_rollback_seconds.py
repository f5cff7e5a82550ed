"""The time-to-rollback metric: from the start of the window of the aborted canary's first
failed measurement to the moment its last traffic was taken away; never negative."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.api.rollout import RolloutStatus
from controller.runtime.reconciler import _rollback_seconds

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> str:
    """T0 plus ``seconds``, as the API writes it."""
    return (T0 + dt.timedelta(seconds=seconds)).isoformat()


def status(
    weight: int,
    *,
    abort: str | None = None,
    failures: list[float] | None = None,
    good: list[float] | None = None,
) -> RolloutStatus:
    """A status whose one metric had good measurements at ``good`` seconds, then failures."""
    doc: dict[str, Any] = {"canaryWeight": weight, "canaryRevision": "c", "stableRevision": "s"}
    if abort:
        doc["abort"] = {"reason": abort, "message": "m", "revision": "c", "time": T0.isoformat()}
    measurements = [{"phase": "Successful", "startedAt": at(t)} for t in good or []] + [
        {"phase": "Failed", "startedAt": at(t)} for t in failures or []
    ]
    doc["analysisRuns"] = [
        {"name": "background", "revision": "c", "startedAt": T0.isoformat(),
         "metrics": [{"name": "errors", "measurements": measurements}]}
    ]  # fmt: skip
    return RolloutStatus.model_validate(doc)


def test_seconds_from_the_first_failing_window_to_weight_zero() -> None:
    """20% -> 0% after an analysis abort: the failing measurement at 3 s covered the
    window since the previous one (1 s), so the figure runs from 1 s to the restore."""
    seconds = _rollback_seconds(
        status(20),
        status(0, abort="AnalysisFailed", good=[0.0, 1.0], failures=[3.0, 4.0]),
        T0 + dt.timedelta(seconds=4.5),
    )
    assert seconds == 3.5


def test_a_first_measurement_that_fails_counts_from_the_run_start() -> None:
    """With no earlier measurement, the window starts when the run started."""
    seconds = _rollback_seconds(
        status(20), status(0, abort="AnalysisFailed", failures=[2.0]), T0 + dt.timedelta(seconds=3)
    )
    assert seconds == 3.0


def test_never_negative() -> None:
    """A restore clock behind a measurement's start (clock skew) gives 0, not a negative."""
    seconds = _rollback_seconds(
        status(20), status(0, abort="AnalysisFailed", failures=[2.0]), T0 - dt.timedelta(seconds=1)
    )
    assert seconds == 0.0


def test_no_figure_for_manual_aborts_or_passes_that_move_no_traffic() -> None:
    """Manual aborts, and passes where the weight was already 0, are not rollbacks."""
    now = T0 + dt.timedelta(seconds=4)
    assert _rollback_seconds(status(20), status(0, abort="Manual", failures=[1]), now) is None
    assert (
        _rollback_seconds(status(0), status(0, abort="AnalysisFailed", failures=[1]), now) is None
    )
    assert (
        _rollback_seconds(status(20), status(20, abort="AnalysisFailed", failures=[1]), now) is None
    )
