"""Cached reads for the routers: Services and router objects from watches.

Implements :class:`controller.adapters.traffic.reads.Reads` (see that module for why).

- **Services** come from the reconciler's Service informer.
- **Router objects** (HTTPRoutes, VirtualServices, DestinationRules, Ingresses,
  TrafficSplits) come from an informer per kind and scope, started the first time a
  Rollout's router reads that kind. Until it has listed, reads are GETs. The informer is
  not started (reads stay GETs, retried every :data:`RETRY_SECONDS`) when a probe list
  is refused: the kind is not served yet (its CRDs may come later), or RBAC lacks
  ``list``/``watch`` on it (the deploy manifests grant both; a trimmed role still works,
  at a GET a pass).
- **A watch that stopped** (its heartbeat older than ``stale_after``: a watch refused by
  RBAC after its list was allowed, a connection that died) sends reads back to GETs
  until it shows life again.
- **Written objects**: after a verified write the router hands over what it read back;
  it answers for that object while the informer still holds the version from before the
  write, for at most :data:`NOTE_SECONDS` (a watch event takes milliseconds; a lagging
  informer after that only costs an idle write).

These informers do not feed the work queue: a router object changing on its own does
not need a pass sooner than the Rollout's own timers give one; they are stopped with the
manager.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from kubernetes import client

from controller.adapters.retry import call_api
from controller.adapters.traffic.reads import DirectReads, Kind, Obj, absent
from controller.clock import SYSTEM_CLOCK, Clock
from controller.errors import ApiError, NotFoundError
from controller.runtime.informer import Informer

log = structlog.get_logger()

NOTE_SECONDS = 5.0
"""How long a written object is preferred over an informer that has not caught up."""
RETRY_SECONDS = 60.0
"""How long after a refused probe list the kind is tried again."""


class ServiceCache(Protocol):
    """The reconciler's Service informer, as far as reads go."""

    def get(self, key: str) -> client.V1Service | None:
        """A copy of the Service ``namespace/name``, or None."""
        ...


@dataclass
class _Note:
    obj: Obj
    cached_version: str | None
    at: float


def _version(obj: Obj | None) -> str | None:
    if obj is None:
        return None
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None


class CachedReads:
    """Reads for routers, from watch caches where possible (thread-safe)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        services: ServiceCache,
        namespaces: tuple[str, ...] = (),
        *,
        informer_options: dict[str, Any] | None = None,
        stale_after: float = 120.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``namespaces`` are the ones the controller watches (empty: all);
        ``stale_after`` is the liveness probe's heartbeat timeout; ``clock`` times the notes
        and stamps the heartbeats of the informers started here."""
        self._api_client = api_client
        self._direct = DirectReads(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._services = services
        self._namespaces = namespaces
        self._options: dict[str, Any] = {"clock": clock, **(informer_options or {})}
        self._clock = clock
        self._stale_after = stale_after
        self._lock = threading.Lock()
        self._informers: dict[tuple[Kind, str | None], Informer[Obj]] = {}
        self._refused_until: dict[tuple[Kind, str | None], float] = {}
        self._notes: dict[tuple[Kind, str], _Note] = {}
        self._stopped = False

    # -- Reads ------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        """The object from the cache (or a GET until the cache is ready)."""
        informer = self._informer(kind, namespace)
        if informer is None:
            return self._direct.get(kind, namespace, name)
        key = f"{namespace}/{name}"
        cached = informer.get(key)
        with self._lock:
            note = self._notes.get((kind, key))
            if note is not None:
                fresh = self._clock.monotonic() - note.at < NOTE_SECONDS
                if fresh and _version(cached) == note.cached_version:
                    return copy.deepcopy(note.obj)
                del self._notes[(kind, key)]
        if cached is None:
            raise absent(kind, namespace, name)
        return cached

    def service(self, namespace: str, name: str) -> client.V1Service:
        """The Service from the Service informer."""
        svc = self._services.get(f"{namespace}/{name}")
        if svc is None:
            raise NotFoundError(f'services "{name}" not found in {namespace}', reason="NotFound")
        return svc

    def wrote(self, kind: Kind, obj: Obj) -> None:
        """Answer with ``obj`` until the informer holds a version other than its current."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        key = f"{namespace}/{name}"
        with self._lock:
            informer = self._informers.get((kind, self._scope(namespace)))
        if informer is None:
            return
        cached = _version(informer.get(key))
        with self._lock:
            self._notes[(kind, key)] = _Note(copy.deepcopy(obj), cached, self._clock.monotonic())

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every informer started here."""
        with self._lock:
            self._stopped = True
            informers = list(self._informers.values())
        for informer in informers:
            informer.stop()

    @property
    def watched(self) -> list[str]:
        """``plural.group`` (and namespace) of every informer started, for tests and logs."""
        with self._lock:
            return sorted(f"{k.plural}.{k.group}@{scope or '*'}" for k, scope in self._informers)

    # -- the informers ----------------------------------------------------------------

    def _scope(self, namespace: str) -> str | None:
        return namespace if self._namespaces else None

    def _informer(self, kind: Kind, namespace: str) -> Informer[Obj] | None:
        """The synced informer for the kind in this namespace; None (read by GET) until
        then, starting it on first use."""
        if self._namespaces and namespace not in self._namespaces:
            return None
        slot = (kind, self._scope(namespace))
        with self._lock:
            informer = self._informers.get(slot)
            if informer is not None:
                return informer if self._live(informer) else None
            if self._stopped or self._refused_until.get(slot, 0.0) > self._clock.monotonic():
                return None
        if not self._may_list(kind, slot[1]):
            with self._lock:
                self._refused_until[slot] = self._clock.monotonic() + RETRY_SECONDS
            return None
        started = Informer.custom_resources(
            self._api_client,
            group=kind.group,
            version=kind.version,
            plural=kind.plural,
            namespace=slot[1],
            **self._options,
        )
        with self._lock:
            if slot in self._informers or self._stopped:
                return None  # another worker got there first (or we are stopping)
            self._informers[slot] = started
        started.start()
        log.info("watching router objects", kind=f"{kind.plural}.{kind.group}", scope=slot[1])
        return None

    def _live(self, informer: Informer[Obj]) -> bool:
        beat = informer.last_heartbeat
        return (
            informer.has_synced()
            and beat is not None
            and self._clock.monotonic() - beat <= self._stale_after
        )

    def _may_list(self, kind: Kind, namespace: str | None) -> bool:
        """A one-item list, to learn whether the kind is served and may be listed."""
        try:
            if namespace is None:
                call_api(
                    lambda: self._custom.list_cluster_custom_object(
                        kind.group, kind.version, kind.plural, limit=1
                    )
                )
            else:
                call_api(
                    lambda: self._custom.list_namespaced_custom_object(
                        kind.group, kind.version, namespace, kind.plural, limit=1
                    )
                )
        except ApiError as err:
            log.warning(
                "router objects read by GET: cannot list them",
                kind=f"{kind.plural}.{kind.group}",
                scope=namespace,
                status=err.status,
                error=str(err),
            )
            return False
        return True
