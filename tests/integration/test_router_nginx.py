"""The NGINX router with the real controller process on the real API server: the exact
canary Ingress at each step, after abort, promotion and deletion; the stable Ingress
never written; misconfigurations reported with no canary Ingress created; annotations
other people set kept through every write."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from controller.adapters.kube import ROLLOUT_LABEL
from controller.api import intents
from localcluster.controller import ControllerProcess
from tests.support.kube import wait_for
from tests.support.route_objects import ingress, ingress_path
from tests.support.routing import (
    RolloutNamespace,
    blocked_on,
    degraded_by,
    rollout_owner,
    routed_rollout,
)

pytestmark = pytest.mark.integration

STEPWISE = ("stepwise.dev", "v1alpha1", "rollouts")
INGRESS = ("networking.k8s.io", "v1", "ingresses")
P = "nginx.ingress.kubernetes.io"
CANARY = "web-app-canary"
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}]


TEAM = {
    "team.example.com/owner": "shop",
    f"{P}/proxy-body-size": "8m",
    f"{P}/canary-by-header": "x-canary",  # a canary setting: never copied
}
RULES = [
    {
        "host": "shop.example.com",
        "http": {"paths": [ingress_path("/app", "app-stable"), ingress_path("/static", "static")]},
    }
]


def stable_ingress(rules: list[dict[str, Any]] = RULES) -> dict[str, Any]:
    """The team's Ingress to the stable Service."""
    return ingress("web", rules, dict(TEAM))


