"""Backends behind the local Traefik: tiny HTTP servers on loopback addresses, published
as selector-less Services with hand-written EndpointSlices, and HTTPRoutes to them."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client

from localcluster.process import Running
from localcluster.traefik import CONTROLLER_NAME, GATEWAY_GROUP, loopback_endpoint_slice

HTTPROUTES = (GATEWAY_GROUP, "v1", "httproutes")


class NamedBackend(Running):
    """An HTTP server on ``host`` (a 127.0.0.x address) answering every GET with its name.

    ``port`` 0 takes a free one; each backend has its own address, so a request's answer
    says which backend Traefik chose."""

    def __init__(self, name: str, host: str, port: int = 0) -> None:
        self.name = name
        self.host = host
        body = name.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"backend-{name}", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def publish(api_client: client.ApiClient, namespace: str, backend: NamedBackend) -> None:
    """A selector-less Service named like the backend (port 80, named ``http``) and an
    EndpointSlice pointing it at the backend's address and port. Without a selector the
    controller manager manages no slice for it; Traefik reads ours."""
    client.CoreV1Api(api_client).create_namespaced_service(
        namespace,
        {
            "metadata": {"name": backend.name},
            "spec": {
                "ports": [
                    {"name": "http", "port": 80, "targetPort": backend.port, "protocol": "TCP"}
                ]
            },
        },
    )
    client.DiscoveryV1Api(api_client).create_namespaced_endpoint_slice(
        namespace, loopback_endpoint_slice(backend.name, backend.host, backend.port)
    )


def http_route(name: str, parent: dict[str, Any], weights: dict[str, int]) -> dict[str, Any]:
    """An HTTPRoute attached to ``parent`` sending every path to these Services (port 80)
    with these weights."""
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [parent],
            "rules": [{"backendRefs": backend_refs(weights)}],
        },
    }


def backend_refs(weights: dict[str, int]) -> list[dict[str, Any]]:
    """The rule's backendRefs: Service name -> weight."""
    return [{"name": name, "port": 80, "weight": weight} for name, weight in weights.items()]


def route_conditions(
    api_client: client.ApiClient, namespace: str, name: str, controller: str = CONTROLLER_NAME
) -> dict[str, str]:
    """The HTTPRoute's conditions (type -> status) that ``controller`` has written for the
    route's current generation."""
    route = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        *HTTPROUTES[:2], namespace, HTTPROUTES[2], name
    )
    assert isinstance(route, dict)
    generation = route["metadata"].get("generation")
    return {
        c["type"]: c["status"]
        for parent in (route.get("status") or {}).get("parents") or []
        if parent.get("controllerName") == controller
        for c in parent.get("conditions") or []
        if c.get("observedGeneration") == generation
    }


def answers(url: str, requests: int) -> Counter[str]:
    """Send ``requests`` GETs to ``url`` over one keep-alive connection; count the bodies
    (non-200 answers count as ``"<status>"``)."""
    host_port = url.removeprefix("http://").rstrip("/")
    conn = http.client.HTTPConnection(host_port, timeout=5)
    counts: Counter[str] = Counter()
    try:
        for _ in range(requests):
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            counts[body if resp.status == 200 else f"<{resp.status}>"] += 1
    finally:
        conn.close()
    return counts
