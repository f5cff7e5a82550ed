"""``spec.workloadRef`` through the controller process on the real API server.

A Deployment serves the app (its pods selected by the app's Service); a Rollout that
references it runs the same pod template beside it and, per ``scaleDown``, scales the
Deployment down: never (left alone), onsuccess (to 0 once the Rollout is Healthy),
progressively (as the Rollout's pods become Ready). Throughout, a thread polls every
100 ms: no Deployment pod is ever replaced (the Deployment's pods keep their UIDs while
they are up), the Service always selects at least one Ready pod, and the Deployment's
replicas plus the Rollout's Ready pods never fall below ``spec.replicas``. A later change
to the Deployment's image then rolls out through the Rollout's steps.

Also: a reference to a Deployment that does not exist is an InvalidSpec naming
``spec.workloadRef.name`` until the Deployment is created (its watch brings the Rollout
back), and Argo Rollouts' own workloadRef manifests, with only the apiVersion changed,
are accepted by both ``stepwise lint`` and the API server."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controller.api import intents
from controller.api.validation import validate_document
from controller.core.workload import (
    REPLICAS_BEFORE_ANNOTATION,
    SCALE_DOWN_ANNOTATION,
    SCALED_BY_ANNOTATION,
)
from localcluster.controller import ControllerProcess
from tests.integration.test_lint_server_agreement import server_accepts
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import deployment, pod_spec
from tests.support.manifests import rollout as rollout_manifest

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argo-workload-ref"
APP = "web"
REPLICAS = 3
ROLLOUT_LABEL = "stepwise.dev/rollout"


SERVE, SERVING = "stepwise.dev/serve", "stepwise.dev/serving"
"""A pod annotated SERVE is Running but not Ready on the fake nodes until it is annotated
SERVING (hack/cluster/kwok-stages.yaml): the test decides when each pod is Ready."""


def deployment_doc(image: str = "registry.local/app:v1") -> dict[str, Any]:
    """The app's Deployment: 3 pods on the fake nodes, labelled app=web, each Ready only
    once the test marks it serving."""
    template = {
        "metadata": {"labels": {"app": APP}, "annotations": {SERVE: "true"}},
        "spec": pod_spec(image),
    }
    return deployment(APP, replicas=REPLICAS, template=template)


def serve(kube: Cluster, pod: client.V1Pod) -> None:
    """Make a pod Ready (as the pod runner does once its process answers)."""
    body = {"metadata": {"annotations": {SERVING: "true"}}}
    kube.core.patch_namespaced_pod(pod.metadata.name, kube.ns, body)


def unserved(kube: Cluster, selector: str) -> list[client.V1Pod]:
    """The live pods with these labels not yet marked serving, by name."""
    pods = kube.core.list_namespaced_pod(kube.ns, label_selector=selector).items
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    waiting = [p for p in live if SERVING not in (p.metadata.annotations or {})]
    return sorted(waiting, key=lambda p: str(p.metadata.name))


def serve_all(kube: Cluster, selector: str) -> None:
    """Mark every pod with these labels serving."""
    for pod in unserved(kube, selector):
        serve(kube, pod)


def rollout_doc(scale_down: str | None, name: str = APP, ref: str = APP) -> dict[str, Any]:
    """A Rollout that takes its pod template and selector from the Deployment ``ref``."""
    workload: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": ref}
    if scale_down is not None:
        workload["scaleDown"] = scale_down
    steps = [{"setWeight": 50}, {"pause": {}}]
    return rollout_manifest(name, replicas=REPLICAS, steps=steps, workload_ref=workload)


def is_ready(pod: client.V1Pod) -> bool:
    """A pod that is Ready and not being deleted."""
    if pod.metadata.deletion_timestamp is not None:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


@dataclass
class Sample:
    """One poll: the Deployment's spec.replicas, then the pods the Service selects."""

    deployment_replicas: int
    service_ready: int
    rollout_ready: int
    deployment_pods: frozenset[str]
    """UIDs of the Deployment's pods (not being deleted)."""


