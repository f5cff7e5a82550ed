"""The controller's metrics: own registry, phase gauges, forgetting a Rollout, and every
Kubernetes API request counted by verb and real status code through one ApiClient hook."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from controller.adapters.kube import KubeAdapter, build_replica_set
from controller.runtime.metrics import (
    PHASES,
    Metrics,
    count_requests,
    dedicated,
    request_hook,
    request_verb,
)
from controller.runtime.queue import WorkQueue


def value(m: Metrics, name: str, **labels: str) -> float | None:
    """A sample's value from the metrics' registry."""
    return m.registry.get_sample_value(name, labels)


def test_metrics_live_in_their_own_registry() -> None:
    """Two Metrics objects do not share series, and the global registry is untouched."""
    a, b = Metrics(), Metrics()
    a.observe_reconcile("success", 0.1)
    assert value(a, "stepwise_reconcile_total", result="success") == 1.0
    assert value(b, "stepwise_reconcile_total", result="success") is None
    given = CollectorRegistry()
    assert Metrics(given).registry is given


def test_rollout_phase_is_one_for_the_current_phase_and_zero_for_the_others() -> None:
    """Setting a phase sets its series to 1 and every other phase to 0; a change flips them."""
    m = Metrics()
    m.set_rollout_phase("shop", "web", "Progressing")
    for phase in PHASES:
        expected = 1.0 if phase == "Progressing" else 0.0
        got = value(m, "stepwise_rollout_phase", namespace="shop", rollout="web", phase=phase)
        assert got == expected, phase
    m.set_rollout_phase("shop", "web", "Degraded")
    labels = {"namespace": "shop", "rollout": "web"}
    assert value(m, "stepwise_rollout_phase", **labels, phase="Degraded") == 1.0
    assert value(m, "stepwise_rollout_phase", **labels, phase="Progressing") == 0.0


def test_an_unknown_phase_still_gets_its_series() -> None:
    """A phase outside the API's list is recorded, with the known phases at 0."""
    m = Metrics()
    m.set_rollout_phase("shop", "web", "Mystery")
    assert value(m, "stepwise_rollout_phase", namespace="shop", rollout="web", phase="Mystery") == 1
    assert value(m, "stepwise_rollout_phase", namespace="shop", rollout="web", phase="Healthy") == 0


def test_forget_rollout_drops_only_that_rollouts_series() -> None:
    """A deleted Rollout's phase, weight and measurement series go; others stay."""
    m = Metrics()
    for name in ("web", "api"):
        m.set_rollout_phase("shop", name, "Progressing")
        m.set_canary_weight("shop", name, 20)
        m.count_measurement("shop", name, "success-rate", "Successful")
    m.forget_rollout("shop", "web")
    page = m.exposition().decode()
    assert 'rollout="web"' not in page
    assert value(m, "stepwise_rollout_canary_weight", namespace="shop", rollout="api") == 20
    assert (
        value(
            m,
            "stepwise_analysis_measurements_total",
            namespace="shop",
            rollout="api",
            metric="success-rate",
            phase="Successful",
        )
        == 1
    )


def test_queue_depth_is_read_from_the_queue_at_scrape_time() -> None:
    """The depth gauge follows the queue without anyone setting it."""
    m = Metrics()
    q = WorkQueue()
    m.track_queue_depth(lambda: len(q))
    assert value(m, "stepwise_workqueue_depth") == 0
    q.add("ns/a")
    q.add("ns/b")
    assert value(m, "stepwise_workqueue_depth") == 2


