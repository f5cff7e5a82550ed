"""Webhook notifications from real controller processes to a local HTTP receiver: each
one exactly once through a SIGKILL and leader changes, delivered once a failing receiver
recovers, and a receiver that hangs slows neither the reconciles nor the other targets.

Exactly once holds under one condition, which these tests do not hit on purpose: a
process killed after a receiver answered 2xx but before the id reached the ledger
ConfigMap (milliseconds) sends that notification again when the next leader scans; the
payload's ``id`` is the same both times, so a receiver can drop the repeat. The first
test kills each leader only once the ledger holds what it delivered, so any repeat it
saw would be a fault, not that window.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from pydantic import TypeAdapter

from controller.api import intents
from controller.api.rollout import Release
from controller.core import notifications as nt
from controller.runtime.notifier import Ledger
from localcluster.controller import ControllerProcess
from tests.support.clock import FakeClock
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc
from tests.support.receiver import Receiver
from tests.support.runtime import log_lines, metric

pytestmark = pytest.mark.integration

STEPS = [{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {}}]
HALF = [{"setWeight": 50}, {"pause": {}}]
LEDGER = "stepwise-notifications-ledger"


@dataclass(frozen=True)
class Hooks:
    """A test's namespace (the controller's notifications namespace too), a local webhook
    receiver recording every POST, and where controller processes keep their files."""

    kube: Cluster
    rx: Receiver
    api_client: client.ApiClient
    kubeconfig: Path
    tmp_path: Path

    def configure(self, targets: list[dict[str, Any]]) -> None:
        """The targets ConfigMap and a Secret holding each target's URL (``path`` becomes
        the receiver's URL for it)."""
        core = client.CoreV1Api(self.api_client)
        secret: dict[str, str] = {}
        docs = []
        for given in targets:
            t = dict(given)
            key = f"{t['name']}-url"
            secret[key] = base64.b64encode(self.rx.url(t.pop("path")).encode()).decode()
            docs.append({**t, "url": {"secretKeyRef": {"name": "hooks", "key": key}}})
        core.create_namespaced_secret(
            self.kube.ns,
            client.V1Secret(metadata=client.V1ObjectMeta(name="hooks"), data=secret),
        )
        core.create_namespaced_config_map(
            self.kube.ns,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="stepwise-notifications"),
                data={"targets": yaml.safe_dump(docs)},
            ),
        )

    def controller(self, name: str = "controller", **kw: Any) -> ControllerProcess:
        """A controller process whose notifications namespace is the test's (not started)."""
        return ControllerProcess(
            self.kubeconfig,
            self.tmp_path,
            name=name,
            namespaces=[self.kube.ns],
            extra=[f"--notifications-namespace={self.kube.ns}"],
            **kw,
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[ControllerProcess]:
        """One controller process, started, and stopped on leaving."""
        proc = self.controller()
        proc.start()
        try:
            yield proc
        finally:
            proc.stop()

    def create_app(self, replicas: int, steps: list[dict[str, Any]], notify: str = "") -> None:
        """The Rollout ``app`` (subscribed to the ``notify`` targets), once Healthy."""
        doc = rollout_doc("app", replicas=replicas, steps=steps)
        if notify:
            doc["metadata"]["annotations"] = {nt.NOTIFY_ANNOTATION: notify}
        self.kube.create(doc)
        wait_for("app healthy", lambda: self.kube.healthy("app"))


@pytest.fixture
def hooks(
    kube: Cluster, api_client: client.ApiClient, kubeconfig: Path, tmp_path: Path
) -> Iterator[Hooks]:
    with Receiver() as rx:
        yield Hooks(kube, rx, api_client, kubeconfig, tmp_path)


def ledger_ids(api_client: client.ApiClient, namespace: str) -> set[str]:
    """The ids in the ledger ConfigMap (none while it does not exist)."""
    try:
        cm = client.CoreV1Api(api_client).read_namespaced_config_map(LEDGER, namespace)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return set()
        raise
    return set(nt.parse_ledger((cm.data or {}).get("delivered")))


def expected(kube: Cluster, name: str, target: nt.Target) -> list[nt.Notification]:
    """Every notification the Rollout's record makes due to ``target`` (none delivered)."""
    raw = kube.get(name)
    releases = TypeAdapter(list[Release]).validate_python(raw["status"].get("releases") or [])
    meta = raw["metadata"]
    record = nt.RolloutRecord(kube.ns, name, meta["uid"], releases, meta.get("annotations") or {})
    return nt.due([record], [target], set(), dt.datetime.now(dt.UTC), dt.timedelta(days=1))


def delivered(rx: Receiver, path: str) -> collections.Counter[str]:
    """How many times each id was answered 2xx at ``path``."""
    return collections.Counter(p.body["id"] for p in rx.received(path) if 200 <= p.status < 300)


def got(rx: Receiver, path: str, kind: str, revision: str) -> bool:
    """Whether ``path`` was answered 2xx for a ``kind`` notification of ``revision``."""
    return any(
        p.body.get("kind") == kind and p.body.get("revision") == revision and p.status == 200
        for p in rx.received(path)
    )


def leads(proc: ControllerProcess) -> bool:
    """Whether the process says it leads."""
    try:
        return "stepwise_leader 1.0" in proc.metrics()
    except OSError:
        return False


def target(name: str, events: Iterable[nt.EventKind] = nt.DEFAULT_EVENTS) -> nt.Target:
    """The target as the controller parses it (for deriving the expected ids)."""
    return nt.Target(
        name, "json", nt.SecretRef("hooks", f"{name}-url"), events=frozenset(events), default=True
    )


def test_each_notification_arrives_exactly_once_through_a_sigkill_and_leader_changes(
    hooks: Hooks,
) -> None:
    """Two controllers with leader election. The leader is SIGKILLed while the canary
    waits for approval and one receiver (``late``) is failing; the other process takes
    over, and the killed one starts again as a follower; later that leader is killed too
    and the first leads again, through a promotion and an abort. Every notification the
    final record holds reached each receiver with exactly one 2xx, including those that
    the killed leader could not deliver."""
    kube, rx, api_client, namespace = hooks.kube, hooks.rx, hooks.api_client, hooks.kube.ns
    rx.script("/late", 503)
    hooks.configure(
        [
            {"name": "all", "path": "/all", "default": True, "events": list(nt.KINDS)},
            {"name": "late", "path": "/late", "default": True},
        ],
    )
    lease = {"leader_election": True, "lease_name": "notify", "lease_namespace": namespace}
    a = hooks.controller("a", **lease)
    b = hooks.controller("b", **lease)
    a.start()
    wait_for("a leads", lambda: leads(a))
    b.start()
    try:
        hooks.create_app(4, STEPS)
        canary = kube.set_image("app", "registry.local/app:v2")
        wait_for("paused sent", lambda: got(rx, "/all", "paused", canary), 60)
        paused = next(
            n for n in expected(kube, "app", target("all", nt.KINDS)) if n.kind == "paused"
        )
        wait_for("paused in the ledger", lambda: paused.id in ledger_ids(api_client, namespace))
        assert not got(rx, "/late", "paused", canary)  # still failing: nothing delivered there
        assert not log_lines(b, "notification delivered"), "a follower sent"
        a.sigkill()
        rx.script("/late", 200)  # it recovers while no one leads
        wait_for("b leads", lambda: leads(b), timeout=15)
        a.start()
        wait_for("late gets the pause from b", lambda: got(rx, "/late", "paused", canary), 30)
        kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 3)})
        wait_for("promoted sent", lambda: got(rx, "/all", "promoted", canary), 60)
        promoted = next(
            n
            for n in expected(kube, "app", target("all", nt.KINDS))
            if n.kind == "promoted" and n.release.revision == canary
        )
        wait_for("promoted in the ledger", lambda: promoted.id in ledger_ids(api_client, namespace))
        b.sigkill()
        wait_for("a leads again", lambda: leads(a), timeout=15)
        third = kube.set_image("app", "registry.local/app:v3")
        wait_for("v3 started sent", lambda: got(rx, "/all", "started", third), 60)
        kube.annotate("app", **{intents.ABORT: third})
        wait_for("aborted sent", lambda: got(rx, "/all", "aborted", third), 60)
        wait_for("late aborted", lambda: got(rx, "/late", "aborted", third), 60)
        for name, events in (("all", nt.KINDS), ("late", nt.DEFAULT_EVENTS)):
            ids = {n.id for n in expected(kube, "app", target(name, events))}
            wait_for(
                f"{name} all in the ledger",
                lambda ids=ids: ids <= ledger_ids(api_client, namespace),  # type: ignore[misc]
                30,
            )
        time.sleep(3)  # a repeat would come from the next scans
    finally:
        a.stop()
        b.stop()
    for name, events in (("all", nt.KINDS), ("late", nt.DEFAULT_EVENTS)):
        want = expected(kube, "app", target(name, events))
        counts = delivered(rx, f"/{name}")
        assert set(counts) == {n.id for n in want}, (name, counts, [n.kind for n in want])
        assert set(counts.values()) == {1}, (name, counts)
    kinds = {(p.body["kind"], p.body["revision"]) for p in rx.received("/all")}
    assert {
        ("paused", canary),
        ("promoted", canary),
        ("started", third),
        ("aborted", third),
    } <= kinds
    assert any(k == "step-completed" for k, _ in kinds)
    for path in ("/all", "/late"):
        lags = sorted(
            p.wall - dt.datetime.fromisoformat(p.body["at"]).timestamp()
            for p in rx.received(path)
            if p.status == 200
        )
        print(  # a figure for the README, not an assertion
            f"{path}: from the record's time to the receiver: median "
            f"{lags[len(lags) // 2]:.2f}s, max {lags[-1]:.2f}s over {len(lags)}"
        )
    aborted = next(p.body for p in rx.received("/all") if p.body["kind"] == "aborted")
    assert aborted["reason"] == "Manual"
    # Neither process logged a URL: the receiver's port is in every one.
    port = str(rx.server.server_address[1])
    for proc in (a, b):
        assert port not in proc.log_path.read_text(), f"{proc.name} logged a webhook URL"


