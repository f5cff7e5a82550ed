"""Notifications derived from the delivery record: what is due (each kind, opt-in steps,
default and annotated targets, maximum age, the ledger), stable ids, payloads, the
targets' configuration and its errors, and the webhook POST against a local receiver."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import yaml

from controller.adapters.webhook import WebhookSender, scrub
from controller.api.rollout import Release, ReleaseApproval, ReleaseStep
from controller.core import notifications as nt
from controller.runtime.notifier import parse_config
from tests.support.receiver import Receiver

T0 = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
URL = nt.SecretRef("hooks", "url")


def at(seconds: float) -> dt.datetime:
    """``seconds`` after T0."""
    return T0 + dt.timedelta(seconds=seconds)


def target(name: str = "ops", **kw: Any) -> nt.Target:
    """A default json target unless told otherwise."""
    return nt.Target(name=name, format=kw.pop("format", "json"), url=URL, **{"default": True, **kw})


def release(**kw: Any) -> Release:
    """A release of revision abc that started at T0+10s."""
    base: dict[str, Any] = {
        "revision": "abc",
        "images": ["registry.local/app:v2"],
        "changed_by": "kubectl-set",
        "changed_at": at(0),
        "started_at": at(10),
    }
    return Release(**{**base, **kw})


def aborted() -> Release:
    """A release aborted by analysis after two steps and one wait for approval."""
    return release(
        steps=[ReleaseStep(index=0, ended_at=at(20)), ReleaseStep(index=1, ended_at=at(30))],
        approvals=[ReleaseApproval(step=1, since=at(25))],
        outcome="Aborted",
        reason="AnalysisFailed",
        message="analysis step-2: metric error-rate failed: 0.31 > 0.05",
        ended_at=at(60),
        detected_at=at(50),
        restored_at=at(62),
        time_to_detect_seconds=50,
        time_to_restore_seconds=2,
    )


def record(*releases: Release, uid: str = "u1", **annotations: str) -> nt.RolloutRecord:
    """Rollout shop/checkout with these releases."""
    return nt.RolloutRecord("shop", "checkout", uid, list(releases), annotations)


def kinds(notes: list[nt.Notification]) -> list[tuple[str, int | None]]:
    """(kind, step) of each notification, in order."""
    return [(n.kind, n.step) for n in notes]


# -- derivation ------------------------------------------------------------------------


def test_each_kind_of_an_aborted_release_in_the_order_it_happened() -> None:
    """Started, paused (with its step), then aborted; steps are not sent by default."""
    notes = nt.due([record(aborted())], [target()], set(), at(70), HOUR)
    assert kinds(notes) == [("started", None), ("paused", 1), ("aborted", None)]
    assert [n.at for n in notes] == [at(10), at(25), at(60)]


def test_step_completed_is_opt_in() -> None:
    """A target listing step-completed hears each completed step, with its index."""
    t = target(events=frozenset({"step-completed"}))
    notes = nt.due([record(aborted())], [t], set(), at(70), HOUR)
    assert kinds(notes) == [("step-completed", 0), ("step-completed", 1)]


def test_promoted_release() -> None:
    """A promoted release ends with promoted, and an in-progress one has only started."""
    done = release(outcome="Promoted", ended_at=at(90), lead_time_seconds=90)
    notes = nt.due(
        [record(done, release(revision="def", started_at=at(95)))], [target()], set(), at(100), HOUR
    )
    assert [(n.kind, n.release.revision) for n in notes] == [
        ("started", "abc"),
        ("promoted", "abc"),
        ("started", "def"),
    ]


def test_superseded_release_announces_no_outcome() -> None:
    """Superseded is not an event of its own: the next release's start says it."""
    notes = nt.due(
        [record(release(outcome="Superseded", ended_at=at(40)))], [target()], set(), at(50), HOUR
    )
    assert kinds(notes) == [("started", None)]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param(None, ["ops"], id="defaults-only"),
        pytest.param("team-b", ["ops", "team-b"], id="annotation-adds"),
        pytest.param(" team-b , ops ,", ["ops", "team-b"], id="spaces-and-repeats"),
        pytest.param("nobody", ["ops"], id="unknown-name-ignored"),
        pytest.param("-ops", [], id="a-default-left-out"),
        pytest.param("team-b, -ops", ["team-b"], id="one-added-one-left-out"),
        pytest.param("team-b,-team-b", ["ops"], id="leaving-out-wins"),
    ],
)
def test_default_targets_and_annotated_ones(annotation: str | None, expected: list[str]) -> None:
    """A Rollout notifies every default target and the ones its annotation names, less
    the ones it names with a leading ``-``."""
    targets = [target("ops"), target("team-b", default=False), target("team-c", default=False)]
    ann = {nt.NOTIFY_ANNOTATION: annotation} if annotation is not None else {}
    notes = nt.due([record(release(), **ann)], targets, set(), at(20), HOUR)
    assert sorted(n.target for n in notes) == expected


