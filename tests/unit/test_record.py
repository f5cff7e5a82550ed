"""The delivery record (controller/core/record.py) on recorded timelines: each release
driven through the real ``plan`` in a simulated world, pass by pass, with the clock moved
by the test, and the entry's times and durations checked against that clock."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.api import intents
from controller.api.rollout import Measurement, Release, Rollout
from controller.core import analysis as an
from controller.core.hashing import template_hash
from controller.core.record import template_change
from tests.support.bluegreen import ACTIVE, CHECK, in_preview
from tests.support.plan import (
    ANALYSIS,
    annotate,
    at,
    deadline_canary,
    make,
    new_image,
    retried,
    stable_world,
)
from tests.support.world import T0, settle, step


def changed(ro: Rollout, manager: str, when: dt.datetime) -> Rollout:
    """The Rollout as the API server returns it after ``manager`` changed its template at
    ``when`` (its managedFields; a status entry of the controller besides)."""
    doc = ro.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["metadata"]["managedFields"] = [
        {
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "time": "2025-12-31T00:00:00Z",
            "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}},
        },
        {
            "manager": manager,
            "operation": "Update",
            "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}},
        },
        {
            "manager": "stepwise",
            "operation": "Update",
            "subresource": "status",
            "time": (when + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fieldsV1": {"f:status": {"f:phase": {}}, "f:spec": {"f:template": {}}},
        },
    ]
    return Rollout.model_validate(doc)


def released(ro: Rollout, image: str, manager: str, when: dt.datetime) -> Rollout:
    return changed(new_image(ro, image), manager, when)


def measurement(phase: str, started: dt.datetime) -> Measurement:
    return Measurement.model_validate(
        {"phase": phase, "value": "0.5", "startedAt": started, "finishedAt": started}
    )


def last(ro: Rollout) -> Release:
    return ro.status.releases[-1]


def test_the_first_revision_is_a_release_promoted_at_once() -> None:
    """A Rollout's first revision goes straight to stable: one entry, promoted."""
    ro, _ = stable_world(make([{"setWeight": 20}]))
    [first] = ro.status.releases
    assert first.outcome == "Promoted"
    assert first.images == ["registry.local/app:v1"]
    assert (first.changed_at, first.started_at, first.ended_at) == (T0, T0, T0)
    assert first.lead_time_seconds == 0


def test_a_promoted_release_has_its_steps_its_wait_for_approval_and_its_lead_time() -> None:
    """kubectl-set changes the template 30 s before the controller sees it; the steps end
    as the clock moves, the pause waits for a person from its start, and the lead time
    runs from the change to the promotion."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]))
    ro = released(ro, "registry.local/app:v2", "kubectl-set", at(-30))
    rev = template_hash(ro.spec.pod_template)
    ro, _ = settle(ro, world, at(0))
    entry = last(ro)
    assert (entry.revision, entry.attempt, entry.outcome) == (rev, 1, None)
    assert entry.images == ["registry.local/app:v2"]
    assert (entry.changed_by, entry.changed_at, entry.started_at) == ("kubectl-set", at(-30), at(0))
    assert [s.index for s in entry.steps] == [0]
    assert [(a.step, a.since) for a in entry.approvals] == [(1, at(0))]
    ro, _ = settle(ro, world, at(5))  # still waiting: nothing new
    assert last(ro) == entry
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(rev, 1)})
    ro, _ = settle(ro, world, at(40))
    entry = last(ro)
    assert entry.outcome == "Promoted"
    assert [(s.index, s.ended_at) for s in entry.steps] == [(0, at(0)), (1, at(40)), (2, at(40))]
    assert entry.ended_at == at(40)
    assert entry.lead_time_seconds == 70
    assert entry.time_to_detect_seconds is None
    assert entry.time_to_restore_seconds is None
    assert len(ro.status.releases) == 2


def test_an_abort_by_analysis_detects_at_the_failing_window_and_restores_on_weight_zero() -> None:
    """The analysis measures at 10 s (fine) and at 20 s (failed): the failing window
    started at 10 s, so the time to detect runs from the change (-5 s) to 10 s; with a
    router the abort writes weight 0 in the same pass, restoring at once."""
    steps = [{"setWeight": 20}, ANALYSIS, {"setWeight": 60}]
    ro, world = stable_world(make(steps, routed=True), routed=True)
    ro = released(ro, "registry.local/app:v2", "argocd-controller", at(-5))
    ro, _ = settle(ro, world, at(0))
    ro, _ = step(ro, world, at(10), {("step-1", "errors"): measurement("Successful", at(10))})
    ro, _ = step(ro, world, at(20), {("step-1", "errors"): measurement("Failed", at(20))})
    entry = last(ro)
    assert world.weight == 0
    assert (entry.outcome, entry.reason) == ("Aborted", "AnalysisFailed")
    assert "errors" in entry.message
    assert (entry.ended_at, entry.detected_at) == (at(20), at(10))
    assert entry.time_to_detect_seconds == 15
    assert (entry.restored_at, entry.time_to_restore_seconds) == (at(20), 0)
    assert [a.name for a in entry.analyses] == ["step-1"]
    assert entry.analyses[0].phase == "Failed"


def test_without_a_router_restore_waits_for_the_canary_s_last_ready_pod() -> None:
    """Replica ratio: the abort first brings stable back to full size; the canary is
    scaled down once stable is Ready, and the release is restored when the canary's
    Ready pods are gone, not when the abort was decided."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}]))
    ro = new_image(ro)
    rev = template_hash(ro.spec.pod_template)
    ro, _ = settle(ro, world, at(0))
    ro = annotate(ro, **{intents.ABORT: rev})
    ro, _ = step(ro, world, at(10))  # stable scaled up, not Ready yet
    entry = last(ro)
    assert (entry.outcome, entry.reason, entry.ended_at) == ("Aborted", "Manual", at(10))
    assert (entry.detected_at, entry.time_to_detect_seconds) == (at(10), 10)
    assert entry.restored_at is None
    assert world.replica_sets[rev].ready > 0
    world.ready_all()
    ro, _ = step(ro, world, at(14))  # stable Ready: the canary is scaled to zero
    assert last(ro).restored_at is None  # its pods were still Ready when observed
    assert world.replica_sets[rev].ready == 0
    ro, _ = step(ro, world, at(15))  # the next pass sees them gone
    entry = last(ro)
    assert (entry.restored_at, entry.time_to_restore_seconds) == (at(15), 5)


