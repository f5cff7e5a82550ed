"""Valid base manifests for tests, as plain dicts a test may copy and break."""

from __future__ import annotations

import copy
from typing import Any

from localcluster import KWOK_NODE_LABEL, KWOK_TAINT


def pod_spec(image: str = "registry.local/app:v1") -> dict[str, Any]:
    """A pod spec that lands on a kwok fake node (and only there)."""
    return {
        "containers": [{"name": "app", "image": image}],
        "nodeSelector": {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1]},
        "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists"}],
    }


def manifest(api_version: str, kind: str, name: str, **spec: Any) -> dict[str, Any]:
    """An object ``name`` with this spec."""
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}


def pods_of(
    name: str, template: dict[str, Any] | None = None, image: str = "registry.local/app:v1"
) -> dict[str, Any]:
    """The selector (app=``name``) and pod template of a workload: ``template``, or one
    container of ``image`` on the fake nodes."""
    return {
        "selector": {"matchLabels": {"app": name}},
        "template": template or {"metadata": {"labels": {"app": name}}, "spec": pod_spec(image)},
    }


def rollout(
    name: str = "app",
    *,
    replicas: int = 10,
    image: str = "registry.local/app:v1",
    steps: list[dict[str, Any]] | None = None,
    template: dict[str, Any] | None = None,
    workload_ref: dict[str, Any] | None = None,
    **canary: Any,
) -> dict[str, Any]:
    """A valid Rollout in replica-ratio mode unless ``canary`` adds routing; its pods are
    those of :func:`pods_of`, or with ``workload_ref`` those of that workload."""
    pods = pods_of(name, template, image) if workload_ref is None else {"workloadRef": workload_ref}
    strategy = {
        "canary": {
            "steps": steps if steps is not None else [{"setWeight": 20}, {"pause": {}}],
            **canary,
        }
    }
    return manifest(
        "stepwise.dev/v1alpha1", "Rollout", name, replicas=replicas, **pods, strategy=strategy
    )


def deployment(name: str, *, replicas: int, template: dict[str, Any]) -> dict[str, Any]:
    """A Deployment of ``template``'s pods, selected by app=``name``."""
    return manifest("apps/v1", "Deployment", name, replicas=replicas, **pods_of(name, template))


def analysis_template(name: str = "success-rate") -> dict[str, Any]:
    """A valid AnalysisTemplate with one Prometheus metric."""
    return {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "args": [{"name": "service"}],
            "metrics": [
                {
                    "name": "success-rate",
                    "interval": "10s",
                    "thresholdRange": {"min": 0.99},
                    "provider": {"prometheus": {"query": "vector(1)"}},
                }
            ],
        },
    }


def deep(doc: dict[str, Any]) -> dict[str, Any]:
    """A deep copy."""
    return copy.deepcopy(doc)
