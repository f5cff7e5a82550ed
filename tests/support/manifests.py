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


def rollout(
    name: str = "app",
    *,
    replicas: int = 10,
    image: str = "registry.local/app:v1",
    steps: list[dict[str, Any]] | None = None,
    **canary: Any,
) -> dict[str, Any]:
    """A valid Rollout in replica-ratio mode unless ``canary`` adds routing."""
    return {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(image)},
            "strategy": {
                "canary": {
                    "steps": steps if steps is not None else [{"setWeight": 20}, {"pause": {}}],
                    **canary,
                }
            },
        },
    }


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
