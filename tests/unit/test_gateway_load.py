"""The demo's client-side counting (:mod:`demodriver.client`): every request's outcome,
with a 5xx from an app told apart from a 5xx of the Gateway and from no answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from demodriver.client import GatewayLoad
from tests.support.kube import wait_for

ANSWERS = {"/ok": (200, "v1"), "/bad": (500, "v2"), "/gateway": (502, None)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status, version = ANSWERS[self.path]
        self.send_response(status)
        if version is not None:
            self.send_header("X-Served-By", version)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("path", "outcome", "version"),
    [("/ok", "ok", "v1"), ("/bad", "app error", "v2"), ("/gateway", "gateway error", None)],
)
def test_each_answer_is_counted_by_outcome_and_version(
    server: str, path: str, outcome: str, version: str | None
) -> None:
    """Every request is kept, with the version that answered (none from the Gateway)."""
    with GatewayLoad(server + path, rps=100, connections=2) as load:
        wait_for("20 answers", lambda: len(load.answers()) >= 20, 10)
    answers = load.answers()
    assert {a.outcome for a in answers} == {outcome}
    assert {a.version for a in answers} == {version}
    assert load.counts() == {outcome: len(answers)}


def test_no_listener_is_no_answer() -> None:
    """A refused connection is a request without an answer, counted, never dropped."""
    with GatewayLoad("http://127.0.0.1:9/", rps=50, connections=1, timeout=1) as load:
        wait_for("answers", lambda: len(load.answers()) >= 5, 10)
    assert load.counts() == {"no answer": len(load.answers())}
    assert all(a.failure for a in load.answers())


def test_a_steady_rate(server: str) -> None:
    """Over 2 s at 50 requests/s, close to 100 requests are sent."""
    with GatewayLoad(server + "/ok", rps=50, connections=2) as load:
        time.sleep(2.0)
    assert 80 <= len(load.answers()) <= 110
