"""No request fails through a real Gateway while releases move: Traefik in front of pods
that serve (one demo-app process per pod, Ready only while it answers), the controller
routing a Gateway API canary, and 50 requests a second counted at the client.

The transitions where a lagging data plane drops requests are each tried: a new revision
superseding a canary that carries 50% (the canary Service must not select the new,
unready pods while the Gateway still sends it traffic), a promotion (the old stable's
pods must outlive the Gateway's switch), and an abort (traffic back to stable before
the canary's pods go). Failures are counted by outcome: a Gateway 5xx (no backend
reached) or no answer at all would be the controller's fault; an app's own 5xx cannot
happen here (every version is healthy)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from controller.api import intents
from demodriver.client import GatewayLoad
from localcluster import LocalCluster
from localcluster.controller import ControllerProcess
from localcluster.dataplane import DataPlane, served_pod_template
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_manifest
from tests.support.served import GROUP, VERSION, ServedWeb

pytestmark = pytest.mark.integration


@pytest.fixture
def lagging_dataplane(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path, stepwise_crds: None
) -> Iterator[DataPlane]:
    """A data plane whose EndpointSlices list a pod ready only 4 s after it is Ready."""
    with DataPlane(
        local_cluster.endpoints, [namespace], workdir=tmp_path / "dp", endpoint_lag=LAG
    ) as plane:
        yield plane


LAG = 4.0


class Release(ServedWeb):
    """The ``web`` Rollout of one namespace and its objects."""

    def setup(self) -> None:
        self.serve(("web-stable", "web-canary"), "web-stable")
        doc = rollout_manifest(
            "web",
            replicas=4,
            template=served_pod_template({"app": "web"}, {"VERSION": "v1"}, "web"),
            stableService="web-stable",
            canaryService="web-canary",
            trafficRouting={"gatewayAPI": {"httpRoute": "web"}},
            steps=[{"setWeight": 50}, {"pause": {}}],
            scaleDownDelaySeconds=2,
            abortScaleDownDelaySeconds=2,
        )
        self.create("rollouts", doc)

    def release(self, version: str) -> None:
        container = served_pod_template({"app": "web"}, {"VERSION": version}, "web")
        self.replace_container(container["spec"]["containers"][0])

    def annotate(self, key: str, value: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, "rollouts", "web", {"metadata": {"annotations": {key: value}}}
        )

    def traefik_share(self) -> int | None:
        weights = self.plane.traefik.weights(self.ns, "web")
        total = sum(weights.values())
        return round(100 * weights.get("web-canary", 0) / total) if total else None


@contextmanager
def explained(plane: DataPlane, namespace: str, load: GatewayLoad) -> Iterator[None]:
    """A failed wait says what the data plane held and how requests fared just before."""
    try:
        yield
    except AssertionError as exc:
        recent = load.counts(time.monotonic() - 5)
        raise AssertionError(
            f"{exc}\nrequests in the last 5 s: {recent}\n{plane.describe(namespace)}"
        ) from exc


def test_no_request_fails_through_a_supersede_a_promotion_and_an_abort(
    api_client: client.ApiClient, namespace: str, dataplane: DataPlane, tmp_path: Path
) -> None:
    web = Release(api_client, namespace, dataplane)
    controller = ControllerProcess(
        dataplane.traefik.kubeconfig, tmp_path, namespaces=[namespace], extra=["--workers=2"]
    )
    controller.start()
    try:
        web.setup()
        wait_for("v1 stable", lambda: web.status().get("phase") == "Healthy", 60)
        wait_for("Traefik routes to v1", lambda: web.traefik_share() == 0, 30)
        with GatewayLoad(dataplane.url, rps=50) as load, explained(dataplane, namespace, load):
            time.sleep(1)
            web.release("v2")
            wait_for("v2 at 50% in Traefik", lambda: web.traefik_share() == 50, 60)
            wait_for("v2 serving", lambda: load.versions(time.monotonic() - 1).get("v2", 0) > 0)

            # A new revision while v2 carries 50%.
            start = time.monotonic()
            web.release("v3")
            wait_for(
                "v3 at 50% in Traefik",
                lambda: (
                    load.versions(time.monotonic() - 1).get("v3", 0) > 10
                    and web.status().get("phase") == "Paused"
                ),
                60,
            )
            superseded = load.counts(start)

            # Promotion of v3, through its old stable's scale-down.
            start = time.monotonic()
            canary = web.status()["canaryRevision"]
            web.annotate(intents.PROMOTE_FULL, canary)
            wait_for("v3 stable", lambda: web.status().get("stableRevision") == canary, 60)
            wait_for("v1 gone", lambda: set(load.versions(time.monotonic() - 1)) == {"v3"}, 30)
            time.sleep(4)  # beyond scaleDownDelaySeconds: the old pods go meanwhile
            promoted = load.counts(start)

            # An abort of v4 at 50%.
            web.release("v4")
            wait_for("v4 serving", lambda: load.versions(time.monotonic() - 1).get("v4", 0) > 5)
            start = time.monotonic()
            web.annotate(intents.ABORT, web.status()["canaryRevision"])
            wait_for("Traefik back on stable", lambda: web.traefik_share() == 0, 30)
            zero = time.monotonic()
            time.sleep(4)  # beyond abortScaleDownDelaySeconds
            aborted = load.counts(start)
            after_abort = load.versions(zero + 0.5)
    finally:
        controller.stop()
    for what, counts in (("supersede", superseded), ("promotion", promoted), ("abort", aborted)):
        assert set(counts) == {"ok"}, (what, counts)
        assert counts["ok"] > 50, (what, counts)
    assert set(after_abort) == {"v3"}, after_abort


def answering(load: GatewayLoad, version: str) -> bool:
    """Every request of the last second succeeded, and ``version`` answered 20 of them."""
    since = time.monotonic() - 1
    return set(load.counts(since)) == {"ok"} and load.versions(since).get(version, 0) > 20


def test_the_canary_gets_traffic_only_once_its_endpoints_are_published(
    api_client: client.ApiClient, namespace: str, lagging_dataplane: DataPlane, tmp_path: Path
) -> None:
    """EndpointSlices that follow pod readiness 4 s late (a slow EndpointSlice controller):
    the first share waits for the canary's pods to be listed ready, so no request finds a
    canary Service without endpoints; meanwhile the status says what it waits for."""
    plane = lagging_dataplane
    web = Release(api_client, namespace, plane)
    controller = ControllerProcess(plane.traefik.kubeconfig, tmp_path, namespaces=[namespace])
    controller.start()
    messages: list[str] = []
    try:
        web.setup()
        wait_for("v1 stable", lambda: web.status().get("phase") == "Healthy", 60)
        wait_for("Traefik routes to v1", lambda: web.traefik_share() == 0, 30)
        with GatewayLoad(plane.url, rps=50) as load, explained(plane, namespace, load):
            # The stable's own endpoints lag too: count from when they answer.
            wait_for("v1 answering through Traefik", lambda: answering(load, "v1"), 30)
            start = time.monotonic()
            web.release("v2")

            def at_half() -> bool:
                messages.append(str(web.status().get("message", "")))
                return web.traefik_share() == 50

            wait_for("v2 at 50% in Traefik", at_half, 60)
            wait_for("v2 serving", lambda: load.versions(time.monotonic() - 1).get("v2", 0) > 10)
            counts = load.counts(start)
    finally:
        controller.stop()
    assert set(counts) == {"ok"}, counts
    assert any("ready endpoints of canary Service web-canary" in m for m in messages), messages