def test_unknown_annotated_names_are_reported() -> None:
    """subscribed() names what the annotation asks for that no target has."""
    chosen, unknown = nt.subscribed(
        {nt.NOTIFY_ANNOTATION: "ops,nope,-zz"}, [target("ops", default=False)]
    )
    assert [t.name for t in chosen] == ["ops"]
    assert unknown == ["nope", "zz"]


def test_no_target_no_notification() -> None:
    """Without a default target or an annotation, nothing is due."""
    assert nt.due([record(aborted())], [target(default=False)], set(), at(70), HOUR) == []


def test_happenings_older_than_the_maximum_age_are_never_due() -> None:
    """An old record (a new installation, a long outage) sends only what is recent."""
    notes = nt.due(
        [record(aborted())],
        [target()],
        set(),
        at(60) + HOUR - dt.timedelta(seconds=1),
        dt.timedelta(hours=1),
    )
    assert kinds(notes) == [("aborted", None)]
    assert nt.due([record(aborted())], [target()], set(), at(61) + HOUR, HOUR) == []


def test_expired_matches_the_maximum_age() -> None:
    """A retrying sender gives up exactly when the happening leaves the window."""
    (n,) = nt.due([record(release())], [target()], set(), at(10), HOUR)
    assert not nt.expired(n, at(10) + HOUR, HOUR)
    assert nt.expired(n, at(11) + HOUR, HOUR)


def test_delivered_ids_are_not_due_again() -> None:
    """The ledger's ids are filtered out; the rest stay due."""
    first = nt.due([record(aborted())], [target()], set(), at(70), HOUR)
    again = nt.due([record(aborted())], [target()], {first[0].id}, at(70), HOUR)
    assert again == first[1:]


def test_ids_are_stable_and_distinct() -> None:
    """The same happening to the same target has one id, whatever else changed in the
    record; any part of (uid, revision, attempt, kind, index, target) changes it."""
    ids = [
        n.id
        for n in nt.due(
            [record(aborted())], [target(events=frozenset(nt.KINDS))], set(), at(70), HOUR
        )
    ]
    assert len(set(ids)) == len(ids) == 5  # started, paused, 2 steps, aborted
    grown = aborted().model_copy(
        update={"steps": [*aborted().steps, ReleaseStep(index=2, ended_at=at(65))]}
    )
    later = nt.due([record(grown)], [target(events=frozenset(nt.KINDS))], set(), at(70), HOUR)
    assert set(ids) <= {n.id for n in later}
    base = ("u1", "abc", 1, "started", 0, "ops")
    variants = [
        ("u2", "abc", 1, "started", 0, "ops"),
        ("u1", "abd", 1, "started", 0, "ops"),
        ("u1", "abc", 2, "started", 0, "ops"),
        ("u1", "abc", 1, "paused", 0, "ops"),
        ("u1", "abc", 1, "started", 1, "ops"),
        ("u1", "abc", 1, "started", 0, "team"),
    ]
    assert nt.notification_id(*base) == nt.notification_id(*base)
    assert len({nt.notification_id(*v) for v in [base, *variants]}) == 7


def test_ids_survive_the_record_dropping_its_oldest_waits() -> None:
    """The record keeps only the latest waits of a release; the ids of those it keeps do
    not change when an older one is dropped."""
    waits = [ReleaseApproval(step=1, since=at(20 + i)) for i in range(3)]
    full = nt.due([record(release(approvals=waits))], [target()], set(), at(30), HOUR)
    trimmed = nt.due([record(release(approvals=waits[1:]))], [target()], set(), at(30), HOUR)
    assert {n.id for n in trimmed} < {n.id for n in full}
    assert len(full) - len(trimmed) == 1


def test_a_retry_is_a_new_attempt_with_its_own_notifications() -> None:
    """Attempt 2 of the same revision is announced again, with other ids."""
    notes = nt.due(
        [record(aborted(), release(attempt=2, started_at=at(80)))], [target()], set(), at(90), HOUR
    )
    started = [n for n in notes if n.kind == "started"]
    assert [n.release.attempt for n in started] == [1, 2]
    assert started[0].id != started[1].id


# -- delivery outcome and ledger -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (None, "retry"),
        (500, "retry"),
        (503, "retry"),
        (429, "retry"),
        (408, "retry"),
        (400, "drop"),
        (401, "drop"),
        (404, "drop"),
        (302, "drop"),
    ],
)
def test_outcome_of_an_answer(status: int | None, outcome: str) -> None:
    """2xx delivered; no answer, 408, 429 and 5xx retried; the rest dropped."""
    assert nt.outcome_of(status) == outcome


def test_ledger_round_trip_and_prune() -> None:
    """The ledger's JSON reads back; entries older than twice the max age are pruned."""
    entries = {"a": at(0), "b": at(3600), "c": at(7300)}
    assert nt.parse_ledger(nt.render_ledger(entries)) == entries
    assert set(nt.prune(entries, at(7300), HOUR)) == {"b", "c"}


@pytest.mark.parametrize(
    "text",
    [None, "", "not json", "[1, 2]", '{"a": 5, "b": "yesterday"}'],
)
def test_a_damaged_ledger_reads_as_empty(text: str | None) -> None:
    """What does not parse is skipped: at worst a repeat, never an exception."""
    assert nt.parse_ledger(text) == {}


# -- payloads --------------------------------------------------------------------------


def test_json_payload_of_an_abort() -> None:
    """The generic payload has the id, what happened, the reason and message, and the
    release's times and figures."""
    (n,) = [
        x
        for x in nt.due([record(aborted())], [target()], set(), at(70), HOUR)
        if x.kind == "aborted"
    ]
    doc = json.loads(nt.render(n, "json"))
    assert doc == {
        "id": n.id,
        "kind": "aborted",
        "namespace": "shop",
        "rollout": "checkout",
        "revision": "abc",
        "attempt": 1,
        "images": ["registry.local/app:v2"],
        "changedBy": "kubectl-set",
        "step": None,
        "at": "2026-12-06T03:01:00Z",
        "outcome": "Aborted",
        "reason": "AnalysisFailed",
        "message": "analysis step-2: metric error-rate failed: 0.31 > 0.05",
        "times": {
            "changedAt": "2026-12-06T03:00:00Z",
            "startedAt": "2026-12-06T03:00:10Z",
            "endedAt": "2026-12-06T03:01:00Z",
            "detectedAt": "2026-12-06T03:00:50Z",
            "restoredAt": "2026-12-06T03:01:02Z",
        },
        "timeToDetectSeconds": 50.0,
        "timeToRestoreSeconds": 2.0,
        "leadTimeSeconds": None,
    }


