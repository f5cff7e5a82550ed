"""Traffic routers: one small protocol, one module per router.

A router reads back what its object currently does (:meth:`Router.observe`) and writes
only the fields Stepwise owns: the stable/canary weights, the destinations of weighted
experiment Services, and its own header routes. Everything else on the object (other
rules, matches, filters, annotations) stays as the team wrote it. ``observe`` reports a
misconfiguration as ``TrafficState.problem`` rather than raising, so the plan can hold
traffic where it is and say why.
"""

from __future__ import annotations

from typing import Protocol

from controller.api.rollout import HeaderMatch, RolloutStatus, RouteMatch
from controller.core.model import TrafficState, Weights


class Router(Protocol):
    """What the reconciler needs of a traffic router for one Rollout."""

    def observe(self) -> TrafficState:
        """The canary weight and header routes the router object holds now."""
        ...

    def set_weight(self, weight: int, extra: Weights = ()) -> None:
        """Send ``weight`` percent to the canary and ``extra`` to experiment Services
        (see :class:`~controller.core.model.SetWeight`); raises if the write does not
        verify."""
        ...

    def set_header_route(self, name: str, match: tuple[HeaderMatch, ...]) -> None:
        """Add or replace a header-matched route to the canary."""
        ...

    def remove_header_route(self, name: str) -> None:
        """Remove a header-matched route (no error if it is absent)."""
        ...

    def set_mirror_route(self, name: str, match: tuple[RouteMatch, ...], percentage: int) -> None:
        """Add or replace a route that copies matching requests to the canary (removed
        by :meth:`remove_header_route`)."""
        ...

    def planned(self, status: RolloutStatus) -> None:
        """The status this pass decided, told before its actions are applied: the
        revisions the stable and canary roles have from now on."""
        ...
