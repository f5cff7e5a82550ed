"""The Gateway API router's pure part: what it reads from an HTTPRoute and the JSON Patch
operations it computes, on plain dicts, with the operations applied by a small RFC 6902
interpreter to check their effect."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.adapters.traffic.base import guarded
from controller.adapters.traffic.gatewayapi import (
    Target,
    gateway_headers,
    header_route_ops,
    header_routes,
    header_rule,
    is_header_rule,
    read_extra,
    read_weight,
    remove_header_ops,
    weight_ops,
)
from controller.api.rollout import HeaderMatch
from tests.support.patching import apply_patch
from tests.support.router_unit import GATEWAY, assert_reads, ref, route, rule

TARGET = GATEWAY


def named(*rule_names: str) -> Target:
    """The target with these ruleNames."""
    return replace(TARGET, rule_names=rule_names)


def header(name: str, **value: str) -> HeaderMatch:
    """A Stepwise header condition."""
    return HeaderMatch.model_validate({"headerName": name, "headerValue": value})


# -- reading ---------------------------------------------------------------------------

BETA = (header("x-beta", exact="1"),)
STABLE_ONLY = route(rule(ref("app-stable", 1), name="main"))
SPLIT_20 = route(rule(ref("app-stable", 80), ref("app-canary", 20), name="main"))
OTHER_ONLY = route(rule(ref("other", 1), name="other"))
ELSEWHERE = route(rule(ref("app-stable", 1, namespace="prod")))
TWO_DISAGREE = route(
    rule(ref("app-stable", 80), ref("app-canary", 20), name="a"),
    rule(ref("app-stable", 1), name="b"),
)
BOTH_ZERO = route(rule(ref("app-stable", 0), ref("app-canary", 0), name="main"))
WITH_HEADER_RULE = route(
    rule(ref("app-canary", 1), name="stepwise-beta"),
    rule(ref("app-stable", 80), ref("app-canary", 20), name="main"),
)


@pytest.mark.parametrize(
    ("doc", "target", "weight", "problem"),
    [
        pytest.param(route(rule(ref("app-stable"))), TARGET, 0, None, id="default-weight-1"),
        pytest.param(WITH_HEADER_RULE, TARGET, 20, None, id="header-rule-not-managed"),
        pytest.param(
            OTHER_ONLY, TARGET, 0, "no rule with a backendRef to the stable", id="no-stable-rule"
        ),
        pytest.param(
            ELSEWHERE, TARGET, 0, "no rule with a backendRef", id="stable-in-other-namespace"
        ),
        pytest.param(
            SPLIT_20, named("main", "typo"), 0,
            "has no rule named typo", id="unknown-rule-name",
        ),
        pytest.param(
            route(rule(ref("app-stable", 1), name="main"), rule(ref("x", 1), name="x")),
            named("x"), 0,
            "rule x of HTTPRoute app has no backendRef to the stable", id="named-rule-no-stable",
        ),
        pytest.param(
            TWO_DISAGREE, TARGET, 20, "disagree on the canary weight (rule a 20%, rule b 0%)",
            id="disagreement-reports-highest",
        ),
        pytest.param(
            TWO_DISAGREE, named("b"), 0, None,
            id="rule-names-restrict",
        ),
    ],
)  # fmt: skip
def test_read_weight(doc: dict[str, Any], target: Target, weight: int, problem: str | None) -> None:
    """The canary percentage is read from the managed rules, or the misfit is named
    (the cases every weighted router shares: ``test_router_template``)."""
    assert_reads(read_weight(doc, target), weight, problem)


def test_header_routes_are_ours_only_with_the_prefix_and_canary_alone() -> None:
    """Header routes are rules named stepwise-* routing only to this Rollout's canary."""
    doc = route(
        rule(ref("app-canary", 1), name="stepwise-beta"),
        rule(ref("other-canary", 1), name="stepwise-gamma"),
        rule(ref("app-canary", 1), ref("app-stable", 1), name="stepwise-delta"),
        rule(ref("app-canary", 1), name="beta"),
        rule(ref("app-stable", 1), name="main"),
    )
    assert header_routes(doc, TARGET) == frozenset({"beta"})
    assert not is_header_rule(doc["spec"]["rules"][1], TARGET)


