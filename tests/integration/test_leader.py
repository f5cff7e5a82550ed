"""Leader election on a real Lease: one leader at a time, quick hand-over on release,
takeover after a crash once the lease expires, and a leader that cannot renew stops
claiming leadership within the renew deadline."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from controller.errors import LeadershipLostError
from controller.runtime.leader import LeaderElector
from localcluster import LocalCluster
from tests.support.kube import wait_for

pytestmark = pytest.mark.integration

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 3.0, 2.0, 0.5


class Calls:
    """Counts callback invocations, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = 0
        self.stopped = 0

    def on_started(self) -> None:
        with self._lock:
            self.started += 1

    def on_stopped(self) -> None:
        with self._lock:
            self.stopped += 1


def elector(
    api_client: client.ApiClient,
    namespace: str,
    identity: str,
    calls: Calls | None = None,
    *,
    watch: bool = True,
) -> LeaderElector:
    """An elector with short test timings on the lease ``stepwise-test``."""
    return LeaderElector(
        api_client,
        namespace,
        "stepwise-test",
        identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
        request_timeout=1.0,
        on_started_leading=calls.on_started if calls else None,
        on_stopped_leading=calls.on_stopped if calls else None,
        watch=watch,
    )


@contextlib.contextmanager
def started(*electors: LeaderElector) -> Iterator[None]:
    """Run the electors; stop (and release) any still running afterwards."""
    for e in electors:
        e.start()
    try:
        yield
    finally:
        for e in electors:
            e.stop(timeout=5)


def leaders(*electors: LeaderElector) -> list[str]:
    """Identities of the electors that currently claim leadership."""
    return [e.identity for e in electors if e.is_leader()]


def lease_holder(api_client: client.ApiClient, namespace: str) -> str:
    """The holderIdentity stored in the Lease."""
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("stepwise-test", namespace)
    return lease.spec.holder_identity or ""


def test_two_candidates_exactly_one_leads(api_client: client.ApiClient, namespace: str) -> None:
    """Of two electors on one Lease, exactly one leads, and the Lease names it."""
    a_calls, b_calls = Calls(), Calls()
    a = elector(api_client, namespace, "replica-a", a_calls)
    b = elector(api_client, namespace, "replica-b", b_calls)
    with started(a, b):
        wait_for("a leader", lambda: leaders(a, b), timeout=5, interval=0.02)
        deadline = time.monotonic() + 2 * LEASE_DURATION
        seen: set[str] = set()
        while time.monotonic() < deadline:
            now_leading = leaders(a, b)
            assert len(now_leading) <= 1, f"two leaders at once: {now_leading}"
            seen.update(now_leading)
            time.sleep(0.02)
        assert len(seen) == 1, f"leadership moved without cause: {seen}"
        (leader,) = seen
        follower = b if leader == a.identity else a
        assert lease_holder(api_client, namespace) == leader
        assert follower.holder == leader
        with pytest.raises(LeadershipLostError):
            follower.fence()
        (a if leader == a.identity else b).fence()
        # Counted before the electors stop: the leader's release on stop hands the
        # Lease to the watching follower at once, which is a second, legitimate start.
        assert (a_calls.started, b_calls.started) in {(1, 0), (0, 1)}


def test_stopping_the_leader_releases_the_lease_for_a_quick_takeover(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A leader that stops hands the Lease back; the other leads within about a retry period,
    well before the lease would have expired."""
    calls = Calls()
    a = elector(api_client, namespace, "replica-a", calls)
    with started(a):
        wait_for("a leads", a.is_leader, timeout=5, interval=0.02)
        b = elector(api_client, namespace, "replica-b")
        with started(b):
            time.sleep(RETRY_PERIOD * 3)
            assert leaders(a, b) == ["replica-a"]
            stop_at = time.monotonic()
            a.stop()
            assert not a.is_leader(), "is_leader turns False the moment stop() is called"
            wait_for("b leads", b.is_leader, timeout=LEASE_DURATION + 2, interval=0.02)
            took = time.monotonic() - stop_at
            assert took < LEASE_DURATION, f"release did not speed up takeover ({took:.2f}s)"
            assert lease_holder(api_client, namespace) == "replica-b"
    assert (calls.started, calls.stopped) == (1, 1)


@pytest.mark.parametrize(
    ("watch", "within"),
    [
        # Watching, the follower saw the last renewal (at most one retry period before
        # the crash) at once and wakes when it expires: lease_duration plus latency.
        pytest.param(True, LEASE_DURATION + 0.3, id="watching"),
        # Polling only, it may see that renewal one jittered poll late.
        pytest.param(False, LEASE_DURATION + 2, id="polling"),
    ],
)
def test_a_crashed_leader_is_replaced_after_the_lease_expires(
    api_client: client.ApiClient, namespace: str, watch: bool, within: float
) -> None:
    """When the leader dies without releasing, the other takes over only once the lease
    expires: within lease_duration when it watches the Lease, lease_duration + 2 s when
    it only polls."""
    a = elector(api_client, namespace, "replica-a")
    with started(a):
        wait_for("a leads", a.is_leader, timeout=5, interval=0.02)
        b = elector(api_client, namespace, "replica-b", watch=watch)
        with started(b):
            time.sleep(RETRY_PERIOD * 3)
            renewed = a.last_renewal
            crash_at = time.monotonic()
            a.stop(release=False)  # like a crash: the Lease still names replica-a
            assert lease_holder(api_client, namespace) == "replica-a"
            wait_for("b leads", b.is_leader, timeout=LEASE_DURATION + 3, interval=0.02)
            took = time.monotonic() - crash_at
            assert took <= within, f"takeover took {took:.2f}s"
            assert renewed is not None
            since_renewal = time.monotonic() - renewed
            assert since_renewal >= LEASE_DURATION, (
                f"took over {since_renewal:.2f}s after the last renewal, before it expired"
            )


def test_leader_that_cannot_renew_stops_leading_within_the_renew_deadline(
    api_client: client.ApiClient, namespace: str, owned_cluster: LocalCluster
) -> None:
    """With the API server frozen, is_leader() turns False (and fence raises) within
    renew_deadline, on_stopped_leading runs, and leadership returns after the thaw."""
    calls = Calls()
    a = elector(api_client, namespace, "replica-a", calls)
    apiserver = owned_cluster.component("kube-apiserver")
    with started(a):
        wait_for("a leads", a.is_leader, timeout=5, interval=0.02)
        time.sleep(RETRY_PERIOD * 2)
        apiserver.signal(signal.SIGSTOP)
        try:
            frozen_at = time.monotonic()
            wait_for(
                "leadership given up",
                lambda: not a.is_leader(),
                timeout=RENEW_DEADLINE + 2,
                interval=0.01,
            )
            took = time.monotonic() - frozen_at
            with pytest.raises(LeadershipLostError):
                a.fence()
            wait_for("on_stopped_leading", lambda: calls.stopped == 1, timeout=2, interval=0.02)
        finally:
            apiserver.signal(signal.SIGCONT)
        assert took <= RENEW_DEADLINE + 0.1, f"still claimed leadership {took:.2f}s into the outage"
        # is_leader() turns True just before on_started_leading runs on its own thread.
        wait_for("a leads again", lambda: a.is_leader() and calls.started == 2, timeout=10)
        assert calls.started == 2
