"""The controller process: informers feed a keyed work queue, workers reconcile, a Lease
decides who may write, and an HTTP server tells Kubernetes whether all of it is alive.

::

    informers (Rollouts, ReplicaSets, Services, Deployments, templates)
        │ key of the Rollout concerned
        ▼
    WorkQueue ──► worker threads ──► Reconciler.reconcile(key) ──► requeue_after / backoff
                         │
                    LeaderElector.fence() before every write

Only the leader reconciles; a follower keeps its caches warm so it can take over at
once. When leadership starts, every Rollout is queued; when it is lost, writes stop
at the fence and the workers drop what they hold.

Every request made through the API client the manager is given (informers' lists and
watches, the adapters' reads and writes, routers, Lease calls, and the caller's own,
such as the measurer's Secret reads) is counted in ``stepwise_api_requests_total``
by the one hook :func:`controller.runtime.metrics.count_requests` installs on it.
"""

from __future__ import annotations

import builtins
import datetime as dt
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import structlog
from kubernetes import client

from controller.adapters.kube import ROLLOUT_LABEL, KubeAdapter
from controller.adapters.traffic import registry as traffic_registry
from controller.api.rollout import GROUP, VERSION, Rollout, RolloutStatus
from controller.clock import SYSTEM_CLOCK, Clock
from controller.errors import ConfigError, ConflictError, LeadershipLostError
from controller.runtime.health import HealthServer
from controller.runtime.informer import READ_GRACE, Informer, KeyHandler
from controller.runtime.leader import LeaderElector
from controller.runtime.measuring import MeasuringPool, Taker
from controller.runtime.metrics import Metrics, count_requests
from controller.runtime.notifier import Notifier, NotifierConfig
from controller.runtime.objects import CachedReads
from controller.runtime.queue import WorkQueue
from controller.runtime.reconciler import Informers, Reconciler, RouterFactory
from controller.settings import Settings

log = structlog.get_logger()
T = TypeVar("T")


