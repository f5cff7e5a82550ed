"""Liveness, readiness and metrics endpoints of the controller process.

The kubelet probes these; Prometheus scrapes ``/metrics``. They sit beside the flow and
only read it: each informer's heartbeat and sync state, and whether the worker threads
are still running.

* ``/healthz`` (liveness): 200 while every informer's heartbeat is younger than
  ``heartbeat_timeout`` and every registered worker thread is alive; otherwise 500
  with a one-line reason. A watch that died silently stops the heartbeat, the probe
  fails, and the kubelet restarts the process: the guide's "a controller whose watch
  died silently must fail its liveness probe".
* ``/readyz`` (readiness): 200 once every informer has synced. Leadership is not
  part of it: a follower with warm caches is ready to take over, and marking it
  unready would only remove it from Services and PodDisruptionBudget arithmetic.
* ``/metrics``: the :class:`prometheus_client.CollectorRegistry` given (see
  :mod:`.metrics`), in the Prometheus text format.

The server is the standard library's ``ThreadingHTTPServer`` on a daemon thread.
Heartbeats are compared with ``clock`` which must be the informers' clock.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controller.clock import SYSTEM_CLOCK, Clock

log = structlog.get_logger()


class HeartbeatSource(Protocol):
    """What the probes read from an informer (:class:`.informer.Informer` fits)."""

    @property
    def name(self) -> str:
        """A short name for reasons and logs."""
        ...

    @property
    def last_heartbeat(self) -> float | None:
        """Clock time of the last sign of life; None before start."""
        ...

    def has_synced(self) -> bool:
        """True once the first list is in the cache."""
        ...


class Alive(Protocol):
    """A worker (a :class:`threading.Thread` fits)."""

    def is_alive(self) -> bool:
        """True while it runs."""
        ...


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (0: any free port)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        registry: CollectorRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        heartbeat_timeout: float = 180.0,
    ) -> None:
        """``heartbeat_timeout`` must exceed the informers' ``watch_timeout +
        read_grace``: a healthy but quiet watch beats once per reconnect."""
        self._address = (host, port)
        self._registry = registry
        self._clock = clock
        self.heartbeat_timeout = heartbeat_timeout
        self._lock = threading.Lock()
        self._informers: list[HeartbeatSource] = []
        self._workers: list[tuple[str, Alive]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what is checked ------------------------------------------------------------

    def add_informer(self, informer: HeartbeatSource) -> None:
        """Include an informer in liveness (heartbeat) and readiness (synced)."""
        with self._lock:
            self._informers.append(informer)

    def add_worker(self, name: str, worker: Alive) -> None:
        """Include a worker thread in liveness."""
        with self._lock:
            self._workers.append((name, worker))

    def liveness(self) -> tuple[bool, str]:
        """``(True, "ok")``, or ``(False, reason)`` for the first failed check."""
        with self._lock:
            informers = list(self._informers)
            workers = list(self._workers)
        now = self._clock.monotonic()
        for informer in informers:
            beat = informer.last_heartbeat
            if beat is None:
                return False, f"informer {informer.name} is not running"
            age = now - beat
            if age > self.heartbeat_timeout:
                return False, (
                    f"informer {informer.name} has had no heartbeat for {age:.0f}s "
                    f"(limit {self.heartbeat_timeout:.0f}s)"
                )
        for name, worker in workers:
            if not worker.is_alive():
                return False, f"worker {name} is not running"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """``(True, "ok")`` once every informer has synced, else ``(False, reason)``."""
        with self._lock:
            informers = list(self._informers)
        waiting = [i.name for i in informers if not i.has_synced()]
        if waiting:
            return False, f"informers not synced: {', '.join(waiting)}"
        return True, "ok"

    # -- the server -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the health server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self._address[0]}:{self.port}"

    def start(self) -> None:
        """Bind and serve on a daemon thread."""
        if self._server is not None:
            return
        server = ThreadingHTTPServer(self._address, _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="health", daemon=True
        )
        self._thread.start()
        log.info("health server listening", url=self.url)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("health server stopped")

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of ``path``."""
        route = path.split("?", 1)[0]
        if route == "/healthz":
            ok, reason = self.liveness()
        elif route == "/readyz":
            ok, reason = self.readiness()
        elif route == "/metrics" and self._registry is not None:
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        else:
            return HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n"
        status = HTTPStatus.OK if ok else HTTPStatus.INTERNAL_SERVER_ERROR
        if not ok:
            log.warning("probe failed", path=route, reason=reason)
        return status, "text/plain; charset=utf-8", (reason.replace("\n", " ") + "\n").encode()


def _handler_for(health: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "stepwise-health"

        def do_GET(self) -> None:
            status, content_type, body = health.respond(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("health request", request=format % args)

    return Handler
