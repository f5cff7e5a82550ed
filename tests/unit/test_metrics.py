"""The controller's metrics: own registry, phase gauges, forgetting a Rollout, the delivery
record's releases counted once per status transition, and every Kubernetes API request
counted by verb and real status code through one ApiClient hook."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import structlog
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from controller.adapters.kube import KubeAdapter, build_replica_set
from controller.api.rollout import Release, RolloutStatus
from controller.runtime.manager import _MetricsObserver
from controller.runtime.metrics import (
    ABORT_REASONS,
    DETECT_BUCKETS,
    LEAD_TIME_BUCKETS,
    OUTCOMES,
    PHASES,
    Metrics,
    ReleaseChange,
    count_requests,
    dedicated,
    release_changes,
    request_hook,
    request_verb,
)
from controller.runtime.queue import WorkQueue
from tests.support.plan import at, make


def value(m: Metrics, name: str, **labels: str) -> float | None:
    """A sample's value from the metrics' registry."""
    return m.registry.get_sample_value(name, labels)


def counts(m: Metrics, counter: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Every series of a counter (``<counter>_total``), keyed by the values of ``labels``."""
    return {
        tuple(s.labels[label] for label in labels): s.value
        for family in m.registry.collect()
        if family.name == counter
        for s in family.samples
        if s.name == f"{counter}_total"
    }


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


# -- the delivery record: releases counted from status transitions ----------------------


def rel(revision: str, attempt: int = 1, **fields: Any) -> Release:
    """A release of the delivery record, started at T0 (fields by their Python names)."""
    return Release(revision=revision, attempt=attempt, changed_at=at(0), started_at=at(5), **fields)


PROMOTED = rel("r1", outcome="Promoted", ended_at=at(600), lead_time_seconds=600.0)
ABORTING = rel(
    "r2",
    outcome="Aborted",
    reason="AnalysisFailed",
    ended_at=at(90),
    detected_at=at(40),
    time_to_detect_seconds=40.0,
)
ABORTED = ABORTING.model_copy(update={"restored_at": at(93), "time_to_restore_seconds": 3.0})
RUNNING = rel("r3")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            [PROMOTED, ABORTED, RUNNING],
            [PROMOTED, ABORTED, RUNNING],
            [],
            id="restart-same-status-counts-nothing",
        ),
        pytest.param([], [RUNNING], [], id="started-release-counts-nothing-yet"),
        pytest.param(
            [rel("r1")],
            [PROMOTED],
            [ReleaseChange("r1", 1, outcome="Promoted", lead_time_seconds=600.0)],
            id="promoted-with-its-lead-time",
        ),
        pytest.param(
            [rel("r2")],
            [ABORTING],
            [
                ReleaseChange(
                    "r2", 1, outcome="Aborted", reason="AnalysisFailed", time_to_detect_seconds=40
                )
            ],
            id="aborted-with-reason-and-time-to-detect",
        ),
        pytest.param(
            [ABORTING],
            [ABORTED],
            [ReleaseChange("r2", 1, time_to_restore_seconds=3.0)],
            id="restored-on-a-later-pass-counts-only-the-restore",
        ),
        pytest.param(
            [],
            [PROMOTED],
            [ReleaseChange("r1", 1, outcome="Promoted", lead_time_seconds=600.0)],
            id="release-decided-in-the-pass-that-started-it",
        ),
        pytest.param(
            [PROMOTED, ABORTED],
            [ABORTED, RUNNING],
            [],
            id="dropped-off-the-bounded-list-is-not-an-event",
        ),
        pytest.param(
            [ABORTED, rel("r2", 2)],
            [ABORTED, rel("r2", 2, outcome="Superseded", ended_at=at(200))],
            [ReleaseChange("r2", 2, outcome="Superseded")],
            id="a-retry-is-its-own-release",
        ),
        pytest.param(
            [rel("r1")],
            [rel("r1", outcome="Promoted", reason="Manual", lead_time_seconds=1.0)],
            [ReleaseChange("r1", 1, outcome="Promoted", lead_time_seconds=1.0)],
            id="reason-only-with-aborted",
        ),
        pytest.param(
            [ABORTED],
            [PROMOTED.model_copy(update={"revision": "r2"})],
            [ReleaseChange("r2", 1, lead_time_seconds=600.0)],
            id="an-outcome-changed-is-not-a-second-release",
        ),
    ],
)
def test_release_changes_are_what_the_pass_newly_set(
    before: list[Release], after: list[Release], expected: list[ReleaseChange]
) -> None:
    """Only an outcome or a time that the pass set, matched by revision and attempt."""
    assert release_changes(before, after) == expected