def test_a_receiver_that_fails_gets_the_notification_once_it_recovers(hooks: Hooks) -> None:
    """500, 500, then 200: retried with backoff until the 200, then never sent again; a
    receiver answering 404 is tried once per notification and given up on."""
    kube, rx = hooks.kube, hooks.rx
    rx.script("/flaky", 500, 500, 200)
    rx.script("/gone", 404)
    hooks.configure(
        [
            {"name": "flaky", "path": "/flaky", "default": True},
            {"name": "gone", "path": "/gone", "default": True},
        ],
    )
    with hooks.running() as proc:
        hooks.create_app(2, HALF)
        want = {n.id for n in expected(kube, "app", target("flaky"))}
        gone = {n.id for n in expected(kube, "app", target("gone"))}
        assert want, "the first revision's release is announced"
        wait_for("flaky delivered", lambda: set(delivered(rx, "/flaky")) == want, 60)
        wait_for("gone tried", lambda: len(rx.received("/gone")) == len(gone), 30)
        time.sleep(3)
    first = rx.received("/flaky")[0].body["id"]
    assert [p.status for p in rx.received("/flaky") if p.body["id"] == first] == [500, 500, 200]
    assert set(delivered(rx, "/flaky").values()) == {1}
    assert collections.Counter(p.body["id"] for p in rx.received("/gone")) == dict.fromkeys(gone, 1)
    assert log_lines(proc, "notification refused by its receiver; not retried", target="gone")
    retried = log_lines(proc, "notification not delivered; retrying", target="flaky")
    assert [e["status"] for e in retried] == [500, 500]


