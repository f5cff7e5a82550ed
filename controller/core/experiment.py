"""The ``experiment`` canary step: ReplicaSets beside the Rollout's, judged by analyses.

Where it sits: :func:`controller.core.canary._run_step` calls :func:`run_step` for the
current step when it is an experiment, and :func:`plan_canary
<controller.core.canary.plan_canary>` calls :func:`reconcile_sets` at the end of every
canary pass, so that whatever ended the experiment (its own end, an abort, promote-full, a
newer revision, a return to stable) also removes its ReplicaSets. The runtime creates and
deletes them (:class:`~controller.core.model.ScaleExperimentSet`,
:class:`~controller.core.model.DeleteExperimentSet`) and reports them in
:attr:`~controller.core.model.Observed.experiment_sets`.

The life of one experiment (Argo Rollouts' meaning, see ``docs/features/experiment.md``):

=====================  ================================================================
phase                  what happens
=====================  ================================================================
Pending                one ReplicaSet per template, from the stable or the canary pod
                       template, is created; the step waits until every one has its
                       pods Ready (``progressDeadlineSeconds`` applies)
Running                ``running_since`` is recorded; the analyses start. A failed
                       analysis aborts the rollout (phase Failed). The step completes
                       when ``duration`` has passed since ``running_since`` *and* every
                       ``requiredForCompletion`` analysis has succeeded; with neither a
                       duration nor a required analysis it runs until ``stepwise
                       promote`` (Argo: until terminated)
Successful             the step is complete; the ReplicaSets are deleted
Terminated             an abort, promote-full, a new revision or a return to stable
                       ended it; the ReplicaSets are deleted
=====================  ================================================================

Level-triggered: the phase, ``running_since`` and the analysis runs are in the Rollout
status, the ReplicaSets are observed, and every name is a pure function of the spec and
the status (:func:`pod_hash`, :func:`replica_set_name`, :func:`run_name`), so a restarted
controller continues the same experiment.

Traffic (weighted templates, with a router): while the experiment is Running, each
template with a ``weight`` gets that percentage through its Service
(:func:`wanted_weights`, :func:`route_weights`; a ``SetWeight`` whose ``extra`` lists the
Services), taken from the stable's share while the canary keeps its step weight. When it
ends for any reason the weights go back to 0 first (the Services leave the split); its
ReplicaSets and Services are deleted only in a later pass, once the router no longer
routes to them and has taken that in (:func:`_still_routed`): never a route to a deleted
Service. Routers report these Services' weights
(:attr:`~controller.core.model.TrafficState.extra_weights`, for the names of
:func:`routed_services`), so the decision compares what the router holds with what it
wants.

Telling the experiment's pods apart: each template's pods carry their own
``stepwise.dev/revision`` (:func:`pod_hash`, never the stable or canary revision), so the
stable and canary Services, which Stepwise pins to a revision, never select a fresh
baseline. Analyses reach them through ``{{templates.<name>.podTemplateHash}}`` (and
``{{templates.<name>.replicaset.name}}``) in their arguments, filled in here
(:func:`analysis_for`), for example as the ``revision`` label of a judge's queries.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from controller.api import intents as intents_mod
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.base import parse_duration
from controller.api.rollout import (
    AnalysisArg,
    AnalysisRunStatus,
    ExperimentAnalysis,
    ExperimentStatus,
    ExperimentStep,
    ExperimentTemplate,
    ExperimentTemplateStatus,
    Rollout,
    RolloutAnalysis,
    WaitReason,
)
from controller.core import analysis as an
from controller.core import passes
from controller.core.hashing import encode, fnv1a_32
from controller.core.model import (
    DeleteExperimentSet,
    ExperimentSetState,
    ScaleExperimentSet,
    SetWeight,
    TemplateKey,
)
from controller.core.passes import Pass

RUN_PREFIX = "experiment-"
"""Analysis runs of experiments are named ``experiment-<step>-<analysis>``."""

ACTIVE = ("Pending", "Running")
"""Phases in which the experiment's ReplicaSets are kept."""

# -- names -----------------------------------------------------------------------------


def run_name(step: int, analysis: str) -> str:
    """The analysis run name of ``analysis`` in the experiment of step ``step``."""
    return f"{RUN_PREFIX}{step}-{analysis}"


