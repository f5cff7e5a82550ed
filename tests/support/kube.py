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


def _core_informer(
    api_client: client.ApiClient,
    resource: str,
    name: str,
    namespace: str | None,
    options: dict[str, Any],
) -> Informer[Any]:
    """An informer of a core/v1 ``resource`` (as the client's method names spell it),
    built like the controller's own informers."""
    own = dedicated(api_client)
    core = client.CoreV1Api(own)
    return Informer[Any](
        scoped(
            getattr(core, f"list_namespaced_{resource}"),
            getattr(core, f"list_{resource}_for_all_namespaces"),
        ),
        name=name,
        namespace=namespace,
        owned_client=own,
        **options,
    )


def config_map_informer(
    api_client: client.ApiClient, *, namespace: str | None = None, **options: Any
) -> Informer[client.V1ConfigMap]:
    """An informer of ConfigMaps, built like the controller's own informers."""
    return _core_informer(api_client, "config_map", "configmaps", namespace, options)


def pod_informer(
    api_client: client.ApiClient, *, namespace: str | None = None, **options: Any
) -> Informer[client.V1Pod]:
    """An informer of Pods, built like the controller's own informers."""
    return _core_informer(api_client, "pod", "pods", namespace, options)
