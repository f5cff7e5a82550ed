"""Notifications by webhook: a scanner that derives what is due from the Rollout cache, a
bounded queue and a sender thread per target, and the ledger of what was delivered.

::

    Manager: leadership starts ─▶ Notifier.start()    (loads the ledger, then scans)
             a reconcile ends  ─▶ Notifier.wake()     (an Event.set, nothing more)
             leadership lost   ─▶ Notifier.stop()

    scanner thread, every ``period`` seconds or when woken:
        ConfigMap (targets) + Secrets (URLs, tokens)      re-read every ``config_refresh``
        Rollout cache ─▶ core.notifications.due(records, targets, ledger + pending, now)
            ─▶ put_nowait on the target's queue (full: left for a later scan)

    sender thread per target:
        fence ─▶ adapters.webhook POST ─▶ 2xx: ledger += id
                                        ─▶ 5xx, 429, timeout, refused: retry with backoff
                                           until the happening is ``max_age`` old
                                        ─▶ other 4xx: logged, ledger += id (given up)

What holds, and when:

* **Nothing is lost to a crash.** What is due is derived from ``status.releases`` each
  scan, never from an in-memory transition, so the next leader (or the restarted
  process) finds whatever was not delivered yet.
* **Nothing is sent twice, but for one window.** The ledger (a ConfigMap in the
  controller's namespace) records each id after its 2xx; a new leader loads it before
  its first scan. A process killed between a receiver's 2xx and that ledger write sends
  that one notification again; its id (the same in both) lets the receiver drop it.
* **The ledger is a grow-only set.** Every write is a replace guarded by the
  resourceVersion read; a conflict re-reads it and merges (a union), so writers never
  undo each other, and a late write by a process that has just lost its lease can only
  add an id that was truly delivered. Entries older than twice ``max_age`` are pruned on
  each write.
* **Nothing waits on a receiver.** A reconcile only sets an Event; the scanner only
  ever calls ``put_nowait``; each target has its own thread and queue, so a receiver that
  hangs holds up its own notifications, for at most its timeout per attempt, and no one
  else's.
* **Only the leader sends.** Each POST is preceded by the leadership fence.
* **Secrets stay secret.** URLs and tokens are read from Secrets and never logged; logs
  name the target.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import tenacity
import yaml
from kubernetes import client
from prometheus_client import CollectorRegistry, Counter
from pydantic import TypeAdapter, ValidationError

from controller.adapters.kube import KubeAdapter
from controller.adapters.retry import call_api
from controller.adapters.webhook import WebhookSender
from controller.api.rollout import Release, SecretKeyRef
from controller.clock import SYSTEM_CLOCK, Clock
from controller.core import notifications as nt
from controller.core.model import Event
from controller.errors import ApiError, ConflictError, LeadershipLostError, NotFoundError
from controller.runtime.informer import Cache
from controller.runtime.measure import SecretReader, secret_reader

log = structlog.get_logger()

LEDGER_KEY = "delivered"
"""The ledger ConfigMap's key: JSON, notification id -> when it was delivered."""
_RELEASES = TypeAdapter(list[Release])


@dataclass(frozen=True)
class NotifierConfig:
    """Where the notifier reads and writes, and its timings."""

    namespace: str
    """The controller's namespace: the targets' ConfigMap, their Secrets, the ledger."""
    config_map: str = "stepwise-notifications"
    ledger: str = "stepwise-notifications-ledger"
    max_age: dt.timedelta = dt.timedelta(hours=1)
    """Happenings older than this are never sent; a retrying sender gives up then."""
    period: float = 2.0
    """Seconds between scans when nothing wakes the scanner."""
    config_refresh: float = 60.0
    """Seconds the targets (and their Secrets) are kept before they are read again: one
    read a minute (a 404 when none are configured), so an idle controller's requests stay
    its watch renewals and this; a new leader reads them at once."""
    queue_size: int = 256
    """Notifications waiting per target; more wait in the record for a later scan."""
    retry_initial: float = 1.0
    """Seconds before the first retry of a failed POST; doubles up to ``retry_max``."""
    retry_max: float = 60.0


@dataclass(frozen=True)
class _Resolved:
    target: nt.Target
    url: str = field(repr=False)
    token: str | None = field(repr=False)