class Edge(RolloutNamespace):
    """The admin API for one namespace: Rollouts, Services and Ingresses."""

    # Ingresses
    def create_ingress(self, doc: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(*INGRESS[:2], self.ns, INGRESS[2], doc)

    def ingress(self, name: str) -> dict[str, Any] | None:
        return self.find(INGRESS, name)

    def patch_ingress(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(*INGRESS[:2], self.ns, INGRESS[2], name, patch)

    def shape(self, name: str) -> dict[str, Any] | None:
        """What the router writes of an Ingress: name, labels, annotations, owners, spec."""
        found = self.ingress(name)
        if found is None:
            return None
        meta = found["metadata"]
        return {
            "name": meta["name"],
            "labels": meta.get("labels"),
            "annotations": meta.get("annotations"),
            "ownerReferences": meta.get("ownerReferences"),
            "spec": found["spec"],
        }

    def managers(self, name: str) -> set[str]:
        """Field managers that have written the Ingress."""
        found = self.ingress(name) or {}
        return {str(m.get("manager")) for m in found["metadata"].get("managedFields") or []}


@pytest.fixture
def edge(api_client: client.ApiClient, namespace: str, stepwise_crds: None) -> Edge:
    """Admin helpers, with the stable and canary Services created."""
    e = Edge(api_client, namespace)
    e.service("app-stable")
    e.service("app-canary")
    return e


def nginx_rollout(steps: list[dict[str, Any]] = STEPS) -> dict[str, Any]:
    """A Rollout routed by a canary of the ``web`` Ingress."""
    return routed_rollout({"nginx": {"stableIngress": "web"}}, steps, replicas=5)


def expected_canary(
    edge: Edge, weight: int, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """The canary Ingress the router must have written."""
    rollout = edge.get()
    assert rollout is not None
    rules = [{"host": "shop.example.com", "http": {"paths": [ingress_path("/app", "app-canary")]}}]
    copied = {k: v for k, v in (annotations or TEAM).items() if not k.startswith(f"{P}/canary")}
    return {
        "name": CANARY,
        "labels": {ROLLOUT_LABEL: "app"},
        "annotations": {
            **copied,
            f"{P}/canary": "true",
            f"{P}/canary-weight": str(weight),
            f"{P}/canary-weight-total": "100",
        },
        "ownerReferences": [rollout_owner(rollout)],
        "spec": {"ingressClassName": "nginx", "rules": rules},
    }


def start(edge: Edge) -> str:
    """Create the Rollout, wait until Healthy, roll out v2 and wait at the pause."""
    edge.create(nginx_rollout())
    wait_for("healthy", lambda: edge.status().get("phase") == "Healthy")
    assert edge.ingress(CANARY) is None  # no canary yet, no canary Ingress
    second = edge.set_image("registry.local/app:v2")
    edge.wait_paused(1)
    return second


HOLD = "tests.stepwise.dev/hold"


def assert_deleted_at_zero(edge: Edge, wanted: dict[str, Any]) -> None:
    """Delete the Rollout; its canary Ingress must be deleted by garbage collection (the
    ownerReference), and at that moment be exactly ``wanted``. A test finalizer keeps it
    readable once it is marked deleted."""
    edge.patch_ingress(CANARY, {"metadata": {"finalizers": [HOLD]}})
    edge.delete()
    wait_for("rollout gone", lambda: edge.get() is None)

    def collected() -> bool:
        found = edge.ingress(CANARY)
        return found is not None and "deletionTimestamp" in found["metadata"]

    # The garbage collector sees the deletion after its discovery of the Rollout kind.
    wait_for("canary Ingress garbage-collected with the Rollout", collected, timeout=90)
    assert edge.shape(CANARY) == wanted
    edge.patch_ingress(CANARY, {"metadata": {"finalizers": None}})
    wait_for("canary Ingress gone", lambda: edge.ingress(CANARY) is None)


def test_steps_abort_and_deletion(edge: Edge, controller: ControllerProcess) -> None:
    """The canary Ingress: 20 at the pause, 0 after abort; deleting the Rollout leaves
    only the stable Ingress, never written (the canary one is collected at 0)."""
    edge.create_ingress(stable_ingress())
    version = (edge.ingress("web") or {})["metadata"]["resourceVersion"]
    second = start(edge)
    assert edge.shape(CANARY) == expected_canary(edge, 20)
    assert edge.status()["canaryWeight"] == 20
    edge.annotate(**{intents.ABORT: second})
    wait_for(
        "aborted",
        lambda: edge.status().get("phase") == "Degraded" and edge.status().get("canaryWeight") == 0,
    )
    assert edge.shape(CANARY) == expected_canary(edge, 0)
    assert_deleted_at_zero(edge, expected_canary(edge, 0))
    stable = edge.ingress("web") or {}
    assert stable["metadata"]["resourceVersion"] == version  # never written
    assert stable["metadata"]["annotations"] == TEAM
    assert stable["spec"] == stable_ingress()["spec"]


def test_deletion_mid_canary_moves_traffic_back_first(
    edge: Edge, controller: ControllerProcess
) -> None:
    """Deleting the Rollout at 20: the finalizer sets the canary Ingress to 0, then garbage
    collection deletes it; the stable Ingress is left, never written."""
    edge.create_ingress(stable_ingress())
    version = (edge.ingress("web") or {})["metadata"]["resourceVersion"]
    start(edge)
    assert edge.shape(CANARY) == expected_canary(edge, 20)
    assert_deleted_at_zero(edge, expected_canary(edge, 0))
    assert (edge.ingress("web") or {})["metadata"]["resourceVersion"] == version
    written = [e["weight"] for e in controller.logs() if e.get("event") == "traffic weight set"]
    assert written == [20, 0]
    assert any(
        e.get("event") == "traffic restored to stable before deletion" for e in controller.logs()
    )


def test_promotion_keeps_annotations_others_set(edge: Edge, controller: ControllerProcess) -> None:
    """Promotion copies the team's current annotations and keeps another tool's."""
    edge.create_ingress(stable_ingress())
    second = start(edge)
    edge.patch_ingress(
        "web",
        {
            "metadata": {
                "annotations": {"team.example.com/on-call": "alice", f"{P}/proxy-body-size": None}
            }
        },
    )
    edge.patch_ingress(CANARY, {"metadata": {"annotations": {"tool.example.com/scanned": "yes"}}})
    edge.annotate(**{intents.PROMOTE: intents.promote_value(second, 1)})
    wait_for("promoted", lambda: edge.status().get("stableRevision") == second)
    team_now = {"team.example.com/owner": "shop", "team.example.com/on-call": "alice"}
    wanted = expected_canary(edge, 0, team_now)
    wanted["annotations"]["tool.example.com/scanned"] = "yes"
    wait_for("weight 0", lambda: edge.shape(CANARY) == wanted)
    stable = edge.ingress("web") or {}
    assert stable["metadata"]["annotations"] == {
        "team.example.com/owner": "shop",
        f"{P}/canary-by-header": "x-canary",
        "team.example.com/on-call": "alice",
    }
    assert "stepwise-controller" not in edge.managers("web")


def test_misconfiguration_is_reported_and_no_canary_is_created(
    edge: Edge, controller: ControllerProcess
) -> None:
    """A missing or unfit stable Ingress: message, Warning event, and no canary Ingress."""
    edge.create(nginx_rollout())
    degraded_by(edge, f"stable Ingress web not found in {edge.ns}")

    edge.create_ingress(stable_ingress([{"http": {"paths": [ingress_path("/static", "static")]}}]))
    edge.poke("1")
    no_backend = "stable Ingress web has no backend for the stable Service app-stable"
    blocked_on(edge, no_backend, canary_pods=True)
    assert edge.ingress(CANARY) is None  # nothing split

    edge.patch_ingress("web", {"spec": {"rules": RULES}})
    edge.poke("2")
    wait_for("paused at step 1", lambda: edge.status().get("currentStepIndex") == 1)
    assert edge.shape(CANARY) == expected_canary(edge, 20)


def test_the_api_rejects_header_routes_with_nginx(edge: Edge) -> None:
    """setHeaderRoute with trafficRouting.nginx is refused by the API server."""
    doc = nginx_rollout(
        [
            {
                "setHeaderRoute": {
                    "name": "beta",
                    "match": [{"headerName": "x", "headerValue": {"exact": "1"}}],
                }
            }
        ]
    )
    with pytest.raises(client.exceptions.ApiException) as err:
        edge.create(doc)
    assert err.value.status == 422
    assert "setHeaderRoute needs a router that supports header routes" in str(err.value.body)
