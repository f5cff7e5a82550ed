"""Shared fixtures: the real local control plane, a real Prometheus, API clients.

Integration tests run against processes started here, once per session. With
``STEPWISE_TEST_KUBECONFIG`` set (for example to a kind cluster's kubeconfig), they run
against that cluster instead; only kwok is started locally then, to provide the fake
node, and tests that restart control-plane processes are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from localcluster import LocalCluster, LocalPrometheus, ensure_binaries
from localcluster.controller import ControllerProcess
from localcluster.dataplane import DataPlane
from tests.support.analysis import measuring_controller
from tests.support.cluster import Cluster
from tests.support.demo import Demo, demo_environment
from tests.support.kube import CRD_DIR, install_crds


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """The control plane under test: started here, or attached to STEPWISE_TEST_KUBECONFIG."""
    external = os.environ.get("STEPWISE_TEST_KUBECONFIG")
    cluster = LocalCluster(
        ensure_binaries(), external_kubeconfig=Path(external) if external else None
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _control_plane_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the local cluster fails at once, with the component's last log
    lines, when a control-plane process has died (checked before and after it)."""
    if "local_cluster" not in request.fixturenames:
        yield
        return
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    cluster.check()
    yield
    cluster.check()


@pytest.fixture
def owned_cluster(local_cluster: LocalCluster) -> LocalCluster:
    """The local cluster, for tests that stop or restart its processes (skipped on kind)."""
    if local_cluster.external_kubeconfig is not None:
        pytest.skip("restarts control-plane processes; needs the local cluster, not kind")
    return local_cluster


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: LocalCluster) -> Path:
    """Path of an admin kubeconfig for the cluster under test."""
    return local_cluster.endpoints.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """An admin API client (the official kubernetes client)."""
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def kube(api_client: client.ApiClient, namespace: str, stepwise_crds: None) -> Cluster:
    """The test's namespace, with the Stepwise CRDs installed, seen through Cluster."""
    return Cluster(api_client, namespace)


@pytest.fixture(scope="session")
def stepwise_crds(api_client: client.ApiClient) -> None:
    """The generated Stepwise CRDs, installed (server-side apply) and served."""
    install_crds(api_client, sorted(CRD_DIR.glob("*.yaml")))


@pytest.fixture(scope="session")
def prometheus() -> Iterator[LocalPrometheus]:
    """A real Prometheus scraping every second; tests add their own targets."""
    prom = LocalPrometheus(scrape_interval="1s")
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def demo_session(prometheus: LocalPrometheus) -> Iterator[Demo]:
    """Demo-app processes: stable v1 and canary v2 under supervised load for the session."""
    with demo_environment(prometheus) as environment:
        yield environment


@pytest.fixture
def demo(demo_session: Demo) -> Demo:
    """The session's demo, checked to be serving traffic still (counters rising) first."""
    demo_session.ensure_serving()
    return demo_session


def running(proc: ControllerProcess) -> Iterator[ControllerProcess]:
    """``proc`` started, for as long as the fixture that yields from this lasts."""
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def dataplane(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path, stepwise_crds: None
) -> Iterator[DataPlane]:
    """A data plane (Traefik, a Prometheus, pods that serve) for this test's namespace."""
    with DataPlane(local_cluster.endpoints, [namespace], workdir=tmp_path / "dp") as plane:
        yield plane


@pytest.fixture
def controller(
    kubeconfig: Path, tmp_path: Path, namespace: str, stepwise_crds: None
) -> Iterator[ControllerProcess]:
    """The controller as a process, watching this test's namespace (no leader election)."""
    yield from running(ControllerProcess(kubeconfig, tmp_path, namespaces=[namespace]))


@pytest.fixture
def measuring(
    kubeconfig: Path,
    tmp_path: Path,
    namespace: str,
    stepwise_crds: None,
    prometheus: LocalPrometheus,
) -> Iterator[ControllerProcess]:
    """The controller process for this test's namespace, measuring analyses with the
    session's Prometheus as its default provider."""
    yield from running(measuring_controller(kubeconfig, tmp_path, namespace, prometheus))
