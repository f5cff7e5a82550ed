"""The ``job`` provider's decisions: one Kubernetes Job per measurement, and what it means.

Where it sits in the flow::

    measuring pool (a "job" worker) ─▶ runtime.measure_job.JobTaker
        ─▶ ref_for(): which measurement (rollout, run, revision, run start, metric, index)
        ─▶ build_job(): the Job, named by job_name(), arguments filled in its strings
        ─▶ adapters.jobs creates it (or finds it: a restarted controller re-attaches)
        ─▶ outcome() on each read of the Job (and, once it failed, of its pods)
        ─▶ unwanted() while it runs: an aborted or superseded run's Job is deleted
    after the verdict: cleanup() says which of a Rollout's Jobs go

Everything here is pure: Jobs and pods are the API's JSON (camelCase dicts), the Rollout
status is the model. The rules:

=====================================  ================================================
the Job                                measurement
=====================================  ================================================
condition ``Complete=True``            Successful
condition ``Failed=True``              Failed: ``job <name> failed: <reason>: pod <pod>:
                                       container <c>: exit code <n>: <message>`` (the
                                       Job's own message when no failed pod is readable)
neither                                still running (no outcome yet)
not finished by :func:`wait_limit`     Error (the runtime deletes it)
=====================================  ================================================

A Job's name is deterministic (:func:`job_name`): the same measurement always has the
same name, so creating it twice finds the first (409) instead of running a second Job;
a retried run (a new start time) or the next measurement (a new index) gets a new one.

Which Jobs go (:func:`cleanup`), decided from the *persisted* Rollout status:

* a running Job whose measurement is no longer wanted (the canary was aborted or
  replaced, the run ended or restarted, or the measurement is already recorded) is
  deleted at once: nothing would read its verdict;
* a finished Job whose verdict is recorded (or whose run is gone) is deleted if it
  Completed; of the Failed ones the newest per metric is kept, so that the logs of the
  Job that failed a canary stay readable (``kubectl logs job/<name>``) until a newer one
  fails or the Rollout is deleted (its owner reference takes them all);
* a finished Job whose verdict is not recorded yet is kept: the measurement (or a
  restarted controller) still reads it.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from controller.api.analysis import JobProvider
from controller.api.rollout import GROUP, VERSION, MeasurementPhase, Rollout, RolloutStatus

ROLLOUT_LABEL: Final = "stepwise.dev/rollout"
"""The Rollout's name (the same label as its ReplicaSets')."""
RUN_LABEL: Final = "stepwise.dev/analysis-run"
"""The analysis run (``step-<i>`` or ``background``)."""
METRIC_LABEL: Final = "stepwise.dev/metric"
"""The metric's name."""
REVISION_ANNOTATION: Final = "stepwise.dev/revision"
"""The canary revision judged (an annotation: the Job's pods must not look like the
revision's own pods to a Service that selects on the label)."""
RUN_STARTED_ANNOTATION: Final = "stepwise.dev/run-started"
"""When the run started (UTC, whole seconds): a retried run is another run."""
MEASUREMENT_ANNOTATION: Final = "stepwise.dev/measurement"
"""The measurement's index in the metric (0 for the first)."""

MAX_NAME: Final = 63
"""Job names become the ``job-name`` label of its pods: at most 63 characters."""
HASH_LENGTH: Final = 8

DEFAULT_WAIT: Final = 600.0
"""Seconds a Job without ``activeDeadlineSeconds`` may take before its measurement is an
Error (and the Job is deleted)."""
WAIT_MARGIN: Final = 60.0
"""Seconds beyond ``activeDeadlineSeconds`` before giving up: the Job controller fails
the Job at its deadline, and this leaves it the time to say so."""
DEFAULT_TTL: Final = 86400
"""``ttlSecondsAfterFinished`` when the template sets none: a finished Job that the
controller could not clean up (it was down, or lost the permission) is still removed
by Kubernetes after a day."""
MESSAGE_LIMIT: Final = 300
"""Characters of a container's termination message kept in a measurement's message."""

_PLACEHOLDER = re.compile(r"[{][{]\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*[}][}]")

Verdict = Literal["Complete", "Failed"]


class JobTemplateError(ValueError):
    """The Job cannot be built: the message names the field and the reason."""


