"""The objects a team writes for a router before a Rollout uses it (HTTPRoutes, Ingresses,
Istio objects) and the Services they send to, as plain dicts."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def http_service(name: str, app: str) -> Obj:
    """A Service ``name`` to the ``http`` port of the pods of ``app``."""
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def http_route(name: str, rules: list[Obj], parent: Obj | None = None, **spec: Any) -> Obj:
    """A Gateway API HTTPRoute attached to ``parent`` (the Gateway ``gw`` by default)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [parent or {"name": "gw"}], **spec, "rules": rules},
    }


def ingress_path(prefix: str, service: str) -> Obj:
    """An Ingress path to port 80 of a Service."""
    return {
        "path": prefix,
        "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"number": 80}}},
    }


def ingress(name: str, rules: list[Obj], annotations: dict[str, str] | None = None) -> Obj:
    """An Ingress of the ``nginx`` class."""
    metadata: Obj = {"name": name}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {"ingressClassName": "nginx", "rules": rules},
    }


def istio_object(kind: str, name: str, spec: Obj) -> Obj:
    """An Istio ``VirtualService`` or ``DestinationRule`` of networking.istio.io/v1."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
