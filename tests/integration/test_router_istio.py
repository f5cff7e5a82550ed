"""The Istio router with the real controller process on the real API server: the exact
VirtualService (and DestinationRule) at each step, after abort, promotion and deletion;
misconfigurations reported without a partial split; other teams' routes kept through
every write, including an edit that lands between our read and our write."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.adapters.kube import REVISION_LABEL
from controller.adapters.traffic.istio import IstioRouter
from controller.api import intents
from controller.api.rollout import Rollout
from localcluster.controller import ControllerProcess
from tests.support.kube import install_crds, wait_for
from tests.support.manifests import rollout as rollout_doc
from tests.support.routing import Editor, RolloutNamespace

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "hack" / "crds"
ISTIO = ("networking.istio.io", "v1")
STEPWISE = ("stepwise.dev", "v1alpha1", "rollouts")
STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {
        "setHeaderRoute": {
            "name": "beta",
            "match": [{"headerName": "x-beta", "headerValue": {"exact": "true"}}],
        }
    },
    {"pause": {}},
]
PORT = {"number": 80}
STATIC = {
    "name": "static",
    "match": [{"uri": {"prefix": "/static"}}],
    "route": [{"destination": {"host": "static-files", "port": PORT}}],
}
PRIMARY = {
    "name": "primary",
    "retries": {"attempts": 3, "perTryTimeout": "2s"},
    "route": [{"destination": {"host": "app-stable", "port": PORT}, "weight": 100}],
}


def stable(weight: int, host: str = "app-stable", **dest: Any) -> dict[str, Any]:
    """The stable destination with ``weight``."""
    return {"destination": {"host": host, **dest, "port": PORT}, "weight": weight}


def canary(weight: int, host: str = "app-canary", **dest: Any) -> dict[str, Any]:
    """The canary destination as the router adds it."""
    return {"destination": {"host": host, **dest, "port": PORT}, "weight": weight}


def beta(host: str = "app-canary", **dest: Any) -> dict[str, Any]:
    """The header route of the ``beta`` step."""
    return {
        "name": "stepwise-beta",
        "match": [{"headers": {"x-beta": {"exact": "true"}}}],
        "route": [{"destination": {"host": host, **dest, "port": PORT}}],
    }


class Mesh(RolloutNamespace):
    """The admin API for one namespace: Rollouts, Services and Istio objects."""

    # Istio objects
    def create_istio(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        kind = {"virtualservices": "VirtualService", "destinationrules": "DestinationRule"}[plural]
        body = {
            "apiVersion": "/".join(ISTIO),
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        self.custom.create_namespaced_custom_object(*ISTIO, self.ns, plural, body)

    def istio(self, plural: str, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(*ISTIO, self.ns, plural, name)
        assert isinstance(found, dict)
        return found

    def vs(self, name: str = "app") -> dict[str, Any]:
        spec: dict[str, Any] = self.istio("virtualservices", name)["spec"]
        return spec

    def patch_vs(
        self, name: str, patch: Any, content_type: str = "application/merge-patch+json"
    ) -> None:
        self.custom.patch_namespaced_custom_object(
            *ISTIO, self.ns, "virtualservices", name, patch, _content_type=content_type
        )


@pytest.fixture(scope="session")
def istio_crds(api_client: client.ApiClient) -> None:
    """The minimal VirtualService and DestinationRule CRDs, served."""
    install_crds(
        api_client, [CRDS / "istio-virtualservice.yaml", CRDS / "istio-destinationrule.yaml"]
    )


@pytest.fixture
def mesh(
    api_client: client.ApiClient, namespace: str, stepwise_crds: None, istio_crds: None
) -> Mesh:
    """Admin helpers, with the stable and canary Services created."""
    m = Mesh(api_client, namespace)
    m.service("app-stable")
    m.service("app-canary")
    return m


def istio_rollout(steps: list[dict[str, Any]] = STEPS, **istio: Any) -> dict[str, Any]:
    """A Rollout routed by the ``app`` VirtualService."""
    return rollout_doc(
        "app",
        replicas=5,
        steps=steps,
        stableService="app-stable",
        canaryService="app-canary",
        trafficRouting={"istio": {"virtualService": {"name": "app"}, **istio}},
    )


def start(mesh: Mesh, doc: dict[str, Any] | None = None) -> tuple[str, str]:
    """Create the Rollout, wait until Healthy, roll out v2 and wait at the pause."""
    mesh.create(doc or istio_rollout())
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    first = mesh.status()["stableRevision"]
    second = mesh.set_image("registry.local/app:v2")
    wait_for(
        "paused at step 2",
        lambda: (
            mesh.status().get("currentStepIndex") == 2 and mesh.status().get("phase") == "Paused"
        ),
    )
    return first, second


def test_steps_then_deletion_restores_the_virtual_service(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """80/20 and the header route at the pause; deletion mid-canary restores 100/0."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    mesh.create(istio_rollout())
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    assert mesh.vs() == {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}  # untouched
    mesh.set_image("registry.local/app:v2")
    wait_for(
        "paused at step 2",
        lambda: (
            mesh.status().get("currentStepIndex") == 2 and mesh.status().get("phase") == "Paused"
        ),
    )
    assert mesh.status()["canaryWeight"] == 20
    assert mesh.vs() == {
        "hosts": ["app.example.com"],
        "http": [STATIC, beta(), {**PRIMARY, "route": [stable(80), canary(20)]}],
    }
    mesh.delete()
    wait_for("rollout gone", lambda: mesh.get() is None)
    assert mesh.vs() == {
        "hosts": ["app.example.com"],
        "http": [STATIC, {**PRIMARY, "route": [stable(100), canary(0)]}],
    }


