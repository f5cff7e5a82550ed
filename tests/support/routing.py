"""The admin API for one namespace, as the router integration tests use it: Rollouts
(named ``app`` by default), Services and Warning events."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from controller.core.hashing import template_hash

STEPWISE = ("stepwise.dev", "v1alpha1", "rollouts")


class RolloutNamespace:
    """Rollouts, Services and events of one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    # Services
    def service(self, name: str) -> None:
        body = client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(
                type="ClusterIP",
                selector={"app": "app"},
                ports=[client.V1ServicePort(port=80, target_port=8080)],
            ),
        )
        self.core.create_namespaced_service(self.ns, body)

    # Rollouts
    def create(self, doc: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(*STEPWISE[:2], self.ns, STEPWISE[2], doc)

    def get(self, name: str = "app") -> dict[str, Any] | None:
        try:
            found = self.custom.get_namespaced_custom_object(
                *STEPWISE[:2], self.ns, STEPWISE[2], name
            )
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        assert isinstance(found, dict)
        return found

    def status(self, name: str = "app") -> dict[str, Any]:
        return (self.get(name) or {}).get("status") or {}

    def patch(self, body: dict[str, Any], name: str = "app") -> None:
        self.custom.patch_namespaced_custom_object(*STEPWISE[:2], self.ns, STEPWISE[2], name, body)

    def set_image(self, image: str, name: str = "app") -> str:
        doc = self.get(name)
        assert doc is not None
        doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.patch({"spec": {"template": doc["spec"]["template"]}}, name)
        return template_hash(doc["spec"]["template"])

    def annotate(self, name: str = "app", **ann: str | None) -> None:
        self.patch({"metadata": {"annotations": ann}}, name)

    def poke(self, value: str, name: str = "app") -> None:
        """Touch the Rollout so that it is reconciled now (routers are not watched)."""
        self.patch({"metadata": {"labels": {"poke": value}}}, name)

    def ready(self, replica_set: str) -> int:
        """Ready pods of a ReplicaSet (0 if it is missing)."""
        try:
            rs = self.apps.read_namespaced_replica_set(replica_set, self.ns)
        except client.exceptions.ApiException:
            return 0
        return rs.status.ready_replicas or 0

    def delete(self, name: str = "app") -> None:
        self.custom.delete_namespaced_custom_object(*STEPWISE[:2], self.ns, STEPWISE[2], name)

    def warnings(self, name: str = "app") -> list[str]:
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name},type=Warning"
        ).items
        return [f"{e.reason}: {e.message}" for e in items]
