"""Which notifications are due, derived from the delivery record alone, and what they say.

Where it sits in the flow::

    runtime.notifier, on each scan (leader only):
        Rollouts in the cache ─┐
        targets (ConfigMap) ───┼─▶ due()  (this module) ─▶ [Notification]
        ledger (ConfigMap) ────┘        │
                                        ▼
        a queue per target ─▶ render_json()/render_slack() ─▶ adapters.webhook POST
                                        │ 2xx (or given up)
                                        ▼
                                 ledger += notification id

Nothing here remembers a transition. A notification exists because an entry of
``status.releases`` says something happened (a release started, waited for approval,
completed a step, was promoted or aborted), so a controller killed at any moment loses
nothing: the next leader derives the same notifications, with the same ids, and the
ledger of ids already delivered keeps it from sending them again. Each id is a hash of
(Rollout uid, revision, attempt, kind, index, target), so a receiver can also drop a
repeat itself.

Two bounds keep this finite: a notification whose event is older than ``max_age`` is
never sent (a new installation on a cluster with an old record announces nothing old,
and a target that was down for longer than that is not flooded with history), and a
ledger entry older than twice ``max_age`` is pruned (its event can no longer be due).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from controller.api.rollout import Release

EventKind = Literal["started", "paused", "step-completed", "promoted", "aborted"]
KINDS: Final[tuple[EventKind, ...]] = get_args(EventKind)
DEFAULT_EVENTS: Final = frozenset[EventKind]({"started", "paused", "promoted", "aborted"})
"""What a target hears unless it lists its ``events`` (step-completed is opt-in)."""

Format = Literal["json", "slack"]
FORMATS: Final[tuple[Format, ...]] = get_args(Format)

NOTIFY_ANNOTATION: Final = "stepwise.dev/notify"
"""On a Rollout: comma-separated names of targets it notifies besides the defaults, and
``-NAME`` for a default it leaves out."""
CONFIG_KEY: Final = "targets"
"""The ConfigMap key whose YAML lists the targets."""
DEFAULT_TIMEOUT: Final = 10.0
MAX_TIMEOUT: Final = 60.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_TARGET_FIELDS: Final = frozenset(
    {"name", "format", "url", "token", "events", "default", "timeoutSeconds"}
)


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """A key of a Secret in the controller's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class Target:
    """One webhook receiver, as configured (its URL and token are still Secret refs)."""

    name: str
    format: Format
    url: SecretRef
    token: SecretRef | None = None
    events: frozenset[EventKind] = DEFAULT_EVENTS
    default: bool = False
    """Applies to every Rollout, not only those that name it in their annotation."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one POST may take."""


def parse_targets(doc: object, where: str) -> tuple[list[Target], list[str]]:
    """The targets of the parsed YAML ``doc`` (a list of mappings), and one problem line
    per field that is wrong, each naming ``where`` (the ConfigMap) and the field.

    A target with a problem is left out; the others still work, so one typo silences
    one receiver, not all of them.
    """
    if doc is None:
        return [], []
    if not isinstance(doc, list):
        return [], [f"{where}: data.{CONFIG_KEY}: must be a list of targets"]
    targets: list[Target] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(doc):
        here = f"{where}: data.{CONFIG_KEY}[{i}]"
        target, wrong = _target(item, here)
        if target is not None and target.name in seen:
            wrong.append(f"{here}.name: {target.name!r} is named twice; the first one is kept")
            target = None
        problems.extend(wrong)
        if target is not None:
            seen.add(target.name)
            targets.append(target)
    return targets, problems