def test_api_requests_leader_and_histograms() -> None:
    """Request counts by verb and code, the leader flag and both histograms record."""
    m = Metrics()
    m.count_api_request("patch", 200)
    m.count_api_request("patch", 409)
    m.count_api_request("patch", 409)
    m.set_leader(True)
    m.set_leader(False)
    m.observe_rollback(4.2)
    m.observe_reconcile("error", 0.3)
    assert value(m, "stepwise_api_requests_total", verb="patch", code="409") == 2
    assert value(m, "stepwise_api_requests_total", verb="patch", code="200") == 1
    assert value(m, "stepwise_leader") == 0
    assert value(m, "stepwise_rollback_seconds_count") == 1
    assert value(m, "stepwise_rollback_seconds_bucket", le="5.0") == 1
    assert value(m, "stepwise_rollback_seconds_bucket", le="3.0") == 0
    assert value(m, "stepwise_reconcile_duration_seconds_sum") == 0.3


# -- every API request, counted by one hook on the ApiClient ------------------------------


class FakePool:
    """Stands in for urllib3's PoolManager under a real ApiClient: answers each request
    with the next (status, body) or raises the next exception, and records the requests."""

    def __init__(self, *answers: tuple[int, dict[str, Any]] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, url: str, **_: Any) -> urllib3.HTTPResponse:
        self.requests.append((method, url))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return urllib3.HTTPResponse(
            body=json.dumps(body).encode(),
            status=status,
            headers={"content-type": "application/json"},
            preload_content=False,
        )

    def clear(self) -> None:
        """What ApiClient.close() calls."""


def fake_client(*answers: tuple[int, dict[str, Any]] | Exception) -> client.ApiClient:
    """A real ApiClient whose connection pool is a FakePool."""
    api = client.ApiClient(client.Configuration(host="https://kube.invalid"))
    api.rest_client.pool_manager = FakePool(*answers)  # type: ignore[assignment]
    return api


GONE = {"kind": "Status", "code": 404, "reason": "NotFound", "message": "gone"}
CONFLICT = {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": "exists"}
CM = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "ns"}}


@pytest.mark.parametrize(
    ("method", "url", "verb"),
    [
        pytest.param("GET", "/api/v1/namespaces/ns/pods", "list", id="list-namespaced"),
        pytest.param("GET", "/api/v1/pods?labelSelector=a", "list", id="list-all-namespaces"),
        pytest.param("GET", "/api/v1/namespaces/ns/pods?watch=true&x=1", "watch", id="watch"),
        pytest.param("GET", "/api/v1/pods?watch=false", "list", id="watch-false-is-list"),
        pytest.param("GET", "/api/v1/namespaces/ns/pods/web", "get", id="get"),
        pytest.param("GET", "/api/v1/namespaces", "list", id="list-namespaces"),
        pytest.param("GET", "/api/v1/namespaces/ns", "get", id="get-namespace"),
        pytest.param("GET", "/api/v1/nodes/n1", "get", id="get-cluster-scoped"),
        pytest.param(
            "GET",
            "/apis/stepwise.dev/v1alpha1/namespaces/ns/rollouts?watch=true",
            "watch",
            id="watch-custom",
        ),
        pytest.param(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock",
            "get",
            id="get-lease",
        ),
        pytest.param(
            "GET",
            "/apis/stepwise.dev/v1alpha1/clusteranalysistemplates",
            "list",
            id="list-cluster-custom",
        ),
        pytest.param("POST", "/apis/apps/v1/namespaces/ns/replicasets", "create", id="create"),
        pytest.param(
            "PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", "update", id="update"
        ),
        pytest.param(
            "PATCH",
            "/apis/stepwise.dev/v1alpha1/namespaces/ns/rollouts/app/status",
            "patch",
            id="patch-status",
        ),
        pytest.param(
            "DELETE", "/apis/apps/v1/namespaces/ns/replicasets/app-x", "delete", id="delete"
        ),
        pytest.param(
            "DELETE", "/api/v1/namespaces/ns/pods", "deletecollection", id="deletecollection"
        ),
    ],
)
def test_request_verb_names_requests_as_the_api_server_does(
    method: str, url: str, verb: str
) -> None:
    """Method and URL give the Kubernetes verb: get, list, watch, create, update, patch, ..."""
    assert request_verb(method, f"https://kube.invalid{url}") == verb