def pod_hash(canary: str, step: int, template: str, source: str) -> str:
    """The ``stepwise.dev/revision`` of a template's pods: a hash of the canary revision,
    the step, the template's name and the revision it copies, so that it never equals a
    revision of the Rollout (a baseline of stable is not selected as stable) and a new
    canary or another step gets ReplicaSets of its own."""
    return encode(fnv1a_32(f"experiment/{canary}/{step}/{template}/{source}".encode()))


def replica_set_name(rollout: str, template: str, hashed: str) -> str:
    """The ReplicaSet of a template (``checkout-baseline-7f9c2kd``)."""
    return f"{rollout}-{template}-{hashed}"[:253]


def service_name(template: ExperimentTemplate, replica_set: str) -> str | None:
    """The Service of a template that asks for one (``service``, or a ``weight``: the
    router needs a Service to send that traffic to): its ``service.name``, else the
    ReplicaSet's name cut to a DNS label."""
    if template.service is None and template.weight is None:
        return None
    named = template.service.name if template.service else None
    return named or replica_set[:63].rstrip("-")


@dataclass(frozen=True)
class Wanted:
    """One ReplicaSet an experiment runs."""

    template: ExperimentTemplate
    source: str
    """The revision whose pod template it runs."""
    pod_hash: str
    name: str
    service: str | None


def wanted_sets(
    rollout: str, index: int, step: ExperimentStep, canary: str, stable: str
) -> list[Wanted]:
    """The ReplicaSets of the experiment at step ``index`` of ``canary``."""
    out: list[Wanted] = []
    for template in step.templates:
        source = stable if template.spec_ref == "stable" else canary
        hashed = pod_hash(canary, index, template.name, source)
        name = replica_set_name(rollout, template.name, hashed)
        out.append(Wanted(template, source, hashed, name, service_name(template, name)))
    return out


# -- traffic ---------------------------------------------------------------------------


def routed_services(rollout: Rollout) -> frozenset[str]:
    """The Services of weighted templates (``weight`` set) that Stepwise may have put in
    the router's split: those of every experiment step for the current canary and stable
    revisions, and those of the experiment recorded in the status. A router reports the
    weights of these (:attr:`~controller.core.model.TrafficState.extra_weights`) and
    leaves any other destination alone."""
    strategy = rollout.spec.strategy.canary
    if strategy is None:
        return frozenset()
    status = rollout.status
    names: set[str] = set()
    if status.canary_revision and status.stable_revision:
        for index, step in enumerate(strategy.steps):
            if step.experiment is None:
                continue
            for w in wanted_sets(
                rollout.metadata.name,
                index,
                step.experiment,
                status.canary_revision,
                status.stable_revision,
            ):
                if w.template.weight is not None and w.service:
                    names.add(w.service)
    exp = status.experiment
    if exp is not None and exp.step < len(strategy.steps):
        step_of = strategy.steps[exp.step].experiment
        by_name = {t.name: t for t in step_of.templates} if step_of else {}
        for recorded in exp.templates:
            template = by_name.get(recorded.name)
            if template is None or template.weight is None:
                continue
            service = service_name(template, recorded.replica_set)
            if service:
                names.add(service)
    return frozenset(names)


def wanted_weights(p: Pass, live: bool) -> dict[str, int]:
    """The router weights of the experiment's Services: each weighted template's
    ``weight`` while the experiment is live and Running (its pods Ready), none otherwise.
    Weights that would leave the stable Service less than nothing block the Rollout and
    are not routed."""
    exp = p.status.experiment
    if not live or exp is None or exp.phase != "Running":
        return {}
    step = p.canary.steps[exp.step].experiment
    assert step is not None
    by_name = {t.name: t for t in step.templates}
    wanted: dict[str, int] = {}
    for recorded in exp.templates:
        template = by_name.get(recorded.name)
        if template is None or not template.weight:
            continue
        service = service_name(template, recorded.replica_set)
        assert service is not None
        wanted[service] = template.weight
    total = sum(wanted.values())
    if p.weight + total > 100:
        p.block(
            f"experiment of step {exp.step}: its templates' weights ({total}%) and the canary "
            f"weight ({p.weight}%) add up to more than 100%; its Services get no traffic"
        )
        return {}
    return wanted