def test_abort_leaves_nothing_split(mesh: Mesh, controller: ControllerProcess) -> None:
    """Abort at the pause: 100/0 and the header route gone, the other route untouched."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    _, second = start(mesh)
    mesh.annotate(**{intents.ABORT: second})
    wait_for(
        "aborted",
        lambda: mesh.status().get("phase") == "Degraded" and mesh.status().get("canaryWeight") == 0,
    )
    wait_for("header route gone", lambda: len(mesh.vs()["http"]) == 2)
    assert mesh.vs() == {
        "hosts": ["app.example.com"],
        "http": [STATIC, {**PRIMARY, "route": [stable(100), canary(0)]}],
    }
    assert "all traffic is on stable" in mesh.status()["message"]


def test_a_canary_service_deleted_with_a_header_route_loses_the_header_route_too(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """The canary Service is deleted while it carries 20% and a header route: the
    VirtualService drops the header route as well as the weight (requests matching the
    header would go to a Service that is gone), and the other route is untouched. The
    weight alone is tested for every router in test_router_problems."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    start(mesh)
    assert mesh.vs()["http"] == [STATIC, beta(), {**PRIMARY, "route": [stable(80), canary(20)]}]
    mesh.core.delete_namespaced_service("app-canary", mesh.ns)
    wait_for("aborted", lambda: mesh.status().get("canaryWeight") == 0)
    assert mesh.vs()["http"] == [STATIC, {**PRIMARY, "route": [stable(100), canary(0)]}], (
        mesh.vs(),
        mesh.status(),
    )
    abort = mesh.status().get("abort") or {}
    assert abort.get("reason") == "CanaryServiceMissing", mesh.status()
    assert "app-canary" in abort.get("message", "")
    assert mesh.status()["canaryWeight"] == 0


