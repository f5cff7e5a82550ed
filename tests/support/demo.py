"""Demo-app processes for tests: a stable and a canary version under load, scraped by the
test session's Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.adapters.prometheus import PrometheusClient, PrometheusSettings
from controller.api.analysis import Metric
from controller.core.measurement import Outcome, evaluate
from controller.core.promql import render
from localcluster import LocalPrometheus, free_port

HACK = Path(__file__).resolve().parents[2] / "hack"
RPS = 40
WINDOW = "5s"


@dataclass
class App:
    """One demo-app process."""

    version: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def configure(self, **changes: float) -> None:
        """POST /admin/config."""
        request = urllib.request.Request(  # noqa: S310 - loopback http
            f"{self.url}/admin/config",
            data=json.dumps(changes).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
            assert resp.status == 200


@dataclass
class Demo:
    """Stable and canary under load, scraped by Prometheus."""

    service: str
    stable: App
    canary: App
    prometheus: LocalPrometheus
    client: PrometheusClient

    def variables(self, **extra: str) -> dict[str, str]:
        """Template variables for the canary."""
        return {
            "args.service": self.service,
            "canaryRevision": self.canary.version,
            "stableRevision": self.stable.version,
            "interval": WINDOW,
            **extra,
        }

    def measure(self, metric: Metric, variables: dict[str, str] | None = None) -> Outcome:
        """Render, query, judge: one measurement as the runtime takes it."""
        assert metric.provider.prometheus is not None
        query = render(metric.provider.prometheus.query, variables or self.variables())
        return evaluate(self.client.query(query, metric=metric.name), metric)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HACK), os.environ.get("PYTHONPATH", "")]),
    }


def _start_app(service: str, version: str) -> App:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demoapp", "--port", str(port), "--version", version,
         "--service", service, "--latency-ms", "5", "--seed", "7"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    app = App(version, port, proc)
    wait_for(lambda: _healthy(app), "demo app health", 15)
    return app


def _healthy(app: App) -> bool:
    assert app.proc.poll() is None, f"demo app {app.version} exited"
    try:
        with urllib.request.urlopen(f"{app.url}/healthz", timeout=1) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for(ready: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll until ``ready`` or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.25)


@contextmanager
def demo_environment(prometheus: LocalPrometheus) -> Iterator[Demo]:
    """Stable v1 and canary v2 under 40 rps each, scraped every second."""
    service = f"demo-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[bytes]] = []
    targets: list[str] = []
    client = PrometheusClient(PrometheusSettings(url=prometheus.url, timeout=5.0))
    try:
        stable = _start_app(service, "v1")
        procs.append(stable.proc)
        canary = _start_app(service, "v2")
        procs.append(canary.proc)
        for app in (stable, canary):
            name = f"{service}-{app.version}"
            prometheus.add_target(name, f"127.0.0.1:{app.port}")
            targets.append(name)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "demoapp.load",
                        "--target",
                        f"{app.url}/",
                        "--rps",
                        str(RPS),
                        "--duration",
                        "600",
                    ],
                    env=_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        query = f'sum by (version) (rate(http_requests_total{{service="{service}"}}[{WINDOW}]))'
        wait_for(lambda: len(prometheus.query(query)["result"]) == 2, "both versions scraped", 30)
        yield Demo(service, stable, canary, prometheus, client)
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait()
        for name in targets:
            prometheus.remove_target(name)
        client.close()
