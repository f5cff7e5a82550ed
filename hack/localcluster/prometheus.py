"""A real Prometheus (Debian's ``prometheus`` package) scraping local processes.

Targets are added while it runs through a file-based service discovery file, so a test
can start a process on a free port and have it scraped at the configured interval
(1 s by default) without restarting Prometheus.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from localcluster.process import Component, ComponentError, free_port, wait_until

DEFAULT_BINARY = "/usr/bin/prometheus"


def find_binary() -> Path:
    """The prometheus binary, or a clear error saying how to install it."""
    found = shutil.which("prometheus") or (
        DEFAULT_BINARY if Path(DEFAULT_BINARY).exists() else None
    )
    if not found:
        raise ComponentError(
            "prometheus is not installed: run 'make deps' (it runs "
            "'apt-get install prometheus'), or put a prometheus binary on PATH"
        )
    return Path(found)


class LocalPrometheus:
    """Prometheus on a free 127.0.0.1 port with a dynamic list of scrape targets."""

    def __init__(
        self,
        *,
        scrape_interval: str = "1s",
        binary: Path | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.binary = binary or find_binary()
        self.scrape_interval = scrape_interval
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="stepwise-prometheus-"))
        self.port = 0
        self._targets: dict[str, dict[str, Any]] = {}
        self.component: Component | None = None

    @property
    def url(self) -> str:
        """Base URL, for example ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def _sd_file(self) -> Path:
        return self.workdir / "targets.json"

    def start(self, timeout: float = 30.0) -> None:
        """Write the configuration, start Prometheus and wait until it is ready."""
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        config = self.workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write the configuration.
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": self.scrape_interval,
                        "evaluation_interval": self.scrape_interval,
                    },
                    "scrape_configs": [
                        {
                            "job_name": "local",
                            "file_sd_configs": [
                                {"files": [str(self._sd_file)], "refresh_interval": "1s"}
                            ],
                        }
                    ],
                },
                indent=2,
            )
        )
        self.component = Component(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2h",
                "--log.level=warn",
            ],
            self.workdir / "prometheus.log",
        )
        self.component.start()
        try:
            wait_until("prometheus", self._ready, [self.component], timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Prometheus and remove its data."""
        if self.component is not None:
            self.component.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pause(self) -> None:
        """Stop the process but keep its data and port (simulates Prometheus going down)."""
        if self.component is not None:
            self.component.stop()

    def resume(self, timeout: float = 30.0) -> None:
        """Start a paused Prometheus again on the same port."""
        if self.component is None:
            raise RuntimeError("prometheus was never started")
        self.component.start()
        wait_until("prometheus", self._ready, [self.component], timeout)

    def add_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape ``address`` (host:port) from now on, with extra target labels."""
        self._targets[name] = {"targets": [address], "labels": {"target": name, **(labels or {})}}
        self._write_targets()

    def remove_target(self, name: str) -> None:
        """Stop scraping a target added with :meth:`add_target`."""
        self._targets.pop(name, None)
        self._write_targets()

    def query(self, promql: str) -> Any:
        """An instant query through the HTTP API; returns ``data`` of the response."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local http
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return body["data"]

    def active_targets(self) -> list[dict[str, Any]]:
        """The targets Prometheus currently scrapes, as ``/api/v1/targets`` reports them."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as resp:  # noqa: S310
            return list(json.loads(resp.read())["data"]["activeTargets"])

    def _write_targets(self) -> None:
        tmp = self._sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self._targets.values())))
        tmp.replace(self._sd_file)  # atomic: Prometheus never reads half a file

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