def route_weights(p: Pass, wanted: dict[str, int]) -> None:
    """Give the experiment's Services the ``wanted`` weights in the router (taken from
    the stable's share; the canary keeps its weight), taking out of the split every
    Service it routes to that is not wanted. Nothing without a router or while the
    router has a problem (the plan says why elsewhere)."""
    traffic = p.observed.traffic
    if not p.routed or traffic is None or traffic.problem:
        return
    if wanted == p.extra:
        return
    extra = {**dict.fromkeys(p.extra, 0), **wanted}
    p.actions.append(SetWeight(p.weight, tuple(sorted(extra.items()))))
    detail = ", ".join(f"{name} {w}%" for name, w in sorted(extra.items()))
    p.event("ExperimentWeightSet", f"experiment Services: {detail}")
    p.extra = dict(wanted)


def _still_routed(p: Pass, service: str | None) -> bool:
    """Whether the router may still send requests to ``service``: the router object
    routes to it, or it was a weighted template's Service and the data plane has not yet
    taken in the router's latest spec. Its ReplicaSet and Service are kept until not."""
    traffic = p.observed.traffic
    if service is None or traffic is None:
        return False
    if service in dict(traffic.extra_weights):
        return True
    return not traffic.settled and service in routed_services(p.rollout)


# -- analyses --------------------------------------------------------------------------

_TEMPLATE_VAR = re.compile(
    r"[{][{] *templates[.]([a-z0-9-]+)[.](podTemplateHash|replicaset[.]name) *[}][}]"
)


def fill_templates(text: str, sets: Mapping[str, Wanted]) -> str:
    """``text`` with every ``{{templates.<name>.podTemplateHash}}`` and
    ``{{templates.<name>.replicaset.name}}`` filled in; KeyError naming a template the
    experiment does not have."""

    def one(match: re.Match[str]) -> str:
        wanted = sets.get(match.group(1))
        if wanted is None:
            raise KeyError(match.group(1))
        return wanted.pod_hash if match.group(2) == "podTemplateHash" else wanted.name

    return _TEMPLATE_VAR.sub(one, text)


def analysis_for(
    step: ExperimentStep,
    analysis: ExperimentAnalysis,
    sets: list[Wanted],
    *,
    stable: str,
    canary: str,
) -> RolloutAnalysis | str:
    """What an experiment analysis measures: its templates, its args with the
    experiment's placeholders and ``podTemplateHashValue`` filled in, and the step's
    ``dryRun``; or a problem naming the argument."""
    by_name = {w.template.name: w for w in sets}
    args: list[AnalysisArg] = []
    for arg in analysis.args or []:
        hashed = arg.value_from.pod_template_hash_value if arg.value_from else None
        if hashed is not None:
            args.append(AnalysisArg(name=arg.name, value=stable if hashed == "Stable" else canary))
            continue
        if arg.value is None:
            args.append(arg)
            continue
        try:
            args.append(AnalysisArg(name=arg.name, value=fill_templates(arg.value, by_name)))
        except KeyError as missing:
            return (
                f"argument {arg.name}: {arg.value!r} names template {missing.args[0]}, which "
                f"the experiment does not have (it has {sorted(by_name)})"
            )
    base = analysis.analysis()
    return base.model_copy(update={"args": args or None, "dry_run": step.dry_run})


def due_in(
    rollout: Rollout,
    templates: Mapping[TemplateKey, AnalysisTemplateSpec | str],
    now: dt.datetime,
) -> list[an.Due]:
    """The measurements of the running experiment's analyses due at ``now`` (none while
    the Rollout is paused, aborted, or past the experiment's step)."""
    status = rollout.status
    exp = status.experiment
    canary = rollout.spec.strategy.canary
    if (
        exp is None
        or canary is None
        or exp.phase != "Running"
        or rollout.spec.paused
        or status.abort is not None
        or exp.revision != status.canary_revision
        or status.current_step_index != exp.step
        or exp.step >= len(canary.steps)
        or status.stable_revision is None
    ):
        return []
    step = canary.steps[exp.step].experiment
    if step is None:
        return []
    sets = wanted_sets(rollout.metadata.name, exp.step, step, exp.revision, status.stable_revision)
    out: list[an.Due] = []
    for spec in step.analyses or []:
        name = run_name(exp.step, spec.name)
        run = next(
            (r for r in status.analysis_runs if r.name == name and r.revision == exp.revision),
            None,
        )
        analysis = analysis_for(
            step, spec, sets, stable=status.stable_revision, canary=exp.revision
        )
        if run is None or isinstance(analysis, str):
            continue
        resolved = an.resolve(analysis, templates, rollout)
        out.extend(an.due(run, resolved, now, background=False))
    return out