@dataclass
class Poller:
    """Polls every 100 ms in a thread (the Deployment first, then the pods: a pod can
    only have become Ready in between, never the other way round)."""

    kube: Cluster
    selector: str
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def poll(self) -> Sample:
        """One sample, now."""
        dep = self.kube.apps.read_namespaced_deployment(APP, self.kube.ns)
        pods = self.kube.core.list_namespaced_pod(self.kube.ns, label_selector=self.selector).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        ours = [p for p in live if ROLLOUT_LABEL in (p.metadata.labels or {})]
        theirs = [p for p in live if ROLLOUT_LABEL not in (p.metadata.labels or {})]
        return Sample(
            deployment_replicas=dep.spec.replicas,
            service_ready=sum(1 for p in live if is_ready(p)),
            rollout_ready=sum(1 for p in ours if is_ready(p)),
            deployment_pods=frozenset(str(p.metadata.uid) for p in theirs),
        )

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(self.poll())
            except Exception as err:  # reported by the test, not lost in the thread
                self.errors.append(repr(err))

    def __enter__(self) -> Poller:
        self.samples.append(self.poll())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.samples.append(self.poll())


def service_selector(kube: Cluster) -> str:
    """The app's Service's selector as a label query."""
    svc = kube.core.read_namespaced_service(APP, kube.ns)
    return ",".join(f"{k}={v}" for k, v in sorted((svc.spec.selector or {}).items()))


@pytest.fixture
def app(kube: Cluster) -> tuple[Cluster, frozenset[str]]:
    """The app's Service and its running Deployment (3 Ready pods); their pod UIDs."""
    kube.core.create_namespaced_service(
        kube.ns,
        {"metadata": {"name": APP}, "spec": {"selector": {"app": APP}, "ports": [{"port": 80}]}},
    )
    kube.apps.create_namespaced_deployment(kube.ns, deployment_doc())

    def available() -> bool:
        serve_all(kube, f"app={APP}")
        dep = kube.apps.read_namespaced_deployment(APP, kube.ns)
        return (dep.status.available_replicas or 0) == REPLICAS

    wait_for("the Deployment available", available, 60)
    pods = kube.core.list_namespaced_pod(kube.ns, label_selector=f"app={APP}").items
    uids = frozenset(str(p.metadata.uid) for p in pods if is_ready(p))
    assert len(uids) == REPLICAS
    return kube, uids


def deployment_of(kube: Cluster) -> client.V1Deployment:
    """The app's Deployment, now."""
    return kube.apps.read_namespaced_deployment(APP, kube.ns)


def check_no_gap_and_no_restart(poller: Poller, original: frozenset[str]) -> None:
    """Every sample: the Service selects a Ready pod; every Deployment pod is one of the
    original ones (none replaced or added); the Deployment's replicas plus the Rollout's
    Ready pods cover spec.replicas."""
    assert not poller.errors, poller.errors
    assert len(poller.samples) > 2, "the poller hardly ran"
    for s in poller.samples:
        assert s.service_ready > 0, poller.samples
        assert s.deployment_pods <= original, (s, original)
        assert s.deployment_replicas + s.rollout_ready >= REPLICAS, poller.samples


def stepwise_annotations(dep: client.V1Deployment) -> dict[str, str]:
    """The annotations Stepwise writes on a Deployment it scaled."""
    keys = (SCALED_BY_ANNOTATION, REPLICAS_BEFORE_ANNOTATION, SCALE_DOWN_ANNOTATION)
    return {k: v for k, v in (dep.metadata.annotations or {}).items() if k in keys}


OURS = f"{ROLLOUT_LABEL}={APP}"


def release_one(kube: Cluster) -> None:
    """Make one more of the Rollout's pods Ready (waiting for it to exist first)."""
    pending = wait_for("a Rollout pod not yet Ready", lambda: unserved(kube, OURS), 30)
    serve(kube, pending[0])


def rollout_ready_is(kube: Cluster, count: int) -> bool:
    """Whether the Rollout's status counts ``count`` Ready pods."""
    return int(kube.status(APP).get("readyReplicas") or 0) == count


def deployment_at(kube: Cluster, replicas: int) -> bool:
    """Whether the Deployment's spec.replicas is ``replicas``."""
    return bool(deployment_of(kube).spec.replicas == replicas)


