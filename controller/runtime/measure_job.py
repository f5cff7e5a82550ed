"""Taking a ``job`` metric's measurement: create (or find) its Job, wait for its verdict.

Where it sits: the measuring pool runs :class:`JobTaker` on a worker of the ``job``
provider (never a reconcile worker, nor a Prometheus or web one), through
:class:`controller.runtime.measure.PrometheusMeasurer`, which fills the variables. One
call is one measurement, and it blocks until the Job has a verdict:

1. :func:`controller.core.jobs.ref_for` names the measurement (Rollout, run, revision,
   run start, metric, index = measurements taken so far); the Job's name follows from it.
2. The Job is built (:func:`controller.core.jobs.build_job`) and created. If it exists
   already (409), it is that measurement's Job from a controller that stopped or crashed
   mid-measurement: this one re-attaches to it, and no second Job runs.
3. The Job is read every ``poll`` seconds (growing to ``max_poll``), until it is
   Complete or Failed (a failed Job's pods are read once, to say why). Every ``recheck``
   seconds the Rollout's persisted status is read: a measurement that will never be
   recorded (the canary aborted or replaced, the run ended) deletes its Job at once.
4. A Job that has no verdict :func:`~controller.core.jobs.wait_limit` seconds after its
   creation is deleted, and the measurement is an Error.
5. The pool's stop (:func:`controller.runtime.measuring.current_stop`: the controller is
   stopping, the Rollout is gone) ends the wait at once and leaves the Job alone.

After each verdict a clean-up of the Rollout's Jobs is scheduled on one background
thread (:func:`controller.core.jobs.cleanup` decides from the persisted status: a
finished Job goes once its verdict is recorded, the newest failed Job of each metric is
kept for its logs); it runs again a few times while some verdict is not yet written.

Nothing here raises: every failure is an Error outcome naming the metric and the Job. A
Secret-valued argument is never put in a Job (see :func:`controller.core.jobs.fill`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any, Protocol

import structlog
from kubernetes import client
from pydantic import ValidationError

from controller.adapters.jobs import JobsAdapter
from controller.api.rollout import Rollout, RolloutStatus
from controller.clock import SYSTEM_CLOCK, Clock
from controller.core import analysis as an
from controller.core import jobs
from controller.core.measurement import Outcome
from controller.errors import ApiError, ForbiddenError, InvalidError, NotFoundError
from controller.runtime.measure import Variables
from controller.runtime.measuring import current_stop

log = structlog.get_logger()

#: Seconds after a verdict, then between tries, at which a Rollout's Jobs are cleaned up
#: while some verdict is not yet recorded in its persisted status (tallies may wait 10 s).
SWEEP_DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0, 30.0, 60.0, 120.0)


class JobsApi(Protocol):
    """The Kubernetes calls the taker makes (:class:`controller.adapters.jobs.JobsAdapter`)."""

    def create(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job, or return the existing one of that name: (job, created)."""
        ...

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The Job (NotFoundError when gone)."""
        ...

    def list_jobs(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Jobs with these labels."""
        ...

    def delete(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete a Job and its pods; False when it was gone already."""
        ...

    def pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods."""
        ...

    def rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Rollout as persisted (None when there is none)."""
        ...


def _created(job: Mapping[str, Any]) -> dt.datetime | None:
    text = (job.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(eq=False)
class JobTaker:
    """The ``job`` provider (a :class:`controller.runtime.measure.ProviderTaker`)."""

    api: JobsApi
    _: KW_ONLY
    clock: Clock = SYSTEM_CLOCK
    poll: float = 1.0
    max_poll: float = 5.0
    recheck: float = 5.0
    sweep_delays: tuple[float, ...] = SWEEP_DELAYS

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._sweeps: dict[tuple[str, str], tuple[float, int]] = {}
        """(namespace, rollout) -> (when, attempt) of its next clean-up."""
        self._sweeper: threading.Thread | None = None

    # -- one measurement ---------------------------------------------------------------

    def __call__(self, rollout: Rollout, item: an.Due, variables: Variables) -> Outcome:
        metric = item.metric.name
        try:
            return self._take(rollout, item, variables)
        except Exception as exc:  # never into the decision logic
            log.error("job measurement failed unexpectedly", metric=metric, exc_info=True)
            return Outcome("Error", None, f"{metric}: unexpected {type(exc).__name__}")

    def _take(self, rollout: Rollout, item: an.Due, variables: Variables) -> Outcome:
        metric = item.metric.name
        provider = item.metric.provider.job
        if provider is None:
            return Outcome("Error", None, f"{metric}: not a job metric")
        ref = jobs.ref_for(rollout, item.run, metric)
        if isinstance(ref, str):
            return Outcome("Error", None, f"{metric}: {ref}")
        name, namespace = ref.name, ref.namespace
        bound = log.bind(job=name, metric=metric, run=ref.run, measurement=ref.index)
        self.schedule_sweep(namespace, ref.rollout, 0.0)  # earlier measurements' Jobs
        try:
            body = jobs.build_job(
                ref,
                provider,
                variables.values,
                owner_uid=str(rollout.metadata.uid),
                secret=jobs.secret_names(variables.values, variables.redact),
            )
        except jobs.JobTemplateError as exc:
            return Outcome("Error", None, f"{metric}: job {name}: {exc}")
        try:
            job, created = self.api.create(namespace, body)
        except InvalidError as exc:
            return Outcome("Error", None, f"{metric}: the API server refused job {name}: {exc}")
        except ForbiddenError as exc:
            return Outcome(
                "Error",
                None,
                f"{metric}: cannot create job {name}: the controller needs create and get "
                f"on jobs (batch) in namespace {namespace}: {exc}",
            )
        except ApiError as exc:
            return Outcome("Error", None, f"{metric}: cannot create job {name}: {exc}")
        if not created and not jobs.made_for(job, ref):
            return Outcome(
                "Error",
                None,
                f"{metric}: a Job named {name} exists in {namespace} and was not created "
                "for this measurement; it is left alone",
            )
        bound.info("job created" if created else "job attached", uid=_uid(job))
        return self._wait(ref, job, jobs.wait_limit(provider.spec), bound)

    def _wait(self, ref: jobs.JobRef, job: dict[str, Any], limit: float, bound: Any) -> Outcome:
        stop = current_stop()
        metric, name, namespace = ref.metric, ref.name, ref.namespace
        created = _created(job) or self.clock.now()
        give_up = created + dt.timedelta(seconds=limit)
        wait = self.poll
        next_check = self.clock.monotonic() + self.recheck
        while True:
            reading = self._read(job)
            if reading is not None:
                bound.info("job finished", phase=reading.phase, message=reading.message)
                self.schedule_sweep(namespace, ref.rollout)
                return Outcome(reading.phase, None, reading.message)
            if self.clock.now() >= give_up:
                self._delete(namespace, name, _uid(job), f"no verdict within {limit:g}s", bound)
                return Outcome(
                    "Error",
                    None,
                    f"{metric}: job {name} did not finish within {limit:g}s of its creation "
                    "(deleted); a longer Job needs spec.activeDeadlineSeconds",
                )
            if stop.wait(wait):
                bound.info("job measurement stopped; the job is left to finish")
                return Outcome("Error", None, f"{metric}: stopped waiting for job {name}")
            wait = min(wait * 1.5, self.max_poll)
            if self.clock.monotonic() >= next_check:
                next_check = self.clock.monotonic() + self.recheck
                why = self._unwanted(ref)
                if why is not None:
                    self._delete(namespace, name, _uid(job), why, bound)
                    self.schedule_sweep(namespace, ref.rollout)
                    return Outcome("Error", None, f"{metric}: job {name} deleted: {why}")
            try:
                job = self.api.get(namespace, name)
            except NotFoundError:
                return Outcome(
                    "Error", None, f"{metric}: job {name} was deleted before it finished"
                )
            except ForbiddenError as exc:
                return Outcome(
                    "Error",
                    None,
                    f"{metric}: cannot read job {name}: the controller needs get on jobs "
                    f"(batch) in namespace {namespace}: {exc}",
                )
            except ApiError as exc:  # retried already; the next read may do better
                bound.warning("cannot read job", error=str(exc))

    def _read(self, job: dict[str, Any]) -> jobs.Reading | None:
        """The Job's outcome, with its failed pod described when it failed."""
        if jobs.verdict(job) != "Failed":
            return jobs.outcome(job)
        meta = job.get("metadata") or {}
        try:
            pods = self.api.pods(str(meta.get("namespace")), str(meta.get("name")))
        except ApiError as exc:
            return jobs.outcome(job, pods_problem=str(exc))
        return jobs.outcome(job, pods)

    def _unwanted(self, ref: jobs.JobRef) -> str | None:
        """Why the measurement will never be recorded, from the persisted Rollout (None
        when it is still awaited, or the Rollout cannot be read: then nothing is
        deleted)."""
        status = self._status(ref.namespace, ref.rollout)
        return None if status is None else jobs.unwanted(status, ref)

    def _status(self, namespace: str, rollout: str) -> RolloutStatus | None:
        try:
            raw = self.api.rollout(namespace, rollout)
        except ApiError as exc:
            log.warning("cannot read the rollout for its jobs", error=str(exc))
            return None
        if raw is None:
            return None  # deleted: its owner reference takes the Jobs
        try:
            return RolloutStatus.model_validate(raw.get("status") or {})
        except ValidationError:
            return None

    def _delete(self, namespace: str, name: str, uid: str | None, why: str, bound: Any) -> None:
        try:
            if self.api.delete(namespace, name, uid):
                bound.info("job deleted", reason=why)
        except ApiError as exc:
            bound.warning("cannot delete job", reason=why, error=str(exc))

    # -- cleaning up ---------------------------------------------------------------------

    def schedule_sweep(self, namespace: str, rollout: str, delay: float | None = None) -> None:
        """Clean up the Rollout's Jobs after ``delay`` seconds (default: the first of
        :data:`SWEEP_DELAYS`), on the sweeper thread."""
        wait = self.sweep_delays[0] if delay is None else delay
        with self._lock:
            when = self.clock.monotonic() + wait
            current = self._sweeps.get((namespace, rollout))
            if current is None or when < current[0]:
                self._sweeps[(namespace, rollout)] = (when, 0)
            if self._sweeper is None:
                self._sweeper = threading.Thread(
                    target=self._sweep_loop, name="job-cleanup", daemon=True
                )
                self._sweeper.start()
            self._lock.notify()

    def _sweep_loop(self) -> None:
        while True:
            with self._lock:
                now = self.clock.monotonic()
                ready = [
                    (key, attempt) for key, (when, attempt) in self._sweeps.items() if when <= now
                ]
                for key, _ in ready:
                    del self._sweeps[key]
                if not ready:
                    soonest = min((w for w, _ in self._sweeps.values()), default=None)
                    self._lock.wait(None if soonest is None else max(0.05, soonest - now))
                    continue
            for (namespace, rollout), attempt in ready:
                pending = self.sweep(namespace, rollout)
                if pending and attempt + 1 < len(self.sweep_delays):
                    with self._lock:
                        if (namespace, rollout) not in self._sweeps:
                            when = self.clock.monotonic() + self.sweep_delays[attempt + 1]
                            self._sweeps[(namespace, rollout)] = (when, attempt + 1)

    def sweep(self, namespace: str, rollout: str) -> bool:
        """Delete the Rollout's Jobs that :func:`controller.core.jobs.cleanup` lets go;
        True when some Job still waits for its verdict to be recorded."""
        bound = log.bind(rollout=rollout, namespace=namespace)
        status = self._status(namespace, rollout)
        if status is None:
            return False
        try:
            found = self.api.list_jobs(namespace, {jobs.ROLLOUT_LABEL: rollout})
        except ApiError as exc:
            bound.warning("cannot list the rollout's jobs", error=str(exc))
            return False
        decided = jobs.cleanup(status, found)
        for gone in decided.delete:
            self._delete(namespace, gone.name, gone.uid, gone.reason, bound.bind(job=gone.name))
        return decided.pending


def _uid(job: Mapping[str, Any]) -> str | None:
    uid = (job.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def job_taker(api_client: client.ApiClient, *, clock: Clock = SYSTEM_CLOCK) -> JobTaker:
    """The ``job`` provider over the Kubernetes API."""
    return JobTaker(JobsAdapter(api_client), clock=clock)
