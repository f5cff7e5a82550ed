"""The time-to-rollback metric: from the first failed measurement of the aborted canary
to the pass that took its last traffic away."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.api.rollout import RolloutStatus
from controller.runtime.reconciler import _rollback_seconds

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def status(
    weight: int, *, abort: str | None = None, failures: list[float] | None = None
) -> RolloutStatus:
    doc: dict[str, Any] = {"canaryWeight": weight, "canaryRevision": "c", "stableRevision": "s"}
    if abort:
        doc["abort"] = {"reason": abort, "message": "m", "revision": "c", "time": T0.isoformat()}
    measurements = [
        {"phase": "Failed", "startedAt": (T0 + dt.timedelta(seconds=t)).isoformat()}
        for t in failures or []
    ] + [{"phase": "Successful", "startedAt": T0.isoformat()}]
    doc["analysisRuns"] = [
        {"name": "background", "revision": "c", "startedAt": T0.isoformat(),
         "metrics": [{"name": "errors", "measurements": measurements}]}
    ]  # fmt: skip
    return RolloutStatus.model_validate(doc)


def test_seconds_from_first_failure_to_weight_zero() -> None:
    """20% -> 0% after an analysis abort: time since the earliest failed measurement."""
    seconds = _rollback_seconds(
        status(20),
        status(0, abort="AnalysisFailed", failures=[3.0, 1.5]),
        T0 + dt.timedelta(seconds=4),
    )
    assert seconds == 2.5


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