def test_promotion_keeps_routes_other_teams_edited_meanwhile(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """Promotion (100/0, no header route) keeps routes another team edited meanwhile."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    _, second = start(mesh)
    edited = {**STATIC, "timeout": "9s"}
    team = {"name": "team-b", "route": [{"destination": {"host": "team-b", "port": PORT}}]}
    http = mesh.vs()["http"]
    mesh.patch_vs("app", {"spec": {"http": [edited, *http[1:], team]}})
    mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 2)})
    wait_for("promoted", lambda: mesh.status().get("stableRevision") == second)
    wait_for("header route gone", lambda: len(mesh.vs()["http"]) == 3)
    assert mesh.vs() == {
        "hosts": ["app.example.com"],
        "http": [edited, {**PRIMARY, "route": [stable(100), canary(0)]}, team],
    }


EDIT_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {}},
    STEPS[1],
    {"setWeight": 60},
    {"pause": {}},
]


def static_edited(version: int) -> dict[str, Any]:
    """The unrelated ``static`` route after another team's edits: a new destination, and
    a header match whose value is the edit's ``version``."""
    return {
        "name": "static",
        "match": [{"uri": {"prefix": "/static"}, "headers": {"x-edit": {"exact": str(version)}}}],
        "route": [{"destination": {"host": "static-v2", "port": {"number": 8080}}}],
    }


def edit_static(vs: dict[str, Any], version: int) -> None:
    """Another team's edit: the header match of the ``static`` route, wherever it is."""
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "static")
    route["match"] = static_edited(version)["match"]


def static_version(vs: dict[str, Any]) -> int:
    """The edit version the ``static`` route shows (0: not edited yet)."""
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "static")
    headers = route["match"][0].get("headers") or {}
    return int(headers.get("x-edit", {}).get("exact", 0))