def test_onsuccess_adopts_the_deployment_then_scales_it_to_zero_and_rolls_out_its_changes(
    app: tuple[Cluster, frozenset[str]], controller: ControllerProcess
) -> None:
    """The Rollout starts its own 3 pods beside the Deployment's, which keep running
    (same UIDs, no Ready gap) and keep their 3 replicas while the Rollout's pods become
    Ready one by one; once the Rollout is Healthy the Deployment goes to 0, annotated. A
    new image in the Deployment is then a new revision of the Rollout: it stops at the
    pause step, is promoted on the intent, and the Deployment stays at 0."""
    kube, original = app
    with Poller(kube, service_selector(kube)) as poller:
        kube.create(rollout_doc("onsuccess"))
        for ready in (1, 2):
            release_one(kube)
            wait_for(
                f"{ready} Rollout pods Ready", functools.partial(rollout_ready_is, kube, ready)
            )
            assert deployment_of(kube).spec.replicas == REPLICAS
        assert not kube.healthy(APP)
        release_one(kube)
        wait_for("the Rollout Healthy", lambda: kube.healthy(APP), 30)
        wait_for("the Deployment at 0", lambda: deployment_of(kube).spec.replicas == 0, 30)
        wait_for("its pods gone", lambda: not poller.poll().deployment_pods, 30)
    check_no_gap_and_no_restart(poller, original)
    # The Deployment kept 3 replicas until all 3 of the Rollout's pods were Ready.
    assert all(
        s.deployment_replicas == REPLICAS for s in poller.samples if s.rollout_ready < REPLICAS
    ), poller.samples
    assert stepwise_annotations(deployment_of(kube)) == {
        SCALED_BY_ANNOTATION: APP,
        REPLICAS_BEFORE_ANNOTATION: str(REPLICAS),
        SCALE_DOWN_ANNOTATION: "done",
    }
    messages = kube.event_messages(APP, "DeploymentScaledDown")
    assert any(f"Deployment {APP} scaled from 3 to 0" in m for m in messages), messages
    status = kube.status(APP)
    old = status["stableRevision"]
    assert status["selector"] == f"app={APP}", status

    # A change to the Deployment's template goes through the Rollout's steps.
    image = "registry.local/app:v2"
    kube.apps.patch_namespaced_deployment(
        APP,
        kube.ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}},
    )

    def paused_at_step_1() -> dict[str, Any] | None:
        serve_all(kube, OURS)
        st = kube.status(APP)
        moved = st.get("canaryRevision") not in (None, old)
        return st if moved and st.get("phase") == "Paused" and st["currentStepIndex"] == 1 else None

    status = wait_for("the new revision paused at its pause step", paused_at_step_1, 60)
    new = status["canaryRevision"]
    assert status["stableRevision"] == old
    assert kube.ready(APP, new)[1] >= 1, kube.ready(APP, new)
    assert kube.ready(APP, old)[1] >= 1, kube.ready(APP, old)
    template = kube.apps.read_namespaced_replica_set(f"{APP}-{new}", kube.ns).spec.template
    assert template.spec.containers[0].image == image
    kube.annotate(APP, **{intents.PROMOTE: intents.promote_value(new, 1)})

    def promoted() -> bool:
        serve_all(kube, OURS)
        return kube.healthy(APP) and kube.status(APP)["stableRevision"] == new

    wait_for("the new revision stable", promoted, 60)
    dep = deployment_of(kube)
    assert dep.spec.replicas == 0
    assert dep.metadata.annotations[SCALE_DOWN_ANNOTATION] == "done"


def test_never_leaves_the_deployment_alone(
    app: tuple[Cluster, frozenset[str]], controller: ControllerProcess
) -> None:
    """Without scaleDown (never, Argo's default) the Rollout runs its 3 pods beside the
    Deployment's 3, which stay as they are: replicas, pods and annotations untouched."""
    kube, original = app
    with Poller(kube, service_selector(kube)) as poller:
        kube.create(rollout_doc(None))
        for _ in range(REPLICAS):
            release_one(kube)
        wait_for("the Rollout Healthy", lambda: kube.healthy(APP), 30)
        # Several more passes (status writes, the Deployment's own status updates).
        wait_for("a few more samples", lambda: len(poller.samples) > 20, 30)
    check_no_gap_and_no_restart(poller, original)
    assert {s.deployment_replicas for s in poller.samples} == {REPLICAS}
    assert poller.poll().deployment_pods == original
    assert stepwise_annotations(deployment_of(kube)) == {}
    assert kube.event_messages(APP, "DeploymentScaledDown") == []


