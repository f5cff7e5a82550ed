"""Leader election: which replica of the controller may write.

Every replica watches and keeps its cache warm; only the one holding the
``coordination.k8s.io/v1`` Lease runs the workers' writes. Writers call
:meth:`LeaderElector.fence` immediately before every write (the Kubernetes adapter takes
it as its ``fence``), which raises :class:`controller.errors.LeadershipLostError` the
moment the lease can no longer be proven held, so an old leader never keeps writing.

The algorithm is client-go's ``tools/leaderelection`` (``tryAcquireOrRenew``): read the
Lease; a follower may take it when it has no holder or when the record it observed has
not changed for ``leaseDurationSeconds`` of *its own* monotonic clock (no trust in other
machines' clocks); the leader renews every ``retry_period``; every write is a
``replace`` carrying the read ``resourceVersion``, so two candidates can never both win
(optimistic concurrency: the loser gets 409). On :meth:`LeaderElector.stop` the leader
releases the Lease (empty ``holderIdentity``) so a successor takes over at once
instead of after a whole ``lease_duration``.

A follower also *watches* the Lease (one object, by field selector), so it sees each
renewal within milliseconds instead of at its next poll, and it wakes exactly when the
record it saw expires, or when the Lease is released, instead of on its jittered poll
grid. A crashed leader is therefore replaced ``lease_duration`` after its last renewal,
at most ``lease_duration`` after the crash: with polling alone that was up to
``lease_duration + 2 * (1 + JITTER) * retry_period`` later (19.5 s instead of 15 s with the
defaults, measured by ``bench/failover.py``). The observation time stays the
follower's own clock when it saw the change, as in client-go, so this is earlier only
by the lag it removes, never by trusting another clock. The polls continue as before,
so a broken watch costs speed, not correctness.

Why not ``kubernetes.leaderelection`` (v37), whose Lease lock this mirrors: its loops
``time.sleep`` and have no stop, so it can neither stop promptly nor release the Lease;
it reports leadership only through callbacks, so there is nothing to fence writes with,
and it notices a lost lease only after a whole renew loop ends (a renewal request has no
timeout and may hang past the deadline); ``LeaseLock`` builds its client from the
global default configuration; ``Config`` calls ``sys.exit`` on bad settings and needs
whole seconds. Here :meth:`LeaderElector.is_leader` is computed from the time of the
last successful renewal, not from a loop that might be blocked: it turns False exactly
``renew_deadline`` after the start of the last renewal that succeeded, which is before
any follower (which waits ``lease_duration`` from when *it* saw that renewal) can take
over. A write already in flight when the deadline passes can still land; keep write
timeouts below ``lease_duration - renew_deadline``.

Lease timestamps are ``MicroTime``: the API server parses them with exactly six
fractional digits, and Python's ``isoformat()`` drops them when the microsecond is 0,
so such instants are sent one microsecond later (the official client's lock fails one
write in a million on this).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.adapters.retry import is_translatable, translate
from controller.clock import SYSTEM_CLOCK, Clock
from controller.errors import ApiError, ConfigError, ConflictError, LeadershipLostError
from controller.runtime.informer import Informer
from controller.runtime.metrics import dedicated

log = structlog.get_logger()

#: Followers wait ``retry_period * (1 + U(0, JITTER))`` between attempts (client-go: 1.2).
JITTER = 1.2

#: A follower tries this long after the observed record expires (its read must come
#: after the expiry on its own clock).
EXPIRY_MARGIN = 0.005

Callback = Callable[[], None]


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says about its holder."""

    holder: str
    lease_duration: float
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int


