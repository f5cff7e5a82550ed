"""Faults users meet, on the live cluster with the controller as a process: a provider that
hangs must not hold back anyone else's decisions; a name, a pod template or a selector the
cluster cannot take is reported where people look, never only in the controller's log."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.api.validation import validate_document
from localcluster.controller import ControllerProcess
from tests.support.analysis import create_template, template_doc
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

STUCK = 12
QUERY_TIMEOUT = 20
"""The hung template's query timeout: a pass that waited on the provider would take this
long at least."""


@pytest.fixture
def hung_prometheus() -> Iterator[str]:
    """A server that accepts connections and never answers (a Prometheus that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def hung_template(address: str) -> dict[str, Any]:
    """One metric against the hung server, every 2 s."""
    query = {"address": address, "query": "vector(1)", "timeout": f"{QUERY_TIMEOUT}s"}
    return template_doc(
        "hung",
        {
            "name": "success",
            "interval": "2s",
            "thresholdRange": {"min": 0.9},
            "provider": {"prometheus": query},
        },
    )


def test_an_abort_is_not_held_back_by_a_hung_provider(
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
    kubeconfig: Path,
    tmp_path: Path,
    hung_prometheus: str,
) -> None:
    """12 Rollouts wait on a Prometheus that never answers; a manual abort of another
    Rollout still completes (weight 0, stable full) long before any query to it could
    have timed out, because no reconcile waits on a provider."""
    kube = Cluster(api_client, namespace)
    create_template(kube, hung_template(hung_prometheus))
    analysed = [{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "hung"}]}}]
    names = [f"stuck-{i}" for i in range(STUCK)]
    for name in names:
        kube.create(rollout_doc(name, replicas=2, steps=analysed))
    kube.create(rollout_doc("victim", replicas=5, steps=[{"setWeight": 20}, {"pause": {}}]))
    proc = ControllerProcess(kubeconfig, tmp_path, namespaces=[namespace])
    proc.start()
    try:
        wait_for("all healthy", lambda: all(kube.healthy(n) for n in [*names, "victim"]), 90)
        for name in names:
            kube.set_image(name, "registry.local/app:v2")
        revision = kube.set_image("victim", "registry.local/app:v2")

        def first_run(name: str) -> dict[str, Any]:
            runs: list[dict[str, Any]] = kube.status(name).get("analysisRuns") or [{}]
            return runs[0]

        wait_for(
            "every stuck Rollout waiting on the hung provider",
            lambda: all(first_run(n).get("phase") == "Running" for n in names),
            90,
        )
        wait_for("victim paused at 20%", lambda: kube.status("victim").get("canaryWeight") == 20)
        stable = kube.status("victim")["stableRevision"]
        asked = time.monotonic()
        kube.annotate("victim", **{"stepwise.dev/abort": revision})

        def restored() -> bool:
            s = kube.status("victim")
            return s.get("canaryWeight") == 0 and kube.ready("victim", stable) == (5, 5)

        wait_for("victim restored to stable", restored, 60, interval=0.05)
        seconds = time.monotonic() - asked
        print(f"abort under a hung provider: annotation to weight 0 and stable full {seconds:.2f}s")
        assert seconds < QUERY_TIMEOUT, f"the abort waited on the provider ({seconds:.1f}s)"
        runs = [first_run(n) for n in names]
        assert all(r.get("phase") in ("Running", "Error") for r in runs), runs
    finally:
        proc.stop()