def _target(item: object, here: str) -> tuple[Target | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"{here}: must be a mapping with name, format and url"]
    wrong = [
        f"{here}.{key}: unknown field (known: {', '.join(sorted(_TARGET_FIELDS))})"
        for key in item
        if key not in _TARGET_FIELDS
    ]
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        wrong.append(
            f"{here}.name: {name!r} is not a name (letters, digits, '.', '_', '-'; at most 63)"
        )
    fmt = item.get("format", "json")
    if fmt not in FORMATS:
        wrong.append(f"{here}.format: unknown format {fmt!r} ({' or '.join(FORMATS)})")
    url = _secret_ref(item.get("url"), f"{here}.url", wrong, required=True)
    token = _secret_ref(item.get("token"), f"{here}.token", wrong, required=False)
    events = _events(item.get("events"), f"{here}.events", wrong)
    default = item.get("default", False)
    if not isinstance(default, bool):
        wrong.append(f"{here}.default: must be true or false")
    timeout = item.get("timeoutSeconds", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        wrong.append(f"{here}.timeoutSeconds: must be a number of seconds in (0, {MAX_TIMEOUT:g}]")
    if wrong or url is None or events is None:
        return None, wrong
    return (
        Target(
            name=str(name),
            format=fmt,
            url=url,
            token=token,
            events=events,
            default=bool(default),
            timeout=float(timeout),
        ),
        [],
    )


def _secret_ref(value: object, here: str, wrong: list[str], *, required: bool) -> SecretRef | None:
    if value is None:
        if required:
            wrong.append(f"{here}: missing (secretKeyRef: {{name: ..., key: ...}})")
        return None
    ref = value.get("secretKeyRef") if isinstance(value, dict) else None
    if not isinstance(ref, dict):
        wrong.append(f"{here}: must be {{secretKeyRef: {{name: ..., key: ...}}}}")
        return None
    name, key = ref.get("name"), ref.get("key")
    if not isinstance(name, str) or not name:
        wrong.append(f"{here}.secretKeyRef.name: missing")
        return None
    if not isinstance(key, str) or not key:
        wrong.append(f"{here}.secretKeyRef.key: missing")
        return None
    return SecretRef(name, key)


def _events(value: object, here: str, wrong: list[str]) -> frozenset[EventKind] | None:
    if value is None:
        return DEFAULT_EVENTS
    if not isinstance(value, list) or not value:
        wrong.append(f"{here}: must be a non-empty list of {', '.join(KINDS)}")
        return None
    unknown = [v for v in value if v not in KINDS]
    if unknown:
        wrong.append(f"{here}: unknown event(s) {unknown} (known: {', '.join(KINDS)})")
        return None
    return frozenset(value)


def subscribed(
    annotations: Mapping[str, str] | None, targets: Sequence[Target]
) -> tuple[list[Target], list[str]]:
    """The targets a Rollout notifies (the defaults and those its annotation names, less
    those it names with a leading ``-``: ``"ops,-team-chat"`` adds ops and leaves the
    default team-chat out), and the names its annotation gives that no target has."""
    names = [n.strip() for n in (annotations or {}).get(NOTIFY_ANNOTATION, "").split(",")]
    dropped = {n[1:].strip() for n in names if n.startswith("-")}
    wanted = {n for n in names if n and not n.startswith("-")}
    known = {t.name for t in targets}
    chosen = [t for t in targets if (t.default or t.name in wanted) and t.name not in dropped]
    return chosen, sorted((wanted | dropped) - known - {""})


# -- derivation ------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutRecord:
    """What derivation needs of one Rollout."""

    namespace: str
    name: str
    uid: str
    releases: Sequence[Release]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Happening:
    """Something the record says happened to a release."""

    kind: EventKind
    index: int | str
    """Which one of its kind: the step's index for step-completed; for paused, the step
    and when the wait began (positions would shift when the record drops its oldest
    waits); 0 otherwise."""
    at: dt.datetime
    step: int | None = None


@dataclass(frozen=True)
class Notification:
    """One message to one target."""

    id: str
    target: str
    kind: EventKind
    namespace: str
    rollout: str
    release: Release
    at: dt.datetime
    """When it happened (the record's time)."""
    step: int | None = None


def happenings(release: Release) -> list[Happening]:
    """Everything the entry says happened, in the order it happened."""
    out = [Happening("started", 0, release.started_at)]
    out += [
        Happening(
            "paused", f"{approval.step}@{_iso(approval.since)}", approval.since, approval.step
        )
        for approval in release.approvals
    ]
    out += [Happening("step-completed", s.index, s.ended_at, s.index) for s in release.steps]
    if release.outcome == "Promoted" and release.ended_at is not None:
        out.append(Happening("promoted", 0, release.ended_at))
    if release.outcome == "Aborted" and release.ended_at is not None:
        out.append(Happening("aborted", 0, release.ended_at))
    return sorted(out, key=lambda h: h.at)


def notification_id(
    uid: str, revision: str, attempt: int, kind: EventKind, index: int | str, target: str
) -> str:
    """A stable id: the same happening to the same target always has the same id."""
    text = "\x1f".join((uid, revision, str(attempt), kind, str(index), target))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def due(
    rollouts: Iterable[RolloutRecord],
    targets: Sequence[Target],
    delivered: Container[str],
    now: dt.datetime,
    max_age: dt.timedelta,
) -> list[Notification]:
    """The notifications not delivered yet whose happening is at most ``max_age`` old,
    oldest first."""
    oldest = now - max_age
    out: list[Notification] = []
    for record in rollouts:
        chosen, _ = subscribed(record.annotations, targets)
        if not chosen:
            continue
        for release in record.releases:
            for h in happenings(release):
                if h.at < oldest:
                    continue
                for target in chosen:
                    if h.kind not in target.events:
                        continue
                    nid = notification_id(
                        record.uid, release.revision, release.attempt, h.kind, h.index, target.name
                    )
                    if nid in delivered:
                        continue
                    out.append(
                        Notification(
                            id=nid,
                            target=target.name,
                            kind=h.kind,
                            namespace=record.namespace,
                            rollout=record.name,
                            release=release,
                            at=h.at,
                            step=h.step,
                        )
                    )
    out.sort(key=lambda n: n.at)
    return out


def expired(notification: Notification, now: dt.datetime, max_age: dt.timedelta) -> bool:
    """Whether it is too old to send any more (a retrying sender gives up then)."""
    return notification.at < now - max_age


# -- delivery outcome ------------------------------------------------------------------

Outcome = Literal["delivered", "retry", "drop"]


def outcome_of(status: int | None) -> Outcome:
    """What an answer means: a 2xx delivered it; no answer (timeout, connection error),
    408, 429 and 5xx are worth retrying; anything else (a 4xx, a redirect that was not
    followed) will not get better by sending it again."""
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "drop"


# -- the ledger ------------------------------------------------------------------------


def parse_ledger(text: str | None) -> dict[str, dt.datetime]:
    """Id -> when it was delivered (or given up), from the ledger's JSON; entries that do
    not parse are skipped (a damaged ledger can only cause a repeat, never a loss)."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, dt.datetime] = {}
    for key, value in doc.items():
        if not isinstance(value, str):
            continue
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            continue
        out[str(key)] = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return out


def render_ledger(entries: Mapping[str, dt.datetime]) -> str:
    """The ledger's JSON (sorted, one line: about 60 bytes an entry)."""
    return json.dumps(
        {k: _iso(v) for k, v in sorted(entries.items())}, separators=(",", ":"), sort_keys=True
    )


def prune(
    entries: Mapping[str, dt.datetime], now: dt.datetime, max_age: dt.timedelta
) -> dict[str, dt.datetime]:
    """The entries younger than twice ``max_age``: an older one records a happening that
    is older still (it was delivered after it happened), so never due again."""
    oldest = now - 2 * max_age
    return {k: v for k, v in entries.items() if v >= oldest}


# -- payloads --------------------------------------------------------------------------


def render_json(n: Notification) -> dict[str, Any]:
    """The generic payload: everything the record knows of the release, and the id."""
    r = n.release
    return {
        "id": n.id,
        "kind": n.kind,
        "namespace": n.namespace,
        "rollout": n.rollout,
        "revision": r.revision,
        "attempt": r.attempt,
        "images": list(r.images),
        "changedBy": r.changed_by,
        "step": n.step,
        "at": _iso(n.at),
        "outcome": r.outcome if n.kind in ("promoted", "aborted") else None,
        "reason": r.reason if n.kind == "aborted" else None,
        "message": r.message if n.kind == "aborted" else "",
        "times": {
            "changedAt": _iso(r.changed_at),
            "startedAt": _iso(r.started_at),
            "endedAt": _iso(r.ended_at),
            "detectedAt": _iso(r.detected_at),
            "restoredAt": _iso(r.restored_at),
        },
        "timeToDetectSeconds": r.time_to_detect_seconds,
        "timeToRestoreSeconds": r.time_to_restore_seconds,
        "leadTimeSeconds": r.lead_time_seconds,
    }


def render_slack(n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook payload: ``text`` (what notifications and clients that
    show no blocks display) and one section block with the same words."""
    text = summary(n)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def render(n: Notification, fmt: Format) -> bytes:
    """The POST body for a target of format ``fmt``."""
    doc = render_slack(n) if fmt == "slack" else render_json(n)
    return json.dumps(doc, separators=(",", ":")).encode()


def summary(n: Notification) -> str:
    """One line a person reads: what happened to which release, and the figures."""
    r = n.release
    who = f"{n.namespace}/{n.rollout}"
    rev = f"revision {r.revision}" + (f" (attempt {r.attempt})" if r.attempt > 1 else "")
    images = f" [{', '.join(r.images)}]" if r.images else ""
    if n.kind == "started":
        by = f", changed by {r.changed_by}" if r.changed_by else ""
        return f"{who}: rolling out {rev}{images}{by}"
    if n.kind == "paused":
        at = f" at step {n.step}" if n.step is not None else ""
        return f"{who}: {rev} waits for approval{at}: stepwise promote {n.rollout} -n {n.namespace}"
    if n.kind == "step-completed":
        return f"{who}: {rev} completed step {n.step}"
    if n.kind == "promoted":
        lead = (
            f" (lead time {_duration(r.lead_time_seconds)})"
            if r.lead_time_seconds is not None
            else ""
        )
        return f"{who}: {rev} promoted{images}{lead}"
    parts = [f"{who}: {rev} aborted ({r.reason or 'unknown reason'})"]
    if r.message:
        parts.append(f": {r.message}")
    figures = []
    if r.time_to_detect_seconds is not None:
        figures.append(f"detected {_duration(r.time_to_detect_seconds)} after the change")
    if r.time_to_restore_seconds is not None:
        figures.append(f"traffic back on stable in {_duration(r.time_to_restore_seconds)}")
    if figures:
        parts.append(f"; {', '.join(figures)}")
    return "".join(parts)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = round(seconds)
    if total < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{total}s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def _iso(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
