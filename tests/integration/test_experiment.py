"""The ``experiment`` canary step on the local cluster, and Argo Rollouts' own experiment
manifests as Stepwise manifests.

``tests/fixtures/argo-experiment/`` holds the Argo Rollouts files (at :data:`ARGO_COMMIT`)
with an ``experiment`` step, copied verbatim under a header naming the source; the only
change made at load time is the apiVersion of the Rollout and AnalysisTemplate documents.
Lint (``validate_document``) and a server-side dry run must agree on each: accepted, the
weighted experiments (``templates[].weight``: traffic to an experiment's Services, with
Istio or SMI) included, but for the one routed by AWS ALB, a router Stepwise does not
have, refused naming ``trafficRouting.alb``.

With the controller running (kwok makes the pods Ready): an experiment with a fresh
baseline of stable and a copy of the canary creates both ReplicaSets (owned by the
Rollout, from the stable and the canary pod templates, with pods that the stable
Service does not select), runs them for its duration once they are Ready, then deletes
them and the rollout goes on; an experiment analysis that fails (a Job whose pod exits
1, given the baseline's pod hash as an argument) aborts the rollout and removes the
experiment; and a controller killed mid-experiment is replaced by one that finishes the
same experiment without creating anything again.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import REVISION_LABEL
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.validation import validate_document
from controller.core import experiment as ex
from controller.core.judge import JudgeState
from controller.core.model import TemplateKey
from controller.runtime.measure import PrometheusMeasurer
from localcluster import LocalPrometheus
from localcluster.controller import ControllerProcess
from tests.integration.test_crd_validation import create, named_fields
from tests.integration.test_job_provider import job_metric
from tests.integration.test_lint_server_agreement import server_accepts
from tests.support.analysis import create_template, template_doc
from tests.support.cluster import Cluster
from tests.support.demo import App, judge_counts, start_app
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc
from tests.support.world import step
from tests.unit import test_experiment as unit

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argo-experiment"
ARGO_COMMIT = "9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d"
EXPERIMENT_LABEL = "stepwise.dev/experiment"
WEIGHTED = {
    "examples__traffic-routing-experiment-step__istio-host-split-experiment-step.yaml",
    "examples__traffic-routing-experiment-step__rollout-alb-experiment-step.yaml",
    "examples__traffic-routing-experiment-step__rollout-smi-experiment-step.yaml",
    "test__e2e__istio__istio-host-split-experiment-step.yaml",
    "test__e2e__istio__istio-subset-split-experiment-step.yaml",
    "test__e2e__smi__rollout-smi-experiment.yaml",
}
"""Files whose experiment gives a template a traffic ``weight``."""
ALB = "examples__traffic-routing-experiment-step__rollout-alb-experiment-step.yaml"
"""The one fixture refused: its router is AWS ALB (``trafficRouting.alb``)."""


def stepwise_documents(name: str) -> list[dict[str, Any]]:
    """The Rollout and AnalysisTemplate documents of a fixture, as Stepwise documents."""
    docs = []
    for doc in yaml.safe_load_all((FIXTURES / name).read_text()):
        if doc and doc.get("apiVersion") == "argoproj.io/v1alpha1":
            doc["apiVersion"] = "stepwise.dev/v1alpha1"
            docs.append(doc)
    return docs


FIXTURE_NAMES = sorted(p.name for p in FIXTURES.iterdir() if p.suffix == ".yaml")


def test_every_fixture_names_its_source() -> None:
    """Each fixture is a verbatim copy naming its Argo source at ARGO_COMMIT."""
    assert len(FIXTURE_NAMES) == 10
    for name in FIXTURE_NAMES:
        header = (FIXTURES / name).read_text().splitlines()[0]
        source = name.replace("__", "/")
        assert header.endswith(f"/{ARGO_COMMIT}/{source}"), header


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_argo_experiment_manifests_lint_and_server_agree(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, name: str
) -> None:
    """Argo's experiment manifests are accepted by lint and by the API server, the
    weighted ones (Istio host and subset, SMI) included; the ALB one is refused by both,
    naming its router."""
    docs = stepwise_documents(name)
    assert any(d["kind"] == "Rollout" for d in docs)
    for doc in docs:
        problems = validate_document(doc)
        accepted = server_accepts(api_client, namespace, doc)
        assert accepted == (not problems), problems
        if doc["kind"] == "Rollout" and name in WEIGHTED:
            steps = doc["spec"]["strategy"]["canary"]["steps"]
            assert any(
                "weight" in t
                for s in steps
                if "experiment" in s
                for t in s["experiment"]["templates"]
            )
        if name != ALB or doc["kind"] != "Rollout":
            assert problems == [], problems
            continue
        assert any(p.field.endswith("trafficRouting.alb") for p in problems), problems
        with pytest.raises(ApiException) as refused:
            create(api_client, namespace, {**doc, "metadata": {"name": "weighted"}}, dry_run=True)
        assert "alb" in json.dumps(sorted(named_fields(refused.value.body)))


# -- on the cluster --------------------------------------------------------------------


def experiment_rollout(
    steps: list[dict[str, Any]], *, stable_service: str | None = "web-stable"
) -> dict[str, Any]:
    """The ``web`` Rollout (2 replicas) with ``steps``, pinning its stable Service."""
    doc = rollout_doc("web", replicas=2, steps=steps)
    canary = doc["spec"]["strategy"]["canary"]
    canary["scaleDownDelaySeconds"] = 0
    canary["abortScaleDownDelaySeconds"] = 0
    if stable_service:
        canary["stableService"] = stable_service
    return doc


def baseline_vs_canary(**extra: Any) -> dict[str, Any]:
    """An experiment step: one baseline pod of stable, one canary pod."""
    return {
        "experiment": {
            "templates": [
                {"name": "baseline", "specRef": "stable"},
                {
                    "name": "canary",
                    "specRef": "canary",
                    "metadata": {"labels": {"track": "experiment"}},
                },
            ],
            **extra,
        }
    }


def create_service(kube: Cluster, name: str) -> None:
    """A Service selecting the Rollout's pods (Stepwise pins it to a revision)."""
    kube.core.create_namespaced_service(
        kube.ns,
        {
            "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )


def experiment_sets(kube: Cluster) -> list[client.V1ReplicaSet]:
    """The experiment ReplicaSets of the namespace (not being deleted)."""
    found = kube.apps.list_namespaced_replica_set(kube.ns, label_selector=EXPERIMENT_LABEL).items
    return [rs for rs in found if rs.metadata.deletion_timestamp is None]


def all_ready(kube: Cluster, count: int) -> list[client.V1ReplicaSet] | None:
    """The experiment's ``count`` ReplicaSets once every one has its pods Ready."""
    found = experiment_sets(kube)
    if len(found) != count:
        return None
    if all((rs.status.ready_replicas or 0) >= (rs.spec.replicas or 0) for rs in found):
        return found
    return None


def experiment_status(kube: Cluster) -> dict[str, Any]:
    """``status.experiment`` of the ``web`` Rollout."""
    return kube.status("web").get("experiment") or {}


def start(kube: Cluster, steps: list[dict[str, Any]]) -> tuple[str, str]:
    """Create the Service and the Rollout, wait for v1, roll out v2: (stable, canary)."""
    create_service(kube, "web-stable")
    kube.create(experiment_rollout(steps))
    wait_for("v1 healthy", lambda: kube.healthy("web"), 30)
    stable = kube.status("web")["stableRevision"]
    return stable, kube.set_image("web", "registry.local/app:v2")


def test_experiment_runs_its_sets_for_the_duration_then_removes_them(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """A baseline of stable and a copy of the canary are created (owned by the Rollout,
    from the stable and canary templates), become Ready, are not selected by the stable
    Service, run for the duration, then go, and the rollout is promoted."""
    stable, canary = start(kube, [baseline_vs_canary(duration="8s")])
    sets = wait_for("both experiment ReplicaSets Ready", lambda: all_ready(kube, 2), 45)
    by_template = {rs.metadata.labels[EXPERIMENT_LABEL]: rs for rs in sets}
    assert sorted(by_template) == ["baseline", "canary"]
    status = wait_for(
        "experiment Running",
        lambda: (s := experiment_status(kube)).get("phase") == "Running" and s,
        20,
    )
    hashes = {t["name"]: t["podTemplateHash"] for t in status["templates"]}
    for template, rs in by_template.items():
        owner = rs.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.controller) == ("Rollout", "web", True)
        assert rs.spec.template.metadata.labels[REVISION_LABEL] == hashes[template]
        assert rs.spec.selector.match_labels[REVISION_LABEL] == hashes[template]
    assert set(hashes.values()).isdisjoint({stable, canary})
    images = {t: rs.spec.template.spec.containers[0].image for t, rs in by_template.items()}
    assert images == {"baseline": "registry.local/app:v1", "canary": "registry.local/app:v2"}
    assert by_template["canary"].spec.template.metadata.labels["track"] == "experiment"

    # The stable Service's selector, evaluated by the API server, selects no experiment pod.
    service = kube.core.read_namespaced_service("web-stable", kube.ns)
    assert service.spec.selector[REVISION_LABEL] == stable
    query = ",".join(f"{k}={v}" for k, v in sorted(service.spec.selector.items()))
    selected = kube.core.list_namespaced_pod(kube.ns, label_selector=query).items
    assert selected
    assert not [p for p in selected if EXPERIMENT_LABEL in (p.metadata.labels or {})]
    experiment_pods = kube.core.list_namespaced_pod(kube.ns, label_selector=EXPERIMENT_LABEL)
    assert len(experiment_pods.items) == 2

    wait_for(
        "experiment Successful", lambda: experiment_status(kube).get("phase") == "Successful", 45
    )
    wait_for("experiment ReplicaSets gone", lambda: not experiment_sets(kube), 30)
    running_since = dt.datetime.fromisoformat(status["runningSince"])
    assert dt.datetime.now(dt.UTC) - running_since >= dt.timedelta(seconds=8)
    wait_for(
        "v2 promoted",
        lambda: kube.status("web").get("stableRevision") == canary and kube.healthy("web"),
        45,
    )
    assert kube.event_messages("web", "ExperimentCompleted")


def test_a_failed_experiment_analysis_aborts_and_removes_the_experiment(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """The experiment's analysis (a Job given the baseline's pod hash) fails: the rollout
    aborts, the experiment is Failed and its ReplicaSets are removed; nothing is
    promoted."""
    failing = job_metric("smoke", exit_code="1", message="baseline beats canary")
    create_template(kube, template_doc("smoke", failing, args=[{"name": "host"}, {"name": "tag"}]))
    analysis = {
        "name": "smoke",
        "templateName": "smoke",
        "args": [
            {"name": "host", "value": "{{templates.baseline.podTemplateHash}}"},
            {"name": "tag", "valueFrom": {"podTemplateHashValue": "Latest"}},
        ],
    }
    stable, canary = start(kube, [baseline_vs_canary(duration="1h", analyses=[analysis])])
    wait_for("both experiment ReplicaSets Ready", lambda: all_ready(kube, 2), 45)
    status = kube.aborted_by_analysis("web", 60)
    assert "analysis smoke of the experiment of step 0" in status["abort"]["message"]
    assert status["experiment"]["phase"] == "Failed"
    hashes = {t["name"]: t["podTemplateHash"] for t in status["experiment"]["templates"]}
    wait_for("experiment ReplicaSets removed", lambda: not experiment_sets(kube), 30)
    assert status["stableRevision"] == stable
    jobs = client.BatchV1Api(kube.apps.api_client).list_namespaced_job(kube.ns).items
    args = [j.spec.template.spec.containers[0].args for j in jobs]
    image = [j.spec.template.spec.containers[0].image for j in jobs]
    assert ["--target", f"http://{hashes['baseline']}/healthz"] in args, args
    assert f"registry.local/smoke:{canary}" in image, image
    wait_for("no canary pods", lambda: kube.ready("web", canary)[0] <= 0, 30)
    assert kube.status("web")["stableRevision"] == stable


def test_a_restarted_controller_finishes_the_same_experiment(
    kube: Cluster, kubeconfig: Path, tmp_path: Path, namespace: str, stepwise_crds: None
) -> None:
    """The controller is killed while the experiment runs; the next one continues it
    from the status and the ReplicaSets it finds: nothing is created again, and the
    experiment ends after its duration."""
    first = ControllerProcess(kubeconfig, tmp_path, name="first", namespaces=[namespace])
    second = ControllerProcess(kubeconfig, tmp_path, name="second", namespaces=[namespace])
    first.start()
    try:
        _, canary = start(kube, [baseline_vs_canary(duration="10s"), {"pause": {}}])
        sets = wait_for("experiment Ready", lambda: all_ready(kube, 2), 45)
        wait_for("experiment Running", lambda: experiment_status(kube).get("phase") == "Running")
        before = experiment_status(kube)
        first.sigkill()
        second.start()
        wait_for("experiment ReplicaSets gone", lambda: not experiment_sets(kube), 45)
        wait_for("at the pause step", lambda: kube.status("web").get("currentStepIndex") == 1)
    finally:
        first.stop()
        second.stop()
    after = experiment_status(kube)
    assert after["phase"] == "Successful"
    assert (after["startedAt"], after["runningSince"]) == (
        before["startedAt"],
        before["runningSince"],
    )
    uids = {rs.metadata.uid for rs in sets}
    assert len(uids) == 2
    created = [e for e in second.logs() if e.get("event") == "experiment replicaset created"]
    assert created == []
    deleted = [
        e["replicaset"] for e in second.logs() if e.get("event") == "experiment replicaset deleted"
    ]
    assert set(deleted) == {str(rs.metadata.name) for rs in sets}
    assert kube.status("web")["canaryRevision"] == canary


def test_a_template_service_selects_its_pods_and_deleting_the_rollout_removes_all(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """``service: {name}`` creates a Service (with the pod template's ports) that the API
    server resolves to exactly the template's pods; deleting the Rollout mid-experiment
    removes the experiment's ReplicaSets, pods and Service (they are owned by it)."""
    step = {
        "experiment": {
            "templates": [
                {"name": "baseline", "specRef": "stable"},
                {"name": "preview", "specRef": "canary", "service": {"name": "web-preview"}},
            ]
        }
    }
    doc = experiment_rollout([step], stable_service=None)
    doc["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8080}
    ]
    kube.create(doc)
    wait_for("v1 healthy", lambda: kube.healthy("web"), 30)
    kube.set_image("web", "registry.local/app:v2")
    wait_for("both experiment ReplicaSets Ready", lambda: all_ready(kube, 2), 45)
    service = kube.core.read_namespaced_service("web-preview", kube.ns)
    assert [(p.name, p.port, p.target_port) for p in service.spec.ports] == [("http", 8080, 8080)]
    assert service.metadata.owner_references[0].name == "web"
    query = ",".join(f"{k}={v}" for k, v in sorted(service.spec.selector.items()))
    selected = kube.core.list_namespaced_pod(kube.ns, label_selector=query).items
    assert [p.metadata.labels[EXPERIMENT_LABEL] for p in selected] == ["preview"]
    wait_for(
        "the experiment awaiting promotion",
        lambda: kube.status("web").get("waitReason") == "AwaitingPromotion",
        20,
    )

    kube.custom.delete_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "rollouts", "web"
    )

    def service_gone() -> bool:
        try:
            kube.core.read_namespaced_service("web-preview", kube.ns)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for("experiment ReplicaSets collected", lambda: not experiment_sets(kube), 60)
    wait_for("experiment Service collected", service_gone, 60)
    wait_for(
        "experiment pods gone",
        lambda: (
            not [
                p
                for p in kube.core.list_namespaced_pod(
                    kube.ns, label_selector=EXPERIMENT_LABEL
                ).items
                if p.metadata.deletion_timestamp is None
            ]
        ),
        60,
    )


# -- a judge comparing the canary with the fresh baseline ------------------------------


def judge_template(service: str, address: str) -> AnalysisTemplateSpec:
    """A judge whose queries select the experiment's pods by the hashes given as args
    (the demo app labels its counters with its ``version``)."""
    return AnalysisTemplateSpec.model_validate(
        {
            "args": [{"name": "baseline-hash"}, {"name": "canary-hash"}],
            "metrics": [
                {
                    "name": "errors-vs-baseline",
                    "interval": "1s",
                    "provider": {
                        "judge": {
                            "address": address,
                            "minRequests": 50,
                            "canary": judge_counts(service, "{{args.canary-hash}}"),
                            "stable": judge_counts(service, "{{args.baseline-hash}}"),
                        }
                    },
                }
            ],
        }
    )


def send(app: App, requests: int) -> None:
    """``requests`` GETs to one app over a keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    try:
        for _ in range(requests):
            conn.request("GET", "/")
            conn.getresponse().read()
    finally:
        conn.close()


def test_a_judge_in_an_experiment_fails_a_canary_worse_than_its_baseline(
    prometheus: LocalPrometheus,
) -> None:
    """An experiment's judge analysis, given ``{{templates.baseline.podTemplateHash}}``
    and ``{{templates.canary.podTemplateHash}}``, reads a real Prometheus for exactly the
    baseline's and the canary's processes (labelled with those hashes): a canary failing
    30% of its requests against a clean baseline is failed, the rollout aborts and the
    experiment's ReplicaSets are deleted."""
    service = f"exp-{uuid.uuid4().hex[:6]}"
    args = [
        {"name": "baseline-hash", "value": "{{templates.baseline.podTemplateHash}}"},
        {"name": "canary-hash", "value": "{{templates.canary.podTemplateHash}}"},
    ]
    judge = {"name": "judge", "templateName": "judge", "args": args}
    ro, world = unit.started(
        [unit.experiment(duration="1h", analyses=[judge])], when=dt.datetime.now(dt.UTC)
    )
    world.templates[TemplateKey("judge")] = judge_template(service, prometheus.url)
    exp = ro.status.experiment
    assert exp is not None
    hashes = {t.name: t.pod_template_hash for t in exp.templates}
    apps = {name: start_app(service, hashes[name]) for name in ("baseline", "canary")}
    try:
        apps["canary"].configure(errorRate=0.3)
        for name, app in apps.items():
            prometheus.add_target(f"{service}-{name}", f"127.0.0.1:{app.port}")
        measurer = PrometheusMeasurer(lambda ns, ref: "", default_address=prometheus.url)
        templates: dict[TemplateKey, AnalysisTemplateSpec | str] = dict(world.templates)
        ro, _ = step(ro, world, dt.datetime.now(dt.UTC))  # restart the run on its template
        deadline = time.monotonic() + 90
        while ro.status.abort is None and time.monotonic() < deadline:
            send(apps["baseline"], 100)
            send(apps["canary"], 100)
            time.sleep(1.5)  # a scrape every second
            now = dt.datetime.now(dt.UTC)
            due = ex.due_in(ro, templates, now)
            ro, _ = step(ro, world, now, measurer.measure(ro, due, now))
        assert ro.status.abort is not None, ro.status.message
        assert ro.status.abort.reason == "AnalysisFailed"
        assert "analysis judge of the experiment of step 0" in ro.status.abort.message
        assert ro.status.experiment is not None
        assert ro.status.experiment.phase == "Failed"
        assert world.experiment_sets == {}
        run = next(r for r in ro.status.analysis_runs if r.name == ex.run_name(0, "judge"))
        state = JudgeState.from_text(run.metrics[0].measurements[-1].value)
        assert state is not None
        assert state.last[0] > 0
        assert state.last[1] > 0  # the canary's errors, counted under its hash
        assert state.last[2] > 0
        assert state.last[3] == 0  # the clean baseline's, under its own
    finally:
        for name, app in apps.items():
            app.proc.kill()
            app.proc.wait()
            prometheus.remove_target(f"{service}-{name}")
