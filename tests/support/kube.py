"""Helpers for tests that talk to the API server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from controller.runtime.informer import Informer, scoped
from controller.runtime.metrics import dedicated
from localcluster.crds import install_crds

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"
__all__ = ["CRD_DIR", "config_map_informer", "install_crds", "pod_informer", "wait_for"]

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


def config_map_informer(
    api_client: client.ApiClient, *, namespace: str | None = None, **options: Any
) -> Informer[client.V1ConfigMap]:
    """An informer of ConfigMaps, built like the controller's own informers."""
    own = dedicated(api_client)
    core = client.CoreV1Api(own)
    return Informer[client.V1ConfigMap](
        scoped(core.list_namespaced_config_map, core.list_config_map_for_all_namespaces),
        name="configmaps",
        namespace=namespace,
        owned_client=own,
        **options,
    )


def pod_informer(
    api_client: client.ApiClient, *, namespace: str | None = None, **options: Any
) -> Informer[client.V1Pod]:
    """An informer of Pods, built like the controller's own informers."""
    own = dedicated(api_client)
    core = client.CoreV1Api(own)
    return Informer[client.V1Pod](
        scoped(core.list_namespaced_pod, core.list_pod_for_all_namespaces),
        name="pods",
        namespace=namespace,
        owned_client=own,
        **options,
    )
