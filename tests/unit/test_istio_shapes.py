"""The Istio routing shapes Argo Rollouts users write: subset routing without Services,
TLS and TCP routes, mirror routes and ``managedRoutes``; the pure op builders applied to
plain dicts, the API rules, and the plan's mirror-route actions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from controller.adapters.traffic import istio
from controller.adapters.traffic.istio import Subsets, Target, TlsSelector, World
from controller.api import intents
from controller.api.rollout import HeaderMatch, Rollout, RouteMatch, StringMatch
from controller.core.hashing import template_hash
from controller.core.model import RemoveHeaderRoute, SetMirrorRoute
from tests.support.manifests import rollout as rollout_doc
from tests.support.patching import apply_patch
from tests.support.plan import annotate, make, new_image, stable_world
from tests.support.router_unit import dest, routed_rollout, subset
from tests.support.world import T0, settle

NS = "shop"
PORT = {"number": 8080}
BY_SUBSET = Target(NS, "checkout", None, None, subsets=Subsets("checkout", "stable", "canary"))
BY_HOST = Target(NS, "checkout", "checkout-stable", "checkout-canary")


def vs(**spec: Any) -> dict[str, Any]:
    """A VirtualService with this spec (http, tls, tcp lists)."""
    return {"metadata": {"name": "checkout", "resourceVersion": "1"}, "spec": spec}


def subset_rule(stable: str | None = "r1", canary: str | None = "r1") -> dict[str, Any]:
    """Argo's example DestinationRule: host ``checkout``, subsets canary and stable."""

    return {
        "metadata": {"name": "checkout", "resourceVersion": "2"},
        "spec": {
            "host": "checkout",
            "subsets": [subset("canary", canary), subset("stable", stable)],
        },
    }


SUBSET_PRIMARY = {
    "name": "primary",
    "route": [dest("checkout", 100, subset="stable"), dest("checkout", 0, subset="canary")],
}


# -- subset routing without Services ---------------------------------------------------


def subset_rollout(**canary: Any) -> Rollout:
    """Argo's istio-subset-split Rollout: a DestinationRule and no Services."""
    doc = rollout_doc(
        "checkout",
        trafficRouting={
            "istio": {
                "virtualService": {"name": "checkout", "routes": ["primary"]},
                "destinationRule": {
                    "name": "checkout",
                    "canarySubsetName": "canary",
                    "stableSubsetName": "stable",
                },
            }
        },
        **canary,
    )
    doc["metadata"]["namespace"] = NS
    return Rollout.model_validate(doc)


def test_subset_routing_needs_no_services() -> None:
    """With a DestinationRule the Rollout is valid and the target names no Service."""
    target = Target.of(subset_rollout())
    assert (target.stable_service, target.canary_service) == (None, None)
    assert target.subsets == Subsets("checkout", "stable", "canary")
    assert target.routes == ("primary",)


@pytest.mark.parametrize(
    "routing",
    [
        {"istio": {"virtualService": {"name": "vs"}}},
        {"nginx": {"stableIngress": "web"}},
        {"gatewayAPI": {"httpRoute": "web"}},
        {"smi": {}},
    ],
    ids=["istio-by-host", "nginx", "gateway-api", "smi"],
)
def test_routing_by_service_still_needs_both_services(routing: dict[str, Any]) -> None:
    """Only Istio subset routing may leave out stableService and canaryService."""
    with pytest.raises(ValidationError, match="needs both stableService and canaryService"):
        Rollout.model_validate(rollout_doc("web", trafficRouting=routing))


def test_subset_weights_and_labels_without_services() -> None:
    """No Service: the weights move between the subsets and the labels follow the
    revisions the World carries; the canary share reads back."""
    w = World(vs(http=[SUBSET_PRIMARY]), subset_rule("r1", "r1"), "r1", "r2")
    labels = istio.subset_label_ops(w, BY_SUBSET)
    assert labels == [
        {"op": "add", "path": "/spec/subsets/0/labels/stepwise.dev~1revision", "value": "r2"}
    ]
    rule = apply_patch(subset_rule("r1", "r1"), labels)
    after = apply_patch(w.virtual_service or {}, istio.weight_ops(w, BY_SUBSET, 40))
    assert after["spec"]["http"][0]["route"] == [
        dest("checkout", 60, subset="stable"),
        dest("checkout", 40, subset="canary"),
    ]
    assert istio.read_state(World(after, rule, "r1", "r2"), BY_SUBSET).canary_weight == 40
    assert istio.read_state(World(after, rule, "r1", "r2"), BY_SUBSET).problem is None


