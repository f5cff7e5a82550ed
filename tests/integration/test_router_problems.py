"""The problems every router must meet the same way, written once and run for each router
through the whole controller on the real API server:

- the canary Service is deleted while it carries 20%: the router object sends it nothing
  at once, and the canary is aborted naming the Service (no partial split is left to a
  missing backend);
- the canary Service is missing from the start: the Rollout is Degraded naming it, with a
  Warning event, a new revision is held at step 0, nothing is split, and once the Service
  exists the canary proceeds.

Router-specific behaviour (header routes, subsets, another actor's edits) stays in each
router's own test module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from kubernetes import client

from localcluster.controller import ControllerProcess
from localcluster.traefik import gateway_api_crds
from tests.support.kube import install_crds, wait_for
from tests.support.route_objects import http_route, ingress, ingress_path, istio_object
from tests.support.routing import (
    SCALE_DOWN_AT_ONCE,
    RolloutNamespace,
    blocked_on,
    routed_rollout,
)

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "hack" / "crds"
STEPS = [{"setWeight": 20}, {"pause": {}}]
Obj = dict[str, Any]


def _service_ref(name: str, weight: int | None = None) -> Obj:
    ref: Obj = {"name": name, "port": 80}
    if weight is not None:
        ref["weight"] = weight
    return ref


def _share(stable: int, canary: int) -> int:
    return round(100 * canary / (stable + canary)) if stable + canary else 0


@dataclass(frozen=True)
class Misfit:
    """A set-up a router cannot use, and what its status must say."""

    expected: str
    team_object: Obj | Literal["unchanged"] | None = "unchanged"
    """The team's object instead of the working one (None: there is none)."""
    traffic_routing: Obj | None = None
    """The Rollout's trafficRouting instead of the working one."""


@dataclass(frozen=True)
class Routing:
    """One router: the object it routes with, and how to read its canary share."""

    name: str
    resource: tuple[str, str, str]
    """(group, version, plural) of the object the weight is read from."""
    object_name: str
    """The name of that object (the one Stepwise writes)."""
    crds: Callable[[], list[Path]]
    """The CRDs the router's objects need."""
    traffic_routing: Obj
    team_object: Obj | None
    """The object the team writes before the Rollout (None: Stepwise creates it)."""
    share: Callable[[Obj], int]
    """The canary's percentage in the object as read."""
    misfits: dict[str, Misfit] = field(default_factory=dict)
    """Set-ups the router cannot use, by name."""


def _httproute_share(route: Obj) -> int:
    refs = {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}
    return _share(refs.get("app-stable", 0), refs.get("app-canary", 0))


def _virtual_service_share(vs: Obj) -> int:
    dests = vs["spec"]["http"][-1]["route"]
    if len(dests) == 1:
        return 0 if dests[0]["destination"]["host"] == "app-stable" else 100
    weights = {d["destination"]["host"]: d.get("weight", 0) for d in dests}
    return _share(weights.get("app-stable", 0), weights.get("app-canary", 0))


def _ingress_share(ingress: Obj) -> int:
    annotations = ingress["metadata"].get("annotations") or {}
    if annotations.get("nginx.ingress.kubernetes.io/canary") != "true":
        return 0
    return int(annotations.get("nginx.ingress.kubernetes.io/canary-weight", "0"))


def _split_share(split: Obj) -> int:
    weights = {b["service"]: b["weight"] for b in split["spec"]["backends"]}
    return _share(weights.get("app-stable", 0), weights.get("app-canary", 0))


def _httproute(*rules: Obj) -> Obj:
    return http_route("app", list(rules))


def _ingress(service: str) -> Obj:
    return ingress(
        "web", [{"host": "shop.example.com", "http": {"paths": [ingress_path("/", service)]}}]
    )


MAIN_RULE = {"name": "main", "backendRefs": [_service_ref("app-stable")]}
OTHER_RULE = {"name": "other", "backendRefs": [{"name": "other", "port": 8080}]}
PRIMARY = {"name": "primary", "route": [{"destination": {"host": "app-stable"}}]}

