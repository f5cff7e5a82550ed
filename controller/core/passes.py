"""The machinery of one planning pass, shared by every strategy.

:func:`controller.core.plan.plan` builds a :class:`Pass` for each decision and hands it
to the strategy's module (:mod:`controller.core.canary` or
:mod:`controller.core.bluegreen`), which records into it the
actions, events, wake-ups and the status it decides on. What does not depend on the
strategy lives here:

- the projected world: the sizes, weight, header routes and Service selectors as they
  will be once the pass's actions are applied (:class:`Pass`), and the primitives that
  change it: :func:`scale`, :func:`drain_others`, :func:`pin_services`;
- scale-downs kept for a delay after traffic left a revision
  (:func:`schedule_scale_down`, :func:`scheduled_scale_downs`) and the revision history
  (:func:`history`);
- aborts (:func:`abort`) and the progress deadline (:func:`check_deadline`,
  :func:`pause_clock`);
- analysis runs: start, measure, judge (:func:`judge_run` and its helpers);
- the Plan itself: phase, message, conditions, requeue and the deduplicated actions
  (:func:`finish`).

Nothing here imports a strategy module; the strategies import this one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.api import intents as intents_mod
from controller.api.rollout import (
    AbortReason,
    AbortStatus,
    AnalysisRunStatus,
    CanaryStrategy,
    Phase,
    RoleMetadata,
    Rollout,
    RolloutAnalysis,
    RolloutStatus,
    ScheduledScaleDown,
    WaitReason,
)
from controller.core import analysis as an
from controller.core.conditions import conditions_for, set_condition
from controller.core.model import (
    Action,
    DeleteReplicaSet,
    Event,
    Observed,
    PinService,
    Plan,
    ReplicaSetState,
    ScaleReplicaSet,
    SetRoleMetadata,
    SetWeight,
)
from controller.core.replicas import SetSize

BLOCKED_RECHECK_SECONDS = 10
"""How often a Rollout blocked by a problem outside it (a missing Service, a broken route)
is looked at again, since those objects are not watched."""

SETTLE_RECHECK = dt.timedelta(seconds=1)
"""How soon a pass waiting on the data plane (:attr:`TrafficState.settled`) looks again."""


@dataclass
class Pass:
    """Mutable scratch state of one decision; only :func:`controller.core.plan.plan` and
    the strategy it dispatches to see it."""

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
    invalid: list[str] = field(default_factory=list)
    """Analyses whose templates or arguments cannot be used, and why: a spec problem a
    person must fix (InvalidSpec, reason InvalidAnalysis), which blocks the Rollout."""
    problem: str | None = None
    """Something outside the Rollout blocks it (a missing Service, a misconfigured
    router); it wins over any other message and makes the phase Degraded."""
    # The world as it will be once this pass's actions are applied (so that several
    # steps completing in one pass each decide on the effect of the ones before).
    sizes: dict[str, int] = field(default_factory=dict)
    weight: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    """Weights of experiment Services in the router (:attr:`TrafficState.extra_weights`)."""
    routes: set[str] = field(default_factory=set)
    pins: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes = {rs.revision: rs.replicas for rs in self.observed.replica_sets}
        traffic = self.observed.traffic
        self.weight = traffic.canary_weight if traffic else 0
        self.extra = dict(traffic.extra_weights) if traffic else {}
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
        """The canary strategy; only the canary module asks for it."""
        canary = self.rollout.spec.strategy.canary
        assert canary is not None, "a canary decision for a Rollout without a canary strategy"
        return canary

    @property
    def routed(self) -> bool:
        """Whether a traffic router splits the traffic (a canary with trafficRouting);
        False for anything else, so strategy-neutral code may ask."""
        canary = self.rollout.spec.strategy.canary
        return canary is not None and canary.traffic_routing is not None

    @property
    def total(self) -> int:
        """``spec.replicas``: the size of a revision that takes all the traffic."""
        return self.rollout.spec.replicas

    def set(self, **update: object) -> None:
        """Update the status this pass will write."""
        self.status = self.status.model_copy(update=update)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Record an event to emit."""
        self.events.append(Event(reason, message, "Warning" if warning else "Normal"))

    def wake_at(self, when: dt.datetime | None) -> None:
        """Ask to be planned again at ``when`` (the earliest wins; None asks nothing)."""
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
        """Say what the Rollout waits for (the last call in a pass wins)."""
        self.phase = phase
        self.message = message
        self.wait_reason = reason

    def has_ready(self, revision: str, what: str, want: int | None = None) -> bool:
        """Whether ``revision`` has ``want`` Ready pods (default: :attr:`total`); if not,
        wait for them, saying ``"{what} {ready} of {want} pods Ready"``."""
        want = self.total if want is None else want
        ready = self.ready(revision)
        if ready < want:
            self.wait("Progressing", f"{what} {ready} of {want} pods Ready", "PodsNotReady")
        return ready >= want


