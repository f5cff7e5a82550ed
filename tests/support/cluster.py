"""A namespace of the real API server, seen through the few calls integration tests make
about Rollouts, their ReplicaSets, pods and events."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from controller.core.hashing import template_hash
from localcluster import KWOK_NODE_LABEL
from tests.support.kube import wait_for

GROUP, VERSION, PLURAL = "stepwise.dev", "v1alpha1", "rollouts"
Resource = tuple[str, str, str]
"""(group, version, plural) of a custom resource."""


class NamespaceApi:
    """The admin API clients, for one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def find(self, resource: Resource, name: str) -> dict[str, Any] | None:
        """The custom object ``name`` of ``resource`` (None when it does not exist)."""
        group, version, plural = resource
        try:
            found = self.custom.get_namespaced_custom_object(group, version, self.ns, plural, name)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        assert isinstance(found, dict)
        return found

    def service(self, name: str) -> None:
        """A ClusterIP Service ``name`` selecting the pods of the app ``app``."""
        body = client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(
                type="ClusterIP",
                selector={"app": "app"},
                ports=[client.V1ServicePort(port=80, target_port=8080)],
            ),
        )
        self.core.create_namespaced_service(self.ns, body)


class Cluster(NamespaceApi):
    """Small helpers over the admin API for one namespace."""

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        result = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, doc)
        assert isinstance(result, dict)
        return result

    def get(self, name: str) -> dict[str, Any]:
        result = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        assert isinstance(result, dict)
        return result

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def healthy(self, name: str) -> bool:
        """Whether the Rollout's phase is Healthy."""
        return self.status(name).get("phase") == "Healthy"

    def aborted_by_analysis(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait until a failed analysis aborts the Rollout; its status then."""
        wait_for(
            "aborted",
            lambda: (self.status(name).get("abort") or {}).get("reason") == "AnalysisFailed",
            timeout,
        )
        return self.status(name)

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, body)

    def set_image(self, name: str, image: str) -> str:
        """Change the image; returns the new revision."""
        doc = self.get(name)
        doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.patch(name, {"spec": {"template": doc["spec"]["template"]}})
        return template_hash(doc["spec"]["template"])

    def annotate(self, name: str, **ann: str | None) -> None:
        self.patch(name, {"metadata": {"annotations": ann}})

    def ready(self, name: str, revision: str) -> tuple[int, int]:
        """(spec replicas, ready) of a revision's ReplicaSet ((-1, -1) if missing)."""
        try:
            rs = self.apps.read_namespaced_replica_set(f"{name}-{revision}", self.ns)
        except client.exceptions.ApiException:
            return (-1, -1)
        return (rs.spec.replicas or 0, rs.status.ready_replicas or 0)

    def pod_uids(self, revision: str) -> set[str]:
        pods = self.core.list_namespaced_pod(
            self.ns, label_selector=f"stepwise.dev/revision={revision}"
        ).items
        return {str(p.metadata.uid) for p in pods if p.metadata.deletion_timestamp is None}

    def events(self, name: str) -> list[str]:
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name}"
        ).items
        items.sort(key=lambda e: str(e.metadata.creation_timestamp))
        return [str(e.reason) for e in items]

    def event_messages(self, name: str, reason: str) -> list[str]:
        """The messages of the Rollout's events with that reason, oldest first, one per
        occurrence (an event the server counted twice appears twice)."""
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name},reason={reason}"
        ).items
        items.sort(key=lambda e: str(e.metadata.creation_timestamp))
        return [str(e.message) for e in items for _ in range(e.count or 1)]

    def cordon(self, unschedulable: bool) -> None:
        """Cordon (or uncordon) every fake node: new pods stay Pending while cordoned."""
        for node in self.core.list_node(label_selector="=".join(KWOK_NODE_LABEL)).items:
            self.core.patch_node(node.metadata.name, {"spec": {"unschedulable": unschedulable}})
