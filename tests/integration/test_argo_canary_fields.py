"""Argo Rollouts' own e2e manifests for canary fields, run through the controller on the
live cluster with only their apiVersion changed (and the pods given kwok's toleration):

* ``ephemeral-labels.yaml``: ``stableMetadata``/``canaryMetadata`` on the pods of each
  role, the canary's pods relabelled as stable when it is promoted;
* ``rollout-rollback-window.yaml`` with ``analysistemplate-sleep-job.yaml``: each release
  runs its steps and a Job analysis whose argument comes from the Rollout
  (``valueFrom.fieldRef``); setting the template back to the previous revision, within
  ``rollbackWindow``, promotes it with no step and no analysis."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client

from controller.adapters.kube import REVISION_LABEL
from controller.api import intents
from localcluster import KWOK_NODE_LABEL, KWOK_TAINT
from localcluster.controller import ControllerProcess
from tests.integration.test_argo_bluegreen_examples import create_object
from tests.integration.test_argo_corpus import loaded
from tests.support.cluster import Cluster
from tests.support.kube import wait_for

pytestmark = pytest.mark.integration


def on_kwok(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template made to run on the local cluster's fake nodes (tainted and
    labelled, which manifests for real clusters do not tolerate); returns its metadata."""
    pod = template["spec"]
    pod["tolerations"] = [{"key": KWOK_TAINT["key"], "operator": "Exists"}]
    pod["nodeSelector"] = {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1]}
    meta: dict[str, Any] = template.setdefault("metadata", {})
    return meta


def apply(api_client: client.ApiClient, kube: Cluster, *fixtures: str) -> None:
    """Create the fixtures' objects on the live cluster. A Job metric's pod exits with
    the template's ``exit-code`` argument after 2 s (the fake node runs no command; see
    hack/cluster/kwok-stages.yaml)."""
    for fixture in fixtures:
        for doc in loaded(fixture) or []:
            if doc["kind"] == "Rollout":
                on_kwok(doc["spec"]["template"])
            for metric in doc["spec"].get("metrics") or [] if doc["kind"] != "Rollout" else []:
                job = metric["provider"].get("job")
                if job is not None:
                    meta = on_kwok(job["spec"]["template"])
                    meta.setdefault("annotations", {}).update(
                        {
                            "stepwise.dev/exit-code": "{{args.exit-code}}",
                            "stepwise.dev/run-for": "2s",
                        }
                    )
            create_object(api_client, kube.ns, doc, dry_run=False)


class JobWatch:
    """The ``rev`` label of every analysis Job's pod template seen in the namespace
    (polled, since the provider deletes a Job once it is judged)."""

    def __init__(self, kube: Cluster) -> None:
        self.kube, self.revs, self.stop = kube, set[str](), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def run(self) -> None:
        batch = client.BatchV1Api(self.kube.core.api_client)
        while not self.stop.wait(0.1):
            for job in batch.list_namespaced_job(self.kube.ns).items:
                labels = job.spec.template.metadata.labels or {}
                self.revs.add(labels.get("rev", "(none)"))


def roles(kube: Cluster, revision: str) -> set[str | None]:
    pods = kube.core.list_namespaced_pod(kube.ns, label_selector=f"{REVISION_LABEL}={revision}")
    return {(p.metadata.labels or {}).get("role") for p in pods.items}


def test_ephemeral_labels_follow_the_roles(
    kube: Cluster, api_client: client.ApiClient, controller: ControllerProcess
) -> None:
    apply(api_client, kube, "test__e2e__functional__ephemeral-labels.yaml")
    name = "ephemeral-label"
    wait_for("v1 healthy", lambda: kube.healthy(name), 60)
    old = kube.status(name)["stableRevision"]
    wait_for("v1 pods stable", lambda: roles(kube, old) == {"stable"}, 30)
    new = kube.set_image(name, "argoproj/rollouts-demo:green")
    wait_for(
        "held at the pause",
        lambda: kube.status(name).get("waitReason") == "AwaitingPromotion",
        60,
    )
    wait_for("v2 pods canary", lambda: roles(kube, new) == {"canary"}, 30)
    assert roles(kube, old) == {"stable"}
    kube.annotate(name, **{intents.PROMOTE: intents.promote_value(new, 1)})
    wait_for("v2 stable", lambda: kube.status(name).get("stableRevision") == new, 60)
    wait_for("v2 pods stable", lambda: roles(kube, new) == {"stable"}, 30)


def release(kube: Cluster, name: str, rev: str) -> str:
    """Change the template's ``rev`` label and wait for that revision to be stable."""
    kube.patch(name, {"spec": {"template": {"metadata": {"labels": {"rev": rev}}}}})
    revision = str(
        wait_for(
            f"{rev} a new revision",
            lambda: (
                (r := kube.status(name).get("canaryRevision"))
                != kube.status(name).get("stableRevision")
                and r
            ),
            30,
        )
    )
    wait_for(
        f"{rev} stable",
        lambda: kube.status(name).get("stableRevision") == revision and kube.healthy(name),
        120,
    )
    return revision


def test_a_rollback_within_the_window_skips_steps_and_analysis(
    kube: Cluster, api_client: client.ApiClient, controller: ControllerProcess
) -> None:
    apply(
        api_client,
        kube,
        "test__e2e__functional__analysistemplate-sleep-job.yaml",
        "test__e2e__functional__rollout-rollback-window.yaml",
    )
    name = "window"
    wait_for("initial healthy", lambda: kube.healthy(name), 60)
    # The analysis passes the Rollout's label `rev` to the Job (valueFrom.fieldRef).
    kube.patch(name, {"metadata": {"labels": {"rev": "from-the-rollout"}}})
    # Creation times have whole seconds: a revision made in the same second as the one
    # before it has no known order, and the window does not take it (see the unit test).
    time.sleep(1.1)
    with JobWatch(kube) as jobs:
        two = release(kube, name, "two")
    assert jobs.revs == {"from-the-rollout"}
    three = release(kube, name, "three")
    assert three != two
    analysed = len(kube.event_messages(name, "AnalysisStarted"))
    assert analysed == 2  # one per release
    kube.patch(name, {"spec": {"template": {"metadata": {"labels": {"rev": "two"}}}}})
    wait_for(
        "back on two, at once",
        lambda: kube.status(name).get("stableRevision") == two and kube.healthy(name),
        60,
    )
    assert len(kube.event_messages(name, "AnalysisStarted")) == analysed, [
        (e, kube.event_messages(name, e)) for e in sorted(set(kube.events(name)))
    ]  # none more
    assert kube.event_messages(name, "RollbackWindow") == [
        f"revision {two} is within the rollback window: skipping steps 0..1 and analysis"
    ]
