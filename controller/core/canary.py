"""The canary strategy: steps of traffic and replicas, judged, then promoted or rolled back.

:func:`plan_canary` is what :func:`controller.core.plan.plan` runs for a Rollout with a
canary strategy, on the :class:`~controller.core.passes.Pass` it built; the shared parts
(scaling, Service pins, aborts, analysis runs, the deadline) are in
:mod:`controller.core.passes`.

The order of decisions:

1. **Revision.** The desired revision is the hash of ``spec.template``. With no stable
   revision yet, it becomes stable directly. When it equals the stable revision there
   is no canary (and re-applying the old template rolls back at once, canary-free).
   A different revision is the canary; a canary that differs from the one in status
   restarts at step 0 (a newer revision mid-rollout supersedes the old canary).
2. **Abort.** A failed analysis, a manual abort or the progress deadline aborts the
   canary. Aborting restores stable capacity first, then (once stable is Ready) sends
   all traffic to stable, then scales the canary down after
   ``abortScaleDownDelaySeconds``. A retry intent restarts the revision from step 0.
3. **Steps.** From ``currentStepIndex`` on, each step either completes (and the next is
   tried in the same pass) or says what it waits for: ``setWeight`` scales the canary
   first and moves traffic only once enough canary pods are Ready; ``pause`` waits for
   its duration (from the persisted ``pauseStartTime``) or for a promote intent;
   ``analysis`` waits for its run's verdict.
4. **Promotion.** After the last step, and only if every analysis of the revision
   succeeded (or was Inconclusive and a promote intent released it, or ``promote-full``
   was asked for explicitly), the canary is scaled to full size, the stable Service is
   pointed at it, traffic returns to the stable Service (now the new pods) and the old
   ReplicaSet is scaled down after ``scaleDownDelaySeconds``.

``spec.paused`` holds a canary exactly where it is: no ReplicaSet is scaled, no weight,
header route or Service selector changes, no step advances and nothing is promoted
(a ``promote`` or ``promote-full`` intent waits and acts on resume, if it still names
the state), and paused time does not count toward ``progressDeadlineSeconds``. A running
analysis goes on measuring. What takes traffic *away* from a canary is never held,
because pausing must not keep a bad release in front of users:

- an abort (a manual abort intent, or an analysis that fails while paused) runs to
  the end: stable at full size, all traffic to stable, the canary scaled down;
- a newer template supersedes the canary: with a traffic router its weight returns to
  stable at once (by replica ratio traffic follows pods, so the old canary keeps its pods
  and share until resume); the new revision gets no pods until resume (it waits at
  step 0);
- re-applying the stable template rolls the canary back (a Rollout with no canary is not
  held at all: there is nothing in flight);
- scale-downs already scheduled (old pods kept for a delay after traffic left them)
  still happen (:func:`controller.core.passes.scheduled_scale_downs`).

A retry intent while paused clears the abort and waits at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.api import intents as intents_mod
from controller.api.base import parse_duration
from controller.api.rollout import (
    AnalysisRunStatus,
    SetCanaryScale,
    Step,
)
from controller.core import analysis as an
from controller.core import experiment, passes
from controller.core.finalize import to_stable
from controller.core.model import (
    RemoveHeaderRoute,
    SetHeaderRoute,
    SetMirrorRoute,
    SetWeight,
    TrafficState,
)
from controller.core.passes import Pass
from controller.core.replicas import (
    SetSize,
    canary_replicas,
    ratio_stable_replicas,
    rebalance,
    surge_limits,
)


def plan_canary(p: Pass, desired: str) -> None:
    """Decide the canary strategy's part of the pass ``p`` toward ``desired`` (the hash of
    ``spec.template``): the first revision becomes stable, the stable one is kept steady,
    any other is the canary."""
    stable = p.status.stable_revision
    if stable is None:
        _initialize(p, desired)
    elif desired == stable:
        _steady(p, desired)
    else:
        _canary(p, desired, stable)
    passes.role_metadata(
        p, ("stable", p.canary.stable_metadata), ("canary", p.canary.canary_metadata)
    )
    experiment.reconcile_sets(p)


# -- no canary -------------------------------------------------------------------------


def _initialize(p: Pass, desired: str) -> None:
    """The first revision of a Rollout goes straight to stable: nothing to compare with."""
    if p.status.stable_revision != desired:
        p.event("Initialized", f"revision {desired} is the first; it becomes stable directly")
    p.set(
        stable_revision=desired,
        canary_revision=desired,
        current_step_index=len(p.canary.steps),
        abort=None,
        pause_start_time=None,
        step_start_time=None,
        analysis_runs=[],
    )
    _steady(p, desired)


def _steady(p: Pass, stable: str) -> None:
    """No canary: stable at full size, all traffic to it, every other revision drained."""
    passes.settle(p, stable, step=len(p.canary.steps), reason="CanaryAbandoned", noun="canary")
    _pin_services(p, stable=stable, canary=stable)
    restored = _restore_traffic(p)
    if p.routed:
        passes.scale(p, stable, p.total)
        if restored:
            passes.drain_others(p, keep={stable})
    else:
        _rebalance(p, {stable: p.total}, grow_order=[stable])
    if not restored:
        p.wait("Progressing", "moving traffic back to the stable revision", "TrafficShifting")
        return
    if not p.has_ready(stable, f"stable revision {stable}:"):
        return
    if passes.others_have_pods(p, {stable}):
        later = [s.at for s in p.status.scale_down]
        p.wait(
            "Healthy" if later else "Progressing",
            f"revision {stable} is stable; old revisions scale down"
            + (f" at {min(later).isoformat(timespec='seconds')}" if later else ""),
            None,
        )
    else:
        p.wait("Healthy", f"revision {stable} is stable with {p.ready(stable)} Ready pods", None)


# -- the canary ------------------------------------------------------------------------


def _canary(p: Pass, desired: str, stable: str) -> None:
    intents = intents_mod.parse(p.rollout.metadata.annotations)
    paused = p.rollout.spec.paused
    if p.status.canary_revision != desired:
        _start_canary(p, desired)

    abort = p.status.abort
    if abort is not None and abort.revision == desired and intents.retries(desired, abort.attempt):
        p.event("Retried", f"retrying canary {desired} from step 0 (after abort {abort.attempt})")
        p.set(
            abort=None,
            current_step_index=0,
            analysis_runs=[],
            pause_start_time=None,
            step_start_time=p.now,
        )
    if not p.aborted() and intents.abort == desired:
        passes.abort(p, "Manual", f"aborted by request ({intents_mod.ABORT}={desired})")
    service = p.canary.canary_service
    if p.routed and not p.aborted() and p.weight > 0 and service in p.observed.missing_services:
        # Requests routed to a Service that is gone fail: take the traffic back at once.
        passes.abort(
            p,
            "CanaryServiceMissing",
            f"canary Service {service} disappeared while it carried {p.weight}% of the "
            "traffic; all traffic goes back to stable (recreate it, then retry)",
        )
    if p.routed and p.weight == 0 and not (paused and not p.aborted()):
        # Only the canary Service reaches a canary: the current one, or a superseded one
        # it still selects until the data plane has moved off it (_may_repin_canary).
        selected = p.pins.get(p.canary.canary_service or "")
        passes.drain_others(p, keep={stable, desired} | ({selected} if selected else set()))

    if not p.aborted():
        _advance(p, desired, stable, intents)
    if p.aborted():
        _aborted(p, desired, stable)
        if p.routed and p.weight == 0:
            # Aborted in this pass while paused (a failed analysis): drain what was held.
            passes.drain_others(p, keep={stable, desired})


def _start_canary(p: Pass, desired: str) -> None:
    previous = p.status.canary_revision
    superseded = previous is not None and previous not in (desired, p.status.stable_revision)
    p.event(
        "NewRevision",
        f"canary {desired} started" + (f"; it supersedes canary {previous}" if superseded else ""),
    )
    if p.routed and superseded:
        # The canary Service is about to select the new revision: take its traffic
        # (and header routes) away first, so unready new pods never receive requests.
        _restore_traffic(p)
    passes.start_revision(p, desired)


def _aborted(p: Pass, canary: str, stable: str) -> None:
    """Aborted: stable back at full capacity, then traffic to stable, then the canary down."""
    abort = p.status.abort
    assert abort is not None
    stable_ready = p.ready(stable)
    degraded = f"canary {canary} aborted ({abort.reason}): {abort.message}"
    if p.routed:
        passes.scale(p, stable, p.total)
        if stable_ready < p.total:
            traffic = p.observed.traffic
            if p.canary.dynamic_stable_scale and traffic is not None and not traffic.problem:
                # The stable was scaled to its share: give it back what its Ready pods
                # can carry now, and the rest as they come.
                _route(p, min(p.weight, 100 - 100 * stable_ready // p.total))
            p.wait(
                "Degraded",
                f"{degraded}; waiting for {p.total} stable pods before moving all traffic",
                "PodsNotReady",
            )
            return
        restored = _restore_traffic(p)
        if restored:
            if p.sizes.get(canary, 0) > 0:  # once at 0, nothing is left to schedule
                passes.schedule_scale_down(p, canary, p.canary.abort_scale_down_delay_seconds)
            p.set(canary_weight=0)
        p.wait("Degraded", f"{degraded}; all traffic is on stable {stable}", None)
        return
    # Replica ratio: traffic follows pods, so scaling the canary down is the shift. An
    # abort is an emergency: the stable returns to full size at once (surge limits could
    # deadlock it against a large canary), and the canary goes only when that is Ready.
    passes.scale(p, stable, p.total)
    if stable_ready < p.total:
        p.wait(
            "Degraded",
            f"{degraded}; waiting for {p.total} stable pods before removing the canary",
            "PodsNotReady",
        )
        return
    passes.scale(p, canary, 0)
    passes.drain_others(p, keep={stable})
    p.set(canary_weight=0)
    p.wait("Degraded", degraded, None)


# -- steps -----------------------------------------------------------------------------


def _advance(p: Pass, canary: str, stable: str, intents: intents_mod.Intents) -> None:
    steps = p.canary.steps
    index = p.status.current_step_index or 0
    paused = p.rollout.spec.paused
    # promote-full is a step advance too: while paused it waits (the intent stays).
    # So is a rollback within spec.rollbackWindow.
    window = passes.in_rollback_window(p, canary)
    full = (intents.promote_full == canary or window) and not paused
    if full and index < len(steps):
        p.event(
            "RollbackWindow" if window else "PromotedFully",
            (
                f"revision {canary} is within the rollback window"
                if window
                else "promote-full requested"
            )
            + f": skipping steps {index}..{len(steps) - 1} and analysis",
        )
        index = len(steps)
        p.set(current_step_index=index, pause_start_time=None)

    background = _background(p, canary, index, skip=full)
    if p.aborted():
        return
    if paused:
        _hold(p, index, canary)
        return
    if p.status.step_start_time is None and index < len(steps):
        # Resumed: the progress deadline counts from here, not from before the pause.
        p.set(step_start_time=p.now)

    while index < len(steps):
        done = _run_step(p, index, steps[index], canary, stable, intents)
        if p.aborted():
            return
        if not done:
            break
        p.event("StepCompleted", f"step {index} ({steps[index].kind}) of canary {canary} completed")
        index += 1
        p.set(current_step_index=index, pause_start_time=None, step_start_time=p.now)
        background = _background(p, canary, index, skip=full)
        if p.aborted():
            return

    if index < len(steps):
        _check_deadline(p, canary)
        return
    released = (
        background is not None
        and background.phase == "Inconclusive"
        and intents.promotes(canary, index)
    )
    if (
        not full
        and not released
        and background is not None
        and not an.background_succeeded(background)
    ):
        # An Inconclusive background run waits for a person: ``stepwise promote`` names
        # the current index (len(steps) here) and releases it; abort rolls back.
        _apply_targets(p, canary, stable, index)
        p.wait(
            "Paused" if background.phase == "Inconclusive" else "Progressing",
            "all steps done; waiting for background analysis: "
            + (background.message or background.phase),
            "AnalysisInconclusive" if background.phase == "Inconclusive" else "AnalysisRunning",
        )
        return
    _promote(p, canary, stable)


def _hold(p: Pass, index: int, canary: str) -> None:
    """spec.paused during a canary: nothing is scaled, routed or pinned, and no step
    advances (a promote or promote-full intent waits for resume). An analysis already
    running goes on measuring, and its failure still aborts."""
    steps = p.canary.steps
    if index < len(steps) and steps[index].analysis is not None:
        _measure_step(p, index, steps[index], canary, start=False)
        if p.aborted():
            return
    passes.pause_clock(p)
    where = f"at step {index}" if index < len(steps) else "after the last step, before promotion"
    p.wait("Paused", f"paused (spec.paused) {where}", "SpecPaused")


def _background(p: Pass, canary: str, index: int, *, skip: bool) -> AnalysisRunStatus | None:
    """Start, measure and judge the background analysis; abort on failure."""
    spec = p.canary.analysis
    if spec is None or skip or index < spec.starting_step:
        return None
    return passes.judge_run(
        p,
        an.BACKGROUND,
        spec,
        canary,
        label=f"background analysis of canary {canary}",
        failed="background analysis",
        background=True,
    )


def _run_step(
    p: Pass, index: int, step: Step, canary: str, stable: str, intents: intents_mod.Intents
) -> bool:
    """Carry out step ``index``; True when it is complete."""
    if step.set_weight is not None:
        return _set_weight_step(p, index, step.set_weight, canary, stable)
    if step.pause is not None:
        _apply_targets(p, canary, stable, index)
        if intents.promotes(canary, index):
            p.event("Promoted", f"step {index} pause released by promote")
            return True
        if step.pause.duration is None:
            p.wait(
                "Paused",
                f"paused at step {index} until promoted (stepwise promote)",
                "AwaitingPromotion",
            )
            return False
        seconds = parse_duration(step.pause.duration)
        return passes.pause_over(p, seconds, f"paused at step {index} until")
    if step.analysis is not None:
        _apply_targets(p, canary, stable, index)
        return _analysis_step(p, index, step, canary, intents)
    if step.experiment is not None:
        # The Rollout's own sets stay as the steps before say; the experiment runs beside.
        _apply_targets(p, canary, stable, index)
        return experiment.run_step(p, index, step.experiment, canary, stable, intents)
    route = step.set_header_route or step.set_mirror_route
    if route is not None:
        # Written again even when a route of that name is there: a step may change it.
        _apply_targets(p, canary, stable, index + 1, rewrite=route.name)
        return True
    # setCanaryScale: its effect is derived from the steps up to the current index.
    return _apply_targets(p, canary, stable, index + 1)


def _measure_step(
    p: Pass, index: int, step: Step, canary: str, *, start: bool
) -> AnalysisRunStatus | None:
    """The analysis of step ``index``, through :func:`~controller.core.passes.judge_run`."""
    assert step.analysis is not None
    return passes.judge_run(
        p,
        an.step_run_name(index),
        step.analysis,
        canary,
        label=f"analysis of step {index} for canary {canary}",
        failed=f"analysis of step {index}",
        background=False,
        start=start,
    )


def _analysis_step(
    p: Pass, index: int, step: Step, canary: str, intents: intents_mod.Intents
) -> bool:
    run = _measure_step(p, index, step, canary, start=True)
    assert run is not None
    if run.phase == "Successful":
        p.event("AnalysisSucceeded", f"analysis of step {index} succeeded")
        return True
    if run.phase == "Failed":
        return False
    if run.phase == "Inconclusive":
        if intents.promotes(canary, index):
            p.event("Promoted", f"inconclusive analysis of step {index} released by promote")
            return True
        p.wait(
            "Paused",
            f"analysis of step {index} is inconclusive: {run.message}",
            "AnalysisInconclusive",
        )
        return False
    if run.phase == "Error":
        p.wait(
            "Progressing",
            f"analysis of step {index} cannot judge (holding): {run.message}",
            "AnalysisBlind",
        )
        return False
    p.wait(
        "Progressing",
        f"analysis of step {index} running: {run.message or 'measuring'}",
        "AnalysisRunning",
    )
    return False


def _set_weight_step(p: Pass, index: int, weight: int, canary: str, stable: str) -> bool:
    if p.routed and p.observed.traffic is not None and weight < p.weight:
        # Less traffic for the canary: move the traffic first, shrink the canary after
        # (the canary keeps pods for the weight the router still has this pass).
        _apply_targets(p, canary, stable, index + 1)
        return _route(p, weight)
    ready = _apply_targets(p, canary, stable, index + 1)
    if not ready:
        return False
    if p.routed:
        return _route(p, weight)
    return True


# -- targets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Targets:
    weight: int
    """Traffic weight of the last completed setWeight before the target index."""
    scale: SetCanaryScale | None
    header_routes: dict[str, SetHeaderRoute | SetMirrorRoute]
    """The header and mirror routes, by name (one namespace: a later step replaces)."""


def _targets(steps: list[Step], upto: int) -> _Targets:
    """What the steps before ``upto`` say about weight, canary scale and header (and
    mirror) routes."""
    weight = 0
    scale: SetCanaryScale | None = None
    routes: dict[str, SetHeaderRoute | SetMirrorRoute] = {}
    for step in steps[:upto]:
        if step.set_weight is not None:
            weight = step.set_weight
        elif step.set_canary_scale is not None:
            scale = None if step.set_canary_scale.match_traffic_weight else step.set_canary_scale
        elif step.set_header_route is not None:
            header = step.set_header_route
            if header.match:
                routes[header.name] = SetHeaderRoute(header.name, tuple(header.match))
            else:
                routes.pop(header.name, None)
        elif step.set_mirror_route is not None:
            mirror = step.set_mirror_route
            if mirror.match:
                percentage = 100 if mirror.percentage is None else mirror.percentage
                routes[mirror.name] = SetMirrorRoute(mirror.name, tuple(mirror.match), percentage)
            else:
                routes.pop(mirror.name, None)
    return _Targets(weight, scale, routes)


def _apply_targets(
    p: Pass, canary: str, stable: str, upto: int, *, rewrite: str | None = None
) -> bool:
    """Scale both revisions for the steps before ``upto`` and set their header routes
    (``rewrite``: the route a step sets now, sent even when one of its name is there).
    True once the canary has its Ready pods (and, by ratio, the stable gave up its share)."""
    targets = _targets(p.canary.steps, upto)
    want = canary_replicas(targets.weight, p.total, targets.scale)
    if not _pin_services(p, stable=stable, canary=canary) or p.problem:
        return False
    if p.routed:
        traffic = p.observed.traffic
        if traffic is not None and traffic.problem:
            p.block(f"traffic router: {traffic.problem}; traffic left where it is")
        passes.drain_others(p, keep={stable, canary})
        # Never fewer canary pods than the traffic share they carry: the router's weight
        # now, or the one a setWeight step is about to give them (only once they are
        # Ready), even when setCanaryScale asks for fewer.
        want = max(want, canary_replicas(max(p.weight, targets.weight), p.total))
        passes.scale(p, stable, _stable_size(p, min(p.weight, targets.weight)))
        passes.scale(p, canary, want)
        _header_routes(p, targets.header_routes, rewrite)
        if not p.has_ready(canary, f"canary {canary}:", want):
            return False
        ready = p.ready(canary)
        endpoints = p.observed.canary_endpoints
        if endpoints is not None and endpoints < want:
            # The data plane routes by the EndpointSlices, which follow pod readiness with
            # a lag: a share given before they list the canary's pods would find none.
            p.wait(
                "Progressing",
                f"canary {canary}: {ready} of {want} pods Ready, {endpoints} of them ready "
                f"endpoints of canary Service {p.canary.canary_service}",
                "PodsNotReady",
            )
            p.wake_at(p.now + passes.SETTLE_RECHECK)
            return False
        return True
    reached = _ratio_scale(p, canary, stable, canary_target=want, weight=targets.weight)
    if not reached:
        surge, _ = surge_limits(p.canary.max_surge, p.canary.max_unavailable, p.total)
        p.wait(
            "Progressing",
            f"canary {canary}: {p.ready(canary)} of {want} pods Ready, stable shrinking to "
            f"{ratio_stable_replicas(targets.weight, p.total, want, surge)}",
            "PodsNotReady",
        )
    return reached


def _stable_size(p: Pass, weight: int) -> int:
    """The stable's size beside a routed canary carrying ``weight`` percent: full, or with
    ``dynamicStableScale`` just the share it carries (rounded up). Callers pass the lower
    of the weight now and the one about to be set, so the stable never shrinks below the
    share it still carries."""
    traffic = p.observed.traffic
    if not p.canary.dynamic_stable_scale:
        return p.total
    if traffic is not None and (not traffic.settled or p.weight != traffic.canary_weight):
        # A weight written in this pass, or one the data plane has not taken in yet: it
        # may still send the stable its former share, so shrink later.
        p.wake_at(p.now + passes.SETTLE_RECHECK)
        return p.sizes.get(p.status.stable_revision or "") or p.total
    return canary_replicas(100 - weight, p.total)


def _ratio_scale(p: Pass, canary: str, stable: str, *, canary_target: int, weight: int) -> bool:
    """Move toward canary_target canary pods and the stable's share at ``weight``
    (:func:`ratio_stable_replicas`) within the surge budget; True when both sets are
    there with all their pods Ready and no other revision has pods."""
    surge, _ = surge_limits(p.canary.max_surge, p.canary.max_unavailable, p.total)
    stable_target = ratio_stable_replicas(weight, p.total, canary_target, surge)
    _rebalance(p, {canary: canary_target, stable: stable_target}, grow_order=[canary, stable])
    c_size = p.size(canary) or SetSize(0, 0)
    s_size = p.size(stable) or SetSize(0, 0)
    ready = c_size.ready + s_size.ready
    p.set(canary_weight=round(100 * c_size.ready / ready) if ready else 0)
    # Judged on the sizes this pass leaves behind: once the last scale-down is sent, the
    # step is complete (the next pass, on the same world, has nothing left to do).
    return (
        c_size.replicas == canary_target
        and c_size.ready >= canary_target
        and s_size.replicas == stable_target
        and s_size.ready >= stable_target
        and not any(n for rev, n in p.sizes.items() if rev not in (canary, stable))
    )


def _rebalance(p: Pass, targets: dict[str, int], *, grow_order: list[str]) -> None:
    """Replica-ratio scaling toward ``targets`` within maxSurge and maxUnavailable; every
    other revision (a superseded canary) drains first, within the availability floor."""
    surge, unavailable = surge_limits(p.canary.max_surge, p.canary.max_unavailable, p.total)
    others = sorted(rev for rev, n in p.sizes.items() if rev not in targets and n > 0)
    shrink_order = [*others, *reversed(grow_order)]
    # Repeat until nothing moves: a scale-down cancelled by a later scale-up in the same
    # pass gives its Ready pods back, which may let another set move further.
    for _ in range(4):
        sizes = {rev: p.size(rev) or SetSize(0, 0) for rev in [*others, *grow_order]}
        new = rebalance(
            sizes,
            targets,
            p.total,
            surge,
            unavailable,
            shrink_order=shrink_order,
            grow_order=grow_order,
        )
        if all(new[rev] == sizes[rev].replicas for rev in new):
            return
        for rev, n in new.items():
            passes.scale(p, rev, n)


def _route(p: Pass, weight: int) -> bool:
    """Set the router's weight; True once the router holds it (or holds it after the write)."""
    traffic = p.observed.traffic
    if traffic is None:
        return True
    if traffic.problem:
        p.block(f"traffic router: {traffic.problem}; traffic left where it is")
        return False
    if p.weight != weight:
        # Experiment Services keep their weights (the experiment decides them).
        p.actions.append(SetWeight(weight, tuple(sorted(p.extra.items()))))
        p.event("WeightSet", f"canary weight {p.weight} -> {weight}")
        p.weight = weight
    p.set(canary_weight=weight)
    return True