@dataclass(frozen=True)
class JobRef:
    """One measurement of one metric, as a Job: everything its name is made of."""

    namespace: str
    rollout: str
    run: str
    revision: str
    run_started: dt.datetime
    metric: str
    index: int

    @property
    def name(self) -> str:
        """The Job's name (:func:`job_name`)."""
        return job_name(self)

    @property
    def started_text(self) -> str:
        """The run's start as written on the Job (UTC, whole seconds)."""
        return _seconds(self.run_started)


def _seconds(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_name(ref: JobRef) -> str:
    """``<rollout>-<revision>-<run>-<metric>-<index>-<hash>``, cut to 63 characters.

    The hash covers every part in full (the run's start included), so two measurements
    never share a name even when the readable part had to be cut, and a retried run of
    the same revision gets new Jobs. The same measurement always gets the same name."""
    parts = (ref.rollout, ref.revision, ref.run, ref.metric, str(ref.index))
    key = "\x00".join((ref.namespace, *parts, ref.started_text))
    digest = hashlib.sha256(key.encode()).hexdigest()[:HASH_LENGTH]
    readable = "-".join(parts)[: MAX_NAME - HASH_LENGTH - 1].rstrip("-.")
    return f"{readable}-{digest}"


def ref_for(rollout: Rollout, run_name: str, metric: str) -> JobRef | str:
    """The measurement of ``metric`` due in ``run_name``, from the Rollout's status (its
    index is the count of measurements taken so far), or why there is none."""
    status = rollout.status
    run = next(
        (
            r
            for r in status.analysis_runs
            if r.name == run_name and r.revision == status.canary_revision
        ),
        None,
    )
    if run is None:
        return f"analysis run {run_name} of the canary is not in the Rollout's status"
    result = next((m for m in run.metrics if m.name == metric), None)
    if result is None:
        return f"metric {metric} is not in analysis run {run_name}"
    if not rollout.metadata.uid:
        return "the Rollout has no uid yet"
    return JobRef(
        namespace=rollout.metadata.namespace or "default",
        rollout=rollout.metadata.name,
        run=run.name,
        revision=run.revision,
        run_started=run.started_at,
        metric=metric,
        index=result.count,
    )


# -- building the Job -------------------------------------------------------------------


def fill(
    value: Any,
    values: Mapping[str, str],
    secret: frozenset[str] = frozenset(),
    path: str = "spec",
) -> Any:
    """``value`` with ``{{name}}`` placeholders filled in its **strings only**: a copy in
    which dicts, lists, numbers and booleans keep their shape (keys are not touched), so
    a value can never add a field or change a type. A filled-in value is not searched
    again. ``{{args.NAME}}`` with no such argument is an error naming the field; another
    unknown ``{{...}}`` (a shell or Go template in a script) is left as written. A
    Secret-valued argument (``secret``) is refused: a Job's spec is readable by whoever
    may read Jobs, so a Secret belongs in the pod (``env[].valueFrom.secretKeyRef``)."""
    if isinstance(value, dict):
        return {k: fill(v, values, secret, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values, secret, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return copy.deepcopy(value)

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in secret:
            raise JobTemplateError(
                f"{path}: {{{{{name}}}}} comes from a Secret, and a Job's spec is readable by "
                "whoever may read Jobs: read the Secret in the pod instead "
                "(env[].valueFrom.secretKeyRef)"
            )
        if name in values:
            return values[name]
        if name.startswith("args."):
            raise JobTemplateError(f"{path}: no argument {name.removeprefix('args.')!r}")
        return match.group(0)

    return _PLACEHOLDER.sub(one, value)


def secret_names(values: Mapping[str, str], redact: Sequence[str]) -> frozenset[str]:
    """The placeholders whose value came from a Secret (an empty value hides nothing)."""
    hidden = {v for v in redact if v}
    return frozenset(k for k, v in values.items() if v in hidden)


def build_job(
    ref: JobRef,
    provider: JobProvider,
    values: Mapping[str, str],
    *,
    owner_uid: str,
    secret: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The Job of one measurement: the template's ``spec`` (arguments filled in its
    strings, ``ttlSecondsAfterFinished`` defaulted to :data:`DEFAULT_TTL`), its labels
    and annotations with Stepwise's own added (ours win), owned by the Rollout as its
    controller, so that deleting the Rollout deletes its Jobs. Raises
    :class:`JobTemplateError`."""
    spec = fill(provider.spec, values, secret, "spec")
    if not isinstance(spec.get("template"), dict):
        raise JobTemplateError("spec.template: a Job needs a pod template")
    spec.setdefault("ttlSecondsAfterFinished", DEFAULT_TTL)
    meta = provider.metadata
    labels = fill(dict(meta.labels or {}), values, secret, "metadata.labels") if meta else {}
    annotations = (
        fill(dict(meta.annotations or {}), values, secret, "metadata.annotations") if meta else {}
    )
    labels |= {ROLLOUT_LABEL: ref.rollout, RUN_LABEL: ref.run, METRIC_LABEL: ref.metric}
    annotations |= {
        REVISION_ANNOTATION: ref.revision,
        RUN_STARTED_ANNOTATION: ref.started_text,
        MEASUREMENT_ANNOTATION: str(ref.index),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Rollout",
                    "name": ref.rollout,
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def wait_limit(spec: Mapping[str, Any]) -> float:
    """Seconds a measurement waits for its Job, from the Job's creation: its
    ``activeDeadlineSeconds`` plus :data:`WAIT_MARGIN`, else :data:`DEFAULT_WAIT`."""
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline > 0:
        return deadline + WAIT_MARGIN
    return DEFAULT_WAIT


def ref_of(job: Mapping[str, Any]) -> JobRef | None:
    """The measurement a Job was created for, from its labels and annotations (None for
    a Job that lacks them: not Stepwise's, or edited, and never touched)."""
    meta = job.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    try:
        started = dt.datetime.strptime(
            annotations[RUN_STARTED_ANNOTATION], "%Y-%m-%dT%H:%M:%SZ"
        ).replace(tzinfo=dt.UTC)
        return JobRef(
            namespace=str(meta.get("namespace") or ""),
            rollout=labels[ROLLOUT_LABEL],
            run=labels[RUN_LABEL],
            revision=annotations[REVISION_ANNOTATION],
            run_started=started,
            metric=labels[METRIC_LABEL],
            index=int(annotations[MEASUREMENT_ANNOTATION]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def made_for(job: Mapping[str, Any], ref: JobRef) -> bool:
    """Whether an existing Job of that name is the one this measurement creates."""
    found = ref_of(job)
    return found is not None and _identity(found) == _identity(ref)


def _identity(ref: JobRef) -> tuple[str, ...]:
    return (
        ref.namespace,
        ref.rollout,
        ref.run,
        ref.revision,
        ref.started_text,
        ref.metric,
        str(ref.index),
    )


# -- reading the Job --------------------------------------------------------------------


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def verdict(job: Mapping[str, Any]) -> Verdict | None:
    """``Complete`` or ``Failed`` once the Job controller has said so, else None."""
    if _condition(job, "Complete") is not None:
        return "Complete"
    if _condition(job, "Failed") is not None:
        return "Failed"
    return None


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > MESSAGE_LIMIT:
        return "..." + flat[-MESSAGE_LIMIT:]  # a log tail ends with what went wrong
    return flat


def _owned_by(pod: Mapping[str, Any], uid: str | None) -> bool:
    if not uid:
        return True
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs)


def _terminated(pod: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The first container (init containers first) that ended with a non-zero code."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            if not isinstance(container, Mapping):
                continue
            for state_key in ("state", "lastState"):
                ended = (container.get(state_key) or {}).get("terminated")
                if isinstance(ended, Mapping) and ended.get("exitCode") not in (0, None):
                    return str(container.get("name") or "?"), ended
    return None


def _finished_at(pod: Mapping[str, Any]) -> str:
    ended = _terminated(pod)
    if ended is not None and ended[1].get("finishedAt"):
        return str(ended[1]["finishedAt"])
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def describe_pod(pod: Mapping[str, Any]) -> str:
    """Why a failed pod failed: ``pod <name>: container <c>: exit code <n> (<reason>):
    <termination message>``, or the pod's own reason (evicted, deadline)."""
    name = (pod.get("metadata") or {}).get("name") or "?"
    ended = _terminated(pod)
    if ended is not None:
        container, state = ended
        text = f"pod {name}: container {container}: exit code {state.get('exitCode')}"
        reason = str(state.get("reason") or "")
        if reason and reason not in ("Error", "Completed"):
            text += f" ({reason})"
        message = _one_line(str(state.get("message") or ""))
        return f"{text}: {message}" if message else text
    status = pod.get("status") or {}
    reason, message = str(status.get("reason") or ""), _one_line(str(status.get("message") or ""))
    detail = ": ".join(p for p in (reason, message) if p) or f"phase {status.get('phase')}"
    return f"pod {name}: {detail}"


def failed_pod(
    pods: Sequence[Mapping[str, Any]], job: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The Job's most recently failed pod, if any."""
    uid = (job.get("metadata") or {}).get("uid")
    failed = [
        p for p in pods if (p.get("status") or {}).get("phase") == "Failed" and _owned_by(p, uid)
    ]
    return max(failed, key=_finished_at) if failed else None


@dataclass(frozen=True)
class Reading:
    """A Job's outcome: the phase and message of its measurement."""

    phase: MeasurementPhase
    message: str


def outcome(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]] = (),
    pods_problem: str | None = None,
) -> Reading | None:
    """What a finished Job means (None while it runs). For a failed Job, ``pods`` are its
    pods (the most recently failed one is described), or ``pods_problem`` says why they
    could not be read."""
    name = (job.get("metadata") or {}).get("name") or "?"
    state = verdict(job)
    if state is None:
        return None
    if state == "Complete":
        return Reading("Successful", f"job {name} completed")
    cond = _condition(job, "Failed") or {}
    text = f"job {name} failed: {cond.get('reason') or 'Failed'}"
    pod = failed_pod(pods, job)
    if pod is not None:
        return Reading("Failed", f"{text}: {describe_pod(pod)}")
    if cond.get("message"):
        text += f": {_one_line(str(cond['message']))}"
    if pods_problem:
        text += f" (its pods could not be read: {pods_problem})"
    return Reading("Failed", text)


# -- which Jobs are still wanted, and which go ------------------------------------------


def unwanted(status: RolloutStatus, ref: JobRef) -> str | None:
    """Why the measurement ``ref`` will never be recorded (or already is), from the
    Rollout's persisted status; None while it is still awaited."""
    if status.abort is not None and status.abort.revision == ref.revision:
        return f"the canary {ref.revision} was aborted"
    if status.canary_revision != ref.revision:
        return f"revision {ref.revision} is no longer the canary"
    run = next((r for r in status.analysis_runs if r.name == ref.run), None)
    if run is None or run.revision != ref.revision or _seconds(run.started_at) != ref.started_text:
        return f"analysis run {ref.run} has ended"
    if run.phase == "Failed" or (run.phase == "Successful" and ref.run != "background"):
        return f"analysis run {ref.run} is {run.phase}"
    result = next((m for m in run.metrics if m.name == ref.metric), None)
    if result is None:
        return f"metric {ref.metric} is not in analysis run {ref.run}"
    if result.phase == "Failed":
        return f"metric {ref.metric} has failed"
    if result.count > ref.index:
        return f"measurement {ref.index} of {ref.metric} is recorded"
    return None


@dataclass(frozen=True)
class Deletion:
    """A Job to delete, and why."""

    name: str
    uid: str | None
    reason: str


@dataclass(frozen=True)
class Cleanup:
    """What to do with a Rollout's Jobs now."""

    delete: tuple[Deletion, ...]
    pending: bool
    """Some Job still waits for its verdict to be recorded (or still runs): look again."""


def _created(job: Mapping[str, Any]) -> str:
    return str((job.get("metadata") or {}).get("creationTimestamp") or "")


def cleanup(status: RolloutStatus, jobs: Sequence[Mapping[str, Any]]) -> Cleanup:
    """Which of a Rollout's Jobs to delete (see the module docstring). Jobs without
    Stepwise's labels and annotations, and Jobs already being deleted, are left alone."""
    delete: list[Deletion] = []
    pending = False
    failed_done: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        meta = job.get("metadata") or {}
        ref = ref_of(job)
        if ref is None or meta.get("deletionTimestamp"):
            continue
        why = unwanted(status, ref)
        state = verdict(job)
        if why is None:
            pending = True  # running, or finished and not recorded yet
        elif state is None:
            delete.append(Deletion(str(meta.get("name")), meta.get("uid"), f"running, but {why}"))
        elif state == "Complete":
            delete.append(Deletion(str(meta.get("name")), meta.get("uid"), f"completed; {why}"))
        else:
            failed_done.setdefault(ref.metric, []).append(job)
    for finished in failed_done.values():
        finished.sort(key=_created)
        for job in finished[:-1]:  # the newest failed Job of each metric is kept
            meta = job.get("metadata") or {}
            delete.append(
                Deletion(
                    str(meta.get("name")), meta.get("uid"), "failed; a newer failed Job is kept"
                )
            )
    return Cleanup(tuple(delete), pending)
