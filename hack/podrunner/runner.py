"""The pod runner: a demo-app process for every served pod, like a kubelet for kwok's pods.

It lists and watches pods (all namespaces, or the ones it is given) through the API
server. For each pod that opted in (:mod:`podrunner.spec`) and is Running with a podIP it
starts one demo-app process bound to podIP:containerPort, waits for its ``/healthz`` and
then annotates the pod ``stepwise.dev/serving: "true"`` (kwok's stage makes it Ready).
When the pod is being deleted or leaves Running the process is stopped. A process that
exits on its own is logged with its last log lines, the pod is annotated ``"false"``
(kwok makes it un-Ready), and nothing is restarted: the pod stays un-Ready until it is
replaced. A pod whose IP was another pod's a moment ago waits until that pod's process
has stopped (kwok hands a deleted pod's IP to the next one).

It also publishes EndpointSlices for the Services that select served pods
(:mod:`podrunner.slices`), since the controller manager cannot publish loopback pod IPs.

One thread per watch, one reconcile thread, and one supervisor thread per process (it
starts, watches and stops its process; nothing else touches it). ``stop()`` stops every
process and marks its pod not serving.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from localcluster.process import Running
from podrunner import slices as slices_mod
from podrunner.child import Child
from podrunner.spec import (
    SERVING_ANNOTATION,
    NotServableError,
    ServeSpec,
    key,
    marked_serving,
    meta,
    opted_in,
    serve_spec,
    wants_process,
)

log = logging.getLogger("podrunner")

HACK = Path(__file__).resolve().parents[1]
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "stepwise-podrunner"

# Requests to pod IPs go straight to them, never through an HTTP proxy from the env.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ServedPod:
    """What the runner does for one pod right now."""

    namespace: str
    name: str
    uid: str
    address: str
    """podIP:port the process binds."""
    pid: int | None
    state: str
    """``starting`` (waiting for /healthz), ``serving`` (marked), ``stopping``, or
    ``exited`` (ended on its own, or never answered; not restarted)."""
    log_path: Path


class PodRunner(Running):
    """Serves opted-in pods with demo-app processes. Use as a context manager, or
    ``start()`` / ``stop()``."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        workdir: Path | None = None,
        python: str = sys.executable,
        healthz_timeout: float = 30.0,
        publish_slices: bool = True,
        endpoint_lag: float = 0.0,
        namespaces: list[str] | None = None,
        watch_timeout: int = 2,
    ) -> None:
        """``kubeconfig`` may be any cluster's (the local one, or kind's); the processes'
        logs go to ``workdir/logs``. ``publish_slices`` writes EndpointSlices for the
        Services of served pods; ``endpoint_lag`` lists a pod as a ready endpoint only
        that many seconds after it became Ready (a slow EndpointSlice controller).
        ``namespaces`` limits the runner to these (default: all;
        two runners must not serve the same namespace). ``watch_timeout`` bounds each
        watch request (seconds), and so how long ``stop()`` waits for the watch threads."""
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="stepwise-podrunner-"))
        self.python = python
        self.healthz_timeout = healthz_timeout
        self.publish_slices = publish_slices
        self.endpoint_lag = endpoint_lag
        self.watch_timeout = watch_timeout
        self._cond = threading.Condition()
        self._dirty = False
        self._stopping = threading.Event()
        self._pods: dict[str, dict[str, Any]] = {}
        self._services: dict[str, dict[str, Any]] = {}
        self._supervisors: dict[str, _Supervisor] = {}
        self._failed: set[str] = set()
        self._applied: dict[slices_mod.Key, dict[str, Any]] = {}
        self._threads: list[threading.Thread] = []
        self._watchers: list[_Watcher] = []
        self._error: BaseException | None = None
        self._api: client.ApiClient | None = None

    # -- public ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start watching and serving; returns once the first lists are in."""
        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(self._api)
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        self._watchers = []
        for ns in scopes:
            self._watchers.append(
                _Watcher(
                    "pods",
                    ns,
                    core.list_namespaced_pod if ns else core.list_pod_for_all_namespaces,
                    functools.partial(self._store, self._pods, opted_in, ns),
                    self._stopping,
                    self.watch_timeout,
                )
            )
            if self.publish_slices:
                self._watchers.append(
                    _Watcher(
                        "services",
                        ns,
                        core.list_namespaced_service
                        if ns
                        else core.list_service_for_all_namespaces,
                        functools.partial(self._store, self._services, _has_selector, ns),
                        self._stopping,
                        self.watch_timeout,
                    )
                )
        if self.publish_slices:
            self._load_applied_slices(scopes)
        loop = threading.Thread(target=self._loop, name="podrunner-reconcile", daemon=True)
        self._threads = [*self._watchers, loop]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for watcher in self._watchers:
            if not watcher.synced.wait(max(deadline - time.monotonic(), 0.0)):
                self.stop()
                raise RuntimeError(f"pod runner: listing {watcher.kind} failed: {watcher.error}")

    def stop(self) -> None:
        """Stop every process (marking its pod not serving), then the watches."""
        self._stopping.set()
        with self._cond:
            supervisors = list(self._supervisors.values())
            self._cond.notify_all()
        for sup in supervisors:
            sup.request_stop()
        for sup in supervisors:
            sup.join()
        for thread in self._threads:
            thread.join(timeout=self.watch_timeout + 5)
        self._threads = []
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def check(self) -> None:
        """Raise if the reconcile thread died."""
        if self._error is not None:
            raise RuntimeError(f"pod runner failed: {self._error!r}") from self._error

    def served(self) -> dict[tuple[str, str], ServedPod]:
        """The pods with a process (running, starting, stopping or exited), by
        (namespace, name)."""
        with self._cond:
            sups = list(self._supervisors.values())
        out = {}
        for sup in sups:
            s = sup.spec
            out[(s.namespace, s.name)] = ServedPod(
                s.namespace, s.name, s.uid, s.address, sup.pid, sup.state, sup.child.log_path
            )
        return out

    # -- caches (the watch threads call these) ----------------------------------------

    def _store(
        self,
        cache: dict[str, dict[str, Any]],
        keep: Callable[[dict[str, Any]], bool],
        namespace: str | None,
        items: list[dict[str, Any]] | None,
        obj: dict[str, Any] | None,
        deleted: bool,
    ) -> None:
        """A fresh list (``items``) replaces the watch's scope; an event one object."""
        with self._cond:
            if items is not None:
                for uid, old in list(cache.items()):
                    if namespace is None or meta(old).get("namespace") == namespace:
                        del cache[uid]
                cache.update({meta(o)["uid"]: o for o in items if keep(o)})
            elif obj is not None:
                uid = meta(obj)["uid"]
                if deleted or not keep(obj):
                    cache.pop(uid, None)
                else:
                    cache[uid] = obj
            self._dirty = True
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    # -- reconcile --------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                with self._cond:
                    self._cond.wait_for(lambda: self._dirty or self._stopping.is_set(), 0.5)
                    self._dirty = False
                    pods = list(self._pods.values())
                    services = list(self._services.values())
                if self._stopping.is_set():
                    return
                self._reconcile_processes(pods)
                if self.publish_slices:
                    self._reconcile_slices(pods, services)
        except BaseException as exc:  # surfaced by check()
            log.exception("pod runner: the reconcile loop failed")
            self._error = exc

    def _reconcile_processes(self, pods: list[dict[str, Any]]) -> None:
        wanted = {meta(p)["uid"]: p for p in pods if wants_process(p)}
        with self._cond:
            for uid, sup in list(self._supervisors.items()):
                if uid not in wanted:
                    sup.request_stop()
                # An exited process stays listed (and holds its address) while its pod
                # lives: the pod is not served again.
                if not sup.is_alive() and (uid not in wanted or uid not in self._failed):
                    del self._supervisors[uid]
            self._failed &= set(wanted)
            busy = {sup.spec.address for sup in self._supervisors.values()}
            for uid, pod in wanted.items():
                if uid in self._supervisors or uid in self._failed or self._stopping.is_set():
                    continue
                try:
                    spec = serve_spec(pod)
                except NotServableError as exc:
                    log.error("pod runner: %s; it stays un-Ready", exc)
                    self._failed.add(uid)
                    continue
                if spec.address in busy:
                    continue  # the pod that had this IP before is still stopping
                busy.add(spec.address)
                sup = _Supervisor(self, spec, stale_mark=marked_serving(pod))
                self._supervisors[uid] = sup
                sup.start()

    def _reconcile_slices(self, pods: list[dict[str, Any]], services: list[dict[str, Any]]) -> None:
        assert self._api is not None
        discovery = client.DiscoveryV1Api(self._api)
        desired = slices_mod.desired_slices(pods, services, ready_lag=self.endpoint_lag)
        for (namespace, name), body in desired.items():
            if self._applied.get((namespace, name)) == body:
                continue
            try:
                discovery.patch_namespaced_endpoint_slice(
                    name,
                    namespace,
                    body,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type=APPLY_PATCH,
                )
            except ApiException as exc:
                log.warning(
                    "pod runner: writing EndpointSlice %s/%s failed: %s %s",
                    namespace,
                    name,
                    exc.status,
                    exc.reason,
                )
                continue
            self._applied[(namespace, name)] = body
        for namespace, name in list(self._applied):
            if (namespace, name) in desired:
                continue
            try:
                discovery.delete_namespaced_endpoint_slice(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    log.warning(
                        "pod runner: deleting EndpointSlice %s/%s failed: %s %s",
                        namespace,
                        name,
                        exc.status,
                        exc.reason,
                    )
                    continue
            del self._applied[(namespace, name)]

    def _load_applied_slices(self, scopes: list[str | None]) -> None:
        """Slices an earlier runner left in scope: adopted, so that stale ones go."""
        assert self._api is not None
        discovery = client.DiscoveryV1Api(self._api)
        selector = f"{slices_mod.MANAGED_BY_LABEL}={slices_mod.MANAGED_BY}"
        for ns in scopes:
            resp: Any = (
                discovery.list_namespaced_endpoint_slice(
                    ns, label_selector=selector, _preload_content=False
                )
                if ns
                else discovery.list_endpoint_slice_for_all_namespaces(
                    label_selector=selector, _preload_content=False
                )
            )
            for item in json.loads(resp.data).get("items") or []:
                self._applied[(meta(item)["namespace"], meta(item)["name"])] = {}

    # -- called by supervisors --------------------------------------------------------

    def _mark(self, spec: ServeSpec, serving: bool, stop: threading.Event | None) -> bool:
        """Annotate the pod (this uid only); retried until done, the pod is gone, or
        ``stop`` is set. True when written."""
        assert self._api is not None
        core = client.CoreV1Api(self._api)
        body = {
            "metadata": {
                "uid": spec.uid,  # a precondition: never another pod of the same name
                "annotations": {SERVING_ANNOTATION: "true" if serving else "false"},
            }
        }
        delay = 0.1
        for _ in range(20):
            try:
                core.patch_namespaced_pod(
                    spec.name, spec.namespace, body, _content_type=MERGE_PATCH
                )
            except ApiException as exc:
                if exc.status in (404, 409):
                    return False  # deleted (or replaced by a pod of the same name)
                log.warning(
                    "pod runner: annotating %s/%s failed: %s %s; retrying",
                    spec.namespace,
                    spec.name,
                    exc.status,
                    exc.reason,
                )
            except Exception as exc:  # connection refused while the API server restarts
                log.warning(
                    "pod runner: annotating %s/%s failed: %r; retrying",
                    spec.namespace,
                    spec.name,
                    exc,
                )
            else:
                return True
            if stop is not None and stop.wait(delay):
                return False
            if stop is None:
                time.sleep(delay)
            delay = min(delay * 2, 2.0)
        return False

    def _failed_pod(self, uid: str) -> None:
        with self._cond:
            self._failed.add(uid)
        self._wake()

    def _child_env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH", "")
        return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(HACK), path) if p)}


