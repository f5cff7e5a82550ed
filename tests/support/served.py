"""The ``web`` app of one namespace served by real pods behind a data plane (Traefik in
front of demo-app processes), for the tests that send requests through its Gateway."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from localcluster.dataplane import DataPlane
from tests.support.cluster import NamespaceApi
from tests.support.route_objects import http_route, http_service

GROUP, VERSION = "stepwise.dev", "v1alpha1"


class ServedWeb(NamespaceApi):
    """The ``web`` Rollout of one namespace, its Services and its HTTPRoute."""

    def __init__(self, api: client.ApiClient, namespace: str, plane: DataPlane) -> None:
        super().__init__(api, namespace)
        self.plane = plane

    def serve(self, services: tuple[str, ...], backend: str) -> None:
        """The Services (to the ``http`` port of the ``web`` pods) and the HTTPRoute
        ``web`` of the data plane's Gateway, sending everything to ``backend``."""
        for name in services:
            self.core.create_namespaced_service(self.ns, http_service(name, "web"))
        rules = [{"backendRefs": [{"name": backend, "port": 80}]}]
        route = http_route("web", rules, parent=self.plane.parent_ref())
        self.custom.create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.ns, "httproutes", route
        )

    def create(self, plural: str, body: dict[str, Any]) -> None:
        """A Stepwise object (``plural``: rollouts, analysistemplates)."""
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)

    def status(self) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, "rollouts", "web")
        assert isinstance(found, dict)
        return found.get("status") or {}

    def replace_container(self, container: dict[str, Any]) -> None:
        """Release a new revision: the Rollout's one container replaced (JSON Patch)."""
        ops = [{"op": "replace", "path": "/spec/template/spec/containers/0", "value": container}]
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, "rollouts", "web", ops,
            _content_type="application/json-patch+json",
        )  # fmt: skip
