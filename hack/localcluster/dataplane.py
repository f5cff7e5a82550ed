"""The real data plane of the demo, the end-to-end test and the benchmarks, in one piece.

- **Traefik** (:class:`~localcluster.traefik.LocalTraefik`): a real Gateway API
  implementation; HTTPRoutes attach to its Gateway (:meth:`DataPlane.parent_ref`) and
  it routes requests on :attr:`DataPlane.url` to the pods of the Services they name, by
  the routes' weights, through the EndpointSlices.
- **Pods that serve** (:class:`~podrunner.PodRunner`): a pod whose template opts in
  (:data:`SERVE_ANNOTATION`) gets a demo-app process on its loopback pod IP and container
  port, configured from the pod's environment; it is Ready only while that process
  answers, and the runner publishes its Service's EndpointSlices.
- **Prometheus** (:class:`~localcluster.prometheus.LocalPrometheus` with pod discovery):
  scrapes the pods that ask for it (``prometheus.io/scrape``), with the ``namespace`` and
  ``pod`` labels and the pod's labels, as an in-cluster install does.

:func:`served_pod_template` gives a Rollout's pod template what it needs for all three.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kubernetes import client, config

from localcluster.cluster import KWOK_NODE_LABEL, KWOK_TAINT, Endpoints
from localcluster.process import Running
from localcluster.prometheus import LocalPrometheus
from localcluster.traefik import LocalTraefik
from podrunner import SERVE_ANNOTATION, PodRunner

PORT = 8080
"""The container port the demo app serves on, named ``http``."""


def served_pod_template(
    labels: dict[str, str], env: dict[str, str], name: str = "app"
) -> dict[str, Any]:
    """A pod template for the kwok nodes that the pod runner serves on :data:`PORT` (with
    ``env`` for the demo app: ``VERSION``, ``ERROR_RATE``, ``LATENCY_MS`` ...) and that
    Prometheus scrapes there."""
    key, value = KWOK_NODE_LABEL
    return {
        "metadata": {
            "labels": dict(labels),
            "annotations": {
                SERVE_ANNOTATION: "true",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(PORT),
            },
        },
        "spec": {
            "containers": [
                {
                    "name": name,
                    "image": f"demo/{name}:{env.get('VERSION', 'v1')}",
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                }
            ],
            "nodeSelector": {key: value},
            "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists"}],
        },
    }


class DataPlane(Running):
    """Traefik, the pod runner for ``namespaces`` and a pod-discovering Prometheus.
    ``endpoint_lag`` delays each pod's ready endpoint by that many seconds after the pod
    is Ready, as a slow EndpointSlice controller would.

    Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        endpoints: Endpoints,
        namespaces: list[str],
        *,
        workdir: Path | None = None,
        scrape_interval: str = "1s",
        endpoint_lag: float = 0.0,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="stepwise-dataplane-"))
        for part in ("traefik", "podrunner", "prometheus"):
            (self.workdir / part).mkdir(parents=True, exist_ok=True)
        self.traefik = LocalTraefik(endpoints.kubeconfig, workdir=self.workdir / "traefik")
        self.runner = PodRunner(
            endpoints.kubeconfig,
            workdir=self.workdir / "podrunner",
            namespaces=namespaces,
            endpoint_lag=endpoint_lag,
        )
        self.prometheus = LocalPrometheus(
            scrape_interval=scrape_interval,
            workdir=self.workdir / "prometheus",
            discover_pods=endpoints,
        )
        self._started: list[Any] = []
        self._kubeconfig = endpoints.kubeconfig

    @property
    def url(self) -> str:
        """Where requests enter: the Gateway's listener."""
        return self.traefik.url

    def parent_ref(self) -> dict[str, Any]:
        """The ``parentRefs`` entry of an HTTPRoute served by this data plane."""
        return self.traefik.parent_ref()

    def start(self) -> DataPlane:
        """Start Prometheus, the pod runner and Traefik (stopping what started if one fails)."""
        for part in (self.prometheus, self.runner, self.traefik):
            try:
                part.start()
            except BaseException:
                self.stop()
                raise
            self._started.append(part)
        return self

    def stop(self) -> None:
        """Stop everything started, the last first."""
        while self._started:
            self._started.pop().stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self, namespace: str) -> str:
        """What the data plane holds for ``namespace``, for a failing test's message: each
        pod's address and readiness, each EndpointSlice's endpoints, and the servers and
        weights Traefik routes to."""
        lines: list[str] = []
        with config.new_client_from_config(config_file=str(self._kubeconfig)) as api:  # type: ignore[no-untyped-call]
            pods = api.sanitize_for_serialization(
                client.CoreV1Api(api).list_namespaced_pod(namespace)
            )
            slices = api.sanitize_for_serialization(
                client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(namespace)
            )
        for pod in pods.get("items") or []:
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
            deleting = " deleting" if meta.get("deletionTimestamp") else ""
            lines.append(f"pod {meta.get('name')} {status.get('podIP')} Ready={ready}{deleting}")
        for item in slices.get("items") or []:
            endpoints = [
                ",".join(e.get("addresses") or [])
                + ("" if (e.get("conditions") or {}).get("ready") else "(not ready)")
                for e in item.get("endpoints") or []
            ]
            meta = item.get("metadata") or {}
            service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
            lines.append(f"slice {meta.get('name')} ({service}): {' '.join(endpoints)}")
        try:
            for service in self.traefik.api("/api/http/services?per_page=10000"):
                if f"-{namespace}-" not in str(service.get("name")):
                    continue
                servers = (service.get("loadBalancer") or {}).get("servers") or []
                weighted = (service.get("weighted") or {}).get("services") or []
                lines.append(
                    f"traefik {service['name']}: "
                    + " ".join(str(s.get("url")) for s in servers)
                    + " ".join(f"{w.get('name')}={w.get('weight')}" for w in weighted)
                    + f" {service.get('serverStatus') or ''}"
                )
        except OSError as exc:
            lines.append(f"traefik API: {exc}")
        return "\n".join(lines)