def test_the_progress_deadline_is_an_abort_detected_when_it_happens() -> None:
    ro, world = deadline_canary()
    ro, _ = step(ro, world, at(61))
    entry = last(ro)
    assert (entry.outcome, entry.reason) == ("Aborted", "ProgressDeadlineExceeded")
    assert (entry.detected_at, entry.time_to_detect_seconds) == (at(61), 61)
    assert entry.time_to_restore_seconds == 0  # the canary never had traffic


def test_a_newer_template_supersedes_the_release_in_flight() -> None:
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}]))
    ro = new_image(ro, "registry.local/app:v2")
    v2 = template_hash(ro.spec.pod_template)
    ro, _ = settle(ro, world, at(0))
    ro = new_image(ro, "registry.local/app:v3")
    ro, _ = settle(ro, world, at(7))
    old, new = ro.status.releases[-2:]
    assert (old.revision, old.outcome, old.ended_at) == (v2, "Superseded", at(7))
    assert old.lead_time_seconds is None
    assert old.time_to_detect_seconds is None
    assert (new.images, new.outcome, new.started_at) == (["registry.local/app:v3"], None, at(7))


def test_setting_the_template_back_to_stable_is_a_manual_abort() -> None:
    """A team that reverts its image by hand rolled the release back: aborted, Manual."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}]))
    v1 = ro.status.stable_revision
    ro = new_image(ro, "registry.local/app:v2")
    ro, _ = settle(ro, world, at(0))
    ro = new_image(ro, "registry.local/app:v1")
    ro, _ = settle(ro, world, at(9))
    entry = last(ro)
    assert (entry.outcome, entry.reason, entry.ended_at) == ("Aborted", "Manual", at(9))
    assert f"stable revision {v1}" in entry.message
    assert entry.restored_at == at(9)
    assert len(ro.status.releases) == 2  # going back to stable is not a release of its own


def test_promote_full_and_a_retry_after_an_abort() -> None:
    """An aborted attempt retried is the next attempt, an entry of its own; promote-full
    then promotes it (the skipped steps are recorded as ended when it was asked)."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]))
    ro = new_image(ro)
    rev = template_hash(ro.spec.pod_template)
    ro, _ = settle(ro, world, at(0))
    ro = annotate(ro, **{intents.ABORT: rev})
    ro, _ = settle(ro, world, at(3))
    assert ro.status.abort is not None
    ro, _ = settle(retried(ro), world, at(20))
    first, second = ro.status.releases[-2:]
    assert (first.attempt, first.outcome) == (1, "Aborted")
    assert (second.revision, second.attempt, second.outcome) == (rev, 2, None)
    assert second.started_at == at(20)
    ro = annotate(ro, **{intents.PROMOTE_FULL: rev})
    ro, _ = settle(ro, world, at(25))
    entry = last(ro)
    assert (entry.attempt, entry.outcome, entry.ended_at) == (2, "Promoted", at(25))
    assert [s.index for s in entry.steps] == [0, 1, 2]


