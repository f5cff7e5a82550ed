"""The informer against a real API server: cache and handlers follow changes, copies out,
custom and core resources, recovery from an API server restart, relist on 410 Gone, and a
client-side timeout on a watch whose server went silent."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import yaml
from kubernetes import client

from controller.runtime.informer import Informer, ListFunc
from localcluster import LocalCluster
from tests.support.crds import namespaced_crd
from tests.support.kube import config_map_informer, install_crds, pod_informer, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "informer-test.stepwise.dev", "v1", "widgets"

#: A minimal CRD owned by these tests, so they do not depend on the Rollout schema.
WIDGET_CRD = namespaced_crd(
    GROUP,
    VERSION,
    {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
    {"spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}}},
)


@pytest.fixture(scope="module")
def widget_crd(api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The Widget CRD, installed and served."""
    path = tmp_path_factory.mktemp("crd") / "widgets.yaml"
    path.write_text(yaml.safe_dump(WIDGET_CRD))
    install_crds(api_client, [path])


def widget(name: str, replicas: int) -> dict[str, Any]:
    """A Widget custom object."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    }


class Keys:
    """A handler that records the keys it is given, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[str] = []

    def __call__(self, key: str) -> None:
        with self._lock:
            self.seen.append(key)

    def count(self, key: str) -> int:
        with self._lock:
            return self.seen.count(key)


@contextlib.contextmanager
def running(informer: Informer[Any], sync_timeout: float = 10.0) -> Iterator[Informer[Any]]:
    """Start the informer, wait for its first sync, stop it afterwards."""
    informer.start()
    try:
        assert informer.wait_for_sync(sync_timeout), f"{informer.name} did not sync"
        yield informer
    finally:
        informer.stop()


def config_map(name: str, value: str = "1", labels: dict[str, str] | None = None) -> Any:
    """A ConfigMap body."""
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data={"value": value}
    )


def cm_value(informer: Informer[client.V1ConfigMap], key: str) -> str | None:
    """The cached ``data.value`` of a ConfigMap, or None if it is not cached."""
    obj = informer.get(key)
    return None if obj is None else (obj.data or {}).get("value")


def within(seconds: float, what: str, check: Any) -> float:
    """Assert ``check()`` becomes truthy within ``seconds``; returns how long it took."""
    start = time.monotonic()
    wait_for(what, check, timeout=seconds, interval=0.02)
    return time.monotonic() - start


def test_cache_and_handlers_follow_create_update_delete_within_a_second(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A ConfigMap's create, update and delete reach the cache and the handler's keys in 1 s."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, config_map("before"))
    keys = Keys()
    informer = config_map_informer(api_client, namespace=namespace)
    informer.add_handler(keys)
    with running(informer):
        assert informer.has_synced()
        assert f"{namespace}/before" in set(informer.keys())
        assert keys.count(f"{namespace}/before") == 1, "the initial list reaches handlers"
        key = f"{namespace}/web"

        core.create_namespaced_config_map(namespace, config_map("web", "1"))
        within(1.0, "create in cache", lambda: cm_value(informer, key) == "1")
        within(1.0, "create handled", lambda: keys.count(key) == 1)

        core.patch_namespaced_config_map("web", namespace, {"data": {"value": "2"}})
        within(1.0, "update in cache", lambda: cm_value(informer, key) == "2")
        within(1.0, "update handled", lambda: keys.count(key) == 2)

        core.delete_namespaced_config_map("web", namespace)
        within(1.0, "delete from cache", lambda: informer.get(key) is None)
        within(1.0, "delete handled", lambda: keys.count(key) == 3)
        assert all(k.startswith(f"{namespace}/") for k in keys.seen), keys.seen


def test_returned_objects_are_copies_the_cache_cannot_be_mutated(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Mutating what get() or list() returned leaves the cached object untouched."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, config_map("web", "original"))
    with running(config_map_informer(api_client, namespace=namespace)) as informer:
        key = f"{namespace}/web"
        got = informer.get(key)
        assert got is not None
        got.data["value"] = "mutated"
        got.metadata.labels = {"hacked": "yes"}
        listed = informer.list()
        listed[0].data["value"] = "mutated too"
        assert cm_value(informer, key) == "original"
        fresh = informer.get(key)
        assert fresh is not None
        assert fresh.metadata.labels is None
        assert fresh is not informer.get(key), "every read is a new copy"


def test_list_filters_by_namespace_and_labels_before_copying(
    api_client: client.ApiClient, namespace: str, widget_crd: None
) -> None:
    """list(namespace, labels) returns only objects carrying every label, typed or dict."""
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    for name, labels in (
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "web"}),
        ("c", {"app": "db", "tier": "front"}),
        ("d", None),
    ):
        core.create_namespaced_config_map(namespace, config_map(name, labels=labels))
        body = widget(name, 1)
        body["metadata"]["labels"] = labels
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    maps = config_map_informer(api_client)
    widgets = Informer.custom_resources(api_client, group=GROUP, version=VERSION, plural=PLURAL)
    with running(maps), running(widgets):
        within(2.0, "all cached", lambda: len(maps.list(namespace)) >= 4)
        within(2.0, "all widgets cached", lambda: len(widgets.list(namespace)) == 4)

        def names(objs: list[Any]) -> list[str]:
            return sorted(
                o["metadata"]["name"] if isinstance(o, dict) else o.metadata.name for o in objs
            )

        assert names(maps.list(namespace, {"app": "web"})) == ["a", "b"]
        assert names(maps.list(namespace, {"app": "web", "tier": "front"})) == ["a"]
        assert names(maps.list(namespace, {"tier": "front"})) == ["a", "c"]
        assert names(widgets.list(namespace, {"app": "web"})) == ["a", "b"]
        assert names(widgets.list(namespace, {"app": "nothing"})) == []
        assert maps.list("another-namespace", {"app": "web"}) == []
        assert len(maps.list(namespace, {})) == len(maps.list(namespace))