def test_progressively_scales_the_deployment_down_as_the_rollouts_pods_are_ready(
    app: tuple[Cluster, frozenset[str]], controller: ControllerProcess
) -> None:
    """Each Rollout pod that becomes Ready takes one replica off the Deployment (3, 2, 1,
    0): the two together never drop below 3 and the Deployment never goes back up; the
    last step comes with the Rollout Healthy, and the scale-down is marked done."""
    kube, original = app
    with Poller(kube, service_selector(kube)) as poller:
        kube.create(rollout_doc("progressively"))
        wait_for("the Rollout's pods", lambda: len(unserved(kube, OURS)) == REPLICAS, 30)
        assert deployment_of(kube).spec.replicas == REPLICAS
        for ready in range(1, REPLICAS + 1):
            release_one(kube)
            left = REPLICAS - ready
            wait_for(f"the Deployment at {left}", functools.partial(deployment_at, kube, left))
            if ready < REPLICAS:
                annotations = stepwise_annotations(deployment_of(kube))
                assert annotations[SCALE_DOWN_ANNOTATION] == "in-progress", annotations
        wait_for("the Rollout Healthy", lambda: kube.healthy(APP), 30)
        wait_for(
            "the scale-down done",
            lambda: stepwise_annotations(deployment_of(kube)).get(SCALE_DOWN_ANNOTATION) == "done",
            30,
        )
        wait_for("its pods gone", lambda: not poller.poll().deployment_pods, 30)
    check_no_gap_and_no_restart(poller, original)
    seen = [s.deployment_replicas for s in poller.samples]
    assert seen == sorted(seen, reverse=True), seen  # never up again
    assert [n for i, n in enumerate(seen) if i == 0 or n != seen[i - 1]] == [3, 2, 1, 0], seen
    assert stepwise_annotations(deployment_of(kube)) == {
        SCALED_BY_ANNOTATION: APP,
        REPLICAS_BEFORE_ANNOTATION: str(REPLICAS),
        SCALE_DOWN_ANNOTATION: "done",
    }
    messages = kube.event_messages(APP, "DeploymentScaledDown")
    # Events are listed by creation time, to the second: compare them as a set.
    assert {m.split(" replicas")[0] for m in messages} >= {
        f"Deployment {APP} scaled from 3 to 2",
        f"Deployment {APP} scaled from 2 to 1",
        f"Deployment {APP} scaled from 1 to 0",
    }, messages
    assert all("spec.workloadRef.scaleDown: progressively" in m for m in messages), messages


def invalid_spec(kube: Cluster, name: str) -> dict[str, Any] | None:
    """The Rollout's InvalidSpec condition when it is True."""
    for cond in kube.status(name).get("conditions") or []:
        if cond["type"] == "InvalidSpec" and cond["status"] == "True":
            return dict(cond)
    return None