class _Supervisor(threading.Thread):
    """Starts one pod's process, marks the pod serving once it answers, and stops it
    (or reports its exit)."""

    def __init__(self, runner: PodRunner, spec: ServeSpec, *, stale_mark: bool) -> None:
        super().__init__(name=f"podrunner-{spec.namespace}/{spec.name}", daemon=True)
        self.runner = runner
        self.spec = spec
        self.stale_mark = stale_mark
        self.state = "starting"
        self._stop_requested = threading.Event()
        log_name = f"{spec.namespace}_{spec.name}_{spec.uid[:8]}.log"
        self.child = Child(
            spec.argv(runner.python), runner.workdir / "logs" / log_name, runner._child_env()
        )
        self.pid: int | None = None

    def request_stop(self) -> None:
        if self.state != "exited":
            self.state = "stopping"
        self._stop_requested.set()

    def run(self) -> None:
        spec, stop = self.spec, self._stop_requested
        where = f"pod {spec.namespace}/{spec.name} ({spec.address})"
        try:
            if self.stale_mark:  # marked by an earlier runner; nothing serves it yet
                self.runner._mark(spec, False, stop)
            self.child.start()
            self.pid = self.child.pid
            log.info("pod runner: %s: started demo app, pid %s", where, self.pid)
            if not self._wait_healthy(where):
                return
            if self.runner._mark(spec, True, stop):
                if self.state == "starting":
                    self.state = "serving"
                log.info("pod runner: %s: serving", where)
            while not stop.wait(0.1):
                code = self.child.exit_code()
                if code is not None:
                    self._exited(where, f"exited with code {code}")
                    return
            self.child.stop()
            self.runner._mark(spec, False, None)
            log.info("pod runner: %s: stopped", where)
        except BaseException:
            log.exception("pod runner: %s: supervisor failed", where)
            self.child.stop()
            self.state = "exited"
            self.runner._failed_pod(spec.uid)
        finally:
            self.runner._wake()

    def _wait_healthy(self, where: str) -> bool:
        deadline = time.monotonic() + self.runner.healthz_timeout
        url = f"http://{self.spec.address}/healthz"
        while True:
            if self._stop_requested.is_set():
                self.child.stop()
                return False
            code = self.child.exit_code()
            if code is not None:
                self._exited(where, f"exited with code {code} before answering /healthz")
                return False
            try:
                with _direct.open(url, timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.child.stop()
                self._exited(where, f"did not answer {url} in {self.runner.healthz_timeout:g}s")
                return False
            self._stop_requested.wait(0.05)

    def _exited(self, where: str, what: str) -> None:
        self.state = "exited"
        log.error(
            "pod runner: %s: demo app (pid %s) %s; pod marked not serving, not restarted; "
            "last log lines (%s):\n%s",
            where,
            self.pid,
            what,
            self.child.log_path,
            self.child.tail(),
        )
        self.runner._failed_pod(self.spec.uid)
        self.runner._mark(self.spec, False, None)


class _Watcher(threading.Thread):
    """List, then watch from the list's resourceVersion, into the runner's cache; lists
    again after a 410 Gone or an error."""

    def __init__(
        self,
        kind: str,
        namespace: str | None,
        list_fn: Callable[..., Any],
        store: Callable[[list[dict[str, Any]] | None, dict[str, Any] | None, bool], None],
        stop: threading.Event,
        timeout: int,
    ) -> None:
        super().__init__(name=f"podrunner-watch-{kind}-{namespace or 'all'}", daemon=True)
        self.kind = kind
        self.args = (namespace,) if namespace else ()
        self.list_fn = list_fn
        self.store = store
        self.stop_event = stop
        self.timeout = timeout
        self.synced = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                rv = self._list()
                self.synced.set()
                while not self.stop_event.is_set():
                    rv = self._watch(rv)
            except ApiException as exc:
                if exc.status != 410:
                    self.error = exc
                    log.warning(
                        "pod runner: watching %s: %s %s; listing again",
                        self.kind,
                        exc.status,
                        exc.reason,
                    )
                    self.stop_event.wait(1.0)
            except Exception as exc:  # the API server is away (restarting, say)
                self.error = exc
                log.warning("pod runner: watching %s: %r; listing again", self.kind, exc)
                self.stop_event.wait(1.0)

    def _list(self) -> str:
        resp = self.list_fn(*self.args, _preload_content=False, _request_timeout=30)
        body = json.loads(resp.data)
        self.store(list(body.get("items") or []), None, False)
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, rv: str) -> str:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(  # type: ignore[no-untyped-call]
            self.list_fn,
            *self.args,
            resource_version=rv,
            timeout_seconds=self.timeout,
            allow_watch_bookmarks=True,
            deserialize=False,
            _request_timeout=self.timeout + 30,
        ):
            obj = event["object"]
            rv = str(meta(obj).get("resourceVersion", rv))
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self.store(None, obj, event["type"] == "DELETED")
                log.debug("pod runner: %s %s %s", event["type"], self.kind, key(obj))
            if self.stop_event.is_set():
                w.stop()  # type: ignore[no-untyped-call]
        return rv


def _has_selector(svc: dict[str, Any]) -> bool:
    return bool((svc.get("spec") or {}).get("selector"))