def test_another_teams_route_edits_survive_every_write_up_to_promotion(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """An unrelated route edited between our steps (its destination) and all along while
    we write (its header match) keeps every edit through our weight, header route and
    promotion writes: no write of ours ever undoes one."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    mesh.create(istio_rollout(EDIT_STEPS))
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    second = mesh.set_image("registry.local/app:v2")
    wait_for("paused at step 1", lambda: mesh.status().get("currentStepIndex") == 1)
    assert mesh.vs()["http"] == [STATIC, {**PRIMARY, "route": [stable(80), canary(20)]}]
    mesh.patch_vs(  # between two steps: the other route's destination
        "app",
        [
            {"op": "test", "path": "/spec/http/0/name", "value": "static"},
            {
                "op": "replace",
                "path": "/spec/http/0/route/0/destination",
                "value": static_edited(0)["route"][0]["destination"],
            },
        ],
        "application/json-patch+json",
    )

    def replace(vs: dict[str, Any]) -> object:
        return mesh.custom.replace_namespaced_custom_object(
            *ISTIO, mesh.ns, "virtualservices", "app", vs
        )

    def read() -> dict[str, Any]:
        return mesh.istio("virtualservices", "app")

    with Editor(read, replace, edit_static, static_version) as editor:
        mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 1)})
        wait_for("paused at step 4", lambda: mesh.status().get("currentStepIndex") == 4)
        http = mesh.vs()["http"]
        seen = int(http[0]["match"][0]["headers"]["x-edit"]["exact"])
        assert seen > 0
        assert http == [
            static_edited(seen),
            beta(),
            {**PRIMARY, "route": [stable(40), canary(60)]},
        ]
        mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 4)})
        wait_for("promoted", lambda: mesh.status().get("stableRevision") == second)
        wait_for("header route gone", lambda: len(mesh.vs()["http"]) == 2)
        done = editor.last
        wait_for("an edit after our last write", lambda: editor.last > done)
    assert mesh.vs() == {
        "hosts": ["app.example.com"],
        "http": [static_edited(editor.last), {**PRIMARY, "route": [stable(100), canary(0)]}],
    }
    written = [e.get("weight") for e in controller.logs() if e.get("event") == "traffic weight set"]
    assert written == [20, 60, 0]  # 60 and 0 were written while the edits went on


POLICY = {"loadBalancer": {"simple": "ROUND_ROBIN"}}
SUBSET_ROUTING = {"name": "app", "stableSubsetName": "stable", "canarySubsetName": "canary"}


def subset_world(mesh: Mesh) -> None:
    """A host Service selecting every revision, its DestinationRule, a VirtualService."""
    mesh.service("app")
    subsets = [
        {"name": "stable", "labels": {"app": "app"}},
        {"name": "canary", "labels": {"app": "app"}},
    ]
    mesh.create_istio(
        "destinationrules", "app", {"host": "app", "trafficPolicy": POLICY, "subsets": subsets}
    )
    route = {
        "name": "primary",
        "route": [{"destination": {"host": "app", "subset": "stable", "port": PORT}}],
    }
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, route]}
    )


def subsets(mesh: Mesh) -> list[dict[str, Any]]:
    """The DestinationRule's subsets."""
    return list(mesh.istio("destinationrules", "app")["spec"]["subsets"])


def pinned(stable_revision: str, canary_revision: str) -> list[dict[str, Any]]:
    """The subsets selecting these revisions (the team's labels kept)."""
    return [
        {"name": "stable", "labels": {"app": "app", REVISION_LABEL: stable_revision}},
        {"name": "canary", "labels": {"app": "app", REVISION_LABEL: canary_revision}},
    ]


def test_subset_routing_pins_the_subsets_to_the_revisions(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """By subset: the subsets follow the revisions through the pause and promotion."""
    subset_world(mesh)
    first, second = start(mesh, istio_rollout(destinationRule=SUBSET_ROUTING))
    assert subsets(mesh) == pinned(first, second)
    assert mesh.status()["canaryWeight"] == 20
    assert mesh.istio("destinationrules", "app")["spec"]["trafficPolicy"] == POLICY
    assert mesh.vs()["http"] == [
        STATIC,
        beta("app", subset="canary"),
        {
            "name": "primary",
            "route": [stable(80, "app", subset="stable"), canary(20, "app", subset="canary")],
        },
    ]
    mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 2)})
    wait_for("promoted", lambda: mesh.status().get("stableRevision") == second)
    wait_for("subsets on the new revision", lambda: subsets(mesh) == pinned(second, second))
    wait_for("header route gone", lambda: len(mesh.vs()["http"]) == 2)
    assert mesh.vs()["http"] == [
        STATIC,
        {
            "name": "primary",
            "route": [stable(100, "app", subset="stable"), canary(0, "app", subset="canary")],
        },
    ]


def test_subset_promotion_without_weight_repoints_the_stable_subset(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """A canary that only had a header route: promotion still moves the stable subset."""
    subset_world(mesh)
    steps = [STEPS[1], {"pause": {}}]
    mesh.create(istio_rollout(steps, destinationRule=SUBSET_ROUTING))
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    first = mesh.status()["stableRevision"]
    wait_for("subsets labelled", lambda: subsets(mesh) == pinned(first, first))
    second = mesh.set_image("registry.local/app:v2")
    wait_for("paused at step 1", lambda: mesh.status().get("currentStepIndex") == 1)
    assert subsets(mesh) == pinned(first, second)
    assert mesh.vs()["http"][1] == beta("app", subset="canary")
    mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 1)})
    wait_for("promoted", lambda: mesh.status().get("stableRevision") == second)
    wait_for("header route gone", lambda: len(mesh.vs()["http"]) == 2)
    assert subsets(mesh) == pinned(second, second)
    assert mesh.vs()["http"][1]["route"] == [
        {"destination": {"host": "app", "subset": "stable", "port": PORT}}
    ]