def test_custom_resource_informer_caches_dicts_and_follows_changes(
    api_client: client.ApiClient, namespace: str, widget_crd: None
) -> None:
    """A custom resource informer (CustomObjectsApi) caches dicts and follows changes."""
    custom = client.CustomObjectsApi(api_client)
    keys = Keys()
    informer = Informer.custom_resources(
        api_client, group=GROUP, version=VERSION, plural=PLURAL, namespace=namespace
    )
    informer.add_handler(keys)
    everywhere = Informer.custom_resources(api_client, group=GROUP, version=VERSION, plural=PLURAL)
    with running(informer), running(everywhere):
        assert informer.list() == []
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("web", 3))
        key = f"{namespace}/web"
        within(1.0, "widget cached", lambda: informer.get(key) is not None)
        within(1.0, "widget cached cluster-wide", lambda: everywhere.get(key) is not None)
        assert [w["metadata"]["name"] for w in everywhere.list(namespace=namespace)] == ["web"]
        cached = informer.get(key)
        assert isinstance(cached, dict)
        assert cached["spec"]["replicas"] == 3
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "web", {"spec": {"replicas": 5}}
        )
        within(1.0, "widget update cached", lambda: informer.get(key)["spec"]["replicas"] == 5)
        cached = informer.get(key)
        cached["spec"]["replicas"] = 99
        assert informer.get(key)["spec"]["replicas"] == 5
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "web")
        within(1.0, "widget deleted", lambda: informer.get(key) is None)
        assert keys.count(key) == 3


def test_cluster_wide_typed_informer_with_label_selector(
    api_client: client.ApiClient, namespace: str
) -> None:
    """An all-namespaces ReplicaSet informer returns typed objects and honours its selector."""
    apps = client.AppsV1Api(api_client)
    selector = f"test-run={namespace}"

    def replica_set(name: str, labels: dict[str, str]) -> client.V1ReplicaSet:
        match = {"app": name}
        return client.V1ReplicaSet(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1ReplicaSetSpec(
                replicas=0,
                selector=client.V1LabelSelector(match_labels=match),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=match),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]),
                ),
            ),
        )

    informer = Informer.replica_sets(api_client, label_selector=selector)
    with running(informer):
        apps.create_namespaced_replica_set(
            namespace, replica_set("selected", {"test-run": namespace})
        )
        apps.create_namespaced_replica_set(namespace, replica_set("other", {"test-run": "no"}))
        key = f"{namespace}/selected"
        within(1.0, "selected replicaset cached", lambda: informer.get(key) is not None)
        cached = informer.get(key)
        assert isinstance(cached, client.V1ReplicaSet)
        assert cached.spec.replicas == 0
        time.sleep(0.5)
        assert informer.keys() == [key], "objects outside the selector are not cached"


