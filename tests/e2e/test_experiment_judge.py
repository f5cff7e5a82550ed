"""An experiment step's fresh baseline judged against the canary, end to end: pods that
serve behind Traefik, a Prometheus that discovers them, the controller process, and
requests through the Gateway.

The Rollout splits traffic by replicas (no router), so the app's Service reaches every
pod: the stable ones, and the experiment's baseline (from the stable template) and
canary (from the new template), one pod each, started together. The judge compares the
two experiment pods only, selected by their pod-template hashes, which the experiment
passes as arguments (``{{templates.<name>.podTemplateHash}}``): equal in size and age,
with the same mix of requests, unlike the long-lived stable. A healthy release passes
the experiment and is promoted; a release failing 30% of its requests is failed by the
judge and rolled back, and the experiment's pods go."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from demodriver.client import GatewayLoad
from localcluster.controller import ControllerProcess
from localcluster.dataplane import DataPlane, served_pod_template
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_manifest
from tests.support.served import GROUP, VERSION, ServedWeb

pytestmark = pytest.mark.e2e

EXPERIMENT_LABEL = "stepwise.dev/experiment"


def judge_template(namespace: str) -> dict[str, Any]:
    """Errors of the experiment's canary pod against its baseline pod, by the pod
    label Prometheus carries (``stepwise.dev/revision`` as ``stepwise_dev_revision``)."""

    def counts(arg: str) -> dict[str, str]:
        sel = f'namespace="{namespace}",stepwise_dev_revision="{{{{args.{arg}}}}}"'
        return {
            "requests": f"sum by (pod) (http_requests_total{{{sel}}})",
            "errors": f'sum by (pod) (http_requests_total{{{sel},code=~"5.."}})',
        }

    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "baseline-judge"},
        "spec": {
            "args": [{"name": "baseline-hash"}, {"name": "canary-hash"}],
            "metrics": [
                {
                    "name": "errors-vs-baseline",
                    "interval": "2s",
                    "provider": {
                        "judge": {
                            "minRequests": 50,
                            "canary": counts("canary-hash"),
                            "stable": counts("baseline-hash"),
                        }
                    },
                }
            ],
        },
    }


def template(version: str, error_rate: float = 0.0) -> dict[str, Any]:
    env = {"VERSION": version, "SERVICE": "web", "ERROR_RATE": str(error_rate)}
    return served_pod_template({"app": "web"}, env, "web")


def rollout() -> dict[str, Any]:
    analysis = {
        "name": "judge",
        "templateName": "baseline-judge",
        "args": [
            {"name": "baseline-hash", "value": "{{templates.baseline.podTemplateHash}}"},
            {"name": "canary-hash", "value": "{{templates.canary.podTemplateHash}}"},
        ],
    }
    experiment = {
        "duration": "25s",
        "templates": [
            {"name": "baseline", "specRef": "stable", "replicas": 1},
            {"name": "canary", "specRef": "canary", "replicas": 1},
        ],
        "analyses": [analysis],
    }
    return rollout_manifest(
        "web",
        replicas=2,
        template=template("v1"),
        steps=[{"experiment": experiment}, {"setWeight": 50}],
        scaleDownDelaySeconds=2,
        abortScaleDownDelaySeconds=2,
    )


class Web(ServedWeb):
    """The ``web`` Rollout, its Service and route, in one namespace."""

    def setup(self) -> None:
        self.serve(("web",), "web")
        self.create("analysistemplates", judge_template(self.ns))
        self.create("rollouts", rollout())

    def release(self, version: str, error_rate: float = 0.0) -> None:
        self.replace_container(template(version, error_rate)["spec"]["containers"][0])

    def experiment_sets(self) -> int:
        found = self.apps.list_namespaced_replica_set(self.ns, label_selector=EXPERIMENT_LABEL)
        return len(found.items)

    def judge_run(self) -> dict[str, Any]:
        """The judge metric of the experiment's run (empty before it starts)."""
        for run in self.status().get("analysisRuns") or []:
            for metric in run.get("metrics") or []:
                if metric.get("name") == "errors-vs-baseline":
                    return dict(metric)
        return {}


def test_a_fresh_baseline_passes_a_healthy_canary_and_fails_a_bad_one(
    api_client: client.ApiClient, namespace: str, dataplane: DataPlane, tmp_path: Path
) -> None:
    plane = dataplane
    web = Web(api_client, namespace, plane)
    controller = ControllerProcess(
        plane.traefik.kubeconfig,
        tmp_path,
        namespaces=[namespace],
        extra=[f"--prometheus-address={plane.prometheus.url}", "--workers=2"],
    )
    controller.start()
    try:
        run(web, plane)
    except AssertionError as exc:
        status = web.status()
        shown = {k: status.get(k) for k in ("phase", "message", "waitReason", "experiment")}
        raise AssertionError(f"{exc}\nstatus: {shown}\njudge: {web.judge_run()}") from exc
    finally:
        controller.stop()


def run(web: Web, plane: DataPlane) -> None:
    """The two releases; a failed wait is explained by the caller."""
    if True:
        web.setup()
        wait_for("v1 stable", lambda: web.status().get("phase") == "Healthy", 60)
        with GatewayLoad(plane.url, rps=60) as load:
            wait_for("v1 answering", lambda: load.versions(time.monotonic() - 1).get("v1"), 30)

            v1 = web.status()["stableRevision"]
            web.release("v2")
            v2 = wait_for(
                "v2 started", lambda: (r := web.status().get("canaryRevision")) != v1 and r, 30
            )
            wait_for("the experiment's pods serving", lambda: web.experiment_sets() == 2, 60)
            wait_for("v2 served", lambda: load.versions(time.monotonic() - 2).get("v2"), 60)
            wait_for(
                "v2 promoted",
                lambda: (
                    web.status().get("stableRevision") == v2
                    and web.status().get("phase") == "Healthy"
                ),
                120,
            )
            # The judge read both experiment pods (no blind run): it saw requests on each.
            judged = web.judge_run()
            assert judged.get("phase") != "Failed", judged
            last = json.loads(judged["measurements"][-1]["value"])["last"]
            assert last[0] > 0, judged  # the canary pod's requests in the last interval
            assert last[2] > 0, judged  # the baseline pod's
            assert "abort" not in web.status()
            wait_for("the experiment's pods gone", lambda: web.experiment_sets() == 0, 30)

            web.release("v3", error_rate=0.3)
            v3 = wait_for(
                "v3 started", lambda: (r := web.status().get("canaryRevision")) != v2 and r, 30
            )
            aborted = wait_for("v3 aborted", lambda: web.status().get("abort"), 120)
            assert aborted["revision"] == v3
            assert aborted["reason"] == "AnalysisFailed", aborted
            assert "judge" in aborted["message"], aborted
            assert web.status()["stableRevision"] == v2
            wait_for("the experiment's pods gone", lambda: web.experiment_sets() == 0, 30)
            wait_for(
                "only v2 answers",
                lambda: set(load.versions(time.monotonic() - 2)) == {"v2"},
                60,
            )