def test_every_request_is_counted_with_its_real_status_code() -> None:
    """Through one hook on the ApiClient: a create answered 201, a get 404, a conflict 409,
    a watch opened 200 and a request that got no answer (0) are each counted once."""
    m = Metrics()
    api = fake_client(
        (201, CM),
        (404, GONE),
        (409, CONFLICT),
        (200, {}),
        urllib3.exceptions.MaxRetryError(None, "/api", "connection refused"),
    )
    count_requests(api, m.count_api_request)
    core = client.CoreV1Api(api)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="web"))
    core.create_namespaced_config_map("ns", body)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("web", "ns")
    assert missing.value.status == 404
    with pytest.raises(ApiException):
        core.create_namespaced_config_map("ns", body)
    stream: Any = core.list_namespaced_config_map("ns", watch=True, _preload_content=False)
    stream.release_conn()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.patch_namespaced_config_map("web", "ns", {"data": {}})
    counted = {
        (verb, code): value(m, "stepwise_api_requests_total", verb=verb, code=code)
        for verb, code in [
            ("create", "201"),
            ("get", "404"),
            ("create", "409"),
            ("watch", "200"),
            ("patch", "0"),
        ]
    }
    assert counted == dict.fromkeys(counted, 1.0)
    assert value(m, "stepwise_api_requests_total", verb="create", code="200") is None


def test_a_kube_adapter_write_is_counted_once_with_the_servers_code() -> None:
    """A KubeAdapter create (after the 404 of its first patch) counts patch 404 and create
    201, not a 200 per call, and nothing twice."""
    m = Metrics()
    rollout = {
        "metadata": {"name": "app", "namespace": "ns", "uid": "u1"},
        "spec": {
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": []}},
        },
    }
    api = fake_client((404, GONE), (201, build_replica_set(rollout, "x", 3)))
    count_requests(api, m.count_api_request)
    KubeAdapter(api).scale_replica_set(rollout, "x", 3)
    samples = {
        (s.labels["verb"], s.labels["code"]): s.value
        for family in m.registry.collect()
        if family.name == "stepwise_api_requests"
        for s in family.samples
        if s.name == "stepwise_api_requests_total"
    }
    assert samples == {("patch", "404"): 1.0, ("create", "201"): 1.0}


def test_dedicated_clients_keep_the_hook_and_a_second_install_replaces_it() -> None:
    """A client derived with dedicated() reports to the same hook (informers and leader
    election use one); installing again swaps the hook without counting twice."""
    first: list[tuple[str, int]] = []
    second: list[tuple[str, int]] = []
    api = fake_client()
    count_requests(api, lambda verb, code: first.append((verb, code)))
    own = dedicated(api)
    assert own is not api
    assert request_hook(own) is request_hook(api)
    own.rest_client.pool_manager = FakePool((200, {"items": []}))  # type: ignore[assignment]
    client.CoreV1Api(own).list_namespaced_config_map("ns")
    assert first == [("list", 200)]
    count_requests(api, lambda verb, code: second.append((verb, code)))
    api.rest_client.pool_manager = FakePool((200, {"items": []}))  # type: ignore[assignment]
    client.CoreV1Api(api).list_namespaced_config_map("ns")
    assert second == [("list", 200)]
    assert first == [("list", 200)], "the replaced hook is not called, nothing twice"
    assert request_hook(fake_client()) is None


def test_a_failing_hook_never_fails_the_request() -> None:
    """An exception in the hook is logged; the API call still returns its answer."""

    def broken(verb: str, code: int) -> None:
        raise RuntimeError("metrics broke")

    api = fake_client((200, CM))
    count_requests(api, broken)
    with structlog.testing.capture_logs() as logs:
        got = client.CoreV1Api(api).read_namespaced_config_map("web", "ns")
    assert got.metadata.name == "web"
    assert [e["event"] for e in logs] == ["api request hook failed"]
