"""What every router does the same way (:mod:`controller.adapters.traffic.base`): the
weight read from stable and canary backends, and what ``observe`` reports when it cannot
read its objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from controller.adapters.traffic import gatewayapi, istio, nginx, smi
from controller.adapters.traffic.base import RouterBase
from controller.adapters.traffic.reads import Kind, Obj
from controller.errors import ApiError, NotFoundError
from tests.support.router_unit import (
    GATEWAY,
    TRAFFIC_SPLIT,
    assert_reads,
    ref,
    route,
    routed_rollout,
    rule,
    split,
)

Backends = list[tuple[str, int]]


def http_route(backends: Backends) -> dict[str, Any]:
    """An HTTPRoute whose one rule has these backendRefs."""
    return route(rule(*(ref(name, weight) for name, weight in backends), name="main"))


@pytest.mark.parametrize(
    ("read", "build", "target"),
    [
        pytest.param(gatewayapi.read_weight, http_route, GATEWAY, id="gatewayAPI"),
        pytest.param(smi.read_weight, lambda backends: split(*backends), TRAFFIC_SPLIT, id="smi"),
    ],
)
@pytest.mark.parametrize(
    ("backends", "weight", "problem"),
    [
        pytest.param([("app-stable", 80), ("app-canary", 20)], 20, None, id="80-20"),
        pytest.param([("app-stable", 1)], 0, None, id="lone-stable-is-0"),
        pytest.param([("app-stable", 100)], 0, None, id="no-canary-backend"),
        pytest.param(
            [("app-stable", 1000), ("app-canary", 1000), ("mirror", 5)], 50, None,
            id="relative-to-stable-and-canary",
        ),
        pytest.param(
            [("app-stable", 1), ("app-canary", 3), ("x", 5)], 75, None,
            id="relative-small-weights",
        ),
        pytest.param(
            [("app-stable", 0), ("app-canary", 0)], 0, "weight 0 to both", id="both-zero"
        ),
    ],
)  # fmt: skip
def test_read_weight_of_stable_and_canary(
    read: Callable[[dict[str, Any], Any], tuple[int, str | None]],
    build: Callable[[Backends], dict[str, Any]],
    target: object,
    backends: Backends,
    weight: int,
    problem: str | None,
) -> None:
    """A router that splits between backends reads the canary's share of the traffic the
    stable and canary (and experiment) backends get; backends to other Services do not
    count, and no share at all is a problem."""
    assert_reads(read(build(backends), target), weight, problem)


# -- observe when the objects cannot be read -------------------------------------------


class FailingReads:
    """Reads that fail with ``error``."""

    def __init__(self, error: ApiError) -> None:
        self.error = error

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        """Fail."""
        raise self.error

    def service(self, namespace: str, name: str) -> client.V1Service:
        """Fail."""
        raise self.error

    def wrote(self, kind: Kind, obj: Obj) -> None:
        """Nothing to remember."""


ROUTERS = [
    pytest.param(
        gatewayapi.GatewayApiRouter,
        {"gatewayAPI": {"httpRoute": "app"}},
        "HTTPRoute app",
        "the httproutes.gateway.networking.k8s.io/v1 API is not served; install its CRDs "
        "(reading app: 404 page not found)",
        id="gatewayAPI",
    ),
    pytest.param(
        istio.IstioRouter,
        {"istio": {"virtualService": {"name": "app"}}},
        "the Istio routing objects",
        "the virtualservices.networking.istio.io/v1 API is not served; install its CRDs "
        "(reading app: 404 page not found)",
        id="istio",
    ),
    pytest.param(
        nginx.NginxRouter,
        {"nginx": {"stableIngress": "web"}},
        "the Ingresses",
        "the ingresses.networking.k8s.io/v1 API is not served; install its CRDs "
        "(reading web: 404 page not found)",
        id="nginx",
    ),
    pytest.param(
        smi.SmiRouter,
        {"smi": {}},
        "TrafficSplit app",
        "the trafficsplits.split.smi-spec.io/v1alpha2 API is not served; install its CRDs "
        "(reading app: 404 page not found)",
        id="smi",
    ),
]


NOT_SERVED = NotFoundError("404 page not found", reason="")
"""A 404 for the kind rather than the object: its CRDs are not installed."""


@pytest.mark.parametrize(("router", "routing", "objects", "not_served"), ROUTERS)
@pytest.mark.parametrize(
    "error", [ApiError("connection reset"), NOT_SERVED], ids=["read-error", "not-served"]
)
def test_observe_keeps_the_recorded_weight_when_it_cannot_read(
    router: type[RouterBase[Any]],
    routing: dict[str, Any],
    objects: str,
    not_served: str,
    error: ApiError,
) -> None:
    """A read that fails reports the weight the Rollout last recorded (the plan holds
    traffic where it is), not 0, and names what could not be read; when the kind is not
    served, which API it is and to install its CRDs."""
    rollout = routed_rollout(routing, canaryWeight=30)
    with client.ApiClient() as api_client:
        state = router(api_client, rollout, lambda: None, FailingReads(error)).observe()
    expected = not_served if error is NOT_SERVED else f"cannot read {objects}: connection reset"
    assert (state.canary_weight, state.problem) == (30, expected)
