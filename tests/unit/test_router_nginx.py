"""The NGINX router's pure half: the canary Ingress cloned from the stable one, and the
stable and canary Ingresses read into a TrafficState."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from kubernetes import client

from controller.adapters.kube import ROLLOUT_LABEL
from controller.adapters.traffic import nginx
from controller.adapters.traffic.nginx import NginxRouter, Target, World
from controller.api.rollout import HeaderMatch, Rollout
from controller.errors import InvalidSpecError
from tests.support.manifests import rollout as rollout_doc

NS = "shop"
UID = "0b5c1d6e-0000-4000-8000-000000000001"
T = Target(
    NS,
    "checkout-stable",
    "checkout-canary",
    rollout="checkout",
    rollout_uid=UID,
    stable_ingress="web",
)
P = "nginx.ingress.kubernetes.io"


def backend(service: str, port: int = 80) -> dict[str, Any]:
    """An Ingress backend."""
    return {"service": {"name": service, "port": {"number": port}}}


def path(p: str, service: str) -> dict[str, Any]:
    """An Ingress path."""
    return {"path": p, "pathType": "Prefix", "backend": backend(service)}


STABLE: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {
        "name": "web",
        "namespace": NS,
        "resourceVersion": "12",
        "uid": "stable-uid",
        "labels": {"team": "shop"},
        "annotations": {
            f"{P}/proxy-body-size": "8m",
            f"{P}/canary-by-header": "x-old",
            "team.example.com/owner": "shop",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
    },
    "spec": {
        "ingressClassName": "nginx",
        "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
        "defaultBackend": backend("fallback"),
        "rules": [
            {
                "host": "shop.example.com",
                "http": {
                    "paths": [path("/checkout", "checkout-stable"), path("/static", "static")]
                },
            },
            {"host": "static.example.com", "http": {"paths": [path("/", "static")]}},
        ],
    },
    "status": {"loadBalancer": {}},
}


def canary(weight: str | None = "20", total: str | None = "100", **extra: str) -> dict[str, Any]:
    """A canary Ingress owned by the Rollout, with these canary annotations."""
    annotations = {f"{P}/canary": "true", **extra}
    if weight is not None:
        annotations[f"{P}/canary-weight"] = weight
    if total is not None:
        annotations[f"{P}/canary-weight-total"] = total
    return {
        "metadata": {
            "name": "web-checkout-canary",
            "annotations": annotations,
            "ownerReferences": [{"uid": UID, "controller": True}],
        }
    }


def test_canary_ingress_is_the_stable_one_pointed_at_the_canary() -> None:
    """The canary Ingress: the stable paths to the canary, team annotations, owned."""
    assert nginx.canary_ingress(STABLE, T, 20) == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web-checkout-canary",
            "namespace": NS,
            "labels": {ROLLOUT_LABEL: "checkout"},
            "annotations": {
                f"{P}/proxy-body-size": "8m",
                "team.example.com/owner": "shop",
                f"{P}/canary": "true",
                f"{P}/canary-weight": "20",
                f"{P}/canary-weight-total": "100",
            },
            "ownerReferences": [
                {
                    "apiVersion": "stepwise.dev/v1alpha1",
                    "kind": "Rollout",
                    "name": "checkout",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {"paths": [path("/checkout", "checkout-canary")]},
                }
            ],
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
        },
    }


def test_canary_ingress_does_not_change_the_stable_one() -> None:
    """Building the canary never mutates the stable Ingress's dict."""
    before = copy.deepcopy(STABLE)
    nginx.canary_ingress(STABLE, T, 50)
    assert before == STABLE


def test_default_backend_to_the_stable_service_is_cloned() -> None:
    """A default backend to the stable Service becomes one to the canary Service."""
    stable = {"metadata": {}, "spec": {"defaultBackend": backend("checkout-stable", 8080)}}
    out = nginx.canary_ingress(stable, T, 0)
    assert out["spec"] == {"defaultBackend": backend("checkout-canary", 8080)}
    assert out["metadata"]["annotations"][f"{P}/canary-weight"] == "0"


def test_custom_annotation_prefix() -> None:
    """The canary annotations use the configured prefix, and only its canary keys drop."""
    target = dataclasses.replace(T, prefix="ing.example")
    stable = copy.deepcopy(STABLE)
    stable["metadata"]["annotations"]["ing.example/canary-weight"] = "90"
    annotations = nginx.canary_ingress(stable, target, 5)["metadata"]["annotations"]
    assert annotations["ing.example/canary"] == "true"
    assert annotations["ing.example/canary-weight"] == "5"
    assert annotations[f"{P}/canary-by-header"] == "x-old"  # another controller's key


