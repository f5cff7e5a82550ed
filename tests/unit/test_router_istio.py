"""The Istio router's pure half: reading a VirtualService (and DestinationRule) into a
TrafficState, and the JSON Patch operations for weights, header routes and subset labels,
applied here to plain dicts."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.adapters.kube import REVISION_LABEL
from controller.adapters.traffic import istio
from controller.adapters.traffic.istio import Subsets, Target, World
from controller.api.rollout import HeaderMatch
from tests.support.patching import apply_patch
from tests.support.router_unit import dest, routed_rollout, subset

NS = "shop"
HOST = Target(NS, "checkout", "checkout-stable", "checkout-canary")
SUBSET = Target(
    NS, "checkout", "checkout-stable", "checkout-canary", subsets=Subsets("checkout", "s", "c")
)


# -- helpers ---------------------------------------------------------------------------


def vs(*routes: dict[str, Any]) -> dict[str, Any]:
    """A VirtualService with these HTTP routes."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "checkout", "namespace": NS, "resourceVersion": "7"},
        "spec": {"hosts": ["checkout.example.com"], "http": list(routes)},
    }


PORT = {"number": 8080}
PRIMARY = {
    "name": "primary",
    "match": [{"uri": {"prefix": "/"}}],
    "retries": {"attempts": 3},
    "route": [dest("checkout-stable", port=PORT)],
}
OTHER = {"name": "static", "route": [dest("static-files")]}


def world(doc: dict[str, Any] | None, **kw: Any) -> World:
    """A World around a VirtualService."""
    return World(virtual_service=doc, **kw)


def dr(
    stable: str | None = "r1", canary: str | None = "r1", host: str = "checkout"
) -> dict[str, Any]:
    """A DestinationRule with subsets s and c pinned to these revisions."""

    return {
        "metadata": {"name": "checkout", "resourceVersion": "3"},
        "spec": {
            "host": host,
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "subsets": [subset("s", stable), subset("c", canary), {"name": "legacy"}],
        },
    }


# -- reading ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("checkout-stable", "checkout-stable"),
        ("checkout-stable.shop", "checkout-stable"),
        ("checkout-stable.shop.svc", "checkout-stable"),
        ("checkout-stable.shop.svc.cluster.local", "checkout-stable"),
        ("checkout-stable.other.svc.cluster.local", None),
        ("checkout-stable.shop.svc.example.org", None),
        ("checkout.example.com", None),
    ],
    ids=["short", "svc.ns", "svc.ns.svc", "fqdn", "other-namespace", "other-domain", "external"],
)
def test_service_of(host: str, expected: str | None) -> None:
    """A destination host names a Service of the namespace in any of its four forms."""
    assert istio.service_of(host, NS) == expected