def test_subset_label_roles() -> None:
    """``roles`` limits the relabelling to the stable or the canary subset."""
    w = World(vs(http=[SUBSET_PRIMARY]), subset_rule("r1", "r1"), "r2", "r3")
    stable_only = istio.subset_label_ops(w, BY_SUBSET, ("stable",))
    canary_only = istio.subset_label_ops(w, BY_SUBSET, ("canary",))
    assert [op["path"] for op in stable_only] == ["/spec/subsets/1/labels/stepwise.dev~1revision"]
    assert [op["path"] for op in canary_only] == ["/spec/subsets/0/labels/stepwise.dev~1revision"]


def test_promotion_pass_relabels_the_stable_subset_to_the_decided_revision() -> None:
    """With the decided status (stable = the new revision), the weight-0 write of the
    promoting pass moves the stable subset first: no request returns to the old one."""
    rule = subset_rule(stable="r1", canary="r2")
    w = World(vs(http=[SUBSET_PRIMARY]), rule, stable_revision="r2", canary_revision="r2")
    assert istio.subset_label_ops(w, BY_SUBSET, ("stable",)) == [
        {"op": "add", "path": "/spec/subsets/1/labels/stepwise.dev~1revision", "value": "r2"}
    ]


# -- TLS and TCP routes ----------------------------------------------------------------


def tls_route(port: int | None, *sni: str, weight: int = 100) -> dict[str, Any]:
    """A TLS route to the stable Service, matching port and SNI hosts."""
    match: dict[str, Any] = {"sniHosts": list(sni)}
    if port is not None:
        match["port"] = port
    return {"match": [match], "route": [dest("checkout-stable", weight)]}


def tls_target(*selectors: TlsSelector, routes: tuple[str, ...] | None = None) -> Target:
    """Host routing with these TLS selectors."""
    return Target(NS, "checkout", "checkout-stable", "checkout-canary", routes, tls=selectors)


@pytest.mark.parametrize(
    ("route", "selector", "selected"),
    [
        (tls_route(3000, "a"), TlsSelector(3000, frozenset({"a"})), True),
        (tls_route(3000, "a", "b"), TlsSelector(3000, frozenset({"b", "a"})), True),
        (tls_route(3000, "a", "b"), TlsSelector(3000, frozenset({"a"})), False),
        (tls_route(3001, "a"), TlsSelector(3000, frozenset({"a"})), False),
        (tls_route(None, "a"), TlsSelector(0, frozenset({"a"})), True),
        (
            {"match": [{"port": 1, "sniHosts": ["a"]}, {"port": 2, "sniHosts": ["a"]}]},
            TlsSelector(1, frozenset({"a"})),
            False,
        ),
    ],
    ids=[
        "port-and-host",
        "hosts-any-order",
        "hosts-must-be-all",
        "other-port",
        "no-port",
        "two-ports",
    ],
)
def test_tls_selection_follows_argos_rule(
    route: dict[str, Any], selector: TlsSelector, selected: bool
) -> None:
    """A TLS route is selected when its matches name one port, the selector's, and
    together exactly its SNI hosts."""
    assert istio._tls_fits(route, selector) is selected


def test_tls_routes_only_get_the_weights() -> None:
    """A VirtualService with only TLS routes (istio-host-only-tls-split): the selected
    route's destinations carry the weight; the other TLS route is left alone."""
    other = tls_route(443, "other", weight=100)
    doc = vs(tls=[other, tls_route(3000, "checkout")])
    target = tls_target(TlsSelector(3000, frozenset({"checkout"})))
    w = World(doc)
    assert istio.read_state(w, target).problem is None
    after = apply_patch(doc, istio.weight_ops(w, target, 10))
    assert after["spec"]["tls"][1]["route"] == [
        dest("checkout-stable", 90),
        dest("checkout-canary", 10),
    ]
    assert after["spec"]["tls"][0] == other
    assert istio.read_state(World(after), target).canary_weight == 10
    back = apply_patch(after, istio.weight_ops(World(after), target, 0))
    assert istio.read_state(World(back), target).canary_weight == 0


