"""The local Prometheus scrapes a real local process and answers instant queries."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from localcluster import LocalPrometheus, free_port

pytestmark = pytest.mark.integration

EXPORTER = """
import sys, time
from prometheus_client import Counter, start_http_server
c = Counter("stepwise_test_events", "Events counted by the test exporter.")
c.inc(int(sys.argv[2]))
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
while True:
    time.sleep(1)
"""


@pytest.fixture
def exporter() -> Iterator[int]:
    """A separate process serving one counter (value 42) on a free port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER, str(port), "42"])
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_prometheus_scrapes_a_local_process_and_answers_a_query(
    prometheus: LocalPrometheus, exporter: int
) -> None:
    """An instant query returns the counter value that the scraped process exposes."""
    prometheus.add_target("exporter", f"127.0.0.1:{exporter}", {"app": "exporter"})
    try:
        deadline = time.monotonic() + 30
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline and not result:
            result = prometheus.query('stepwise_test_events_total{app="exporter"}')["result"]
            time.sleep(0.5)
        assert len(result) == 1, result
        value = result[0]["value"]
        assert isinstance(value, list)
        assert float(value[1]) == 42.0
        assert result[0]["metric"] == {  # the target labels reach the series
            "__name__": "stepwise_test_events_total",
            "app": "exporter",
            "target": "exporter",
            "instance": f"127.0.0.1:{exporter}",
            "job": "local",
        }
    finally:
        prometheus.remove_target("exporter")
