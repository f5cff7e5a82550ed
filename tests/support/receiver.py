"""A local webhook receiver for notification tests: records every POST, and answers each
path as the test scripts it (a status sequence, or a hang)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.background import Background


@dataclass(frozen=True)
class Post:
    """One POST as it arrived."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)
    """When it arrived (seconds since the epoch), to compare with the payload's times."""
    status: int = 200
    """What the receiver answered (0: it hung until the client gave up)."""


class Receiver(Background):
    """``http://127.0.0.1:<port>/<path>``: each path answers its script in turn (the last
    status repeats; default 200); a path set to hang holds every request for
    ``hang_seconds`` without answering. Use as a context manager."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[Post] = []
        self._scripts: dict[str, list[int]] = {}
        self._hang: dict[str, float] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                path = self.path
                hang = receiver._hang.get(path)
                if hang is not None:
                    receiver._record(Post(path, dict(self.headers), body, status=0))
                    receiver._stop.wait(hang)
                    return
                status = receiver._next(path)
                receiver._record(Post(path, dict(self.headers), body, status=status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def url(self, path: str) -> str:
        """The URL of ``path`` (starting with ``/``)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path: str, *statuses: int) -> None:
        """Answer ``path`` with these statuses in turn, the last one from then on."""
        with self._lock:
            self._scripts[path] = list(statuses)

    def hang(self, path: str, seconds: float = 3600.0) -> None:
        """Hold every request to ``path`` for ``seconds`` without an answer."""
        self._hang[path] = seconds

    def received(self, path: str | None = None) -> list[Post]:
        """The POSTs so far (to ``path``)."""
        with self._lock:
            return [p for p in self.posts if path is None or p.path == path]

    def _next(self, path: str) -> int:
        with self._lock:
            script = self._scripts.get(path) or [200]
            return script.pop(0) if len(script) > 1 else script[0]

    def _record(self, post: Post) -> None:
        with self._lock:
            self.posts.append(post)

    def _run(self) -> None:
        self.server.serve_forever()

    def _stopping(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __iter__(self) -> Iterator[Post]:
        return iter(self.received())