def test_http_and_tls_routes_move_together() -> None:
    """istio-host-http-tls-split: the named HTTP route and the TLS route get one weight,
    and a disagreement between them is a problem."""
    http = {"name": "primary", "route": [dest("checkout-stable", 100), dest("checkout-canary", 0)]}
    doc = vs(http=[http], tls=[tls_route(3000, "checkout")])
    target = tls_target(TlsSelector(3000, frozenset({"checkout"})), routes=("primary",))
    after = apply_patch(doc, istio.weight_ops(World(doc), target, 30))
    assert after["spec"]["http"][0]["route"][1]["weight"] == 30
    assert after["spec"]["tls"][0]["route"][1]["weight"] == 30
    assert istio.read_state(World(after), target).canary_weight == 30
    after["spec"]["tls"][0]["route"][1]["weight"] = 10
    after["spec"]["tls"][0]["route"][0]["weight"] = 90
    problem = istio.read_state(World(after), target).problem
    assert problem is not None
    assert "disagree" in problem
    assert "tls[0]=10" in problem


def test_a_tls_selector_without_a_route_is_a_problem() -> None:
    """A selector that selects nothing names the port and the hosts."""
    target = tls_target(TlsSelector(3000, frozenset({"checkout"})))
    problem = istio.read_state(World(vs(tls=[tls_route(443, "checkout")])), target).problem
    assert problem == (
        "VirtualService checkout has no TLS route matching port 3000 and SNI hosts ['checkout']"
    )


def test_tcp_routes_by_port() -> None:
    """TCP routes are selected by port and weighted like the others."""
    tcp = [
        {"match": [{"port": 3000}], "route": [dest("checkout-stable", 100)]},
        {"match": [{"port": 5432}], "route": [dest("db")]},
    ]
    target = Target(NS, "checkout", "checkout-stable", "checkout-canary", tcp=(3000,))
    after = apply_patch(vs(tcp=tcp), istio.weight_ops(World(vs(tcp=tcp)), target, 50))
    assert after["spec"]["tcp"][0]["route"] == [
        dest("checkout-stable", 50),
        dest("checkout-canary", 50),
    ]
    assert after["spec"]["tcp"][1] == tcp[1]
    missing = Target(NS, "checkout", "checkout-stable", "checkout-canary", tcp=(9999,))
    assert istio.read_state(World(vs(tcp=tcp)), missing).problem == (
        "VirtualService checkout has no TCP route matching port 9999"
    )


def test_header_routes_need_a_managed_http_route() -> None:
    """With only TLS routes a header route has nowhere to go: a misfit, not a crash."""
    target = tls_target(TlsSelector(3000, frozenset({"checkout"})))
    with pytest.raises(istio.MisfitError, match="no managed HTTP route"):
        istio.header_route_ops(World(vs(tls=[tls_route(3000, "checkout")])), target, "b", ())


def test_target_of_tls_and_tcp_routes() -> None:
    """The Rollout's tlsRoutes and tcpRoutes become selectors."""
    service = {
        "name": "checkout",
        "tlsRoutes": [{"port": 3000, "sniHosts": ["a", "b"]}],
        "tcpRoutes": [{"port": 3001}],
    }
    target = Target.of(routed_rollout({"istio": {"virtualService": service}}, "checkout"))
    assert target.routes is None
    assert target.tls == (TlsSelector(3000, frozenset({"a", "b"})),)
    assert target.tcp == (3001,)


# -- mirror routes ---------------------------------------------------------------------

HOST_PRIMARY = {
    "name": "primary",
    "route": [
        dest("checkout-stable", 80, port=PORT),
        dest("checkout-canary", 20, port=PORT),
    ],
}
POST_COLOR = (
    RouteMatch(method=StringMatch(exact="POST"), path=StringMatch(prefix="/color")),
    RouteMatch(headers={"X-Debug": StringMatch(regex="on|yes")}),
)


def test_mirror_route_copies_to_the_canary_and_keeps_the_split() -> None:
    """The mirror route matches method, path and headers, serves with the managed
    routes' split and mirrors the percentage to the canary, before the managed route."""
    doc = vs(http=[HOST_PRIMARY])
    after = apply_patch(doc, istio.mirror_route_ops(World(doc), BY_HOST, "m", POST_COLOR, 50))
    mirror, primary = after["spec"]["http"]
    assert primary == HOST_PRIMARY
    assert mirror == {
        "name": "stepwise-m",
        "match": [
            {"method": {"exact": "POST"}, "uri": {"prefix": "/color"}},
            {"headers": {"x-debug": {"regex": "on|yes"}}},
        ],
        "route": [
            dest("checkout-stable", 80, port=PORT),
            dest("checkout-canary", 20, port=PORT),
        ],
        "mirror": {"host": "checkout-canary", "port": PORT},
        "mirrorPercentage": {"value": 50},
    }
    assert istio.read_state(World(after), BY_HOST).header_routes == frozenset({"m"})
    assert istio.mirror_route_ops(World(after), BY_HOST, "m", POST_COLOR, 50) == []


