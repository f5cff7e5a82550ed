"""The canary engine: one pure decision from (Rollout, observed world, now) to a Plan.

``plan`` is called on every reconcile. It never remembers anything between calls:
everything it needs to resume lives in the Rollout's status (step index, pause start,
abort, analysis tallies, scheduled scale-downs). It compares what should be with what
is and returns only the actions that close the gap, so calling it twice on the same
world returns no new actions (idempotence), and a crashed controller resumes exactly
where the status says.

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
  still happen.

A retry intent while paused clears the abort and waits at step 0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from controller.api import intents as intents_mod
from controller.api.base import parse_duration
from controller.api.rollout import (
    AbortReason,
    AbortStatus,
    AnalysisRunStatus,
    CanaryStrategy,
    HeaderMatch,
    Phase,
    Rollout,
    RolloutAnalysis,
    RolloutStatus,
    ScheduledScaleDown,
    SetCanaryScale,
    Step,
    WaitReason,
)
from controller.core import analysis as an
from controller.core.conditions import conditions_for, set_condition
from controller.core.hashing import template_hash
from controller.core.model import (
    Action,
    DeleteReplicaSet,
    Event,
    Observed,
    PinService,
    Plan,
    RemoveHeaderRoute,
    ReplicaSetState,
    ScaleReplicaSet,
    SetHeaderRoute,
    SetWeight,
)
from controller.core.replicas import (
    SetSize,
    canary_replicas,
    ratio_stable_replicas,
    rebalance,
    surge_limits,
)

BLOCKED_RECHECK_SECONDS = 10
"""How often a Rollout blocked by a problem outside it (a missing Service, a broken route)
is looked at again, since those objects are not watched."""


@dataclass
class _Pass:
    """Mutable scratch state of one decision; only :func:`plan` sees it."""

    rollout: Rollout
    observed: Observed
    now: dt.datetime
    status: RolloutStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    wakeups: list[dt.datetime] = field(default_factory=list)
    phase: Phase = "Progressing"
    message: str = ""
    wait_reason: WaitReason | None = None
    blind: list[tuple[str, str]] = field(default_factory=list)
    """Metrics of this canary's analyses that are held blind: (reason, what)."""
    problem: str | None = None
    """Something outside the Rollout blocks it (a missing Service, a misconfigured
    router); it wins over any other message and makes the phase Degraded."""
    # The world as it will be once this pass's actions are applied (so that several
    # steps completing in one pass each decide on the effect of the ones before).
    sizes: dict[str, int] = field(default_factory=dict)
    weight: int = 0
    routes: set[str] = field(default_factory=set)
    pins: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes = {rs.revision: rs.replicas for rs in self.observed.replica_sets}
        traffic = self.observed.traffic
        self.weight = traffic.canary_weight if traffic else 0
        self.routes = set(traffic.header_routes) if traffic else set()
        self.pins = dict(self.observed.service_revisions)

    def size(self, revision: str | None) -> SetSize | None:
        """Projected (replicas, Ready) of a revision: Ready pods are the observed ones that
        the projected size keeps (new pods are not Ready yet)."""
        if revision is None or revision not in self.sizes:
            return None
        observed = self.observed.replica_set(revision)
        replicas = self.sizes[revision]
        return SetSize(replicas, min(observed.ready if observed else 0, replicas))

    def ready(self, revision: str | None) -> int:
        """Projected Ready pods of a revision."""
        size = self.size(revision)
        return size.ready if size else 0

    @property
    def canary(self) -> CanaryStrategy:
        return self.rollout.spec.strategy.canary

    @property
    def routed(self) -> bool:
        return self.canary.traffic_routing is not None

    @property
    def total(self) -> int:
        return self.rollout.spec.replicas

    def set(self, **update: object) -> None:
        self.status = self.status.model_copy(update=update)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(Event(reason, message, "Warning" if warning else "Normal"))

    def wake_at(self, when: dt.datetime | None) -> None:
        if when is not None:
            self.wakeups.append(when)

    def aborted(self) -> bool:
        """Whether the canary is aborted (a method, as any call may abort it)."""
        return self.status.abort is not None

    def block(self, problem: str) -> None:
        """Record a problem that blocks progress until someone fixes it."""
        if self.problem is None:
            self.problem = problem

    def wait(self, phase: Phase, message: str, reason: WaitReason | None) -> None:
        self.phase = phase
        self.message = message
        self.wait_reason = reason