class MultiInformer(Generic[T]):
    """Several namespace-scoped informers of one resource seen as one."""

    def __init__(self, informers: builtins.list[Informer[T]], name: str) -> None:
        self.informers = informers
        self._name = name

    @property
    def name(self) -> str:
        """What the health check calls it."""
        return self._name

    def get(self, key: str) -> T | None:
        """A copy of the object with ``key``, from whichever informer has it."""
        for informer in self.informers:
            found = informer.get(key)
            if found is not None:
                return found
        return None

    def list(
        self, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> builtins.list[T]:
        """Copies of the cached objects (of one namespace, with these labels, if given)."""
        return [obj for informer in self.informers for obj in informer.list(namespace, labels)]

    def versions(self, namespace: str | None = None) -> dict[str, str]:
        """Key -> resourceVersion of every cached object (of ``namespace``), no copies."""
        out: dict[str, str] = {}
        for informer in self.informers:
            out.update(informer.versions(namespace))
        return out

    def keys(self) -> builtins.list[str]:
        """Every cached key."""
        return [k for informer in self.informers for k in informer.keys()]

    def add_handler(self, handler: KeyHandler) -> None:
        """Call ``handler(key)`` on every change."""
        for informer in self.informers:
            informer.add_handler(handler)

    def start(self) -> None:
        """Start every informer."""
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        """Stop every informer."""
        for informer in self.informers:
            informer.stop()

    def has_synced(self) -> bool:
        """True once every informer has listed."""
        return all(i.has_synced() for i in self.informers)

    def wait_for_sync(self, timeout: float) -> bool:
        """Wait until every informer has listed (``timeout``: seconds of real time)."""
        deadline = SYSTEM_CLOCK.monotonic() + timeout
        return all(
            i.wait_for_sync(max(0.0, deadline - SYSTEM_CLOCK.monotonic())) for i in self.informers
        )

    @property
    def last_heartbeat(self) -> float | None:
        """The oldest heartbeat: one dead watch makes the whole resource unhealthy."""
        beats = [i.last_heartbeat for i in self.informers]
        if any(b is None for b in beats):
            return None
        return min(b for b in beats if b is not None)


class Worker:
    """One worker thread taking keys off the queue."""

    def __init__(self, manager: Manager, index: int) -> None:
        self.manager = manager
        self.thread = threading.Thread(target=self.run, name=f"worker-{index}", daemon=True)

    def is_alive(self) -> bool:
        """Whether the thread runs (for /healthz)."""
        return self.thread.is_alive()

    def run(self) -> None:
        """Process keys until the queue shuts down."""
        m = self.manager
        while True:
            key = m.queue.get(timeout=1.0)
            if key is None:
                if m.queue.shutting_down:
                    return
                continue
            try:
                m.process(key)
            finally:
                m.queue.done(key)


class Manager:
    """Builds and runs everything of one controller process."""

    def __init__(
        self,
        settings: Settings,
        api_client: client.ApiClient,
        *,
        measurer: Taker | None = None,
        routers: RouterFactory | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """Raises :class:`ConfigError` for settings that cannot work together. ``clock``
        is the one every part built here reads."""
        if settings.watch_timeout < 1:
            raise ConfigError(f"watch timeout must be at least 1s; got {settings.watch_timeout:g}s")
        if settings.heartbeat_timeout <= settings.watch_timeout + READ_GRACE:
            raise ConfigError(
                f"heartbeat timeout ({settings.heartbeat_timeout:g}s) must exceed the watch "
                f"timeout plus its {READ_GRACE:g}s read grace "
                f"({settings.watch_timeout + READ_GRACE:g}s): a quiet, healthy watch may "
                "show no sign of life for that long"
            )
        self.settings = settings
        self.api_client = api_client
        self.clock = clock
        self.metrics = Metrics()
        count_requests(api_client, self.metrics.count_api_request)
        self.queue = WorkQueue(clock=clock)
        self.metrics.track_queue_depth(lambda: len(self.queue))
        identity = settings.identity or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.elector: LeaderElector | None = None
        if settings.leader_election:
            self.elector = LeaderElector(
                api_client,
                settings.lease_namespace,
                settings.lease_name,
                identity,
                lease_duration=settings.lease_duration,
                renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period,
                on_started_leading=self._started_leading,
                on_stopped_leading=self._stopped_leading,
                clock=clock,
            )
        self.kube = KubeAdapter(api_client, fence=self._fence)
        self.informers = self._build_informers()
        # Routers observe from watches; only their writes (and verifications) are GETs.
        self.objects = CachedReads(
            api_client,
            self.informers.services,
            tuple(settings.namespaces),
            informer_options={"watch_timeout": int(settings.watch_timeout)},
            stale_after=settings.heartbeat_timeout,
            clock=clock,
        )
        # Providers are called on the pool's threads, never on a reconcile worker.
        self.pool = (
            MeasuringPool(measurer, self.queue.add, clock=clock) if measurer is not None else None
        )
        self.reconciler = Reconciler(
            self.informers,
            self.kube,
            clock=clock,
            measurer=self.pool,
            routers=routers or traffic_registry.factory(api_client, self._fence, self.objects),
            observer=_MetricsObserver(self.metrics, self.pool),
        )
        # Notifications are derived from status.releases; only the leader sends them.
        self.notifier = Notifier(
            NotifierConfig(
                namespace=settings.notifications_namespace or settings.lease_namespace,
                config_map=settings.notifications_config,
                max_age=dt.timedelta(seconds=settings.notifications_max_age),
            ),
            api_client,
            self.informers.rollouts,
            self.kube,
            fence=self._fence,
            clock=clock,
            registry=self.metrics.registry,
        )
        self.health = HealthServer(
            host=settings.bind_address,
            port=settings.health_port,
            registry=self.metrics.registry,
            heartbeat_timeout=settings.heartbeat_timeout,
            clock=clock,
        )
        self.workers = [Worker(self, i) for i in range(settings.workers)]
        self._leading = threading.Event()
        if self.elector is None:
            self._leading.set()
            self.metrics.set_leader(True)
        else:
            self.metrics.set_leader(False)

    # -- wiring -----------------------------------------------------------------------

    def _build_informers(self) -> Informers:
        s = self.settings
        scopes: list[str | None] = list(s.namespaces) or [None]
        opts: dict[str, Any] = {"watch_timeout": int(s.watch_timeout), "clock": self.clock}

        def each(make: Callable[[str | None], Informer[T]], name: str) -> MultiInformer[T]:
            return MultiInformer([make(ns) for ns in scopes], name)

        def stepwise(plural: str) -> MultiInformer[dict[str, Any]]:
            return each(
                lambda ns: Informer.custom_resources(
                    self.api_client,
                    group=GROUP,
                    version=VERSION,
                    plural=plural,
                    namespace=ns,
                    **opts,
                ),
                plural,
            )

        rollouts = stepwise("rollouts")
        replica_sets = each(
            lambda ns: Informer.replica_sets(
                self.api_client, namespace=ns, label_selector=ROLLOUT_LABEL, **opts
            ),
            "replicasets",
        )
        services = each(
            lambda ns: Informer.services(self.api_client, namespace=ns, **opts), "services"
        )
        deployments = each(
            lambda ns: Informer.deployments(self.api_client, namespace=ns, **opts), "deployments"
        )
        templates = stepwise("analysistemplates")
        cluster_templates = MultiInformer(
            [
                Informer.custom_resources(
                    self.api_client,
                    group=GROUP,
                    version=VERSION,
                    plural="clusteranalysistemplates",
                    **opts,
                )
            ],
            "clusteranalysistemplates",
        )
        rollouts.add_handler(self.queue.add)
        replica_sets.add_handler(self._replica_set_changed)
        services.add_handler(self._service_changed)
        deployments.add_handler(self._deployment_changed)
        templates.add_handler(self._template_changed)
        cluster_templates.add_handler(lambda _key: self._enqueue_all())
        self._rollouts = rollouts
        self._all: list[MultiInformer[Any]] = [
            rollouts,
            replica_sets,
            services,
            deployments,
            templates,
            cluster_templates,
        ]
        return Informers(
            rollouts=rollouts,
            replica_sets=replica_sets,
            services=services,
            templates=templates,
            cluster_templates=cluster_templates,
            deployments=deployments,
        )

    def _replica_set_changed(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        rs = self.informers.replica_sets.get(key)
        labels = (rs.metadata.labels if rs is not None and rs.metadata else None) or {}
        owner = labels.get(ROLLOUT_LABEL) or name.rsplit("-", 1)[0]
        self.queue.add(f"{namespace}/{owner}")

    def _service_changed(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        for raw in self.informers.rollouts.list():
            meta, spec = raw.get("metadata", {}), raw.get("spec", {})
            canary = (spec.get("strategy") or {}).get("canary") or {}
            if meta.get("namespace") == namespace and name in (
                canary.get("stableService"),
                canary.get("canaryService"),
            ):
                self.queue.add(f"{namespace}/{meta['name']}")

    def _deployment_changed(self, key: str) -> None:
        """Queue the Rollouts whose ``spec.workloadRef`` names this Deployment."""
        namespace, _, name = key.partition("/")
        for raw in self.informers.rollouts.list(namespace):
            meta, spec = raw.get("metadata", {}), raw.get("spec", {})
            ref = spec.get("workloadRef") or {}
            if ref.get("name") == name and ref.get("kind", "Deployment") == "Deployment":
                self.queue.add(f"{namespace}/{meta['name']}")

    def _template_changed(self, key: str) -> None:
        namespace = key.partition("/")[0]
        for rkey in self._rollouts.keys():
            if rkey.startswith(f"{namespace}/"):
                self.queue.add(rkey)

    def _enqueue_all(self) -> None:
        for key in self._rollouts.keys():
            self.queue.add(key)

    # -- leadership -------------------------------------------------------------------

    def _fence(self) -> None:
        if self.elector is not None:
            self.elector.fence()

    def _started_leading(self) -> None:
        log.info("leading: reconciling every rollout")
        self._leading.set()
        self.metrics.set_leader(True)
        self._enqueue_all()
        self.notifier.start()

    def _stopped_leading(self) -> None:
        log.warning("leadership lost: writes stopped")
        self._leading.clear()
        self.metrics.set_leader(False)
        self.notifier.stop()

    # -- work -------------------------------------------------------------------------

    def process(self, key: str) -> None:
        """Reconcile one key and schedule what comes next."""
        if not self._leading.is_set():
            return  # re-queued for everyone when leadership starts
        started = self.clock.monotonic()
        result = "success"
        try:
            requeue = self.reconciler.reconcile(key)
            self.queue.forget(key)
            if requeue is not None:
                self.queue.add_after(key, requeue)
                result = "requeue"
        except ConflictError as err:
            result = "conflict"
            log.info("conflict; retrying with a fresh read", key=key, error=str(err))
            self.queue.add_rate_limited(key)
        except LeadershipLostError:
            result = "not-leader"
        except Exception as err:  # one bad object must not stop the others
            result = "error"
            delay = self.queue.add_rate_limited(key)
            log.error(
                "reconcile failed", key=key, error=str(err), retry_in=round(delay, 3), exc_info=True
            )
        finally:
            self.metrics.observe_reconcile(result, self.clock.monotonic() - started)
            self.notifier.wake()  # an Event.set: the notifier scans on its own thread

    def start(self, stop: threading.Event | None = None) -> bool:
        """Start informers, leader election, workers and the health server; False when
        ``stop`` was set while the caches were still filling (nothing else started)."""
        for informer in self._all:
            informer.start()
            self.health.add_informer(informer)
        self.health.start()
        deadline = SYSTEM_CLOCK.monotonic() + 60  # blocking waits: real time
        for informer in self._all:
            # Short waits, so a SIGTERM during a slow first list is honoured at once.
            while not informer.wait_for_sync(timeout=0.5) and SYSTEM_CLOCK.monotonic() < deadline:
                if stop is not None and stop.is_set():
                    return False
        if self.elector is not None:
            self.elector.start()
        for worker in self.workers:
            worker.thread.start()
            self.health.add_worker(worker.thread.name, worker)
        if self.elector is None:
            self.notifier.start()
        log.info(
            "controller started",
            workers=len(self.workers),
            namespaces=list(self.settings.namespaces) or "all",
            leader_election=self.elector is not None,
            health=self.health.url,
        )
        return True

    def stop(self) -> None:
        """Stop in reverse order; the lease is released so a successor starts at once."""
        self.queue.shutdown()
        self.notifier.stop()
        if self.elector is not None:
            self.elector.stop(release=True)
        for worker in self.workers:
            if worker.thread.ident is not None:  # never started when stopped during sync
                worker.thread.join(timeout=10)
        if self.pool is not None:
            self.pool.close()
        for informer in self._all:
            informer.stop()
        self.objects.stop()
        self.health.stop()
        log.info("controller stopped")

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        try:
            if self.start(stop):
                stop.wait()
        finally:
            self.stop()


class _MetricsObserver:
    def __init__(self, metrics: Metrics, pool: MeasuringPool | None) -> None:
        self.metrics = metrics
        self.pool = pool

    def reconciled(self, rollout: Rollout, status: RolloutStatus) -> None:
        ns, name = rollout.metadata.namespace or "", rollout.metadata.name
        if status.phase:
            self.metrics.set_rollout_phase(ns, name, status.phase)
        self.metrics.set_canary_weight(ns, name, status.canary_weight)
        # Called after the pass's status is written (a release change is material, never
        # batched), with rollout.status the one the pass started from (never one behind
        # our last write: Reconciler._behind): an outcome or time counts in one pass.
        self.metrics.observe_releases(ns, name, rollout.status.releases, status.releases)

    def rolled_back(self, rollout: Rollout, seconds: float) -> None:
        self.metrics.observe_rollback(seconds)

    def deleted(self, namespace: str, name: str) -> None:
        self.metrics.forget_rollout(namespace, name)
        if self.pool is not None:
            self.pool.forget(f"{namespace}/{name}")

    def measured(self, rollout: Rollout, measurements: Any) -> None:
        ns, name = rollout.metadata.namespace or "", rollout.metadata.name
        for (_, metric), m in measurements.items():
            self.metrics.count_measurement(ns, name, metric, m.phase)
