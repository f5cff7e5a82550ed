"""Blue-green through the controller process on the real API server: auto-promotion,
manual promotion through the CLI's exit codes, a failed pre-promotion analysis (the
active Service never moves), a failed post-promotion analysis (switched back while the
old pods are still Ready), a newer revision mid-preview, and an abort with a retry.

Analyses are judged by the real Prometheus of the session on constant queries, so the
verdict is known in advance; what is under test is what the controller does with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.api import intents
from localcluster.controller import ControllerProcess
from tests.integration.test_cli import Cli
from tests.support.analysis import template_doc
from tests.support.background import Background
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

ACTIVE, PREVIEW = "app-active", "app-preview"
REVISION_KEY = "stepwise.dev/revision"
REPLICAS = 3


@pytest.fixture
def env(
    kube: Cluster, kubeconfig: Path, measuring: ControllerProcess
) -> tuple[Cluster, Cli, ControllerProcess]:
    for name in (ACTIVE, PREVIEW):
        kube.core.create_namespaced_service(
            kube.ns,
            {
                "metadata": {"name": name},
                "spec": {"selector": {"app": "app"}, "ports": [{"port": 80}]},
            },
        )
    return kube, Cli(kubeconfig, kube.ns), measuring


def selector(kube: Cluster, service: str) -> str | None:
    """The revision a Service selects."""
    svc = kube.core.read_namespaced_service(service, kube.ns)
    return (svc.spec.selector or {}).get(REVISION_KEY)


def constant_template(kube: Cluster, name: str, value: float) -> None:
    """An AnalysisTemplate whose one metric measures ``value`` (passes when below 0.01)."""
    metric = {
        "name": name,
        "interval": "1s",
        "count": 2,
        "thresholdRange": {"max": 0.01},
        "provider": {"prometheus": {"query": f"vector({value})"}},
    }
    kube.custom.create_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "analysistemplates", template_doc(name, metric)
    )


def release(kube: Cluster, **blue_green: Any) -> tuple[str, str]:
    """Create the blue-green Rollout, wait for v1 to be active, roll out v2."""
    doc = rollout_doc("app", replicas=REPLICAS)
    doc["spec"]["strategy"] = {
        "blueGreen": {"activeService": ACTIVE, "previewService": PREVIEW, **blue_green}
    }
    kube.create(doc)
    wait_for("v1 healthy", lambda: kube.healthy("app"), 60)
    old = kube.status("app")["stableRevision"]
    assert selector(kube, ACTIVE) == old
    new = kube.set_image("app", "registry.local/app:v2")
    return old, new


class SelectorLog(Background):
    """Every revision the active Service selected, polled every 50 ms in a thread."""

    def __init__(self, kube: Cluster) -> None:
        super().__init__()
        self.kube = kube
        self.seen: list[str | None] = []

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            current = selector(self.kube, ACTIVE)
            if not self.seen or self.seen[-1] != current:
                self.seen.append(current)


def test_auto_promotion(env: tuple[Cluster, Cli, ControllerProcess]) -> None:
    """The preview selects v2 at once; the active Service switches once all 3 v2 pods are
    Ready; v1 goes to 0 after scaleDownDelaySeconds."""
    kube, _, _ = env
    old, new = release(kube, scaleDownDelaySeconds=2)
    wait_for("v2 stable", lambda: kube.status("app").get("stableRevision") == new, 60)
    assert selector(kube, ACTIVE) == new, kube.status("app")
    assert selector(kube, PREVIEW) == new, kube.status("app")
    assert kube.ready("app", new) == (REPLICAS, REPLICAS), kube.status("app")
    wait_for("v1 scaled down", lambda: kube.ready("app", old)[0] == 0, 30)
    wait_for("healthy", lambda: kube.healthy("app"), 30)
    status = kube.status("app")
    assert status["blueGreen"] == {"activeSelector": new, "previewSelector": new}, status
    switches = kube.event_messages("app", "ActiveSwitched")
    assert any(f"to revision {new} (from {old})" in m for m in switches), switches


def test_manual_promotion_with_the_cli_exit_codes(
    env: tuple[Cluster, Cli, ControllerProcess],
) -> None:
    """status --watch --exit-on-pause exits 2 with v2 in preview and v1 active; promote
    switches; status --watch then exits 0."""
    kube, cli, _ = env
    old, new = release(kube, autoPromotionEnabled=False, scaleDownDelaySeconds=1)
    paused = cli("status", "app", "--watch", "--exit-on-pause", "--timeout", "60s")
    assert paused.returncode == 2, paused.stdout + paused.stderr
    assert "stepwise promote app" in paused.stdout + paused.stderr
    assert selector(kube, ACTIVE) == old
    assert selector(kube, PREVIEW) == new
    shown = cli("status", "app")
    assert f"active {old}   preview {new}" in shown.stdout, shown.stdout
    promoted = cli("promote", "app")
    assert promoted.returncode == 0, promoted.stderr
    done = cli("status", "app", "--watch", "--timeout", "60s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert selector(kube, ACTIVE) == new


def test_failed_pre_promotion_analysis_never_moves_the_active_service(
    env: tuple[Cluster, Cli, ControllerProcess],
) -> None:
    kube, _, _ = env
    constant_template(kube, "smoke", 0.5)
    with SelectorLog(kube) as log:
        old, new = release(
            kube,
            prePromotionAnalysis={"templates": [{"templateName": "smoke"}]},
            abortScaleDownDelaySeconds=2,
        )
        wait_for("aborted", lambda: kube.status("app").get("phase") == "Degraded", 60)
        wait_for("preview scaled down", lambda: kube.ready("app", new)[0] == 0, 30)
    # None until the first revision was Ready, then v1 and only v1.
    assert log.seen[log.seen.index(old) :] == [old], log.seen
    assert set(log.seen) <= {None, old}, log.seen
    # A switch shorter than a poll would still be an event.
    switches = kube.event_messages("app", "ActiveSwitched")
    assert switches, switches
    assert all(f"to revision {old}" in m for m in switches), switches
    status = kube.status("app")
    assert status["abort"]["reason"] == "AnalysisFailed"
    assert "pre-promotion analysis" in status["abort"]["message"]
    assert kube.ready("app", old) == (REPLICAS, REPLICAS)


def test_failed_post_promotion_analysis_switches_back_to_the_old_pods(
    env: tuple[Cluster, Cli, ControllerProcess],
) -> None:
    """The switch, then the verdict: the pass that records the abort is the pass that
    points the active Service back at v1, whose pods never stopped being Ready."""
    kube, _, proc = env
    constant_template(kube, "after", 0.5)
    old, new = release(
        kube,
        postPromotionAnalysis={"templates": [{"templateName": "after"}]},
        abortScaleDownDelaySeconds=2,
    )
    wait_for("aborted", lambda: kube.status("app").get("phase") == "Degraded", 60)
    assert selector(kube, ACTIVE) == old
    assert kube.ready("app", old) == (REPLICAS, REPLICAS)
    status = kube.status("app")
    assert "post-promotion analysis" in status["abort"]["message"]
    assert status["stableRevision"] == old
    # From the controller's log: the switch to v2, then one pass with the abort and the
    # switch back (the events of a pass carry its reconcile id).
    passes: dict[str, list[str]] = {}
    order: list[tuple[str, str]] = []
    for line in proc.log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("event") == "event" and entry.get("reason") in ("ActiveSwitched", "Aborted"):
            what = f"{entry['reason']}: {entry['message']}"
            passes.setdefault(entry["reconcile_id"], []).append(what)
            order.append((entry["reconcile_id"], what))
    switched = [w for _, w in order if w.startswith("ActiveSwitched") and f"to revision {new}" in w]
    assert switched, order
    back = next(rid for rid, w in order if w.startswith("ActiveSwitched") and f"(from {new})" in w)
    assert any(w.startswith("Aborted") for w in passes[back]), order
    wait_for("v2 scaled down", lambda: kube.ready("app", new)[0] == 0, 30)


def test_a_newer_revision_mid_preview_supersedes_it(
    env: tuple[Cluster, Cli, ControllerProcess],
) -> None:
    kube, _, _ = env
    old, v2 = release(kube, autoPromotionEnabled=False, scaleDownDelaySeconds=1)
    wait_for("v2 in preview", lambda: kube.status("app").get("waitReason") == "AwaitingPromotion")
    v3 = kube.set_image("app", "registry.local/app:v3")
    wait_for("preview on v3", lambda: selector(kube, PREVIEW) == v3, 30)
    wait_for("v2 scaled down", lambda: kube.ready("app", v2)[0] == 0, 30)
    wait_for(
        "v3 awaiting promotion",
        lambda: (
            kube.status("app").get("waitReason") == "AwaitingPromotion"
            and kube.status("app").get("canaryRevision") == v3
        ),
        30,
    )
    assert selector(kube, ACTIVE) == old


def test_abort_and_retry(env: tuple[Cluster, Cli, ControllerProcess]) -> None:
    kube, cli, _ = env
    old, new = release(kube, autoPromotionEnabled=False, abortScaleDownDelaySeconds=1)
    wait_for("v2 in preview", lambda: kube.status("app").get("waitReason") == "AwaitingPromotion")
    assert cli("abort", "app").returncode == 0
    wait_for("aborted", lambda: kube.status("app").get("phase") == "Degraded", 30)
    wait_for("v2 scaled down", lambda: kube.ready("app", new)[0] == 0, 30)
    assert selector(kube, ACTIVE) == old
    retried = cli("retry", "app")
    assert retried.returncode == 0, retried.stderr
    wait_for(
        "v2 back in preview",
        lambda: (
            kube.status("app").get("waitReason") == "AwaitingPromotion"
            and kube.ready("app", new) == (REPLICAS, REPLICAS)
        ),
        60,
    )
    assert kube.status("app").get("abort") is None
    assert selector(kube, ACTIVE) == old
    kube.annotate("app", **{intents.PROMOTE: intents.promote_value(new, 0)})
    wait_for("v2 stable", lambda: kube.status("app").get("stableRevision") == new, 60)


def pod_labels(kube: Cluster, revision: str, key: str) -> set[str | None]:
    """The values of label ``key`` on the revision's live pods."""
    pods = kube.core.list_namespaced_pod(kube.ns, label_selector=f"{REVISION_KEY}={revision}")
    return {
        (p.metadata.labels or {}).get(key) for p in pods.items if not p.metadata.deletion_timestamp
    }


