"""The local control plane behaves like a real cluster: scheduling onto kwok nodes, CRD
validation (OpenAPI and CEL), the status subresource and optimistic concurrency."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import KWOK_NODE_LABEL, KWOK_TAINT
from tests.support.crds import namespaced_crd
from tests.support.kube import wait_for

pytestmark = pytest.mark.integration


def fake_node_pod_spec(image: str = "registry.local/app:v1") -> client.V1PodSpec:
    """A pod spec that lands on a kwok fake node (and only there)."""
    return client.V1PodSpec(
        containers=[client.V1Container(name="app", image=image)],
        node_selector={KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1]},
        tolerations=[client.V1Toleration(operator="Exists", key=KWOK_TAINT["key"])],
    )


def ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def test_deployment_pods_become_ready_on_the_fake_node_and_scale(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A Deployment of 3 gives 3 Ready pods on the kwok node; scaled to 5 it gives 5."""
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=3,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels), spec=fake_node_pod_spec()
                ),
            ),
        ),
    )
    pods = wait_for("3 ready pods", lambda: len(ready_pods(core, namespace, "app=web")) == 3)
    assert pods
    for pod in ready_pods(core, namespace, "app=web"):
        assert pod.spec.node_name.startswith("kwok-node-")
        assert pod.status.pod_ip
    apps.patch_namespaced_deployment_scale(
        namespace=namespace, name="web", body={"spec": {"replicas": 5}}
    )
    wait_for("5 ready pods", lambda: len(ready_pods(core, namespace, "app=web")) == 5)
    dep = wait_for(
        "deployment status 5 ready",
        lambda: (
            (d := apps.read_namespaced_deployment("web", namespace)).status.ready_replicas == 5
            and d
        ),
    )
    assert dep.status.ready_replicas == 5


GROUP = "tests.stepwise.dev"


@pytest.fixture
def widget_crd(api_client: client.ApiClient) -> Iterator[str]:
    """A namespaced CRD with an OpenAPI schema, a CEL rule and a status subresource."""
    ext = client.ApiextensionsV1Api(api_client)
    plural = f"widgets{uuid.uuid4().hex[:6]}"
    name = f"{plural}.{GROUP}"
    spec = {
        "type": "object",
        "properties": {"min": {"type": "integer", "minimum": 0}, "max": {"type": "integer"}},
        "x-kubernetes-validations": [
            {
                "rule": "self.min <= self.max",
                "message": "min must not exceed max",
                "fieldPath": ".min",
            }
        ],
    }
    crd = namespaced_crd(
        GROUP,
        "v1",
        {"plural": plural, "singular": plural[:-1], "kind": f"W{plural}"},
        {"spec": spec, "status": {"type": "object", "properties": {"phase": {"type": "string"}}}},
        status=True,
    )
    ext.create_custom_resource_definition(crd)

    def established() -> bool:
        got = ext.read_custom_resource_definition(name)
        return any(
            c.type == "Established" and c.status == "True" for c in (got.status.conditions or [])
        )

    wait_for("CRD established", established)
    custom = client.CustomObjectsApi(api_client)

    def served() -> bool:
        try:
            custom.list_cluster_custom_object(GROUP, "v1", plural)
        except ApiException as exc:
            if exc.status == 404:  # the handler is installed just after Established
                return False
            raise
        return True

    wait_for("CRD served", served)
    try:
        yield plural
    finally:
        ext.delete_custom_resource_definition(name)


def test_crd_schema_and_cel_rule_reject_invalid_objects(
    api_client: client.ApiClient, namespace: str, widget_crd: str
) -> None:
    """The server rejects a CEL violation and a schema violation with its own messages."""
    custom = client.CustomObjectsApi(api_client)
    body = {"apiVersion": f"{GROUP}/v1", "kind": f"W{widget_crd}", "metadata": {"name": "bad"}}
    with pytest.raises(ApiException) as cel:
        custom.create_namespaced_custom_object(
            GROUP, "v1", namespace, widget_crd, {**body, "spec": {"min": 5, "max": 1}}
        )
    assert cel.value.status == 422
    assert "min must not exceed max" in cel.value.body
    assert "spec.min" in cel.value.body
    with pytest.raises(ApiException) as schema:
        custom.create_namespaced_custom_object(
            GROUP, "v1", namespace, widget_crd, {**body, "spec": {"min": -1, "max": 1}}
        )
    assert schema.value.status == 422
    assert "spec.min" in schema.value.body
    assert "should be greater than or equal to 0" in schema.value.body
    ok = custom.create_namespaced_custom_object(
        GROUP,
        "v1",
        namespace,
        widget_crd,
        {**body, "metadata": {"name": "ok"}, "spec": {"min": 1, "max": 2}},
    )
    assert ok["spec"] == {"min": 1, "max": 2}


def test_status_subresource_ignores_status_sent_through_the_main_resource(
    api_client: client.ApiClient, namespace: str, widget_crd: str
) -> None:
    """With the status subresource on, status written via the main resource is dropped;
    written via /status it sticks."""
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(
        GROUP,
        "v1",
        namespace,
        widget_crd,
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": f"W{widget_crd}",
            "metadata": {"name": "w"},
            "spec": {"min": 1, "max": 2},
        },
    )
    patched = custom.patch_namespaced_custom_object(
        GROUP, "v1", namespace, widget_crd, "w", {"status": {"phase": "Healthy"}}
    )
    assert "status" not in patched or patched["status"].get("phase") is None
    patched = custom.patch_namespaced_custom_object_status(
        GROUP, "v1", namespace, widget_crd, "w", {"status": {"phase": "Healthy"}}
    )
    assert patched["status"]["phase"] == "Healthy"
    got = custom.get_namespaced_custom_object(GROUP, "v1", namespace, widget_crd, "w")
    assert got["status"]["phase"] == "Healthy"


def test_update_with_stale_resource_version_conflicts(
    api_client: client.ApiClient, namespace: str
) -> None:
    """An update carrying an old resourceVersion gets 409 Conflict."""
    core = client.CoreV1Api(api_client)
    cm = core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"k": "1"}),
    )
    stale_rv = cm.metadata.resource_version
    core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "2"}})
    cm.data = {"k": "3"}
    cm.metadata.resource_version = stale_rv
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cm", namespace, cm)
    assert err.value.status == 409
    assert core.read_namespaced_config_map("cm", namespace).data == {"k": "2"}