def test_a_missing_deployment_is_an_invalid_spec_until_it_is_created(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """A reference to no Deployment: InvalidSpec and a Warning event naming
    spec.workloadRef.name, no ReplicaSet, no crash; once the Deployment exists its watch
    brings the Rollout back and it becomes Healthy."""
    kube.create(rollout_doc("onsuccess", name="late", ref="late"))
    cond = wait_for("InvalidSpec", lambda: invalid_spec(kube, "late"), 30)
    assert 'spec.workloadRef.name: Deployment "late" not found' in cond["message"], cond
    assert kube.status("late")["phase"] == "Degraded"
    warnings = kube.event_messages("late", "InvalidSpec")
    assert any("spec.workloadRef.name" in m for m in warnings), warnings
    sets = kube.apps.list_namespaced_replica_set(kube.ns, label_selector=f"{ROLLOUT_LABEL}=late")
    assert sets.items == []
    assert controller.alive()

    doc = deployment_doc()
    doc["metadata"]["name"] = "late"
    doc["spec"]["replicas"] = 0
    kube.apps.create_namespaced_deployment(kube.ns, doc)

    def healthy() -> bool:
        serve_all(kube, f"{ROLLOUT_LABEL}=late")
        return kube.healthy("late")

    wait_for("Healthy once the Deployment exists", healthy, 60)
    assert invalid_spec(kube, "late") is None
    assert kube.status("late")["readyReplicas"] == REPLICAS


def test_another_kind_is_an_invalid_spec_naming_the_field(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """A workloadRef to a kind Stepwise does not resolve (Argo also takes ReplicaSets and
    PodTemplates) is reported in the status, naming spec.workloadRef.kind."""
    doc = rollout_doc(None, name="odd")
    doc["spec"]["workloadRef"]["kind"] = "StatefulSet"
    kube.create(doc)
    cond = wait_for("InvalidSpec", lambda: invalid_spec(kube, "odd"), 30)
    assert "spec.workloadRef.kind: apps/v1 StatefulSet is not supported" in cond["message"]


def test_overlap_is_judged_on_the_deployments_selector(
    app: tuple[Cluster, frozenset[str]], controller: ControllerProcess
) -> None:
    """A workloadRef Rollout selects what its Deployment's selector says, for the overlap
    check too: a later Rollout of other pods goes ahead, a later one selecting app=web
    stands back with an InvalidSpec naming it."""
    kube, _ = app
    kube.create(rollout_doc(None))
    for _ in range(REPLICAS):
        release_one(kube)
    wait_for("the workloadRef Rollout Healthy", lambda: kube.healthy(APP), 30)
    kube.create(rollout_manifest("other", replicas=1))
    wait_for("an unrelated Rollout Healthy beside it", lambda: kube.healthy("other"), 30)
    # Named to sort after "web": creation times are to the second, and a tie goes to the
    # name that sorts first.
    same = rollout_manifest("web-too", replicas=1)
    same["spec"]["selector"] = {"matchLabels": {"app": APP}}
    same["spec"]["template"]["metadata"]["labels"] = {"app": APP}
    kube.create(same)
    cond = wait_for("the later overlapping Rollout refused", lambda: invalid_spec(kube, "web-too"))
    assert f"overlaps Rollout {APP} (created earlier)" in cond["message"], cond
    assert kube.healthy(APP)


# -- lint and the API server agree on Argo's manifests ----------------------------------


def argo_rollouts(path: Path) -> list[dict[str, Any]]:
    """The file's Rollouts with only the apiVersion changed to Stepwise's."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Rollout"]
    for doc in docs:
        doc["apiVersion"] = "stepwise.dev/v1alpha1"
    return docs


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_argos_workload_ref_manifests_pass_lint_and_a_server_dry_run(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, path: Path
) -> None:
    """Each of Argo Rollouts' workloadRef Rollouts lints clean and is accepted by a
    server-side dry-run create."""
    docs = argo_rollouts(path)
    assert docs
    for doc in docs:
        assert validate_document(doc) == []
        assert server_accepts(api_client, namespace, doc)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(
            {"template": {"metadata": {"labels": {"app": APP}}, "spec": pod_spec()},
             "selector": {"matchLabels": {"app": APP}}},
            "spec.template",
            id="template-and-workloadRef",
        ),
        pytest.param({"workloadRef": None}, "spec.template", id="neither"),
        pytest.param({"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": APP, "scaleDown": "sometimes"}},
                     "spec.workloadRef.scaleDown", id="bad-scaleDown"),
    ],
)  # fmt: skip
def test_lint_and_the_server_refuse_the_same_workload_refs(
    api_client: client.ApiClient,
    stepwise_crds: None,
    namespace: str,
    change: dict[str, Any],
    field: str,
) -> None:
    """Both template and workloadRef, neither, or an unknown scaleDown: lint names the
    field and the API server refuses the object."""
    doc = rollout_doc(None)
    doc["spec"] = {k: v for k, v in {**doc["spec"], **change}.items() if v is not None}
    problems = validate_document(doc)
    assert [p.field for p in problems] == [field], problems
    assert not server_accepts(api_client, namespace, doc)