@pytest.mark.parametrize(
    ("doc", "weight", "problem"),
    [
        (None, 0, "VirtualService checkout not found in shop"),
        (vs(PRIMARY), 0, None),
        (vs(OTHER, PRIMARY), 0, None),
        (
            vs({**PRIMARY, "route": [dest("checkout-stable", 80), dest("checkout-canary", 20)]}),
            20,
            None,
        ),
        (
            vs(
                {
                    "route": [
                        dest("checkout-stable.shop.svc.cluster.local", 50),
                        dest("checkout-canary.shop.svc.cluster.local", 50),
                    ]
                }
            ),
            50,
            None,
        ),
        (vs({"route": [dest("checkout-stable", 3), dest("checkout-canary", 1)]}), 25, None),
        (vs(OTHER), 33, "VirtualService checkout has no HTTP route to checkout-stable"),
        (
            vs(
                PRIMARY,
                {"name": "b", "route": [dest("checkout-stable", 90), dest("checkout-canary", 10)]},
            ),
            33,
            "HTTP routes of VirtualService checkout disagree on the canary weight "
            "('primary'=0, 'b'=10)",
        ),
        (
            vs({**PRIMARY, "route": [dest("checkout-stable", 80), dest("mirror", 20)]}),
            33,
            "HTTP route 'primary' of VirtualService checkout also sends to mirror; Stepwise "
            "splits a route only between stable and canary",
        ),
        (
            vs({**PRIMARY, "route": [dest("checkout-stable", 0), dest("checkout-canary", 0)]}),
            33,
            "HTTP route 'primary' of VirtualService checkout: every weight is 0",
        ),
    ],
    ids=[
        "missing",
        "stable-only",
        "unrelated-route-ignored",
        "split",
        "fqdn-split",
        "relative-weights",
        "no-route-to-stable",
        "routes-disagree",
        "third-destination",
        "all-zero",
    ],
)
def test_read_state_by_host(doc: dict[str, Any] | None, weight: int, problem: str | None) -> None:
    """The weight is the canary's share; a misfit is a problem with the last weight."""
    state = istio.read_state(world(doc), HOST, fallback_weight=33)
    assert (state.canary_weight, state.problem) == (weight, problem)


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        (("primary",), None),
        (("primary", "missing"), "VirtualService checkout has no HTTP route named 'missing'"),
        (
            ("static",),
            "HTTP route 'static' of VirtualService checkout must send to checkout-stable "
            "exactly once (found 0)",
        ),
    ],
    ids=["named", "named-route-missing", "named-route-elsewhere"],
)
def test_read_state_named_routes(routes: tuple[str, ...], problem: str | None) -> None:
    """Named routes must all exist and send to the stable Service."""
    target = Target(NS, "checkout", "checkout-stable", "checkout-canary", routes=routes)
    assert istio.read_state(world(vs(OTHER, PRIMARY)), target).problem == problem


def test_read_state_reports_header_routes_and_missing_canary_service() -> None:
    """Header routes are listed; a missing canary Service is a problem, weight still read."""
    header = {"name": "stepwise-beta", "route": [dest("checkout-canary")]}
    split = {**PRIMARY, "route": [dest("checkout-stable", 90), dest("checkout-canary", 10)]}
    state = istio.read_state(world(vs(header, split), canary_service_found=False), HOST)
    assert state.header_routes == frozenset({"beta"})
    assert state.canary_weight == 10
    assert state.problem == "canary Service checkout-canary not found"


# -- weights ---------------------------------------------------------------------------


def test_weight_ops_add_the_canary_destination_beside_the_stable_one() -> None:
    """A missing canary destination is added like the stable one; nothing else changes."""
    doc = vs(
        OTHER,
        {
            "name": "primary",
            "timeout": "5s",
            "route": [dest("checkout-stable.shop.svc.cluster.local", port=PORT)],
        },
    )
    ops = istio.weight_ops(world(doc), HOST, 20)
    assert ops == [
        {
            "op": "add",
            "path": "/spec/http/1/route/-",
            "value": {
                "destination": {"host": "checkout-canary.shop.svc.cluster.local", "port": PORT},
                "weight": 20,
            },
        },
        {"op": "add", "path": "/spec/http/1/route/0/weight", "value": 80},
    ]
    after = apply_patch(doc, ops)
    assert after["spec"]["http"][0] == OTHER
    assert after["spec"]["http"][1]["timeout"] == "5s"
    assert istio.read_state(world(after), HOST).canary_weight == 20
    assert istio.weight_ops(world(after), HOST, 20) == []


def test_weight_ops_touch_only_weights_that_differ() -> None:
    """An existing split changes by replacing the two weights, nothing else."""
    doc = vs({**PRIMARY, "route": [dest("checkout-stable", 80), dest("checkout-canary", 20)]})
    assert istio.weight_ops(world(doc), HOST, 0) == [
        {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 0},
        {"op": "add", "path": "/spec/http/0/route/0/weight", "value": 100},
    ]


def test_weight_zero_without_a_canary_destination_writes_nothing() -> None:
    """Weight 0 with no canary destination already holds."""
    assert istio.weight_ops(world(vs(PRIMARY)), HOST, 0) == []


def test_no_traffic_to_a_missing_canary_service() -> None:
    """Without the canary Service a positive weight is refused; weight 0 is allowed."""
    doc = vs({**PRIMARY, "route": [dest("checkout-stable", 80), dest("checkout-canary", 20)]})
    w = world(doc, canary_service_found=False)
    with pytest.raises(istio.MisfitError, match="canary Service checkout-canary not found"):
        istio.weight_ops(w, HOST, 30)
    after = apply_patch(doc, istio.weight_ops(w, HOST, 0))
    assert istio.read_state(world(after), HOST).canary_weight == 0


def test_header_names_are_lowercased() -> None:
    """Istio only accepts lowercase header names (HTTP header names ignore case)."""
    match = (HeaderMatch.model_validate({"headerName": "X-Beta", "headerValue": {"exact": "1"}}),)
    route = istio.header_route(HOST, world(vs(PRIMARY)), "beta", match)
    assert route["match"] == [{"headers": {"x-beta": {"exact": "1"}}}]


def test_weight_ops_refuse_a_misfit() -> None:
    """No operation is computed for a VirtualService that does not fit (no partial split)."""
    with pytest.raises(istio.MisfitError, match="no HTTP route named 'b'"):
        istio.weight_ops(
            world(vs(PRIMARY)), Target(NS, "checkout", "checkout-stable", "x", ("primary", "b")), 20
        )


@given(
    weight=st.integers(0, 100),
    before=st.integers(0, 100),
    fqdn=st.booleans(),
    with_canary=st.booleans(),
)
def test_weight_ops_reach_the_weight_and_keep_everything_else(
    weight: int, before: int, fqdn: bool, with_canary: bool
) -> None:
    """Any weight is reached idempotently in every managed route; the rest is untouched."""
    suffix = ".shop.svc.cluster.local" if fqdn else ""
    dests = [dest(f"checkout-stable{suffix}", 100 - before, port=PORT)]
    if with_canary:
        dests.append(dest(f"checkout-canary{suffix}", before, port=PORT))
    routes = [
        OTHER,
        {"name": "a", "retries": {"attempts": 2}, "route": copy.deepcopy(dests)},
        {"name": "b", "match": [{"uri": {"prefix": "/api"}}], "route": copy.deepcopy(dests)},
    ]
    doc = vs(*routes)
    after = apply_patch(doc, istio.weight_ops(world(doc), HOST, weight))
    expected = weight if with_canary or weight else 0
    state = istio.read_state(world(after), HOST)
    assert (state.canary_weight, state.problem) == (expected, None)
    assert after["spec"]["http"][0] == OTHER
    assert after["spec"]["http"][1]["retries"] == {"attempts": 2}
    assert after["spec"]["http"][2]["match"] == [{"uri": {"prefix": "/api"}}]
    assert istio.weight_ops(world(after), HOST, weight) == []


# -- header routes ---------------------------------------------------------------------


BETA = (HeaderMatch.model_validate({"headerName": "x-beta", "headerValue": {"exact": "1"}}),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"exact": "1"}, {"exact": "1"}),
        ({"prefix": "b"}, {"prefix": "b"}),
        ({"regex": "^b.*"}, {"regex": "^b.*"}),
    ],
    ids=["exact", "prefix", "regex"],
)
def test_header_route_matches_headers_and_sends_to_the_canary(
    value: dict[str, str], expected: dict[str, str]
) -> None:
    """The header route matches all headers and has one destination: the canary."""
    match = (
        HeaderMatch.model_validate({"headerName": "x-beta", "headerValue": value}),
        HeaderMatch.model_validate({"headerName": "x-team", "headerValue": {"exact": "qa"}}),
    )
    route = istio.header_route(HOST, world(vs(PRIMARY)), "beta", match)
    assert route == {
        "name": "stepwise-beta",
        "match": [{"headers": {"x-beta": expected, "x-team": {"exact": "qa"}}}],
        "route": [{"destination": {"host": "checkout-canary", "port": PORT}}],
    }


def test_header_route_goes_just_before_the_first_managed_route() -> None:
    """It is inserted before the managed routes (after unrelated ones), once."""
    doc = vs(OTHER, PRIMARY)
    ops = istio.header_route_ops(world(doc), HOST, "beta", BETA)
    after = apply_patch(doc, ops)
    assert [r.get("name") for r in after["spec"]["http"]] == ["static", "stepwise-beta", "primary"]
    assert istio.header_route_ops(world(after), HOST, "beta", BETA) == []
    assert istio.read_state(world(after), HOST).header_routes == frozenset({"beta"})


def test_header_route_is_replaced_or_moved_in_front() -> None:
    """A changed header route is replaced in place; one behind a managed route moves."""
    doc = vs(OTHER, PRIMARY)
    after = apply_patch(doc, istio.header_route_ops(world(doc), HOST, "beta", BETA))
    prefix = (HeaderMatch.model_validate({"headerName": "x-beta", "headerValue": {"prefix": "y"}}),)
    ops = istio.header_route_ops(world(after), HOST, "beta", prefix)
    assert [op["op"] for op in ops] == ["replace"]
    behind = vs(OTHER, PRIMARY, istio.header_route(HOST, world(doc), "beta", BETA))
    moved = apply_patch(behind, istio.header_route_ops(world(behind), HOST, "beta", BETA))
    assert [r.get("name") for r in moved["spec"]["http"]] == ["static", "stepwise-beta", "primary"]


def test_remove_header_route() -> None:
    """Removal deletes only that route; an absent route needs no operation."""
    header = istio.header_route(HOST, world(vs(PRIMARY)), "beta", BETA)
    doc = vs(OTHER, header, PRIMARY)
    after = apply_patch(doc, istio.remove_header_route_ops(doc, "beta"))
    assert after["spec"]["http"] == [OTHER, PRIMARY]
    assert istio.remove_header_route_ops(after, "beta") == []
    assert istio.remove_header_route_ops(None, "beta") == []


# -- subsets ---------------------------------------------------------------------------


def subset_vs(stable: int | None = None, canary: int | None = None) -> dict[str, Any]:
    """A VirtualService routing by subsets of the ``checkout`` host."""
    dests = [dest("checkout", stable, subset="s", port=PORT)]
    if canary is not None:
        dests.append(dest("checkout", canary, subset="c", port=PORT))
    return vs(OTHER, {"name": "primary", "route": dests})


@pytest.mark.parametrize(
    ("kw", "weight", "problem"),
    [
        ({"destination_rule": dr("r1", "r2"), "stable_revision": "r1"}, 20, None),
        ({"destination_rule": dr("r1", "r1"), "stable_revision": "r1"}, 0, None),
        ({"destination_rule": dr("r0", "r2"), "stable_revision": "r1"}, 100, None),
        ({"destination_rule": dr(None, None), "stable_revision": "r1"}, 100, None),
        ({"destination_rule": dr("r0", "r2")}, 20, None),
        ({}, 33, "DestinationRule checkout not found in shop"),
        (
            {"destination_rule": dr(host="checkout-stable")},
            33,
            "DestinationRule checkout host 'checkout-stable' is the stable Service, whose "
            "selector Stepwise pins to one revision, so the other subset would have no "
            "endpoints; use a Service that selects every revision",
        ),
        (
            {
                "destination_rule": {
                    "metadata": {},
                    "spec": {"host": "checkout", "subsets": [{"name": "s"}]},
                }
            },
            33,
            "DestinationRule checkout has no subset 'c'",
        ),
    ],
    ids=[
        "canary-share",
        "canary-subset-selects-stable",
        "stale-stable-subset",
        "unlabelled-subsets",
        "revisions-unknown",
        "rule-missing",
        "host-is-the-stable-service",
        "subset-missing",
    ],
)
def test_read_state_by_subset(kw: dict[str, Any], weight: int, problem: str | None) -> None:
    """By subset, the weight is the share of traffic that misses the stable revision."""
    state = istio.read_state(world(subset_vs(80, 20), **kw), SUBSET, fallback_weight=33)
    assert (state.canary_weight, state.problem) == (weight, problem)


