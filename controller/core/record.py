"""The delivery record: one entry per release in ``status.releases``, kept up to date by
every pass, so that how fast a bad release was noticed and undone outlives the hour
Kubernetes keeps its Events, and a restarted controller carries on the same entries.

:func:`advance` is called by :func:`controller.core.plan.plan` after the strategy has
decided, with the status the pass started from (``before``) and the one it will write
(``after``). It compares the two and writes what happened into the entries, so it is
level-triggered like the rest of the plan: a pass that changes nothing adds nothing,
and a pass replayed after a crash (the status was never written) decides the same.

A release is one attempt at one revision:

==============  ==========================================================================
starts          the canary revision is new (not the open entry's; a retry of an aborted
                one starts the next attempt). The first revision of a Rollout, which
                becomes stable directly, is a release too (promoted at once).
Promoted        ``stableRevision`` became its revision. ``leadTimeSeconds``: from the
                template change (``changedAt``) to this pass.
Aborted         ``status.abort`` names its revision (by analysis, by hand, by the progress
                deadline, or its canary Service went missing), or the template went back
                to the stable revision while it was in flight (reason Manual).
                ``detectedAt``: the start of the window of the first failing measurement
                for an abort by analysis (what the judge had in hand was about that
                stretch of time), otherwise the abort itself; ``timeToDetectSeconds`` runs
                from ``changedAt`` to it.
restored        (aborted entries) the first pass at which no traffic reaches the revision
                any more: the router's weight and any experiment weights are 0 (written
                and read back), or, without a router, the revision has no Ready pod; for
                blue-green, the active Service selects another revision.
                ``timeToRestoreSeconds`` runs from the abort to it.
Superseded      a newer revision replaced it before it was promoted or aborted.
==============  ==========================================================================

Along the way each entry collects when its steps completed, when its analysis runs
reached a verdict and when it began waiting for a person (``AwaitingPromotion``,
``AnalysisInconclusive``); the notifications and ``stepwise report`` read those.

``changedAt`` and ``changedBy`` come from the Rollout's ``managedFields``: the field
manager that owns ``spec.template`` with the latest time (to the second, as the API
server records it). Without one (a template taken from a Deployment by ``workloadRef``,
or an object stripped of its managed fields), the change time is the pass that first
saw the revision.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, get_args

from controller.api.rollout import (
    MAX_LIST,
    AnalysisPhase,
    MetricResult,
    Release,
    ReleaseAnalysis,
    ReleaseApproval,
    ReleaseStep,
    Rollout,
    RolloutStatus,
    WaitReason,
)

APPROVAL_WAITS: tuple[WaitReason, ...] = ("AwaitingPromotion", "AnalysisInconclusive")
"""Wait reasons that only a person ends (``stepwise promote``)."""

_VERDICTS: frozenset[str] = frozenset(get_args(AnalysisPhase)) - {"Pending", "Running"}


def advance(
    before: RolloutStatus,
    after: RolloutStatus,
    rollout: Rollout,
    now: dt.datetime,
    traffic_left: Callable[[str], bool],
) -> list[Release]:
    """The releases of ``after`` brought up to date with what this pass decided.

    ``traffic_left(revision)`` says whether, once the pass's actions are applied, no
    traffic reaches ``revision`` any more (see the module docstring, "restored")."""
    limit = rollout.spec.release_history_limit
    if limit == 0:
        return []
    releases = list(after.releases)
    stable, canary = after.stable_revision, after.canary_revision
    if canary is None:
        return releases[-limit:]
    current = _open(releases)
    if current is not None and stable == releases[current].revision:
        releases[current] = _promoted(releases[current], now)
    elif current is not None and releases[current].revision != canary:
        old = releases[current]
        if canary == stable:  # the template went back to stable while it was in flight
            why = f"the template was set back to the stable revision {stable}"
            releases[current] = _aborted(old, "Manual", why, now, now)
        else:
            releases[current] = old.model_copy(update={"outcome": "Superseded", "ended_at": now})
    if _starts(releases, before, after):
        attempt = 1 + max((r.attempt for r in releases if r.revision == canary), default=0)
        releases.append(_start(rollout, canary, attempt, now))
        if canary == stable:  # stable directly (a first revision, a rollback window)
            releases[-1] = _promoted(releases[-1], now)
    last = releases[-1] if releases else None
    if last is not None and last.revision == canary:
        releases[-1] = _progress(last, before, after, now)
    for i, entry in enumerate(releases):
        # An aborted release is restored once no traffic reaches its revision; while a
        # later attempt of the same revision runs, that can no longer be told apart.
        if i == len(releases) - 1 or entry.revision != canary:
            releases[i] = _restore(entry, now, traffic_left)
    return releases[-limit:]


def failure_window_start(status: RolloutStatus, revision: str) -> dt.datetime | None:
    """The start of the window of the earliest failing measurement of ``revision``'s
    analyses (dry-run metrics never abort, so they never count). A measurement's window
    starts where the metric's previous measurement started (the judge counts exactly
    that stretch; a query over ``[{{interval}}]`` nearly so). For the first measurement
    kept (a run's first, or older ones dropped by measurementRetention) it is one
    interval before it (the metric's cadence: its ``nextAt`` after its latest
    measurement), never before the run started (the run's start when the cadence is
    unknown)."""
    starts: list[dt.datetime] = []
    for run in status.analysis_runs:
        if run.revision != revision:
            continue
        for metric in run.metrics:
            if metric.dry_run:
                continue
            earlier: dt.datetime | None = None
            for m in metric.measurements:
                if m.phase == "Failed":
                    if earlier is None:
                        cadence = _cadence(metric)
                        earlier = run.started_at
                        if cadence is not None:
                            earlier = max(earlier, m.started_at - cadence)
                    starts.append(min(earlier, m.started_at))
                    break
                earlier = m.started_at
    return min(starts) if starts else None


def _cadence(metric: MetricResult) -> dt.timedelta | None:
    """The time between the metric's measurements, as its ``nextAt`` after its latest
    measurement says (None when it cannot tell: then the window is the run's)."""
    latest = metric.measurements[-1] if metric.measurements else None
    if metric.next_at is None or latest is None or latest.finished_at is None:
        return None
    return max(dt.timedelta(0), metric.next_at - latest.finished_at)


def template_change(metadata_extra: Mapping[str, Any] | None) -> tuple[str, dt.datetime] | None:
    """The field manager that last changed ``spec.template`` and when, from the
    object's ``managedFields`` (None when no entry owns the template)."""
    latest: tuple[str, dt.datetime] | None = None
    for entry in (metadata_extra or {}).get("managedFields") or []:
        if not isinstance(entry, Mapping) or entry.get("subresource"):
            continue
        spec = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
        if not isinstance(spec, Mapping) or "f:template" not in spec:
            continue
        when = _time(entry.get("time"))
        manager = entry.get("manager")
        if when is None or not isinstance(manager, str):
            continue
        if latest is None or when > latest[1]:
            latest = (manager, when)
    return latest


# -- the steps of an entry ---------------------------------------------------------------


def _open(releases: list[Release]) -> int | None:
    """The index of the entry in flight (no outcome yet), if the last one is."""
    if releases and releases[-1].outcome is None:
        return len(releases) - 1
    return None


def _starts(releases: list[Release], before: RolloutStatus, after: RolloutStatus) -> bool:
    """Whether this pass starts a release of ``after.canaryRevision`` (any entry in
    flight has been closed already)."""
    canary, stable = after.canary_revision, after.stable_revision
    last = releases[-1] if releases else None
    if canary == stable:
        # No canary: only a stable revision that changed in this pass is a release (the
        # first revision, or a rollback inside ``rollbackWindow``); a Rollout found
        # steady (a controller upgrade) records nothing it did not see.
        changed = before.stable_revision != stable
        return changed and (last is None or last.revision != stable)
    if last is None or last.revision != canary:
        return True
    if last.outcome == "Aborted":
        return after.abort is None or after.abort.revision != canary  # retried
    return last.outcome == "Superseded"  # it came back


def _start(rollout: Rollout, revision: str, attempt: int, now: dt.datetime) -> Release:
    change = template_change(rollout.metadata.model_extra)
    changed_by, changed_at = change if change is not None else (None, now)
    return Release(
        revision=revision,
        attempt=attempt,
        images=_images(rollout),
        changed_by=changed_by,
        changed_at=min(changed_at, now),
        started_at=now,
    )


def _promoted(entry: Release, now: dt.datetime) -> Release:
    return entry.model_copy(
        update={
            "outcome": "Promoted",
            "ended_at": now,
            "lead_time_seconds": _seconds(entry.changed_at, now),
        }
    )


def _aborted(
    entry: Release, reason: Any, message: str, at: dt.datetime, detected: dt.datetime
) -> Release:
    return entry.model_copy(
        update={
            "outcome": "Aborted",
            "reason": reason,
            "message": message[:1024],
            "ended_at": at,
            "detected_at": detected,
            "time_to_detect_seconds": _seconds(entry.changed_at, detected),
        }
    )


def _progress(
    entry: Release, before: RolloutStatus, after: RolloutStatus, now: dt.datetime
) -> Release:
    """Steps completed, verdicts reached and waits for a person begun in this pass, and
    an abort of the entry's attempt."""
    revision = entry.revision
    update: dict[str, Any] = {}
    first = before.current_step_index if before.canary_revision == revision else 0
    last = after.current_step_index
    done = {s.index for s in entry.steps}
    if first is not None and last is not None and last > first:
        new = [ReleaseStep(index=i, ended_at=now) for i in range(first, last) if i not in done]
        if new:
            update["steps"] = [*entry.steps, *new][-MAX_LIST:]
    judged = {a.name for a in entry.analyses}
    verdicts = [
        ReleaseAnalysis(name=run.name, phase=run.phase, ended_at=now)
        for run in after.analysis_runs
        if run.revision == revision and run.phase in _VERDICTS and run.name not in judged
    ]
    if verdicts:
        update["analyses"] = [*entry.analyses, *verdicts][-MAX_LIST:]
    if _approval_begins(entry, after):
        since = after.pause_start_time if after.wait_reason == "AwaitingPromotion" else None
        since = since or now
        wait = ReleaseApproval(step=after.current_step_index, since=min(since, now))
        update["approvals"] = [*entry.approvals, wait][-MAX_LIST:]
    entry = entry.model_copy(update=update) if update else entry
    abort = after.abort
    if entry.outcome is None and abort is not None and abort.revision == revision:
        detected = abort.time
        if abort.reason == "AnalysisFailed":
            detected = failure_window_start(after, revision) or abort.time
        entry = _aborted(entry, abort.reason, abort.message, abort.time, detected)
    return entry


def _approval_begins(entry: Release, after: RolloutStatus) -> bool:
    """Whether the entry starts waiting for a person at a step it has not waited at."""
    if entry.outcome is not None or after.wait_reason not in APPROVAL_WAITS:
        return False
    return all(a.step != after.current_step_index for a in entry.approvals)


def _restore(entry: Release, now: dt.datetime, traffic_left: Callable[[str], bool]) -> Release:
    if entry.outcome != "Aborted" or entry.restored_at is not None or entry.ended_at is None:
        return entry
    if not traffic_left(entry.revision):
        return entry
    return entry.model_copy(
        update={
            "restored_at": now,
            "time_to_restore_seconds": _seconds(entry.ended_at, now),
        }
    )


# -- small pieces ------------------------------------------------------------------------


def _images(rollout: Rollout) -> list[str]:
    if rollout.spec.template is None:
        return []
    spec = rollout.spec.template.spec
    return [
        str(c["image"])
        for key in ("initContainers", "containers")
        for c in _dicts(spec.get(key))
        if c.get("image")
    ]


def _dicts(value: object) -> Iterable[Mapping[str, Any]]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, Mapping)]
    return []


def _time(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _seconds(start: dt.datetime, end: dt.datetime) -> float:
    return round(max(0.0, (end - start).total_seconds()), 3)
