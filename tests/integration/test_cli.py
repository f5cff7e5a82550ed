"""The ``stepwise`` CLI against the real API server and controller: each exit code of
``status --watch`` from a real scenario, the intent commands, and one-line errors."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from localcluster import LocalCluster
from localcluster.controller import REPO, ControllerProcess
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration


#: A line of ``status --watch`` without a terminal that prints an Event.
EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d event (?P<reason>\w+): (?P<message>.*)$", re.MULTILINE)


class Cli:
    """Runs ``python -m controller ...`` as a separate process, like a CI job would."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def __call__(
        self, *args: str, timeout: float = 90, argv0: list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "KUBECONFIG": str(self.kubeconfig)}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        command = argv0 or [sys.executable, "-m", "controller"]
        return subprocess.run(
            [*command, *args, "-n", self.namespace],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def env(kube: Cluster, kubeconfig: Path, controller: ControllerProcess) -> tuple[Cluster, Cli]:
    return kube, Cli(kubeconfig, kube.ns)


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
    held = cli("status", "app", "--watch", "--exit-on-pause", "--timeout", "3s")
    assert held.returncode == 3, "spec.paused waits for resume, not for approval"
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
    line = one_line_error(unreachable)
    assert (
        f"cannot reach the Kubernetes API at https://127.0.0.1:1 to get rollout {cli.namespace}/app"
        in line
    )
    assert "(connection refused): check that the cluster is up" in line


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


def test_timed_pause_does_not_exit_2(env: tuple[Cluster, Cli]) -> None:
    """--exit-on-pause waits through a timed pause and exits 2 at the later empty pause."""
    kube, cli = env
    steps = [{"setWeight": 50}, {"pause": {"duration": "8s"}}, {"setWeight": 75}, {"pause": {}}]
    kube.create(rollout_doc("app", replicas=4, steps=steps))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    assert cli("set", "image", "app", "app=registry.local/app:v2").returncode == 0
    paused = cli("status", "app", "--watch", "--exit-on-pause", "--timeout", "90s")
    assert paused.returncode == 2, paused.stdout + paused.stderr
    assert f"Rollout {cli.namespace}/app: Paused (paused at step 1 " in paused.stdout
    assert "paused, waiting for approval: paused at step 3 until promoted" in paused.stderr
    status = kube.status("app")
    assert (status["currentStepIndex"], status["canaryWeight"]) == (3, 75)
    assert cli("promote", "app").returncode == 0
    assert cli("status", "app", "--watch", "--exit-on-pause", "--timeout", "60s").returncode == 0


def test_promote_full_skips_the_remaining_steps(env: tuple[Cluster, Cli]) -> None:
    """promote --full at the first pause skips every later step and the rollout becomes
    healthy on the new revision without stopping at the later pause."""
    kube, cli = env
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 75}]
    kube.create(rollout_doc("app", replicas=4, steps=steps))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    assert cli("set", "image", "app", "app=registry.local/app:v2").returncode == 0
    wait_for("paused at step 1", lambda: kube.status("app").get("currentStepIndex") == 1, 60)
    canary = kube.status("app")["canaryRevision"]
    full = cli("promote", "app", "--full")
    assert full.returncode == 0, full.stderr
    assert f"promoting revision {canary} fully" in full.stdout
    done = cli("status", "app", "--watch", "--exit-on-pause", "--timeout", "60s")
    assert done.returncode == 0, done.stdout + done.stderr
    status = kube.status("app")
    assert status["phase"] == "Healthy"
    assert status["stableRevision"] == status["canaryRevision"] == canary
    assert status["currentStepIndex"] == len(steps)
    reasons = kube.events("app")
    assert "PromotedFully" in reasons
    completed = kube.event_messages("app", "StepCompleted")
    assert not any(m.startswith(("step 2 ", "step 3 ")) for m in completed), completed


def test_watch_without_a_terminal_prints_timestamped_events_once(
    env: tuple[Cluster, Cli],
) -> None:
    """CI mode (no terminal): each new Event of the Rollout is one timestamped line."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=4, steps=[{"setWeight": 50}, {"pause": {}}]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    assert cli("set", "image", "app", "app=registry.local/app:v2").returncode == 0
    watched = cli("status", "app", "--watch", "--exit-on-pause", "--timeout", "60s")
    assert watched.returncode == 2, watched.stdout + watched.stderr
    printed = [(m["reason"], m["message"]) for m in EVENT_LINE.finditer(watched.stdout)]
    step0 = [msg for reason, msg in printed if reason == "StepCompleted" and "step 0 " in msg]
    assert len(step0) == 1, watched.stdout
    assert step0[0] in kube.event_messages("app", "StepCompleted")
    assert len(printed) == len(set(printed)), watched.stdout
    lines = watched.stdout.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), watched.stdout
    assert "\x1b[" not in watched.stdout


def test_kubectl_plugin_entry_point(env: tuple[Cluster, Cli], local_cluster: LocalCluster) -> None:
    """The kubectl-stepwise entry point works alone and as ``kubectl stepwise``."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=2, steps=[{"setWeight": 50}, {"pause": {}}]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    plugin = Path(sys.executable).parent / "kubectl-stepwise"
    assert plugin.is_file(), "install the project (uv sync) to get the entry point"
    for command in ([str(plugin)], [str(local_cluster.bin_dir / "kubectl"), "stepwise"]):
        listed = cli("list", argv0=command)
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()[:2]
        assert header.split()[:3] == ["NAMESPACE", "NAME", "PHASE"]
        assert row.split()[:3] == [cli.namespace, "app", "Healthy"]
    usage = cli("status", "--help", argv0=[str(plugin)])
    assert usage.stdout.startswith("usage: kubectl stepwise status")