def _restore_traffic(p: Pass) -> bool:
    """All traffic to the stable Service and no header routes, by the rule of
    :func:`~controller.core.finalize.to_stable` applied to the traffic this pass projects;
    True when that holds.

    With a router problem (a misconfigured route, a canary Service gone) the header
    routes are still removed and the weight still sent back to 0 when the route carries
    any: leaving traffic on the canary is never the safe choice. The canary keeps its
    pods until the problem is gone."""
    traffic = p.observed.traffic
    if not p.routed or traffic is None:
        p.set(canary_weight=0)
        return True
    why = f"despite: {traffic.problem}" if traffic.problem else "(all traffic to stable)"
    projected = TrafficState(
        p.weight, frozenset(p.routes), extra_weights=tuple(sorted(p.extra.items()))
    )
    actions = to_stable(projected)
    p.actions.extend(actions)
    p.routes.clear()
    if any(isinstance(action, SetWeight) for action in actions):
        also = f", experiment Services {', '.join(sorted(p.extra))} -> 0" if p.extra else ""
        p.event("WeightSet", f"canary weight {p.weight} -> 0{also} {why}")
        p.weight = 0
        p.extra = {}
    p.set(canary_weight=0)  # the router verifies its write, or the pass fails
    if traffic.problem:
        p.block(f"traffic router: {traffic.problem}")
        return False
    return True