def test_misconfiguration_is_reported_and_nothing_is_split(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """A missing object or route: status message, Warning event, and no partial split."""
    mesh.create(istio_rollout(virtualService={"name": "app", "routes": ["primary", "api"]}))
    missing = f"VirtualService app not found in {mesh.ns}"
    wait_for("degraded", lambda: missing in mesh.status().get("message", ""))
    assert mesh.status()["phase"] == "Degraded"
    wait_for("warning", lambda: any(missing in w for w in mesh.warnings()))

    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    mesh.poke("1")
    no_route = "VirtualService app has no HTTP route named 'api'"
    wait_for("second problem", lambda: no_route in mesh.status().get("message", ""))
    wait_for("second warning", lambda: any(no_route in w for w in mesh.warnings()))
    second = mesh.set_image("registry.local/app:v2")
    wait_for("canary pod ready", lambda: mesh.ready(f"app-{second}") >= 1)
    wait_for("still blocked", lambda: no_route in mesh.status().get("message", ""))
    assert mesh.vs()["http"] == [STATIC, PRIMARY]  # not one weight written

    api = {"name": "api", "route": [{"destination": {"host": "app-stable", "port": PORT}}]}
    mesh.patch_vs("app", {"spec": {"http": [STATIC, PRIMARY, api]}})
    mesh.poke("2")
    wait_for("paused at step 2", lambda: mesh.status().get("currentStepIndex") == 2)
    assert mesh.vs()["http"] == [
        STATIC,
        beta(),
        {**PRIMARY, "route": [stable(80), canary(20)]},
        {**api, "route": [stable(80), canary(20)]},
    ]
    assert mesh.status()["phase"] == "Paused"


def test_the_api_server_enforces_the_destination_weight_limits(mesh: Mesh) -> None:
    """The VirtualService CRD stores a destination weight of 100 and refuses 101 (and -1)
    with a 422 naming the field, on create and on a JSON Patch alike."""
    split = {**PRIMARY, "route": [stable(100), canary(0)]}
    mesh.create_istio("virtualservices", "app", {"hosts": ["app.example.com"], "http": [split]})
    assert mesh.vs()["http"] == [split]
    version = mesh.istio("virtualservices", "app")["metadata"]["resourceVersion"]
    for bad, limit in ((101, "less than or equal to 100"), (-1, "greater than or equal to 0")):
        with pytest.raises(client.exceptions.ApiException) as err:
            mesh.patch_vs(
                "app",
                [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": bad}],
                "application/json-patch+json",
            )
        assert err.value.status == 422
        assert "spec.http[0].route[0].weight" in str(err.value.body)
        assert limit in str(err.value.body)
    assert mesh.istio("virtualservices", "app")["metadata"]["resourceVersion"] == version
    with pytest.raises(client.exceptions.ApiException) as err:
        mesh.create_istio(
            "virtualservices", "too-heavy", {"http": [{"route": [stable(101), canary(0)]}]}
        )
    assert err.value.status == 422
    assert "less than or equal to 100" in str(err.value.body)


def test_an_edit_between_our_read_and_our_write_is_kept(
    api_client: client.ApiClient, mesh: Mesh
) -> None:
    """An edit between the router's read and write is kept: conflict, re-read, retry."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    doc = istio_rollout()
    doc["metadata"]["namespace"] = mesh.ns
    fences: list[str] = []

    def fence() -> None:
        # Called right before each write, after the read the write was computed from.
        if not fences:
            mesh.patch_vs(
                "app",
                [{"op": "add", "path": "/spec/http/0/timeout", "value": "7s"}],
                "application/json-patch+json",
            )
        fences.append("write")

    router = IstioRouter(api_client, Rollout.model_validate(doc), fence)
    router.set_weight(30)
    assert len(fences) == 2  # the first patch was refused, the second went through
    assert mesh.vs()["http"] == [
        {**STATIC, "timeout": "7s"},
        {**PRIMARY, "route": [stable(70), canary(30)]},
    ]
    assert router.observe().canary_weight == 30
    before = copy.deepcopy(mesh.vs())
    router.set_weight(30)
    assert len(fences) == 2  # nothing to write: no write at all
    assert mesh.vs() == before
