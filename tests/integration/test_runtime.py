"""The controller runtime on the real API server: ReplicaSet adoption, status written only
when it changed, and every API request counted by verb and real status code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.adapters.kube import (
    REVISION_LABEL,
    ROLLOUT_LABEL,
    KubeAdapter,
    build_replica_set,
    replica_set_name,
)
from controller.core.hashing import template_hash
from controller.errors import ConflictError
from localcluster import LocalCluster
from localcluster.controller import ControllerProcess
from tests.support.cluster import GROUP, PLURAL, VERSION, Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc
from tests.support.runtime import frozen, log_lines, metric, requests

pytestmark = pytest.mark.integration

STEPS = [{"setWeight": 50}, {"pause": {}}]


def revision_replica_set(
    kube: Cluster, doc: dict[str, Any], owner_uid: str, replicas: int
) -> tuple[str, dict[str, Any]]:
    """The revision of ``doc`` and the ReplicaSet a controller would have made for it,
    owned by a Rollout of that name with ``owner_uid`` (not yet created)."""
    revision = template_hash(doc["spec"]["template"])
    named = {**doc, "metadata": {**doc["metadata"], "namespace": kube.ns, "uid": owner_uid}}
    return revision, build_replica_set(named, revision, replicas)


def replica_sets(kube: Cluster, name: str) -> list[client.V1ReplicaSet]:
    """The Rollout's ReplicaSets, by its label."""
    items: list[client.V1ReplicaSet] = kube.apps.list_namespaced_replica_set(
        kube.ns, label_selector=f"{ROLLOUT_LABEL}={name}"
    ).items
    return items


def owner_uids(rs: client.V1ReplicaSet) -> list[str]:
    """The uids of a ReplicaSet's controller owner references."""
    return [ref.uid for ref in rs.metadata.owner_references or [] if ref.controller]


# -- adoption -------------------------------------------------------------------------------


def test_an_unowned_replica_set_of_the_revision_is_adopted_not_duplicated(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """A labelled ReplicaSet for the Rollout's revision left without an owner (by an earlier
    controller, or an orphaning delete) gets the Rollout as owner; its pods are kept and no
    second ReplicaSet is made."""
    doc = rollout_doc("app", replicas=3, steps=STEPS)
    revision, body = revision_replica_set(kube, doc, "unused", replicas=3)
    del body["metadata"]["ownerReferences"]
    existing = kube.apps.create_namespaced_replica_set(kube.ns, body)
    wait_for("orphan's pods ready", lambda: kube.ready("app", revision) == (3, 3))
    pods = kube.pod_uids(revision)

    uid = kube.create(doc)["metadata"]["uid"]
    rs = adopted_and_healthy(kube, uid)
    assert rs.metadata.uid == existing.metadata.uid, "the same ReplicaSet, not a new one"
    assert kube.pod_uids(revision) == pods, "its pods were kept"
    assert kube.status("app")["stableRevision"] == revision
    assert log_lines(controller, "replicaset adopted", replicaset=rs.metadata.name)
    assert not log_lines(controller, "replicaset created"), "nothing was created"


def test_adopt_replica_set_replaces_a_stale_owner_and_keeps_other_owners(
    kube: Cluster, api_client: client.ApiClient, owned_cluster: LocalCluster
) -> None:
    """adopt_replica_set swaps a controller reference to an earlier Rollout of the same name
    for the live one (the garbage collector then keeps the ReplicaSet), keeps a
    non-controller owner, and refuses a stale view of the ReplicaSet with a conflict."""
    doc = rollout_doc("app", replicas=0, steps=STEPS)
    rollout = kube.create(doc)  # no controller runs in this test: nothing else writes
    other = kube.core.create_namespaced_config_map(
        kube.ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="co-owner"))
    )
    co_owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "co-owner",
        "uid": other.metadata.uid,
    }
    _, body = revision_replica_set(kube, doc, "uid-of-a-deleted-rollout", replicas=0)
    body["metadata"]["ownerReferences"].append(co_owner)
    adapter = KubeAdapter(api_client)
    with frozen(owned_cluster, "kube-controller-manager"):  # the GC would delete it at once
        created = kube.apps.create_namespaced_replica_set(kube.ns, body)
        assert adapter.adopt_replica_set(rollout, created) is True
        adopted = kube.apps.read_namespaced_replica_set(created.metadata.name, kube.ns)
        refs = {(r.kind, r.uid, bool(r.controller)) for r in adopted.metadata.owner_references}
        assert refs == {
            ("Rollout", rollout["metadata"]["uid"], True),
            ("ConfigMap", other.metadata.uid, False),
        }
        assert adapter.adopt_replica_set(rollout, adopted) is False, "already owned: no write"
        with pytest.raises(ConflictError):
            adapter.adopt_replica_set(rollout, created)  # the view before the adoption
    time.sleep(3)  # the garbage collector catches up: it would delete a stale-owned one
    kept = kube.apps.read_namespaced_replica_set(created.metadata.name, kube.ns)
    assert kept.metadata.uid == created.metadata.uid
    assert kept.metadata.deletion_timestamp is None
    assert owner_uids(kept) == [rollout["metadata"]["uid"]]


