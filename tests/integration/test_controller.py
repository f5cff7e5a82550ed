"""The controller process on the real API server (replica-ratio mode): stepping, promotion,
abort and retry, crash recovery, leader election, API server restart, a noisy neighbour,
and an invalid Rollout among valid ones."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controller.api import intents
from localcluster import LocalCluster
from localcluster.controller import ControllerProcess
from tests.support.cluster import Cluster
from tests.support.kube import CRD_DIR, install_crds, wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "stepwise.dev", "v1alpha1", "rollouts"
STEPS = [{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {}}]


def start_canary(
    kube: Cluster, name: str = "app", steps: list[dict[str, Any]] | None = None, replicas: int = 10
) -> tuple[str, str]:
    """Create the Rollout, wait for its first revision to be Healthy, roll out v2."""
    kube.create(rollout_doc(name, replicas=replicas, steps=steps if steps is not None else STEPS))
    wait_for(f"{name} healthy", lambda: kube.healthy(name))
    stable = kube.status(name)["stableRevision"]
    canary = kube.set_image(name, "registry.local/app:v2")
    return stable, canary


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_steps_pause_and_promotion(kube: Cluster, controller: ControllerProcess) -> None:
    """Canary pods 2 then 5 Ready; it waits at the empty pause; promote makes the canary
    stable without replacing its pods and scales the old ReplicaSet to 0."""
    stable, canary = start_canary(kube)
    wait_for("canary 2 ready", lambda: kube.ready("app", canary) == (2, 2))
    assert kube.ready("app", stable)[0] in (8, 10)
    wait_for("canary 5 ready", lambda: kube.ready("app", canary) == (5, 5), timeout=30)
    wait_for("paused at step 3", lambda: kube.status("app").get("currentStepIndex") == 3)
    status = kube.status("app")
    assert status["phase"] == "Paused"
    assert status["canaryWeight"] == 50
    assert "until promoted" in status["message"]
    time.sleep(2)
    assert kube.status("app")["currentStepIndex"] == 3  # still waiting
    before = kube.pod_uids(canary)
    assert len(before) == 5
    kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 3)})
    wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary)
    wait_for("healthy", lambda: kube.healthy("app"))
    assert before <= kube.pod_uids(canary)  # the canary's pods were kept, not replaced
    assert kube.ready("app", canary) == (10, 10)
    wait_for("old scaled down", lambda: kube.ready("app", stable)[0] == 0)
    reasons = kube.events("app")
    for reason in ("Initialized", "NewRevision", "StepCompleted", "Promoted"):
        assert reason in reasons
    conditions = {c["type"]: c["status"] for c in kube.status("app")["conditions"]}
    assert conditions["Healthy"] == "True"


def test_abort_and_retry(kube: Cluster, controller: ControllerProcess) -> None:
    """Abort mid-canary: stable back to 10, canary to 0, phase Degraded with the reason;
    retry restarts from step 0."""
    stable, canary = start_canary(kube)
    wait_for("paused at step 3", lambda: kube.status("app").get("currentStepIndex") == 3, 40)
    kube.annotate("app", **{intents.ABORT: canary})
    wait_for("aborted", lambda: kube.status("app").get("phase") == "Degraded")
    wait_for("stable 10", lambda: kube.ready("app", stable) == (10, 10))
    wait_for("canary 0", lambda: kube.ready("app", canary)[0] == 0)
    status = kube.status("app")
    assert status["abort"]["reason"] == "Manual"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Aborted"] == "Manual"
    assert "Aborted" in kube.events("app")
    wait_for("restored", lambda: "restoredAt" in kube.status("app")["releases"][-1])
    kube.annotate(
        "app",
        **{
            intents.ABORT: None,
            intents.RETRY: intents.retry_value(canary, status["abort"]["attempt"]),
        },
    )
    wait_for("retried", lambda: "abort" not in kube.status("app"))
    wait_for("canary 2 again", lambda: kube.ready("app", canary) == (2, 2))
    assert kube.status("app")["currentStepIndex"] in (0, 1)
    assert "Retried" in kube.events("app")
    # The delivery record: v1, then the aborted attempt restored once the canary's last
    # Ready pod was gone (by replica ratio traffic follows pods), then the retry.
    first, aborted, retried = kube.status("app")["releases"]
    assert (first["outcome"], first["revision"]) == ("Promoted", stable)
    assert (aborted["revision"], aborted["attempt"]) == (canary, 1)
    assert (aborted["outcome"], aborted["reason"]) == ("Aborted", "Manual")
    assert aborted["detectedAt"] == aborted["endedAt"] == status["abort"]["time"]
    assert _time(aborted["restoredAt"]) >= _time(aborted["endedAt"])
    assert aborted["timeToRestoreSeconds"] >= 0
    assert [s["index"] for s in aborted["steps"]] == [0, 1, 2]
    assert [a["step"] for a in aborted["approvals"]] == [3]
    assert (retried["revision"], retried["attempt"], retried.get("outcome")) == (canary, 2, None)


def test_sigkill_resumes_the_same_step_and_keeps_the_pause(
    kube: Cluster, kubeconfig: Path, tmp_path: Path, namespace: str, stepwise_crds: None
) -> None:
    """A controller killed with SIGKILL at each of the four steps resumes where the status
    says: every step completed exactly once, and a timed pause keeps its remaining time."""
    pause = 10.0  # long enough for a restart on a loaded machine
    steps = [{"setWeight": 20}, {"pause": {"duration": "10s"}}, {"setWeight": 50}, {"pause": {}}]
    proc = ControllerProcess(kubeconfig, tmp_path, namespaces=[namespace])
    proc.start()
    try:
        kube.create(rollout_doc("app", replicas=10, steps=steps))
        wait_for("app healthy", lambda: kube.healthy("app"))
        # Fake pods are Ready within milliseconds, so a scaling step is held open by
        # cordoning the nodes (new pods stay Pending) for as long as the kill takes.
        kube.cordon(True)
        canary = kube.set_image("app", "registry.local/app:v2")

        def step_event(index: int, kind: str) -> bool:
            # The Event follows the status write by milliseconds; a kill in between loses
            # the Event (never the step), so each kill waits for the previous one.
            wanted = f"step {index} ({kind}) of canary {canary} completed"
            return wanted in kube.event_messages("app", "StepCompleted")

        # step 0: killed while the canary's pods cannot start
        wait_for("at step 0", lambda: kube.status("app").get("canaryRevision") == canary)
        wait_for("canary scaled", lambda: kube.ready("app", canary)[0] == 2)
        proc.sigkill()
        proc.start()
        time.sleep(2)
        assert (kube.status("app")["currentStepIndex"], kube.status("app")["canaryWeight"]) == (
            0,
            0,
        )
        kube.cordon(False)
        # step 1: killed a second into the 10 s pause and kept down for 2 s
        wait_for("pausing", lambda: kube.status("app").get("currentStepIndex") == 1, 30)
        kube.cordon(True)  # ready for step 2
        pause_start = kube.status("app")["pauseStartTime"]
        started = dt.datetime.fromisoformat(pause_start).timestamp()
        wait_for("step 0 event", lambda: step_event(0, "setWeight"))
        time.sleep(max(0.0, started + 1 - time.time()))
        proc.sigkill()
        time.sleep(2)
        proc.start()
        assert time.time() - started < pause, "restarted too late to tell a kept pause"
        while (now := kube.status("app")).get("currentStepIndex") == 1:
            assert now["pauseStartTime"] == pause_start
            assert time.time() - started < pause + 10, "the pause never ended"
            time.sleep(0.05)
        ended = time.time() - started
        # A pause that restarted with the process would end 3+ s later than this.
        assert pause - 0.1 <= ended < pause + 1.5, ended
        # step 2: killed while the canary cannot grow to 5
        wait_for("canary scaled to 5", lambda: kube.ready("app", canary) == (5, 2))
        assert kube.status("app")["currentStepIndex"] == 2
        wait_for("step 1 event", lambda: step_event(1, "pause"))
        proc.sigkill()
        proc.start()
        time.sleep(2)
        assert kube.status("app")["currentStepIndex"] == 2
        assert kube.status("app")["canaryWeight"] < 50
        kube.cordon(False)
        # step 3: killed while waiting at the empty pause; it still waits afterwards
        wait_for("paused at 3", lambda: kube.status("app").get("currentStepIndex") == 3, 30)
        wait_for("step 2 event", lambda: step_event(2, "setWeight"))
        proc.sigkill()
        proc.start()
        time.sleep(3)
        assert kube.status("app")["currentStepIndex"] == 3
        assert kube.status("app")["phase"] == "Paused"
        kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 3)})
        wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary, 30)
    finally:
        kube.cordon(False)
        proc.stop()
    completed = kube.event_messages("app", "StepCompleted")
    for index, kind in enumerate(("setWeight", "pause", "setWeight", "pause")):
        wanted = f"step {index} ({kind}) of canary {canary} completed"
        assert completed.count(wanted) == 1, (wanted, completed)
    assert len(completed) == 4, completed
    # The delivery record went through four kills: one entry per revision, every step
    # once, one wait for approval, and the change's author from managedFields.
    first, release = kube.status("app")["releases"]
    assert first["outcome"] == "Promoted"
    assert (release["revision"], release["attempt"], release["outcome"]) == (canary, 1, "Promoted")
    assert [s["index"] for s in release["steps"]] == [0, 1, 2, 3]
    assert [a["step"] for a in release["approvals"]] == [3]
    assert release["images"] == ["registry.local/app:v2"]
    assert release["changedBy"]
    times = [_time(release[k]) for k in ("changedAt", "startedAt", "endedAt")]
    assert times == sorted(times)
    assert release["leadTimeSeconds"] > pause


def test_deleting_a_replica_ratio_rollout_mid_canary_removes_its_replica_sets(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """Deleting a Rollout without a router mid-canary: the garbage collector removes both
    ReplicaSets it owns, the controller keeps running and forgets the Rollout's series."""
    stable, canary = start_canary(kube)
    wait_for("paused at 3", lambda: kube.status("app").get("currentStepIndex") == 3, 40)
    series = f'namespace="{kube.ns}",rollout="app"'
    assert series in controller.metrics()
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, kube.ns, PLURAL, "app")
    # The garbage collector watches a CRD installed moments ago only after its next
    # discovery pass (every 30 s), so a young CRD's dependents may wait that long.
    wait_for("stable gone", lambda: kube.ready("app", stable) == (-1, -1), 90)
    wait_for("canary gone", lambda: kube.ready("app", canary) == (-1, -1), 30)
    wait_for("series forgotten", lambda: series not in controller.metrics())
    assert controller.alive()
    assert controller.probe("/healthz") == 200