def plan(rollout: Rollout, observed: Observed, now: dt.datetime) -> Plan:
    """Decide what to do about ``rollout`` given ``observed`` at ``now``."""
    p = _Pass(rollout, observed, now, rollout.status)
    desired = template_hash(rollout.spec.template)
    stable = p.status.stable_revision
    if stable is None:
        _initialize(p, desired)
    elif desired == stable:
        _steady(p, desired)
    else:
        _canary(p, desired, stable)
    _scheduled_scale_downs(p)
    _history(p)
    return _finish(p)


# -- no canary -------------------------------------------------------------------------


def _initialize(p: _Pass, desired: str) -> None:
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


def _steady(p: _Pass, stable: str) -> None:
    """No canary: stable at full size, all traffic to it, every other revision drained."""
    previous = p.status.canary_revision
    if previous is not None and previous != stable:
        p.event(
            "CanaryAbandoned",
            f"the template is back to stable revision {stable}; canary {previous} is "
            "scaled down without promotion",
        )
    p.set(
        canary_revision=stable,
        current_step_index=len(p.canary.steps),
        abort=None,
        pause_start_time=None,
        step_start_time=None,
        analysis_runs=[r for r in p.status.analysis_runs if r.revision == stable],
    )
    _pin_services(p, stable=stable, canary=stable)
    restored = _restore_traffic(p)
    if p.routed:
        _scale(p, stable, p.total)
        if restored:
            _drain_others(p, keep={stable})
    else:
        _rebalance(p, {stable: p.total}, grow_order=[stable])
    stable_ready = p.ready(stable)
    if not restored:
        p.wait("Progressing", "moving traffic back to the stable revision", "TrafficShifting")
    elif stable_ready < p.total:
        p.wait(
            "Progressing",
            f"stable revision {stable}: {stable_ready} of {p.total} pods Ready",
            "PodsNotReady",
        )
    elif _others_have_pods(p, {stable}):
        later = [s.at for s in p.status.scale_down]
        p.wait(
            "Healthy" if later else "Progressing",
            f"revision {stable} is stable; old revisions scale down"
            + (f" at {min(later).isoformat(timespec='seconds')}" if later else ""),
            None,
        )
    else:
        p.wait("Healthy", f"revision {stable} is stable with {stable_ready} Ready pods", None)


# -- the canary ------------------------------------------------------------------------


def _canary(p: _Pass, desired: str, stable: str) -> None:
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
        _abort(p, "Manual", f"aborted by request ({intents_mod.ABORT}={desired})")
    service = p.canary.canary_service
    if p.routed and not p.aborted() and p.weight > 0 and service in p.observed.missing_services:
        # Requests routed to a Service that is gone fail: take the traffic back at once.
        _abort(
            p,
            "CanaryServiceMissing",
            f"canary Service {service} disappeared while it carried {p.weight}% of the "
            "traffic; all traffic goes back to stable (recreate it, then retry)",
        )
    if p.routed and p.weight == 0 and not (paused and not p.aborted()):
        # Only the canary Service reaches a canary: the current one, or a superseded one
        # it still selects until the data plane has moved off it (_may_repin_canary).
        selected = p.pins.get(p.canary.canary_service or "")
        _drain_others(p, keep={stable, desired} | ({selected} if selected else set()))

    if not p.aborted():
        _advance(p, desired, stable, intents)
    if p.aborted():
        _aborted(p, desired, stable)
        if p.routed and p.weight == 0:
            # Aborted in this pass while paused (a failed analysis): drain what was held.
            _drain_others(p, keep={stable, desired})


