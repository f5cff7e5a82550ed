"""AnalysisTemplates on the real API server, and the controller process that measures
them against a Prometheus, for the integration tests of analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localcluster import LocalPrometheus
from localcluster.controller import ControllerProcess
from tests.support.cluster import Cluster


def template_doc(
    name: str,
    *metrics: dict[str, Any],
    args: list[dict[str, Any]] | None = None,
    cluster: bool = False,
) -> dict[str, Any]:
    """An AnalysisTemplate (a ClusterAnalysisTemplate if ``cluster``) with these metrics
    and, when given, these args."""
    spec: dict[str, Any] = {} if args is None else {"args": args}
    spec["metrics"] = list(metrics)
    return {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_template(kube: Cluster, doc: dict[str, Any]) -> None:
    """Create the AnalysisTemplate in the cluster's namespace."""
    kube.custom.create_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "analysistemplates", doc
    )


def measuring_controller(
    kubeconfig: Path, log_dir: Path, namespace: str, prometheus: LocalPrometheus
) -> ControllerProcess:
    """The controller for one namespace, with ``prometheus`` as its default provider
    (not started)."""
    return ControllerProcess(
        kubeconfig,
        log_dir,
        namespaces=[namespace],
        extra=[f"--prometheus-address={prometheus.url}"],
    )
