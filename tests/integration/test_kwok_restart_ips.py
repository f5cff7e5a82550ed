"""Pod IPs stay unique across a kwok restart.

kwok keeps the IPs it handed out in memory. A restarted kwok that did not learn the
addresses of the pods that live on gave them again to new pods: seen in a full test run,
where a data-plane test's pods shared addresses with pods another test had left behind,
and two pods on one address means one process answering for both. LocalCluster makes a
new kwok recall every existing pod's IP (hack/cluster/kwok-stages.yaml, pod-recall-ip)."""

from __future__ import annotations

import pytest
from kubernetes import client

from localcluster import LocalCluster
from localcluster.cluster import RECALL_IP_ANNOTATION
from tests.support.kube import wait_for
from tests.support.manifests import pod_spec

pytestmark = pytest.mark.integration


def _replica_set(name: str, replicas: int) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod_spec(),
            },
        },
    }


def _ips(core: client.CoreV1Api, namespace: str, app: str) -> dict[str, str]:
    pods = core.api_client.sanitize_for_serialization(
        core.list_namespaced_pod(namespace, label_selector=f"app={app}")
    )["items"]
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods if p["status"].get("podIP")}


def test_pods_created_after_a_kwok_restart_get_addresses_no_live_pod_holds(
    owned_cluster: LocalCluster, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_replica_set(namespace, _replica_set("before", 8))

    def all_eight(app: str) -> dict[str, str]:
        ips = _ips(core, namespace, app)
        return ips if len(ips) == 8 else {}

    before = wait_for("8 pods with IPs", lambda: all_eight("before"), 60)

    owned_cluster.restart_apiserver()  # restarts kwok too

    apps.create_namespaced_replica_set(namespace, _replica_set("after", 8))
    after = wait_for("8 more pods with IPs", lambda: all_eight("after"), 60)
    shared = set(before.values()) & set(after.values())
    assert not shared, f"addresses given twice: {sorted(shared)}; before {before}, after {after}"
    assert len(set(after.values())) == 8, after

    # The annotation that made kwok recall the addresses is gone again.
    def annotated() -> list[str]:
        pods = core.api_client.sanitize_for_serialization(core.list_namespaced_pod(namespace))
        return [
            str(p["metadata"]["name"])
            for p in pods["items"]
            if RECALL_IP_ANNOTATION in (p["metadata"].get("annotations") or {})
        ]

    wait_for("recall annotations removed", lambda: not annotated(), 30)
