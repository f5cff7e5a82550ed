"""When a new status must reach the API server, and when it may wait.

A Rollout in analysis at a 1 s interval changes its status every second, but most of
those changes are tallies: a measurement counted, the latest value, ``next_at``, the
"3 of 5 measurement(s) taken" progress line. Writing each one costs a request a second
per Rollout and tells nobody anything they act on. So a status is split in two:

- **material**: the phase, the wait reason, the step, the weight, the revisions, pause
  and step times, the abort, scale-downs, the delivery record (``releases``), replica
  counts, conditions (status and reason),
  every analysis run's name, revision, phase and start, and every metric's name and
  phase. Any change here is written in the pass that made it: a verdict, a step, an
  abort or a blind analysis is never late.
- **tallies**: the rest of each metric's result (counts, measurements, message,
  ``next_at``), each run's message, and the Rollout's message (with the conditions'
  copies of it) while the Rollout is waiting on a running analysis, where the message
  is that progress line. A change that touches only tallies is written once the oldest
  unwritten one is :data:`TALLY_BATCH` old, together with any that came after it.

Nothing is lost by waiting: the runtime keeps the unwritten status in memory and the
next pass starts from it. Only a controller that stops within those 10 s forgets them;
its successor then measures again (counters are differenced against the last readings
that were written, so the counts it makes cover the whole stretch).
"""

from __future__ import annotations

import datetime as dt

from controller.api.rollout import AnalysisRunStatus, MetricResult, RolloutStatus

TALLY_BATCH = dt.timedelta(seconds=10)
"""How long tally-only changes may wait before they are written."""


def _metric(result: MetricResult) -> MetricResult:
    return MetricResult(name=result.name, phase=result.phase, dry_run=result.dry_run)


def _run(run: AnalysisRunStatus) -> AnalysisRunStatus:
    return run.model_copy(update={"message": "", "metrics": [_metric(m) for m in run.metrics]})


def material(status: RolloutStatus) -> RolloutStatus:
    """``status`` without its tallies (see the module docstring)."""
    update: dict[str, object] = {"analysis_runs": [_run(r) for r in status.analysis_runs]}
    if status.wait_reason == "AnalysisRunning":
        update["message"] = ""
        update["conditions"] = [
            c.model_copy(update={"message": ""}) if c.message == status.message else c
            for c in status.conditions
        ]
    return status.model_copy(update=update)


def write_at(
    persisted: RolloutStatus,
    wanted: RolloutStatus,
    unwritten_since: dt.datetime | None,
    now: dt.datetime,
) -> dt.datetime | None:
    """When ``wanted`` must replace ``persisted`` in the API server: ``now`` when
    anything material changed, else :data:`TALLY_BATCH` after the oldest unwritten change
    (``unwritten_since``, or ``now`` for a change first seen in this pass); None when
    there is nothing to write."""
    if wanted == persisted:
        return None
    if material(wanted) != material(persisted):
        return now
    return (unwritten_since or now) + TALLY_BATCH
