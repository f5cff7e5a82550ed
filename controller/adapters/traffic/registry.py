"""Which router module serves which ``trafficRouting`` kind.

Each router lives in its own module with one class built on
:class:`~controller.adapters.traffic.base.RouterBase`, taking ``(api_client, rollout,
fence, reads)``; adding a router touches only its module and this table. The runtime
reaches routers only through :func:`factory` (an import-linter contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from kubernetes import client

from controller.adapters.traffic import Router
from controller.adapters.traffic.base import Fence
from controller.adapters.traffic.gatewayapi import GatewayApiRouter
from controller.adapters.traffic.istio import IstioRouter
from controller.adapters.traffic.nginx import NginxRouter
from controller.adapters.traffic.reads import Reads
from controller.adapters.traffic.smi import SmiRouter
from controller.api.rollout import Rollout
from controller.core.model import TrafficState

RouterClass = Callable[[client.ApiClient, Rollout, Fence, Reads | None], Router]

#: trafficRouting kind -> the router class
ROUTERS: Final[dict[str, RouterClass]] = {
    "gatewayAPI": GatewayApiRouter,
    "istio": IstioRouter,
    "nginx": NginxRouter,
    "smi": SmiRouter,
}


class UnsupportedRouter:
    """Stands in for a router this build does not have: it reports the problem, so the
    plan holds traffic where it is and says why, and it never writes."""

    def __init__(self, kind: str) -> None:
        self.problem = f"traffic router {kind} is not supported by this controller version"

    def observe(self) -> TrafficState:
        """The problem, and no weight."""
        return TrafficState(canary_weight=0, problem=self.problem)

    def set_weight(self, weight: int, extra: object = ()) -> None:
        """Refuse."""
        raise RuntimeError(self.problem)

    def set_header_route(self, name: str, match: object) -> None:
        """Refuse."""
        raise RuntimeError(self.problem)

    def remove_header_route(self, name: str) -> None:
        """Refuse."""
        raise RuntimeError(self.problem)

    def set_mirror_route(self, name: str, match: object, percentage: int) -> None:
        """Refuse."""
        raise RuntimeError(self.problem)

    def planned(self, status: object) -> None:
        """Nothing to remember: this router never writes."""


def factory(
    api_client: client.ApiClient, fence: Fence, reads: Reads | None = None
) -> Callable[[Rollout], Router | None]:
    """A RouterFactory for the reconciler: None in replica-ratio mode. ``reads`` is how
    routers observe (a GET each time when None)."""

    def router_for(rollout: Rollout) -> Router | None:
        routing = rollout.spec.strategy.traffic_routing
        if routing is None:
            return None
        router_class = ROUTERS.get(routing.kind)
        if router_class is None:
            return UnsupportedRouter(routing.kind)
        return router_class(api_client, rollout, fence, reads)

    return router_for
