"""The measuring pool: providers are called here, never inside a reconcile.

Where it sits: the reconciler hands :meth:`MeasuringPool.measure` the measurements that are
due, exactly as it would hand them to a blocking measurer. The pool answers at once with
the ones that have *finished* since the last pass, and starts the others on worker threads
of their own provider. When one finishes, the pool queues the Rollout's key again
(``wake``), and the next pass records it. A reconcile therefore never waits on a provider:
an abort, a promote, a new revision or the end of a pause is decided on the next pass,
whatever Prometheus does.

Limits, per provider (one Prometheus address, or the default one):

* at most ``per_provider`` measurements run at once; the rest wait their turn, so a
  provider that hangs holds only its own workers, never another provider's or the
  reconcile workers;
* a measurement that has not finished ``deadline`` seconds after it started is given up:
  its result is an Error naming the provider and the time, and whatever it returns later is
  dropped;
* ``breaker_after`` timeouts in a row open the provider's breaker for ``cooldown``
  seconds: measurements due meanwhile are Errors at once ("not asked until ..."), so a dead
  provider costs no threads and the analysis policies (``onProviderError``) decide; after
  the cool-down one measurement is let through, and its success closes the breaker.

Jobs (the ``job`` provider) are long: a measurement is a Kubernetes Job that may run for
minutes, and its worker mostly waits between reads of the Job. So the ``job`` provider
has ``job_workers`` workers of its own (never a Prometheus or web provider's), its
deadline is the Job's own limit (:func:`controller.core.jobs.wait_limit`: the Job's
``activeDeadlineSeconds`` plus a margin, or 10 minutes) plus :data:`JOB_DEADLINE_MARGIN`,
and it has no breaker: a Job that runs long says something about that Job, not about the
API server, and must not refuse every other Rollout's Jobs.

A long measurement ends early when the pool asks it to: :func:`current_stop` is, on a
worker, an event set when the pool closes, when the measurement's Rollout is forgotten
and when its deadline gives it up. A Job measurement stops waiting then and leaves the Job
alone (a restarted controller re-attaches to it by its name).

A result is delivered only to the run it was taken for: the key includes the run's name,
its revision and its start time, so a measurement of an aborted or superseded run is
dropped, never recorded into its successor.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass
from typing import Protocol

import structlog

from controller.api.analysis import Metric
from controller.api.rollout import Measurement, Rollout
from controller.clock import SYSTEM_CLOCK, Clock
from controller.core import analysis as an
from controller.core import jobs
from controller.core.measurement import Outcome

log = structlog.get_logger()

DEFAULT_PROVIDER = "default"
JOB_PROVIDER = "job"
JOB_DEADLINE_MARGIN = 60.0
"""Seconds the pool waits for a Job measurement beyond the Job's own limit: the taker
gives up first (and deletes the Job); the pool's deadline is the backstop."""
_NO_BREAKER = frozenset({JOB_PROVIDER})

_NEVER = threading.Event()
_STOP: contextvars.ContextVar[threading.Event] = contextvars.ContextVar(
    "measurement_stop", default=_NEVER
)


