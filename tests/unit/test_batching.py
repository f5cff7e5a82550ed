"""Status writes: material changes now, tallies at most every 10 s (core.batching).

Each case drives the real plan through an analysis and asks :func:`write_at` about the
status it produced, so a change to what the plan puts in the status (a new field, a
message that starts carrying counts) shows up here."""

from __future__ import annotations

import datetime as dt

from controller.core import analysis as an
from controller.core.batching import TALLY_BATCH, material, write_at
from tests.support.plan import ANALYSIS, at, canary_at, m
from tests.support.world import step

RUN = an.step_run_name(1)


def test_a_counted_measurement_is_a_tally() -> None:
    """A Successful measurement in a running analysis changes the count, the latest
    measurement, next_at and the progress message; it may wait TALLY_BATCH after the
    oldest unwritten change, and no longer."""
    ro, world = canary_at([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}])
    before = ro.status
    assert before.wait_reason == "AnalysisRunning"
    after, _ = step(ro, world, at(1), {(RUN, "errors"): m("Successful")})
    assert after.status != before
    assert after.status.message != before.message  # the progress line moved
    assert material(after.status) == material(before)
    assert write_at(before, after.status, None, at(1)) == at(1) + TALLY_BATCH
    oldest = at(1) - dt.timedelta(seconds=4)
    assert write_at(before, after.status, oldest, at(1)) == oldest + TALLY_BATCH


def test_a_verdict_is_written_at_once() -> None:
    """A Failed measurement that fails the run aborts the canary: material, written now."""
    ro, world = canary_at([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}])
    failed, _ = step(ro, world, at(1), {(RUN, "errors"): m("Failed")})
    assert failed.status.abort is not None
    assert write_at(ro.status, failed.status, at(0), at(1)) == at(1)


def test_blindness_and_steps_are_written_at_once() -> None:
    """A NoData measurement under Hold (the analysis is blind) and a finished analysis
    (the next step) change the wait reason or the step: both written now."""
    ro, world = canary_at([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}])
    blind, _ = step(ro, world, at(1), {(RUN, "errors"): m("NoData", "")})
    assert blind.status.wait_reason == "AnalysisBlind"
    assert write_at(ro.status, blind.status, None, at(1)) == at(1)
    done = ro
    for i in range(1, 20):
        done, _ = step(done, world, at(10 * i), {(RUN, "errors"): m("Successful")})
        if done.status.current_step_index != 1:
            break
    assert done.status.current_step_index == 2
    assert write_at(ro.status, done.status, None, at(200)) == at(200)


def test_nothing_to_write_is_none() -> None:
    """An unchanged status is never written, whatever waited before."""
    ro, _ = canary_at([{"setWeight": 20}, ANALYSIS])
    assert write_at(ro.status, ro.status, at(0), at(30)) is None


def test_a_message_outside_analysis_is_material() -> None:
    """Only the progress line of a running analysis is a tally: any other message change
    (here a pause's) is written now."""
    ro, _ = canary_at([{"setWeight": 20}, {"pause": {"duration": "30s"}}])
    assert ro.status.wait_reason == "PauseStep"
    edited = ro.status.model_copy(update={"message": ro.status.message + " (edited)"})
    assert write_at(ro.status, edited, None, at(1)) == at(1)
