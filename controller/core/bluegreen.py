"""The blue-green transitions: a new revision runs beside the live one, is judged behind
the preview Service, and takes all production traffic at once when the active Service is
switched to it.

The order of decisions for a new revision N while revision S is stable:

1. **Start.** N gets its ReplicaSet, sized ``previewReplicaCount`` (default: full), and
   the preview Service selects it at once; the active Service stays on S, which keeps
   its full size throughout. A newer template supersedes N: the preview Service moves
   to the newest revision and everything (analysis, pause) starts over for it.
2. **Pre-promotion analysis** runs once N is Ready at its preview size. A failure
   aborts, and the active Service never moves.
3. **Pause.** With ``autoPromotionEnabled: false`` the rollout waits for
   ``stepwise promote``; with ``autoPromotionSeconds`` it waits that long after N is
   Ready and judged.
4. **The switch.** N is scaled to ``spec.replicas`` and, once all its pods are Ready,
   the active Service selects it. The active Service never selects a revision that is
   not fully Ready, nor one whose pre-promotion analysis has not succeeded (unless
   ``promote-full`` was asked for).
5. **Post-promotion analysis** runs after the switch; S is still stable and at full
   size. A failure aborts, and the abort switches the active Service back to S.
6. **Promotion.** N becomes stable, and every other revision with pods is scaled down
   after ``scaleDownDelaySeconds`` (at most ``scaleDownDelayRevisionLimit`` of them wait
   out their delay).

An abort (manual, a failed analysis, the progress deadline) keeps S at full size and,
once it is Ready, points the active Service at it; the preview Service stays on N,
which is scaled down after ``abortScaleDownDelaySeconds``. ``retry`` starts N over.
``promote-full`` skips the analyses, the pause and ``previewReplicaCount``.
``spec.paused`` holds N where it is (no scaling, no Service change); an analysis that
is running goes on measuring, and its failure still aborts.

The first revision of a Rollout becomes stable directly; the active Service selects it
once its pods are Ready.
"""

from __future__ import annotations

import datetime as dt

from controller.api import intents as intents_mod
from controller.api.rollout import (
    AnalysisRunStatus,
    BlueGreenStatus,
    BlueGreenStrategy,
    RolloutAnalysis,
)
from controller.core import analysis as an
from controller.core.model import PinService
from controller.core.passes import (
    Pass,
    abort,
    in_rollback_window,
    judge_run,
    pause_over,
    role_metadata,
    scale,
    schedule_scale_down,
    settle,
    start_revision,
)


def plan_blue_green(p: Pass, desired: str) -> None:
    """Decide the blue-green part of a pass (scale-downs and the status come after)."""
    stable = p.status.stable_revision
    if stable is None:
        p.event("Initialized", f"revision {desired} is the first; it becomes stable directly")
        p.set(stable_revision=desired, canary_revision=desired)
        stable = desired
    if desired == stable:
        _steady(p, stable)
    else:
        _new_revision(p, desired, stable)
    _record_selectors(p)
    _role_metadata(p)


def _strategy(p: Pass) -> BlueGreenStrategy:
    bg = p.rollout.spec.strategy.blue_green
    assert bg is not None
    return bg


# -- Services ----------------------------------------------------------------------------


def _pin(p: Pass, service: str | None, revision: str) -> bool:
    """Point ``service`` at ``revision``; False when the Service does not exist."""
    if service is None:
        return True
    if service in p.observed.missing_services:
        p.block(f"Service {service} does not exist; create it or fix the Rollout")
        return False
    if p.pins.get(service) != revision:
        p.actions.append(PinService(service, revision))
        p.pins[service] = revision
    return True


def _switch_active(p: Pass, revision: str, why: str) -> bool:
    """Point the active Service at ``revision`` once all its pods are Ready (the rule this
    strategy rests on); True when it selects it."""
    active = _strategy(p).active_service
    if p.pins.get(active) == revision:
        return True
    if not p.has_ready(revision, f"{why}: revision {revision}"):
        return False
    before = p.pins.get(active)
    if not _pin(p, active, revision):
        return False
    p.event(
        "ActiveSwitched",
        f"active Service {active} switched to revision {revision}"
        + (f" (from {before})" if before else ""),
    )
    return True


def _record_selectors(p: Pass) -> None:
    bg = _strategy(p)
    p.set(
        blue_green=BlueGreenStatus(
            active_selector=p.pins.get(bg.active_service),
            preview_selector=p.pins.get(bg.preview_service) if bg.preview_service else None,
        )
    )


def _role_metadata(p: Pass) -> None:
    """activeMetadata on the stable revision's pods, previewMetadata on the new one's."""
    bg = _strategy(p)
    role_metadata(p, ("active", bg.active_metadata), ("preview", bg.preview_metadata))


# -- no new revision ---------------------------------------------------------------------


