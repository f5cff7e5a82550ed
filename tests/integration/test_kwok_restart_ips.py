"""Pod IPs stay unique across a kwok restart.

kwok keeps the IPs it handed out in memory. A restarted kwok that did not learn the
addresses of the pods that live on gave them again to new pods: seen in a full test run,
where a data-plane test's pods shared addresses with pods another test had left behind,
and two pods on one address means one process answering for both. LocalCluster makes a
new kwok hand out an address range of its own (KWOK_RANGES). (An earlier fix had the new
kwok relearn every live pod's IP through a stage played on each pod: with the hundreds of
pods a full run leaves, that took longer than the restart may.)"""

from __future__ import annotations

import ipaddress

import pytest
from kubernetes import client

from localcluster import LocalCluster
from localcluster.cluster import POD_CIDR
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

    # Every address is still one of the cluster's pod addresses.
    network = ipaddress.ip_network(POD_CIDR)
    assert all(ipaddress.ip_address(ip) in network for ip in [*before.values(), *after.values()])
