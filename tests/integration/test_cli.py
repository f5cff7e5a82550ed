"""The ``stepwise`` CLI against the real API server and controller: each exit code of
``status --watch`` from a real scenario, the intent commands, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.controller import REPO, ControllerProcess
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration


class Cli:
    """Runs ``python -m controller ...`` as a separate process, like a CI job would."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def __call__(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run(
            [sys.executable, "-m", "controller", *args, "-n", self.namespace],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def env(
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
    kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[tuple[Cluster, Cli]]:
    proc = ControllerProcess(kubeconfig, tmp_path, namespaces=[namespace])
    proc.start()
    try:
        yield Cluster(api_client, namespace), Cli(kubeconfig, namespace)
    finally:
        proc.stop()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error is one line starting with 'stepwise:' and no traceback."""
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stepwise: ")
    return lines[0]


def test_paused_then_promoted_exit_codes_2_and_0(env: tuple[Cluster, Cli]) -> None:
    """set image starts a canary; status --exit-on-pause exits 2 at the empty pause;
    promote releases it; status --watch exits 0 once promoted; list shows it."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=4, steps=[{"setWeight": 50}, {"pause": {}}]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    result = cli("set", "image", "app", "app=registry.local/app:v2")
    assert result.returncode == 0, result.stderr
    paused = cli("status", "app", "--watch", "--exit-on-pause", "--timeout", "60s")
    assert paused.returncode == 2, paused.stderr
    assert "paused, waiting for approval" in paused.stderr
    assert "step 1/2" in paused.stdout
    listed = cli("list")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAMESPACE", "NAME", "PHASE", "STEP", "WEIGHT"]
    assert row.split()[1:5] == ["app", "Paused", "1/2", "50%"]
    assert cli("promote", "app").returncode == 0
    done = cli("status", "app", "--watch", "--timeout", "60s")
    assert done.returncode == 0, done.stderr
    assert "is stable and healthy" in done.stdout


def test_abort_exit_code_1_then_retry(env: tuple[Cluster, Cli]) -> None:
    """abort rolls back: status --watch exits 1 naming the reason; retry restarts it."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=4, steps=[{"setWeight": 50}, {"pause": {}}]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    cli("set", "image", "app", "app=registry.local/app:v2")
    wait_for("paused", lambda: kube.status("app").get("phase") == "Paused", 60)
    assert cli("abort", "app").returncode == 0
    rolled = cli("status", "app", "--watch", "--timeout", "60s")
    assert rolled.returncode == 1
    assert "rolled back: Manual" in rolled.stderr
    assert cli("retry", "app").returncode == 0
    wait_for("retried", lambda: kube.status("app").get("phase") == "Paused", 60)
    assert "abort" not in kube.status("app")


def test_timeout_exit_code_3(env: tuple[Cluster, Cli]) -> None:
    """A rollout still pausing when --timeout runs out: exit 3."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=2, steps=[{"pause": {"duration": "5m"}}]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    cli("set", "image", "app", "app=registry.local/app:v2")
    result = cli("status", "app", "--watch", "--timeout", "3s")
    assert result.returncode == 3
    assert "timed out after 3s" in result.stderr


def test_pause_and_resume(env: tuple[Cluster, Cli]) -> None:
    """pause sets spec.paused and the rollout holds; resume lets it finish."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=2, steps=[{"pause": {"duration": 2}}]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    assert cli("pause", "app").returncode == 0
    cli("set", "image", "app", "app=registry.local/app:v2")
    wait_for("paused", lambda: "spec.paused" in kube.status("app").get("message", ""), 30)
    assert kube.get("app")["spec"]["paused"] is True
    assert cli("resume", "app").returncode == 0
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0


def test_not_found_and_unreachable_exit_code_4_in_one_line(
    env: tuple[Cluster, Cli], tmp_path: Path
) -> None:
    """A missing rollout and an unreachable API server: exit 4, one line, no traceback."""
    _, cli = env
    missing = cli("status", "nope", "--watch")
    assert missing.returncode == 4
    assert "nope not found" in one_line_error(missing)
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    unreachable = cli("status", "app", "--kubeconfig", str(dead))
    assert unreachable.returncode == 4
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in one_line_error(unreachable)


def test_usage_errors_are_one_line(env: tuple[Cluster, Cli]) -> None:
    """Promote without a canary and a wrong container name each give one clear line."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=2, steps=[]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    nothing = cli("promote", "app")
    assert nothing.returncode == 1
    assert "has no canary in progress" in one_line_error(nothing)
    wrong = cli("set", "image", "app", "web=registry.local/app:v2")
    assert wrong.returncode == 2
    assert "has no container 'web'" in one_line_error(wrong)