def test_subset_ops_pin_the_subsets_and_weights_add_the_canary_subset() -> None:
    """Subsets get their revision label; the canary destination is the canary subset."""
    rule = dr(stable="r0", canary=None)
    rule["spec"]["subsets"][1].pop("labels")
    w = world(subset_vs(), destination_rule=rule, stable_revision="r1", canary_revision="r2")
    ops = istio.subset_label_ops(w, SUBSET)
    assert ops == [
        {"op": "add", "path": "/spec/subsets/0/labels/stepwise.dev~1revision", "value": "r1"},
        {"op": "add", "path": "/spec/subsets/1/labels", "value": {REVISION_LABEL: "r2"}},
    ]
    pinned = apply_patch(rule, ops)
    assert pinned["spec"]["subsets"][0]["labels"] == {"app": "checkout", REVISION_LABEL: "r1"}
    assert pinned["spec"]["subsets"][2] == {"name": "legacy"}
    assert pinned["spec"]["trafficPolicy"] == rule["spec"]["trafficPolicy"]
    w = World(subset_vs(), pinned, "r1", "r2")
    assert istio.subset_label_ops(w, SUBSET) == []
    after = apply_patch(w.virtual_service or {}, istio.weight_ops(w, SUBSET, 30))
    assert after["spec"]["http"][1]["route"] == [
        dest("checkout", 70, subset="s", port=PORT),
        dest("checkout", 30, subset="c", port=PORT),
    ]
    assert istio.read_state(World(after, pinned, "r1", "r2"), SUBSET).canary_weight == 30


def test_subset_ops_wait_for_known_revisions() -> None:
    """A revision not known yet leaves its subset's labels alone."""
    w = world(
        subset_vs(), destination_rule=dr("r0", "r0"), stable_revision=None, canary_revision="r2"
    )
    assert istio.subset_label_ops(w, SUBSET) == [
        {"op": "add", "path": "/spec/subsets/1/labels/stepwise.dev~1revision", "value": "r2"}
    ]


def test_target_of_a_rollout() -> None:
    """The target follows the Rollout's istio routing."""
    rule = {"name": "dr", "stableSubsetName": "s", "canarySubsetName": "c"}
    service = {"name": "vs", "routes": ["primary"]}
    routing = {"istio": {"virtualService": service, "destinationRule": rule}}
    target = Target.of(routed_rollout(routing, "checkout"))
    assert target == Target(
        NS, "vs", "checkout-stable", "checkout-canary", ("primary",), Subsets("dr", "s", "c")
    )


# -- experiment Services (weighted experiment templates) -----------------------------

EXP_HOST = dataclasses.replace(HOST, experiments=frozenset({"exp-a", "exp-b"}))
EXP_SUBSET = dataclasses.replace(SUBSET, experiments=frozenset({"exp-a", "exp-b"}))
EXTRA = (("exp-a", 5), ("exp-b", 10))


def _by_host(doc: dict[str, Any], index: int = 0) -> dict[str, int]:
    """An HTTP route's destination weights by host (and subset)."""
    out: dict[str, int] = {}
    for d in doc["spec"]["http"][index]["route"]:
        destination = d["destination"]
        key = destination["host"] + (f"/{destination['subset']}" if "subset" in destination else "")
        out[key] = d.get("weight", 0)
    return out