def test_service_and_pod_informers_cache_typed_objects(
    api_client: client.ApiClient, namespace: str
) -> None:
    """The Service and Pod constructors list, watch and cache typed objects."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(
                selector={"app": "web"}, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    services = Informer.services(api_client, namespace=namespace)
    pods = pod_informer(api_client, namespace=namespace)
    with running(services), running(pods):
        svc = services.get(f"{namespace}/web")
        assert isinstance(svc, client.V1Service)
        assert svc.spec.selector == {"app": "web"}
        core.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name="web-0", labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]),
            ),
        )
        within(1.0, "pod cached", lambda: pods.get(f"{namespace}/web-0") is not None)
        pod = pods.get(f"{namespace}/web-0")
        assert isinstance(pod, client.V1Pod)
        assert pod.metadata.labels == {"app": "web"}


def test_handler_exception_does_not_stop_the_informer(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A handler that raises is logged; later events still reach the cache and handlers."""
    core = client.CoreV1Api(api_client)
    keys = Keys()

    def broken(key: str) -> None:
        raise RuntimeError(f"poison {key}")

    informer = config_map_informer(api_client, namespace=namespace)
    informer.add_handler(broken)
    informer.add_handler(keys)
    with running(informer), structlog.testing.capture_logs() as logs:
        core.create_namespaced_config_map(namespace, config_map("a"))
        core.create_namespaced_config_map(namespace, config_map("b"))
        within(1.0, "both handled", lambda: keys.count(f"{namespace}/b") == 1)
        assert keys.count(f"{namespace}/a") == 1
    assert any(entry["event"] == "informer handler failed" for entry in logs)


def test_recovers_after_api_server_restart_and_heartbeat_advances(
    api_client: client.ApiClient, namespace: str, owned_cluster: LocalCluster
) -> None:
    """After the API server is down 2 s and back, a later change is cached within seconds."""
    core = client.CoreV1Api(api_client)
    informer = config_map_informer(api_client, namespace=namespace, watch_timeout=30)
    with running(informer):
        before = informer.last_heartbeat
        assert before is not None
        owned_cluster.restart_apiserver(down_for=2)
        restarted = time.monotonic()
        core.create_namespaced_config_map(namespace, config_map("after-restart"))
        took = within(
            8.0,
            "change after restart cached",
            lambda: informer.get(f"{namespace}/after-restart") is not None,
        )
        heartbeat = informer.last_heartbeat
        assert heartbeat is not None
        assert heartbeat > before
        assert heartbeat >= restarted - 0.5, "heartbeat comes from the new API server"
        print(f"recovered {took:.2f}s after the restart; relists={informer.relists}")