def test_a_pass_replayed_on_the_same_world_adds_nothing() -> None:
    """Level-triggered: planning again from the written status (a restarted controller)
    leaves the record as it is."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}]))
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    before = ro.status.releases
    for seconds in (1, 2, 3):
        ro, _ = step(ro, world, at(seconds))
    assert ro.status.releases == before


def test_the_record_keeps_release_history_limit_entries() -> None:
    ro, world = stable_world(make([{"setWeight": 50}]))
    ro = ro.model_copy(update={"spec": ro.spec.model_copy(update={"release_history_limit": 3})})
    for n in range(2, 7):
        ro = new_image(ro, f"registry.local/app:v{n}")
        ro, _ = settle(ro, world, at(n * 10))
    assert [r.images[0] for r in ro.status.releases] == [
        "registry.local/app:v4",
        "registry.local/app:v5",
        "registry.local/app:v6",
    ]
    assert all(r.outcome == "Promoted" for r in ro.status.releases)
    off = ro.model_copy(update={"spec": ro.spec.model_copy(update={"release_history_limit": 0})})
    off, _ = step(off, world, at(100))
    assert off.status.releases == []


def test_a_rollout_found_steady_records_nothing_it_did_not_see() -> None:
    """A controller upgraded under a steady Rollout (no record yet) adds no release."""
    ro, world = stable_world(make([{"setWeight": 20}]))
    ro = ro.model_copy(update={"status": ro.status.model_copy(update={"releases": []})})
    ro, _ = step(ro, world, at(50))
    assert ro.status.releases == []


def test_template_change_takes_the_latest_owner_of_the_template() -> None:
    entries: list[dict[str, Any]] = [
        {
            "manager": "a",
            "time": "2026-01-01T00:00:05Z",
            "fieldsV1": {"f:spec": {"f:template": {}}},
        },
        {
            "manager": "b",
            "time": "2026-01-01T00:00:09Z",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        },
        {
            "manager": "c",
            "time": "2026-01-01T00:00:07Z",
            "fieldsV1": {"f:spec": {"f:template": {}}},
        },
        {"manager": "d", "time": "bad", "fieldsV1": {"f:spec": {"f:template": {}}}},
        {
            "manager": "e",
            "subresource": "status",
            "time": "2026-01-01T00:01:00Z",
            "fieldsV1": {"f:spec": {"f:template": {}}},
        },
    ]
    assert template_change({"managedFields": entries}) == ("c", T0 + dt.timedelta(seconds=7))
    assert template_change({}) is None
    assert template_change(None) is None


def test_without_managed_fields_the_change_is_when_the_controller_saw_it() -> None:
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}]))
    ro, _ = settle(new_image(ro), world, at(12))
    assert (last(ro).changed_by, last(ro).changed_at) == (None, at(12))


def test_the_largest_record_stays_well_under_the_object_size_limit() -> None:
    """25 entries (the most ``releaseHistoryLimit`` allows), each with every list full and
    the longest message, serialize to under 256 KiB: a sixth of the 1.5 MiB etcd allows an
    object, leaving the rest of the status its room."""
    when = T0.isoformat()
    full = Release.model_validate(
        {
            "revision": "f" * 10,
            "attempt": 99,
            "images": [f"registry.example.com/team/service-{i}:v1.2.3-abcdef" for i in range(8)],
            "changedBy": "m" * 128,
            "changedAt": when,
            "startedAt": when,
            "steps": [{"index": i, "endedAt": when} for i in range(32)],
            "analyses": [
                {"name": f"step-{i}-analysis", "phase": "Successful", "endedAt": when}
                for i in range(32)
            ],
            "approvals": [{"step": i, "since": when} for i in range(32)],
            "outcome": "Aborted",
            "reason": "AnalysisFailed",
            "message": "x" * 1024,
            "endedAt": when,
            "detectedAt": when,
            "restoredAt": when,
            "timeToDetectSeconds": 123456.789,
            "timeToRestoreSeconds": 123456.789,
        }
    )
    ro, _ = stable_world(make([{"setWeight": 20}]))
    status = ro.status.model_copy(update={"releases": [full] * 25})
    size = len(status.model_dump_json(by_alias=True, exclude_none=True))
    assert size < 256 * 1024, size


def test_an_abort_overtaken_by_a_newer_revision_is_still_restored() -> None:
    """A newer image applied before the aborted canary's pods are gone: the aborted
    release is restored when they go, though it is no longer the last entry."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}]))
    ro = new_image(ro, "registry.local/app:v2")
    v2 = template_hash(ro.spec.pod_template)
    ro, _ = settle(ro, world, at(0))
    ro = annotate(ro, **{intents.ABORT: v2})
    ro, _ = step(ro, world, at(10))  # stable scaled up, not Ready: v2 keeps its pods
    ro = new_image(ro, "registry.local/app:v3")
    ro, _ = step(ro, world, at(11))
    aborted, newer = ro.status.releases[-2:]
    assert (aborted.revision, aborted.outcome, aborted.restored_at) == (v2, "Aborted", None)
    assert newer.images == ["registry.local/app:v3"]
    ro, _ = settle(ro, world, at(20))
    assert world.replica_sets[v2].ready == 0
    aborted = ro.status.releases[-2]
    assert (aborted.restored_at, aborted.time_to_restore_seconds) == (at(20), 10)


