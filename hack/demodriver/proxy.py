"""A small weighted HTTP proxy that follows an HTTPRoute: the demo's stand-in for a
Gateway API implementation.

Every 100 ms it reads the HTTPRoute's first rule and the Services its backendRefs name;
each Service's ``stepwise.dev/revision`` selector says which revision it reaches, and
``upstreams`` maps a revision to the local demo-app process serving it. Each request
picks a backendRef at random by weight and is forwarded there. Every answer is recorded
(time, revision, status), so the demo and the end-to-end test can tell when requests
stopped reaching a revision.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client

REVISION_LABEL = "stepwise.dev/revision"


@dataclass(frozen=True)
class Served:
    """One proxied request."""

    at: float
    revision: str
    status: int


@dataclass(frozen=True)
class Backend:
    """A weighted target: the Service and the revision it reaches."""

    service: str
    revision: str | None
    weight: int


class WeightedProxy:
    """Proxies ``/`` to the demo-app processes in the HTTPRoute's weights."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        route: str,
        upstreams: Callable[[str], int | None],
        *,
        seed: int = 1,
    ) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.route = route
        self.upstreams = upstreams
        self.backends: list[Backend] = []
        self.served: deque[Served] = deque(maxlen=200_000)
        self._random = random.Random(seed)  # noqa: S311 - load spreading, not secrecy
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._follow, daemon=True),
        ]

    @property
    def url(self) -> str:
        """Where to send requests."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> None:
        """Start following the route and serving."""
        self.refresh()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def refresh(self) -> None:
        """Read the route and Services once."""
        route: Any = self.custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", self.route
        )
        rules = route.get("spec", {}).get("rules") or []
        backends: list[Backend] = []
        for ref in (rules[0].get("backendRefs") if rules else None) or []:
            svc = self.core.read_namespaced_service(ref["name"], self.namespace)
            revision = (svc.spec.selector or {}).get(REVISION_LABEL) if svc.spec else None
            backends.append(Backend(ref["name"], revision, int(ref.get("weight", 1))))
        with self._lock:
            self.backends = backends

    def _follow(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.refresh()
            except Exception:  # noqa: S112 - the API may blink; keep the last known route
                continue

    def pick(self) -> Backend | None:
        """A backend chosen by weight."""
        with self._lock:
            live = [b for b in self.backends if b.weight > 0]
        if not live:
            return None
        return self._random.choices(live, weights=[b.weight for b in live])[0]

    def forward(self) -> tuple[int, bytes]:
        """Send one request to a backend; (status, body)."""
        backend = self.pick()
        port = self.upstreams(backend.revision) if backend and backend.revision else None
        if backend is None or port is None:
            return 503, b"no backend\n"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
        except OSError:
            status, body = 502, b"upstream failed\n"
        finally:
            conn.close()
        self.served.append(Served(time.monotonic(), backend.revision or "?", status))
        return status, body

    def revisions_since(self, since: float) -> set[str]:
        """Revisions that served requests after ``since`` (monotonic seconds)."""
        return {s.revision for s in list(self.served) if s.at >= since}


def _handler(proxy: WeightedProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = proxy.forward()
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away (the load generator stopping)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler
