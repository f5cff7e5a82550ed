"""The Istio router with the real controller process on the real API server: the exact
VirtualService (and DestinationRule) at each step, after abort, promotion and deletion;
misconfigurations reported without a partial split; other teams' routes kept through
every write, including an edit that lands between our read and our write."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from controller.adapters.kube import REVISION_LABEL
from controller.adapters.traffic.istio import IstioRouter
from controller.api import intents
from controller.api.rollout import Rollout
from controller.api.validation import validate_document
from localcluster.controller import ControllerProcess
from tests.integration.test_argo_bluegreen_examples import convert
from tests.integration.test_lint_server_agreement import server_accepts
from tests.support.kube import install_crds, wait_for
from tests.support.manifests import rollout as rollout_doc
from tests.support.route_objects import istio_object
from tests.support.routing import Editor, RolloutNamespace, blocked_on, degraded_by, routed_rollout

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "hack" / "crds"
ARGO_CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "argo-corpus"
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
        body = istio_object(kind, name, spec)
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
    return routed_rollout({"istio": {"virtualService": {"name": "app"}, **istio}}, steps, 5)


def start(mesh: Mesh, doc: dict[str, Any] | None = None, pause_at: int = 2) -> tuple[str, str]:
    """Create the Rollout, wait until Healthy, roll out v2 and wait at the pause (step
    ``pause_at``); the stable and canary revisions."""
    mesh.create(doc or istio_rollout())
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    first = mesh.status()["stableRevision"]
    second = mesh.set_image("registry.local/app:v2")
    mesh.wait_paused(pause_at)
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
    mesh.wait_paused(2)
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
    degraded_by(mesh, f"VirtualService app not found in {mesh.ns}")

    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    mesh.poke("1")
    blocked_on(mesh, "VirtualService app has no HTTP route named 'api'", canary_pods=True)
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


# -- Argo Rollouts' shapes: subsets without Services, TLS routes, mirror routes ---------


def serviceless_rollout(steps: list[dict[str, Any]], **istio: Any) -> dict[str, Any]:
    """A Rollout routed by subsets of the ``app`` host, with no stable or canary Service
    (Argo's istio-subset-split)."""
    return rollout_doc(
        "app",
        replicas=5,
        steps=steps,
        trafficRouting={
            "istio": {
                "virtualService": {"name": "app", "routes": ["primary"]},
                "destinationRule": SUBSET_ROUTING,
                **istio,
            }
        },
    )


def subset_split(weight: int) -> dict[str, Any]:
    """The primary route by subset with the canary at ``weight``."""
    return {
        "name": "primary",
        "route": [
            stable(100 - weight, "app", subset="stable"),
            canary(weight, "app", subset="canary"),
        ],
    }


def test_subsets_without_services_shift_weights_and_end_on_the_stable_subset(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """No stable or canary Service: the weights move between the subsets, the subsets
    follow the revisions, and promotion ends with all traffic on the stable subset,
    which selects the new revision."""
    subset_world(mesh)
    first, second = start(mesh, serviceless_rollout([{"setWeight": 30}, {"pause": {}}]), 1)
    assert mesh.status()["canaryWeight"] == 30
    assert subsets(mesh) == pinned(first, second)
    assert mesh.vs()["http"] == [STATIC, subset_split(30)]
    for name in ("app-stable", "app-canary"):  # the Services Stepwise would pin are not used
        selector = mesh.core.read_namespaced_service(name, mesh.ns).spec.selector
        assert REVISION_LABEL not in selector
    mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 1)})
    wait_for("promoted", lambda: mesh.status().get("stableRevision") == second)
    wait_for("subsets on the new revision", lambda: subsets(mesh) == pinned(second, second))
    assert mesh.vs()["http"] == [STATIC, subset_split(0)]
    wait_for("healthy again", lambda: mesh.status().get("phase") == "Healthy")