def test_json_payload_of_a_start_has_no_outcome() -> None:
    """Reason and message belong to the abort only."""
    (n,) = nt.due([record(aborted())], [target(events=frozenset({"started"}))], set(), at(70), HOUR)
    doc = nt.render_json(n)
    assert (doc["kind"], doc["outcome"], doc["reason"], doc["message"]) == (
        "started",
        None,
        None,
        "",
    )


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (
            "started",
            "shop/checkout: rolling out revision abc [registry.local/app:v2], "
            "changed by kubectl-set",
        ),
        (
            "paused",
            "shop/checkout: revision abc waits for approval at step 1: "
            "stepwise promote checkout -n shop",
        ),
        ("step-completed", "shop/checkout: revision abc completed step 0"),
        (
            "aborted",
            "shop/checkout: revision abc aborted (AnalysisFailed): analysis step-2: metric "
            "error-rate failed: 0.31 > 0.05; detected 50s after the change, traffic back on "
            "stable in 2.0s",
        ),
    ],
)
def test_slack_payload_says_what_happened(kind: str, words: str) -> None:
    """Slack's text (and its one block) is a sentence a person acts on."""
    t = target(format="slack", events=frozenset(nt.KINDS))
    n = next(x for x in nt.due([record(aborted())], [t], set(), at(70), HOUR) if x.kind == kind)
    doc = json.loads(nt.render(n, "slack"))
    assert doc["text"] == words
    assert doc["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": words}}]


def test_slack_promoted_with_lead_time() -> None:
    """A promotion gives its lead time."""
    done = release(outcome="Promoted", ended_at=at(250), lead_time_seconds=250)
    n = nt.due([record(done)], [target()], set(), at(260), HOUR)[-1]
    assert (
        nt.summary(n)
        == "shop/checkout: revision abc promoted [registry.local/app:v2] (lead time 4m10s)"
    )


# -- configuration ---------------------------------------------------------------------

WHERE = "ConfigMap stepwise-system/stepwise-notifications"


def parse(text: str) -> tuple[list[nt.Target], list[str]]:
    """The targets of a ``targets`` YAML text."""
    return nt.parse_targets(yaml.safe_load(text), WHERE)


def test_a_full_configuration() -> None:
    """Every field read, defaults filled in."""
    targets, problems = parse(
        """
        - name: ops
          format: slack
          url: {secretKeyRef: {name: hooks, key: ops}}
          default: true
        - name: team-b
          url: {secretKeyRef: {name: hooks, key: team-b}}
          token: {secretKeyRef: {name: hooks, key: team-b-token}}
          events: [started, step-completed, aborted]
          timeoutSeconds: 2.5
        """
    )
    assert problems == []
    assert targets == [
        nt.Target("ops", "slack", nt.SecretRef("hooks", "ops"), default=True),
        nt.Target(
            "team-b",
            "json",
            nt.SecretRef("hooks", "team-b"),
            token=nt.SecretRef("hooks", "team-b-token"),
            events=frozenset({"started", "step-completed", "aborted"}),
            timeout=2.5,
        ),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            "[{name: a, format: xml, url: {secretKeyRef: {name: s, key: k}}}]",
            "data.targets[0].format: unknown format 'xml' (json or slack)",
            id="unknown-format",
        ),
        pytest.param("[{name: a}]", "data.targets[0].url: missing", id="no-url"),
        pytest.param(
            "[{name: a, url: https://hooks.example/secret}]",
            "data.targets[0].url: must be {secretKeyRef:",
            id="url-inline-refused",
        ),
        pytest.param(
            "[{name: a, url: {secretKeyRef: {name: s}}}]",
            "data.targets[0].url.secretKeyRef.key: missing",
            id="no-key",
        ),
        pytest.param(
            "[{name: a, url: {secretKeyRef: {name: s, key: k}}, events: [deployed]}]",
            "data.targets[0].events: unknown event(s) ['deployed']",
            id="unknown-event",
        ),
        pytest.param(
            "[{name: 'a b', url: {secretKeyRef: {name: s, key: k}}}]",
            "data.targets[0].name: 'a b' is not a name",
            id="bad-name",
        ),
        pytest.param(
            "[{name: a, url: {secretKeyRef: {name: s, key: k}}, retries: 3}]",
            "data.targets[0].retries: unknown field",
            id="unknown-field",
        ),
        pytest.param(
            "[{name: a, url: {secretKeyRef: {name: s, key: k}}, timeoutSeconds: 0}]",
            "data.targets[0].timeoutSeconds: must be a number of seconds",
            id="bad-timeout",
        ),
        pytest.param("{name: a}", "data.targets: must be a list of targets", id="not-a-list"),
    ],
)
def test_configuration_errors_name_the_configmap_and_field(text: str, problem: str) -> None:
    """Each wrong field is one problem naming the ConfigMap and the field; that target
    is left out."""
    targets, problems = parse(text)
    assert targets == []
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{WHERE}: ")
    assert problem in problems[0]


