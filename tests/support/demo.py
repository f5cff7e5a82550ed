"""Demo-app processes for tests: a stable and a canary version under load, scraped by the
test session's Prometheus.

The environment lives for the whole test session, however long that takes. Each load
generator run is bounded (``demoapp.load`` stops by itself after :data:`LOAD_SECONDS`), so
a :class:`LoadSupervisor` thread starts a new run whenever one ends, until the session
tears the environment down. Before each test gets the environment, :meth:`Demo.ensure_serving`
checks that both versions' request counters are still rising, so a test never measures a
demo that has gone quiet. ``STEPWISE_TEST_LOAD_SECONDS`` shortens each run (for example to
10 s) to show that the suite does not depend on how long it takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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
LOAD_SECONDS = float(os.environ.get("STEPWISE_TEST_LOAD_SECONDS", "600"))
"""How long one load-generator run lasts before the supervisor starts the next."""


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

    def requests_served(self) -> float:
        """The app's own ``http_requests_total``, summed over codes (read from /metrics)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:  # noqa: S310
            text = resp.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("http_requests_total{")
        )

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
    load: LoadSupervisor

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

    def ensure_serving(self, timeout: float = 15.0) -> None:
        """Fail unless the load supervisor runs and both apps' request counters rise."""
        self.load.check()
        for app in (self.stable, self.canary):
            _wait_rising(app, timeout, f"{self.load.runs} load runs so far")


def _wait_rising(app: App, timeout: float, context: str) -> None:
    before = app.requests_served()
    wait_for(
        lambda: app.requests_served() > before,
        f"demo app {app.version}: request counter rising ({context})",
        timeout,
    )


class LoadSupervisor:
    """Keeps one bounded ``demoapp.load`` process running per target until stopped.

    Each run stops by itself after :data:`LOAD_SECONDS`; the supervisor thread starts the
    next one as soon as it sees the previous one gone (polled every 0.2 s), so the load
    outlives any suite duration without any single load loop being unbounded.
    """

    def __init__(self, targets: list[str], rps: int, seconds: float = LOAD_SECONDS) -> None:
        self._targets = targets
        self._rps = rps
        self._seconds = seconds
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-load", daemon=True)
        self.failure: str | None = None
        """Why supervision stopped: a load run that exited non-zero."""
        self.runs = 0
        """How many load runs were started in all."""

    def start(self) -> None:
        """Start one run per target, then supervise."""
        for target in self._targets:
            self._launch(target)
        self._thread.start()

    def _launch(self, target: str) -> None:
        argv = [sys.executable, "-m", "demoapp.load", "--target", target,
                "--rps", str(self._rps), "--duration", f"{self._seconds:g}"]  # fmt: skip
        self._procs[target] = subprocess.Popen(
            argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.runs += 1

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            for target, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                if code != 0:
                    self.failure = f"load generator for {target} exited with code {code}"
                    return
                self._launch(target)

    def check(self) -> None:
        """Fail the test if the supervisor stopped or a load run failed."""
        if self.failure is not None:
            pytest.fail(self.failure)
        if not self._thread.is_alive():
            pytest.fail("the demo load supervisor is not running")

    def stop(self) -> None:
        """Stop supervising and end every run."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for proc in self._procs.values():
            proc.kill()
            proc.wait()


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HACK), os.environ.get("PYTHONPATH", "")]),
    }


def start_app(service: str, version: str, port: int | None = None) -> App:
    """A demo-app process of ``version`` on ``port`` (a free one by default), healthy."""
    port = port or free_port()
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
    """Stable v1 and canary v2 under 40 rps each, scraped every second, for as long as the
    context lasts."""
    service = f"demo-{uuid.uuid4().hex[:8]}"
    apps: list[App] = []
    targets: list[str] = []
    load: LoadSupervisor | None = None
    client = PrometheusClient(PrometheusSettings(url=prometheus.url, timeout=5.0))
    try:
        stable = start_app(service, "v1")
        apps.append(stable)
        canary = start_app(service, "v2")
        apps.append(canary)
        for app in apps:
            name = f"{service}-{app.version}"
            prometheus.add_target(name, f"127.0.0.1:{app.port}")
            targets.append(name)
        load = LoadSupervisor([f"{app.url}/" for app in apps], RPS)
        load.start()
        query = f'sum by (version) (rate(http_requests_total{{service="{service}"}}[{WINDOW}]))'
        wait_for(lambda: len(prometheus.query(query)["result"]) == 2, "both versions scraped", 30)
        yield Demo(service, stable, canary, prometheus, client, load)
    finally:
        if load is not None:
            load.stop()
        for app in reversed(apps):
            app.proc.kill()
            app.proc.wait()
        for name in targets:
            prometheus.remove_target(name)
        client.close()


def judge_counts(service: str, version: str) -> dict[str, str]:
    """The judge's ``requests`` and ``errors`` queries over the demo app's counters of
    ``service`` at ``version`` (a template such as ``{{args.canary-hash}}``), by instance."""
    sel = f'service="{service}",version="{version}"'
    return {
        "requests": f"sum by (instance) (http_requests_total{{{sel}}})",
        "errors": f'sum by (instance) (http_requests_total{{{sel},code=~"5.."}})',
    }