def test_host_mode_adds_experiment_destinations_taken_from_the_stable() -> None:
    """Host mode: each experiment Service gets a destination by host (named like the
    stable's, on the stable's port, or the Service's own port when it lacks that one),
    the canary keeps its weight and the stable gets the rest; the read gives back the
    canary weight and the experiment weights, and a second computation finds nothing."""
    doc = vs(
        {
            **PRIMARY,
            "route": [
                dest("checkout-stable", 80, port=PORT),
                dest("checkout-canary", 20, port=PORT),
            ],
        }
    )
    ops = istio.weight_ops(world(doc), EXP_HOST, 20, EXTRA, {"exp-b": (9090,)})
    after = apply_patch(doc, ops)
    assert _by_host(after) == {
        "checkout-stable": 65,
        "checkout-canary": 20,
        "exp-a": 5,
        "exp-b": 10,
    }
    added = after["spec"]["http"][0]["route"][2:]
    assert [d["destination"]["port"] for d in added] == [PORT, {"number": 9090}]
    state = istio.read_state(world(after), EXP_HOST)
    assert (state.canary_weight, state.extra_weights, state.problem) == (20, EXTRA, None)
    assert istio.weight_ops(world(after), EXP_HOST, 20, EXTRA) == []


def test_experiment_destinations_at_zero_are_removed() -> None:
    """At 0 an experiment destination leaves the route and the stable takes its share
    back; an abort (canary 0 too) leaves the stable alone with everything."""
    doc = vs(
        {
            **PRIMARY,
            "route": [
                dest("checkout-stable", 65),
                dest("exp-a", 5),
                dest("checkout-canary", 20),
                dest("exp-b", 10),
            ],
        }
    )
    gone = (("exp-a", 0), ("exp-b", 0))
    after = apply_patch(doc, istio.weight_ops(world(doc), EXP_HOST, 20, gone))
    assert _by_host(after) == {"checkout-stable": 80, "checkout-canary": 20}
    assert istio.read_state(world(after), EXP_HOST).extra_weights == ()
    aborted = apply_patch(doc, istio.weight_ops(world(doc), EXP_HOST, 0, gone))
    assert _by_host(aborted) == {"checkout-stable": 100, "checkout-canary": 0}


def test_an_unknown_destination_is_still_a_problem() -> None:
    """Only the Rollout's experiment Services are accepted beside stable and canary: a
    route that also sends elsewhere is still a misfit."""
    doc = vs({**PRIMARY, "route": [dest("checkout-stable", 90), dest("exp-c", 10)]})
    assert istio.read_state(world(doc), EXP_HOST).problem is not None


def test_subset_mode_adds_experiment_destinations_by_host() -> None:
    """Subset mode: the experiment Services are destinations by host (no subset), as
    Argo Rollouts adds them, and do not count as traffic away from the stable subsets."""
    doc = vs(
        {**PRIMARY, "route": [dest("checkout", 80, subset="s"), dest("checkout", 20, subset="c")]}
    )
    w = world(doc, destination_rule=dr("r1", "r2"), stable_revision="r1", canary_revision="r2")
    after = apply_patch(doc, istio.weight_ops(w, EXP_SUBSET, 20, EXTRA))
    assert _by_host(after) == {"checkout/s": 65, "checkout/c": 20, "exp-a": 5, "exp-b": 10}
    state = istio.read_state(dataclasses.replace(w, virtual_service=after), EXP_SUBSET)
    assert (state.canary_weight, state.extra_weights, state.problem) == (20, EXTRA, None)


def test_without_extra_the_ops_are_the_single_weight_ones() -> None:
    """No experiment weights: the same operations as before experiments existed."""
    doc = vs(PRIMARY)
    assert istio.weight_ops(world(doc), HOST, 30) == istio.weight_ops(world(doc), EXP_HOST, 30, ())
