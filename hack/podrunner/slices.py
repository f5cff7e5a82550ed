"""EndpointSlices for Services whose pods the runner serves.

The API server refuses loopback addresses in IPv4 EndpointSlices ("may not be in the
loopback range"), so the controller manager's EndpointSlice controller cannot publish
pods on 127.1.x.y: it retries and logs the refusal. The runner publishes them instead,
as slices of address type FQDN whose addresses are the pods' dotted quads (a consumer
such as Traefik joins address and port without looking at the type; the API server
answers such a write with a deprecation warning). They carry the labels a consumer
selects slices by (``kubernetes.io/service-name``) and the runner's own
``endpointslice.kubernetes.io/managed-by``, so the controller manager leaves them alone,
and an owner reference to the Service, so they go with it.

Only pods that opted in (``stepwise.dev/serve``) are listed, with the conditions the
controller manager would give them: ``ready`` when the pod is Ready and not being
deleted (or the Service publishes not-ready addresses), ``serving`` when Ready,
``terminating`` while being deleted. ``ready_lag`` holds a pod's endpoint un-ready for
that many seconds after the pod became Ready, like a slow EndpointSlice controller (a
test's way to open the gap between pod readiness and the data plane). Pods whose ports
resolve differently (a named ``targetPort`` that only some pods declare) go into separate
slices, one per port set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from podrunner.spec import is_ready, meta, opted_in

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "podrunner.stepwise.dev"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Key = tuple[str, str]
"""(namespace, name)"""


def desired_slices(
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
    *,
    ready_lag: float = 0.0,
    now: dt.datetime | None = None,
) -> dict[Key, dict[str, Any]]:
    """The slices that should exist, by (namespace, name), at ``now`` (default: the
    current time; it matters only with a ``ready_lag``)."""
    at = now or dt.datetime.now(dt.UTC)
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        if opted_in(pod) and _has_address(pod):
            by_namespace.setdefault(meta(pod).get("namespace", ""), []).append(pod)
    out: dict[Key, dict[str, Any]] = {}
    for svc in services:
        namespace = meta(svc).get("namespace", "")
        selector = (svc.get("spec") or {}).get("selector") or {}
        if not selector or namespace not in by_namespace:
            continue
        groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for pod in by_namespace[namespace]:
            labels = meta(pod).get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            ports = _endpoint_ports(svc, pod)
            if not ports:
                continue
            digest = hashlib.sha256(json.dumps(ports, sort_keys=True).encode()).hexdigest()
            endpoint = _endpoint(svc, pod, _lagging(pod, ready_lag, at))
            groups.setdefault(digest[:8], (ports, []))[1].append(endpoint)
        for digest, (ports, endpoints) in sorted(groups.items()):
            name = f"{meta(svc)['name'][:50]}-podrunner-{digest}"
            endpoints.sort(key=lambda e: str(e["targetRef"]["name"]))
            out[(namespace, name)] = _slice(svc, name, ports, endpoints)
    return out


def _has_address(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and status.get("phase") not in ("Succeeded", "Failed")


def _endpoint_ports(svc: dict[str, Any], pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The Service's ports resolved against the pod (a named targetPort must exist)."""
    named: dict[str, tuple[int, str]] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name"):
                named[port["name"]] = (port["containerPort"], port.get("protocol", "TCP"))
    out = []
    for port in (svc.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        protocol = port.get("protocol", "TCP")
        if isinstance(target, str):
            if target not in named or named[target][1] != protocol:
                continue
            number = named[target][0]
        else:
            number = int(target)
        out.append({"name": port.get("name", ""), "port": number, "protocol": protocol})
    return out


def _lagging(pod: dict[str, Any], lag: float, now: dt.datetime) -> bool:
    """The pod became Ready less than ``lag`` seconds before ``now``."""
    if lag <= 0:
        return False
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("lastTransitionTime"):
            since = dt.datetime.fromisoformat(condition["lastTransitionTime"])
            return (now - since).total_seconds() < lag
    return False


def _endpoint(svc: dict[str, Any], pod: dict[str, Any], lagging: bool) -> dict[str, Any]:
    m = meta(pod)
    ready = is_ready(pod) and not lagging
    terminating = bool(m.get("deletionTimestamp"))
    publish_not_ready = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    endpoint: dict[str, Any] = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {
            "ready": publish_not_ready or (ready and not terminating),
            "serving": publish_not_ready or ready,
            "terminating": terminating,
        },
        "targetRef": {
            "kind": "Pod",
            "namespace": m.get("namespace", ""),
            "name": m.get("name", ""),
            "uid": m.get("uid", ""),
        },
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        endpoint["nodeName"] = node
    return endpoint


def _slice(
    svc: dict[str, Any], name: str, ports: list[dict[str, Any]], endpoints: list[dict[str, Any]]
) -> dict[str, Any]:
    m = meta(svc)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": m["namespace"],
            "labels": {SERVICE_NAME_LABEL: m["name"], MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Service", "name": m["name"], "uid": m["uid"]}
            ],
        },
        "addressType": "FQDN",
        "endpoints": endpoints,
        "ports": ports,
    }