def _start_canary(p: _Pass, desired: str) -> None:
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
    p.set(
        canary_revision=desired,
        current_step_index=0,
        abort=None,
        pause_start_time=None,
        step_start_time=p.now,
        analysis_runs=[],
    )


def _abort(p: _Pass, reason: AbortReason, message: str) -> None:
    revision = p.status.canary_revision or ""
    previous = p.status.abort
    attempt = previous.attempt + 1 if previous and previous.revision == revision else 1
    attempt = max(attempt, _aborts_before(p) + 1)
    p.set(
        abort=AbortStatus(
            reason=reason, message=message, revision=revision, time=p.now, attempt=attempt
        )
    )
    p.event("Aborted", f"canary {revision} aborted ({reason}): {message}", warning=True)


def _aborts_before(p: _Pass) -> int:
    """Aborts of this revision so far: a retry intent names the abort it retried, so it
    is the memory of earlier attempts once the abort itself is cleared."""
    pair = intents_mod.parse(p.rollout.metadata.annotations).retry
    if pair and pair[0] == p.status.canary_revision:
        return pair[1]
    return 0


def _aborted(p: _Pass, canary: str, stable: str) -> None:
    """Aborted: stable back at full capacity, then traffic to stable, then the canary down."""
    abort = p.status.abort
    assert abort is not None
    stable_ready = p.ready(stable)
    degraded = f"canary {canary} aborted ({abort.reason}): {abort.message}"
    if p.routed:
        _scale(p, stable, p.total)
        if stable_ready < p.total:
            p.wait(
                "Degraded",
                f"{degraded}; waiting for {p.total} stable pods before moving traffic",
                "PodsNotReady",
            )
            return
        restored = _restore_traffic(p)
        if restored:
            if p.sizes.get(canary, 0) > 0:  # once at 0, nothing is left to schedule
                _schedule_scale_down(p, canary, p.canary.abort_scale_down_delay_seconds)
            p.set(canary_weight=0)
        p.wait("Degraded", f"{degraded}; all traffic is on stable {stable}", None)
        return
    # Replica ratio: traffic follows pods, so scaling the canary down is the shift. An
    # abort is an emergency: the stable returns to full size at once (surge limits could
    # deadlock it against a large canary), and the canary goes only when that is Ready.
    _scale(p, stable, p.total)
    if stable_ready < p.total:
        p.wait(
            "Degraded",
            f"{degraded}; waiting for {p.total} stable pods before removing the canary",
            "PodsNotReady",
        )
        return
    _scale(p, canary, 0)
    _drain_others(p, keep={stable})
    p.set(canary_weight=0)
    p.wait("Degraded", degraded, None)


# -- steps -----------------------------------------------------------------------------


