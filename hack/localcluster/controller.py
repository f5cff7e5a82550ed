"""The controller as a real process (for tests and the demo): start, wait ready, read its
JSON logs, SIGKILL it, start it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from localcluster.process import free_port

REPO = Path(__file__).resolve().parents[2]


class ControllerProcess:
    """``python -m controller run`` against a kubeconfig, logging JSON to a file."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *,
        name: str = "controller",
        namespaces: list[str] | None = None,
        leader_election: bool = False,
        lease_name: str = "stepwise-test",
        lease_namespace: str = "default",
        extra: list[str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / f"{name}.log"
        self.name = name
        self.namespaces = namespaces or []
        self.leader_election = leader_election
        self.lease_name = lease_name
        self.lease_namespace = lease_namespace
        self.extra = extra or []
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "controller",
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--health-port={self.port}",
            "--bind-address=127.0.0.1",
            "--log-format=json",
            "--log-level=debug",
            f"--identity={self.name}",
            f"--lease-name={self.lease_name}",
            f"--lease-namespace={self.lease_namespace}",
            "--lease-duration=4",
            "--renew-deadline=3",
            "--retry-period=0.5",
        ]
        if not self.leader_election:
            argv.append("--no-leader-election")
        for ns in self.namespaces:
            argv.append(f"--namespace={ns}")
        return [*argv, *self.extra]

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until /readyz answers 200."""
        self.port = free_port()
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'hack'}"}
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited {self.proc.returncode}:\n{self.tail()}")
            if self.probe("/readyz") == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"controller not ready after {timeout}s:\n{self.tail()}")

    def probe(self, path: str) -> int:
        """HTTP status of a health endpoint (0 when it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=1) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return 0

    def metrics(self) -> str:
        """The /metrics page."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def sigkill(self) -> None:
        """Kill at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.sigkill()

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (non-JSON lines are skipped)."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
