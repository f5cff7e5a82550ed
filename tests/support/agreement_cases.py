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


_WEB: dict[str, Any] = {"web": {"url": "http://gate.example/ok", "jsonPath": "{$.ok}"}}


def _job(**fields: Any) -> dict[str, Any]:
    """A template whose metric runs a Job (no thresholdRange: the Job is the verdict)."""
    spec = {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t"}]}}}

    def change(d: dict[str, Any]) -> None:
        metric = d["spec"]["metrics"][0]
        metric.pop("thresholdRange", None)
        metric.pop("successCondition", None)
        metric["provider"] = {"job": {"spec": spec}}
        metric.update(fields)

    return _edit(analysis_template(), change)


def _spec(**fields: Any) -> dict[str, Any]:
    return _edit(analysis_template(), lambda d: d["spec"].update(fields))


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
    Agreement("count-arg", _metric(count="{{args.n}}"), True),
    Agreement("count-arg-spaces", _metric(count="{{ args.n }}"), True),
    Agreement("count-arg-expression", _metric(count="{{args.n}} + 1"), False),
    Agreement("count-zero", _metric(count=0), False),
    Agreement("count-true", _metric(count=True), False),
    Agreement("interval-arg", _metric(interval="{{args.every}}"), True),
    Agreement("interval-arg-unit", _metric(interval="{{args.every}}s"), False),
    Agreement("error-limit-arg", _metric(consecutiveErrorLimit="{{args.e}}"), True),
    Agreement("two-providers", _metric(provider={"prometheus": {"query": "q"}, **_WEB}), False),
    Agreement("web", _metric(provider=_WEB), True),
    Agreement("web-get-body", _metric(provider={"web": {**_WEB["web"], "body": "x"}}), False),
    Agreement(
        "web-post-json-body",
        _metric(provider={"web": {**_WEB["web"], "method": "POST", "jsonBody": {"a": [1]}}}),
        True,
    ),
    Agreement("web-ftp", _metric(provider={"web": {"url": "ftp://x"}}), False),
    Agreement(
        "web-timeout-0", _metric(provider={"web": {**_WEB["web"], "timeoutSeconds": 0}}), False
    ),
    Agreement("job-with-condition", _job(successCondition="true"), False),
    Agreement("job", _job(), True),
    Agreement("job-no-template", _job(provider={"job": {"spec": {"backoffLimit": 0}}}), False),
    Agreement("dry-run", _spec(dryRun=[{"metricName": ".*"}]), True),
    Agreement("dry-run-no-name", _spec(dryRun=[{}]), False),
    Agreement("retention-0", _spec(measurementRetention=[{"metricName": "m", "limit": 0}]), False),
    Agreement(
        "retention-100", _spec(measurementRetention=[{"metricName": "m", "limit": 100}]), True
    ),
    Agreement("name-uppercase", _named("App"), False),
    Agreement("name-underscore", _named("my_app"), False),
    Agreement("name-dots", _named("app.v2"), True),
    Agreement("name-63", _named("a" * 63), True),
]
"""Each case, with the verdict the API server gives it (checked against the server)."""
