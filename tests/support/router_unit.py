"""For the routers' unit tests: routed Rollouts, and builders of router objects as the
API server returns them (HTTPRoutes, TrafficSplits, Istio destinations and
DestinationRule subsets)."""

from __future__ import annotations

from typing import Any

from controller.adapters.kube import REVISION_LABEL, owner_reference
from controller.adapters.traffic import gatewayapi, smi
from controller.api.rollout import Rollout
from tests.support.manifests import rollout as rollout_doc

NS = "shop"
"""The namespace of every object built here."""
UID = "0b7d-uid"
"""The UID of every Rollout built here (which controls the TrafficSplit)."""


def assert_reads(got: tuple[int, str | None], weight: int, problem: str | None) -> None:
    """``got`` (a router's ``read_weight``) is ``weight``, with no problem when
    ``problem`` is None, else with a problem that says ``problem``."""
    got_weight, got_problem = got
    assert got_weight == weight
    if problem is None:
        assert got_problem is None
    else:
        assert got_problem is not None
        assert problem in got_problem


def routed_rollout(routing: dict[str, Any], name: str = "app", **status: Any) -> Rollout:
    """Rollout ``name`` (in :data:`NS`, UID :data:`UID`) with Services ``<name>-stable``
    and ``<name>-canary``, routing with ``routing`` (``trafficRouting``), and this
    ``status``."""
    doc = rollout_doc(
        name,
        stableService=f"{name}-stable",
        canaryService=f"{name}-canary",
        trafficRouting=routing,
    )
    doc["metadata"].update(namespace=NS, uid=UID)
    doc["status"] = status
    return Rollout.model_validate(doc)


# -- Gateway API -----------------------------------------------------------------------


def ref(name: str, weight: int | None = None, port: int = 80, **extra: Any) -> dict[str, Any]:
    """A backendRef to a Service (as the API server stores it, unless weight is None)."""
    out: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": port, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def rule(*refs: dict[str, Any], name: str | None = None, path: str = "/") -> dict[str, Any]:
    """A rule with one PathPrefix match."""
    out: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": path}}],
        "backendRefs": list(refs),
    }
    if name is not None:
        out["name"] = name
    return out


def route(*rules: dict[str, Any], version: str = "7") -> dict[str, Any]:
    """An HTTPRoute named app."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "app", "namespace": NS, "resourceVersion": version},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": list(rules)},
    }


GATEWAY = gatewayapi.Target(NS, "app-stable", "app-canary", "app")
"""HTTPRoute app, every rule to the stable Service managed."""

# -- SMI -------------------------------------------------------------------------------

OWNER = owner_reference({"metadata": {"name": "app", "uid": UID}})
TRAFFIC_SPLIT = smi.Target(
    NS, "app-stable", "app-canary", name="app", root="app-stable", owner_uid=UID
)
"""TrafficSplit app of Rollout app, splitting the stable Service."""


def split(
    *backends: tuple[str, int],
    service: str = "app-stable",
    owner: dict[str, Any] | None = OWNER,
    version: str = "5",
) -> dict[str, Any]:
    """A stored TrafficSplit named app."""
    meta: dict[str, Any] = {"name": "app", "namespace": NS, "resourceVersion": version}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": meta,
        "spec": {
            "service": service,
            "backends": [{"service": s, "weight": w} for s, w in backends],
        },
    }


# -- Istio -----------------------------------------------------------------------------


def dest(host: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    """A VirtualService route destination."""
    out: dict[str, Any] = {"destination": {"host": host, **extra}}
    if weight is not None:
        out["weight"] = weight
    return out


def subset(name: str, revision: str | None) -> dict[str, Any]:
    """A DestinationRule subset of the checkout pods, pinned to ``revision`` (None: not
    pinned)."""
    labels = {"app": "checkout"}
    if revision is not None:
        labels[REVISION_LABEL] = revision
    return {"name": name, "labels": labels}
