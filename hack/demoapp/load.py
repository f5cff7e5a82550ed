"""A small, bounded load generator for the demo app:
``python -m demoapp.load --target http://127.0.0.1:8080/ --rps 50 --duration 60``.

It sends GET requests at a steady rate from a few keep-alive connections and prints a
one-line summary. It is bounded on purpose: loopback targets only, at most
:data:`MAX_RPS` requests per second, :data:`MAX_DURATION` seconds and
:data:`MAX_REQUESTS` requests in all; it stops early on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import FrameType

MAX_RPS = 500.0
MAX_DURATION = 3600.0
MAX_REQUESTS = 1_000_000
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass
class Stats:
    """What the run did."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    """Answers with a 5xx status."""
    failures: int = 0
    """Requests without an answer (connection refused, reset, timeout)."""
    seconds: float = 0.0


def check_target(target: str) -> tuple[str, int, str]:
    """Host, port and path of a loopback http:// URL; ValueError for anything else."""
    parts = urllib.parse.urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{target!r}: use an http:// URL")
    host = parts.hostname
    if host not in LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{target!r}: only loopback targets (127.0.0.1, ::1, localhost)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return host, parts.port or 80, path


def run(
    target: str,
    *,
    rps: float,
    duration: float,
    concurrency: int = 4,
    timeout: float = 5.0,
    stop: threading.Event | None = None,
) -> Stats:
    """Send ``rps`` requests per second to ``target`` for ``duration`` seconds."""
    host, port, path = check_target(target)
    if not 0 < rps <= MAX_RPS:
        raise ValueError(f"rps must lie in (0, {MAX_RPS:g}]")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must lie in (0, {MAX_DURATION:g}] seconds")
    total = min(MAX_REQUESTS, int(rps * duration))
    stop = stop or threading.Event()
    stats = Stats()
    lock = threading.Lock()
    next_slot = [0]
    started = time.monotonic()

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set():
            with lock:
                slot = next_slot[0]
                if slot >= total:
                    return
                next_slot[0] += 1
            delay = started + slot / rps - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                with lock:
                    stats.sent += 1
                    stats.failures += 1
                continue
            with lock:
                stats.sent += 1
                if status >= 500:
                    stats.errors += 1
                else:
                    stats.ok += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats.seconds = round(time.monotonic() - started, 3)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run, print the summary as JSON."""
    parser = argparse.ArgumentParser(prog="demoapp.load", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="loopback http:// URL")
    parser.add_argument("--rps", type=float, required=True, help=f"requests/s (max {MAX_RPS:g})")
    parser.add_argument(
        "--duration", type=float, required=True, help=f"seconds (max {MAX_DURATION:g})"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="connections (default 4)")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stats = run(
            args.target,
            rps=args.rps,
            duration=args.duration,
            concurrency=min(args.concurrency, 32),
            stop=stop,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