@pytest.fixture
def running(
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
    kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[Cluster]:
    """The controller as a process watching this test's namespace."""
    proc = ControllerProcess(kubeconfig, tmp_path, namespaces=[namespace])
    proc.start()
    try:
        yield Cluster(api_client, namespace)
    finally:
        proc.stop()


def condition(kube: Cluster, name: str, type_: str) -> dict[str, Any]:
    """One condition of a Rollout's status ({} when absent)."""
    for c in kube.status(name).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def test_a_name_too_long_for_a_label_is_refused_by_server_and_lint(
    api_client: client.ApiClient, namespace: str, stepwise_crds: None
) -> None:
    """A 70-character Rollout name cannot be its pods' label value: the CRD refuses it
    (naming metadata.name) and so does lint, before anything is created."""
    doc = rollout_doc("r" * 70)
    doc["spec"]["selector"] = {"matchLabels": {"app": "long"}}
    doc["spec"]["template"]["metadata"]["labels"] = {"app": "long"}
    with pytest.raises(client.exceptions.ApiException) as err:
        Cluster(api_client, namespace).create(doc)
    assert err.value.status == 422, err.value.body
    assert "metadata.name" in err.value.body
    problems = validate_document(doc)
    assert [p.field for p in problems] == ["metadata.name"], problems
    doc["metadata"]["name"] = "r" * 63  # the longest that fits
    assert validate_document(doc) == []
    Cluster(api_client, namespace).create(doc)


@pytest.mark.parametrize(
    ("bad", "good", "words"),
    [
        pytest.param(
            {"resources": {"limits": {"memory": "lots"}}},
            {"resources": {"limits": {"memory": "64Mi"}}},
            ["(400 BadRequest)", "quantities must match"],
            id="memory-lots",
        ),
        pytest.param(
            {"image": ""},
            {"image": "registry.local/app:v1"},
            ["(422 Invalid)", "spec.template.spec.containers[0].image", "Required value"],
            id="empty-image",
        ),
    ],
)
def test_a_pod_template_the_server_refuses_is_reported_and_a_fix_clears_it(
    running: Cluster, bad: dict[str, Any], good: dict[str, Any], words: list[str]
) -> None:
    """A template whose ReplicaSet the server refuses: the Rollout says so (ActionRefused,
    naming the ReplicaSet, the field where the server names one, and the server's words),
    with one Warning event however often it retries, and fixing the template clears it."""
    kube = running
    doc = rollout_doc("app", replicas=2)
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container.update(bad)
    kube.create(doc)
    wait_for("refused", lambda: condition(kube, "app", "ActionRefused").get("status") == "True")
    refused = condition(kube, "app", "ActionRefused")
    status = kube.status("app")
    assert status["waitReason"] == "Blocked"
    assert status["message"] == refused["message"]
    assert refused["message"].startswith("ReplicaSet app-"), refused
    for word in words:
        assert word in refused["message"], refused
    time.sleep(6)  # at least one retry has happened
    assert len(kube.event_messages("app", "ActionRefused")) == 1
    container.update(good)
    kube.patch("app", {"spec": {"template": doc["spec"]["template"]}})
    wait_for("healthy after the fix", lambda: kube.healthy("app"), 90)
    assert condition(kube, "app", "ActionRefused")["status"] == "False"


def test_overlapping_selectors_are_reported_and_neither_touches_the_other(
    running: Cluster,
) -> None:
    """A second Rollout selecting the first one's pods is InvalidSpec naming the first,
    creates nothing, and the first keeps its pods; changing its labels clears it."""
    kube = running
    kube.create(rollout_doc("first", replicas=3))
    wait_for("first healthy", lambda: kube.healthy("first"))
    pods = kube.core.list_namespaced_pod(kube.ns).items
    second = rollout_doc("second", replicas=2)
    second["spec"]["selector"] = {"matchLabels": {"app": "first"}}
    second["spec"]["template"]["metadata"]["labels"] = {"app": "first"}
    kube.create(second)
    wait_for(
        "second reported",
        lambda: condition(kube, "second", "InvalidSpec").get("status") == "True",
    )
    message = condition(kube, "second", "InvalidSpec")["message"]
    assert "overlaps Rollout first" in message
    assert (
        kube.apps.list_namespaced_replica_set(
            kube.ns, label_selector="stepwise.dev/rollout=second"
        ).items
        == []
    )
    assert kube.healthy("first")
    assert {p.metadata.uid for p in kube.core.list_namespaced_pod(kube.ns).items} == {
        p.metadata.uid for p in pods
    }
    second["spec"]["selector"] = {"matchLabels": {"app": "second"}}
    second["spec"]["template"]["metadata"]["labels"] = {"app": "second"}
    kube.custom.replace_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "rollouts", "second",
        {**kube.get("second"), "spec": second["spec"]},
    )  # fmt: skip
    wait_for("second healthy once apart", lambda: kube.healthy("second"), 60)
    assert condition(kube, "second", "InvalidSpec")["status"] == "False"


def test_an_unparsable_condition_is_an_invalid_template_never_a_measurement(
    running: Cluster,
) -> None:
    """A successCondition the runtime cannot parse (the server cannot tell) makes the run
    Error naming the template and the field before anything is measured; the Rollout is
    InvalidSpec (InvalidAnalysis) and Blocked with a Warning, its canary held at 20%; a
    fixed template clears it and the analysis measures."""
    kube = running
    broken = {
        "name": "rate",
        "interval": "2s",
        "successCondition": "result >== 0.9 )",
        "provider": {"prometheus": {"query": "vector(1)"}},
    }
    create_template(kube, template_doc("broken", broken))
    steps = [{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "broken"}]}}]
    kube.create(rollout_doc("app", replicas=2, steps=steps))
    wait_for("healthy", lambda: kube.healthy("app"))
    kube.set_image("app", "registry.local/app:v2")

    def run() -> dict[str, Any]:
        runs: list[dict[str, Any]] = kube.status("app").get("analysisRuns") or [{}]
        return runs[0]

    wait_for("run held", lambda: run().get("phase") == "Error")
    assert (
        "AnalysisTemplate broken: invalid: spec.metrics[0].successCondition" in (run()["message"])
    )
    assert not run().get("metrics"), run()
    status = kube.status("app")
    assert status["currentStepIndex"] == 1  # held at the analysis, not passed
    assert (status["phase"], status["waitReason"]) == ("Degraded", "Blocked")
    assert status["canaryWeight"] > 0  # held where step 0 left it (replica ratio)
    invalid = condition(kube, "app", "InvalidSpec")
    assert (invalid["status"], invalid["reason"]) == ("True", "InvalidAnalysis")
    assert "spec.metrics[0].successCondition" in invalid["message"]
    wait_for("a Warning", lambda: bool(kube.event_messages("app", "Blocked")))
    # The fix: a condition that parses (the templates are watched).
    kube.custom.patch_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "analysistemplates", "broken",
        {"spec": {"metrics": [{**broken, "successCondition": "result >= 0.9"}]}},
    )  # fmt: skip
    wait_for("valid again", lambda: condition(kube, "app", "InvalidSpec")["status"] == "False")
    wait_for("measuring", lambda: run().get("phase") == "Running" and bool(run().get("metrics")))
