"""CustomResourceDefinitions that tests own, so they do not depend on Stepwise's schemas."""

from __future__ import annotations

from typing import Any


def namespaced_crd(
    group: str,
    version: str,
    names: dict[str, str],
    properties: dict[str, Any],
    *,
    status: bool = False,
) -> dict[str, Any]:
    """A namespaced CRD serving one ``version`` of ``names`` (plural, singular, kind) whose
    objects have these top-level ``properties``; ``status`` adds the status subresource."""
    served: dict[str, Any] = {"name": version, "served": True, "storage": True}
    if status:
        served["subresources"] = {"status": {}}
    served["schema"] = {"openAPIV3Schema": {"type": "object", "properties": properties}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names['plural']}.{group}"},
        "spec": {"group": group, "scope": "Namespaced", "names": names, "versions": [served]},
    }
