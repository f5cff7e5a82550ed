"""Watches and the read cache: the start of the controller's flow.

An :class:`Informer` lists then watches one resource (Rollouts, ReplicaSets, Services,
Pods, ...), keeps an in-memory cache of it, and tells handlers which object changed by
its ``namespace/name`` key only. Handlers put that key on the work queue; the
reconciler reads the current object back from :meth:`Informer.get` and never acts on an
event's payload.

This is a thin layer over the official client's :class:`kubernetes.informer.SharedInformer`,
which does the real work: the initial list, the watch from the list's resourceVersion,
resuming from the last seen resourceVersion on reconnect, a full relist on 410 Gone
(with DELETED events for objects that vanished meanwhile), the ``ObjectCache`` and the
handler dispatch. What it lacks is added here by wrapping the *list function* it is
given (it calls that one function both to list and, with ``watch=True``, to watch), by
its own event handlers, and by a read-only view of its cache:

* **A client-side timeout on every request.** SharedInformer passes neither
  ``_request_timeout`` nor (without a resync period) ``timeout_seconds``, so a watch on
  a dead connection would block forever. Every watch here asks the server to end it
  after ``watch_timeout`` seconds and gives up reading after ``watch_timeout +
  read_grace`` seconds of silence; lists get ``(connect_timeout, list_timeout)``.
* **``allowWatchBookmarks``** when the list function accepts it, so a quiet watch still
  carries resourceVersion progress (and heartbeats). The API server sends a bookmark
  about once a minute and about 2 s before the watch's ``timeoutSeconds`` runs out. A
  bookmark moves :attr:`Informer.resource_version` and the heartbeat and is counted in
  :attr:`Informer.bookmarks`; it never touches the cache or reaches the key handlers.
  (SharedInformer itself resumes from the bookmark's resourceVersion on reconnect.)
* **A heartbeat** (:attr:`Informer.last_heartbeat`), refreshed by every successful list,
  every watch (re)connection, every event and every bookmark. A liveness probe fails
  when it stops moving: that is how a watch that died silently is noticed.
* **The resourceVersion seen last** (:attr:`Informer.resource_version`): of the last
  list, event or bookmark, for probes, logs and tests.
* **:meth:`Informer.has_synced`**: true once the first list has been put in the cache
  and its handlers have run (SharedInformer starts the first watch only after that).
* **Backoff between failed watch attempts.** SharedInformer reconnects a failed watch
  at once, which spins while the API server is down; the list function waits (on the
  stop event, never ``time.sleep``) 0.1 s, 0.2 s, ... up to ``max_backoff`` before
  reconnecting after consecutive failures.
* **Retries of the list** under :mod:`controller.adapters.retry` (transient errors
  only), because SharedInformer waits a fixed 5 s after any failed list.
* **Custom resources.** ``CustomObjectsApi`` list calls return a dict, and
  SharedInformer reads ``resp.items`` / ``resp.metadata.resource_version`` as
  attributes, so the list answer is adapted into that shape.
* **Keys, not objects, for handlers**, and **deep copies** out of the cache
  (:meth:`Informer.get`, :meth:`Informer.list`), so no caller can mutate what the
  informer holds.
* **A prompt stop.** ``SharedInformer.stop()`` shuts the watch socket only if its
  ``Watch`` has already stored the response; the response is tracked here too and shut
  down, so a stop never waits for a read timeout.

The wrapper relies on two documented behaviours of SharedInformer 37: it calls the
list function with ``watch=True`` for watches (through :class:`kubernetes.watch.Watch`,
which finds the event object type from the function's signature or docstring, so the
wrapper keeps those via :func:`functools.update_wrapper`), and it lists again whenever
it has no resourceVersion (first start, 410). It needs nothing else from its internals.
"""

from __future__ import annotations

import builtins
import copy
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog
import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.informer import (
    ADDED,
    BOOKMARK,
    DELETED,
    ERROR,
    MODIFIED,
    SharedInformer,
    _meta_namespace_key,
)

from controller.adapters.retry import RetryPolicy
from controller.clock import SYSTEM_CLOCK, Clock
from controller.errors import ApiError
from controller.runtime.metrics import dedicated

T = TypeVar("T")

#: A handler gets the ``namespace/name`` key (just ``name`` for cluster-scoped objects).
KeyHandler = Callable[[str], None]

#: A generated list method (``CoreV1Api.list_namespaced_pod``, ...) or an equivalent.
ListFunc = Callable[..., Any]

log = structlog.get_logger()