# -- the step --------------------------------------------------------------------------


def run_step(
    p: Pass,
    index: int,
    step: ExperimentStep,
    canary: str,
    stable: str,
    intents: intents_mod.Intents,
) -> bool:
    """Carry out the experiment of step ``index``; True when the step is complete."""
    sets = wanted_sets(p.rollout.metadata.name, index, step, canary, stable)
    exp = _current(p, index, canary, sets)
    observed = {s.name: s for s in p.observed.experiment_sets}
    for w in sets:
        _ensure(p, w, observed.get(w.name))
    where = f"experiment of step {index}"
    if exp.phase == "Pending":
        unready = [
            f"{w.template.name} {_ready(observed.get(w.name))} of {w.template.replicas}"
            for w in sets
            if _ready(observed.get(w.name)) < w.template.replicas
        ]
        if unready:
            _hold(p, exp, f"{where}: pods Ready: " + ", ".join(unready), "PodsNotReady")
            return False
        exp = exp.model_copy(update={"phase": "Running", "running_since": p.now})
        p.event("ExperimentRunning", f"{where}: every ReplicaSet is Ready")
    runs = _judge(p, index, step, exp, sets, stable=stable, canary=canary)
    if runs is None:
        return False
    if intents.promotes(canary, index):
        p.event("ExperimentPromoted", f"{where} ended by promote")
        return _complete(p, exp, f"{where} ended by promote")
    return _finished(p, index, step, exp, runs)


def _current(p: Pass, index: int, canary: str, sets: list[Wanted]) -> ExperimentStatus:
    """The experiment of this step and canary in the status, or a new one (Pending)."""
    exp = p.status.experiment
    if exp is not None and exp.step == index and exp.revision == canary and exp.phase in ACTIVE:
        return exp
    p.event(
        "ExperimentStarted",
        f"experiment of step {index} started: "
        + ", ".join(f"{w.template.name} ({w.template.spec_ref})" for w in sets),
    )
    return ExperimentStatus(
        step=index,
        revision=canary,
        phase="Pending",
        started_at=p.now,
        templates=[
            ExperimentTemplateStatus(
                name=w.template.name, pod_template_hash=w.pod_hash, replica_set=w.name
            )
            for w in sets
        ],
    )


def _hold(p: Pass, exp: ExperimentStatus, message: str, reason: WaitReason) -> None:
    """The experiment waits: its status says why, and so does the Rollout's."""
    p.set(experiment=exp.model_copy(update={"message": message}))
    p.wait(
        "Paused" if reason in ("AwaitingPromotion", "AnalysisInconclusive") else "Progressing",
        message,
        reason,
    )


def _judge(
    p: Pass,
    index: int,
    step: ExperimentStep,
    exp: ExperimentStatus,
    sets: list[Wanted],
    *,
    stable: str,
    canary: str,
) -> dict[str, AnalysisRunStatus] | None:
    """Start, measure and judge the analyses of a Running experiment; None when the step
    cannot go on in this pass (an analysis failed and aborted the canary, or an argument
    names no template)."""
    runs: dict[str, AnalysisRunStatus] = {}
    for spec in step.analyses or []:
        analysis = analysis_for(step, spec, sets, stable=stable, canary=canary)
        if isinstance(analysis, str):
            p.set(experiment=exp.model_copy(update={"message": analysis}))
            p.block(f"experiment of step {index}, analysis {spec.name}: {analysis}")
            return None
        label = f"analysis {spec.name} of the experiment of step {index}"
        run = passes.judge_run(
            p,
            run_name(index, spec.name),
            analysis,
            canary,
            label=label,
            failed=label,
            background=False,
        )
        if p.aborted() or run is None:
            failed = f"analysis {spec.name} failed: {run.message if run else ''}"
            p.set(experiment=exp.model_copy(update={"phase": "Failed", "message": failed}))
            return None
        runs[spec.name] = run
    p.set(experiment=exp)
    return runs


