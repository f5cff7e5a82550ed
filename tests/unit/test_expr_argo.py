"""Every condition in Argo Rollouts' own manifests and docs parses here and gives the
verdict Argo documents for it.

The corpus is ``tests/fixtures/argo-conditions.txt`` (where it comes from is in its
header). Each condition gets one or more sample ``result`` values of the shape its
provider returns in Argo: Prometheus, InfluxDB and Graphite an array of numbers (or one
number), Wavefront and Datadog a number (nil when Datadog has no points) or an array for
a grouped query, web the JSON value its ``jsonPath`` selects (or the plain-text body),
New Relic a map, CloudWatch a list of MetricDataResult maps, SkyWalking the GraphQL data.

Prometheus-shaped samples are judged twice: through :meth:`Condition.evaluate` (how
:mod:`controller.core.measurement` binds query values) and through
:meth:`Condition.evaluate_json` (the array Argo binds); both must agree. A few samples
are judged by :meth:`Condition.evaluate` alone, where Stepwise goes further than Argo: a
single series (or a scalar answer) is a number that is also a list of one, so
``result[0]`` works on it (Argo's scalar answer is a bare number).

Conditions with ``{{args.NAME}}`` are rendered first, as Argo substitutes arguments
before it evaluates (and Helm renders its ``{{ `...` }}`` escape before that); the sample
values come from the same manifests. These are verdicts of the expression alone: how a
measurement treats NaN or an empty vector before any condition runs is
:mod:`controller.core.measurement`'s policy and is tested there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.core.expr import ExpressionError, check, parse

CORPUS = Path(__file__).parents[1] / "fixtures" / "argo-conditions.txt"
NAN = math.nan
INF = math.inf

#: Argument values from the manifests that use them: datadog.md declares
#: ``restarts.max-restarts: "4"``; the e2e rollouts pass ``success-condition: It worked!``.
ARGS = {"restarts.max-restarts": "4", "success-condition": "It worked!"}

#: What ``https://dns.google/resolve?name=google.com`` answers (the inconclusive e2e test).
DNS_ANSWER = {
    "Status": 0,
    "TC": False,
    "Answer": [{"name": "google.com.", "type": 1, "TTL": 300, "data": "142.250.74.46"}],
}
#: What ``https://kubernetes.default.svc/version`` answers (the background e2e test).
KUBE_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}


def cloudwatch(*values: float) -> list[dict[str, object]]:
    """CloudWatch GetMetricData results as Argo's provider returns them."""
    return [
        {
            "Id": "rate",
            "Label": "rate",
            "StatusCode": "Complete",
            "Timestamps": ["2024-01-01T00:00:00Z"] * len(values),
            "Values": list(values),
        }
    ]


def skywalking(*values: object) -> dict[str, object]:
    """The data of the SkyWalking GraphQL query in skywalking.md."""
    points = [{"value": v} for v in values]
    return {"service_apdex": {"label": None, "values": {"values": points}}}


@dataclass(frozen=True)
class Case:
    """A sample result and the verdict of the condition on it."""

    shape: str
    """``prometheus``: an array of numbers or a number, judged by both entry points;
    ``json``: any JSON value, by :meth:`~Condition.evaluate_json`; ``series``: Prometheus
    values as Stepwise binds them (one series is a number that is also a list of one),
    by :meth:`~Condition.evaluate` only."""
    result: object
    expected: bool
    why: str


def prom(result: object, expected: bool, why: str) -> Case:
    return Case("prometheus", result, expected, why)


def json_(result: object, expected: bool, why: str) -> Case:
    return Case("json", result, expected, why)


def series(result: float, expected: bool, why: str) -> Case:
    return Case("series", result, expected, why)