def _advance(p: _Pass, canary: str, stable: str, intents: intents_mod.Intents) -> None:
    steps = p.canary.steps
    index = p.status.current_step_index or 0
    paused = p.rollout.spec.paused
    # promote-full is a step advance too: while paused it waits (the intent stays).
    full = intents.promote_full == canary and not paused
    if full and index < len(steps):
        p.event(
            "PromotedFully",
            f"promote-full requested: skipping steps {index}..{len(steps) - 1} and analysis",
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


def _hold(p: _Pass, index: int, canary: str) -> None:
    """spec.paused during a canary: nothing is scaled, routed or pinned, and no step
    advances (a promote or promote-full intent waits for resume). An analysis already
    running goes on measuring, and its failure still aborts."""
    steps = p.canary.steps
    if index < len(steps) and steps[index].analysis is not None:
        _measure_step(p, index, steps[index], canary, start=False)
        if p.aborted():
            return
    _pause_clock(p)
    where = f"at step {index}" if index < len(steps) else "after the last step, before promotion"
    p.wait("Paused", f"paused (spec.paused) {where}", "SpecPaused")


def _pause_clock(p: _Pass) -> None:
    """Paused time does not count toward the progress deadline: the step's clock stops
    (and restarts on resume)."""
    if p.status.step_start_time is not None:
        p.set(step_start_time=None)


def _background(p: _Pass, canary: str, index: int, *, skip: bool) -> AnalysisRunStatus | None:
    """Start, measure and judge the background analysis; abort on failure."""
    spec = p.canary.analysis
    if spec is None or skip or index < spec.starting_step:
        return None
    return _judge_run(
        p,
        an.BACKGROUND,
        spec,
        canary,
        label=f"background analysis of canary {canary}",
        failed="background analysis",
        background=True,
    )


def _judge_run(
    p: _Pass,
    name: str,
    spec: RolloutAnalysis,
    canary: str,
    *,
    label: str,
    failed: str,
    background: bool,
    start: bool = True,
) -> AnalysisRunStatus | None:
    """Start the run ``name`` (if ``start``; afresh when it began without its templates),
    measure and judge it, and abort the canary when it failed. ``label`` names the run in
    events, ``failed`` in the abort reason. None when the run has not started and
    ``start`` is False."""
    resolved = an.resolve(spec, p.observed.templates)
    run = _find_run(p, name)
    if run is None or an.stale(run, resolved):
        if not start:
            return None
        run = an.start(name, canary, resolved, p.now)
        p.event("AnalysisStarted", f"{label} started")
    run = _measure(p, run, resolved, label)
    _note_blindness(p, run, resolved, label)
    busy = {metric for run_name, metric in p.observed.measuring if run_name == run.name}
    p.wake_at(an.next_due(run, background=background, busy=busy, now=p.now))
    if run.phase == "Failed":
        _abort(p, "AnalysisFailed", f"{failed} failed: {run.message}")
    return run


def _note_blindness(
    p: _Pass, run: AnalysisRunStatus, resolved: an.ResolvedAnalysis, label: str
) -> None:
    """Remember each metric of ``run`` that is held blind, for the message and the
    AnalysisBlind condition (:func:`_finish`)."""
    if run.phase == "Failed":
        return
    by_name = {m.name: m for m in resolved.metrics}
    for result in run.metrics:
        metric = by_name.get(result.name)
        why = an.blindness(result, metric) if metric is not None else None
        if why == "NoData":
            p.blind.append((why, f"{label}, metric {result.name}: no data (onNoData: Hold)"))
        elif why == "Error":
            latest = result.measurements[-1].message if result.measurements else ""
            p.blind.append((why, f"{label}, metric {result.name}: provider failing: {latest}"))


def _measure(
    p: _Pass, run: AnalysisRunStatus, resolved: an.ResolvedAnalysis, label: str
) -> AnalysisRunStatus:
    """Record this pass's measurements into ``run`` and store it; a metric that went
    blind (held) or Inconclusive in this pass gets one Warning event. The transition is
    read from the stored tally, so the same world planned again emits nothing."""
    after = an.apply_measurements(run, resolved, p.observed.measurements, p.now)
    for notice in an.notices(run, after, resolved):
        p.event(notice.reason, f"{label}, metric {notice.metric}: {notice.message}", warning=True)
    _store_run(p, after)
    return after


def _run_step(
    p: _Pass, index: int, step: Step, canary: str, stable: str, intents: intents_mod.Intents
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
        started = p.status.pause_start_time or p.now
        if p.status.pause_start_time is None:
            p.set(pause_start_time=started)
        ends = started + dt.timedelta(seconds=parse_duration(step.pause.duration))
        if p.now >= ends:
            return True
        p.wake_at(ends)
        # The end time, not a countdown: a message that changes with ``now`` alone would
        # make every pass write the status (and its Paused condition) again.
        p.wait(
            "Paused",
            f"paused at step {index} until {ends.isoformat(timespec='seconds')}",
            "PauseStep",
        )
        return False
    if step.analysis is not None:
        _apply_targets(p, canary, stable, index)
        return _analysis_step(p, index, step, canary, intents)
    if step.set_header_route is not None:
        _apply_targets(p, canary, stable, index + 1)
        return True
    # setCanaryScale: its effect is derived from the steps up to the current index.
    return _apply_targets(p, canary, stable, index + 1)


def _measure_step(
    p: _Pass, index: int, step: Step, canary: str, *, start: bool
) -> AnalysisRunStatus | None:
    """The analysis of step ``index``, through :func:`_judge_run`."""
    assert step.analysis is not None
    return _judge_run(
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
    p: _Pass, index: int, step: Step, canary: str, intents: intents_mod.Intents
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


def _set_weight_step(p: _Pass, index: int, weight: int, canary: str, stable: str) -> bool:
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
    header_routes: dict[str, tuple[HeaderMatch, ...]]


def _targets(steps: list[Step], upto: int) -> _Targets:
    """What the steps before ``upto`` say about weight, canary scale and header routes."""
    weight = 0
    scale: SetCanaryScale | None = None
    routes: dict[str, tuple[HeaderMatch, ...]] = {}
    for step in steps[:upto]:
        if step.set_weight is not None:
            weight = step.set_weight
        elif step.set_canary_scale is not None:
            scale = None if step.set_canary_scale.match_traffic_weight else step.set_canary_scale
        elif step.set_header_route is not None:
            if step.set_header_route.match:
                routes[step.set_header_route.name] = tuple(step.set_header_route.match)
            else:
                routes.pop(step.set_header_route.name, None)
    return _Targets(weight, scale, routes)


def _apply_targets(p: _Pass, canary: str, stable: str, upto: int) -> bool:
    """Scale both revisions for the steps before ``upto`` and set their header routes.
    True once the canary has its Ready pods (and, by ratio, the stable gave up its share)."""
    targets = _targets(p.canary.steps, upto)
    want = canary_replicas(targets.weight, p.total, targets.scale)
    if not _pin_services(p, stable=stable, canary=canary) or p.problem:
        return False
    if p.routed:
        traffic = p.observed.traffic
        if traffic is not None and traffic.problem:
            p.block(f"traffic router: {traffic.problem}; traffic left where it is")
        _drain_others(p, keep={stable, canary})
        # Never fewer canary pods than the traffic share they carry: the router's weight
        # now, or the one a setWeight step is about to give them (only once they are
        # Ready), even when setCanaryScale asks for fewer.
        want = max(want, canary_replicas(max(p.weight, targets.weight), p.total))
        _scale(p, stable, p.total)
        _scale(p, canary, want)
        _header_routes(p, targets.header_routes)
        ready = p.ready(canary)
        if ready < want:
            p.wait("Progressing", f"canary {canary}: {ready} of {want} pods Ready", "PodsNotReady")
            return False
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
            p.wake_at(p.now + SETTLE_RECHECK)
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


def _ratio_scale(p: _Pass, canary: str, stable: str, *, canary_target: int, weight: int) -> bool:
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


def _rebalance(p: _Pass, targets: dict[str, int], *, grow_order: list[str]) -> None:
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
            _scale(p, rev, n)


def _route(p: _Pass, weight: int) -> bool:
    """Set the router's weight; True once the router holds it (or holds it after the write)."""
    traffic = p.observed.traffic
    if traffic is None:
        return True
    if traffic.problem:
        p.block(f"traffic router: {traffic.problem}; traffic left where it is")
        return False
    if p.weight != weight:
        p.actions.append(SetWeight(weight))
        p.event("WeightSet", f"canary weight {p.weight} -> {weight}")
        p.weight = weight
    p.set(canary_weight=weight)
    return True


def _restore_traffic(p: _Pass) -> bool:
    """All traffic to the stable Service and no header routes; True when that holds.

    With a router problem (a misconfigured route, a canary Service gone) the header
    routes are still removed and the weight still sent back to 0 when the route carries
    any: leaving traffic on the canary is never the safe choice. The canary keeps its
    pods until the problem is gone."""
    traffic = p.observed.traffic
    if not p.routed or traffic is None:
        p.set(canary_weight=0)
        return True
    if traffic.problem:
        for name in sorted(p.routes):
            p.actions.append(RemoveHeaderRoute(name))
        p.routes.clear()
        if p.weight != 0:
            p.actions.append(SetWeight(0))
            p.event("WeightSet", f"canary weight {p.weight} -> 0 despite: {traffic.problem}")
            p.weight = 0
        p.set(canary_weight=0)  # the router verifies its write, or the pass fails
        p.block(f"traffic router: {traffic.problem}")
        return False
    for name in sorted(p.routes):
        p.actions.append(RemoveHeaderRoute(name))
    p.routes.clear()
    if p.weight != 0:
        p.actions.append(SetWeight(0))
        p.event("WeightSet", f"canary weight {p.weight} -> 0 (all traffic to stable)")
        p.weight = 0
    p.set(canary_weight=0)
    return True


def _header_routes(p: _Pass, wanted: dict[str, tuple[HeaderMatch, ...]]) -> None:
    traffic = p.observed.traffic
    if traffic is None or traffic.problem:
        return
    for name, match in wanted.items():
        if name not in p.routes:
            p.actions.append(SetHeaderRoute(name, match))
            p.routes.add(name)
    for name in sorted(p.routes - set(wanted)):
        p.actions.append(RemoveHeaderRoute(name))
        p.routes.discard(name)


# -- promotion -------------------------------------------------------------------------


def _promote(p: _Pass, canary: str, stable: str) -> None:
    if p.routed:
        _scale(p, canary, p.total)
        _scale(p, stable, p.total)
        ready = p.ready(canary)
        if ready < p.total:
            p.wait(
                "Progressing",
                f"promoting: canary {canary} {ready} of {p.total} pods Ready",
                "PodsNotReady",
            )
            return
        if p.observed.traffic is not None and p.observed.traffic.problem:
            p.block(f"traffic router: {p.observed.traffic.problem}; not promoting")
            return
        # Point the stable Service at the new pods first; only then give it all traffic.
        _pin_services(p, stable=canary, canary=canary)
        _restore_traffic(p)
        _schedule_scale_down(p, stable, p.canary.scale_down_delay_seconds)
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


# -- housekeeping ----------------------------------------------------------------------


def _scale(p: _Pass, revision: str, replicas: int) -> None:
    current = p.sizes.get(revision)
    if current == replicas or (current is None and replicas == 0):
        return
    p.actions.append(ScaleReplicaSet(revision, replicas))
    p.sizes[revision] = replicas


def _pin_services(p: _Pass, *, stable: str, canary: str) -> bool:
    """Point the stable and canary Services at their revisions; False while the canary
    Service must keep selecting a canary that still receives traffic (see
    :func:`_may_repin_canary`)."""
    pinned = True
    for service, revision in ((p.canary.stable_service, stable), (p.canary.canary_service, canary)):
        if service is None:
            continue
        if service in p.observed.missing_services:
            p.block(f"Service {service} does not exist; create it or fix the Rollout")
            continue
        current = p.pins.get(service)
        if current == revision:
            continue
        if service == p.canary.canary_service and not _may_repin_canary(p, current):
            p.wait(
                "Progressing",
                f"waiting for the data plane to send nothing to canary Service {service} "
                f"(revision {current}) before it selects {revision}",
                "TrafficShifting",
            )
            p.wake_at(p.now + SETTLE_RECHECK)
            pinned = False
            continue
        p.actions.append(PinService(service, revision))
        p.pins[service] = revision
    return pinned


def _may_repin_canary(p: _Pass, current: str | None) -> bool:
    """Whether the canary Service may select another revision now: only once the router
    has been seen sending it nothing and the data plane has applied that
    (:attr:`~controller.core.model.TrafficState.settled`). A Gateway that still applies
    the old weights would otherwise send the new revision's pods requests before they
    are Ready (or to none at all); the old canary's pods keep serving until then."""
    traffic = p.observed.traffic
    if not p.routed or traffic is None or current is None or current == p.status.stable_revision:
        return True
    return traffic.canary_weight == 0 and traffic.settled


def _drain_others(p: _Pass, *, keep: set[str]) -> None:
    """Scale every other revision down now (traffic has already left them), except those
    kept up for a while by a scheduled scale-down."""
    scheduled = {s.revision for s in p.status.scale_down}
    for revision, replicas in list(p.sizes.items()):
        if revision in keep or revision in scheduled or replicas == 0:
            continue
        _scale(p, revision, 0)


def _others_have_pods(p: _Pass, keep: set[str]) -> bool:
    return any(
        (size := p.size(rev)) is not None and (size.replicas or size.ready)
        for rev in p.sizes
        if rev not in keep
    )


SETTLE_RECHECK = dt.timedelta(seconds=1)
"""How soon a pass waiting on the data plane (:attr:`TrafficState.settled`) looks again."""


def _schedule_scale_down(p: _Pass, revision: str, delay: int) -> None:
    if any(s.revision == revision for s in p.status.scale_down):
        return
    at = p.now + dt.timedelta(seconds=delay)
    p.set(scale_down=[*p.status.scale_down, ScheduledScaleDown(revision=revision, at=at)])


def _scheduled_scale_downs(p: _Pass) -> None:
    """Scale down revisions whose delay has passed; forget those already at zero."""
    keep: list[ScheduledScaleDown] = []
    protected = {p.status.stable_revision}
    if p.status.abort is None:
        protected.add(p.status.canary_revision)
    traffic = p.observed.traffic
    # The data plane must have applied the traffic as it was observed, and this pass must
    # not have just changed it: a weight or a Service's revision written in this pass is
    # not in the Gateway yet, and pods removed now would still get its requests.
    moved = any(isinstance(a, SetWeight | PinService) for a in p.actions)
    settled = (traffic is None or traffic.settled) and not (p.routed and moved)
    for item in p.status.scale_down:
        if item.revision in protected or item.revision not in p.sizes:
            continue
        if p.now >= item.at and settled:
            _scale(p, item.revision, 0)
        else:
            # Due, but the data plane has not taken in the last route change: the old
            # pods may still get requests. Looked at again shortly.
            keep.append(item)
            p.wake_at(max(item.at, p.now + SETTLE_RECHECK))
    if keep != p.status.scale_down:
        p.set(scale_down=keep)


def _history(p: _Pass) -> None:
    """Delete scaled-down ReplicaSets beyond ``revisionHistoryLimit`` (oldest first)."""
    live = {p.status.stable_revision, p.status.canary_revision}
    live |= {s.revision for s in p.status.scale_down}
    old: list[ReplicaSetState] = [
        rs
        for rs in p.observed.replica_sets
        if rs.revision not in live and p.sizes.get(rs.revision) == 0
    ]
    excess = len(old) - p.rollout.spec.revision_history_limit
    if excess <= 0:
        return
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    for rs in sorted(old, key=lambda r: (r.created or epoch, r.name))[:excess]:
        p.actions.append(DeleteReplicaSet(rs.name))


def _check_deadline(p: _Pass, canary: str) -> None:
    """Abort when pods have kept the current step from completing for too long."""
    if p.phase != "Progressing" or p.status.step_start_time is None or p.rollout.spec.paused:
        return
    if p.wait_reason != "PodsNotReady":
        return
    deadline = p.status.step_start_time + dt.timedelta(
        seconds=p.rollout.spec.progress_deadline_seconds
    )
    if p.now >= deadline:
        _abort(
            p,
            "ProgressDeadlineExceeded",
            f"step {p.status.current_step_index} made no progress for "
            f"{p.rollout.spec.progress_deadline_seconds}s: {p.message}",
        )
        _aborted(p, canary, p.status.stable_revision or "")
    else:
        p.wake_at(deadline)


def _find_run(p: _Pass, name: str) -> AnalysisRunStatus | None:
    for run in p.status.analysis_runs:
        if run.name == name and run.revision == p.status.canary_revision:
            return run
    return None


def _store_run(p: _Pass, run: AnalysisRunStatus) -> None:
    runs = [
        r for r in p.status.analysis_runs if not (r.name == run.name and r.revision == run.revision)
    ]
    p.set(analysis_runs=[*runs, run])


def _finish(p: _Pass) -> Plan:
    rollout = p.rollout
    if p.problem:
        p.phase, p.message, p.wait_reason = "Degraded", p.problem, "Blocked"
        if rollout.status.message != p.problem:
            p.event("Blocked", p.problem, warning=True)
        # Router objects and Services are fixed by people; look again now and then.
        p.wake_at(p.now + dt.timedelta(seconds=BLOCKED_RECHECK_SECONDS))
    blind = p.blind if not p.aborted() and not p.problem else []
    if blind:
        # Blindness comes first: a canary taking traffic unjudged is what to know first.
        notice = "analysis blind: " + "; ".join(what for _, what in blind)
        p.message = f"{notice}; {p.message}" if p.message else notice
        if p.wait_reason == "AnalysisRunning":
            p.wait_reason = "AnalysisBlind"
    rs_all = p.observed.replica_sets
    canary_rs = p.observed.replica_set(p.status.canary_revision)
    p.set(
        phase=p.phase,
        message=p.message,
        observed_generation=rollout.metadata.generation or 0,
        replicas=sum(rs.replicas for rs in rs_all),
        ready_replicas=sum(rs.ready for rs in rs_all),
        updated_replicas=canary_rs.replicas if canary_rs else 0,
        selector=rollout.spec.selector.to_query(),
        wait_reason=p.wait_reason,
    )
    conditions = conditions_for(p.status, rollout.status.conditions, p.now)
    if blind or any(c.type == "AnalysisBlind" for c in conditions):
        reason = {"NoData": "NoData", "Error": "ProviderError"}[blind[0][0]] if blind else "Seeing"
        conditions = set_condition(
            conditions,
            "AnalysisBlind",
            "True" if blind else "False",
            reason,
            "; ".join(what for _, what in blind),
            p.now,
        )
    p.set(conditions=conditions)
    wake = min(p.wakeups) if p.wakeups else None
    requeue = max(0.0, (wake - p.now).total_seconds()) if wake else None
    return Plan(tuple(_dedupe(p)), p.status, tuple(p.events), requeue)


def _dedupe(p: _Pass) -> list[Action]:
    """One scale per revision, with its final count, in the position of its first; a
    scale that ends where the ReplicaSet already is disappears."""
    final = {a.revision: a for a in p.actions if isinstance(a, ScaleReplicaSet)}
    out: list[Action] = []
    placed: set[str] = set()
    for action in p.actions:
        if not isinstance(action, ScaleReplicaSet):
            out.append(action)
            continue
        if action.revision in placed:
            continue
        placed.add(action.revision)
        last = final[action.revision]
        observed = p.observed.replica_set(last.revision)
        if (observed is None and last.replicas == 0) or (
            observed is not None and observed.replicas == last.replicas
        ):
            continue
        out.append(last)
    return out
