"""The one rule that sends all traffic back to stable, and what to do before a Rollout
being deleted may go (its finalizer is removed after).

:func:`to_stable` is the rule: the canary's abort and promotion
(:mod:`controller.core.canary`) and the deletion below both follow it. On deletion the
Rollout's ReplicaSets need nothing: the garbage collector removes them with their owner.
The router's objects are not owned by the Rollout, so a route left split would send users
to pods that are about to vanish: every header route is removed and the canary weight
sent back to 0. Nothing here performs I/O.
"""

from __future__ import annotations

from controller.core.model import Action, RemoveHeaderRoute, SetWeight, TrafficState


def to_stable(traffic: TrafficState) -> tuple[Action, ...]:
    """The actions that send all traffic to the stable Service, in order, given what the
    router does: every header and mirror route removed (in name order), then the canary
    weight set to 0 when the route carries any. Experiment Services leave the split too
    (listed with 0, in the order of ``extra_weights``). A router problem changes nothing:
    leaving traffic on the canary is never the safe choice."""
    actions: list[Action] = [RemoveHeaderRoute(name) for name in sorted(traffic.header_routes)]
    if traffic.canary_weight != 0 or traffic.extra_weights:
        actions.append(SetWeight(0, tuple((name, 0) for name, _ in traffic.extra_weights)))
    return tuple(actions)


def finalize_actions(traffic: TrafficState | None) -> tuple[Action, ...]:
    """The actions that send all traffic back to stable before the Rollout goes, given
    what the router does now (None: no router, nothing to do). A router problem changes
    nothing (the canary Service deleted alongside, say): a route left split after the
    Rollout is gone is the one thing to avoid."""
    return () if traffic is None else to_stable(traffic)
