"""Documents on which ``stepwise lint`` and the API server must give the same verdict:
types the server does not coerce, nulls it drops (then defaults), names it refuses, and
settings the CRD forbids. ``tests/integration/test_lint_server_agreement.py`` sends each
to both; ``tests/unit/test_lint.py`` checks lint's side alone."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.manifests import analysis_template, rollout


@dataclass(frozen=True)
class Agreement:
    """A document and whether the server accepts it."""

    id: str
    doc: dict[str, Any]
    valid: bool


def _edit(doc: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    change(out)
    return out


def _ro(**spec: Any) -> dict[str, Any]:
    return _edit(rollout("app"), lambda d: d["spec"].update(spec))


def _canary(**canary: Any) -> dict[str, Any]:
    return _edit(rollout("app"), lambda d: d["spec"]["strategy"]["canary"].update(canary))


def _metric(**fields: Any) -> dict[str, Any]:
    return _edit(analysis_template(), lambda d: d["spec"]["metrics"][0].update(fields))


def _prometheus(**fields: Any) -> dict[str, Any]:
    return _edit(
        analysis_template(),
        lambda d: d["spec"]["metrics"][0]["provider"]["prometheus"].update(fields),
    )


def _named(name: str) -> dict[str, Any]:
    return _edit(rollout("app"), lambda d: d["metadata"].update(name=name))


AGREEMENT: list[Agreement] = [
    Agreement("replicas-string", _ro(replicas="3"), False),
    Agreement("replicas-float", _ro(replicas=3.5), False),
    Agreement("replicas-null", _ro(replicas=None), True),
    Agreement("paused-yes", _ro(paused="yes"), False),
    Agreement("paused-one", _ro(paused=1), False),
    Agreement("paused-string-true", _ro(paused="true"), False),
    Agreement("paused-true", _ro(paused=True), True),
    Agreement("paused-null", _ro(paused=None), True),
    Agreement("set-weight-string", _canary(steps=[{"setWeight": "20"}]), False),
    Agreement("set-weight-float", _canary(steps=[{"setWeight": 20.5}]), False),
    Agreement("set-weight-whole-float", _canary(steps=[{"setWeight": 20.0}]), False),
    Agreement("steps-null", _canary(steps=None), True),
    Agreement("max-surge-null", _canary(maxSurge=None), True),
    Agreement("both-zero", _canary(maxSurge=0, maxUnavailable=0), False),
    Agreement("both-zero-percent", _canary(maxSurge="0%", maxUnavailable=0), False),
    Agreement("surge-zero-only", _canary(maxSurge=0, maxUnavailable=1), True),
    Agreement("failure-limit-string", _metric(failureLimit="1"), False),
    Agreement("count-float", _metric(count=2.5), False),
    Agreement("interval-null", _metric(interval=None), True),
    Agreement("threshold-null-min", _metric(thresholdRange={"min": None, "max": 1}), True),
    Agreement("insecure-string", _prometheus(insecureSkipVerify="true"), False),
    Agreement("insecure-true", _prometheus(insecureSkipVerify=True), True),
    Agreement("name-uppercase", _named("App"), False),
    Agreement("name-underscore", _named("my_app"), False),
    Agreement("name-dots", _named("app.v2"), True),
    Agreement("name-63", _named("a" * 63), True),
]
"""Each case, with the verdict the API server gives it (checked against the server)."""
