"""The SMI router's pure part: the weight read from a TrafficSplit, the split it creates
and the JSON Patch operations it computes, on plain dicts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.adapters.traffic.smi import (
    Target,
    build_split,
    controlled_by,
    desired_spec,
    read_extra,
    read_weight,
    spec_ops,
)
from tests.support.patching import apply_patch
from tests.support.router_unit import OWNER, TRAFFIC_SPLIT, UID, assert_reads, split

TARGET = TRAFFIC_SPLIT


def test_desired_spec_splits_the_root_service_between_stable_and_canary() -> None:
    """The spec is the root Service with stable at 100 - w and canary at w."""
    assert desired_spec(TARGET, 20) == {
        "service": "app-stable",
        "backends": [
            {"service": "app-stable", "weight": 80},
            {"service": "app-canary", "weight": 20},
        ],
    }


def test_build_split_is_controlled_by_the_rollout() -> None:
    """A created split carries the Rollout's controller ownerReference."""
    doc = build_split(TARGET, OWNER, 0)
    assert doc["metadata"] == {"name": "app", "namespace": "shop", "ownerReferences": [OWNER]}
    assert OWNER["controller"] is True
    assert controlled_by(doc, UID)
    assert doc["spec"] == desired_spec(TARGET, 0)


ROOT = dataclasses.replace(TARGET, name="app-split", root="app")


@pytest.mark.parametrize(
    ("doc", "target", "weight", "problem"),
    [
        pytest.param(
            split(("app-stable", 50), ("app-canary", 50), service="app"), ROOT, 50, None,
            id="separate-root",
        ),
        pytest.param(
            split(("app-stable", 100), owner=None), TARGET, 0, "not controlled by this Rollout",
            id="not-ours",
        ),
        pytest.param(
            split(("app-stable", 100), owner={**OWNER, "uid": "other"}), TARGET, 0,
            "not controlled by this Rollout", id="another-rollouts",
        ),
        pytest.param(
            split(("app-stable", 100), owner={**OWNER, "controller": False}), TARGET, 0,
            "not controlled by this Rollout", id="owner-not-controller",
        ),
        pytest.param(
            split(("app-stable", 100)), ROOT, 0, "splits Service app-stable, not the root",
            id="other-root",
        ),
        pytest.param(split(("x", 100)), TARGET, 0, "weight 0 to both", id="neither"),
    ],
)  # fmt: skip
def test_read_weight(doc: dict[str, Any], target: Target, weight: int, problem: str | None) -> None:
    """The canary percentage is read from the backends, or the misfit is named (the
    cases every weighted router shares: ``test_router_template``)."""
    assert_reads(read_weight(doc, target), weight, problem)


def test_spec_ops_write_nothing_when_the_weight_holds() -> None:
    """No operations when the split already is the desired spec."""
    assert spec_ops(split(("app-stable", 80), ("app-canary", 20)), TARGET, 20) == []


def test_spec_ops_change_only_what_differs() -> None:
    """The operations set only the spec fields that differ from the wanted spec."""
    ops = spec_ops(split(("app-stable", 100), version="9"), TARGET, 30)
    assert ops == [
        {"op": "add", "path": "/spec/backends", "value": desired_spec(TARGET, 30)["backends"]}
    ]


@given(
    backends=st.lists(
        st.tuples(st.sampled_from(["app-stable", "app-canary", "x"]), st.integers(0, 1000)),
        max_size=4,
    ),
    service=st.sampled_from(["app-stable", "app"]),
    weight=st.integers(0, 100),
)
def test_spec_ops_reach_the_weight(
    backends: list[tuple[str, int]], service: str, weight: int
) -> None:
    """Whatever an owned split held, the operations give exactly the weight, and a second
    computation finds nothing to do."""
    doc = split(*backends, service=service)
    after = apply_patch(doc, spec_ops(doc, TARGET, weight))
    assert read_weight(after, TARGET) == (weight, None)
    assert after["spec"] == desired_spec(TARGET, weight)
    assert after["metadata"] == doc["metadata"]
    assert spec_ops(after, TARGET, weight) == []


# -- experiment Services (weighted experiment templates) -----------------------------

EXP_TARGET = dataclasses.replace(TARGET, experiments=frozenset({"exp-a", "exp-b"}))


def test_experiment_services_are_backends_with_their_weights() -> None:
    """Experiment Services are backends with their weights, taken from the stable's share;
    the canary keeps its weight and both read back."""
    spec = desired_spec(EXP_TARGET, 20, (("exp-a", 5), ("exp-b", 10)))
    assert spec["backends"] == [
        {"service": "app-stable", "weight": 65},
        {"service": "app-canary", "weight": 20},
        {"service": "exp-a", "weight": 5},
        {"service": "exp-b", "weight": 10},
    ]
    doc = split(*((b["service"], b["weight"]) for b in spec["backends"]))
    assert read_weight(doc, EXP_TARGET) == (20, None)
    assert read_extra(doc, EXP_TARGET) == (("exp-a", 5), ("exp-b", 10))


def test_experiment_services_at_zero_leave_the_split() -> None:
    """An experiment Service at 0 is no longer a backend; the stable takes its share."""
    doc = split(("app-stable", 65), ("app-canary", 20), ("exp-a", 5), ("exp-b", 10))
    after = apply_patch(doc, spec_ops(doc, EXP_TARGET, 20, (("exp-a", 0), ("exp-b", 0))))
    assert after["spec"]["backends"] == [
        {"service": "app-stable", "weight": 80},
        {"service": "app-canary", "weight": 20},
    ]
    assert read_extra(after, EXP_TARGET) == ()


def test_without_experiments_the_spec_is_the_two_way_split() -> None:
    """No experiment weights: the spec is exactly the stable/canary one."""
    assert desired_spec(TARGET, 30) == desired_spec(TARGET, 30, ())
    assert desired_spec(TARGET, 30)["backends"] == [
        {"service": "app-stable", "weight": 70},
        {"service": "app-canary", "weight": 30},
    ]