# -- weights ---------------------------------------------------------------------------


def test_weight_adds_the_canary_backend_on_the_stable_port() -> None:
    """A managed rule without a canary backendRef gets one, on the stable one's port."""
    doc = route(rule(ref("app-stable", 1, port=8080), name="main"))
    ops, problem = weight_ops(doc, TARGET, 20)
    assert problem is None
    assert ops == [
        {"op": "add", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
        {
            "op": "add",
            "path": "/spec/rules/0/backendRefs/-",
            "value": ref("app-canary", 20, port=8080),
        },
    ]
    assert apply_patch(doc, ops)["spec"]["rules"][0]["backendRefs"] == [
        ref("app-stable", 80, port=8080),
        ref("app-canary", 20, port=8080),
    ]


def test_weight_already_held_writes_nothing() -> None:
    """No operations when the route already gives the weight."""
    assert weight_ops(SPLIT_20, TARGET, 20) == ([], None)


def test_weight_touches_only_the_named_rules() -> None:
    """With ruleNames, other rules that reference the stable Service keep their weights."""
    doc = route(rule(ref("app-stable", 1), name="a"), rule(ref("app-stable", 1), name="b"))
    ops, _ = weight_ops(doc, named("b"), 30)
    assert {op["path"].split("/")[3] for op in ops} == {"1"}


@pytest.mark.parametrize(
    ("doc", "target"),
    [
        pytest.param(OTHER_ONLY, TARGET, id="no-stable-rule"),
        pytest.param(ELSEWHERE, TARGET, id="stable-in-other-namespace"),
        pytest.param(SPLIT_20, named("typo"), id="no-rule"),
    ],
)
def test_weight_refuses_a_route_without_managed_rules(doc: dict[str, Any], target: Target) -> None:
    """Nothing at all is written to a route whose managed rules cannot be found."""
    ops, problem = weight_ops(doc, target, 40)
    assert ops == []
    assert problem


@pytest.mark.parametrize("doc", [TWO_DISAGREE, BOTH_ZERO], ids=["disagreement", "both-zero"])
def test_weight_write_repairs_the_weights_it_owns(doc: dict[str, Any]) -> None:
    """Weights observe() calls a problem are Stepwise's own fields: a write sets them."""
    ops, problem = weight_ops(doc, TARGET, 40)
    assert problem is None
    assert read_weight(apply_patch(doc, ops), TARGET) == (40, None)


def test_guarded_tests_the_resource_version_first() -> None:
    """Every write is preceded by a test of the resourceVersion it was computed from."""
    ops = guarded("42", [{"op": "remove", "path": "/spec/rules/0"}])
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    with pytest.raises(ValueError, match="test failed"):
        apply_patch(route(version="43"), ops)


TARGET_NAMES = {"app-stable", "app-canary"}
_extra_refs = st.lists(st.sampled_from(["mirror", "other"]), max_size=2, unique=True).map(
    lambda names: [ref(n, 3) for n in names]
)


@st.composite
def _managed_rule(draw: st.DrawFn) -> dict[str, Any]:
    """A rule with a stable backendRef, maybe a canary one, maybe others, in any order."""
    refs = [ref("app-stable", draw(st.integers(0, 1000)))]
    if draw(st.booleans()):
        refs.append(ref("app-canary", draw(st.integers(0, 1000))))
    return rule(*draw(st.permutations([*refs, *draw(_extra_refs)])), path="/app")


_other_rule = st.builds(lambda refs: rule(ref("other", 1), *refs, path="/other"), _extra_refs)


@st.composite
def _route(draw: st.DrawFn) -> dict[str, Any]:
    """A route with at least one managed rule among unrelated ones."""
    managed = draw(st.lists(_managed_rule(), min_size=1, max_size=3))
    others = draw(st.lists(_other_rule, max_size=3))
    return route(*draw(st.permutations([*managed, *others])))


@given(doc=_route(), weight=st.integers(0, 100))
def test_weight_ops_reach_the_weight_and_touch_nothing_else(
    doc: dict[str, Any], weight: int
) -> None:
    """Applied, the operations give exactly the weight; every rule and backendRef that is
    not stable or canary is unchanged; a second computation finds nothing to do."""
    ops, problem = weight_ops(doc, TARGET, weight)
    assert problem is None
    after = apply_patch(doc, ops)
    assert read_weight(after, TARGET) == (weight, None)
    assert weight_ops(after, TARGET, weight) == ([], None)
    for before_rule, after_rule in zip(doc["spec"]["rules"], after["spec"]["rules"], strict=True):
        assert {k: v for k, v in before_rule.items() if k != "backendRefs"} == {
            k: v for k, v in after_rule.items() if k != "backendRefs"
        }
        others = [r for r in before_rule["backendRefs"] if r["name"] not in TARGET_NAMES]
        assert others == [r for r in after_rule["backendRefs"] if r["name"] not in TARGET_NAMES]


# -- header routes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        pytest.param(
            header("x-beta", exact="1"), {"name": "x-beta", "type": "Exact", "value": "1"},
            id="exact",
        ),
        pytest.param(
            header("x-beta", regex="^a|b$"),
            {"name": "x-beta", "type": "RegularExpression", "value": "^a|b$"}, id="regex",
        ),
        pytest.param(
            header("user-agent", prefix="app/1.2+(x)"),
            {"name": "user-agent", "type": "RegularExpression",
             "value": r"^app/1\.2\+\(x\).*"},
            id="prefix-becomes-escaped-regex",
        ),
    ],
)  # fmt: skip
def test_gateway_headers(match: HeaderMatch, expected: dict[str, str]) -> None:
    """Exact and regex map directly; a prefix becomes an anchored RE2 expression."""
    assert gateway_headers([match]) == [expected]


