"""Installing CustomResourceDefinitions and waiting until the API server serves them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException


def _wait(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.2)


def install_crds(api_client: client.ApiClient, files: list[Path]) -> None:
    """Server-side apply CRD files and wait until each is established and served."""
    ext = client.ApiextensionsV1Api(api_client)
    names: list[tuple[str, str, str, str]] = []
    for path in files:
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        ext.patch_custom_resource_definition(
            doc["metadata"]["name"],
            doc,
            field_manager="stepwise-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        spec = doc["spec"]
        names.append(
            (
                doc["metadata"]["name"],
                spec["group"],
                spec["versions"][0]["name"],
                spec["names"]["plural"],
            )
        )
    custom = client.CustomObjectsApi(api_client)
    for name, group, version, plural in names:

        def ready(
            name: str = name, group: str = group, version: str = version, plural: str = plural
        ) -> bool:
            crd = ext.read_custom_resource_definition(name)
            if not any(
                c.type == "Established" and c.status == "True"
                for c in ((crd.status.conditions if crd.status else None) or [])
            ):
                return False
            try:
                custom.list_cluster_custom_object(group, version, plural, limit=1)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        _wait(f"CRD {name} served", ready)