CASES: dict[str, list[Case]] = {
    "len(result[0].Values) >= 5 and all(result[0].Values, {# <= 0.01})": [
        json_(cloudwatch(0.001, 0.0, 0.01, 0.004, 0.002), True, "five points, all <= 1%"),
        json_(cloudwatch(0.001, 0.0, 0.01, 0.004), False, "too few points"),
        json_(cloudwatch(0.001, 0.0, 0.02, 0.004, 0.002), False, "one point above 1%"),
    ],
    "result <= 0.01": [
        json_(0.004, True, "datadog error rate under 1%"),
        json_(0.03, False, "above 1%"),
    ],
    "default(result, 0) < 10": [
        json_(3.0, True, "a few errors"),
        json_(None, True, "no points: datadog gives nil, default makes it 0"),
        json_(12.0, False, "too many"),
    ],
    "default(result, 0) > {{ args.restarts.max-restarts }}": [
        json_(None, False, "no restarts reported: not failed"),
        json_(4.0, False, "at the limit"),
        json_(5.0, True, "more restarts than max-restarts (4): failed"),
    ],
    "default(result, 0) < 0.05": [
        json_(None, True, "documented: empty datadog result succeeds with default()"),
        json_(0.2, False, "above 5%"),
    ],
    "default(result, 0) < 5": [
        json_(2.5, True, "error percentage under 5"),
        json_(None, True, "no points"),
        json_(7.0, False, "above 5"),
    ],
    "max(result) < 0.05": [
        json_([0.01, 0.02, 0.0], True, "grouped query: every endpoint under 5%"),
        json_([0.01, 0.2, 0.0], False, "documented: fail if ANY endpoint exceeds"),
        json_(0.01, True, "an ungrouped query gives one number"),
    ],
    "default(result, 0) > {{ `{{ args.restarts.max-restarts }}` }}": [
        json_(None, False, "Helm renders the escape to the same condition"),
        json_(9.0, True, "more restarts than 4"),
    ],
    "result[0] <= 0.01": [
        prom([0.004], True, "influxdb: an array, index 0"),
        prom([0.05], False, "above 1%"),
    ],
    "result.successRate >= 0.95": [
        json_({"successRate": 0.97}, True, "NRQL ... as successRate"),
        json_({"successRate": 0.9}, False, "below 95%"),
    ],
    "result[0] >= 0.95": [
        prom([0.97], True, "prometheus vector of one series"),
        prom([0.9], False, "below 95%"),
        series(0.97, True, "one series (or a scalar answer) is also a list of one"),
    ],
    "all(result, # < 1000)": [
        prom([120.0, 340.0, 999.0], True, "documented: checks every value"),
        prom([120.0, 1340.0, 999.0], False, "one value at or above 1000ms"),
        series(120.0, True, "one series is a list of one"),
    ],
    "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})": [
        json_(skywalking(9950, 10000), True, "every apdex >= 9900"),
        json_(skywalking("9950", "9990"), True, "values as text: asFloat converts them"),
        json_(skywalking(9950, 9800), False, "one below 9900"),
    ],
    "result >= 0.95": [
        prom(0.97, True, "wavefront: a number"),
        prom(0.5, False, "below 95%"),
        prom(NAN, False, "documented: NaN fails result >= 0.95"),
        prom(INF, True, "documented: +Inf passes result >= 0.95"),
    ],
    "result == true": [
        json_(True, True, "jsonPath {$.data.ok} selected true"),
        json_(False, False, "selected false"),
        json_("true", False, "a string is not a boolean: == of different types is false"),
    ],
    "result.ok && result.successPercent >= 0.90": [
        json_({"ok": True, "successPercent": 0.95}, True, "the documented payload"),
        json_({"ok": True, "successPercent": 0.85}, False, "percent too low"),
        json_({"ok": False, "successPercent": 0.95}, False, "not ok"),
    ],
    'result == "I am OK"': [
        json_("I am OK", True, "documented plain-text body"),
        json_("", False, "documented: an empty body is an empty string"),
    ],
    "result[0] <= 0.95": [
        prom([0.3], True, "under 95%"),
        prom([0.99], False, "above 95%"),
    ],
    "result == 'true'": [
        json_("true", True, "the endpoint answers the string true"),
        json_(True, False, "a JSON true is not the string 'true' (as in Argo)"),
    ],
    "result[0] >= 10": [
        prom([12.0], True, "documented: ten or more errors fail the measurement"),
        prom([3.0], False, "fewer than ten"),
    ],
    "result[0] >= 0.90": [
        prom([0.95], True, "at least 90%"),
        prom([0.7], False, "below 90%"),
    ],
    "result[0] < 0.50": [
        prom([0.3], True, "below 50%: failed"),
        prom([0.7], False, "not below 50%"),
    ],
    "isNaN(result) || result >= 0.95": [
        prom(NAN, True, "documented: NaN is successful with this condition"),
        prom(0.97, True, "above 95%"),
        prom(0.5, False, "below 95%"),
    ],
    "result < 0.95": [
        prom(NAN, False, "documented: NaN meets neither condition (inconclusive)"),
        prom(0.5, True, "below 95%"),
    ],
    "isInf(result)": [
        prom(INF, True, "documented: +Inf fails with isInf"),
        prom(0.5, False, "a finite number"),
    ],
    "len(result) == 0 || result[0] >= 0.95": [
        prom([], True, "documented: an empty array is successful"),
        prom([0.97], True, "above 95%"),
        prom([0.5], False, "below 95%"),
    ],
    "len(result) > 0 && result[0] >= 0.95": [
        prom([], False, "documented: an empty array fails"),
        prom([0.97], True, "above 95%"),
    ],
    "result[0] >= 0.99": [
        prom([0.995], True, "appmesh success rate"),
        prom([0.98], False, "below 99%"),
    ],
    "result == 'It worked!'": [
        json_("It worked!", True, "jsonPath {$.message} of the secret URL's JSON"),
        json_("It failed", False, "another message"),
    ],
    'result == "true"': [
        json_(False, False, "documented: {$.completed} is false, the run Failed"),
        json_("true", True, "the string true"),
    ],
    "result.Status == 999": [
        json_(DNS_ANSWER, False, "documented: never matches (inconclusive test)"),
    ],
    "result.Status == -1": [
        json_(DNS_ANSWER, False, "documented: never matches (inconclusive test)"),
    ],
    "result.major == '1'": [
        json_(KUBE_VERSION, True, "the API server's version endpoint"),
        json_({"major": 1}, False, "a number is not the string '1'"),
    ],
    'result == "{{args.success-condition}}"': [
        json_("It worked!", True, "rendered with success-condition: It worked!"),
        json_("replace", False, "another message"),
    ],
}