def test_the_controller_adopts_a_replica_set_with_a_stale_owner(
    kube: Cluster, controller: ControllerProcess, owned_cluster: LocalCluster
) -> None:
    """A ReplicaSet of the revision still owned by an earlier Rollout of the same name (the
    garbage collector not caught up) is adopted by the new Rollout, not replaced."""
    doc = rollout_doc("app", replicas=2, steps=STEPS)
    revision, body = revision_replica_set(kube, doc, "uid-of-a-deleted-rollout", replicas=2)
    with frozen(owned_cluster, "kube-controller-manager"):
        existing = kube.apps.create_namespaced_replica_set(kube.ns, body)
        uid = kube.create(doc)["metadata"]["uid"]
        wait_for("adopted", lambda: owners(kube) == [[uid]], timeout=10)
    rs = adopted_and_healthy(kube, uid)
    assert rs.metadata.uid == existing.metadata.uid
    assert rs.metadata.labels[REVISION_LABEL] == revision
    assert rs.metadata.name == replica_set_name("app", revision)


# -- status written only when it changed ----------------------------------------------------


def reconciles(proc: ControllerProcess) -> float:
    """Reconcile passes the controller has finished, whatever their result."""
    return metric(proc.metrics(), "stepwise_reconcile_total")


def test_an_idle_healthy_rollout_is_reconciled_without_status_writes(
    kube: Cluster, controller: ControllerProcess
) -> None:
    """Reconciles of an idle Healthy Rollout (forced by label edits) write no status: no
    PATCH is sent, no "status written" is logged, and its resourceVersion stays the one the
    label edit gave it."""
    kube.create(rollout_doc("app", replicas=2, steps=STEPS))
    wait_for("healthy", lambda: kube.healthy("app"))
    time.sleep(1)  # let the passes that follow the last status write finish
    page = controller.metrics()
    patches = metric(page, "stepwise_api_requests_total", verb="patch")
    written = len(log_lines(controller, "status written", rollout="app"))
    assert written >= 1, "the way to Healthy wrote status"
    status = kube.status("app")
    for i in range(5):
        before = reconciles(controller)
        touched = kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, kube.ns, PLURAL, "app", {"metadata": {"labels": {"touch": str(i)}}}
        )
        wait_for(
            f"reconcile after touch {i}",
            lambda: reconciles(controller) > before,  # noqa: B023 - called in this iteration
            timeout=10,
            interval=0.05,
        )
        after = kube.get("app")
        assert after["metadata"]["resourceVersion"] == touched["metadata"]["resourceVersion"]
    page = controller.metrics()
    assert metric(page, "stepwise_api_requests_total", verb="patch") == patches
    assert len(log_lines(controller, "status written", rollout="app")) == written
    assert kube.status("app") == status


# -- API requests by verb and code ----------------------------------------------------------


def test_api_requests_are_counted_by_verb_and_real_status_code(
    kube: Cluster, kubeconfig: Path, tmp_path: Path
) -> None:
    """With leader election, a new Rollout's pass and the Lease calls show their real
    codes: the missing Lease read 404 then created 201, the missing ReplicaSet patched 404
    then created 201, watches and lists opened 200, the status patched 200."""
    proc = ControllerProcess(
        kubeconfig,
        tmp_path,
        namespaces=[kube.ns],
        leader_election=True,
        lease_name="stepwise-metrics",
        lease_namespace=kube.ns,
    )
    proc.start()
    try:
        wait_for("leading", lambda: metric(proc.metrics(), "stepwise_leader") == 1.0)
        kube.create(rollout_doc("app", replicas=2, steps=STEPS))
        wait_for("healthy", lambda: kube.healthy("app"))
        wait_for(
            "lease renewed",
            lambda: requests(proc.metrics()).get(("update", "200"), 0) >= 1,
            timeout=5,
        )
        counted = requests(proc.metrics())
    finally:
        proc.stop()
    print(sorted(counted.items()))
    for key in [
        ("get", "404"),  # the Lease, before it exists
        ("create", "201"),  # the Lease, the ReplicaSet, events
        ("patch", "404"),  # scaling a ReplicaSet that does not exist yet
        ("patch", "200"),  # the status
        ("update", "200"),  # Lease renewals
    ]:
        assert counted.get(key, 0) >= 1, key
    # Rollouts, ReplicaSets, Services, templates, cluster templates, and the Lease.
    assert counted.get(("list", "200"), 0) >= 6
    assert counted.get(("watch", "200"), 0) >= 6
    assert ("create", "200") not in counted, "a create is answered 201, never recorded 200"


def owners(kube: Cluster) -> list[list[str]]:
    """The owner uids of each of the Rollout's ReplicaSets."""
    return [owner_uids(rs) for rs in replica_sets(kube, "app")]


def adopted_and_healthy(kube: Cluster, uid: str) -> client.V1ReplicaSet:
    """Wait until the Rollout ``uid`` alone owns its one ReplicaSet and is Healthy."""
    wait_for("adopted", lambda: owners(kube) == [[uid]], timeout=10)
    wait_for("healthy", lambda: kube.healthy("app"))
    (rs,) = replica_sets(kube, "app")
    return rs
