"""The Gateway API router through the whole controller, on the real API server: the exact
HTTPRoute at every step, after abort, promotion and deletion; misconfigured routes that
block the Rollout with a clear status and write nothing; and another actor's edits to an
unrelated rule that survive every write of ours."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from controller.adapters.traffic.gatewayapi import GatewayApiRouter
from controller.api import intents
from controller.api.rollout import HeaderMatch, Rollout
from controller.errors import LeadershipLostError
from localcluster.controller import ControllerProcess
from localcluster.traefik import gateway_api_crds
from tests.support.cluster import Cluster, NamespaceApi
from tests.support.kube import install_crds, wait_for
from tests.support.route_objects import http_route
from tests.support.routing import SCALE_DOWN_AT_ONCE, Editor, routed_rollout

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
BETA_MATCH = [{"headerName": "x-canary", "headerValue": {"exact": "beta"}}]
HEADER_STEPS = [
    {"setWeight": 20},
    {"setHeaderRoute": {"name": "beta", "match": BETA_MATCH}},
    {"pause": {}},
]
WEIGHT_STEPS = [
    {"setWeight": 20},
    {"pause": {"duration": "2s"}},
    {"setWeight": 60},
    {"pause": {}},
]


def backend(name: str, weight: int, port: int = 80) -> dict[str, Any]:
    """A backendRef as the API server stores it."""
    return {"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}


def main_rule(stable: int, canary: int | None = None) -> dict[str, Any]:
    """The rule for /api that the Rollout manages."""
    refs = [backend("app-stable", stable)]
    if canary is not None:
        refs.append(backend("app-canary", canary))
    return {
        "name": "main",
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
        "filters": [REWRITE],
        "backendRefs": refs,
    }


REWRITE = {
    "type": "URLRewrite",
    "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
}


def other_rule(version: int = 0) -> dict[str, Any]:
    """An unrelated rule (another path, another backend, a filter); ``version`` is what an
    editing actor changes."""
    return {
        "name": "other",
        "matches": [{"path": {"type": "PathPrefix", "value": f"/other/v{version}"}}],
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-edit", "value": str(version)}]},
            }
        ],
        "backendRefs": [backend("other", 1, port=8080)],
    }


BETA_RULE = {
    "name": "stepwise-beta",
    "matches": [
        {
            "path": {"type": "PathPrefix", "value": "/api"},
            "headers": [{"name": "x-canary", "type": "Exact", "value": "beta"}],
        }
    ],
    "filters": [REWRITE],  # the canary gets requests as the stable does
    "backendRefs": [backend("app-canary", 1)],
}


class Routes(NamespaceApi):
    """The HTTPRoute and Services of one test namespace."""

    def selector(self, name: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_service(name, self.ns).spec.selector)

    def create(self, rules: list[dict[str, Any]]) -> None:
        """The HTTPRoute ``app`` (rules given without defaults, as a team writes them)."""
        body = http_route("app", rules, hostnames=["app.example.com"])
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def get(self) -> dict[str, Any] | None:
        return self.find((GROUP, VERSION, PLURAL), "app")

    def rules(self) -> list[dict[str, Any]]:
        route = self.get()
        assert route is not None
        return list(route["spec"]["rules"])


def as_written(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule as a team writes it (weights and defaults left out)."""
    out = {k: v for k, v in rule.items() if k != "backendRefs"}
    out["backendRefs"] = [{"name": r["name"], "port": r["port"]} for r in rule["backendRefs"]]
    return out


@pytest.fixture(scope="module")
def gateway_crd(api_client: client.ApiClient) -> None:
    install_crds(api_client, gateway_api_crds())


@pytest.fixture
def env(kube: Cluster, api_client: client.ApiClient, gateway_crd: None) -> tuple[Cluster, Routes]:
    return kube, Routes(api_client, kube.ns)


def gateway_rollout(steps: list[dict[str, Any]], **gateway: Any) -> dict[str, Any]:
    routing = {"gatewayAPI": {"httpRoute": "app", **gateway}}
    return routed_rollout(routing, steps, **SCALE_DOWN_AT_ONCE)


def start(kube: Cluster, routes: Routes, steps: list[dict[str, Any]]) -> tuple[str, str]:
    """Services, route and Rollout; once the first revision is Healthy (with the route
    untouched), roll out v2. Returns (stable, canary) revisions."""
    routes.service("app-stable")
    routes.service("app-canary")
    routes.create([as_written(main_rule(1)), as_written(other_rule())])
    kube.create(gateway_rollout(steps))
    wait_for("healthy", lambda: kube.status("app").get("phase") == "Healthy")
    assert routes.rules() == [main_rule(1), other_rule()]  # weight 0 already: no write
    stable = kube.status("app")["stableRevision"]
    return stable, kube.set_image("app", "registry.local/app:v2")