def test_expired_resource_version_leads_to_a_relist(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A watch from a resourceVersion the server no longer has (410 Gone) triggers a relist
    that picks up objects created meanwhile."""
    core = client.CoreV1Api(api_client)
    api = client.CoreV1Api(api_client)
    lists = 0

    def list_with_stale_first_version(**kwargs: Any) -> Any:
        # The first list answer claims a long-compacted resourceVersion, as if the
        # informer had been disconnected for hours; the real server answers the watch
        # from it with 410 Gone. Objects created now exist only in the next list.
        nonlocal lists
        resp = api.list_namespaced_config_map(**kwargs)
        if not kwargs.get("watch"):
            lists += 1
            if lists == 1:
                core.create_namespaced_config_map(namespace, config_map("created-while-stale"))
                resp.metadata.resource_version = "1"
        return resp

    stale: ListFunc = list_with_stale_first_version
    stale.__wrapped__ = api.list_namespaced_config_map  # type: ignore[attr-defined]
    stale.__doc__ = api.list_namespaced_config_map.__doc__
    informer: Informer[client.V1ConfigMap] = Informer(
        stale, name="configmaps-stale", namespace=namespace
    )
    with running(informer), structlog.testing.capture_logs() as logs:
        within(
            5.0,
            "object from the relist",
            lambda: informer.get(f"{namespace}/created-while-stale") is not None,
        )
        assert informer.relists == 1
        assert lists == 2
    gone = [e for e in logs if e["event"] == "list or watch failed; retrying"]
    assert gone, "the 410 is reported"
    assert gone[0]["status"] == 410
    assert gone[0]["relist"] is True


def test_watch_on_a_silent_server_times_out_client_side_and_recovers(
    api_client: client.ApiClient, namespace: str, owned_cluster: LocalCluster
) -> None:
    """With the API server frozen (SIGSTOP), the watch read times out instead of hanging,
    the heartbeat stops, and after SIGCONT the informer catches up."""
    core = client.CoreV1Api(api_client)
    informer = config_map_informer(
        api_client, namespace=namespace, watch_timeout=2, read_grace=1.0, connect_timeout=1.0
    )
    apiserver = owned_cluster.component("kube-apiserver")
    with running(informer), structlog.testing.capture_logs() as logs:
        apiserver.signal(signal.SIGSTOP)
        try:
            frozen_at = time.monotonic()
            wait_for(
                "a client-side watch timeout",
                lambda: any(e["event"] == "list or watch failed; retrying" for e in logs),
                timeout=8.0,
                interval=0.1,
            )
            detected = time.monotonic() - frozen_at
            heartbeat = informer.last_heartbeat
            time.sleep(1.0)
            assert informer.last_heartbeat == heartbeat, "no heartbeat from a frozen server"
        finally:
            apiserver.signal(signal.SIGCONT)
        assert detected <= 6.0, f"a silent watch was noticed only after {detected:.1f}s"
        wait_for("API server answers", lambda: core.list_namespace(limit=1, _request_timeout=2))
        core.create_namespaced_config_map(namespace, config_map("after-thaw"))
        within(
            8.0,
            "change after thaw cached",
            lambda: informer.get(f"{namespace}/after-thaw") is not None,
        )
        assert informer.last_heartbeat is not None
        assert heartbeat is not None
        assert informer.last_heartbeat > heartbeat


def test_stop_is_prompt_even_with_a_long_watch(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Stopping an informer with a 5-minute watch returns within a second; it cannot restart."""
    informer = config_map_informer(api_client, namespace=namespace, watch_timeout=300)
    informer.start()
    assert informer.wait_for_sync(10)
    time.sleep(0.3)
    start = time.monotonic()
    informer.stop()
    assert time.monotonic() - start < 1.5
    with pytest.raises(RuntimeError, match="create a new one"):
        informer.start()


def test_a_bookmark_advances_resource_version_and_heartbeat_but_not_the_cache(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A BOOKMARK from the API server (asked for with allowWatchBookmarks; sent about 2 s
    before the watch's timeout) moves resource_version past a change outside the informer's
    selector and beats the heartbeat, without a relist, a cache change or a handler call."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, config_map("seen", labels={"watched": "yes"}))
    keys = Keys()
    informer = config_map_informer(
        api_client, namespace=namespace, label_selector="watched=yes", watch_timeout=4
    )
    informer.add_handler(keys)
    with running(informer):
        time.sleep(0.3)  # the watch is open: its connection beat is behind us
        listed = informer.resource_version
        assert listed is not None
        assert informer.bookmarks == 0
        beat = informer.last_heartbeat
        assert beat is not None
        unseen = core.create_namespaced_config_map(namespace, config_map("unseen"))
        unseen_version = int(unseen.metadata.resource_version)
        assert int(listed) < unseen_version
        wait_for(
            "a bookmark",
            lambda: informer.bookmarks >= 1,
            timeout=10,
            interval=0.02,
        )
        bookmarked = informer.last_heartbeat
        version = informer.resource_version
        assert bookmarked is not None
        assert bookmarked > beat, "the bookmark beat the heartbeat"
        assert version is not None
        assert int(version) >= unseen_version, (listed, version, unseen_version)
        assert informer.keys() == [f"{namespace}/seen"]
        assert informer.get(f"{namespace}/unseen") is None
        assert keys.seen == [f"{namespace}/seen"], "only the initial list reached handlers"
        assert informer.relists == 0
