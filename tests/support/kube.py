"""Helpers for tests that talk to the API server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


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
                for c in (crd.status.conditions or [])
            ):
                return False
            try:
                custom.list_cluster_custom_object(group, version, plural, limit=1)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        wait_for(f"CRD {name} served", ready)