def test_role_metadata_on_the_pods(env: tuple[Cluster, Cli, ControllerProcess]) -> None:
    """previewMetadata on v2's pods in preview, activeMetadata once it is stable; pods
    the ReplicaSet creates later get the role too (its template carries it)."""
    kube, _, _ = env
    old, new = release(
        kube,
        autoPromotionEnabled=False,
        activeMetadata={"labels": {"role": "active"}},
        previewMetadata={"labels": {"role": "preview"}, "annotations": {"note": "in preview"}},
    )
    wait_for("v1 pods active", lambda: pod_labels(kube, old, "role") == {"active"}, 30)
    wait_for("v2 pods preview", lambda: pod_labels(kube, new, "role") == {"preview"}, 60)
    pods = kube.core.list_namespaced_pod(kube.ns, label_selector=f"{REVISION_KEY}={new}")
    assert {(p.metadata.annotations or {}).get("note") for p in pods.items} == {"in preview"}
    kube.annotate("app", **{intents.PROMOTE: intents.promote_value(new, 0)})
    wait_for("v2 stable", lambda: kube.status("app").get("stableRevision") == new, 60)
    wait_for("v2 pods active", lambda: pod_labels(kube, new, "role") == {"active"}, 30)
    pods = kube.core.list_namespaced_pod(kube.ns, label_selector=f"{REVISION_KEY}={new}")
    assert {(p.metadata.annotations or {}).get("note") for p in pods.items} == {None}
    # A pod the ReplicaSet makes from now on is born with the role.
    victim = pods.items[0].metadata.name
    kube.core.delete_namespaced_pod(victim, kube.ns, grace_period_seconds=0)
    wait_for(
        "replacement pod",
        lambda: len([p for p in pod_labels_list(kube, new) if p != victim]) == REPLICAS,
        30,
    )
    assert pod_labels(kube, new, "role") == {"active"}


def pod_labels_list(kube: Cluster, revision: str) -> list[str]:
    pods = kube.core.list_namespaced_pod(kube.ns, label_selector=f"{REVISION_KEY}={revision}")
    return [str(p.metadata.name) for p in pods.items if not p.metadata.deletion_timestamp]