def at_step(kube: Cluster, index: int) -> None:
    wait_for(f"step {index}", lambda: kube.status("app").get("currentStepIndex") == index)


def assert_all_on_the_new_stable(kube: Cluster, routes: Routes, canary: str) -> None:
    """After promotion: 100/0 with the unrelated rule untouched, the stable Service on the
    promoted revision's pods, and no canary weight left."""
    assert routes.rules() == [main_rule(100, 0), other_rule()]
    assert routes.selector("app-stable")["stepwise.dev/revision"] == canary
    assert kube.status("app")["canaryWeight"] == 0


def _other(route: dict[str, Any]) -> int:
    """Index of the ``other`` rule."""
    return next(i for i, r in enumerate(route["spec"]["rules"]) if r.get("name") == "other")


def other_version(route: dict[str, Any]) -> int:
    """The edit version the ``other`` rule shows."""
    rule = route["spec"]["rules"][_other(route)]
    return int(rule["filters"][0]["requestHeaderModifier"]["set"][0]["value"])


def editor(routes: Routes) -> Editor:
    """Another actor: read-modify-write (PUT with the resourceVersion read) of the
    ``other`` rule, over and over, checking each read still shows its last edit."""

    def read() -> dict[str, Any]:
        route = routes.get()
        assert route is not None
        return route

    def edit(route: dict[str, Any], version: int) -> None:
        route["spec"]["rules"][_other(route)] = other_rule(version)

    def replace(route: dict[str, Any]) -> object:
        return routes.custom.replace_namespaced_custom_object(
            GROUP, VERSION, routes.ns, PLURAL, "app", route
        )

    return Editor(read, replace, edit, other_version, interval=0.001)


def test_header_route_and_abort_keep_another_actors_edits(
    env: tuple[Cluster, Routes], controller: ControllerProcess
) -> None:
    """setWeight 20 adds the canary backend at 80/20 and setHeaderRoute a canary-only rule
    before it; abort restores 100/0 and removes the header rule; an unrelated rule edited
    throughout by another actor keeps every edit (none is ever undone by our writes)."""
    kube, routes = env
    _, canary = start(kube, routes, HEADER_STEPS)
    with editor(routes) as other:
        at_step(kube, 2)
        route = routes.get()
        assert route is not None
        assert route["spec"]["rules"] == [
            BETA_RULE,
            main_rule(80, 20),
            other_rule(other_version(route)),
        ]
        assert kube.status("app")["canaryWeight"] == 20
        kube.annotate("app", **{intents.ABORT: canary})
        wait_for(
            "aborted, traffic on stable",
            lambda: (s := kube.status("app")).get("abort") is not None and s["canaryWeight"] == 0,
        )
        done = other.last
        wait_for("an edit after our last write", lambda: other.last > done)
    assert routes.rules() == [main_rule(100, 0), other_rule(other.last)]
    status = kube.status("app")
    assert status["phase"] == "Degraded"
    assert "all traffic is on stable" in status["message"]


def test_weights_and_promotion(env: tuple[Cluster, Routes], controller: ControllerProcess) -> None:
    """80/20 at the first step, 40/60 at the second; promotion points the stable Service
    at the new revision and sends it everything (100/0)."""
    kube, routes = env
    _, canary = start(kube, routes, WEIGHT_STEPS)
    at_step(kube, 1)
    assert routes.rules() == [main_rule(80, 20), other_rule()]
    at_step(kube, 3)
    assert routes.rules() == [main_rule(40, 60), other_rule()]
    assert kube.status("app")["canaryWeight"] == 60
    kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 3)})
    wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary)
    assert_all_on_the_new_stable(kube, routes, canary)


def test_promotion_removes_the_header_rule(
    env: tuple[Cluster, Routes], controller: ControllerProcess
) -> None:
    """Promotion at the pause after setHeaderRoute removes the header rule and sends
    100/0, the unrelated rule untouched."""
    kube, routes = env
    _, canary = start(kube, routes, HEADER_STEPS)
    at_step(kube, 2)
    assert routes.rules() == [BETA_RULE, main_rule(80, 20), other_rule()]
    kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 2)})
    wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary)
    wait_for("header rule gone", lambda: len(routes.rules()) == 2)
    assert_all_on_the_new_stable(kube, routes, canary)


