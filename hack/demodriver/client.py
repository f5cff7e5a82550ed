"""Load through the Gateway, counted at the client.

:class:`GatewayLoad` sends GET requests at a steady rate from a few keep-alive
connections to a loopback URL (the Gateway's listener) and keeps every outcome: when the
answer came, its status, and the version that answered (the demo app's ``X-Served-By``
header). That tells apart what the demo, the end-to-end test and the benchmarks count:

- **ok**: a 2xx or 3xx answer from an app;
- **app error**: a 5xx answer *from an app* (it carries ``X-Served-By``): the release
  itself is bad;
- **gateway error**: a 5xx answer without ``X-Served-By``: the Gateway could not reach a
  backend (no endpoints, a connection refused behind it), which is what a promotion or
  an abort must never cause;
- **no answer**: the connection to the Gateway failed or timed out.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Literal

SERVED_BY = "X-Served-By"
Outcome = Literal["ok", "app error", "gateway error", "no answer"]


@dataclass(frozen=True)
class Answer:
    """One request's outcome."""

    at: float
    """``time.monotonic()`` when the answer (or the failure) came."""
    status: int
    """The HTTP status; 0 when there was no answer."""
    version: str | None
    """The version that answered (``X-Served-By``); None when no app answered."""
    failure: str = ""
    """Why there was no answer."""

    @property
    def outcome(self) -> Outcome:
        """How the request ended (see the module docstring)."""
        if self.status == 0:
            return "no answer"
        if self.status >= 500:
            return "app error" if self.version is not None else "gateway error"
        return "ok"


class GatewayLoad:
    """``rps`` requests a second to ``url`` from ``connections`` threads, all kept."""

    def __init__(self, url: str, rps: float, *, connections: int = 4, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: use an http:// URL")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.rps = rps
        self.connections = connections
        self.timeout = timeout
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> GatewayLoad:
        """Start sending."""
        period = self.connections / self.rps
        for i in range(self.connections):
            offset = i * period / self.connections
            thread = threading.Thread(
                target=self._run, args=(period, offset), name=f"load-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 1)

    def __enter__(self) -> GatewayLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading ------------------------------------------------------------------------

    def answers(self, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        """The outcomes that came within ``[since, until)``."""
        with self._lock:
            return [a for a in self._answers if since <= a.at < until]

    def counts(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """Requests by outcome within ``[since, until)`` (outcomes with none left out)."""
        out: Counter[str] = Counter()
        for answer in self.answers(since, until):
            out[answer.outcome] += 1
        return dict(out)

    def versions(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Requests answered by each version within ``[since, until)``."""
        return Counter(a.version for a in self.answers(since, until) if a.version is not None)

    # -- sending ------------------------------------------------------------------------

    def _run(self, period: float, offset: float) -> None:
        conn: http.client.HTTPConnection | None = None
        due = time.monotonic() + offset
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            due = max(due + period, time.monotonic() - period)  # no burst after a stall
            reused = conn is not None
            conn = conn or self._connect()
            answer = self._send(conn)
            if answer.status == 0 and reused:
                # A keep-alive connection the Gateway closed while idle: a client sends
                # an idempotent request again on a new connection, as browsers do.
                conn.close()
                conn = self._connect()
                answer = self._send(conn)
            if answer.status == 0:
                conn.close()
                conn = None
            with self._lock:
                self._answers.append(answer)
        if conn is not None:
            conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _send(self, conn: http.client.HTTPConnection) -> Answer:
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(time.monotonic(), 0, None, f"{type(exc).__name__}: {exc}")
        if (resp.getheader("Connection") or "").lower() == "close":
            conn.close()  # the next request opens a new one
        return Answer(time.monotonic(), resp.status, resp.getheader(SERVED_BY))
