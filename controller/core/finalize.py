"""What to do before a Rollout being deleted may go (its finalizer is removed after).

Its ReplicaSets need nothing: the garbage collector removes them with their owner. The
router's objects are not owned by the Rollout, so a route left split would send users
to pods that are about to vanish: every header route is removed and the canary weight
sent back to 0. Nothing here performs I/O.
"""

from __future__ import annotations

from controller.core.model import Action, RemoveHeaderRoute, SetWeight, TrafficState


def finalize_actions(traffic: TrafficState | None) -> tuple[Action, ...]:
    """The actions that send all traffic back to stable, in order, given what the router
    does now (None: no router, nothing to do). A router problem changes nothing (the
    canary Service deleted alongside, say): a route left split after the Rollout is gone
    is the one thing to avoid."""
    if traffic is None:
        return ()
    actions: list[Action] = [RemoveHeaderRoute(name) for name in sorted(traffic.header_routes)]
    if traffic.canary_weight != 0 or traffic.extra_weights:
        # Experiment Services leave the split too: they go with the Rollout.
        actions.append(SetWeight(0, tuple((name, 0) for name, _ in traffic.extra_weights)))
    return tuple(actions)