ROUTINGS = [
    Routing(
        "gatewayAPI",
        ("gateway.networking.k8s.io", "v1", "httproutes"),
        "app",
        gateway_api_crds,
        {"gatewayAPI": {"httpRoute": "app"}},
        _httproute(MAIN_RULE, OTHER_RULE),
        _httproute_share,
        {
            "route-absent": Misfit("HTTPRoute app not found in namespace", team_object=None),
            "no-rule-for-stable": Misfit(
                "HTTPRoute app has no rule with a backendRef to the stable Service",
                team_object=_httproute(OTHER_RULE),
            ),
            "unknown-rule-name": Misfit(
                "HTTPRoute app has no rule named typo",
                traffic_routing={"gatewayAPI": {"httpRoute": "app", "ruleNames": ["main", "typo"]}},
            ),
        },
    ),
    Routing(
        "istio",
        ("networking.istio.io", "v1", "virtualservices"),
        "app",
        lambda: [CRDS / "istio-virtualservice.yaml", CRDS / "istio-destinationrule.yaml"],
        {"istio": {"virtualService": {"name": "app"}}},
        istio_object("VirtualService", "app", {"hosts": ["app.example.com"], "http": [PRIMARY]}),
        _virtual_service_share,
        {
            "virtual-service-absent": Misfit("VirtualService app not found in", team_object=None),
            "unknown-route-name": Misfit(
                "VirtualService app has no HTTP route named 'api'",
                traffic_routing={
                    "istio": {"virtualService": {"name": "app", "routes": ["primary", "api"]}}
                },
            ),
        },
    ),
    Routing(
        "nginx",
        ("networking.k8s.io", "v1", "ingresses"),
        "web-app-canary",
        list,
        {"nginx": {"stableIngress": "web"}},
        _ingress("app-stable"),
        _ingress_share,
        {
            "stable-ingress-absent": Misfit("stable Ingress web not found in", team_object=None),
            "no-backend-for-stable": Misfit(
                "stable Ingress web has no backend for the stable Service app-stable",
                team_object=_ingress("static"),
            ),
        },
    ),
    Routing(
        "smi",
        ("split.smi-spec.io", "v1alpha2", "trafficsplits"),
        "app",
        lambda: [CRDS / "smi-trafficsplit.yaml"],
        {"smi": {}},
        None,
        _split_share,
        {
            "split-not-ours": Misfit(
                "TrafficSplit app exists and is not controlled by this Rollout",
                team_object={
                    "apiVersion": "split.smi-spec.io/v1alpha2",
                    "kind": "TrafficSplit",
                    "metadata": {"name": "app"},
                    "spec": {
                        "service": "app-stable",
                        "backends": [
                            {"service": "app-stable", "weight": 100},
                            {"service": "app-canary", "weight": 0},
                        ],
                    },
                },
            ),
            "root-service-absent": Misfit(
                "root Service app-root does not exist",
                traffic_routing={"smi": {"rootService": "app-root"}},
            ),
        },
    ),
]
MISFITS = [(r, name) for r in ROUTINGS for name in r.misfits]