def _header_routes(
    p: Pass, wanted: dict[str, SetHeaderRoute | SetMirrorRoute], rewrite: str | None = None
) -> None:
    """Add the wanted header and mirror routes that are missing (and ``rewrite``, the
    one the current step sets), remove the others."""
    traffic = p.observed.traffic
    if traffic is None or traffic.problem:
        return
    for name, action in wanted.items():
        if name not in p.routes or name == rewrite:
            p.actions.append(action)
            p.routes.add(name)
    for name in sorted(p.routes - set(wanted)):
        p.actions.append(RemoveHeaderRoute(name))
        p.routes.discard(name)


# -- promotion -------------------------------------------------------------------------


def _promote(p: Pass, canary: str, stable: str) -> None:
    if p.routed:
        passes.scale(p, canary, p.total)
        passes.scale(p, stable, _stable_size(p, p.weight))
        if not p.has_ready(canary, f"promoting: canary {canary}"):
            return
        if p.observed.traffic is not None and p.observed.traffic.problem:
            p.block(f"traffic router: {p.observed.traffic.problem}; not promoting")
            return
        # Point the stable Service at the new pods first; only then give it all traffic.
        _pin_services(p, stable=canary, canary=canary)
        _restore_traffic(p)
        passes.schedule_scale_down(p, stable, p.canary.scale_down_delay_seconds)
        # A superseded canary that no Service selects any more (the canary Service moved
        # off it only once the data plane sent it nothing) goes in this pass, as the
        # steady state would have it go in the next.
        selected = {revision for revision in p.pins.values() if revision}
        passes.drain_others(p, keep={canary, stable} | selected)
    elif not _ratio_scale(p, canary, stable, canary_target=p.total, weight=100):
        p.wait(
            "Progressing",
            f"promoting: moving pods from stable {stable} to canary {canary}",
            "PodsNotReady",
        )
        return
    else:
        _pin_services(p, stable=canary, canary=canary)
    p.event("Promoted", f"canary {canary} promoted to stable (was {stable})")
    p.set(
        stable_revision=canary,
        current_step_index=len(p.canary.steps),
        pause_start_time=None,
        canary_weight=0,
    )
    p.wait("Progressing", f"revision {canary} promoted; old revision {stable} scaling down", None)