def test_header_rule_keeps_the_route_matches_and_adds_the_headers() -> None:
    """The header rule matches what the managed rules match (path, method, query, other
    headers), with the header conditions added (a same-named header is replaced), and
    copies their filters and timeouts."""
    api = {
        "path": {"type": "Exact", "value": "/api"},
        "method": "GET",
        "queryParams": [{"name": "v", "type": "Exact", "value": "2"}],
    }
    web = {"path": {"type": "PathPrefix", "value": "/web"}}
    env = {"name": "X-Env", "type": "Exact", "value": "prod"}
    beta = {"name": "x-beta", "type": "Exact", "value": "1"}
    main = rule(ref("app-stable", 1, port=8080), name="main")
    main["matches"] = [
        {**api, "headers": [env, {"name": "X-BETA", "type": "Exact", "value": "old"}]},
        web,
    ]
    second = rule(ref("app-stable", 1, port=8080), name="second", path="/web")
    for managed in (main, second):
        managed.update(filters=[REWRITE], timeouts={"request": "5s"})
    doc = route(rule(ref("other", 1), path="/other"), main, second)
    got, problem = header_rule(doc, TARGET, "beta", (header("x-beta", exact="1"),))
    assert problem is None
    assert got == {
        "name": "stepwise-beta",
        "matches": [{**api, "headers": [env, beta]}, {**web, "headers": [beta]}],
        "filters": [REWRITE],
        "timeouts": {"request": "5s"},
        "backendRefs": [ref("app-canary", 1, port=8080)],
    }


REWRITE = {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch"}}}


def test_header_rule_refuses_managed_rules_with_different_filters() -> None:
    """One header rule cannot copy two managed rules' different filters: a problem."""
    filtered = rule(ref("app-stable", 1), name="a")
    filtered["filters"] = [REWRITE]
    doc = route(filtered, rule(ref("app-stable", 1), name="b"))
    got, problem = header_rule(doc, TARGET, "beta", BETA)
    assert got is None
    assert problem is not None
    assert "ruleNames" in problem
    narrowed = named("a")
    got, _ = header_rule(doc, narrowed, "beta", BETA)
    assert got is not None
    assert got["filters"] == [REWRITE]


def test_header_rule_without_matches_uses_the_default_match() -> None:
    """A managed rule with no matches matches every path; so does its header rule."""
    doc = route({"backendRefs": [ref("app-stable", 1)]})
    got, _ = header_rule(doc, TARGET, "beta", (header("x-beta", exact="1"),))
    assert got is not None
    assert got["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"name": "x-beta", "type": "Exact", "value": "1"}],
        }
    ]


