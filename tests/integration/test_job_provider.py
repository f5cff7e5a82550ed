"""The ``job`` analysis provider through the whole controller, on the local cluster: the
real kube-controller-manager's Job controller runs the Jobs, whose pods kwok ends with
the exit code their template asks for (``stepwise.dev/exit-code``, see
hack/cluster/kwok-stages.yaml). A Job that completes promotes the canary and is deleted
once its verdict is recorded; a Job that fails aborts it, the abort naming the Job, its
reason and the pod's exit code and message, and the aborted run's other, still running
Job is deleted; a controller killed mid-Job and started again re-attaches to the Job
instead of running a second one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster.controller import ControllerProcess
from tests.support.analysis import create_template, template_doc
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import pod_spec
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

METRIC_LABEL = "stepwise.dev/metric"


def job_metric(
    name: str,
    *,
    exit_code: str | None = "0",
    run_for: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """A job metric whose pod (on the fake node) exits with ``exit_code`` after
    ``run_for`` (with no exit code it runs until deleted); the image tag and the target
    are arguments."""
    annotations: dict[str, str] = {}
    if exit_code is not None:
        annotations["stepwise.dev/exit-code"] = exit_code
    if run_for is not None:
        annotations["stepwise.dev/run-for"] = run_for
    if message is not None:
        annotations["stepwise.dev/exit-message"] = message
    pod = pod_spec("registry.local/smoke:{{args.tag}}")
    pod["containers"][0]["args"] = ["--target", "http://{{args.host}}/healthz"]
    pod["restartPolicy"] = "Never"
    return {
        "name": name,
        "provider": {
            "job": {
                "metadata": {"labels": {"team": "shop"}},
                "spec": {
                    "backoffLimit": 0,
                    "template": {"metadata": {"annotations": annotations}, "spec": pod},
                },
            }
        },
    }


def analysed(name: str = "web") -> dict[str, Any]:
    """A Rollout whose canary gets 50% of the replicas, then runs the ``smoke``
    template's analysis with the host and tag arguments."""
    analysis = {
        "templates": [{"templateName": "smoke"}],
        "args": [{"name": "host", "value": "web-canary"}, {"name": "tag", "value": "1.0"}],
    }
    doc = rollout_doc(name, replicas=2, steps=[{"setWeight": 50}, {"analysis": analysis}])
    doc["spec"]["strategy"]["canary"]["scaleDownDelaySeconds"] = 0
    return doc


def jobs_of(kube: Cluster, batch: client.BatchV1Api, metric: str) -> list[client.V1Job]:
    """The Jobs of a metric in the test's namespace (not being deleted)."""
    found = batch.list_namespaced_job(kube.ns, label_selector=f"{METRIC_LABEL}={metric}").items
    return [j for j in found if j.metadata.deletion_timestamp is None]


def promoted(kube: Cluster, revision: str) -> bool:
    """Whether ``revision`` is the stable one and the Rollout Healthy."""
    s = kube.status("web")
    return s.get("stableRevision") == revision and s.get("phase") == "Healthy"


def start_canary(kube: Cluster) -> str:
    """Create the Rollout, wait until v1 is Healthy, roll out v2; returns its revision."""
    kube.create(analysed())
    wait_for("v1 healthy", lambda: kube.healthy("web"), 30)
    return kube.set_image("web", "registry.local/app:v2")


@pytest.fixture
def batch(api_client: client.ApiClient) -> client.BatchV1Api:
    """The batch/v1 API (admin)."""
    return client.BatchV1Api(api_client)