# -- Services and the progress deadline ------------------------------------------------


def _pin_services(p: Pass, *, stable: str, canary: str) -> bool:
    """Point the stable and canary Services at their revisions; False while the canary
    Service must keep selecting a canary that still receives traffic (see
    :func:`_may_repin_canary`)."""

    def may_move(service: str, current: str | None, revision: str) -> bool:
        if service != p.canary.canary_service or _may_repin_canary(p, current):
            return True
        p.wait(
            "Progressing",
            f"waiting for the data plane to send nothing to canary Service {service} "
            f"(revision {current}) before it selects {revision}",
            "TrafficShifting",
        )
        p.wake_at(p.now + passes.SETTLE_RECHECK)
        return False

    wanted = ((p.canary.stable_service, stable), (p.canary.canary_service, canary))
    return passes.pin_services(p, wanted, may_move=may_move)


def _may_repin_canary(p: Pass, current: str | None) -> bool:
    """Whether the canary Service may select another revision now: only once the router
    has been seen sending it nothing and the data plane has applied that
    (:attr:`~controller.core.model.TrafficState.settled`). A Gateway that still applies
    the old weights would otherwise send the new revision's pods requests before they
    are Ready (or to none at all); the old canary's pods keep serving until then."""
    traffic = p.observed.traffic
    if not p.routed or traffic is None or current is None or current == p.status.stable_revision:
        return True
    return traffic.canary_weight == 0 and traffic.settled


def _check_deadline(p: Pass, canary: str) -> None:
    """Abort when pods have kept the current step from completing for too long."""
    if passes.check_deadline(p, f"step {p.status.current_step_index}"):
        _aborted(p, canary, p.status.stable_revision or "")
