"""Deleting a routed Rollout (:mod:`controller.core.finalize`): every header route is
removed and the weight sent back to 0 before the finalizer goes, even with a router
problem; nothing is done when nothing is routed."""

from __future__ import annotations

import pytest

from controller.core.finalize import finalize_actions
from controller.core.model import Action, RemoveHeaderRoute, SetWeight, TrafficState


@pytest.mark.parametrize(
    ("traffic", "actions"),
    [
        pytest.param(None, (), id="no-router"),
        pytest.param(TrafficState(0), (), id="already-on-stable"),
        pytest.param(TrafficState(30), (SetWeight(0),), id="weight-back-to-0"),
        pytest.param(
            TrafficState(0, frozenset({"beta", "alpha"})),
            (RemoveHeaderRoute("alpha"), RemoveHeaderRoute("beta")),
            id="header-routes-removed-in-name-order",
        ),
        pytest.param(
            TrafficState(100, frozenset({"beta"})),
            (RemoveHeaderRoute("beta"), SetWeight(0)),
            id="header-routes-before-the-weight",
        ),
        pytest.param(
            TrafficState(20, frozenset({"beta"}), problem="Service app-canary not found"),
            (RemoveHeaderRoute("beta"), SetWeight(0)),
            id="despite-a-router-problem",
        ),
        pytest.param(TrafficState(0, problem="no rule for app-stable"), (), id="problem-on-stable"),
    ],
)
def test_traffic_goes_back_to_stable(
    traffic: TrafficState | None, actions: tuple[Action, ...]
) -> None:
    """The actions, in order, for what the router does now."""
    assert finalize_actions(traffic) == actions
