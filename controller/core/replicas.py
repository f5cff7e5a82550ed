"""Replica math: how many pods each revision should have at a given step.

Two modes:

* **Routed** (a traffic router is configured): the stable ReplicaSet keeps every pod
  until promotion, and the canary gets ``ceil(weight * replicas / 100)`` pods (or what
  ``setCanaryScale`` says). The router, not the pod count, splits traffic.

* **Replica ratio** (no router): traffic follows pods, so the canary takes
  ``ceil(weight * replicas / 100)`` pods and the stable keeps
  ``ceil((100 - weight) * replicas / 100)``: both round up, so the canary's share of
  pods never runs ahead of the step (1 replica at weight 50 is one pod each, 50%, not
  the canary alone), at the cost of up to one pod above ``replicas`` while a step holds,
  when maxSurge allows it. The move is bounded like a Deployment's rolling update: the
  sum of both ReplicaSets' ``replicas`` never exceeds ``replicas + maxSurge``, and Ready
  pods never fall below ``replicas - maxUnavailable``.

Worked example, replica ratio, 10 replicas, maxSurge 25% (3), maxUnavailable 0, moving
from weight 0 to 20 (target canary 2, stable 8):

==== ========== ========== ========= =========================================
pass canary r/R stable r/R next      why
==== ========== ========== ========= =========================================
1    0/0        10/10      2 / 10    surge room 3: canary grows to its target 2
2    0/2        10/10      2 / 10    canary not Ready: stable may not shrink yet
3    2/2        10/10      2 / 8     12 Ready, floor 10: stable sheds 2
==== ========== ========== ========= =========================================

(r = Ready, R = spec.replicas.) The decisions never depend on pods that are not Ready,
so a set that cannot take traffic is never made the only one serving it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.api.rollout import SetCanaryScale
from controller.api.types import resolve_int_or_percent


def canary_replicas(weight: int, total: int, scale: SetCanaryScale | None = None) -> int:
    """Canary pods for a traffic weight, or as ``setCanaryScale`` overrides."""
    if scale is not None and scale.replicas is not None:
        return min(scale.replicas, total) if total else scale.replicas
    percent = weight
    if scale is not None and scale.weight is not None:
        percent = scale.weight
    return math.ceil(percent * total / 100)


def ratio_stable_replicas(weight: int, total: int, canary: int, surge: int) -> int:
    """Stable pods beside ``canary`` canary pods at ``weight`` in replica-ratio mode:
    ``ceil((100 - weight) * total / 100)``, at least ``total - canary`` and at most what
    the surge budget leaves (``total + surge - canary``)."""
    floor = max(0, total - canary)
    wanted = math.ceil((100 - min(max(weight, 0), 100)) * total / 100)
    return max(floor, min(wanted, total + surge - canary))


@dataclass(frozen=True)
class SetSize:
    """Current spec and Ready count of one ReplicaSet."""

    replicas: int
    ready: int


def surge_limits(max_surge: int | str, max_unavailable: int | str, total: int) -> tuple[int, int]:
    """Absolute (surge, unavailable); both zero would deadlock, so surge becomes 1."""
    surge = resolve_int_or_percent(max_surge, total, round_up=True)
    unavailable = resolve_int_or_percent(max_unavailable, total, round_up=False)
    if surge == 0 and unavailable == 0:
        surge = 1
    return surge, unavailable


def rebalance(
    sizes: dict[str, SetSize],
    targets: dict[str, int],
    total: int,
    surge: int,
    unavailable: int,
    *,
    shrink_order: list[str],
    grow_order: list[str],
) -> dict[str, int]:
    """The next replica count of every set on the way to its target, within the surge and
    availability budgets (a set missing from ``targets`` goes to zero).

    Shrinking comes first and spends only pods that are not Ready, plus Ready pods above
    the availability floor ``total - unavailable``; growing then uses the surge room left
    (``total + surge`` minus every set's replicas). One pass goes as far as the budgets
    allow, so a second pass on the same world changes nothing.
    """
    new = {name: size.replicas for name, size in sizes.items()}
    spare = max(0, sum(size.ready for size in sizes.values()) - (total - unavailable))
    for name in shrink_order:
        size = sizes.get(name)
        target = targets.get(name, 0)
        if size is None or target >= new[name]:
            continue
        not_ready = max(0, size.replicas - size.ready)
        shrink = min(new[name] - target, not_ready + spare)
        new[name] -= shrink
        spare -= max(0, shrink - not_ready)
    room = max(0, total + surge - sum(new.values()))
    for name in grow_order:
        current = new.get(name, 0)
        target = targets.get(name, 0)
        if target > current:
            grow = min(target - current, room)
            new[name] = current + grow
            room -= grow
    return new


def step_towards(
    canary: SetSize,
    stable: SetSize,
    canary_target: int,
    stable_target: int,
    total: int,
    surge: int,
    unavailable: int,
) -> tuple[int, int]:
    """:func:`rebalance` for just the canary and the stable set."""
    new = rebalance(
        {"canary": canary, "stable": stable},
        {"canary": canary_target, "stable": stable_target},
        total,
        surge,
        unavailable,
        shrink_order=["stable", "canary"],
        grow_order=["canary", "stable"],
    )
    return new["canary"], new["stable"]