# -- replicas and Services -------------------------------------------------------------


def scale(p: Pass, revision: str, replicas: int) -> None:
    """Scale the ReplicaSet of ``revision`` to ``replicas`` (nothing when it is there, or
    when a revision without a ReplicaSet should have none)."""
    current = p.sizes.get(revision)
    if current == replicas or (current is None and replicas == 0):
        return
    p.actions.append(ScaleReplicaSet(revision, replicas))
    p.sizes[revision] = replicas


def drain_others(p: Pass, *, keep: set[str]) -> None:
    """Scale every other revision down now (traffic has already left them), except those
    kept up for a while by a scheduled scale-down."""
    scheduled = {s.revision for s in p.status.scale_down}
    for revision, replicas in list(p.sizes.items()):
        if revision in keep or revision in scheduled or replicas == 0:
            continue
        scale(p, revision, 0)


def others_have_pods(p: Pass, keep: set[str]) -> bool:
    """Whether a revision not in ``keep`` still has pods (or is projected to)."""
    return any(
        (size := p.size(rev)) is not None and (size.replicas or size.ready)
        for rev in p.sizes
        if rev not in keep
    )


def role_metadata(
    p: Pass, stable: tuple[str, RoleMetadata | None], new: tuple[str, RoleMetadata | None]
) -> None:
    """Give the stable revision's pods the ``stable`` role's labels and annotations and the
    new revision's pods the ``new`` role's (``(name, metadata)``: blue-green's active and
    preview, the canary's stable and canary), each losing the other role's keys; once per
    role and metadata, since the ReplicaSet records what its pods carry. Nothing when
    neither role has metadata."""
    if stable[1] is None and new[1] is None:
        return
    current = p.status.stable_revision
    empty = RoleMetadata()
    for revision in sorted({r for r in (current, p.status.canary_revision) if r}):
        observed = p.observed.replica_set(revision)
        if observed is None or not p.sizes.get(revision):
            continue  # created in this pass: its pods come with the next
        (role, mine), (_, other) = (stable, new) if revision == current else (new, stable)
        mine, other = mine or empty, other or empty
        digest = hashlib.sha256(mine.model_dump_json().encode()).hexdigest()[:10]
        tag = f"{role}:{digest}"
        if observed.role == tag:
            continue
        p.actions.append(
            SetRoleMetadata(
                revision,
                tag,
                labels=tuple(sorted(mine.labels.items())),
                annotations=tuple(sorted(mine.annotations.items())),
                drop_labels=tuple(sorted(set(other.labels) - set(mine.labels))),
                drop_annotations=tuple(sorted(set(other.annotations) - set(mine.annotations))),
            )
        )


MayMove = Callable[[str, str | None, str], bool]
"""``may_move(service, current, revision)``: whether ``service`` may leave the revision it
selects (``current``) for ``revision`` now; when it may not, it says why (:meth:`Pass.wait`)."""


def pin_services(
    p: Pass, wanted: Iterable[tuple[str | None, str]], *, may_move: MayMove | None = None
) -> bool:
    """Point each Service of ``wanted`` at its revision (a None Service is not configured
    and skipped). A missing Service blocks the Rollout; False when ``may_move`` held a
    Service on the revision it selects."""
    pinned = True
    for service, revision in wanted:
        if service is None:
            continue
        if service in p.observed.missing_services:
            p.block(f"Service {service} does not exist; create it or fix the Rollout")
            continue
        current = p.pins.get(service)
        if current == revision:
            continue
        if may_move is not None and not may_move(service, current, revision):
            pinned = False
            continue
        p.actions.append(PinService(service, revision))
        p.pins[service] = revision
    return pinned