def test_forbidden_names_the_verb_and_resource(
    env: tuple[Cluster, Cli], api_client: client.ApiClient, kubeconfig: Path, tmp_path: Path
) -> None:
    """A user who may read but not patch Rollouts gets one line saying which RBAC rule
    is missing (exit 4), for a write and for a cluster-wide list."""
    kube, cli = env
    ns = kube.ns
    kube.create(rollout_doc("app", replicas=2, steps=[]))
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "viewer"}})
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "viewer"},
            "rules": [
                {"apiGroups": ["stepwise.dev"], "resources": ["rollouts"], "verbs": ["get", "list"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}],
        },
    )
    token = core.create_namespaced_service_account_token(
        "viewer", ns, {"spec": {"audiences": [], "expirationSeconds": 3600}}
    ).status.token
    doc = yaml.safe_load(kubeconfig.read_text())
    for user in doc["users"]:
        user["user"] = {"token": token}
    viewer = tmp_path / "viewer.kubeconfig"
    viewer.write_text(json.dumps(doc))
    viewer.chmod(0o600)
    user = f"system:serviceaccount:{ns}:viewer"
    wait_for(
        "the Role to apply",
        lambda: cli("list", "--kubeconfig", str(viewer)).returncode == 0,
        30,
    )
    refused = cli("pause", "app", "--kubeconfig", str(viewer))
    assert refused.returncode == 4
    assert one_line_error(refused) == (
        f"stepwise: not allowed to patch rollout {ns}/app as {user}: check your kubeconfig"
        f" / RBAC: needs patch on rollouts.stepwise.dev in namespace {ns}"
    )
    everywhere = cli("list", "-A", "--kubeconfig", str(viewer))
    assert everywhere.returncode == 4
    assert one_line_error(everywhere) == (
        f"stepwise: not allowed to list rollouts in all namespaces as {user}: check your"
        " kubeconfig / RBAC: needs list on rollouts.stepwise.dev cluster-wide (or pass -n)"
    )
    assert kube.get("app")["spec"].get("paused") in (None, False)


def test_watch_on_a_terminal_redraws_one_live_view(env: tuple[Cluster, Cli]) -> None:
    """On a terminal (a real pseudo-terminal), --watch redraws one block in place, moving
    the cursor back over it, and ends on the promoted state with exit 0."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=4, steps=[{"setWeight": 50}, {"pause": {}}]))
    assert cli("status", "app", "--watch", "--timeout", "60s").returncode == 0
    assert cli("set", "image", "app", "app=registry.local/app:v2").returncode == 0
    wait_for("paused", lambda: kube.status("app").get("phase") == "Paused", 60)
    primary, secondary = pty.openpty()
    env_vars = {**os.environ, "PYTHONPATH": str(REPO), "KUBECONFIG": str(cli.kubeconfig)}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "controller", "status", "app", "--watch", "-n", kube.ns],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env=env_vars,
    )
    os.close(secondary)
    screen = bytearray()

    def drawn(what: bytes) -> bool:
        screen.extend(_read(primary))
        return what in screen

    try:
        wait_for("first view drawn", lambda: drawn(b"Paused"))
        assert cli("promote", "app").returncode == 0
        wait_for("promoted view drawn", lambda: drawn(b"is stable and healthy"), 60)
        assert watcher.wait(timeout=30) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
        os.close(primary)
    text = screen.decode(errors="replace")
    assert "\x1b[J" in text  # earlier views erased, not scrolled
    assert re.search(r"\x1b\[\d+F", text), text  # the cursor moved back over the view
    assert "is stable and healthy" in text.rsplit("\x1b[J", 1)[-1]


def _read(fd: int) -> bytes:
    """What the pseudo-terminal has for us now (nothing after a short wait)."""
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed its side
            break
        if not chunk:
            break
        data += chunk
    return data


def test_kubectl_wait_follows_the_conditions(
    env: tuple[Cluster, Cli], local_cluster: LocalCluster
) -> None:
    """`kubectl wait --for=condition=Paused` returns at the empty pause and
    `--for=condition=Healthy` once the promoted canary is stable."""
    kube, cli = env
    kube.create(rollout_doc("app", replicas=2, steps=[{"setWeight": 50}, {"pause": {}}]))
    kubectl = [str(local_cluster.bin_dir / "kubectl"), f"--kubeconfig={cli.kubeconfig}"]
    target = ["rollout/app", "-n", kube.ns, "--timeout=60s"]

    def wait(condition: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*kubectl, "wait", f"--for=condition={condition}", *target],
            capture_output=True,
            text=True,
            check=False,
            timeout=90,
        )

    assert wait("Healthy").returncode == 0
    assert cli("set", "image", "app", "app=registry.local/app:v2").returncode == 0
    paused = wait("Paused")
    assert paused.returncode == 0, paused.stderr
    assert kube.status("app")["currentStepIndex"] == 1
    assert cli("promote", "app").returncode == 0
    healthy = wait("Healthy")
    assert healthy.returncode == 0, healthy.stderr
    assert "condition met" in healthy.stdout
    assert kube.status("app")["stableRevision"] == kube.status("app")["canaryRevision"]