@pytest.mark.parametrize(
    ("stable", "problem"),
    [
        (STABLE, None),
        (None, "stable Ingress web not found in shop"),
        (
            {"metadata": {}, "spec": {"rules": [{"http": {"paths": [path("/", "static")]}}]}},
            "stable Ingress web has no backend for the stable Service checkout-stable",
        ),
        (
            {"metadata": {}, "spec": {}},
            "stable Ingress web has no backend for the stable Service checkout-stable",
        ),
        (
            {"metadata": {"annotations": {f"{P}/canary": "true"}}, "spec": STABLE["spec"]},
            f"stable Ingress web is itself a canary Ingress ({P}/canary: true)",
        ),
        ({"metadata": {}, "spec": {"defaultBackend": backend("checkout-stable")}}, None),
    ],
    ids=["fits", "missing", "no-stable-backend", "empty", "is-a-canary", "default-backend"],
)
def test_stable_problem(stable: dict[str, Any] | None, problem: str | None) -> None:
    """The stable Ingress must exist, be no canary, and send to the stable Service."""
    assert nginx.stable_problem(stable, T) == problem


@pytest.mark.parametrize(
    ("ingress", "weight"),
    [
        (None, 0),
        (canary("20"), 20),
        (canary("0"), 0),
        (canary("20", total=None), 20),
        (canary("250", total="1000"), 25),
        (canary(None), 0),
        ({"metadata": {"annotations": {f"{P}/canary-weight": "30"}}}, 0),
    ],
    ids=["none", "weight", "zero", "default-total", "other-total", "no-weight", "not-a-canary"],
)
def test_canary_weight(ingress: dict[str, Any] | None, weight: int) -> None:
    """The weight is canary-weight over canary-weight-total, 0 without a canary."""
    assert nginx.canary_weight(ingress, T) == weight


def test_read_state_problems() -> None:
    """A foreign Ingress, an unreadable weight, a missing canary Service are problems."""
    foreign = canary()
    foreign["metadata"]["ownerReferences"] = []
    state = nginx.read_state(World(STABLE, foreign), T, fallback_weight=40)
    assert (state.canary_weight, state.problem) == (
        40,
        "Ingress web-checkout-canary exists and is not controlled by Rollout checkout; "
        "Stepwise will not overwrite it",
    )
    state = nginx.read_state(World(STABLE, canary("lots")), T, fallback_weight=40)
    assert state.canary_weight == 40
    assert "unreadable weight" in (state.problem or "")
    state = nginx.read_state(World(STABLE, canary("10"), canary_service_found=False), T)
    assert (state.canary_weight, state.problem) == (10, "canary Service checkout-canary not found")
    state = nginx.read_state(World(None, canary("10")), T)
    assert (state.canary_weight, state.problem) == (10, "stable Ingress web not found in shop")
    assert nginx.read_state(World(STABLE, canary("10")), T).problem is None


def test_header_routes_are_refused() -> None:
    """setHeaderRoute raises a clear InvalidSpecError; removing one has nothing to do."""
    doc = rollout_doc(
        "checkout",
        stableService="checkout-stable",
        canaryService="checkout-canary",
        trafficRouting={"nginx": {"stableIngress": "web"}},
    )
    doc["metadata"].update(namespace=NS, uid=UID)
    with client.ApiClient() as api:
        router = NginxRouter(api, Rollout.model_validate(doc), lambda: None)
        assert router.target == T
        match = (HeaderMatch.model_validate({"headerName": "x", "headerValue": {"exact": "1"}}),)
        with pytest.raises(InvalidSpecError, match=r"not supported with trafficRouting\.nginx"):
            router.set_header_route("beta", match)
        router.remove_header_route("beta")


@pytest.mark.parametrize(
    ("world", "weight", "refused"),
    [
        (World(STABLE), 20, None),
        (World(STABLE, canary("lots")), 20, None),
        (World(None), 0, "stable Ingress web not found in shop"),
        (World(STABLE, canary_service_found=False), 0, None),
        (World(STABLE, canary_service_found=False), 20, "canary Service checkout-canary not found"),
        (
            World(STABLE, {"metadata": {"name": "web-checkout-canary"}}),
            0,
            "Ingress web-checkout-canary is not controlled by Rollout checkout",
        ),
    ],
    ids=[
        "fits",
        "unreadable-own-weight",
        "no-stable",
        "zero-without-canary-service",
        "canary-service-missing",
        "foreign",
    ],
)
def test_refusal(world: World, weight: int, refused: str | None) -> None:
    """Writes need the stable Ingress; only a positive weight needs the canary Service."""
    assert nginx.refusal(world, T, weight) == refused