def traffic_left(p: Pass, revision: str) -> bool:
    """Whether no traffic reaches ``revision`` once the pass's actions are applied: the
    blue-green active Service selects another revision; a router gives the canary and
    every experiment Service weight 0 (written and read back by the runtime); without a
    router (traffic follows pods), the revision has no Ready pod and none is wanted."""
    blue_green = p.rollout.spec.strategy.blue_green
    if blue_green is not None:
        return p.pins.get(blue_green.active_service) != revision
    if p.routed:
        return p.weight == 0 and not any(p.extra.values())
    observed = p.observed.replica_set(revision)
    return p.sizes.get(revision, 0) == 0 and (observed is None or observed.ready == 0)


# -- scale-downs and history -----------------------------------------------------------


def schedule_scale_down(p: Pass, revision: str, delay: int) -> None:
    """Keep ``revision`` up for ``delay`` seconds more, then scale it to zero
    (:func:`scheduled_scale_downs`); a revision already scheduled keeps its time."""
    if any(s.revision == revision for s in p.status.scale_down):
        return
    at = p.now + dt.timedelta(seconds=delay)
    p.set(scale_down=[*p.status.scale_down, ScheduledScaleDown(revision=revision, at=at)])


def scheduled_scale_downs(p: Pass) -> None:
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
            scale(p, item.revision, 0)
        else:
            # Due, but the data plane has not taken in the last route change: the old
            # pods may still get requests. Looked at again shortly.
            keep.append(item)
            p.wake_at(max(item.at, p.now + SETTLE_RECHECK))
    if keep != p.status.scale_down:
        p.set(scale_down=keep)


def in_rollback_window(p: Pass, revision: str) -> bool:
    """Whether ``revision`` is a rollback within ``spec.rollbackWindow``: its ReplicaSet
    is older than the stable one's and fewer than ``revisions - 1`` ReplicaSets older than
    the stable one are as new as it is. Creation times have whole seconds: a ReplicaSet
    created in the same second as another counts that one as newer, so when the order is
    unknown the steps run."""
    window = p.rollout.spec.rollback_window
    stable = p.observed.replica_set(p.status.stable_revision or "")
    candidate = p.observed.replica_set(revision)
    if window is None or stable is None or candidate is None:
        return False
    if stable.created is None or candidate.created is None or candidate.created >= stable.created:
        return False
    as_new = [
        rs
        for rs in p.observed.replica_sets
        if rs.revision != revision
        and rs.created is not None
        and candidate.created <= rs.created < stable.created
    ]
    return len(as_new) < window.revisions - 1


def history(p: Pass) -> None:
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


# -- aborts and the progress deadline --------------------------------------------------


def start_revision(p: Pass, revision: str) -> None:
    """The status of a new revision's rollout, from its beginning: no abort, no pause,
    no analysis yet, and the progress clock starting now."""
    p.set(
        canary_revision=revision,
        current_step_index=0,
        abort=None,
        pause_start_time=None,
        step_start_time=p.now,
        analysis_runs=[],
    )


def settle(p: Pass, stable: str, *, step: int | None, reason: str, noun: str) -> None:
    """The status of a Rollout whose template is its stable revision: nothing in flight
    (no abort, no pause, no progress clock), only the stable revision's analyses kept,
    ``currentStepIndex`` at ``step``. A revision that was in flight is abandoned, and an
    event ``reason`` says so, calling it ``noun`` ("canary")."""
    previous = p.status.canary_revision
    if previous is not None and previous != stable:
        p.event(
            reason,
            f"the template is back to stable revision {stable}; {noun} {previous} is "
            "scaled down without promotion",
        )
    p.set(
        canary_revision=stable,
        current_step_index=step,
        abort=None,
        pause_start_time=None,
        step_start_time=None,
        analysis_runs=[r for r in p.status.analysis_runs if r.revision == stable],
    )


