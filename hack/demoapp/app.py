"""The demo app: an HTTP service whose error rate and latency are set per process and
can be changed while it runs, instrumented the way real services are.

It stands in for the revisions a Rollout judges: run one process per version (stable
``v1``, canary ``v2``), let Prometheus scrape ``/metrics``, drive load at ``/`` with
:mod:`demoapp.load`, and turn the canary bad with ``POST /admin/config``.

Endpoints:

======================  ==================================================================
``GET /`` (any path)    a request: waits ``latencyMs`` (± ``jitterMs``), then answers 500
                        with probability ``errorRate`` and 200 otherwise, with the
                        version in ``X-Served-By``; counted
``GET /metrics``        Prometheus metrics: ``http_requests_total{service,version,code}``
                        and ``http_request_duration_seconds{service,version}`` (histogram)
``GET /healthz``        200 ``ok`` (not counted)
``GET /admin/config``   the current configuration as JSON
``POST /admin/config``  change it: JSON with any of ``errorRate`` (0..1), ``latencyMs``,
                        ``jitterMs``; answers the new configuration (400 for bad input)
======================  ==================================================================
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

SERVED_BY = "X-Served-By"
"""The response header naming the version that answered a simulated request (success or
failure), so a client behind a Gateway can count requests per version."""
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
MAX_LATENCY_MS = 10_000.0


@dataclass(frozen=True)
class Config:
    """What the app does with each request (camelCase on the admin endpoint)."""

    error_rate: float = 0.0
    """Probability that a request fails with 500."""
    latency_ms: float = 20.0
    """Time spent on each request, in milliseconds."""
    jitter_ms: float = 0.0
    """Uniform random extra latency in [-jitter, +jitter] milliseconds."""

    def wire(self) -> dict[str, float]:
        """The JSON form: ``{"errorRate": ..., "latencyMs": ..., "jitterMs": ...}``."""
        raw = asdict(self)
        return {
            "errorRate": raw["error_rate"],
            "latencyMs": raw["latency_ms"],
            "jitterMs": raw["jitter_ms"],
        }

    def updated(self, changes: dict[str, Any]) -> Config:
        """A copy with the given wire fields changed; ValueError for unknown or bad ones."""
        names = {"errorRate": "error_rate", "latencyMs": "latency_ms", "jitterMs": "jitter_ms"}
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; known: {sorted(names)}")
        values: dict[str, float] = {}
        for wire_name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{wire_name} must be a number")
            values[names[wire_name]] = float(value)
        new = replace(self, **values)
        if not 0.0 <= new.error_rate <= 1.0:
            raise ValueError("errorRate must lie in [0, 1]")
        if (
            not 0.0 <= new.latency_ms <= MAX_LATENCY_MS
            or not 0.0 <= new.jitter_ms <= MAX_LATENCY_MS
        ):
            raise ValueError(f"latencyMs and jitterMs must lie in [0, {MAX_LATENCY_MS:g}]")
        return new


class DemoApp:
    """The state of one demo process: its identity, configuration and metrics."""

    def __init__(
        self, *, service: str, version: str, config: Config, seed: int | None = None
    ) -> None:
        self.service = service
        self.version = version
        self._config = config
        self._lock = threading.Lock()
        self._random = random.Random(seed)  # noqa: S311 - simulated failures, not secrets
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests served, by response code.",
            ["service", "version", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time spent serving HTTP requests.",
            ["service", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Export both codes from the start: a counter that appears only with the first
        # error makes "errors / requests" queries blind until then.
        for code in ("200", "500"):
            self.requests.labels(service, version, code)

    @property
    def config(self) -> Config:
        """The current configuration."""
        with self._lock:
            return self._config

    def configure(self, changes: dict[str, Any]) -> Config:
        """Apply changes from the admin endpoint."""
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config

    def plan(self) -> tuple[float, bool]:
        """Seconds to wait and whether to fail, for one request."""
        with self._lock:
            cfg = self._config
            jitter = self._random.uniform(-cfg.jitter_ms, cfg.jitter_ms) if cfg.jitter_ms else 0.0
            fail = self._random.random() < cfg.error_rate
        return max(0.0, cfg.latency_ms + jitter) / 1000.0, fail

    def record(self, code: int, seconds: float) -> None:
        """Count one served request."""
        self.requests.labels(self.service, self.version, str(code)).inc()
        self.duration.labels(self.service, self.version).observe(seconds)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, so the load generator reuses its connections."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    app: ClassVar[DemoApp]

    def do_GET(self) -> None:
        """Serve metrics, health, the configuration, or a simulated request."""
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(self.app.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        elif path == "/admin/config":
            self._json(HTTPStatus.OK, self.app.config.wire())
        else:
            self._serve()

    def do_POST(self) -> None:
        """Change the configuration."""
        if self.path.split("?", 1)[0] != "/admin/config":
            self._json(HTTPStatus.NOT_FOUND, {"error": "POST only to /admin/config"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 65536))
        try:
            changes = json.loads(raw or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("send a JSON object")
            config = self.app.configure(changes)
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._json(HTTPStatus.OK, config.wire())

    def _serve(self) -> None:
        started = time.perf_counter()
        wait, fail = self.app.plan()
        if wait:
            time.sleep(wait)
        code = HTTPStatus.INTERNAL_SERVER_ERROR if fail else HTTPStatus.OK
        body = b"simulated failure\n" if fail else f"hello from {self.app.version}\n".encode()
        self._send(code, body, "text/plain", served_by=self.app.version)
        self.app.record(int(code), time.perf_counter() - started)

    def _json(self, code: HTTPStatus, payload: Any) -> None:
        self._send(code, json.dumps(payload).encode() + b"\n", "application/json")

    def _send(
        self, code: HTTPStatus, body: bytes, content_type: str, served_by: str | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if served_by is not None:
            self.send_header(SERVED_BY, served_by)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would drown the test logs."""


def make_server(app: DemoApp, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` (call ``serve_forever``)."""
    handler = type("DemoHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