def test_header_route_is_inserted_before_the_first_managed_rule() -> None:
    """A new header rule goes just before the first managed rule; the rest keep order."""
    doc = route(rule(ref("other", 1), name="other", path="/other"), SPLIT_20["spec"]["rules"][0])
    ops, problem = header_route_ops(doc, TARGET, "beta", BETA)
    assert problem is None
    after = apply_patch(doc, ops)
    names = [r.get("name") for r in after["spec"]["rules"]]
    assert names == ["other", "stepwise-beta", "main"]
    assert header_routes(after, TARGET) == frozenset({"beta"})
    assert header_route_ops(after, TARGET, "beta", BETA) == ([], None)


def test_header_route_is_replaced_when_its_match_changes() -> None:
    """Setting a header route again with another match replaces the rule in place."""
    doc = apply_patch(SPLIT_20, header_route_ops(SPLIT_20, TARGET, "beta", BETA)[0])
    ops, _ = header_route_ops(doc, TARGET, "beta", (header("x-beta", exact="2"),))
    assert [op["op"] for op in ops] == ["replace"]
    after = apply_patch(doc, ops)
    assert after["spec"]["rules"][0]["matches"][0]["headers"][0]["value"] == "2"
    assert len(after["spec"]["rules"]) == 2


def test_header_route_never_overwrites_a_foreign_rule_of_the_same_name() -> None:
    """A stepwise-<name> rule that routes elsewhere is a problem, not ours to replace."""
    doc = route(rule(ref("team-svc", 1), name="stepwise-beta"), SPLIT_20["spec"]["rules"][0])
    ops, problem = header_route_ops(doc, TARGET, "beta", BETA)
    assert ops == []
    assert problem is not None
    assert "reserved" in problem
    assert remove_header_ops(doc, TARGET, "beta") == []


def test_header_route_needs_a_managed_rule() -> None:
    """Without a rule for the stable Service there is no header route to add."""
    ops, problem = header_route_ops(OTHER_ONLY, TARGET, "beta", BETA)
    assert ops == []
    assert problem


def test_remove_header_route_removes_only_ours() -> None:
    """Removal takes out this Rollout's header rule(s) of that name and nothing else."""
    doc = route(
        rule(ref("app-canary", 1), name="stepwise-beta"),
        rule(ref("app-canary", 1), name="stepwise-gamma"),
        SPLIT_20["spec"]["rules"][0],
        rule(ref("other", 1), name="other"),
    )
    after = apply_patch(doc, remove_header_ops(doc, TARGET, "beta"))
    assert [r["name"] for r in after["spec"]["rules"]] == ["stepwise-gamma", "main", "other"]
    assert remove_header_ops(after, TARGET, "beta") == []


@given(
    doc=_route(),
    value=st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1),
)
def test_header_route_round_trip_leaves_the_route_as_it_was(
    doc: dict[str, Any], value: str
) -> None:
    """Adding a header route and removing it again gives back the route unchanged, and
    the rule in between is found as this Rollout's header route."""
    ops, problem = header_route_ops(doc, TARGET, "beta", (header("x-beta", prefix=value),))
    assert problem is None
    added = apply_patch(doc, ops)
    assert header_routes(added, TARGET) == frozenset({"beta"})
    assert read_weight(added, TARGET)[0] == read_weight(doc, TARGET)[0]
    assert apply_patch(added, remove_header_ops(added, TARGET, "beta")) == doc


# -- experiment Services (weighted experiment templates) -----------------------------

EXP_TARGET = replace(TARGET, experiments=frozenset({"exp-a", "exp-b"}))
EXP_EXTRA = (("exp-a", 5), ("exp-b", 10))


def _weights(doc: dict[str, Any]) -> list[dict[str, int]]:
    """Each rule's backendRef weights by Service name."""
    return [
        {str(r["name"]): int(r.get("weight", 1)) for r in rule.get("backendRefs", [])}
        for rule in doc["spec"]["rules"]
    ]