def _finished(
    p: Pass,
    index: int,
    step: ExperimentStep,
    exp: ExperimentStatus,
    runs: dict[str, AnalysisRunStatus],
) -> bool:
    """Whether a Running experiment is complete: its duration has passed and its required
    analyses succeeded; otherwise it says what it waits for."""
    assert exp.running_since is not None
    where = f"experiment of step {index}"
    required = [a for a in step.analyses or [] if a.required_for_completion]
    if step.duration is None and not required:
        message = f"{where} runs until promoted (no duration, no requiredForCompletion analysis)"
        _hold(p, exp, message, "AwaitingPromotion")
        return False
    ends = exp.running_since + dt.timedelta(seconds=parse_duration(step.duration or 0))
    if p.now < ends:
        p.wake_at(ends)
        _hold(
            p,
            exp,
            f"{where} running until {ends.isoformat(timespec='seconds')}",
            "ExperimentRunning",
        )
        return False
    for spec in required:
        run = runs[spec.name]
        if run.phase == "Successful":
            continue
        message = f"{where} waits for analysis {spec.name}: {run.message or run.phase}"
        reason: WaitReason = "AnalysisRunning"
        if run.phase == "Inconclusive":
            reason = "AnalysisInconclusive"
        elif run.phase == "Error":
            reason = "AnalysisBlind"
        _hold(p, exp, message, reason)
        return False
    return _complete(p, exp, f"{where} completed")


def _complete(p: Pass, exp: ExperimentStatus, message: str) -> bool:
    p.set(experiment=exp.model_copy(update={"phase": "Successful", "message": message}))
    p.event("ExperimentCompleted", message)
    return True


def _ready(state: ExperimentSetState | None) -> int:
    return min(state.ready, state.replicas) if state is not None else 0


def _ensure(p: Pass, wanted: Wanted, observed: ExperimentSetState | None) -> None:
    """Create or scale one of the experiment's ReplicaSets."""
    replicas = wanted.template.replicas
    if observed is not None and observed.replicas == replicas:
        return
    meta = wanted.template.metadata
    p.actions.append(
        ScaleExperimentSet(
            name=wanted.name,
            template=wanted.template.name,
            pod_hash=wanted.pod_hash,
            source=wanted.source,
            spec_ref=wanted.template.spec_ref,
            replicas=replicas,
            labels=tuple(sorted((meta.labels if meta else {}).items())),
            annotations=tuple(sorted(((meta.annotations or {}) if meta else {}).items())),
            selector=wanted.template.selector,
            service=wanted.service,
        )
    )


def reconcile_sets(p: Pass) -> None:
    """Delete every experiment ReplicaSet the current experiment does not run. An
    experiment that is still Pending or Running but no longer current (aborted, promoted
    past, superseded by a newer revision, back to stable) becomes Terminated."""
    exp = p.status.experiment
    status = p.status
    live = (
        exp is not None
        and exp.phase in ACTIVE
        and not p.aborted()
        and exp.revision == status.canary_revision
        and status.canary_revision != status.stable_revision
        and status.current_step_index == exp.step
        and exp.step < len(p.canary.steps)
        and p.canary.steps[exp.step].experiment is not None
    )
    if exp is not None and exp.phase in ACTIVE and not live:
        why = _why_ended(p, exp)
        p.set(experiment=exp.model_copy(update={"phase": "Terminated", "message": why}))
        p.event("ExperimentTerminated", why)
    route_weights(p, wanted_weights(p, live))
    keep = {t.replica_set for t in exp.templates} if exp is not None and live else set()
    for state in p.observed.experiment_sets:
        if state.name in keep:
            continue
        if _still_routed(p, state.service):
            # Never a route to a deleted Service: its weight leaves the router first (a
            # router with a problem cannot take it out: looked at again less often).
            traffic = p.observed.traffic
            blocked = traffic is not None and traffic.problem is not None
            later = dt.timedelta(seconds=passes.BLOCKED_RECHECK_SECONDS)
            p.wake_at(p.now + (later if blocked else passes.SETTLE_RECHECK))
            continue
        p.actions.append(DeleteExperimentSet(state.name, state.service))


def _why_ended(p: Pass, exp: ExperimentStatus) -> str:
    where = f"experiment of step {exp.step} (canary {exp.revision})"
    status = p.status
    if p.aborted():
        return f"{where} terminated: the canary was aborted"
    if exp.revision != status.canary_revision or status.canary_revision == status.stable_revision:
        return f"{where} terminated: the canary is no longer {exp.revision}"
    return f"{where} terminated: the rollout moved past step {exp.step}"
