"""Which router module serves which ``trafficRouting`` kind.

Each router lives in its own module with one class taking ``(api_client, rollout,
fence)``; the registry imports it by name, so adding a router touches only its module
and this table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from kubernetes import client

from controller.adapters.traffic import Router
from controller.adapters.traffic.reads import Reads
from controller.api.rollout import Rollout
from controller.core.model import TrafficState

Fence = Callable[[], None]

#: trafficRouting kind -> (module under controller.adapters.traffic, class name)
ROUTERS: dict[str, tuple[str, str]] = {
    "gatewayAPI": ("gatewayapi", "GatewayApiRouter"),
    "istio": ("istio", "IstioRouter"),
    "nginx": ("nginx", "NginxRouter"),
    "smi": ("smi", "SmiRouter"),
}


class UnsupportedRouter:
    """Stands in for a router this build does not have: it reports the problem, so the
    plan holds traffic where it is and says why, and it never writes."""

    def __init__(self, kind: str) -> None:
        self.problem = f"traffic router {kind} is not supported by this controller version"

    def observe(self) -> TrafficState:
        """The problem, and no weight."""
        return TrafficState(canary_weight=0, problem=self.problem)

    def set_weight(self, weight: int) -> None:
        """Refuse."""
        raise RuntimeError(self.problem)

    def set_header_route(self, name: str, match: object) -> None:
        """Refuse."""
        raise RuntimeError(self.problem)

    def remove_header_route(self, name: str) -> None:
        """Refuse."""
        raise RuntimeError(self.problem)


def factory(
    api_client: client.ApiClient, fence: Fence, reads: Reads | None = None
) -> Callable[[Rollout], Router | None]:
    """A RouterFactory for the reconciler: None in replica-ratio mode. ``reads`` is how
    routers observe (a GET each time when None)."""

    def router_for(rollout: Rollout) -> Router | None:
        routing = rollout.spec.strategy.canary.traffic_routing
        if routing is None:
            return None
        module_name, class_name = ROUTERS[routing.kind]
        try:
            module = importlib.import_module(f"controller.adapters.traffic.{module_name}")
        except ModuleNotFoundError:
            return UnsupportedRouter(routing.kind)
        router: Router = getattr(module, class_name)(api_client, rollout, fence, reads)
        return router

    return router_for
