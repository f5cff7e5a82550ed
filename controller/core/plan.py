"""The decision engine: one pure decision from (Rollout, observed world, now) to a Plan.

``plan`` is called on every reconcile. It never remembers anything between calls:
everything it needs to resume lives in the Rollout's status (step index, pause start,
abort, analysis tallies, scheduled scale-downs). It compares what should be with what
is and returns only the actions that close the gap, so calling it twice on the same
world returns no new actions (idempotence), and a crashed controller resumes exactly
where the status says.

The order of one decision:

1. **Strategy.** The desired revision is the hash of ``spec.template``. The Rollout's
   strategy decides what to do about it, on a :class:`~controller.core.passes.Pass`
   that projects the world as this pass's actions will leave it: the canary
   (:mod:`controller.core.canary`: revision, abort, steps, promotion, and what
   ``spec.paused`` holds) or blue-green (:mod:`controller.core.bluegreen`: preview,
   analyses, the switch of the active Service, and the way back).
2. **Scheduled scale-downs.** Revisions kept up for a delay after traffic left them
   (``scaleDownDelaySeconds``, ``abortScaleDownDelaySeconds``) go to zero once the delay
   has passed and the data plane has applied the last route change, even while
   ``spec.paused``.
3. **History.** Scaled-down ReplicaSets beyond ``revisionHistoryLimit`` are deleted,
   oldest first.
4. **Plan.** The status (phase, message, wait reason, conditions), the events, when to
   look again, and the actions with one scale per ReplicaSet
   (:func:`~controller.core.passes.finish`).
5. **Record.** The delivery record in ``status.releases`` takes in what the pass decided
   (:mod:`controller.core.record`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace

from controller.api.rollout import Rollout
from controller.core.bluegreen import plan_blue_green
from controller.core.canary import plan_canary
from controller.core.hashing import template_hash
from controller.core.model import Observed, Plan
from controller.core.passes import Pass, finish, history, scheduled_scale_downs, traffic_left
from controller.core.record import advance


def plan(rollout: Rollout, observed: Observed, now: dt.datetime) -> Plan:
    """Decide what to do about ``rollout`` given ``observed`` at ``now``."""
    p = Pass(rollout, observed, now, rollout.status)
    desired = template_hash(rollout.spec.pod_template)
    _strategy(rollout)(p, desired)
    scheduled_scale_downs(p)
    history(p)
    result = finish(p)
    releases = advance(rollout.status, result.status, rollout, now, lambda r: traffic_left(p, r))
    if releases == result.status.releases:
        return result
    return replace(result, status=result.status.model_copy(update={"releases": releases}))


def _strategy(rollout: Rollout) -> Callable[[Pass, str], None]:
    """What decides the strategy's part of a pass toward the desired revision: one
    entry point per strategy module, chosen here and only here."""
    if rollout.spec.strategy.blue_green is not None:
        return plan_blue_green
    return plan_canary
