"""A pass never acts on a cached Rollout older than the controller's own last status write.

bench/zero_drop caught it: a pass started 8 ms after the previous pass's status write,
from a watch cache that did not have that write yet, re-planned a promotion that was
already done (re-pinning the stable Service to the old revision, scaling it back up)
before its own status write failed on the conflict. Here the cache is held back on
purpose, against the real API server: the pass on the stale copy does nothing and asks
to be retried shortly; once the cache has the write, passes go on as usual."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes import client

from controller.adapters.kube import KubeAdapter
from controller.runtime.informer import Informer
from controller.runtime.reconciler import CACHE_BEHIND_RECHECK, Informers, Reconciler
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration
T = TypeVar("T")


class CountingKube(KubeAdapter):
    """The real adapter, counting the writes it sends."""

    writes = 0

    def _write(self, fn: Callable[[], T]) -> T:
        self.writes += 1
        return super()._write(fn)


class HeldCache:
    """A Rollout cache that answers with the copy it was last given (a watch that lags)."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    def list(
        self, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.obj)] if self.obj else []

    def versions(self, namespace: str | None = None) -> dict[str, str]:
        if self.obj is None:
            return {}
        meta = self.obj["metadata"]
        return {f"{meta['namespace']}/{meta['name']}": meta["resourceVersion"]}


def test_a_pass_on_a_cache_behind_our_status_write_does_nothing(
    api_client: client.ApiClient, kube: Cluster, namespace: str
) -> None:
    kube.create(rollout_doc("app", replicas=2))
    held = HeldCache()
    held.obj = kube.get("app")
    replica_sets = Informer.replica_sets(api_client, namespace=namespace)
    services = Informer.services(api_client, namespace=namespace)
    for informer in (replica_sets, services):
        informer.start()
        assert informer.wait_for_sync(10)
    try:
        kube_adapter = CountingKube(api_client)
        reconciler = Reconciler(
            Informers(rollouts=held, replica_sets=replica_sets, services=services),
            kube_adapter,
        )
        key = f"{namespace}/app"
        reconciler.reconcile(key)  # the first revision: a ReplicaSet and a status
        written = kube.get("app")
        assert written["metadata"]["resourceVersion"] != held.obj["metadata"]["resourceVersion"]
        assert written["status"]["stableRevision"]
        writes = kube_adapter.writes
        assert writes > 0

        # The cache still holds the Rollout from before that write: nothing is written.
        assert reconciler.reconcile(key) == CACHE_BEHIND_RECHECK
        assert kube_adapter.writes == writes
        assert (
            kube.get("app")["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
        )

        # The watch catches up: passes go on.
        held.obj = kube.get("app")
        wait_for("replica sets cached", lambda: len(replica_sets.list(namespace)) == 1, 10)
        assert reconciler.reconcile(key) != CACHE_BEHIND_RECHECK
    finally:
        for informer in (replica_sets, services):
            informer.stop()
