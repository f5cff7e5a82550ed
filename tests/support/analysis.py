"""AnalysisTemplates on the real API server, and the controller process that measures
them against a Prometheus, for the integration tests of analysis."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from controller.api.analysis import Metric
from controller.api.rollout import Rollout
from controller.core import analysis as an
from controller.runtime.measure import PrometheusMeasurer
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


def measure_until(
    measurer: PrometheusMeasurer, ro: Rollout, m: Metric, phase: str, timeout: float = 30
) -> tuple[str, str | None, str]:
    """Measure ``m`` of step 1 every second until it is ``phase`` (or the time is up);
    the last (phase, value, message)."""
    deadline = time.monotonic() + timeout
    got: tuple[str, str | None, str] = ("", None, "")
    while time.monotonic() < deadline:
        result = measurer.measure(ro, [an.Due("step-1", m, (), ())], dt.datetime.now(dt.UTC))
        taken = result[("step-1", m.name)]
        got = (taken.phase, taken.value, taken.message)
        if taken.phase == phase:
            return got
        time.sleep(1)
    return got
