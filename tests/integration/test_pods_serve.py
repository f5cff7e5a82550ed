"""Pods that really serve: kwok gives them loopback IPs, the pod runner starts a demo-app
process on each opted-in pod's podIP:containerPort, the pod is Ready only while that
process answers, the runner publishes the Service's EndpointSlice, and a Prometheus that
discovers pods through the API server scrapes them with ``namespace``/``pod`` labels,
so the built-in ``http-*`` templates measure them unchanged."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from controller.api.analysis import ClusterAnalysisTemplate, Metric
from controller.api.rollout import Rollout, SecretKeyRef
from controller.runtime.measure import PrometheusMeasurer
from localcluster import LocalCluster, LocalPrometheus
from localcluster.cluster import POD_CIDR
from podrunner import MANAGED_BY, SERVING_ANNOTATION, PodRunner
from tests.support.analysis import measure_until
from tests.support.kube import wait_for
from tests.support.manifests import pod_spec
from tests.support.podrunner import PORT, get, ready, replica_set, served_template, service

pytestmark = pytest.mark.integration

GENERIC = Path(__file__).resolve().parents[2] / "deploy" / "templates" / "generic.yaml"
#: Named like a Rollout's ReplicaSet (rollout "shop", revision "abc1234"), so its pods
#: are shop-abc1234-xxxxx: the pod names the http-* templates select.
ROLLOUT, REVISION = "shop", "abc1234"
LABELS = {"app": ROLLOUT, "stepwise.dev/revision": REVISION}


@pytest.fixture(scope="module")
def discovering_prometheus(local_cluster: LocalCluster) -> Iterator[LocalPrometheus]:
    """A Prometheus that finds the cluster's pods through the API server."""
    prom = LocalPrometheus(scrape_interval="1s", discover_pods=local_cluster.endpoints)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture
def runner(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[PodRunner]:
    """A pod runner for this test's namespace, not started yet."""
    pod_runner = PodRunner(kubeconfig, workdir=tmp_path / "podrunner", namespaces=[namespace])
    try:
        yield pod_runner
    finally:
        pod_runner.stop()
    pod_runner.check()


def pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    """The ReplicaSet's pods that are not being deleted, with an IP."""
    return [
        p
        for p in core.list_namespaced_pod(namespace, label_selector="app=shop").items
        if p.metadata.deletion_timestamp is None and p.status.pod_ip
    ]


def start_serving(
    api_client: client.ApiClient, namespace: str, env: dict[str, str] | None = None
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service(namespace, service(ROLLOUT, {"app": ROLLOUT}))
    client.AppsV1Api(api_client).create_namespaced_replica_set(
        namespace,
        replica_set(
            f"{ROLLOUT}-{REVISION}",
            LABELS,
            served_template(LABELS, env={"VERSION": "v1", "LATENCY_MS": "1", **(env or {})}),
        ),
    )


def test_served_pods_are_ready_only_while_their_process_answers(
    api_client: client.ApiClient,
    namespace: str,
    runner: PodRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two opted-in pods get loopback IPs and stay un-Ready until the runner's processes
    answer there; then they serve HTTP and their Service's EndpointSlice lists them. A
    killed process makes its pod un-Ready for good; a deleted pod's process stops."""
    caplog.set_level(logging.INFO, logger="podrunner")
    core = client.CoreV1Api(api_client)
    start_serving(api_client, namespace)
    plain = {"metadata": {"name": "plain", "labels": {"app": "plain"}}, "spec": pod_spec()}
    core.create_namespaced_pod(namespace, plain)

    # Without a runner: Running with a loopback IP, not Ready, nothing listening.
    wait_for("2 pods with IPs", lambda: len(pods(core, namespace)) == 2)
    time.sleep(1.5)
    before = pods(core, namespace)
    for pod in before:
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)
        assert pod.status.phase == "Running"
        assert not ready(pod), pod.status.conditions
        assert get(f"http://{pod.status.pod_ip}:{PORT}/healthz")[0] == 0
    plain_pod = core.read_namespaced_pod("plain", namespace)  # not opted in: as before
    assert ready(plain_pod)
    assert ipaddress.ip_address(plain_pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)

    runner.start()
    wait_for("both pods Ready", lambda: all(ready(p) for p in pods(core, namespace)))
    served = runner.served()
    assert {name for _, name in served} == {str(p.metadata.name) for p in before}
    for pod in pods(core, namespace):
        assert pod.metadata.annotations[SERVING_ANNOTATION] == "true"
        assert get(f"http://{pod.status.pod_ip}:{PORT}/healthz") == (200, "ok\n")
        assert get(f"http://{pod.status.pod_ip}:{PORT}/") == (200, "hello from v1\n")
        assert served[(namespace, pod.metadata.name)].address == f"{pod.status.pod_ip}:{PORT}"

    # The Service's EndpointSlice (the runner's: the API server refuses loopback
    # addresses in the controller manager's IPv4 slices) lists both, ready, on 8080.
    discovery = client.DiscoveryV1Api(api_client)

    def slice_endpoints() -> dict[str, bool | None]:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace,
            label_selector=f"kubernetes.io/service-name={ROLLOUT},"
            f"endpointslice.kubernetes.io/managed-by={MANAGED_BY}",
        ).items
        assert all(s.ports[0].port == PORT and s.ports[0].name == "http" for s in slices)
        return {e.addresses[0]: e.conditions.ready for s in slices for e in s.endpoints or []}

    ips = {p.status.pod_ip for p in pods(core, namespace)}
    wait_for(
        "the slice lists both pods ready", lambda: slice_endpoints() == dict.fromkeys(ips, True)
    )

    # Kill one process: its pod goes un-Ready (and not ready in the slice), no restart.
    victim, other = sorted(pods(core, namespace), key=lambda p: str(p.metadata.name))
    victim_pid = served[(namespace, victim.metadata.name)].pid
    assert victim_pid is not None
    os.kill(victim_pid, signal.SIGKILL)
    wait_for(
        "the killed pod un-Ready",
        lambda: not ready(core.read_namespaced_pod(victim.metadata.name, namespace)),
    )
    wait_for(
        "the slice marks it not ready",
        lambda: slice_endpoints().get(victim.status.pod_ip) is False,
    )
    assert any("exited with code -9" in r.getMessage() for r in caplog.records)
    time.sleep(1.5)
    after = runner.served()[(namespace, victim.metadata.name)]
    assert (after.state, after.pid) == ("exited", victim_pid)  # not restarted
    assert not ready(core.read_namespaced_pod(victim.metadata.name, namespace))
    assert get(f"http://{victim.status.pod_ip}:{PORT}/healthz")[0] == 0
    assert get(f"http://{other.status.pod_ip}:{PORT}/")[0] == 200

    # Delete the other pod: its process stops; the ReplicaSet's replacement is served.
    other_pid = served[(namespace, other.metadata.name)].pid
    assert other_pid is not None
    core.delete_namespaced_pod(other.metadata.name, namespace)
    wait_for("the deleted pod's process gone", lambda: not _alive(other_pid))
    wait_for(
        "the replacement pod Ready",
        lambda: any(
            ready(p) and p.metadata.name not in (victim.metadata.name, other.metadata.name)
            for p in pods(core, namespace)
        ),
    )
    assert (namespace, other.metadata.name) not in runner.served()


def test_a_process_that_refuses_its_options_leaves_the_pod_unready(
    api_client: client.ApiClient,
    namespace: str,
    runner: PodRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ERROR_RATE=2 makes the demo app exit at once: logged, the pods stay un-Ready."""
    caplog.set_level(logging.INFO, logger="podrunner")
    core = client.CoreV1Api(api_client)
    runner.start()
    start_serving(api_client, namespace, env={"ERROR_RATE": "2"})
    wait_for(
        "both processes exited",
        lambda: [s.state for s in runner.served().values()] == ["exited", "exited"],
    )
    assert any(
        "exited with code 2 before answering /healthz" in r.getMessage() for r in caplog.records
    )
    time.sleep(1.0)
    assert not any(ready(p) for p in pods(core, namespace))


def test_prometheus_discovers_served_pods_and_the_http_templates_measure_them(
    api_client: client.ApiClient,
    namespace: str,
    runner: PodRunner,
    discovering_prometheus: LocalPrometheus,
) -> None:
    """Prometheus finds the served pods through the API server and scrapes them with
    ``namespace``, ``pod`` and the pod labels; the built-in http-success-rate and
    http-latency-p99 queries, unchanged, measure the two pods under load."""
    prom = discovering_prometheus
    core = client.CoreV1Api(api_client)
    runner.start()
    start_serving(api_client, namespace)
    wait_for(
        "both pods Ready",
        lambda: len(p := pods(core, namespace)) == 2 and all(ready(x) for x in p),
    )
    served = {p.metadata.name: p.status.pod_ip for p in pods(core, namespace)}

    def targets() -> dict[str, dict[str, str]]:
        return {
            t["labels"]["pod"]: t["labels"]
            for t in prom.pod_targets()
            if t["labels"].get("namespace") == namespace and t["health"] == "up"
        }

    wait_for("both pods scraped", lambda: set(targets()) == set(served))
    for name, labels in targets().items():
        assert labels["instance"] == f"{served[name]}:{PORT}"
        assert labels["app"] == ROLLOUT
        assert labels["stepwise_dev_revision"] == REVISION

    stop = threading.Event()
    load = threading.Thread(target=_load, args=(list(served.values()), stop), daemon=True)
    load.start()
    try:
        series = wait_for(
            "http_requests_total of both pods",
            lambda: (
                len(
                    r := prom.query(f'http_requests_total{{namespace="{namespace}",code="200"}}')[
                        "result"
                    ]
                )
                == 2
                and all(float(s["value"][1]) > 0 for s in r)
                and r
            ),
        )
        assert {s["metric"]["pod"] for s in series} == set(served)
        for s in series:
            assert s["metric"]["namespace"] == namespace
            assert s["metric"]["version"] == "v1"
            assert s["metric"]["job"] == "kubernetes-pods"

        ro = _rollout(namespace)
        measurer = PrometheusMeasurer(_no_secrets, default_address=prom.url)
        for name in ("http-success-rate", "http-latency-p99"):
            phase, value, message = measure_until(measurer, ro, _metric(name), "Successful")
            assert phase == "Successful", (name, value, message)
            if name == "http-success-rate":
                assert float(value or "nan") == pytest.approx(1.0)
    finally:
        stop.set()
        load.join()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _load(ips: list[str], stop: threading.Event) -> None:
    """About 40 requests/s spread over the pods until ``stop``."""
    while not stop.is_set():
        for ip in ips:
            get(f"http://{ip}:{PORT}/", timeout=1)
        stop.wait(0.05)


def _no_secrets(namespace: str, ref: SecretKeyRef) -> str:
    raise AssertionError("the generic templates read no Secret")


def _metric(name: str) -> Metric:
    """A built-in metric's query as shipped, over a 5 s window so the test is quick."""
    for doc in yaml.safe_load_all(GENERIC.read_text()):
        for m in ClusterAnalysisTemplate.model_validate(doc).spec.metrics:
            if m.name == name:
                return m.model_copy(update={"interval": "5s"})
    raise AssertionError(name)


def _rollout(namespace: str) -> Rollout:
    """Rollout "shop" whose canary revision is the ReplicaSet's."""
    doc = {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": ROLLOUT, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": ROLLOUT}},
            "template": {"metadata": {"labels": {"app": ROLLOUT}}, "spec": pod_spec()},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
        },
    }
    ro = Rollout.model_validate(doc)
    return ro.model_copy(
        update={
            "status": ro.status.model_copy(
                update={"canary_revision": REVISION, "stable_revision": "zzzzzzz"}
            )
        }
    )