def abort(p: Pass, reason: AbortReason, message: str) -> None:
    """Abort the canary revision: record why in the status, with the attempt it ends."""
    revision = p.status.canary_revision or ""
    previous = p.status.abort
    attempt = previous.attempt + 1 if previous and previous.revision == revision else 1
    attempt = max(attempt, aborts_before(p) + 1)
    p.set(
        abort=AbortStatus(
            reason=reason, message=message, revision=revision, time=p.now, attempt=attempt
        )
    )
    role = "revision" if p.rollout.spec.strategy.blue_green is not None else "canary"
    p.event("Aborted", f"{role} {revision} aborted ({reason}): {message}", warning=True)


def aborts_before(p: Pass) -> int:
    """Aborts of this revision so far: a retry intent names the abort it retried, so it
    is the memory of earlier attempts once the abort itself is cleared."""
    pair = intents_mod.parse(p.rollout.metadata.annotations).retry
    if pair and pair[0] == p.status.canary_revision:
        return pair[1]
    return 0


def check_deadline(p: Pass, stage: str) -> bool:
    """Abort when pods have kept the current stage from completing for too long (with
    ``progressDeadlineAbort: false``, only say so: phase Degraded, nothing moved);
    ``stage`` names it in the abort message ("step 2"). True when this call aborted: the
    strategy then carries the abort out."""
    if p.phase != "Progressing" or p.status.step_start_time is None or p.rollout.spec.paused:
        return False
    if p.wait_reason != "PodsNotReady":
        return False
    deadline = p.status.step_start_time + dt.timedelta(
        seconds=p.rollout.spec.progress_deadline_seconds
    )
    if p.now >= deadline:
        why = f"{stage} made no progress for {p.rollout.spec.progress_deadline_seconds}s"
        if not p.rollout.spec.progress_deadline_abort:
            # Reported, not acted on: the rollout keeps waiting for its pods.
            p.wait(
                "Degraded", f"{why} (progressDeadlineAbort is false): {p.message}", "PodsNotReady"
            )
            return False
        abort(p, "ProgressDeadlineExceeded", f"{why}: {p.message}")
        return True
    p.wake_at(deadline)
    return False


def pause_over(p: Pass, seconds: float, until: str) -> bool:
    """Whether a pause of ``seconds``, counted from ``pauseStartTime`` (which starts now
    when unset), is over; if not, wake at its end and wait, saying ``"{until} {end}"``.
    The end time, not a countdown: a message that changes with ``now`` alone would make
    every pass write the status (and its Paused condition) again."""
    started = p.status.pause_start_time or p.now
    if p.status.pause_start_time is None:
        p.set(pause_start_time=started)
    ends = started + dt.timedelta(seconds=seconds)
    if p.now >= ends:
        return True
    p.wake_at(ends)
    p.wait("Paused", f"{until} {ends.isoformat(timespec='seconds')}", "PauseStep")
    return False


def pause_clock(p: Pass) -> None:
    """Paused time does not count toward the progress deadline: the step's clock stops
    (and restarts on resume)."""
    if p.status.step_start_time is not None:
        p.set(step_start_time=None)


# -- analysis runs ---------------------------------------------------------------------


def judge_run(
    p: Pass,
    name: str,
    spec: RolloutAnalysis,
    revision: str,
    *,
    label: str,
    failed: str,
    background: bool,
    start: bool = True,
) -> AnalysisRunStatus | None:
    """Start the run ``name`` of ``revision`` (if ``start``; afresh when it began without
    its templates), measure and judge it, and abort the canary when it failed. ``label``
    names the run in events, ``failed`` in the abort reason. None when the run has not
    started and ``start`` is False."""
    resolved = an.resolve(spec, p.observed.templates, p.rollout)
    run = find_run(p, name)
    if run is None or an.stale(run, resolved):
        if not start:
            return None
        run = an.start(name, revision, resolved, p.now)
        p.event("AnalysisStarted", f"{label} started")
    run = measure(p, run, resolved, label)
    if resolved.problem:
        p.invalid.append(f"{label}: {resolved.problem}")
    note_blindness(p, run, resolved, label)
    busy = {metric for run_name, metric in p.observed.measuring if run_name == run.name}
    p.wake_at(an.next_due(run, background=background, busy=busy, now=p.now))
    if run.phase == "Failed":
        abort(p, "AnalysisFailed", f"{failed} failed: {run.message}")
    return run