def test_a_job_that_completes_promotes_the_canary(
    kube: Cluster, batch: client.BatchV1Api, controller: ControllerProcess
) -> None:
    """The step's Job is created from the template (arguments filled in, Stepwise's
    labels, owned by the Rollout), completes, the canary is promoted, and the Job is
    deleted once its verdict is recorded."""
    create_template(
        kube, template_doc("smoke", job_metric("smoke"), args=[{"name": "host"}, {"name": "tag"}])
    )
    canary = start_canary(kube)
    job = wait_for("the Job", lambda: jobs_of(kube, batch, "smoke"), 30)[0]
    meta, container = job.metadata, job.spec.template.spec.containers[0]
    assert meta.name.startswith(f"web-{canary}-step-1-smoke-0-")
    assert meta.labels["stepwise.dev/rollout"] == "web"
    assert meta.labels["stepwise.dev/analysis-run"] == "step-1"
    assert meta.labels["team"] == "shop"
    assert meta.annotations["stepwise.dev/revision"] == canary
    owner = meta.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Rollout", "web", True)
    assert container.image == "registry.local/smoke:1.0"
    assert container.args == ["--target", "http://web-canary/healthz"]
    assert job.spec.backoff_limit == 0
    wait_for("v2 promoted", lambda: promoted(kube, canary), 45)
    wait_for("the finished Job deleted", lambda: not jobs_of(kube, batch, "smoke"), 20)
    finished = [e for e in controller.logs() if e.get("event") == "job finished"]
    assert [(e["job"], e["phase"]) for e in finished] == [(meta.name, "Successful")]


def test_a_job_that_fails_aborts_the_canary_naming_the_job(
    kube: Cluster, batch: client.BatchV1Api, controller: ControllerProcess
) -> None:
    """The smoke Job's pod exits 1: the canary is aborted, and the abort (status and
    event) names the Job, BackoffLimitExceeded, the exit code and the pod's message. The
    other metric's Job, still running, is deleted with its run; the failed Job is kept
    for its logs."""
    failing = job_metric("smoke", exit_code="1", message="GET /healthz: 503")
    endless = job_metric("load", exit_code=None)
    create_template(
        kube, template_doc("smoke", failing, endless, args=[{"name": "host"}, {"name": "tag"}])
    )
    canary = start_canary(kube)
    load = wait_for("the load Job", lambda: jobs_of(kube, batch, "load"), 30)[0]
    wait_for(
        "aborted",
        lambda: (kube.status("web").get("abort") or {}).get("reason") == "AnalysisFailed",
        45,
    )
    smoke = jobs_of(kube, batch, "smoke")
    assert len(smoke) == 1
    name = smoke[0].metadata.name
    message = kube.status("web")["abort"]["message"]
    assert f"job {name} failed: BackoffLimitExceeded: pod {name}-" in message
    assert "container app: exit code 1: GET /healthz: 503" in message
    events = kube.event_messages("web", "Aborted")
    assert any(f"job {name} failed: BackoffLimitExceeded" in m for m in events), events
    assert kube.status("web").get("stableRevision") != canary

    def load_gone() -> bool:
        try:
            got = batch.read_namespaced_job(load.metadata.name, kube.ns)
        except client.exceptions.ApiException as exc:
            return bool(exc.status == 404)
        return got.metadata.deletion_timestamp is not None

    wait_for("the aborted run's running Job deleted", load_gone, 20)
    assert [j.metadata.name for j in jobs_of(kube, batch, "smoke")] == [name]


def test_a_restarted_controller_attaches_to_the_running_job(
    kube: Cluster, batch: client.BatchV1Api, kubeconfig: Path, tmp_path: Path, namespace: str
) -> None:
    """The controller is killed while the Job runs; the next one finds the Job by its
    name and waits for it: one Job in all, and the canary is promoted on its verdict."""
    create_template(
        kube,
        template_doc(
            "smoke", job_metric("smoke", run_for="12s"), args=[{"name": "host"}, {"name": "tag"}]
        ),
    )
    first = ControllerProcess(kubeconfig, tmp_path, name="first", namespaces=[namespace])
    second = ControllerProcess(kubeconfig, tmp_path, name="second", namespaces=[namespace])
    first.start()
    try:
        canary = start_canary(kube)
        job = wait_for("the Job", lambda: jobs_of(kube, batch, "smoke"), 30)[0]
        first.sigkill()
        second.start()
        wait_for("v2 promoted", lambda: promoted(kube, canary), 45)
    finally:
        first.stop()
        second.stop()
    uid, name = job.metadata.uid, job.metadata.name
    created = [e for e in first.logs() if e.get("event") == "job created"]
    assert [(e["job"], e["uid"]) for e in created] == [(name, uid)]
    log = second.logs()
    assert not [e for e in log if e.get("event") == "job created"]
    attached = [e for e in log if e.get("event") == "job attached"]
    assert [(e["job"], e["uid"]) for e in attached] == [(name, uid)]
    finished = [e for e in log if e.get("event") == "job finished"]
    assert [(e["job"], e["phase"]) for e in finished] == [(name, "Successful")]
