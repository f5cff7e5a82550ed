"""``make cluster-up`` (``python -m localcluster up``) runs manifests as they are written:
its fake nodes have no taint, so a pod with no toleration and no node selector (like
those in the README and ``deploy/examples/``) is scheduled and becomes Ready."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from localcluster import LocalCluster
from tests.support.kube import wait_for

pytestmark = pytest.mark.integration

HACK = Path(__file__).resolve().parents[2] / "hack"


@pytest.fixture
def cluster_up(local_cluster: LocalCluster, tmp_path: Path) -> Iterator[Path]:
    """A cluster started the way ``make cluster-up`` starts one (its own state directory,
    the binaries already built); yields its kubeconfig."""
    env = {
        **os.environ,
        "PYTHONPATH": str(HACK),
        "STEPWISE_BIN_DIR": str(local_cluster.bin_dir),
    }
    state = tmp_path / "state"

    def localcluster(command: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "localcluster", command, "--state", str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = localcluster("up")
    kubeconfig = next(line.split("=", 1)[1] for line in out.splitlines() if "KUBECONFIG=" in line)
    try:
        yield Path(kubeconfig)
    finally:
        localcluster("down")


def test_a_pod_without_tolerations_runs(cluster_up: Path) -> None:
    """A plain pod (no toleration, no node selector) is scheduled onto a fake node and
    becomes Ready."""
    api = config.new_client_from_config(config_file=str(cluster_up))  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="plain"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="nginx:1.27")]),
    )
    core.create_namespaced_pod("default", pod)

    def ready() -> bool:
        status = core.read_namespaced_pod("plain", "default").status
        return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])

    wait_for("the pod Ready", ready, 60)
    assert core.read_namespaced_pod("plain", "default").spec.node_name.startswith("kwok-node-")