def test_a_first_measurement_s_window_is_one_interval_not_the_whole_wait_before_it() -> None:
    """A run that measured nothing for a while (no canary traffic yet) and failed its
    first measurement: the failing window is the interval before it (the metric's
    cadence, from its nextAt), not everything since the run started."""
    steps = [{"setWeight": 20}, ANALYSIS, {"setWeight": 60}]
    ro, world = stable_world(make(steps, routed=True), routed=True)
    ro = new_image(ro)
    ro, _ = settle(ro, world, at(0))
    run_start = ro.status.analysis_runs[0].started_at
    ro, _ = step(ro, world, at(30), {("step-1", "errors"): measurement("Failed", at(30))})
    entry = last(ro)
    assert entry.reason == "AnalysisFailed"
    assert run_start == at(0)
    assert entry.detected_at == at(20)  # the template's interval is 10 s


# -- blue-green ----------------------------------------------------------------------


def test_blue_green_waits_for_approval_then_promotes() -> None:
    ro, world, _, new = in_preview(autoPromotionEnabled=False)
    entry = last(ro)
    assert (entry.revision, entry.outcome) == (new, None)
    assert [(a.step, a.since) for a in entry.approvals] == [(0, at(1))]
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(new, 0)})
    ro, _ = settle(ro, world, at(9))
    entry = last(ro)
    assert (entry.outcome, entry.ended_at, entry.lead_time_seconds) == ("Promoted", at(9), 8)


def test_blue_green_pre_promotion_failure_never_moved_traffic() -> None:
    """The active Service never left stable: restored the moment it was aborted."""
    ro, world, _, _ = in_preview(prePromotionAnalysis=CHECK)
    ro, _ = step(ro, world, at(4), {(an.PRE_PROMOTION, "errors"): measurement("Failed", at(4))})
    entry = last(ro)
    assert (entry.outcome, entry.reason, entry.ended_at) == ("Aborted", "AnalysisFailed", at(4))
    assert (entry.restored_at, entry.time_to_restore_seconds) == (at(4), 0)


def test_blue_green_post_promotion_failure_is_restored_by_switching_back() -> None:
    """After the switch the new revision had all the traffic; the failed post-promotion
    analysis switches the active Service back in the same pass, which restores it."""
    ro, world, old, new = in_preview(postPromotionAnalysis=CHECK)
    assert world.services[ACTIVE] == new
    assert last(ro).outcome is None  # switched, not promoted: stable until judged
    failed = {(an.POST_PROMOTION, "errors"): measurement("Failed", at(6))}
    ro, _ = step(ro, world, at(6), failed)
    entry = last(ro)
    assert world.services[ACTIVE] == old
    assert (entry.outcome, entry.reason) == ("Aborted", "AnalysisFailed")
    assert (entry.restored_at, entry.time_to_restore_seconds) == (at(6), 0)