@contextlib.contextmanager
def stop_on(event: threading.Event) -> Iterator[None]:
    """Within the block, :func:`current_stop` is ``event`` (the pool runs each
    measurement so; a test may too)."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def current_stop() -> threading.Event:
    """On a pool worker, the event that asks the running measurement to stop waiting
    (the pool closes, its Rollout was deleted, or its deadline passed); elsewhere an
    event that is never set."""
    return _STOP.get()


class Taker(Protocol):
    """Takes one measurement, blocking until the provider answers (never raises: a
    failure is an Error outcome, with its ``error_kind`` when a query failed)."""

    def take(self, rollout: Rollout, item: an.Due) -> Outcome:
        """The judged outcome of one due measurement."""
        ...


@dataclass(frozen=True)
class JobKey:
    """One measurement of one metric of one run of one Rollout."""

    rollout: str
    run: str
    revision: str
    run_started: dt.datetime
    metric: str


@dataclass
class _Job:
    key: JobKey
    provider: str
    started: float
    deadline: float
    stop: threading.Event
    future: Future[Outcome] | None = None


@dataclass
class _Provider:
    executor: ThreadPoolExecutor
    timeouts: int = 0
    """Timeouts in a row."""
    open_until: float | None = None
    """While set and in the future, the breaker is open."""
    probing: bool = False
    """A half-open trial measurement is running."""


class _GivenUpError(Exception):
    """A queued measurement whose deadline passed before a worker took it."""


def provider_of(metric: Metric) -> str:
    """The provider a metric's measurements go to: a Prometheus address (or the default),
    ``web <host:port>`` for a web metric, ``job`` for Jobs. Each has its own workers."""
    provider = metric.provider
    if provider.web is not None:
        parts = urllib.parse.urlsplit(provider.web.url)
        return f"web {parts.netloc or provider.web.url}"
    if provider.job is not None:
        return JOB_PROVIDER
    connection = provider.prometheus or provider.judge
    address = connection.address if connection is not None else None
    return address or DEFAULT_PROVIDER


@dataclass(eq=False)
class MeasuringPool:
    """A non-blocking :class:`~controller.runtime.reconciler.Measurer` in front of a
    blocking :class:`Taker` (see the module docstring). A measurement counts as a timeout
    for the breaker when its outcome's ``error_kind`` is ``timeout`` (the query's own
    timeout) or when the pool's deadline gives it up (never for Jobs)."""

    measurer: Taker
    wake: Callable[[str], None]
    _: KW_ONLY
    per_provider: int = 4
    deadline: float = 30.0
    breaker_after: int = 3
    cooldown: float = 30.0
    job_workers: int = 32
    clock: Clock = SYSTEM_CLOCK

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._providers: dict[str, _Provider] = {}
        self._jobs: dict[JobKey, _Job] = {}
        self._done: dict[JobKey, Measurement] = {}
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="measure-deadline", daemon=True)
        self._stop = threading.Event()
        self._watchdog.start()

    # -- the Measurer protocol ---------------------------------------------------------

    def measure(
        self, rollout: Rollout, due: list[an.Due], now: dt.datetime
    ) -> dict[tuple[str, str], Measurement]:
        """The due measurements that have finished; the others are started (or keep
        running) and wake the Rollout when they finish."""
        rkey = f"{rollout.metadata.namespace or 'default'}/{rollout.metadata.name}"
        runs = {r.name: r for r in rollout.status.analysis_runs}
        out: dict[tuple[str, str], Measurement] = {}
        wanted: set[JobKey] = set()
        with self._lock:
            for item in due:
                run = runs.get(item.run)
                if run is None:
                    continue
                key = JobKey(rkey, item.run, run.revision, run.started_at, item.metric.name)
                wanted.add(key)
                if key in self._done:
                    out[(item.run, item.metric.name)] = self._done.pop(key)
                elif key not in self._jobs:
                    refused = self._refuse(item.metric)
                    if refused is not None:
                        out[(item.run, item.metric.name)] = refused
                    else:
                        self._start(key, rollout, item)
            for key in [k for k in self._done if k.rollout == rkey and k not in wanted]:
                del self._done[key]  # a run that moved on: its late answer is dropped
        return out

    def in_flight(self, rollout_key: str) -> int:
        """How many measurements of the Rollout ``namespace/name`` are running."""
        with self._lock:
            return sum(1 for k in self._jobs if k.rollout == rollout_key)

    def forget(self, rollout_key: str) -> None:
        """The Rollout is gone: drop its finished measurements, and ask its running ones
        to stop (their results are dropped)."""
        with self._lock:
            for key in [k for k in self._done if k.rollout == rollout_key]:
                del self._done[key]
            for key in [k for k in self._jobs if k.rollout == rollout_key]:
                self._jobs.pop(key).stop.set()

    def close(self) -> None:
        """Stop taking measurements; running ones are abandoned."""
        with self._lock:
            self._closed = True
            providers = list(self._providers.values())
            for job in self._jobs.values():
                job.stop.set()
        self._stop.set()
        for provider in providers:
            provider.executor.shutdown(wait=False, cancel_futures=True)

    # -- inside the lock ---------------------------------------------------------------

    def _provider(self, name: str) -> _Provider:
        provider = self._providers.get(name)
        if provider is None:
            workers = self.job_workers if name == JOB_PROVIDER else self.per_provider
            provider = _Provider(
                ThreadPoolExecutor(
                    max_workers=workers,
                    thread_name_prefix=f"measure-{len(self._providers)}",
                )
            )
            self._providers[name] = provider
        return provider

    def _refuse(self, metric: Metric) -> Measurement | None:
        name = provider_of(metric)
        provider = self._provider(name)
        if self._closed:
            return self._error(metric, "the controller is stopping")
        if provider.open_until is None:
            return None
        if self.clock.monotonic() < provider.open_until or provider.probing:
            wait = max(0.0, provider.open_until - self.clock.monotonic())
            return self._error(
                metric,
                f"provider {name} timed out {provider.timeouts} time(s) in a row; not asked "
                f"again for {wait:.0f}s (breaker open)",
            )
        provider.probing = True  # half-open: this one measurement is the trial
        return None

    def _error(self, metric: Metric, message: str) -> Measurement:
        now = self.clock.now()
        return Measurement(
            phase="Error", message=f"{metric.name}: {message}", started_at=now, finished_at=now
        )

    def deadline_of(self, metric: Metric) -> float:
        """Seconds the pool waits for one measurement of ``metric``: ``deadline``; for a
        Job the Job's own limit plus :data:`JOB_DEADLINE_MARGIN`; for a web request its
        ``timeoutSeconds`` plus a second when that is longer (the request gives up first,
        with its own message)."""
        if metric.provider.job is not None:
            return jobs.wait_limit(metric.provider.job.spec) + JOB_DEADLINE_MARGIN
        if metric.provider.web is not None:
            return max(self.deadline, metric.provider.web.timeout_seconds + 1.0)
        return self.deadline

    def _start(self, key: JobKey, rollout: Rollout, item: an.Due) -> None:
        name = provider_of(item.metric)
        provider = self._provider(name)
        job = _Job(
            key, name, self.clock.monotonic(), self.deadline_of(item.metric), threading.Event()
        )
        self._jobs[key] = job
        started_at = self.clock.now()

        def run() -> Outcome:
            namespace, _, name = key.rollout.partition("/")
            with (
                stop_on(job.stop),
                structlog.contextvars.bound_contextvars(rollout=name, namespace=namespace),
            ):
                return take()

        def take() -> Outcome:
            with self._lock:
                if self._jobs.get(key) is not job:
                    raise _GivenUpError  # the deadline passed while it waited for a worker
                if provider.open_until is not None and self.clock.monotonic() < provider.open_until:
                    return Outcome(
                        "Error", None, f"{item.metric.name}: provider {name} is not answering"
                    )
            return self.measurer.take(rollout, item)

        job.future = provider.executor.submit(run)
        job.future.add_done_callback(lambda f: self._finished(job, f, started_at))

    # -- completion --------------------------------------------------------------------

    def _finished(self, job: _Job, future: Future[Outcome], started_at: dt.datetime) -> None:
        if future.cancelled():
            return
        try:
            outcome = future.result()
        except _GivenUpError:
            return
        except Exception as exc:  # never into the decision logic
            outcome = Outcome("Error", None, f"{job.key.metric}: unexpected {type(exc).__name__}")
        self._settle(
            job,
            outcome.measurement(started_at, self.clock.now()),
            timed_out=outcome.error_kind == "timeout",
        )

    def _settle(self, job: _Job, measurement: Measurement, *, timed_out: bool) -> None:
        with self._lock:
            if self._jobs.get(job.key) is not job:
                return  # given up by the deadline already
            del self._jobs[job.key]
            provider = self._providers[job.provider]
            if job.provider in _NO_BREAKER:
                pass  # a slow Job is that Job's problem (see the module docstring)
            elif timed_out:
                provider.timeouts += 1
                if provider.timeouts >= self.breaker_after:
                    provider.open_until = self.clock.monotonic() + self.cooldown
                    log.warning(
                        "measurement provider breaker open",
                        provider=job.provider,
                        timeouts=provider.timeouts,
                        seconds=self.cooldown,
                    )
            else:
                if provider.open_until is not None:
                    log.info("measurement provider breaker closed", provider=job.provider)
                provider.timeouts = 0
                provider.open_until = None
            provider.probing = False
            self._done[job.key] = measurement
        self.wake(job.key.rollout)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            now = self.clock.monotonic()
            with self._lock:
                late = [j for j in self._jobs.values() if now - j.started > j.deadline]
            for job in late:
                job.stop.set()
                started = self.clock.now() - dt.timedelta(seconds=now - job.started)
                self._settle(
                    job,
                    Measurement(
                        phase="Error",
                        message=(
                            f"{job.key.metric}: query failed (timeout): provider {job.provider} "
                            f"gave no answer within {job.deadline:g}s"
                        ),
                        started_at=started,
                        finished_at=self.clock.now(),
                    ),
                    timed_out=True,
                )