def _steady(p: Pass, stable: str) -> None:
    """Stable at full size behind both Services; every other revision goes."""
    bg = _strategy(p)
    settle(p, stable, step=None, reason="RevisionAbandoned", noun="revision")
    scale(p, stable, p.total)
    switched = _switch_active(p, stable, "waiting to point the active Service")
    _pin(p, bg.preview_service, stable)
    if not switched:
        return
    _retire_others(p, keep={stable}, delay=bg.scale_down_delay_seconds)
    if not p.has_ready(stable, f"stable revision {stable}:"):
        return
    waiting = [s.at for s in p.status.scale_down if s.revision != stable]
    if waiting:
        p.wait(
            "Healthy",
            f"revision {stable} is active; old revisions scale down at "
            + min(waiting).isoformat(timespec="seconds"),
            None,
        )
    else:
        p.wait("Healthy", f"revision {stable} is active with {p.ready(stable)} Ready pods", None)


def _retire_others(p: Pass, *, keep: set[str], delay: int) -> None:
    """Schedule every other revision that has pods, except the one the active Service
    selects, for scale-down after ``delay`` (its pods may still be reached through a
    Service a moment longer), keeping at most
    ``scaleDownDelayRevisionLimit`` of them waiting: older ones go at once."""
    active = p.pins.get(_strategy(p).active_service)
    keep = keep | ({active} if active else set())
    for revision, replicas in sorted(p.sizes.items()):
        if revision not in keep and replicas > 0:
            schedule_scale_down(p, revision, delay)
    limit = _strategy(p).scale_down_delay_revision_limit
    if limit is None:
        return
    waiting = sorted(
        (s for s in p.status.scale_down if s.revision not in keep and p.sizes.get(s.revision)),
        key=lambda s: s.at,
        reverse=True,
    )
    for item in waiting[limit:]:
        scale(p, item.revision, 0)
        p.set(scale_down=[s for s in p.status.scale_down if s.revision != item.revision])


# -- a new revision ------------------------------------------------------------------------


def _new_revision(p: Pass, new: str, stable: str) -> None:
    bg = _strategy(p)
    intents = intents_mod.parse(p.rollout.metadata.annotations)
    if p.status.canary_revision != new:
        _start(p, new, stable)
    current = p.status.abort
    if current is not None and current.revision == new and intents.retries(new, current.attempt):
        p.event("Retried", f"retrying revision {new} (after abort {current.attempt})")
        p.set(abort=None, analysis_runs=[], pause_start_time=None, step_start_time=p.now)
    window = in_rollback_window(p, new)
    full = (intents.promote_full == new or window) and not p.rollout.spec.paused
    if full and window and p.status.step_start_time == p.now:
        p.event("RollbackWindow", f"revision {new} is within the rollback window: no analysis")
    if full and not window and p.status.abort is not None:
        p.event("PromotedFully", f"promote-full requested: abort of revision {new} cleared")
        p.set(abort=None)
    if p.status.abort is None and intents.abort == new:
        abort(p, "Manual", f"aborted by request ({intents_mod.ABORT}={new})")

    scale(p, stable, p.total)  # the way back stays open until N is stable
    if p.status.abort is not None:
        _aborted(p, new, stable)
        return
    _pin(p, bg.preview_service, new)
    if p.rollout.spec.paused:
        _hold(p, new)
        return
    if p.status.step_start_time is None:
        p.set(step_start_time=p.now)  # resumed: the deadline counts from here
    switched = p.pins.get(bg.active_service) == new
    if not switched and not _before_switch(p, new, intents, full=full):
        _check_deadline(p, new, stable)
        return
    _after_switch(p, new, stable, intents, full=full)


def _start(p: Pass, new: str, stable: str) -> None:
    previous = p.status.canary_revision
    superseded = previous is not None and previous not in (new, stable)
    p.event(
        "NewRevision",
        f"revision {new} started in preview"
        + (f"; it supersedes revision {previous}" if superseded else ""),
    )
    start_revision(p, new)
    if superseded:
        # Nothing routes production traffic to it unless the active Service was already
        # switched to it (then it stays until the newest revision is switched in).
        _retire_others(p, keep={new, stable}, delay=_strategy(p).scale_down_delay_seconds)


def _before_switch(p: Pass, new: str, intents: intents_mod.Intents, *, full: bool) -> bool:
    """Preview, pre-promotion analysis, pause, full size; True once the active Service
    may be switched (and it was, in this pass)."""
    bg = _strategy(p)
    size = p.total if full else min(bg.preview_replica_count or p.total, p.total)
    scale(p, new, max(size, p.sizes.get(new, 0)))
    if not p.has_ready(new, f"preview revision {new}:", size):
        return False
    if not full and not _judged(p, an.PRE_PROMOTION, bg.pre_promotion_analysis, new, intents):
        return False
    if not full and not _pause_done(p, new, intents):
        return False
    scale(p, new, p.total)
    p.set(pause_start_time=None)
    return _switch_active(p, new, "scaling the preview to full size before the switch")


