"""``stepwise status``: which pauses wait for approval (decided on statuses the real
``core.plan`` writes), the CI-mode lines, and the one-line API error messages."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from controller.api import intents
from controller.api.rollout import Rollout
from controller.cli import rollouts
from controller.cli.rollouts import PlainView, awaiting_approval, verdict
from tests.support.plan import (
    analysis_rollout,
    annotate,
    at,
    canary_at,
    m,
    make,
    new_image,
    stable_world,
)
from tests.support.world import T0, settle, step

Doc = dict[str, Any]


def doc(ro: Rollout) -> Doc:
    """The Rollout as the CLI reads it from the API server."""
    out: Doc = ro.model_dump(mode="json", by_alias=True, exclude_none=True)
    out["metadata"]["namespace"] = "shop"
    return out


def timed_pause() -> Doc:
    ro, _ = canary_at([{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"pause": {}}])
    return doc(ro)


def indefinite_pause() -> Doc:
    ro, _ = canary_at([{"setWeight": 20}, {"pause": {}}])
    return doc(ro)


def spec_paused() -> Doc:
    ro, world = canary_at([{"setWeight": 20}, {"pause": {}}])
    ro = ro.model_copy(update={"spec": ro.spec.model_copy(update={"paused": True})})
    ro, _ = settle(ro, world, at(1))
    return doc(ro)


def spec_paused_in_timed_pause() -> Doc:
    ro, world = canary_at([{"pause": {"duration": "30s"}}, {"pause": {}}])
    ro = ro.model_copy(update={"spec": ro.spec.model_copy(update={"paused": True})})
    ro, _ = settle(ro, world, at(1))
    return doc(ro)


def inconclusive_step() -> Doc:
    ro, world = analysis_rollout()
    ro, _ = settle(ro, world, at(0))
    ro, _ = step(ro, world, at(1), {("step-1", "errors"): m("Inconclusive")})
    return doc(ro)


def inconclusive_background() -> Doc:
    ro = make(
        [{"setWeight": 10}], routed=True, analysis={"templates": [{"templateName": "errors"}]}
    )
    ro, world = stable_world(ro, routed=True)
    ro, _ = settle(new_image(ro), world, at(0))
    ro, _ = step(ro, world, at(0), {("background", "errors"): m("Inconclusive")})
    return doc(ro)


def running_analysis() -> Doc:
    ro, world = analysis_rollout()
    ro, _ = settle(ro, world, at(0))
    return doc(ro)


def promote_given() -> Doc:
    ro, _ = canary_at([{"setWeight": 20}, {"pause": {}}])
    canary = ro.status.canary_revision
    assert canary is not None
    return doc(annotate(ro, **{intents.PROMOTE: intents.promote_value(canary, 1)}))


def background_promote_given() -> Doc:
    rollout = inconclusive_background()
    status = rollout["status"]
    value = intents.promote_value(status["canaryRevision"], status["currentStepIndex"])
    rollout["metadata"]["annotations"] = {intents.PROMOTE: value}
    return rollout


def promote_full_given() -> Doc:
    ro, _ = canary_at([{"setWeight": 20}, {"pause": {}}])
    assert ro.status.canary_revision is not None
    return doc(annotate(ro, **{intents.PROMOTE_FULL: ro.status.canary_revision}))


@pytest.mark.parametrize(
    ("scenario", "approve"),
    [
        pytest.param(timed_pause, None, id="timed-pause-ends-by-itself"),
        pytest.param(spec_paused, None, id="spec-paused-needs-resume"),
        pytest.param(spec_paused_in_timed_pause, None, id="spec-paused-during-timed-pause"),
        pytest.param(running_analysis, None, id="running-analysis-is-not-paused"),
        pytest.param(indefinite_pause, "stepwise promote app -n shop", id="indefinite-pause"),
        pytest.param(inconclusive_step, "stepwise promote app -n shop", id="inconclusive-step"),
        pytest.param(
            inconclusive_background,
            "stepwise promote app -n shop",
            id="inconclusive-background-after-last-step",
        ),
        pytest.param(promote_given, None, id="promote-already-written"),
        pytest.param(promote_full_given, None, id="promote-full-already-written"),
        pytest.param(background_promote_given, None, id="background-promote-already-written"),
    ],
)
def test_awaiting_approval(scenario: Callable[[], Doc], approve: str | None) -> None:
    """Only an indefinite pause or an inconclusive analysis, not yet approved, waits for a
    person, and the answer names the command that approves it."""
    rollout = scenario()
    assert awaiting_approval(rollout) == approve
    code, reason = verdict(rollout, exit_on_pause=True)
    assert code == (rollouts.EXIT_PAUSED if approve else None), reason
    if approve:
        assert reason.startswith("paused, waiting for approval: ")
        assert reason.endswith(f"run {approve}")


def test_timed_pause_status_is_paused_with_a_start_time() -> None:
    """The timed-pause case above is a real Paused phase (the old CLI exited 2 on it)."""
    status = timed_pause()["status"]
    assert status["phase"] == "Paused"
    assert status["pauseStartTime"]
    assert verdict(timed_pause(), exit_on_pause=False)[0] is None


def test_unobserved_spec_never_exits_on_an_old_pause() -> None:
    """A status from before the latest spec change (set image) is not a verdict yet."""
    rollout = indefinite_pause()
    rollout["metadata"]["generation"] += 1
    assert verdict(rollout, exit_on_pause=True) == (
        None,
        "the controller has not seen the latest spec yet",
    )


# -- CI mode ---------------------------------------------------------------------------


def event(n: int, reason: str = "StepCompleted", type_: str = "Normal") -> Any:
    """An Event as the kubernetes client returns it (the fields the CLI reads)."""
    return SimpleNamespace(
        metadata=SimpleNamespace(uid=f"uid-{n}", name=f"app.{n}", resource_version=str(n)),
        reason=reason,
        message=f"message {n}",
        type=type_,
        last_timestamp=T0 + dt.timedelta(seconds=n),
    )


def test_plain_view_prints_each_event_once_with_its_own_time() -> None:
    """New events are printed once each, stamped with their time; old ones only the
    last five at the first poll; status lines only when they changed."""
    view = PlainView(now=lambda: T0 + dt.timedelta(minutes=5))
    history = [event(n) for n in range(8)]
    lines = ["Rollout shop/app: Paused (x)", "  step 1/2   weight 20%"]
    first = view.update(lines, history)
    assert first == [
        *(f"00:00:0{n} event StepCompleted: message {n}" for n in range(3, 8)),
        "00:05:00 Rollout shop/app: Paused (x)",
        "00:05:00 step 1/2   weight 20%",
    ]
    assert view.update(lines, history) == []
    later = [*history, event(9, "Aborted", "Warning")]
    moved = ["Rollout shop/app: Degraded (y)", "  step 1/2   weight 20%"]
    assert view.update(moved, later) == [
        "00:00:09 warning event Aborted: message 9",
        "00:05:00 Rollout shop/app: Degraded (y)",
    ]


def test_events_in_one_second_keep_the_order_they_were_stored_in() -> None:
    """Events share second-resolution timestamps; resourceVersion orders them (numerically)."""
    first, second = event(9, "NewRevision"), event(10, "StepCompleted")
    second.last_timestamp = first.last_timestamp
    first.metadata.name, second.metadata.name = "app.zzz", "app.aaa"
    assert sorted([second, first], key=rollouts._event_order) == [first, second]


def test_plain_view_prints_analysis_verdict_changes() -> None:
    """A run's verdict change (Running to Inconclusive) is a line of its own."""
    view = PlainView(now=lambda: T0)
    running, inconclusive = running_analysis(), inconclusive_step()
    view.update(rollouts.describe(running, []), [])
    changed = view.update(rollouts.describe(inconclusive, []), [])
    assert "00:00:00 analysis step-1: Inconclusive errors=Inconclusive (0 ok, 0 failed)" in changed