def releases_counted(m: Metrics, outcome: str, reason: str = "") -> float | None:
    return value(
        m,
        "stepwise_releases_total",
        namespace="shop",
        rollout="web",
        outcome=outcome,
        reason=reason,
    )


def test_a_release_timeline_counts_each_outcome_and_time_once() -> None:
    """Passes through a promotion, an abort restored later, repeated passes and a restart
    (a new Metrics reading the last status) count each outcome and time exactly once."""
    timeline = [
        [],
        [rel("r1")],
        [rel("r1")],
        [PROMOTED],
        [PROMOTED],
        [PROMOTED, rel("r2")],
        [PROMOTED, ABORTING],
        [PROMOTED, ABORTING],
        [PROMOTED, ABORTED],
        [PROMOTED, ABORTED],
    ]
    m = Metrics()
    for before, after in itertools.pairwise(timeline):
        m.observe_releases("shop", "web", before, after)
    assert releases_counted(m, "Promoted") == 1
    assert releases_counted(m, "Aborted", "AnalysisFailed") == 1
    assert releases_counted(m, "Aborted", "Manual") == 0
    assert releases_counted(m, "Superseded") == 0
    labels = {"namespace": "shop", "rollout": "web"}
    for name, seconds, bucket in [
        ("stepwise_release_time_to_detect_seconds", 40.0, ("30.0", "60.0")),
        ("stepwise_release_time_to_restore_seconds", 3.0, ("2.0", "5.0")),
        ("stepwise_release_lead_time_seconds", 600.0, ("300.0", "900.0")),
    ]:
        assert value(m, f"{name}_count", **labels) == 1, name
        assert value(m, f"{name}_sum", **labels) == seconds, name
        assert value(m, f"{name}_bucket", **labels, le=bucket[0]) == 0, name
        assert value(m, f"{name}_bucket", **labels, le=bucket[1]) == 1, name

    restarted = Metrics()
    restarted.observe_releases("shop", "web", timeline[-1], timeline[-1])
    assert releases_counted(restarted, "Promoted") == 0
    assert releases_counted(restarted, "Aborted", "AnalysisFailed") == 0
    assert value(restarted, "stepwise_release_time_to_restore_seconds_count", **labels) == 0


def test_release_series_exist_at_zero_from_the_first_pass() -> None:
    """A Rollout's first pass creates its six release counters and three histograms at 0,
    so increase() sees its first release; no other outcome or reason ever appears."""
    m = Metrics()
    m.observe_releases("shop", "web", [], [])
    counted = counts(m, "stepwise_releases", "outcome", "reason")
    assert counted == {
        ("Promoted", ""): 0,
        ("Superseded", ""): 0,
        **{("Aborted", reason): 0 for reason in ABORT_REASONS},
    }
    assert set(OUTCOMES) == {"Promoted", "Aborted", "Superseded"}
    labels = {"namespace": "shop", "rollout": "web"}
    for name in ("time_to_detect", "time_to_restore", "lead_time"):
        assert value(m, f"stepwise_release_{name}_seconds_count", **labels) == 0


def test_buckets_span_seconds_to_an_hour_and_a_minute_to_a_week() -> None:
    """Detect and restore buckets reach an hour from under a second; lead time a week
    from a minute."""
    assert DETECT_BUCKETS[0] < 1
    assert DETECT_BUCKETS[-1] == 3600
    assert LEAD_TIME_BUCKETS[0] == 60
    assert LEAD_TIME_BUCKETS[-1] == 7 * 86400
    assert list(DETECT_BUCKETS) == sorted(set(DETECT_BUCKETS))
    assert list(LEAD_TIME_BUCKETS) == sorted(set(LEAD_TIME_BUCKETS))


