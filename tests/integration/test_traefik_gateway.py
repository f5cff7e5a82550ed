"""A real data plane: Traefik's Gateway API provider, as a local process in front of the
local cluster, routes real HTTP requests by an HTTPRoute's backend weights, follows a
change of weights, and reports the route Accepted in its status."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster import LocalCluster
from localcluster.traefik import BUILD_SCRIPT, GATEWAY_GROUP, LocalTraefik
from tests.support.kube import wait_for
from tests.support.traefik import (
    HTTPROUTES,
    NamedBackend,
    answers,
    backend_refs,
    http_route,
    publish,
    route_conditions,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def traefik(local_cluster: LocalCluster) -> Iterator[LocalTraefik]:
    """Traefik serving a Gateway of its own for this module's tests."""
    with LocalTraefik(local_cluster.endpoints.kubeconfig) as proxy:
        yield proxy


@pytest.fixture
def backends() -> Iterator[tuple[NamedBackend, NamedBackend]]:
    """Two HTTP servers on their own loopback addresses, answering "stable" and "canary"."""
    with (
        NamedBackend("stable", "127.0.0.51") as stable,
        NamedBackend("canary", "127.0.0.52") as canary,
    ):
        yield stable, canary


def test_the_gateway_is_programmed_with_its_address(
    traefik: LocalTraefik, api_client: client.ApiClient
) -> None:
    """Traefik accepted the GatewayClass, and programmed the Gateway's listener on its
    ``web`` entryPoint (the listener port is the entryPoint's port)."""
    custom = client.CustomObjectsApi(api_client)
    gateway_class = custom.get_cluster_custom_object(
        GATEWAY_GROUP, "v1", "gatewayclasses", traefik.gateway_class
    )
    assert {c["type"]: c["status"] for c in gateway_class["status"]["conditions"]}[
        "Accepted"
    ] == "True"
    gateway = custom.get_namespaced_custom_object(
        GATEWAY_GROUP, "v1", traefik.gateway_namespace, "gateways", traefik.gateway_name
    )
    assert gateway["spec"]["listeners"][0]["port"] == traefik.port
    assert gateway["status"]["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    (listener,) = gateway["status"]["listeners"]
    assert {c["type"]: c["status"] for c in listener["conditions"]}["Programmed"] == "True"


def test_weights_split_real_requests_and_a_change_is_followed(
    traefik: LocalTraefik,
    api_client: client.ApiClient,
    namespace: str,
    backends: tuple[NamedBackend, NamedBackend],
) -> None:
    """80/20 in the HTTPRoute sends about 80 % of 400 requests to stable and 20 % to
    canary; once Traefik has taken 100/0, no request reaches canary."""
    for backend in backends:
        publish(api_client, namespace, backend)
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(
        *HTTPROUTES[:2],
        namespace,
        HTTPROUTES[2],
        http_route("app", traefik.parent_ref(), {"stable": 80, "canary": 20}),
    )

    def accepted() -> dict[str, str]:
        found = route_conditions(api_client, namespace, "app")
        return found if found.get("Accepted") == "True" else {}

    conditions = wait_for("the HTTPRoute Accepted by Traefik", accepted)
    assert conditions["ResolvedRefs"] == "True"
    wait_for(
        "Traefik to apply 80/20",
        lambda: traefik.weights(namespace, "app") == {"stable": 80, "canary": 20},
    )
    counts = answers(traefik.url, 400)
    assert sum(counts.values()) == counts["stable"] + counts["canary"] == 400, counts
    assert 0.7 <= counts["stable"] / 400 <= 0.9, counts

    custom.patch_namespaced_custom_object(
        *HTTPROUTES[:2],
        namespace,
        HTTPROUTES[2],
        "app",
        {"spec": {"rules": [{"backendRefs": backend_refs({"stable": 100, "canary": 0})}]}},
    )
    wait_for(
        "Traefik to apply 100/0",
        lambda: traefik.weights(namespace, "app") == {"stable": 100, "canary": 0},
    )
    counts = answers(traefik.url, 200)
    assert counts == {"stable": 200}, counts
    traefik.check()


def test_the_build_script_without_go_says_how_to_fix_it(tmp_path: Path) -> None:
    """Without Go on PATH the Traefik build stops at once, naming Go and the alternative."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STEPWISE_CACHE": str(tmp_path)},
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no Go toolchain on PATH" in result.stderr
    assert "STEPWISE_TRAEFIK_DIR" in result.stderr