def test_weight_writes_update_the_mirror_routes_split() -> None:
    """A weight write moves the mirror route's split with the managed routes'."""
    doc = vs(http=[HOST_PRIMARY])
    doc = apply_patch(doc, istio.mirror_route_ops(World(doc), BY_HOST, "m", POST_COLOR, 50))
    after = apply_patch(doc, istio.weight_ops(World(doc), BY_HOST, 60))
    assert [d["weight"] for d in after["spec"]["http"][0]["route"]] == [40, 60]
    assert [d["weight"] for d in after["spec"]["http"][1]["route"]] == [40, 60]
    assert istio.read_state(World(after), BY_HOST).canary_weight == 60


def test_mirror_route_is_replaced_and_removed() -> None:
    """A new match replaces the route in place; removal deletes it."""
    doc = vs(http=[HOST_PRIMARY])
    doc = apply_patch(doc, istio.mirror_route_ops(World(doc), BY_HOST, "m", POST_COLOR, 50))
    other = (RouteMatch(path=StringMatch(prefix="/rewrite")),)
    ops = istio.mirror_route_ops(World(doc), BY_HOST, "m", other, 100)
    assert [op["op"] for op in ops] == ["replace"]
    doc = apply_patch(doc, ops)
    assert doc["spec"]["http"][0]["match"] == [{"uri": {"prefix": "/rewrite"}}]
    assert doc["spec"]["http"][0]["mirrorPercentage"] == {"value": 100}
    doc = apply_patch(doc, istio.remove_header_route_ops(doc, "m"))
    assert doc["spec"]["http"] == [HOST_PRIMARY]


def test_mirror_route_in_subset_mode_mirrors_to_the_canary_subset() -> None:
    """By subset the mirror goes to the canary subset of the routed host."""
    doc = vs(http=[SUBSET_PRIMARY])
    w = World(doc, subset_rule(), "r1", "r2")
    route = istio.mirror_route(BY_SUBSET, w, "m", POST_COLOR[:1], 100)
    assert route["mirror"] == {"host": "checkout", "subset": "canary"}
    assert route["route"] == [
        dest("checkout", 100, subset="stable"),
        dest("checkout", 0, subset="canary"),
    ]


def test_managed_routes_order_sets_the_precedence() -> None:
    """With managedRoutes, Stepwise's routes stand in that order before the managed
    route, whatever order the steps add them in."""
    target = Target(
        NS, "checkout", "checkout-stable", "checkout-canary", route_order=("first", "second")
    )
    doc = vs(http=[HOST_PRIMARY])
    doc = apply_patch(doc, istio.mirror_route_ops(World(doc), target, "second", POST_COLOR, 10))
    header = (HeaderMatch.model_validate({"headerName": "x", "headerValue": {"exact": "1"}}),)
    doc = apply_patch(doc, istio.header_route_ops(World(doc), target, "first", header))
    assert [r["name"] for r in doc["spec"]["http"]] == [
        "stepwise-first",
        "stepwise-second",
        "primary",
    ]
    unordered = Target(NS, "checkout", "checkout-stable", "checkout-canary")
    again = vs(http=[HOST_PRIMARY])
    again = apply_patch(
        again, istio.mirror_route_ops(World(again), unordered, "second", POST_COLOR, 10)
    )
    again = apply_patch(again, istio.header_route_ops(World(again), unordered, "first", header))
    assert [r["name"] for r in again["spec"]["http"]] == [
        "stepwise-second",
        "stepwise-first",
        "primary",
    ]


# -- the API ---------------------------------------------------------------------------

MIRROR_STEP = {
    "setMirrorRoute": {
        "name": "mirror-route",
        "percentage": 50,
        "match": [{"method": {"exact": "POST"}, "path": {"prefix": "/color"}}],
    }
}
ISTIO_ROUTING = {"istio": {"virtualService": {"name": "vs", "routes": ["primary"]}}}


def routed(steps: list[dict[str, Any]], routing: dict[str, Any]) -> dict[str, Any]:
    """A routed Rollout document."""
    return rollout_doc(
        "web",
        steps=steps,
        stableService="web-stable",
        canaryService="web-canary",
        trafficRouting=routing,
    )


