"""Routers observe from watches (runtime/objects.py), on the real API server: once the
kind's informer has listed, an observation costs no request; a change by anyone reaches
it through the watch; an object just written is answered as written even while the
watch lags; a kind the server does not serve, or cannot list, is read by GET with the
server's own answer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client

from controller.adapters.traffic.gatewayapi import KIND
from controller.adapters.traffic.reads import Kind
from controller.errors import NotFoundError
from controller.runtime.metrics import count_requests
from controller.runtime.objects import NOTE_SECONDS, CachedReads
from localcluster.traefik import gateway_api_crds
from tests.support.clock import FakeClock
from tests.support.kube import install_crds, wait_for

pytestmark = pytest.mark.integration


class NoServices:
    """A Service cache that holds nothing."""

    def get(self, key: str) -> client.V1Service | None:
        return None


def route(name: str) -> dict[str, object]:
    """An HTTPRoute with one rule to app-stable."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"group": "", "kind": "Service", "name": "app-stable", "port": 80},
                        {"group": "", "kind": "Service", "name": "app-canary", "port": 80},
                    ]
                }
            ]
        },
    }


@pytest.fixture
def reads(
    kubeconfig: Path, namespace: str, api_client: client.ApiClient
) -> tuple[CachedReads, Counter[str], client.ApiClient]:
    """Cached reads over their own API client, whose requests are counted by verb."""
    install_crds(api_client, gateway_api_crds())
    own = client.ApiClient(api_client.configuration)
    counted: Counter[str] = Counter()
    count_requests(own, lambda verb, code: counted.update([verb]))
    return CachedReads(own, NoServices(), informer_options={"watch_timeout": 30}), counted, own


def test_observations_come_from_the_watch(
    reads: tuple[CachedReads, Counter[str], client.ApiClient],
    namespace: str,
    api_client: client.ApiClient,
) -> None:
    """The first read is a GET and starts the informer; once it has listed, 50 reads cost
    no request; another actor's edit shows up through the watch; a missing object is
    NotFound with reason NotFound, as a GET says."""
    cached, counted, _ = reads
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(*KIND[:2], namespace, KIND.plural, route("web"))
    try:
        assert cached.get(KIND, namespace, "web")["metadata"]["name"] == "web"
        assert counted["get"] == 1
        assert cached.watched == ["httproutes.gateway.networking.k8s.io@*"]
        wait_for(
            "the informer to serve reads",
            lambda: _served_from_cache(cached, counted, namespace),
        )
        before = sum(counted.values())
        for _ in range(50):
            cached.get(KIND, namespace, "web")
        assert sum(counted.values()) == before, counted
        custom.patch_namespaced_custom_object(
            *KIND[:2], namespace, KIND.plural, "web", {"metadata": {"labels": {"edit": "1"}}}
        )
        wait_for(
            "the edit to reach the cache",
            lambda: (
                (cached.get(KIND, namespace, "web")["metadata"].get("labels") or {}).get("edit")
                == "1"
            ),
        )
        with pytest.raises(NotFoundError) as missing:
            cached.get(KIND, namespace, "nothing-here")
        assert missing.value.reason == "NotFound"
        assert sum(counted.values()) == before, counted
    finally:
        cached.stop()


def _served_from_cache(cached: CachedReads, counted: Counter[str], namespace: str) -> bool:
    before = sum(counted.values())
    cached.get(KIND, namespace, "web")
    return sum(counted.values()) == before


def test_a_written_object_is_answered_until_the_watch_catches_up(
    reads: tuple[CachedReads, Counter[str], client.ApiClient],
    namespace: str,
    api_client: client.ApiClient,
) -> None:
    """With the informer's watch stopped (it cannot catch up), the object handed to
    ``wrote`` is what reads answer, for NOTE_SECONDS; after that the cache's own
    version is answered again (a lagging cache costs an idle write, never a lost one)."""
    clock = FakeClock()  # the notes' clock, moved by hand
    _, _, own = reads
    cached = CachedReads(own, NoServices(), informer_options={"watch_timeout": 30}, clock=clock)
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(*KIND[:2], namespace, KIND.plural, route("lagging"))
    try:
        cached.get(KIND, namespace, "lagging")
        wait_for("the informer to start", lambda: cached.watched)
        informer = cached._informers[(KIND, None)]
        wait_for("the informer to list", informer.has_synced)
        old = cached.get(KIND, namespace, "lagging")["metadata"]["resourceVersion"]
        informer.stop()
        fresh = custom.patch_namespaced_custom_object(
            *KIND[:2], namespace, KIND.plural, "lagging", {"metadata": {"labels": {"w": "1"}}}
        )
        cached.wrote(KIND, fresh)
        assert informer.get(f"{namespace}/lagging")["metadata"]["resourceVersion"] == old
        got = cached.get(KIND, namespace, "lagging")
        assert got["metadata"]["resourceVersion"] == fresh["metadata"]["resourceVersion"]
        clock.advance(NOTE_SECONDS + 0.1)
        assert cached.get(KIND, namespace, "lagging")["metadata"]["resourceVersion"] == old
    finally:
        cached.stop()


def test_a_kind_not_served_is_read_by_get(
    reads: tuple[CachedReads, Counter[str], client.ApiClient], namespace: str
) -> None:
    """No informer for a kind the server does not serve: each read is a GET answered by
    the server's 404 for the URL (reason not NotFound, which routers report as a missing
    API), and Services absent from the cache are NotFound."""
    cached, counted, _ = reads
    kind = Kind("nothing.stepwise.dev", "v1", "gadgets")
    for _ in range(2):
        with pytest.raises(NotFoundError) as err:
            cached.get(kind, namespace, "x")
        assert err.value.reason != "NotFound"
    assert cached.watched == []
    assert (counted["list"], counted["get"]) == (1, 2)  # the probe, then two GETs
    with pytest.raises(NotFoundError):
        cached.service(namespace, "app-canary")
    cached.stop()