# -- errors ----------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> rollouts.Api:
    """An Api for a kubeconfig pointing nowhere (nothing here opens a connection)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example:6443"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return rollouts.Api(str(path), None)


def refused(status: int, reason: str, message: str | None) -> Callable[[], Any]:
    """A call that fails as the API server would answer it."""

    def call() -> Any:
        exc = ApiException(status=status, reason=reason)
        exc.body = json.dumps({"kind": "Status", "message": message}) if message else reason
        raise exc

    return call


@pytest.mark.parametrize(
    ("verb", "namespace", "call", "expected"),
    [
        pytest.param(
            "patch",
            "shop",
            refused(
                403,
                "Forbidden",
                'rollouts.stepwise.dev "app" is forbidden: User "jane" cannot patch resource',
            ),
            "not allowed to patch rollout shop/app as jane: check your kubeconfig / RBAC:"
            " needs patch on rollouts.stepwise.dev in namespace shop",
            id="403-names-verb-user-and-resource",
        ),
        pytest.param(
            "list",
            None,
            refused(403, "Forbidden", "forbidden"),
            "not allowed to list rollout shop/app: check your kubeconfig / RBAC:"
            " needs list on rollouts.stepwise.dev cluster-wide (or pass -n)",
            id="403-cluster-wide",
        ),
        pytest.param(
            "get",
            "shop",
            refused(404, "Not Found", 'rollouts.stepwise.dev "app" not found'),
            "rollout shop/app not found: check the name and the namespace"
            " (-n NAMESPACE; stepwise list -A lists all rollouts)",
            id="404-object",
        ),
        pytest.param(
            "get",
            "shop",
            refused(404, "Not Found", None),
            "the API server at https://k8s.example:6443 does not serve rollouts.stepwise.dev:"
            " install the Stepwise CRDs (README: Installing on a cluster)",
            id="404-no-crd",
        ),
        pytest.param(
            "get",
            "shop",
            refused(401, "Unauthorized", "Unauthorized"),
            "the API server at https://k8s.example:6443 rejected your credentials"
            " (get rollout shop/app): check your kubeconfig user"
            " (kubectl config view --minify) or log in again",
            id="401",
        ),
    ],
)
def test_api_errors_are_one_line_saying_what_to_do(
    api: rollouts.Api,
    verb: str,
    namespace: str | None,
    call: Callable[[], Any],
    expected: str,
) -> None:
    """Each API refusal becomes one line naming the object and what to do."""
    with pytest.raises(rollouts.CliError) as caught:
        api._call(verb, "rollout shop/app", namespace, call)
    assert str(caught.value) == expected
    assert caught.value.code == rollouts.EXIT_UNREACHABLE


def connection_error(root: BaseException) -> urllib3.exceptions.MaxRetryError:
    """urllib3's exception for a failed connection, with ``root`` at the bottom."""
    try:
        try:
            raise root
        except BaseException as exc:
            raise urllib3.exceptions.NewConnectionError(None, "failed") from exc
    except urllib3.exceptions.NewConnectionError as conn:
        return urllib3.exceptions.MaxRetryError(None, "/apis", conn)