@pytest.mark.parametrize(
    ("steps", "routing", "error"),
    [
        ([MIRROR_STEP], {**ISTIO_ROUTING, "managedRoutes": [{"name": "mirror-route"}]}, None),
        ([MIRROR_STEP], ISTIO_ROUTING, None),
        (
            [MIRROR_STEP],
            {**ISTIO_ROUTING, "managedRoutes": [{"name": "other"}]},
            "must be listed in trafficRouting.managedRoutes",
        ),
        (
            [{"setHeaderRoute": {"name": "hr", "match": []}}],
            {**ISTIO_ROUTING, "managedRoutes": [{"name": "other"}]},
            "must be listed in trafficRouting.managedRoutes",
        ),
        (
            [MIRROR_STEP],
            {"gatewayAPI": {"httpRoute": "web"}},
            "setMirrorRoute needs a router that supports mirror routes",
        ),
        (
            [{**MIRROR_STEP, "pause": {}}],
            ISTIO_ROUTING,
            "exactly one of setWeight, pause, analysis, setCanaryScale, setHeaderRoute, "
            "setMirrorRoute",
        ),
        (
            [
                {
                    "setMirrorRoute": {
                        "name": "m",
                        "match": [{"method": {"exact": "A", "regex": "B"}}],
                    }
                }
            ],
            ISTIO_ROUTING,
            "exactly one of exact, prefix, regex",
        ),
        (
            [{"setMirrorRoute": {"name": "m", "percentage": 101}}],
            ISTIO_ROUTING,
            "less than or equal to 100",
        ),
        (
            [MIRROR_STEP],
            {**ISTIO_ROUTING, "managedRoutes": [{"name": "a"}, {"name": "a"}]},
            "managedRoutes names must be unique",
        ),
    ],
    ids=[
        "listed",
        "no-managed-routes",
        "mirror-not-listed",
        "header-not-listed",
        "mirror-needs-istio",
        "two-kinds-in-one-step",
        "match-two-kinds",
        "percentage-over-100",
        "duplicate-managed-route",
    ],
)
def test_mirror_and_managed_route_rules(
    steps: list[dict[str, Any]], routing: dict[str, Any], error: str | None
) -> None:
    """setMirrorRoute, managedRoutes and their rules, as the API model checks them."""
    doc = routed(steps, routing)
    if error is None:
        Rollout.model_validate(doc)
        return
    with pytest.raises(ValidationError, match=error):
        Rollout.model_validate(doc)


# -- the plan --------------------------------------------------------------------------


def at(seconds: float) -> dt.datetime:
    """T0 plus ``seconds``."""
    return T0 + dt.timedelta(seconds=seconds)


MIRROR_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {
        "setMirrorRoute": {
            "name": "mirror-route-1",
            "percentage": 100,
            "match": [{"path": {"prefix": "/"}}],
        }
    },
    {"pause": {"duration": "10s"}},
    {
        "setMirrorRoute": {
            "name": "mirror-route-1",
            "match": [{"path": {"prefix": "/rewrite"}}],
        }
    },
    {"pause": {}},
]


def test_plan_sets_replaces_and_removes_mirror_routes() -> None:
    """The plan sends SetMirrorRoute at its step, again when a later step changes the
    same route, and removes it at promotion."""
    routing = {"istio": {"virtualService": {"name": "vs"}}}
    ro, world = stable_world(make(MIRROR_STEPS, routed=True, trafficRouting=routing), routed=True)
    ro = new_image(ro)
    new = template_hash(ro.spec.template)
    ro, _ = settle(ro, world, at(0))
    first = SetMirrorRoute("mirror-route-1", (RouteMatch(path=StringMatch(prefix="/")),), 100)
    assert repr(first) in world.log
    assert world.header_routes["mirror-route-1"] == (first.match, 100)
    ro, _ = settle(ro, world, at(11))
    second = (RouteMatch(path=StringMatch(prefix="/rewrite")),)
    assert world.header_routes["mirror-route-1"] == (second, 100)
    assert repr(SetMirrorRoute("mirror-route-1", second, 100)) in world.log
    ro = annotate(ro, **{intents.PROMOTE: intents.promote_value(new, 4)})
    ro, _ = settle(ro, world, at(12))
    assert world.header_routes == {}
    assert repr(RemoveHeaderRoute("mirror-route-1")) in world.log
    assert ro.status.stable_revision == new