def _judged(
    p: Pass,
    name: str,
    spec: RolloutAnalysis | None,
    new: str,
    intents: intents_mod.Intents,
) -> bool:
    """Whether the analysis ``name`` (pre- or post-promotion; none configured passes)
    lets the new revision go on; a failure aborts, and the abort is carried out here."""
    if spec is None:
        return True
    label = f"{name} analysis"
    run = judge_run(
        p,
        name,
        spec,
        new,
        label=f"{label} of revision {new}",
        failed=label,
        background=False,
    )
    assert run is not None
    if p.status.abort is not None:
        _aborted(p, new, p.status.stable_revision or "")
        return False
    return _released(p, run, new, intents, label)


def _released(
    p: Pass, run: AnalysisRunStatus, new: str, intents: intents_mod.Intents, label: str
) -> bool:
    """Whether ``run`` lets the rollout go on; otherwise says what it waits for."""
    if run.phase == "Successful":
        return True
    if run.phase == "Inconclusive":
        if intents.promotes(new, 0):
            p.event("Promoted", f"inconclusive {label} of revision {new} released by promote")
            return True
        p.wait("Paused", f"{label} is inconclusive: {run.message}", "AnalysisInconclusive")
        return False
    if run.phase == "Error":
        p.wait("Progressing", f"{label} cannot judge (holding): {run.message}", "AnalysisBlind")
        return False
    p.wait("Progressing", f"{label} running: {run.message or 'measuring'}", "AnalysisRunning")
    return False


def _pause_done(p: Pass, new: str, intents: intents_mod.Intents) -> bool:
    """The pause before the switch: for a person (autoPromotionEnabled false) or for
    autoPromotionSeconds."""
    bg = _strategy(p)
    if intents.promotes(new, 0):
        return True
    if not bg.auto_promotion_enabled:
        if p.status.pause_start_time is None:
            p.set(pause_start_time=p.now)
        p.wait(
            "Paused",
            f"preview revision {new} is ready; paused before the switch until promoted "
            "(stepwise promote)",
            "AwaitingPromotion",
        )
        return False
    if not bg.auto_promotion_seconds:
        return True
    return pause_over(
        p, bg.auto_promotion_seconds, f"preview revision {new} is ready; switching at"
    )


def _after_switch(
    p: Pass, new: str, stable: str, intents: intents_mod.Intents, *, full: bool
) -> None:
    """Post-promotion analysis with the old revision still up; then promotion."""
    bg = _strategy(p)
    if not full and not _judged(p, an.POST_PROMOTION, bg.post_promotion_analysis, new, intents):
        return
    p.event("Promoted", f"revision {new} promoted to stable (was {stable})")
    p.set(stable_revision=new, current_step_index=None, pause_start_time=None)
    _retire_others(p, keep={new}, delay=bg.scale_down_delay_seconds)
    p.wait("Progressing", f"revision {new} promoted; old revision {stable} scaling down", None)


def _hold(p: Pass, new: str) -> None:
    """spec.paused: nothing is scaled or switched; a running analysis goes on measuring."""
    bg = _strategy(p)
    for name, spec in (
        (an.PRE_PROMOTION, bg.pre_promotion_analysis),
        (an.POST_PROMOTION, bg.post_promotion_analysis),
    ):
        if spec is not None:
            judge_run(
                p,
                name,
                spec,
                new,
                label=f"{name} analysis of revision {new}",
                failed=f"{name} analysis",
                background=False,
                start=False,
            )
            if p.status.abort is not None:
                _aborted(p, new, p.status.stable_revision or "")
                return
    if p.status.step_start_time is not None:
        p.set(step_start_time=None)  # paused time does not count toward the deadline
    p.wait("Paused", f"paused (spec.paused) with revision {new} in preview", "SpecPaused")


def _aborted(p: Pass, new: str, stable: str) -> None:
    """Aborted: the active Service back on the stable revision (at full size and Ready),
    then the new revision down after abortScaleDownDelaySeconds."""
    abort_status = p.status.abort
    assert abort_status is not None
    bg = _strategy(p)
    degraded = f"revision {new} aborted ({abort_status.reason}): {abort_status.message}"
    scale(p, stable, p.total)
    if not _switch_active(p, stable, f"{degraded}; switching the active Service back"):
        p.phase = "Degraded"
        return
    if p.sizes.get(new, 0) > 0:
        schedule_scale_down(p, new, bg.abort_scale_down_delay_seconds)
    _retire_others(p, keep={new, stable}, delay=bg.scale_down_delay_seconds)
    p.wait("Degraded", f"{degraded}; the active Service selects stable {stable}", None)


def _check_deadline(p: Pass, new: str, stable: str) -> None:
    """Abort when pods have kept the new revision from its next stage for too long."""
    if p.wait_reason != "PodsNotReady" or p.status.step_start_time is None:
        return
    seconds = p.rollout.spec.progress_deadline_seconds
    deadline = p.status.step_start_time + dt.timedelta(seconds=seconds)
    if p.now < deadline:
        p.wake_at(deadline)
        return
    abort(p, "ProgressDeadlineExceeded", f"no progress for {seconds}s: {p.message}")
    _aborted(p, new, stable)