@pytest.mark.parametrize(
    ("root", "cause"),
    [
        pytest.param(ConnectionRefusedError(111, "refused"), "connection refused", id="refused"),
        pytest.param(socket.gaierror(-2, "unknown"), "host name not found", id="dns"),
        pytest.param(TimeoutError("slow"), "timed out", id="timeout"),
        pytest.param(ssl.SSLError(1, "bad record"), "TLS error: bad record", id="tls"),
    ],
)
def test_unreachable_names_the_root_cause(
    api: rollouts.Api, root: BaseException, cause: str
) -> None:
    """An unreachable API server is one line with the root cause, not urllib3's repr."""

    def call() -> Any:
        raise connection_error(root)

    with pytest.raises(rollouts.CliError) as caught:
        api._call("get", "rollout shop/app", "shop", call)
    message = str(caught.value)
    assert message.startswith(
        f"cannot reach the Kubernetes API at https://k8s.example:6443 to get rollout shop/app"
        f" ({cause}): check "
    )
    assert "\n" not in message
    assert "--kubeconfig" in message


def test_status_shows_the_latest_release_of_the_record() -> None:
    """In progress, then aborted by hand with its detect and restore times (the record
    written by the real plan in the simulated world)."""
    ro, world = canary_at([{"setWeight": 20}, {"pause": {}}])
    rev = str(ro.status.canary_revision)
    going = [line for line in rollouts.describe(doc(ro), []) if "release " in line]
    assert going == [
        f"  release {rev}#1: in progress since {doc(ro)['status']['releases'][-1]['startedAt']}"
    ]
    ro = annotate(ro, **{intents.ABORT: rev})
    ro, _ = settle(ro, world, at(12))
    [line] = [line for line in rollouts.describe(doc(ro), []) if "release " in line]
    assert line == (
        f"  release {rev}#1: Aborted (Manual), detected 12s after the change, restored in 0ms"
    )
    stable, _ = stable_world(make([{"setWeight": 20}]))
    [line] = [line for line in rollouts.describe(doc(stable), []) if "release " in line]
    assert line.endswith(": Promoted, 0ms after the change")