@dataclass
class _Run:
    """One term of leadership: its queues, threads and what is in flight."""

    stop: threading.Event = field(default_factory=threading.Event)
    queues: dict[str, queue.Queue[nt.Notification]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(eq=False)
class Ledger:
    """The ids delivered (or given up), kept in a ConfigMap (see the module docstring)."""

    core: client.CoreV1Api
    namespace: str
    name: str
    max_age: dt.timedelta
    clock: Clock = SYSTEM_CLOCK

    def __post_init__(self) -> None:
        self._entries: dict[str, dt.datetime] = {}
        self._version: str | None = None
        self._exists = False
        self._dirty = False
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read the ledger (raises ApiError when it cannot; a missing one is empty)."""
        with self._lock:
            self._read_merge()

    def ids(self) -> set[str]:
        """The ids recorded (a copy)."""
        with self._lock:
            return set(self._entries)

    def record(self, nid: str) -> None:
        """Add ``nid`` and write the ledger (raises ApiError when the write fails after
        retries; the id stays recorded here and goes with the next write)."""
        with self._lock:
            self._entries[nid] = self.clock.now()
            self._dirty = True
            self._flush()

    def flush(self) -> None:
        """Write what an earlier failed write left behind, if anything."""
        with self._lock:
            if self._dirty:
                self._flush()

    def _read_merge(self) -> None:
        try:
            cm = call_api(lambda: self.core.read_namespaced_config_map(self.name, self.namespace))
        except NotFoundError:
            self._exists, self._version = False, None
            return
        self._exists = True
        self._version = _version_of(cm)
        stored = nt.parse_ledger((cm.data or {}).get(LEDGER_KEY))
        for nid, when in stored.items():
            mine = self._entries.get(nid)
            self._entries[nid] = when if mine is None else min(mine, when)

    def _flush(self) -> None:
        for _ in range(10):
            self._entries = nt.prune(self._entries, self.clock.now(), self.max_age)
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(
                    name=self.name,
                    namespace=self.namespace,
                    resource_version=self._version,
                    labels={"app.kubernetes.io/name": "stepwise"},
                ),
                data={LEDGER_KEY: nt.render_ledger(self._entries)},
            )
            try:
                written = call_api(self._writer(body))
            except (ConflictError, NotFoundError):
                self._read_merge()  # another writer got there first: take theirs too
                continue
            self._exists = True
            self._version = _version_of(written)
            self._dirty = False
            return
        raise ConflictError(f"ConfigMap {self.namespace}/{self.name}: kept changing under us")

    def _writer(self, body: client.V1ConfigMap) -> Callable[[], client.V1ConfigMap]:
        if self._exists:
            return lambda: self.core.replace_namespaced_config_map(self.name, self.namespace, body)
        return lambda: self.core.create_namespaced_config_map(self.namespace, body)


class Notifier:
    """Sends the notifications the delivery record makes due (see the module docstring)."""

    def __init__(
        self,
        config: NotifierConfig,
        api_client: client.ApiClient,
        rollouts: Cache[dict[str, Any]],
        kube: KubeAdapter,
        *,
        fence: Callable[[], None] = lambda: None,
        sender: WebhookSender | None = None,
        secrets: SecretReader | None = None,
        clock: Clock = SYSTEM_CLOCK,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.core = client.CoreV1Api(api_client)
        self.rollouts = rollouts
        self.kube = kube
        self.fence = fence
        self.sender = sender or WebhookSender()
        self.secrets = secrets or secret_reader(self.core.read_namespaced_secret)
        self.clock = clock
        self.ledger = Ledger(self.core, config.namespace, config.ledger, config.max_age, clock)
        self._where = f"ConfigMap {config.namespace}/{config.config_map}"
        self._targets: dict[str, _Resolved] = {}
        self._config_read_at: float | None = None
        self._config_version: str | None = None
        self._problems: tuple[str, ...] = ()
        self._unknown: dict[str, tuple[str, ...]] = {}
        self._parsed: dict[str, tuple[str, nt.RolloutRecord | None]] = {}
        self._wake = threading.Event()
        self._run: _Run | None = None
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._sent = Counter(
            "stepwise_notifications_total",
            "Notifications by target and result: delivered, dropped (a 4xx), expired "
            "(still failing at the maximum age) or retried (one per failed attempt).",
            ["target", "result"],
            registry=registry,
        )

    # -- leadership --------------------------------------------------------------------

    def start(self) -> None:
        """Start a term: load the ledger, then scan and send until :meth:`stop`."""
        with self._lock:
            if self._run is not None:
                return
            run = self._run = _Run()
        threading.Thread(
            target=self._scanner, args=(run,), name="notifier-scan", daemon=True
        ).start()

    def stop(self) -> None:
        """End the term: threads stop after what they are doing (a POST in flight ends
        at its timeout); queued notifications are left for the next leader."""
        with self._lock:
            run, self._run = self._run, None
        if run is not None:
            run.stop.set()
            self._wake.set()

    def wake(self) -> None:
        """Scan soon (called after each reconcile; never blocks)."""
        self._wake.set()

    # -- scanning ----------------------------------------------------------------------

    def _scanner(self, run: _Run) -> None:
        backoff = 0.5
        while not run.stop.is_set():
            try:
                self.ledger.load()
                break
            except ApiError as err:
                log.error("notification ledger not readable; sending nothing yet", error=str(err))
                run.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        self._config_read_at = None  # a new term reads the targets afresh
        while not run.stop.is_set():
            try:
                with self._scan_lock:  # a term's scanner may overlap the next one's briefly
                    self.scan(run)
            except Exception as err:  # one bad pass must not end notifications
                log.error("notification scan failed", error=str(err), exc_info=True)
            self._wake.wait(self.config.period)
            self._wake.clear()
            run.stop.wait(0.2)  # many reconciles in a burst make one scan, not many

    def scan(self, run: _Run) -> int:
        """One pass: queue what is due; returns how many were queued."""
        self._refresh_config()
        if not self._targets:
            return 0
        try:
            self.ledger.flush()
        except ApiError as err:
            log.warning("notification ledger not written; retrying", error=str(err))
        targets = [r.target for r in self._targets.values()]
        records = self._records(targets)
        with run.lock:
            known = self.ledger.ids() | run.pending
        now = self.clock.now()
        queued = 0
        for n in nt.due(records, targets, known, now, self.config.max_age):
            q = self._queue(run, n.target)
            with run.lock:
                if n.id in run.pending:
                    continue
                try:
                    q.put_nowait(n)
                except queue.Full:
                    continue  # still due next scan
                run.pending.add(n.id)
            queued += 1
            _logger(n).debug("notification queued")
        return queued

    def _records(self, targets: list[nt.Target]) -> list[nt.RolloutRecord]:
        versions = self.rollouts.versions()
        for gone in set(self._parsed) - set(versions):
            del self._parsed[gone]
            self._unknown.pop(gone, None)
        out: list[nt.RolloutRecord] = []
        for key, version in versions.items():
            cached = self._parsed.get(key)
            if cached is None or cached[0] != version:
                raw = self.rollouts.get(key)
                if raw is None:
                    continue
                cached = (version, _record(raw))
                self._parsed[key] = cached
                self._check_subscription(key, raw, targets)
            if cached[1] is not None:
                out.append(cached[1])
        return out

    def _check_subscription(self, key: str, raw: dict[str, Any], targets: list[nt.Target]) -> None:
        """A Rollout naming a target that does not exist: a Warning event on it, once."""
        annotations = (raw.get("metadata") or {}).get("annotations") or {}
        _, unknown = nt.subscribed(annotations, targets)
        if tuple(unknown) == self._unknown.get(key, ()):
            return
        self._unknown[key] = tuple(unknown)
        if not unknown:
            return
        namespace, _, name = key.partition("/")
        message = (
            f"annotation {nt.NOTIFY_ANNOTATION} names no target of {self._where}: "
            f"{', '.join(unknown)} (known: {', '.join(sorted(self._targets)) or 'none'})"
        )
        log.warning("unknown notification target", namespace=namespace, rollout=name, names=unknown)
        self.kube.emit_event(raw, Event("NotificationTarget", message, "Warning"), self.clock.now())

    # -- configuration -----------------------------------------------------------------

    def _refresh_config(self) -> None:
        now = self.clock.monotonic()
        if self._config_read_at is not None and now - self._config_read_at < (
            self.config.config_refresh
        ):
            return
        self._config_read_at = now
        try:
            cm = call_api(
                lambda: self.core.read_namespaced_config_map(
                    self.config.config_map, self.config.namespace
                )
            )
        except NotFoundError:
            if self._targets or self._config_version != "":
                log.info("no notification targets", configmap=self._where)
            self._targets, self._config_version = {}, ""
            self._report(())
            return
        except ApiError as err:
            log.warning("notification targets not readable; keeping the last ones", error=str(err))
            return
        targets, problems = parse_config(cm.data or {}, self._where)
        resolved = self._resolve(targets, problems)
        version = _version_of(cm)
        if version != self._config_version or set(resolved) != set(self._targets):
            log.info(
                "notification targets",
                configmap=self._where,
                targets=sorted(resolved),
                defaults=sorted(n for n, r in resolved.items() if r.target.default),
            )
        self._config_version = version
        if set(resolved) != set(self._targets):
            self._parsed.clear()  # subscriptions are checked again against the new names
        self._targets = resolved
        self._report(tuple(problems), cm)

    def _resolve(self, targets: list[nt.Target], problems: list[str]) -> dict[str, _Resolved]:
        """Each target with its URL and token read from their Secrets; a target whose
        Secret cannot be read is a problem (appended) and left out."""
        resolved: dict[str, _Resolved] = {}
        for target in targets:
            try:
                url = self._secret(target.url).strip()
                token = self._secret(target.token).strip() if target.token is not None else None
            except Exception as err:
                problems.append(f"{self._where}: target {target.name!r}: {err}")
                continue
            if not url.startswith(("http://", "https://")):
                problems.append(
                    f"{self._where}: target {target.name!r}: the URL in Secret "
                    f"{target.url.name} key {target.url.key!r} is not http(s)"
                )
                continue
            resolved[target.name] = _Resolved(target, url, token or None)
        return resolved

    def _secret(self, ref: nt.SecretRef) -> str:
        try:
            api_ref = SecretKeyRef(name=ref.name, key=ref.key)
        except ValidationError:
            raise ValueError(f"{ref.name!r} is not a Secret name") from None
        return self.secrets(self.config.namespace, api_ref)

    def _report(self, problems: tuple[str, ...], cm: client.V1ConfigMap | None = None) -> None:
        """Log each problem, and a Warning event on the ConfigMap when they change."""
        if problems == self._problems:
            return
        self._problems = problems
        for problem in problems:
            log.error("notification config problem", problem=problem)
        if not problems or cm is None:
            return
        message = "; ".join(problems)[:1024]
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{self.config.config_map}.", namespace=self.config.namespace
            ),
            involved_object=client.V1ObjectReference(
                api_version="v1",
                kind="ConfigMap",
                name=self.config.config_map,
                namespace=self.config.namespace,
                uid=cm.metadata.uid if cm.metadata is not None else None,
                resource_version=_version_of(cm),
            ),
            reason="InvalidNotificationConfig",
            message=message,
            type="Warning",
            first_timestamp=self.clock.now(),
            last_timestamp=self.clock.now(),
            count=1,
            source=client.V1EventSource(component="stepwise-controller"),
            reporting_component="stepwise.dev/controller",
            reporting_instance="stepwise-controller",
        )
        try:
            call_api(lambda: self.core.create_namespaced_event(self.config.namespace, event))
        except ApiError as err:
            log.warning("event not recorded", reason=event.reason, error=str(err))

    # -- sending -----------------------------------------------------------------------

    def _queue(self, run: _Run, target: str) -> queue.Queue[nt.Notification]:
        with run.lock:
            q = run.queues.get(target)
            if q is None:
                q = run.queues[target] = queue.Queue(self.config.queue_size)
                threading.Thread(
                    target=self._sender,
                    args=(run, target, q),
                    name=f"notify-{target}",
                    daemon=True,
                ).start()
            return q

    def _sender(self, run: _Run, target: str, q: queue.Queue[nt.Notification]) -> None:
        while not run.stop.is_set():
            try:
                n = q.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._deliver(run, n)
            except Exception as err:  # never let one notification end the thread
                log.error("notification failed", target=target, error=str(err), exc_info=True)
            finally:
                with run.lock:
                    run.pending.discard(n.id)

    def _deliver(self, run: _Run, n: nt.Notification) -> None:
        bound = _logger(n)
        body_cache: dict[str, bytes] = {}

        last: dict[str, int | None] = {}

        def attempt() -> str | None:
            if run.stop.is_set():
                return None  # the next leader sends it
            if nt.expired(n, self.clock.now(), self.config.max_age):
                return "expired"
            resolved = self._targets.get(n.target)
            if resolved is None:
                bound.info("notification target removed; not sent")
                return None
            self.fence()
            fmt = resolved.target.format
            body = body_cache.get(fmt) or body_cache.setdefault(fmt, nt.render(n, fmt))
            got = self.sender.post(
                resolved.url, body, token=resolved.token, timeout=resolved.target.timeout
            )
            last["status"] = got.status
            outcome = nt.outcome_of(got.status)
            if outcome == "retry":
                self._sent.labels(n.target, "retried").inc()
                bound.warning(
                    "notification not delivered; retrying",
                    status=got.status,
                    error=got.error or None,
                )
            return outcome

        def give_up(state: tenacity.RetryCallState) -> bool:
            return run.stop.is_set() or nt.expired(n, self.clock.now(), self.config.max_age)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda outcome: outcome == "retry"),
            stop=give_up,
            wait=tenacity.wait_exponential(
                multiplier=self.config.retry_initial, max=self.config.retry_max
            )
            + tenacity.wait_random(0, self.config.retry_initial / 2),
            sleep=lambda seconds: _wait(run.stop, seconds),
            retry_error_callback=lambda state: "expired",
        )
        try:
            outcome = retrying(attempt)
        except LeadershipLostError:
            return
        if outcome is None:
            return
        if outcome == "expired":
            if not run.stop.is_set():
                self._sent.labels(n.target, "expired").inc()
                bound.error("notification given up: still failing at its maximum age")
            return
        if outcome == "drop":
            self._sent.labels(n.target, "dropped").inc()
            bound.error(
                "notification refused by its receiver; not retried", status=last.get("status")
            )
        else:
            self._sent.labels(n.target, "delivered").inc()
            bound.info("notification delivered", status=last.get("status"))
        try:
            self.ledger.record(n.id)
        except ApiError as err:
            bound.warning("notification ledger not written; retrying", error=str(err))


def parse_config(data: dict[str, str], where: str) -> tuple[list[nt.Target], list[str]]:
    """The targets in a ConfigMap's ``data`` and the problems found, each naming
    ``where`` and the field (see :func:`controller.core.notifications.parse_targets`)."""
    if nt.CONFIG_KEY not in data:
        return [], [f"{where}: data.{nt.CONFIG_KEY}: missing (a YAML list of targets)"]
    try:
        doc = yaml.safe_load(data[nt.CONFIG_KEY])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return [], [f"{where}: data.{nt.CONFIG_KEY}: not valid YAML{at}"]
    return nt.parse_targets(doc, where)


def _logger(n: nt.Notification) -> structlog.typing.FilteringBoundLogger:
    """A logger that names the notification in every line (never its URL or token)."""
    bound: structlog.typing.FilteringBoundLogger = log.bind(
        target=n.target, kind=n.kind, namespace=n.namespace, rollout=n.rollout, id=n.id
    )
    return bound


def _version_of(obj: client.V1ConfigMap) -> str | None:
    return obj.metadata.resource_version if obj.metadata is not None else None


def _wait(stop: threading.Event, seconds: float) -> None:
    """Tenacity's sleep: ends early when the term stops (the Event's bool is dropped)."""
    stop.wait(seconds)


def _record(raw: dict[str, Any]) -> nt.RolloutRecord | None:
    meta = raw.get("metadata") or {}
    releases = (raw.get("status") or {}).get("releases") or []
    if not releases:
        return None
    try:
        parsed = _RELEASES.validate_python(releases)
    except ValidationError as err:
        log.debug(
            "release record not readable",
            namespace=meta.get("namespace"),
            rollout=meta.get("name"),
            error=str(err),
        )
        return None
    return nt.RolloutRecord(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        releases=parsed,
        annotations=dict(meta.get("annotations") or {}),
    )