def test_one_bad_target_leaves_the_others_working() -> None:
    """A typo in one target silences that one only; a name used twice keeps the first."""
    targets, problems = parse(
        """
        - {name: good, url: {secretKeyRef: {name: s, key: k}}}
        - {name: bad, format: teams, url: {secretKeyRef: {name: s, key: k}}}
        - {name: good, format: slack, url: {secretKeyRef: {name: s, key: k2}}}
        """
    )
    assert [(t.name, t.format) for t in targets] == [("good", "json")]
    assert len(problems) == 2
    assert "data.targets[1].format" in problems[0]
    assert "data.targets[2].name: 'good' is named twice" in problems[1]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param({}, "data.targets: missing (a YAML list of targets)", id="no-key"),
        pytest.param(
            {"targets": "- name: a\n  url: [unclosed"},
            "data.targets: not valid YAML at line 2",
            id="bad-yaml",
        ),
    ],
)
def test_configmap_data_errors(data: dict[str, str], problem: str) -> None:
    """A ConfigMap without the key, or with YAML that does not parse, is one problem
    naming it and the key (never the text, which could hold a pasted URL)."""
    assert parse_config(data, WHERE) == ([], [f"{WHERE}: {problem}"])


def test_an_empty_configuration_has_no_targets() -> None:
    """An empty ``targets`` key is no target and no problem."""
    assert parse("") == ([], [])


# -- the webhook POST ------------------------------------------------------------------


def test_post_sends_json_with_the_bearer_token() -> None:
    """The body goes as JSON with the token as a bearer credential; the status comes back."""
    with Receiver() as rx:
        rx.script("/hook", 202)
        got = WebhookSender().post(rx.url("/hook"), b'{"a": 1}', token="s3cret", timeout=5)
        (post,) = rx.received("/hook")
    assert got.status == 202
    assert post.body == {"a": 1}
    assert post.headers["Authorization"] == "Bearer s3cret"
    assert post.headers["Content-Type"] == "application/json"


def test_post_to_a_hanging_receiver_times_out_without_leaking_the_url() -> None:
    """A receiver that never answers is a timeout after the target's timeout; the error
    text shows neither the URL's path nor the token."""
    with Receiver() as rx:
        rx.hang("/T0/secret-path", 30)
        url = rx.url("/T0/secret-path")
        got = WebhookSender().post(url, b"{}", token="tok-123", timeout=0.5)
    assert got.status is None
    assert got.kind == "timeout"
    assert nt.outcome_of(got.status) == "retry"
    assert "secret-path" not in got.error
    assert "127.0.0.1" not in got.error


def test_scrub_removes_url_parts_and_token() -> None:
    """Whole URL, its path, query and host, and the token are all replaced."""
    url = "https://user:pw@hooks.example:8443/services/T0/B1/xyz?k=v"
    text = f"failed {url} and hooks.example:8443 then /services/T0/B1/xyz with tok-9"
    out = scrub(text, url, "tok-9")
    for secret in ("xyz", "user:pw", "hooks.example", "tok-9", "k=v"):
        assert secret not in out, out