def test_a_hanging_receiver_slows_no_reconcile_and_no_other_target(hooks: Hooks) -> None:
    """A default target that never answers (10 s timeout per attempt) beside one the
    Rollout subscribes to by annotation: the rollout is promoted and the next one
    aborted as usual, the other target hears all of it, and no reconcile took even half
    the hang's timeout."""
    kube, rx = hooks.kube, hooks.rx
    rx.hang("/hang")
    hooks.configure(
        [
            {"name": "hang", "path": "/hang", "default": True, "timeoutSeconds": 10},
            {"name": "ok", "path": "/ok"},
        ],
    )
    with hooks.running() as proc:
        hooks.create_app(4, HALF, notify="ok")
        wait_for("hang tried", lambda: rx.received("/hang"))
        canary = kube.set_image("app", "registry.local/app:v2")
        wait_for("paused", lambda: kube.status("app").get("currentStepIndex") == 1, 30)
        kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 1)})
        wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary, 30)
        third = kube.set_image("app", "registry.local/app:v3")
        wait_for("v3 canary", lambda: kube.status("app").get("canaryRevision") == third, 30)
        kube.annotate("app", **{intents.ABORT: third})
        wait_for("aborted", lambda: "abort" in kube.status("app"), 30)
        want = {n.id for n in expected(kube, "app", target("ok"))}
        wait_for("ok heard everything", lambda: set(delivered(rx, "/ok")) == want, 30)
        wait_for(
            "the hang timed out",
            lambda: log_lines(proc, "notification not delivered; retrying", target="hang"),
            30,
        )
        page = proc.metrics()
    assert set(delivered(rx, "/ok").values()) == {1}
    kinds = {(p.body["kind"], p.body["revision"]) for p in rx.received("/ok")}
    assert {("paused", canary), ("promoted", canary), ("aborted", third)} <= kinds
    assert not delivered(rx, "/hang")
    count = metric(page, "stepwise_reconcile_duration_seconds_count")
    under = metric(page, "stepwise_reconcile_duration_seconds_bucket", le="5.0")
    assert count > 10
    assert under == count, f"{count - under} reconcile(s) took 5 s or more"
    bound = next(
        le
        for le in ("0.1", "0.25", "0.5", "1.0", "2.5", "5.0")
        if metric(page, "stepwise_reconcile_duration_seconds_bucket", le=le) == count
    )
    print(f"{count:.0f} reconciles beside a hanging target, every one under {bound} s")
    timeouts = log_lines(proc, "notification not delivered; retrying", target="hang")
    assert timeouts
    assert all(e["status"] is None for e in timeouts)