def _record(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or "",
        lease_duration=float(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=spec.lease_transitions or 0,
    )


def _micro_time(moment: datetime) -> datetime:
    """``moment`` as a MicroTime the API server accepts (see the module docstring)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.replace(microsecond=moment.microsecond or 1)


class LeaderElector:
    """Lease-based leader election for one identity (usually the pod name).

    ``clock`` (monotonic) times every deadline; the Lease's wall-clock timestamps are
    informational only. Callbacks run on the elector thread and must return quickly.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
        *,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        request_timeout: float | None = None,
        watch: bool = True,
    ) -> None:
        """``request_timeout`` bounds each Lease request (default: ``retry_period``);
        ``watch=False`` leaves out the Lease watch (polls only, as client-go does)."""
        if not identity:
            raise ConfigError("leader election needs a non-empty identity")
        if not 0 < retry_period * JITTER < renew_deadline < lease_duration:
            raise ConfigError(
                "leader election needs lease_duration > renew_deadline > "
                f"{JITTER} * retry_period > 0; got {lease_duration}, {renew_deadline}, "
                f"{retry_period}"
            )
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        timeout = request_timeout if request_timeout is not None else max(retry_period, 0.5)
        self._request_timeout = (timeout, timeout)
        self._api_client = dedicated(api_client)
        self._watch = watch
        self._source_client = api_client
        self._informer: Informer[client.V1Lease] | None = None
        self._wake = threading.Event()
        self._api = client.CoordinationV1Api(self._api_client)
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None
        self._leading = False
        self._renewed_at: float | None = None
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._lease: client.V1Lease | None = None

    # -- what writers ask -----------------------------------------------------------

    def is_leader(self) -> bool:
        """True only while the lease is provably held: this replica's last successful
        renewal started less than ``renew_deadline`` ago and it is not stopping."""
        with self._lock:
            return (
                self._leading
                and not self._stop.is_set()
                and self._renewed_at is not None
                and self._clock.monotonic() < self._renewed_at + self.renew_deadline
            )

    def fence(self) -> None:
        """Raise :class:`LeadershipLostError` unless :meth:`is_leader`; call before writes."""
        if not self.is_leader():
            raise LeadershipLostError(
                f"{self.identity} does not hold lease {self.namespace}/{self.name}"
            )

    @property
    def holder(self) -> str:
        """The holder identity last observed on the Lease ("" if none or unknown)."""
        with self._lock:
            return self._observed.holder if self._observed else ""

    @property
    def last_renewal(self) -> float | None:
        """Clock time at which the last successful acquire or renewal started."""
        with self._lock:
            return self._renewed_at

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a daemon thread; returns the thread. An elector runs once:
        after :meth:`stop`, make a new one."""
        if self._thread is not None:
            if self._thread.is_alive():
                return self._thread
            raise RuntimeError("this elector has stopped; create a new LeaderElector")
        self._thread = threading.Thread(target=self.run, name=f"leader-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, *, release: bool = True, timeout: float | None = 10.0) -> None:
        """Stop campaigning; :meth:`is_leader` is False from this call on. With
        ``release`` the Lease is handed back (empty holder) so a successor need not wait
        for it to expire; ``release=False`` behaves like a crash. Joins the thread."""
        self._release_on_stop = release
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run(self) -> None:
        """The election loop; returns after :meth:`stop`. Usually run via :meth:`start`."""
        self._log.info("leader election started")
        try:
            self._start_watch()
            while not self._stop.is_set():
                self._wake.clear()  # a change seen during this attempt wakes the next wait
                started = self._clock.monotonic()
                try:
                    acquired = self._try_acquire_or_renew()
                except ApiError as err:
                    self._log.warning(
                        "lease request failed", error=type(err).__name__, message=str(err)
                    )
                    acquired = False
                except Exception:
                    self._log.exception("lease attempt failed unexpectedly")
                    acquired = False
                self._after_attempt(acquired, started)
                self._wake.wait(self._next_wait())
        finally:
            self._finish()

    # -- one attempt ----------------------------------------------------------------

    def _try_acquire_or_renew(self) -> bool:
        now = _micro_time(self._clock.now())
        lease = self._read()
        if lease is None:
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=math.ceil(self.lease_duration),
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            try:
                created = self._call(
                    lambda: self._api.create_namespaced_lease(
                        self.namespace, body, _request_timeout=self._request_timeout
                    )
                )
            except ConflictError:
                return False  # another candidate created it first
            self._observe(created)
            return True

        record = self._observe(lease)
        if record.holder and record.holder != self.identity:
            duration = record.lease_duration or self.lease_duration
            with self._lock:
                observed_at = self._observed_at
            if self._clock.monotonic() < observed_at + duration:
                return False  # held by someone else and not expired on our clock

        spec = lease.spec or client.V1LeaseSpec()
        if record.holder == self.identity and record.acquire_time is not None:
            spec.acquire_time = _micro_time(record.acquire_time)
            spec.lease_transitions = record.transitions
        else:
            spec.acquire_time = now
            spec.lease_transitions = record.transitions + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = math.ceil(self.lease_duration)
        spec.renew_time = now
        lease.spec = spec
        try:
            replaced = self._call(
                lambda: self._api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=self._request_timeout
                )
            )
        except ConflictError:
            return False  # someone else wrote the Lease since we read it
        self._observe(replaced)
        return True

    def _after_attempt(self, acquired: bool, started: float) -> None:
        became = lost = False
        with self._lock:
            if acquired:
                self._renewed_at = started
                became = not self._leading
                self._leading = True
            elif self._leading:
                taken = self._observed is not None and self._observed.holder != self.identity
                expired = (
                    self._renewed_at is None
                    or self._clock.monotonic() >= self._renewed_at + self.renew_deadline
                )
                if taken or expired:
                    self._leading = False
                    lost = True
        if became:
            self._log.info("started leading")
            self._callback(self._on_started, "on_started_leading")
        if lost:
            self._log.warning("stopped leading: lease lost", holder=self.holder)
            self._callback(self._on_stopped, "on_stopped_leading")

    def _next_wait(self) -> float:
        with self._lock:
            leading, renewed_at = self._leading, self._renewed_at
            observed, observed_at = self._observed, self._observed_at
        if leading and renewed_at is not None:
            # Renew every retry_period, and wake at the deadline to report a loss.
            deadline_in = renewed_at + self.renew_deadline - self._clock.monotonic()
            return max(min(self.retry_period, deadline_in), 0.0)
        wait = self.retry_period * (1 + random.uniform(0, JITTER))  # noqa: S311
        if observed is not None and observed.holder and observed.holder != self.identity:
            # Try again the moment the record we saw expires, not on the next poll.
            duration = observed.lease_duration or self.lease_duration
            expires_in = observed_at + duration - self._clock.monotonic()
            if expires_in > 0:
                wait = min(wait, expires_in + EXPIRY_MARGIN)
        return wait

    # -- the watch (followers) ------------------------------------------------------

    def _start_watch(self) -> None:
        if not self._watch or self._informer is not None:
            return
        informer = Informer.lease(self._source_client, namespace=self.namespace, name=self.name)
        informer.add_handler(self._lease_changed)
        self._informer = informer
        informer.start()

    def _lease_changed(self, key: str) -> None:
        """On the watch thread: a follower observes the change now (the leader ignores
        the watch: its own polls are fresher than a possibly lagging event), and wakes
        its loop when the Lease was released or changed hands."""
        informer = self._informer
        with self._lock:
            leading, before = self._leading, self._observed
        if leading or informer is None:
            return
        lease = informer.get(key)
        if lease is None:
            return
        record = self._observe(lease)
        if not record.holder or before is None or record.holder != before.holder:
            self._wake.set()

    def _finish(self) -> None:
        with self._lock:
            was_leading = self._leading
            self._leading = False
        if self._informer is not None:
            self._informer.stop()
        if was_leading and self._release_on_stop:
            self._release()
        if was_leading:
            self._log.info("stopped leading: elector stopped", released=self._release_on_stop)
            self._callback(self._on_stopped, "on_stopped_leading")
        self._api_client.close()  # type: ignore[no-untyped-call]
        self._log.info("leader election stopped")

    def _release(self) -> None:
        """Hand the Lease back if it still names this replica (guarded by resourceVersion)."""
        try:
            lease = self._read()
            if lease is None or lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            now = _micro_time(self._clock.now())
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.acquire_time = now
            lease.spec.renew_time = now
            self._call(
                lambda: self._api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=self._request_timeout
                )
            )
            self._log.info("lease released")
        except ApiError as err:
            self._log.warning("lease not released; it will expire", error=str(err))

    # -- helpers --------------------------------------------------------------------

    def _read(self) -> client.V1Lease | None:
        try:
            lease: client.V1Lease = self._call(
                lambda: self._api.read_namespaced_lease(
                    self.name, self.namespace, _request_timeout=self._request_timeout
                )
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        return lease

    def _observe(self, lease: client.V1Lease) -> LeaseRecord:
        record = _record(lease)
        new_leader = None
        with self._lock:
            if record != self._observed:
                if self._observed is None or record.holder != self._observed.holder:
                    new_leader = record.holder
                self._observed = record
                self._observed_at = self._clock.monotonic()
        if new_leader is not None:
            self._log.info("lease holder observed", holder=new_leader or "<none>")
            if self._on_new_leader is not None and new_leader:
                try:
                    self._on_new_leader(new_leader)
                except Exception:
                    self._log.exception("on_new_leader failed")
        return record

    @staticmethod
    def _call(fn: Callable[[], client.V1Lease]) -> client.V1Lease:
        """One Lease request, errors translated; no retry (the loop is the retry)."""
        try:
            return fn()
        except ApiException as exc:
            raise translate(exc) from exc
        except Exception as exc:
            if is_translatable(exc):
                raise translate(exc) from exc
            raise

    def _callback(self, callback: Callback | None, what: str) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            self._log.exception("leader election callback failed", callback=what)