def test_deletion_mid_rollout_restores_the_route(
    env: tuple[Cluster, Routes], controller: ControllerProcess
) -> None:
    """Deleting the Rollout at 80/20 with a header route: the finalizer sends all traffic
    back to stable and removes the header rule before the Rollout goes."""
    kube, routes = env
    start(kube, routes, HEADER_STEPS)
    at_step(kube, 2)
    assert routes.rules() == [BETA_RULE, main_rule(80, 20), other_rule()]
    kube.custom.delete_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "rollouts", "app"
    )
    wait_for("rollout gone", lambda: not _exists(kube))
    assert routes.rules() == [main_rule(100, 0), other_rule()]
    assert any(
        e.get("event") == "traffic restored to stable before deletion" for e in controller.logs()
    )


def _exists(kube: Cluster) -> bool:
    try:
        kube.get("app")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _version(route: dict[str, Any] | None) -> str | None:
    return None if route is None else str(route["metadata"]["resourceVersion"])


def test_the_api_server_enforces_the_backend_weight_limits(env: tuple[Cluster, Routes]) -> None:
    """The HTTPRoute CRD stores a backendRef weight of 1,000,000 and refuses 1,000,001
    (and -1) with a 422 naming the field, on create and on a JSON Patch alike."""
    _, routes = env
    routes.create(
        [{"name": "main", "backendRefs": [{"name": "app-stable", "port": 80, "weight": 1_000_000}]}]
    )
    assert routes.rules() == [{"name": "main", **_defaults(1_000_000)}]
    before = _version(routes.get())
    for bad, limit in (
        (1_000_001, "less than or equal to 1000000"),
        (-1, "greater than or equal to 0"),
    ):
        with pytest.raises(ApiException) as err:
            routes.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                routes.ns,
                PLURAL,
                "app",
                [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": bad}],
                _content_type="application/json-patch+json",
            )
        assert err.value.status == 422
        assert "spec.rules[0].backendRefs[0].weight" in str(err.value.body)
        assert limit in str(err.value.body)
    assert _version(routes.get()) == before
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": "too-heavy"},
        "spec": {
            "rules": [{"backendRefs": [{"name": "app-stable", "port": 80, "weight": 1_000_001}]}]
        },
    }
    with pytest.raises(ApiException) as err:
        routes.custom.create_namespaced_custom_object(GROUP, VERSION, routes.ns, PLURAL, body)
    assert err.value.status == 422
    assert "less than or equal to 1000000" in str(err.value.body)


def _defaults(weight: int) -> dict[str, Any]:
    """A rule with one stable backendRef of ``weight`` and upstream's defaults."""
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [backend("app-stable", weight)],
    }


# -- the router alone, with another actor's write injected at the fence -----------------


def router_for(routes: Routes, fence: Any) -> GatewayApiRouter:
    doc = gateway_rollout(HEADER_STEPS)
    doc["metadata"].update(namespace=routes.ns, uid="1f0c-uid")
    return GatewayApiRouter(routes.custom.api_client, Rollout.model_validate(doc), fence)


def test_a_write_racing_another_actor_is_retried_and_loses_nothing(
    env: tuple[Cluster, Routes],
) -> None:
    """Another actor writes between our read and our patch (at the fence): the
    resourceVersion test fails, we read again and patch again; both writes hold."""
    _, routes = env
    routes.service("app-stable")
    routes.service("app-canary")
    routes.create([as_written(main_rule(1)), as_written(other_rule())])
    fenced: list[int] = []

    def fence() -> None:
        fenced.append(len(fenced))
        if len(fenced) == 1:  # the other actor's edit lands just before our first patch
            route = routes.get()
            assert route is not None
            route["spec"]["rules"][1] = other_rule(7)
            routes.custom.replace_namespaced_custom_object(
                GROUP, VERSION, routes.ns, PLURAL, "app", route
            )

    router = router_for(routes, fence)
    router.set_weight(30)
    assert len(fenced) == 2
    assert routes.rules() == [main_rule(70, 30), other_rule(7)]
    match = (HeaderMatch.model_validate(BETA_MATCH[0]),)
    router.set_header_route("beta", match)
    router.set_header_route("beta", match)  # already there: no write
    assert len(fenced) == 3
    assert router.observe().header_routes == frozenset({"beta"})
    router.remove_header_route("beta")
    router.remove_header_route("beta")  # already gone: no write
    assert len(fenced) == 4
    assert routes.rules() == [main_rule(70, 30), other_rule(7)]