#: Conditions in the corpus that Argo itself cannot evaluate, and why; they are rejected
#: here too, with the reason.
REJECTED = {
    # graphite.md writes ``results``; Argo's environment has only ``result``, so Argo
    # fails to compile it ("unknown name results"): a typo in the docs.
    "results[0] >= 90.000000": "the name 'results' is not allowed",
}


def corpus() -> dict[str, str]:
    """The conditions of the fixture and where each occurs."""
    out: dict[str, str] = {}
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        condition, where = line.split("\t")
        assert condition not in out, f"duplicate {condition!r}"
        out[condition] = where
    return out


def render(text: str) -> str:
    """``text`` as Argo evaluates it: Helm's ``{{ `x` }}`` escape rendered, then each
    ``{{args.NAME}}`` replaced by the argument's value."""
    text = re.sub(r"\{\{\s*`(.*?)`\s*\}\}", r"\1", text)
    return re.sub(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}", lambda m: ARGS[m.group(1)], text)


def verdicts(text: str, case: Case) -> list[bool | tuple[bool, ...]]:
    condition = parse(render(text))
    out: list[bool | tuple[bool, ...]] = []
    if case.shape != "series":
        out.append(condition.evaluate_json(case.result))
    if case.shape != "json":
        assert isinstance(case.result, float | list)
        out.append(condition.evaluate(case.result))
    return out


def test_the_corpus_is_the_table() -> None:
    """Every condition of the fixture has verdicts here (or a reason it is rejected), and
    nothing here is missing from the fixture."""
    conditions = corpus()
    assert len(conditions) == 35
    assert set(conditions) == set(CASES) | set(REJECTED)


@pytest.mark.parametrize("text", sorted(set(corpus()) - set(REJECTED)))
def test_every_condition_parses(text: str) -> None:
    """Each condition (arguments rendered) is in the language."""
    assert check(render(text)) is None


@pytest.mark.parametrize(
    ("text", "case"),
    [
        pytest.param(text, case, id=f"{text} | {case.why}")
        for text, cases in CASES.items()
        for case in cases
    ],
)
def test_documented_verdicts(text: str, case: Case) -> None:
    """Each condition gives the documented (or, where Argo documents none, the plainly
    intended) verdict on a result of its provider's shape, by both entry points for
    Prometheus-shaped results."""
    assert all(v is case.expected for v in verdicts(text, case)), verdicts(text, case)


@pytest.mark.parametrize(("text", "needle"), REJECTED.items())
def test_rejected_as_in_argo(text: str, needle: str) -> None:
    """A condition Argo cannot compile is rejected here too, saying why."""
    with pytest.raises(ExpressionError, match=re.escape(needle)):
        parse(render(text))


def argo_phase(success: str | None, failure: str | None, judge: Callable[[str], bool]) -> str:
    """The phase Argo's ``EvaluateResult`` gives a measurement."""
    held = judge(success) if success else False
    failed = judge(failure) if failure else False
    if not success and not failure:
        return "Successful"
    if success and not failure:
        failed = not held
    if failure and not success:
        held = not failed
    if failed:
        return "Failed"
    return "Successful" if held else "Inconclusive"


@pytest.mark.parametrize(
    ("success", "failure", "result", "phase"),
    [
        pytest.param("isNaN(result) || result >= 0.95", None, NAN, "Successful", id="nan-ok"),
        pytest.param("result >= 0.95", "result < 0.95", NAN, "Inconclusive", id="nan-neither"),
        pytest.param("result >= 0.95", None, NAN, "Failed", id="nan-failed"),
        pytest.param("result >= 0.95", None, INF, "Successful", id="inf-ok"),
        pytest.param(None, "isInf(result)", INF, "Failed", id="inf-failed"),
        pytest.param("len(result) == 0 || result[0] >= 0.95", None, [], "Successful", id="[]-ok"),
        pytest.param("len(result) > 0 && result[0] >= 0.95", None, [], "Failed", id="[]-failed"),
        pytest.param("result[0] >= 0.90", "result[0] < 0.50", [0.7], "Inconclusive", id="between"),
        pytest.param(
            "result.Status == 999",
            "result.Status == -1",
            DNS_ANSWER,
            "Inconclusive",
            id="web-inconclusive",
        ),
        pytest.param('result == "true"', None, False, "Failed", id="rollout-aborted"),
        pytest.param("default(result, 0) < 0.05", None, None, "Successful", id="datadog-nil"),
        pytest.param(
            None,
            "default(result, 0) > {{ args.restarts.max-restarts }}",
            6.0,
            "Failed",
            id="datadog-restarts",
        ),
    ],
)
def test_documented_phases(
    success: str | None, failure: str | None, result: object, phase: str
) -> None:
    """The phases Argo's docs and manifests show for a metric's pair of conditions."""

    def judge(text: str) -> bool:
        return parse(render(text)).evaluate_json(result)

    assert argo_phase(success, failure, judge) == phase