def test_a_wrong_configuration_is_reported_and_stops_nothing(hooks: Hooks) -> None:
    """An unknown format, a Secret key that does not exist, and a Rollout naming a target
    that does not exist: each is logged naming the ConfigMap and field (or the Secret and
    key) and shown as a Warning event, while the Rollout rolls out and the one good target
    is notified."""
    kube, rx, api_client, namespace = hooks.kube, hooks.rx, hooks.api_client, hooks.kube.ns
    hooks.configure(
        [
            {"name": "good", "path": "/good", "default": True},
            {"name": "teams", "path": "/teams", "default": True, "format": "teams"},
        ],
    )
    cm = client.CoreV1Api(api_client).read_namespaced_config_map(
        "stepwise-notifications", namespace
    )
    docs = yaml.safe_load(cm.data["targets"])
    docs.append(
        {"name": "nokey", "default": True, "url": {"secretKeyRef": {"name": "hooks", "key": "x"}}}
    )
    client.CoreV1Api(api_client).patch_namespaced_config_map(
        "stepwise-notifications", namespace, {"data": {"targets": yaml.safe_dump(docs)}}
    )
    with hooks.running() as proc:
        hooks.create_app(2, HALF, notify="good,pager")
        want = {n.id for n in expected(kube, "app", target("good"))}
        wait_for("good notified", lambda: set(delivered(rx, "/good")) == want, 30)
        wait_for("rollout warned", lambda: "NotificationTarget" in kube.events("app"))
        problems = [e["problem"] for e in log_lines(proc, "notification config problem")]
    where = f"ConfigMap {namespace}/stepwise-notifications"
    assert f"{where}: data.targets[1].format: unknown format 'teams' (json or slack)" in problems
    assert any(
        p.startswith(f"{where}: target 'nokey': Secret {namespace}/hooks has no key 'x'")
        for p in problems
    ), problems
    events = client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=stepwise-notifications"
    )
    (event,) = [e for e in events.items if e.reason == "InvalidNotificationConfig"]
    assert event.type == "Warning"
    assert "data.targets[1].format" in event.message
    assert "'nokey'" in event.message
    (warned,) = kube.event_messages("app", "NotificationTarget")
    assert "pager" in warned
    assert where in warned
    assert not rx.received("/teams")


def test_the_ledger_merges_concurrent_writers_and_prunes_old_entries(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Two processes writing the ledger from the same resourceVersion: the second gets a
    409, re-reads and merges, so both ids are kept; an entry older than twice the
    maximum age is dropped by the next write."""
    core = client.CoreV1Api(api_client)
    clock = FakeClock(wall=dt.datetime.now(dt.UTC))
    old, new = (Ledger(core, namespace, LEDGER, dt.timedelta(hours=1), clock) for _ in range(2))
    old.load()
    new.load()
    old.record("first")
    new.record("second")  # written over a stale (absent) ledger: AlreadyExists, merged
    clock.advance(3600)
    old.record("third")  # stale resourceVersion: 409, merged
    assert ledger_ids(api_client, namespace) == {"first", "second", "third"}
    clock.advance(3601)
    new.record("fourth")
    assert ledger_ids(api_client, namespace) == {"third", "fourth"}