def test_no_write_once_leadership_is_lost(env: tuple[Cluster, Routes]) -> None:
    """A fence that raises stops the write before it reaches the API server."""
    _, routes = env
    routes.service("app-stable")
    routes.service("app-canary")
    routes.create([as_written(main_rule(1))])
    before = routes.get()

    def fence() -> None:
        raise LeadershipLostError("lease lost")

    with pytest.raises(LeadershipLostError):
        router_for(routes, fence).set_weight(50)
    assert _version(routes.get()) == _version(before)


# -- weighted experiment templates -----------------------------------------------------

EXPERIMENT_STEPS = [
    {"setWeight": 20},
    {
        "experiment": {
            "duration": "6s",
            "templates": [
                {"name": "baseline", "specRef": "stable", "weight": 5},
                {
                    "name": "canary",
                    "specRef": "canary",
                    "weight": 10,
                    "service": {"name": "exp-canary"},
                },
            ],
        }
    },
    {"pause": {}},
]


def _main_weights(route: dict[str, Any]) -> dict[str, int]:
    """The ``main`` rule's backendRef weights by Service name."""
    rule = next(r for r in route["spec"]["rules"] if r.get("name") == "main")
    return {str(r["name"]): int(r.get("weight", 1)) for r in rule["backendRefs"]}


def replay(list_call: Any, *args: Any, since: str) -> list[tuple[str, Any]]:
    """Every watch event of a list since resourceVersion ``since`` (the API server replays
    them from its history), as (type, object)."""
    events = watch.Watch().stream(  # type: ignore[no-untyped-call]
        list_call, *args, resource_version=since, timeout_seconds=2
    )
    return [(event["type"], event["object"]) for event in events]


def test_a_weighted_experiment_splits_the_route_and_leaves_it_before_its_services_go(
    env: tuple[Cluster, Routes], controller: ControllerProcess
) -> None:
    """While the experiment runs the main rule carries stable 65, canary 20 (its step
    weight) and the two experiment Services 5 and 10 (backendRefs the API server
    stored); when it ends the experiment backendRefs leave the rule (stable back to 80)
    in a write the API server committed before either experiment Service was deleted
    (resourceVersions of one etcd are ordered across kinds), and the rule is left as
    before. The unrelated rule is never touched."""
    kube, routes = env
    start(kube, routes, EXPERIMENT_STEPS)
    route = wait_for(
        "experiment backendRefs in the route",
        lambda: (r := routes.get()) is not None and len(_main_weights(r)) == 4 and r,
        60,
    )
    # The pass writes the route before the status that records the phase it decided.
    experiment = wait_for(
        "experiment Running in the status",
        lambda: (e := kube.status("app")["experiment"])["phase"] == "Running" and e,
        10,
    )
    sets = {t["name"]: t["replicaSet"] for t in experiment["templates"]}
    baseline = sets["baseline"][:63].rstrip("-")
    assert _main_weights(route) == {
        "app-stable": 65,
        "app-canary": 20,
        baseline: 5,
        "exp-canary": 10,
    }
    refs = next(r for r in route["spec"]["rules"] if r["name"] == "main")["backendRefs"]
    assert refs[2:] == [backend(baseline, 5), backend("exp-canary", 10)]
    assert route["spec"]["rules"][1] == other_rule()
    assert kube.status("app")["canaryWeight"] == 20
    for name in (baseline, "exp-canary"):  # both Services exist while they get traffic
        kube.core.read_namespaced_service(name, kube.ns)
    since = _version(route)
    assert since is not None

    wait_for(
        "at the pause after the experiment",
        lambda: kube.status("app").get("currentStepIndex") == 2,
        60,
    )
    wait_for(
        "experiment Services deleted",
        lambda: (
            not kube.core.list_namespaced_service(
                kube.ns, label_selector="stepwise.dev/experiment"
            ).items
        ),
        30,
    )
    assert routes.rules() == [main_rule(80, 20), other_rule()]
    assert kube.status("app")["experiment"]["phase"] == "Successful"

    deleted = {
        obj.metadata.name: int(obj.metadata.resource_version)
        for kind, obj in replay(kube.core.list_namespaced_service, kube.ns, since=since)
        if kind == "DELETED"
    }
    assert {baseline, "exp-canary"} <= set(deleted), deleted
    writes = [
        (int(obj["metadata"]["resourceVersion"]), set(_main_weights(obj)))
        for kind, obj in replay(
            routes.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            kube.ns,
            PLURAL,
            since=since,
        )
        if kind == "MODIFIED"
    ]
    for name in (baseline, "exp-canary"):
        routed = [version for version, names in writes if name in names]
        left = [version for version, names in writes if name not in names]
        assert all(version < deleted[name] for version in routed), (name, writes, deleted)
        assert left, writes
        assert min(left) < deleted[name], (name, writes, deleted)
