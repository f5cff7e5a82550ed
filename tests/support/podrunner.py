"""Manifests and probes for served pods (hack/podrunner): pods that opt in to a real
demo-app process on their loopback podIP:containerPort."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from kubernetes import client

from podrunner import SERVE_ANNOTATION
from tests.support.manifests import pod_spec

PORT = 8080
# Pod IPs are reached directly, never through an HTTP proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def served_template(
    labels: dict[str, str], *, env: dict[str, str] | None = None, port: int = PORT
) -> dict[str, Any]:
    """A pod template on the kwok node that the pod runner serves on ``port`` (named
    ``http``) and Prometheus scrapes there; ``env`` configures the demo app."""
    spec = pod_spec()
    spec["containers"][0]["ports"] = [{"name": "http", "containerPort": port}]
    spec["containers"][0]["env"] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    return {
        "metadata": {
            "labels": dict(labels),
            "annotations": {
                SERVE_ANNOTATION: "true",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(port),
            },
        },
        "spec": spec,
    }


def replica_set(
    name: str, labels: dict[str, str], template: dict[str, Any], replicas: int = 2
) -> dict[str, Any]:
    """A ReplicaSet of ``replicas`` pods from ``template`` (whose labels include ``labels``)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    """A Service on port 80 to the pods' port named ``http``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def ready(pod: client.V1Pod) -> bool:
    """The pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET ``url`` directly: (status, body); status 0 when nothing answers."""
    try:
        with _direct.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()
    except OSError:
        return 0, ""