def test_leader_election_only_the_leader_writes_and_a_successor_takes_over(
    kube: Cluster, kubeconfig: Path, tmp_path: Path, namespace: str, stepwise_crds: None
) -> None:
    """Two controllers: one leads and writes; kill it and the other takes over within the
    lease duration plus 2 s, and the rollout continues."""
    lease = f"lease-{namespace}"
    a, b = (
        ControllerProcess(
            kubeconfig,
            tmp_path,
            name=name,
            namespaces=[namespace],
            leader_election=True,
            lease_name=lease,
            lease_namespace=namespace,
        )
        for name in ("a", "b")
    )
    a.start()
    wait_for("a leads", lambda: "stepwise_leader 1.0" in a.metrics())
    b.start()
    try:
        _, canary = start_canary(kube)
        wait_for("paused at 3", lambda: kube.status("app").get("currentStepIndex") == 3, 40)
        assert "stepwise_leader 0.0" in b.metrics()
        assert not [e for e in b.logs() if e.get("event") == "status written"]
        a.sigkill()
        killed = time.monotonic()
        wait_for("b leads", lambda: "stepwise_leader 1.0" in b.metrics(), timeout=10)
        assert time.monotonic() - killed <= 4 + 2
        kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 3)})
        wait_for("promoted by b", lambda: kube.status("app").get("stableRevision") == canary, 30)
        assert [e for e in b.logs() if e.get("event") == "status written"]
    finally:
        a.stop()
        b.stop()