class _ReportedHere(logging.Filter):
    """Drops SharedInformer's own log records from threads that run an :class:`Informer`.

    SharedInformer logs every failed list or watch, and the socket shutdown of a normal
    stop, at ERROR with a traceback and without saying which informer it was. Each of
    those reaches :meth:`Informer._on_error` too, which logs it once, structured, with
    the informer's name (and a traceback when the error is not an expected one).
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._threads: set[int] = set()

    def add(self, ident: int) -> None:
        with self._lock:
            self._threads.add(ident)

    def discard(self, ident: int | None) -> None:
        if ident is not None:
            with self._lock:
                self._threads.discard(ident)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            return record.thread not in self._threads


_REPORTED_HERE = _ReportedHere()
logging.getLogger("kubernetes.informer.informer").addFilter(_REPORTED_HERE)

#: Errors that are part of normal operation (the API server went away, the watch
#: expired, stop() shut the socket); anything else is logged with its traceback.
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ApiError,
    ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
)

#: Seconds a watch read may stay silent beyond the watch's own ``timeoutSeconds`` before
#: the client gives up on it (the inactivity timeout is ``watch_timeout + READ_GRACE``).
READ_GRACE = 15.0

_LIST_RETRY = RetryPolicy(max_attempts=4, max_total=10.0, initial_wait=0.2, max_wait=2.0)


class InformerStoppedError(Exception):
    """Raised inside the informer thread to abandon a watch attempt during stop()."""


@dataclass(frozen=True)
class _ListMeta:
    resource_version: str | None


@dataclass(frozen=True)
class _ListPage:
    """The attribute shape SharedInformer reads from a list answer, for dict answers."""

    items: list[Any] = field(default_factory=list)
    metadata: _ListMeta = field(default_factory=lambda: _ListMeta(None))


class Cache(Protocol[T]):
    """What readers of a watch cache need: copies of its objects by key, or by namespace
    and labels (an :class:`Informer`, or several seen as one, fits)."""

    def get(self, key: str) -> T | None:
        """A copy of the object with this key, or None."""
        ...

    def list(
        self, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> builtins.list[T]:
        """Copies of the objects (of one namespace, with these labels, if given)."""
        ...

    def versions(self, namespace: str | None = None) -> dict[str, str]:
        """The key and resourceVersion of every object (of one namespace), copying none:
        a reader that keeps what it derived from each object re-reads only those that
        changed."""
        ...


def key_of(obj: Any) -> str:
    """The cache key of an object (model or dict): ``namespace/name``, or ``name``."""
    key: str = _meta_namespace_key(obj)  # type: ignore[no-untyped-call]
    return key


def version_of(obj: Any) -> str:
    """The resourceVersion of a cached object (model or dict), without copying it."""
    if isinstance(obj, dict):
        version = (obj.get("metadata") or {}).get("resourceVersion")
    else:
        meta = getattr(obj, "metadata", None)
        version = getattr(meta, "resource_version", None)
    return str(version or "")


def labels_of(obj: Any) -> Mapping[str, str]:
    """The labels of a cached object (model or dict), without copying it."""
    if isinstance(obj, dict):
        labels = (obj.get("metadata") or {}).get("labels")
    else:
        meta = getattr(obj, "metadata", None)
        labels = getattr(meta, "labels", None)
    return labels or {}


def _shutdown_response(resp: Any) -> None:
    """Unblock a thread reading ``resp`` (a urllib3 response) from another thread."""
    shutdown = getattr(resp, "shutdown", None)
    try:
        if callable(shutdown):
            shutdown()
        resp.close()
    except Exception as exc:  # best effort: the response may be half-closed already
        log.debug("closing watch response failed", error=str(exc))


class Informer(Generic[T]):
    """A SharedInformer with timeouts, a heartbeat, ``has_synced`` and a copy-out cache.

    ``list_func`` must accept ``watch``, ``resource_version``, ``timeout_seconds``,
    ``_preload_content`` and ``_request_timeout`` keywords, and ``namespace`` if a
    namespace is given, like the generated list methods. Prefer the constructors
    :meth:`custom_resources`, :meth:`replica_sets`, :meth:`services` and :meth:`lease`
    (or build ``list_func`` with :func:`scoped`).

    ``clock`` stamps the heartbeat; the health check must read it with the same clock.
    """

    def __init__(
        self,
        list_func: ListFunc,
        *,
        name: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout: int = 60,
        read_grace: float = READ_GRACE,
        connect_timeout: float = 5.0,
        list_timeout: float = 30.0,
        max_backoff: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        owned_client: client.ApiClient | None = None,
    ) -> None:
        """``owned_client``, if given, is the API client behind ``list_func``; it is
        closed by :meth:`stop`. The constructors pass a dedicated one (see
        :func:`controller.runtime.metrics.dedicated`, which keeps the request hook)."""
        if watch_timeout < 1:
            raise ValueError("watch_timeout must be at least 1 second")
        self.name = name
        self.namespace = namespace
        self._inner = list_func
        self._watch_timeout = int(watch_timeout)
        self._read_timeout = float(watch_timeout) + read_grace
        self._connect_timeout = connect_timeout
        self._list_timeout = list_timeout
        self._max_backoff = max_backoff
        self._clock = clock
        self._owned_client = owned_client
        self._bookmarks = "allow_watch_bookmarks" in _parameters(list_func)
        self._log = log.bind(informer=name, namespace=namespace or "*")

        self._lock = threading.Lock()
        self._handlers: list[KeyHandler] = []
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._heartbeat: float | None = None
        self._resource_version: str | None = None
        self._bookmarks_seen = 0
        self._watch_failures = 0
        self._lists = 0
        self._current_watch: Any = None
        self._thread_ident: int | None = None

        def list_or_watch(**kwargs: Any) -> Any:
            if self._thread_ident is None:
                self._thread_ident = threading.get_ident()
                _REPORTED_HERE.add(self._thread_ident)
            if kwargs.get("watch"):
                return self._open_watch(kwargs)
            return self._list(kwargs)

        # kubernetes.watch.Watch reads the event type from the signature / docstring.
        functools.update_wrapper(list_or_watch, list_func)
        self._informer = SharedInformer(  # type: ignore[no-untyped-call]
            list_or_watch,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        for event_type in (ADDED, MODIFIED, DELETED):
            self._informer.add_event_handler(event_type, self._on_object)  # type: ignore[no-untyped-call]
        self._informer.add_event_handler(BOOKMARK, self._on_bookmark)  # type: ignore[no-untyped-call]
        self._informer.add_event_handler(ERROR, self._on_error)  # type: ignore[no-untyped-call]

    # -- constructors ---------------------------------------------------------------

    @classmethod
    def custom_resources(
        cls,
        api_client: client.ApiClient,
        *,
        group: str,
        version: str,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        **options: Any,
    ) -> Informer[dict[str, Any]]:
        """Objects of a custom resource (as dicts), in one namespace or all of them."""
        own = dedicated(api_client)
        custom = client.CustomObjectsApi(own)

        def list_custom(**kwargs: Any) -> Any:
            ns = kwargs.pop("namespace", None)
            if ns is None:
                return custom.list_cluster_custom_object(group, version, plural, **kwargs)
            return custom.list_namespaced_custom_object(group, version, ns, plural, **kwargs)

        functools.update_wrapper(list_custom, custom.list_namespaced_custom_object)
        return Informer[dict[str, Any]](
            list_custom,
            name=f"{plural}.{group}",
            namespace=namespace,
            label_selector=label_selector,
            owned_client=own,
            **options,
        )

    @classmethod
    def replica_sets(
        cls, api_client: client.ApiClient, *, namespace: str | None = None, **options: Any
    ) -> Informer[client.V1ReplicaSet]:
        """ReplicaSets (``apps/v1``)."""
        return _built_in(api_client, client.AppsV1Api, "replica_set", namespace, options)

    @classmethod
    def deployments(
        cls, api_client: client.ApiClient, *, namespace: str | None = None, **options: Any
    ) -> Informer[client.V1Deployment]:
        """Deployments (``apps/v1``), for Rollouts that take their pod template from one
        (``spec.workloadRef``)."""
        return _built_in(api_client, client.AppsV1Api, "deployment", namespace, options)

    @classmethod
    def services(
        cls, api_client: client.ApiClient, *, namespace: str | None = None, **options: Any
    ) -> Informer[client.V1Service]:
        """Services."""
        return _built_in(api_client, client.CoreV1Api, "service", namespace, options)

    @classmethod
    def lease(
        cls, api_client: client.ApiClient, *, namespace: str, name: str, **options: Any
    ) -> Informer[client.V1Lease]:
        """One Lease (``coordination.k8s.io/v1``), by a ``metadata.name`` field selector,
        which RBAC can narrow to that name (``resourceNames`` with list and watch)."""
        own = dedicated(api_client)
        coordination = client.CoordinationV1Api(own)
        return Informer[client.V1Lease](
            coordination.list_namespaced_lease,
            name="leases",
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            owned_client=own,
            **options,
        )

    # -- lifecycle ------------------------------------------------------------------

    def add_handler(self, handler: KeyHandler) -> None:
        """Call ``handler(key)`` on the informer thread for every add, update and delete
        (and for every object on a relist). It must be quick: put the key on a queue."""
        with self._lock:
            self._handlers.append(handler)

    def start(self) -> None:
        """Start listing and watching in a daemon thread. An informer runs once: after
        :meth:`stop`, make a new one."""
        if self._stopping.is_set():
            raise RuntimeError(f"informer {self.name} was stopped; create a new one")
        with self._lock:
            if self._heartbeat is None:
                # Liveness counts from here: "no contact for N seconds since start".
                self._heartbeat = self._clock.monotonic()
        self._informer.start()  # type: ignore[no-untyped-call]
        self._log.info("informer started", bookmarks=self._bookmarks)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the watch and join the informer thread (within ``timeout`` seconds)."""
        self._stopping.set()
        stopper = threading.Thread(
            target=self._informer.stop, name=f"stop-{self.name}", daemon=True
        )
        stopper.start()
        stopper.join(timeout=0.2)
        if stopper.is_alive():
            # The thread may be reading a response that SharedInformer's Watch had not
            # recorded yet when stop() ran; shut it down here.
            with self._lock:
                resp = self._current_watch
            if resp is not None:
                _shutdown_response(resp)
            stopper.join(timeout=timeout)
        if stopper.is_alive():
            self._log.warning("informer thread did not stop in time", timeout=timeout)
            return
        _REPORTED_HERE.discard(self._thread_ident)
        if self._owned_client is not None:
            self._owned_client.close()  # type: ignore[no-untyped-call]
        self._log.info("informer stopped")

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Block until :meth:`has_synced` (or ``timeout`` seconds); returns whether it did."""
        return self._synced.wait(timeout)

    # -- state ----------------------------------------------------------------------

    def has_synced(self) -> bool:
        """True once the first full list is in the cache and its handlers have run."""
        return self._synced.is_set()

    @property
    def last_heartbeat(self) -> float | None:
        """Clock time of the last sign of life from the API server (list, watch
        connection, event or bookmark); the start time until then; None before start."""
        with self._lock:
            return self._heartbeat

    @property
    def resource_version(self) -> str | None:
        """The resourceVersion of the last list, event or bookmark (None before the
        first list): how far this informer has followed the server."""
        with self._lock:
            return self._resource_version

    @property
    def bookmarks(self) -> int:
        """BOOKMARK events received so far."""
        with self._lock:
            return self._bookmarks_seen

    @property
    def relists(self) -> int:
        """Full lists after the first one (410 Gone, or a failed watch resume)."""
        with self._lock:
            return max(self._lists - 1, 0)

    # -- cache reads (always copies) ------------------------------------------------

    def get(self, key: str) -> T | None:
        """A deep copy of the cached object with this key, or None."""
        obj: T | None = self._informer.cache.get_by_key(key)
        return None if obj is None else copy.deepcopy(obj)

    def keys(self) -> builtins.list[str]:
        """The keys of every cached object."""
        keys: builtins.list[str] = self._informer.cache.list_keys()
        return keys

    def list(
        self, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> builtins.list[T]:
        """Deep copies of every cached object, or of those in ``namespace`` carrying every
        label in ``labels``. Filtered before copying: a copy costs about 0.15 ms for a
        typed ReplicaSet, and a Rollout's pass must not pay for its namespace's others."""
        objs: builtins.list[T] = self._informer.cache.list()
        if namespace is not None:
            prefix = f"{namespace}/"
            objs = [obj for obj in objs if key_of(obj).startswith(prefix)]
        if labels:
            wanted = labels.items()
            objs = [obj for obj in objs if wanted <= labels_of(obj).items()]
        return [copy.deepcopy(obj) for obj in objs]

    def versions(self, namespace: str | None = None) -> dict[str, str]:
        """Key -> resourceVersion of every cached object (of ``namespace``), no copies."""
        objs: builtins.list[T] = self._informer.cache.list()
        prefix = f"{namespace}/" if namespace is not None else ""
        out = {key_of(obj): version_of(obj) for obj in objs}
        return {k: v for k, v in out.items() if k.startswith(prefix)}

    # -- the wrapped list function (runs on the informer thread) --------------------

    def _list(self, kwargs: dict[str, Any]) -> Any:
        kwargs.setdefault("_request_timeout", (self._connect_timeout, self._list_timeout))
        resp = _LIST_RETRY.call(
            lambda: self._inner(**kwargs),
            sleep=self._stopping.wait,
            should_stop=self._stopping.is_set,
        )
        if isinstance(resp, dict):
            meta = resp.get("metadata") or {}
            resp = _ListPage(
                items=list(resp.get("items") or []),
                metadata=_ListMeta(meta.get("resourceVersion")),
            )
        listed_version = getattr(getattr(resp, "metadata", None), "resource_version", None)
        with self._lock:
            if listed_version:
                self._resource_version = str(listed_version)
            self._lists += 1
            self._watch_failures = 0
            relist = self._lists > 1
        self._beat()
        self._log.info("listed", objects=len(getattr(resp, "items", None) or []), relist=relist)
        return resp

    def _open_watch(self, kwargs: dict[str, Any]) -> Any:
        # SharedInformer calls this only once its list is in the cache: synced.
        self._synced.set()
        with self._lock:
            failures = self._watch_failures
        if failures:
            delay = min(0.1 * 2 ** min(failures - 1, 16), self._max_backoff)
            if self._stopping.wait(delay):
                raise InformerStoppedError(self.name)
        if self._stopping.is_set():
            raise InformerStoppedError(self.name)
        kwargs.setdefault("timeout_seconds", self._watch_timeout)
        if self._bookmarks:
            kwargs["allow_watch_bookmarks"] = True
        read_timeout = max(self._read_timeout, float(kwargs["timeout_seconds"]) + 1.0)
        kwargs["_request_timeout"] = (self._connect_timeout, read_timeout)
        resp = self._inner(**kwargs)
        with self._lock:
            self._current_watch = resp
        if self._stopping.is_set():
            _shutdown_response(resp)
        self._beat()
        return resp

    # -- SharedInformer handlers (run on the informer thread) -----------------------

    def _on_object(self, obj: Any) -> None:
        key = key_of(obj)
        version = _resource_version_of(obj)
        with self._lock:
            if version:
                self._resource_version = version
            self._watch_failures = 0
            handlers = list(self._handlers)
        self._beat()
        for handler in handlers:
            try:
                handler(key)
            except Exception:
                self._log.exception("informer handler failed", key=key)

    def _on_bookmark(self, raw: Any) -> None:
        """A BOOKMARK (SharedInformer passes its raw object: a dict with only
        ``metadata.resourceVersion`` worth reading): progress, no change to the cache."""
        version = _resource_version_of(raw)
        with self._lock:
            if version:
                self._resource_version = version
            self._bookmarks_seen += 1
            self._watch_failures = 0
        self._beat()
        self._log.debug("bookmark", resource_version=version)

    def _on_error(self, err: Any) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            self._watch_failures += 1
            failures = self._watch_failures
        status = getattr(err, "status", None)
        expected = isinstance(err, _EXPECTED_ERRORS)
        self._log.warning(
            "list or watch failed; retrying",
            error=type(err).__name__,
            message=str(err).splitlines()[0][:300] if str(err) else "",
            status=status,
            consecutive_failures=failures,
            relist=status == 410,
            exc_info=None if expected else err,
        )

    def _beat(self) -> None:
        now = self._clock.monotonic()
        with self._lock:
            self._heartbeat = now


def scoped(namespaced: ListFunc, all_namespaces: ListFunc) -> ListFunc:
    """One list function: the namespaced call when given ``namespace``, else the other."""

    def list_either(**kwargs: Any) -> Any:
        if kwargs.get("namespace") is not None:
            return namespaced(**kwargs)
        kwargs.pop("namespace", None)
        return all_namespaces(**kwargs)

    functools.update_wrapper(list_either, namespaced)
    return list_either


def _built_in(
    api_client: client.ApiClient,
    api: Callable[[client.ApiClient], Any],
    kind: str,
    namespace: str | None,
    options: dict[str, Any],
) -> Informer[Any]:
    """An informer of a built-in ``kind`` (``replica_set``: ReplicaSets, named
    ``replicasets``), through the ``list_namespaced_<kind>`` and
    ``list_<kind>_for_all_namespaces`` methods of ``api`` on a dedicated client."""
    own = dedicated(api_client)
    calls = api(own)
    return Informer(
        scoped(
            getattr(calls, f"list_namespaced_{kind}"),
            getattr(calls, f"list_{kind}_for_all_namespaces"),
        ),
        name=f"{kind.replace('_', '')}s",
        namespace=namespace,
        owned_client=own,
        **options,
    )


def _resource_version_of(obj: Any) -> str | None:
    """``metadata.resourceVersion`` of a model or a dict, if it has one."""
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    else:
        version = getattr(getattr(obj, "metadata", None), "resource_version", None)
    return str(version) if version else None


def _parameters(func: ListFunc) -> set[str]:
    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()