def test_forget_rollout_drops_its_release_series() -> None:
    """A deleted Rollout's release counters and histograms go; another Rollout's stay."""
    m = Metrics()
    for name in ("web", "api"):
        m.observe_releases("shop", name, [], [PROMOTED, ABORTED])
    m.forget_rollout("shop", "web")
    page = m.exposition().decode()
    assert 'rollout="web"' not in page
    assert (
        'stepwise_releases_total{namespace="shop",outcome="Promoted",reason="",rollout="api"}'
        in page
    )
    labels = {"namespace": "shop", "rollout": "api"}
    assert value(m, "stepwise_release_time_to_restore_seconds_count", **labels) == 1


def test_the_observer_counts_from_the_status_read_to_the_status_written() -> None:
    """The runtime's observer compares the Rollout's status (before the pass) with the
    status the pass wrote: an abort counts once, a pass that changes nothing counts 0."""
    m = Metrics()
    observer = _MetricsObserver(m, None)
    rollout = make([{"setWeight": 20}])
    meta = rollout.metadata.model_copy(update={"namespace": "shop"})
    before = RolloutStatus(releases=[rel("r2")])
    after = RolloutStatus(releases=[ABORTING])
    observer.reconciled(rollout.model_copy(update={"metadata": meta, "status": before}), after)
    observer.reconciled(rollout.model_copy(update={"metadata": meta, "status": after}), after)
    labels = {"namespace": "shop", "rollout": rollout.metadata.name}
    got = value(m, "stepwise_releases_total", **labels, outcome="Aborted", reason="AnalysisFailed")
    assert got == 1
    assert value(m, "stepwise_release_time_to_detect_seconds_sum", **labels) == 40


#: One pass of a release timeline: start a release, decide the oldest undecided one, restore
#: the oldest unrestored abort, or a pass that changes nothing (a requeue, a restart).
PASSES = st.lists(
    st.one_of(
        st.just(("start", "")),
        st.tuples(st.just("decide"), st.sampled_from(OUTCOMES)),
        st.just(("restore", "")),
        st.just(("repeat", "")),
    ),
    max_size=40,
)


def decided(release: Release, outcome: str) -> Release:
    """The release with its outcome and the time that comes with it."""
    if outcome == "Aborted":
        fields: dict[str, Any] = {"reason": "Manual", "time_to_detect_seconds": 1.0}
    elif outcome == "Promoted":
        fields = {"lead_time_seconds": 1.0}
    else:
        fields = {}
    return release.model_copy(update={"outcome": outcome, **fields})


@settings(max_examples=200, deadline=None)
@given(passes=PASSES, limit=st.integers(min_value=1, max_value=4))
def test_any_timeline_counts_each_transition_once(
    passes: list[tuple[str, str]], limit: int
) -> None:
    """However passes interleave, repeat and trim the bounded list (``limit`` entries),
    each outcome and time a pass sets counts exactly once."""
    m = Metrics()
    m.observe_releases("shop", "web", [], [])  # the Rollout's first pass
    shown: list[Release] = []
    started = 0
    expected = dict.fromkeys([*OUTCOMES, "detect", "restore", "lead"], 0)
    for action, outcome in passes:
        now = list(shown)
        if action == "start":
            now = [*now, rel(f"r{started}")][-limit:]
            started += 1
        elif action == "decide":
            open_ = [k for k, r in enumerate(now) if r.outcome is None]
            if open_:
                now[open_[0]] = decided(now[open_[0]], outcome)
                expected[outcome] += 1
                expected["detect"] += outcome == "Aborted"
                expected["lead"] += outcome == "Promoted"
        elif action == "restore":
            due = [
                k
                for k, r in enumerate(now)
                if r.outcome == "Aborted" and r.time_to_restore_seconds is None
            ]
            if due:
                now[due[0]] = now[due[0]].model_copy(update={"time_to_restore_seconds": 2.0})
                expected["restore"] += 1
        m.observe_releases("shop", "web", shown, now)
        shown = now
    labels = {"namespace": "shop", "rollout": "web"}
    got = {
        "Promoted": releases_counted(m, "Promoted"),
        "Aborted": releases_counted(m, "Aborted", "Manual"),
        "Superseded": releases_counted(m, "Superseded"),
        "detect": value(m, "stepwise_release_time_to_detect_seconds_count", **labels),
        "restore": value(m, "stepwise_release_time_to_restore_seconds_count", **labels),
        "lead": value(m, "stepwise_release_lead_time_seconds_count", **labels),
    }
    assert got == expected


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
    samples = counts(m, "stepwise_api_requests", "verb", "code")
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