class Routed(RolloutNamespace):
    """One namespace with one router's objects."""

    def __init__(self, api_client: client.ApiClient, namespace: str, routing: Routing) -> None:
        super().__init__(api_client, namespace)
        self.routing = routing

    def setup(self, *, canary_service: bool = True, misfit: Misfit | None = None) -> None:
        """The stable (and canary) Service, the team's routing object, the Rollout; with
        ``misfit``, its object and trafficRouting instead."""
        self.service("app-stable")
        if canary_service:
            self.service("app-canary")
        team = self.routing.team_object
        if misfit is not None and misfit.team_object != "unchanged":
            team = misfit.team_object
        if team is not None:
            group, version, plural = self.routing.resource
            self.custom.create_namespaced_custom_object(group, version, self.ns, plural, team)
        routing = self.routing.traffic_routing
        if misfit is not None and misfit.traffic_routing is not None:
            routing = misfit.traffic_routing
        self.create(routed_rollout(routing, STEPS, **SCALE_DOWN_AT_ONCE))

    def routed(self) -> Obj | None:
        """The object Stepwise writes (None while it does not exist)."""
        return self.find(self.routing.resource, self.routing.object_name)

    def versions(self) -> tuple[str | None, str | None]:
        """The resourceVersions of the team's object and of the one Stepwise writes."""
        team = self.routing.team_object or {"metadata": {"name": self.routing.object_name}}
        found = [self.find(self.routing.resource, team["metadata"]["name"]), self.routed()]
        return (
            found[0]["metadata"]["resourceVersion"] if found[0] else None,
            found[1]["metadata"]["resourceVersion"] if found[1] else None,
        )

    def share(self) -> int:
        """The canary's percentage in the routing object (0 while there is none)."""
        found = self.routed()
        return 0 if found is None else self.routing.share(found)


@pytest.fixture(params=ROUTINGS, ids=[r.name for r in ROUTINGS])
def routed(
    request: pytest.FixtureRequest,
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
) -> Routed:
    return _routed(api_client, namespace, request.param)


def _routed(api_client: client.ApiClient, namespace: str, routing: Routing) -> Routed:
    if crds := routing.crds():
        install_crds(api_client, crds)
    return Routed(api_client, namespace, routing)


def test_a_canary_service_deleted_at_20_percent_gets_weight_zero_at_once(
    routed: Routed, controller: ControllerProcess
) -> None:
    """The canary Service is deleted while it carries 20%: the routing object sends it
    nothing, and the canary is aborted naming the Service."""
    routed.setup()
    wait_for("healthy", lambda: routed.status().get("phase") == "Healthy")
    routed.set_image("registry.local/app:v2")
    wait_for("paused at 20%", lambda: routed.status().get("phase") == "Paused")
    assert routed.share() == 20
    team_version = routed.versions()[0]
    routed.core.delete_namespaced_service("app-canary", routed.ns)
    wait_for("routing object at 0%", lambda: routed.share() == 0)
    wait_for("aborted", lambda: "abort" in routed.status())
    status = routed.status()
    assert status["abort"]["reason"] == "CanaryServiceMissing", status
    assert "app-canary" in status["abort"]["message"]
    assert status["canaryWeight"] == 0
    team = routed.routing.team_object
    if team is not None and team["metadata"]["name"] != routed.routing.object_name:
        assert routed.versions()[0] == team_version  # the team's own object is only read


def test_a_missing_canary_service_blocks_with_a_warning_and_no_split(
    routed: Routed, controller: ControllerProcess
) -> None:
    """No canary Service: Degraded naming it, a Warning event, and the routing object
    never written (all traffic on stable) through a new revision; once the Service
    exists the canary proceeds to its first weight."""
    routed.setup(canary_service=False)
    before = routed.versions()
    blocked_on(routed, "Service app-canary")
    assert routed.versions() == before
    assert routed.share() == 0

    routed.service("app-canary")
    routed.poke("1")
    wait_for("paused at step 1", lambda: routed.status().get("currentStepIndex") == 1)
    assert routed.share() == 20


@pytest.fixture(params=MISFITS, ids=[f"{r.name}-{name}" for r, name in MISFITS])
def misfit(
    request: pytest.FixtureRequest,
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
) -> tuple[Routed, Misfit]:
    routing, name = request.param
    return _routed(api_client, namespace, routing), routing.misfits[name]


def test_misconfiguration_blocks_with_a_clear_status_and_writes_nothing(
    misfit: tuple[Routed, Misfit], controller: ControllerProcess
) -> None:
    """A routing object the router cannot use makes the Rollout Degraded with the reason
    (status, Progressing condition and a Warning event), through a new revision whose pods
    are ready too, and nothing is written."""
    routed, case = misfit
    routed.setup(misfit=case)
    before = routed.versions()
    blocked_on(routed, case.expected, canary_pods=True)
    assert routed.versions() == before  # never written