def test_api_server_restart_mid_rollout(
    kube: Cluster, controller: ControllerProcess, owned_cluster: LocalCluster
) -> None:
    """The API server restarts mid-rollout; watches recover and the rollout completes."""
    steps = [
        {"setWeight": 20},
        {"pause": {"duration": "3s"}},
        {"setWeight": 60},
        {"pause": {"duration": "1s"}},
    ]
    _, canary = start_canary(kube, steps=steps)
    wait_for("step 1", lambda: kube.status("app").get("currentStepIndex") == 1)
    owned_cluster.restart_apiserver(down_for=3)
    wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary, timeout=60)
    wait_for("healthy", lambda: kube.healthy("app"), timeout=30)
    assert controller.alive()
    assert controller.probe("/healthz") == 200


def test_label_churn_loses_nothing_and_does_not_hot_loop(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """Another actor patching labels every 100 ms: no status field lost, reconciles stay
    bounded, progress continues."""
    start_canary(kube)
    deadline = time.monotonic() + 8
    patches = 0
    while time.monotonic() < deadline:
        kube.patch("app", {"metadata": {"labels": {"churn": str(patches)}}})
        patches += 1
        time.sleep(0.1)
    wait_for("paused at 3", lambda: kube.status("app").get("currentStepIndex") == 3, 30)
    status = kube.status("app")
    for field in ("stableRevision", "canaryRevision", "conditions", "phase", "observedGeneration"):
        assert field in status
    reconciles = sum(
        float(line.split()[-1])
        for line in controller.metrics().splitlines()
        if line.startswith("stepwise_reconcile_total")
    )
    # Every label patch may cause one reconcile, plus the rollout's own steps; a hot loop
    # would be thousands.
    assert reconciles < patches * 2 + 200, reconciles


def test_invalid_rollout_gets_a_condition_while_others_progress(
    kube: Cluster, controller: ControllerProcess, api_client: client.ApiClient
) -> None:
    """A Rollout the models reject (stored through a permissive CRD) gets InvalidSpec; a
    valid one beside it still progresses."""
    ext = client.ApiextensionsV1Api(api_client)
    strict = yaml.safe_load((CRD_DIR / "rollouts.stepwise.dev.yaml").read_text())
    loose = yaml.safe_load((CRD_DIR / "rollouts.stepwise.dev.yaml").read_text())
    loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    try:
        ext.patch_custom_resource_definition(
            strict["metadata"]["name"],
            loose,
            field_manager="stepwise-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        # (spec.replicas stays valid: the scale subresource checks it whatever the schema)
        bad = rollout_doc("bad", steps=[{"setWeight": 250}, {"pause": {"duration": "10seconds"}}])
        wait_for("loose CRD accepts", lambda: _try_create(kube, bad))
    finally:
        install_crds(api_client, [CRD_DIR / "rollouts.stepwise.dev.yaml"])
    kube.create(rollout_doc("good", steps=[{"setWeight": 50}, {"pause": {"duration": 1}}]))
    wait_for(
        "bad flagged",
        lambda: any(
            c["type"] == "InvalidSpec" and c["status"] == "True"
            for c in kube.status("bad").get("conditions", [])
        ),
    )
    message = next(c for c in kube.status("bad")["conditions"] if c["type"] == "InvalidSpec")[
        "message"
    ]
    assert "spec.strategy.canary.steps[0].setWeight" in message
    assert "spec.strategy.canary.steps[1].pause.duration" in message
    wait_for("good healthy", lambda: kube.healthy("good"))
    kube.set_image("good", "registry.local/app:v2")
    wait_for(
        "good promoted",
        lambda: kube.status("good").get("currentStepIndex") == 2 and kube.healthy("good"),
        30,
    )


def _try_create(kube: Cluster, doc: dict[str, Any]) -> bool:
    try:
        kube.create(doc)
    except client.exceptions.ApiException:
        return False
    return True