class History:
    """Every version of the VirtualService and DestinationRule ``app``, from watches
    started now, in the order etcd wrote them (one etcd: resourceVersions of both
    kinds are its revision numbers, so they order the writes of both objects)."""

    PLURALS = ("virtualservices", "destinationrules")

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.versions: list[tuple[int, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(plural,), daemon=True)
            for plural in self.PLURALS
        ]

    def _run(self, plural: str) -> None:
        """Watch in one-second requests until stopped, resuming where the last ended."""
        custom = self.mesh.custom
        since = custom.list_namespaced_custom_object(*ISTIO, self.mesh.ns, plural)["metadata"][
            "resourceVersion"
        ]
        while not self._stop.is_set():
            stream = watch.Watch().stream  # type: ignore[no-untyped-call]
            for event in stream(  # type: ignore[no-untyped-call]
                custom.list_namespaced_custom_object,
                *ISTIO,
                self.mesh.ns,
                plural,
                resource_version=since,
                timeout_seconds=1,
            ):
                obj = event["object"]
                since = obj["metadata"]["resourceVersion"]
                with self._lock:
                    self.versions.append((int(since), plural, obj))

    def __enter__(self) -> History:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def shares(self, start: dict[str, dict[str, Any]]) -> list[dict[str | None, int]]:
        """After each write, replayed from the objects in ``start`` (plural -> object):
        the percent of the primary route's traffic each revision received."""
        current = dict(start)
        out: list[dict[str | None, int]] = []
        with self._lock:
            ordered = sorted(self.versions, key=lambda v: v[0])
        for _, plural, obj in ordered:
            current[plural] = obj
            labels = {
                s["name"]: (s.get("labels") or {}).get(REVISION_LABEL)
                for s in current["destinationrules"]["spec"]["subsets"]
            }
            route = current["virtualservices"]["spec"]["http"][-1]["route"]
            weights = [d.get("weight", 100) for d in route] if len(route) > 1 else [100]
            share: dict[str | None, int] = {}
            for d, w in zip(route, weights, strict=True):
                revision = labels.get(d["destination"]["subset"])
                share[revision] = share.get(revision, 0) + w
            out.append(share)
        return out


def objects(mesh: Mesh) -> dict[str, dict[str, Any]]:
    """The VirtualService and DestinationRule ``app`` now, by plural."""
    return {plural: mesh.istio(plural, "app") for plural in History.PLURALS}


def test_subsets_without_services_never_send_traffic_back_to_the_old_revision(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """Promotion without Services relabels the stable subset before it moves the weight
    back to it: from the moment the canary has 30%, the old revision never gets more than
    70% again (relabelling after the weight would send it 100% for a moment)."""
    subset_world(mesh)
    mesh.create(serviceless_rollout([{"setWeight": 30}, {"pause": {}}]))
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    first = mesh.status()["stableRevision"]
    wait_for("subsets labelled", lambda: subsets(mesh) == pinned(first, first))
    second = mesh.set_image("registry.local/app:v2")
    wait_for("canary at 30", lambda: mesh.vs()["http"] == [STATIC, subset_split(30)])
    start = objects(mesh)
    with History(mesh) as history:
        time.sleep(0.5)  # both watches established
        mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 1)})
        wait_for("subsets on the new revision", lambda: subsets(mesh) == pinned(second, second))
        wait_for("weights back", lambda: mesh.vs()["http"] == [STATIC, subset_split(0)])
        time.sleep(0.5)  # the last events delivered
    shares = [share.get(first, 0) for share in history.shares(start)]
    assert shares, "no write was seen"
    assert max(shares) <= 70, shares
    assert shares[-1] == 0, shares