def note_blindness(
    p: Pass, run: AnalysisRunStatus, resolved: an.ResolvedAnalysis, label: str
) -> None:
    """Remember each metric of ``run`` that is held blind, for the message and the
    AnalysisBlind condition (:func:`finish`)."""
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


def measure(
    p: Pass, run: AnalysisRunStatus, resolved: an.ResolvedAnalysis, label: str
) -> AnalysisRunStatus:
    """Record this pass's measurements into ``run`` and store it; a metric that went
    blind (held) or Inconclusive in this pass gets one Warning event. The transition is
    read from the stored tally, so the same world planned again emits nothing."""
    after = an.apply_measurements(run, resolved, p.observed.measurements, p.now)
    for notice in an.notices(run, after, resolved):
        p.event(notice.reason, f"{label}, metric {notice.metric}: {notice.message}", warning=True)
    store_run(p, after)
    return after


def find_run(p: Pass, name: str) -> AnalysisRunStatus | None:
    """The run ``name`` of the canary revision in the status, if it has started."""
    for run in p.status.analysis_runs:
        if run.name == name and run.revision == p.status.canary_revision:
            return run
    return None


def store_run(p: Pass, run: AnalysisRunStatus) -> None:
    """Put ``run`` in the status in place of its previous version."""
    runs = [
        r for r in p.status.analysis_runs if not (r.name == run.name and r.revision == run.revision)
    ]
    p.set(analysis_runs=[*runs, run])


# -- the Plan --------------------------------------------------------------------------


def finish(p: Pass) -> Plan:
    """The Plan of the pass: the problem or blindness that wins the message, the status
    fields every strategy reports, the conditions, when to look again and the actions
    (:func:`dedupe`)."""
    rollout = p.rollout
    invalid = p.invalid if not p.aborted() else []
    if invalid:
        # Nothing to measure with: held where it is, as for a missing Service, until the
        # template or the arguments are fixed (the templates are watched).
        p.block("invalid analysis: " + "; ".join(invalid))
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
        selector=rollout.spec.pod_selector.to_query(),
        wait_reason=p.wait_reason,
    )
    conditions = conditions_for(p.status, rollout.status.conditions, p.now, invalid)
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
    return Plan(tuple(dedupe(p)), p.status, tuple(p.events), requeue)


def extra_held(action: SetWeight, held: dict[str, int]) -> bool:
    """Whether the router already holds the experiment weights of ``action`` (``held``:
    the observed ones; a weight of 0 means the Service is out of the split)."""
    return all(held.get(name, 0) == w and (w or name not in held) for name, w in action.extra)


def dedupe(p: Pass) -> list[Action]:
    """One scale per revision, with its final count, in the position of its first; a
    scale that ends where the ReplicaSet already is disappears. Likewise one weight:
    when several steps complete in one pass, only the last weight is written (in its own
    place), and not at all when it is the weight the router already has: a weight raised
    and lowered again within a pass would otherwise reach the router after the scale
    that took the canary's pods away (the deduplicated scale sits where the first one
    was)."""
    final = {a.revision: a for a in p.actions if isinstance(a, ScaleReplicaSet)}
    weights = [a for a in p.actions if isinstance(a, SetWeight)]
    last_weight = weights[-1] if weights else None
    traffic = p.observed.traffic
    current = traffic.canary_weight if traffic else None
    held = dict(traffic.extra_weights) if traffic else {}
    out: list[Action] = []
    placed: set[str] = set()
    for action in p.actions:
        if isinstance(action, SetWeight) and len(weights) > 1:
            if action is last_weight and (action.weight != current or not extra_held(action, held)):
                out.append(action)
            continue
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