def test_experiment_services_get_backend_refs_taken_from_the_stable() -> None:
    """Experiment Services get backendRefs on the stable port with their weights; the
    stable gets 100 - canary - experiments, the canary keeps its weight, and a
    backendRef Stepwise does not own (``other``) is untouched."""
    doc = route(rule(ref("app-stable", 80), ref("app-canary", 20), ref("other", 3), name="main"))
    ops, problem = weight_ops(doc, EXP_TARGET, 20, EXP_EXTRA)
    assert problem is None
    after = apply_patch(doc, ops)
    assert _weights(after) == [
        {"app-stable": 65, "app-canary": 20, "other": 3, "exp-a": 5, "exp-b": 10}
    ]
    added = after["spec"]["rules"][0]["backendRefs"][-1]
    assert added == {"group": "", "kind": "Service", "name": "exp-b", "port": 80, "weight": 10}
    assert read_weight(after, EXP_TARGET) == (20, None)
    assert read_extra(after, EXP_TARGET) == EXP_EXTRA
    assert weight_ops(after, EXP_TARGET, 20, EXP_EXTRA) == ([], None)


def test_experiment_services_at_zero_are_removed_and_the_stable_gets_their_share() -> None:
    """An experiment Service listed at 0 leaves every managed rule (the route never names
    a Service about to be deleted); the stable takes its share back."""
    doc = route(
        rule(ref("app-stable", 65), ref("app-canary", 20), ref("exp-a", 5), ref("exp-b", 10)),
        rule(ref("app-stable", 65), ref("exp-a", 5), ref("app-canary", 20), ref("exp-b", 10)),
    )
    ops, problem = weight_ops(doc, EXP_TARGET, 20, (("exp-a", 0), ("exp-b", 0)))
    assert problem is None
    after = apply_patch(doc, ops)
    assert _weights(after) == [{"app-stable": 80, "app-canary": 20}] * 2
    assert read_extra(after, EXP_TARGET) == ()
    assert read_weight(after, EXP_TARGET) == (20, None)


def test_abort_takes_canary_and_experiment_services_out_at_once() -> None:
    """Weight 0 with every experiment Service at 0: all traffic to the stable."""
    doc = route(
        rule(ref("app-stable", 65), ref("app-canary", 20), ref("exp-a", 5), ref("exp-b", 10))
    )
    ops, _ = weight_ops(doc, EXP_TARGET, 0, (("exp-a", 0), ("exp-b", 0)))
    assert _weights(apply_patch(doc, ops)) == [{"app-stable": 100, "app-canary": 0}]


def test_the_canary_weight_reads_against_stable_canary_and_experiments() -> None:
    """With experiment Services routed the canary's share counts them in the total, and
    only the Services of the target's experiments are reported."""
    doc = route(rule(ref("app-stable", 65), ref("app-canary", 20), ref("exp-a", 15), ref("x", 9)))
    assert read_weight(doc, EXP_TARGET) == (20, None)
    assert read_extra(doc, EXP_TARGET) == (("exp-a", 15),)
    assert read_weight(doc, TARGET) == (24, None)  # without experiments, as before


def test_weights_above_100_are_refused_without_ops() -> None:
    """A canary and experiment weights adding up to more than 100% are a problem."""
    ops, problem = weight_ops(SPLIT_20, EXP_TARGET, 90, EXP_EXTRA)
    assert ops == []
    assert problem is not None
    assert "more than 100%" in problem


def test_without_extra_the_ops_are_the_single_weight_ones() -> None:
    """No experiment weights: the operations are exactly those of the canary alone."""
    ops, _ = weight_ops(STABLE_ONLY, TARGET, 30)
    assert ops == [
        {"op": "add", "path": "/spec/rules/0/backendRefs/0/weight", "value": 70},
        {
            "op": "add",
            "path": "/spec/rules/0/backendRefs/-",
            "value": {
                "group": "",
                "kind": "Service",
                "name": "app-canary",
                "port": 80,
                "weight": 30,
            },
        },
    ]