def test_subsets_without_services_take_a_superseded_canarys_traffic_before_relabelling(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """A new revision while the canary has 30%: the weight goes to 0 before the canary
    subset selects the new revision (relabelling first would send 30% to pods that are
    not Ready yet); the new canary then gets its 30%."""
    subset_world(mesh)
    mesh.create(serviceless_rollout([{"setWeight": 30}, {"pause": {}}]))
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    first = mesh.status()["stableRevision"]
    mesh.set_image("registry.local/app:v2")
    wait_for("canary at 30", lambda: mesh.vs()["http"] == [STATIC, subset_split(30)])
    start = objects(mesh)
    with History(mesh) as history:
        time.sleep(0.5)  # both watches established
        third = mesh.set_image("registry.local/app:v3")
        wait_for("third canary pinned", lambda: subsets(mesh) == pinned(first, third))
        wait_for("third at 30", lambda: mesh.vs()["http"] == [STATIC, subset_split(30)])
        time.sleep(0.5)  # the last events delivered
    shares = [share.get(third, 0) for share in history.shares(start)]
    pinned_at = next(
        i
        for i, (_, plural, obj) in enumerate(sorted(history.versions, key=lambda v: v[0]))
        if plural == "destinationrules"
        and any(
            (s.get("labels") or {}).get(REVISION_LABEL) == third for s in obj["spec"]["subsets"]
        )
    )
    assert shares[pinned_at] == 0, shares
    assert shares[-1] == 30, shares


def test_subsets_without_services_abort_back_to_the_stable_subset(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """An abort without Services: 100/0 on the subsets, the stable subset still on the
    old revision."""
    subset_world(mesh)
    mesh.create(serviceless_rollout([{"setWeight": 30}, {"pause": {}}]))
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    first = mesh.status()["stableRevision"]
    second = mesh.set_image("registry.local/app:v2")
    wait_for("canary at 30", lambda: mesh.vs()["http"] == [STATIC, subset_split(30)])
    mesh.annotate(**{intents.ABORT: second})
    wait_for("aborted", lambda: mesh.status().get("phase") == "Degraded")
    wait_for("weights back", lambda: mesh.vs()["http"] == [STATIC, subset_split(0)])
    assert subsets(mesh)[0] == pinned(first, second)[0]


TLS_ROUTE = {
    "match": [{"port": 3000, "sniHosts": ["app.example.com"]}],
    "route": [{"destination": {"host": "app-stable", "port": PORT}, "weight": 100}],
}
OTHER_TLS = {
    "match": [{"port": 443, "sniHosts": ["other.example.com"]}],
    "route": [{"destination": {"host": "other", "port": PORT}}],
}


def test_tls_route_weights_move(mesh: Mesh, controller: ControllerProcess) -> None:
    """A VirtualService with only TLS routes (Argo's istio-host-only-tls-split): the
    selected route's weights move at the step and come back at promotion; the other TLS
    route is never touched."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "tls": [OTHER_TLS, TLS_ROUTE]}
    )
    tls = {"port": 3000, "sniHosts": ["app.example.com"]}
    doc = istio_rollout(
        [{"setWeight": 10}, {"pause": {}}], virtualService={"name": "app", "tlsRoutes": [tls]}
    )
    _, second = start(mesh, doc, pause_at=1)
    assert mesh.vs() == {
        "hosts": ["app.example.com"],
        "tls": [OTHER_TLS, {**TLS_ROUTE, "route": [stable(90), canary(10)]}],
    }
    mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 1)})
    wait_for("promoted", lambda: mesh.status().get("stableRevision") == second)
    wait_for(
        "tls back on stable",
        lambda: mesh.vs()["tls"] == [OTHER_TLS, {**TLS_ROUTE, "route": [stable(100), canary(0)]}],
    )


MIRROR = {
    "setMirrorRoute": {
        "name": "mirror-route",
        "percentage": 50,
        "match": [{"method": {"exact": "POST"}, "path": {"prefix": "/color"}}],
    }
}


def mirror_rollout() -> dict[str, Any]:
    """Argo's istio-mirror example, shortened: 20%, the mirror route, a pause."""
    doc = istio_rollout([{"setWeight": 20}, MIRROR, {"pause": {}}])
    routing = doc["spec"]["strategy"]["canary"]["trafficRouting"]
    routing["managedRoutes"] = [{"name": "mirror-route"}]
    routing["istio"]["virtualService"]["routes"] = ["primary"]
    return doc


def mirror_route(weight: int) -> dict[str, Any]:
    """The mirror route at the pause, its split at ``weight``."""
    return {
        "name": "stepwise-mirror-route",
        "match": [{"method": {"exact": "POST"}, "uri": {"prefix": "/color"}}],
        "route": [stable(100 - weight), canary(weight)],
        "mirror": {"host": "app-canary", "port": PORT},
        "mirrorPercentage": {"value": 50},
    }


def start_mirrored(mesh: Mesh) -> str:
    """The mirror Rollout paused at its last step; the canary revision."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    _, second = start(mesh, mirror_rollout())
    assert mesh.vs()["http"] == [
        STATIC,
        mirror_route(20),
        {**PRIMARY, "route": [stable(80), canary(20)]},
    ]
    return second


def test_mirror_route_at_its_step_and_gone_after_promotion(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """The mirror route appears at its step (mirror to the canary, the split kept) and
    is gone after promotion."""
    second = start_mirrored(mesh)
    mesh.annotate(**{intents.PROMOTE: intents.promote_value(second, 2)})
    wait_for("promoted", lambda: mesh.status().get("stableRevision") == second)
    wait_for("mirror route gone", lambda: len(mesh.vs()["http"]) == 2)
    assert mesh.vs()["http"] == [STATIC, {**PRIMARY, "route": [stable(100), canary(0)]}]


def test_mirror_route_gone_after_an_abort(mesh: Mesh, controller: ControllerProcess) -> None:
    """An abort removes the mirror route with the weight."""
    second = start_mirrored(mesh)
    mesh.annotate(**{intents.ABORT: second})
    wait_for("aborted", lambda: mesh.status().get("phase") == "Degraded")
    wait_for("mirror route gone", lambda: len(mesh.vs()["http"]) == 2)
    assert mesh.vs()["http"] == [STATIC, {**PRIMARY, "route": [stable(100), canary(0)]}]


ARGO_SHAPES = (
    "examples__istio__istio-subset-split.yaml",
    "test__e2e__istio__istio-subset-split.yaml",
    "test__e2e__istio__istio-subset-split-single-route.yaml",
    "test__e2e__istio__istio-host-http-tls-split.yaml",
    "test__e2e__istio__istio-host-only-tls-split.yaml",
    "examples__istio__istio-mirror.yaml",
    "test__e2e__mirror-route__istio-mirror-host.yaml",
    "test__e2e__header-routing__istio-hr-host.yaml",
)


@pytest.mark.parametrize("fixture", ARGO_SHAPES)
def test_argo_istio_shapes_pass_lint_and_the_server(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, fixture: str
) -> None:
    """Argo Rollouts' Istio manifests of these shapes, with only the apiVersion changed,
    pass ``validate_document`` and a server-side dry run."""
    text = convert((ARGO_CORPUS / fixture).read_text())
    rollouts = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Rollout"]
    assert rollouts
    for doc in rollouts:
        assert validate_document(doc) == []
        assert server_accepts(api_client, namespace, doc)


def shape_doc(
    steps: list[dict[str, Any]], routing: dict[str, Any], **canary: Any
) -> dict[str, Any]:
    """A Rollout document with these steps and routing."""
    return rollout_doc("web", steps=steps, trafficRouting=routing, **canary)


SERVICES = {"stableService": "web-stable", "canaryService": "web-canary"}
VS_ONLY = {"istio": {"virtualService": {"name": "vs", "routes": ["primary"]}}}
BY_SUBSET = {"istio": {**VS_ONLY["istio"], "destinationRule": SUBSET_ROUTING}}
SHAPE_CASES = [
    pytest.param(
        shape_doc([MIRROR], {**VS_ONLY, "managedRoutes": [{"name": "mirror-route"}]}, **SERVICES),
        True,
        id="mirror-listed",
    ),
    pytest.param(
        shape_doc([MIRROR], {**VS_ONLY, "managedRoutes": [{"name": "x"}]}, **SERVICES),
        False,
        id="mirror-not-listed",
    ),
    pytest.param(
        shape_doc(
            [{"setHeaderRoute": {"name": "h"}}],
            {**VS_ONLY, "managedRoutes": [{"name": "x"}]},
            **SERVICES,
        ),
        False,
        id="header-not-listed",
    ),
    pytest.param(
        shape_doc([MIRROR], {"gatewayAPI": {"httpRoute": "web"}}, **SERVICES),
        False,
        id="mirror-not-istio",
    ),
    pytest.param(
        shape_doc([{**MIRROR, "pause": {}}], VS_ONLY, **SERVICES), False, id="mirror-and-pause"
    ),
    pytest.param(
        shape_doc(
            [MIRROR], {**VS_ONLY, "managedRoutes": [{"name": "a"}, {"name": "a"}]}, **SERVICES
        ),
        False,
        id="managed-twice",
    ),
    pytest.param(shape_doc([{"setWeight": 5}], BY_SUBSET), True, id="subset-no-services"),
    pytest.param(shape_doc([{"setWeight": 5}], VS_ONLY), False, id="host-no-services"),
    pytest.param(
        shape_doc([{"setWeight": 5}], {"smi": {}}, stableService="web-stable"),
        False,
        id="smi-one-service",
    ),
    pytest.param(
        shape_doc(
            [{"setWeight": 5}],
            {"istio": {"virtualService": {"name": "vs", "tlsRoutes": [{"port": 70000}]}}},
            **SERVICES,
        ),
        False,
        id="tls-port-out-of-range",
    ),
]


@pytest.mark.parametrize(("doc", "valid"), SHAPE_CASES)
def test_shape_rules_lint_and_server_agree(
    api_client: client.ApiClient,
    stepwise_crds: None,
    namespace: str,
    doc: dict[str, Any],
    valid: bool,
) -> None:
    """The new rules (services optional by subset, setMirrorRoute, managedRoutes, TLS
    route ports) refuse the same documents on the server (CEL, schema) as in lint."""
    assert (validate_document(doc) == []) is valid, validate_document(doc)
    assert server_accepts(api_client, namespace, doc) is valid


# -- weighted experiment templates -----------------------------------------------------

EXPERIMENT_STEPS = [
    {"setWeight": 20},
    {
        "experiment": {
            "templates": [
                {
                    "name": "baseline",
                    "specRef": "stable",
                    "weight": 5,
                    "service": {"name": "exp-baseline"},
                },
                {
                    "name": "canary",
                    "specRef": "canary",
                    "weight": 10,
                    "service": {"name": "exp-canary"},
                },
            ],
        }
    },
    {"pause": {}},
]


def _route_weights(mesh: Mesh) -> dict[str, int]:
    """The primary route's destination weights by host."""
    primary = next(r for r in mesh.vs()["http"] if r.get("name") == "primary")
    return {d["destination"]["host"]: d.get("weight", 0) for d in primary["route"]}


def test_a_weighted_experiment_gets_destinations_and_deletion_takes_them_out(
    mesh: Mesh, controller: ControllerProcess
) -> None:
    """Host mode: while the experiment runs the primary route sends 65 to stable, 20 to
    the canary and 5 and 10 to the experiment Services (destinations by host, stored by
    the API server); deleting the Rollout mid-experiment leaves the route 100/0 with no
    experiment destination (the finalizer takes them out with the canary's weight), the
    other route untouched."""
    mesh.create_istio(
        "virtualservices", "app", {"hosts": ["app.example.com"], "http": [STATIC, PRIMARY]}
    )
    mesh.create(istio_rollout(EXPERIMENT_STEPS))
    wait_for("healthy", lambda: mesh.status().get("phase") == "Healthy")
    mesh.set_image("registry.local/app:v2")
    wait_for("experiment destinations", lambda: len(_route_weights(mesh)) == 4, 60)
    assert _route_weights(mesh) == {
        "app-stable": 65,
        "app-canary": 20,
        "exp-baseline": 5,
        "exp-canary": 10,
    }
    # The pass writes the route before the status that records the phase it decided.
    wait_for("experiment Running", lambda: mesh.status()["experiment"]["phase"] == "Running", 10)
    assert mesh.status()["canaryWeight"] == 20
    assert mesh.vs()["http"][0] == STATIC
    mesh.delete()
    wait_for("rollout gone", lambda: mesh.get() is None)
    assert mesh.vs() == {
        "hosts": ["app.example.com"],
        "http": [STATIC, {**PRIMARY, "route": [stable(100), canary(0)]}],
    }
