"""``status.waitReason`` and blindness: every wait a program may need to tell apart has its
own word (no decision or exit code reads the message), and an analysis that cannot see
says so first, in the message, the reason and the AnalysisBlind condition."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from controller.api.rollout import Rollout
from controller.cli.rollouts import awaiting_approval, describe
from controller.core import analysis as an
from controller.core.plan import plan
from tests.support.plan import ANALYSIS, at, canary_at, m, make, new_image, paused, stable_world
from tests.support.world import step


def condition(ro: Rollout, type_: str) -> tuple[str, str, str] | None:
    """(status, reason, message) of a condition, None when absent."""
    for c in ro.status.conditions:
        if c.type == type_:
            return c.status, c.reason, c.message
    return None


@pytest.mark.parametrize(
    ("steps", "reason", "approval"),
    [
        pytest.param([{"setWeight": 20}, {"pause": {}}], "AwaitingPromotion", True, id="pause"),
        pytest.param(
            [{"setWeight": 20}, {"pause": {"duration": "30s"}}], "PauseStep", False, id="timed"
        ),
        pytest.param([{"setWeight": 20}, ANALYSIS], "AnalysisRunning", False, id="analysis"),
    ],
)
def test_each_wait_has_its_reason(steps: list[dict[str, Any]], reason: str, approval: bool) -> None:
    """The reason names the wait; only a pause for a person asks for a promote."""
    ro, _ = canary_at(steps)
    assert ro.status.wait_reason == reason
    doc = ro.model_dump(mode="json", by_alias=True)
    assert (awaiting_approval(doc) is not None) is approval


def test_spec_paused_pods_and_healthy() -> None:
    """spec.paused is SpecPaused (no approval asked); unready pods are PodsNotReady; a
    healthy Rollout is not waiting."""
    ro, world = canary_at([{"setWeight": 20}, {"pause": {}}])
    held, _ = step(paused(ro), world, at(1))
    assert held.status.wait_reason == "SpecPaused"
    assert awaiting_approval(held.model_dump(mode="json", by_alias=True)) is None
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}]))
    assert ro.status.wait_reason is None
    ro, _ = step(new_image(ro), world, at(0))
    assert ro.status.wait_reason == "PodsNotReady"


def test_a_missing_service_is_blocked() -> None:
    """A router whose canary Service is missing before the canary has traffic blocks the
    Rollout: Blocked (with traffic, the canary is aborted instead: see test_plan)."""
    ro, world = stable_world(make([{"setWeight": 20}, {"pause": {}}], routed=True), routed=True)
    world.missing_services.add("app-canary")
    ro, _ = step(new_image(ro), world, at(1))
    assert ro.status.wait_reason == "Blocked"


def test_a_blind_analysis_says_so_first_and_clears_when_it_sees() -> None:
    """A NoData measurement under onNoData: Hold makes the message start with "analysis
    blind", the reason AnalysisBlind and the condition True (reason NoData, naming the
    metric); the next good measurement turns the condition False."""
    ro, world = canary_at([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}])
    run = an.step_run_name(1)
    ro, _ = step(ro, world, at(1), {(run, "errors"): m("NoData", "")})
    assert ro.status.wait_reason == "AnalysisBlind"
    assert ro.status.message.startswith("analysis blind: analysis of step 1")
    assert "metric errors: no data (onNoData: Hold)" in ro.status.message
    blind = condition(ro, "AnalysisBlind")
    assert blind is not None
    assert blind[:2] == ("True", "NoData")
    assert "metric errors" in blind[2]
    ro, _ = step(ro, world, at(12), {(run, "errors"): m("Successful")})
    assert condition(ro, "AnalysisBlind") == ("False", "Seeing", "")
    assert not ro.status.message.startswith("analysis blind")


def test_provider_errors_past_the_limit_are_blind_too() -> None:
    """Errors beyond consecutiveErrorLimit under onProviderError: Hold: ProviderError."""
    ro, world = canary_at([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}])
    run = an.step_run_name(1)
    broken = m("Error", "")
    broken = broken.model_copy(update={"message": "errors: query failed (unreachable): refused"})
    for i in range(6):
        ro, _ = step(ro, world, at(1 + 10 * i), {(run, "errors"): broken})
    blind = condition(ro, "AnalysisBlind")
    assert blind is not None
    assert blind[:2] == ("True", "ProviderError")
    assert "provider failing: errors: query failed (unreachable)" in blind[2]


def test_a_measurement_being_taken_sets_no_immediate_timer() -> None:
    """A due metric whose measurement is in flight wakes the Rollout through its result,
    not through a timer that would spin every pass."""
    ro, world = canary_at([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}])
    run = an.step_run_name(1)
    due_now = plan(ro, world.observed(), at(1))
    assert due_now.requeue_after == 0
    observed = dataclasses.replace(world.observed(), measuring=frozenset({(run, "errors")}))
    waiting = plan(ro, observed, at(1))
    assert waiting.requeue_after == an.BUSY_RECHECK.total_seconds()


def test_stepwise_status_shows_the_wait_and_the_blindness() -> None:
    """The status view names the wait reason and puts a BLIND line first among the
    analysis lines while a metric is held."""
    ro, world = canary_at([{"setWeight": 20}, ANALYSIS, {"setWeight": 60}])
    run = an.step_run_name(1)
    ro, _ = step(ro, world, at(1), {(run, "errors"): m("NoData", "")})
    lines = describe(ro.model_dump(mode="json", by_alias=True), [])
    assert "waiting: AnalysisBlind" in lines[1]
    assert lines[2].startswith("  BLIND (NoData): analysis of step 1")
