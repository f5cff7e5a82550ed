"""``AnalysisTemplate`` and ``ClusterAnalysisTemplate``: the metrics that judge a canary.

A metric is measured every ``interval`` for ``count`` measurements; each measurement is
judged Successful, Failed, Inconclusive, Error or NoData, and the limits below turn the
tally into a verdict. ``onNoData`` and ``onProviderError`` say what blindness means:
by default the analysis holds (it neither promotes nor rolls back while it cannot see).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, Strict, WithJsonSchema, model_validator

from controller.api.base import DURATION_PATTERN, ApiModel, Rule, exactly_one, parse_duration
from controller.api.rollout import (
    API_VERSION,
    MAX_LIST,
    NAMED_LIST,
    DryRun,
    MeasurementRetention,
    ObjectMeta,
    SecretKeyRef,
    name_matches,
)
from controller.api.types import Duration

__all__ = ["DryRun", "MeasurementRetention", "name_matches"]

BlindPolicy = Literal["Hold", "Fail", "Pass"]


#: ``{{args.NAME}}`` (spaces allowed inside the braces), the whole of a field's value.
ARG_PATTERN = r"^[{][{] *args[.][A-Za-z_][A-Za-z0-9_-]* *[}][}]$"
_ARG = re.compile(ARG_PATTERN)


def arg_name(value: object) -> str | None:
    """The argument a ``{{args.NAME}}`` value names, or None for any other value."""
    if isinstance(value, str) and _ARG.match(value):
        return value.strip("{} ").removeprefix("args.")
    return None


def _check_duration_or_arg(value: str | int) -> str | int:
    if arg_name(value) is None:
        parse_duration(value)
    return value


def _check_count_or_arg(value: str | int) -> str | int:
    if isinstance(value, bool) or (isinstance(value, str) and arg_name(value) is None):
        raise ValueError("must be a whole number or an argument, written {{args.NAME}}")
    if isinstance(value, int) and value < 0:
        raise ValueError("must not be negative")
    return value


#: A duration (integer seconds, ``30s``, ``5m``) or ``{{args.NAME}}``, filled in and
#: checked when a run starts.
DurationOrArg = Annotated[
    int | str,
    AfterValidator(_check_duration_or_arg),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 80,
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? int(self) >= 0 : "
                    f"string(self).matches('{DURATION_PATTERN}') || "
                    f"string(self).matches('{ARG_PATTERN}')",
                    "message": "must be an integer of seconds, a number with a unit ms, s, m "
                    "or h (30s, 5m, 1h, 1m30s), or an argument written {{args.NAME}}",
                }
            ],
        }
    ),
]

#: A whole number, or ``{{args.NAME}}`` filled in and checked when a run starts.
CountOrArg = Annotated[
    Annotated[int, Strict()] | str,  # true is not 1, as for the API server
    AfterValidator(_check_count_or_arg),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 80,
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? int(self) >= 0 : "
                    f"string(self).matches('{ARG_PATTERN}')",
                    "message": "must be a whole number or an argument written {{args.NAME}}",
                }
            ],
        }
    ),
]


class ArgSource(ApiModel):
    """Where a template argument's default comes from."""

    secret_key_ref: SecretKeyRef
    """A Secret key in the Rollout's namespace."""


class TemplateArg(ApiModel):
    """An argument the template's queries use as ``{{args.NAME}}``."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]
    """The argument's name."""
    value: str | None = None
    """A default value (a Rollout's arg of the same name overrides it)."""
    value_from: ArgSource | None = None
    """A default value read from a Secret."""


class ThresholdRange(ApiModel):
    """A measurement is Successful when it lies within [min, max] (either may be open)."""

    min: float | None = None
    """The lowest acceptable value."""
    max: float | None = None
    """The highest acceptable value."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.min) || has(self.max)",
            message="thresholdRange needs min, max or both",
            check=lambda r: r.min is not None or r.max is not None,
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="thresholdRange.min must not exceed thresholdRange.max",
            check=lambda r: r.min is None or r.max is None or r.min <= r.max,
            field=".min",
        ),
    )


class BasicAuth(ApiModel):
    """HTTP basic authentication, both parts from a Secret."""

    username: SecretKeyRef
    """The user name."""
    password: SecretKeyRef
    """The password."""


class PrometheusAuth(ApiModel):
    """How to authenticate to Prometheus (at most one method)."""

    bearer_token: SecretKeyRef | None = None
    """A bearer token from a Secret."""
    bearer_token_file: str | None = None
    """A bearer token read from a file in the controller's pod."""
    basic: BasicAuth | None = None
    """Basic authentication."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="[has(self.bearerToken), has(self.bearerTokenFile), has(self.basic)]"
            ".filter(x, x).size() <= 1",
            message="choose one authentication method: bearerToken, bearerTokenFile or basic",
            check=lambda a: [a.bearer_token, a.bearer_token_file, a.basic].count(None) >= 2,
        ),
    )


class PrometheusConnection(ApiModel):
    """How to reach Prometheus (shared by the ``prometheus`` and ``judge`` providers)."""

    address: str | None = None
    """Prometheus's base URL; default: the controller's ``--prometheus-address``."""
    timeout: Duration = "10s"
    """How long one query may take, retries included."""
    auth: PrometheusAuth | None = None
    """Authentication."""
    headers: dict[str, str] | None = None
    """Extra HTTP headers."""
    ca_secret: SecretKeyRef | None = None
    """A CA bundle for Prometheus's certificate."""
    insecure_skip_verify: bool = False
    """Accept any certificate (never do this outside a test)."""


Query = Annotated[str, Field(min_length=1, max_length=8192)]


class PrometheusProvider(PrometheusConnection):
    """Measure with a PromQL instant query."""

    query: Query
    """The PromQL query; ``{{args.NAME}}``, ``{{rollout}}``, ``{{namespace}}``,
    ``{{stableRevision}}``, ``{{canaryRevision}}``, ``{{stableService}}``,
    ``{{canaryService}}``, ``{{interval}}`` are filled in (escaped)."""


WINDOWED_COUNT = re.compile(r"(increase|rate|delta)\s*\(|\{\{\s*interval")
"""A windowed count: ``increase()``/``rate()``/``delta()`` or the ``{{interval}}``
variable, which a judge count query must not use (see :class:`CountQueries`)."""
_WINDOWED_CEL = "(increase|rate|delta)[[:space:]]*[(]|[{][{][[:space:]]*interval"
_CUMULATIVE = (
    "a judge query reads a cumulative counter (for example sum by (pod) "
    "(http_requests_total{...})), never increase(), rate() or {{interval}}: the judge "
    "differences the counters itself, because increase() is extrapolated to its window"
)


def _cumulative(field: str) -> Rule:
    def check(queries: Any) -> bool:
        return WINDOWED_COUNT.search(getattr(queries, field)) is None

    return Rule(
        cel=f"!self.{field}.matches('{_WINDOWED_CEL}')",
        message=_CUMULATIVE,
        check=check,
        field=f".{field}",
    )


class CountQueries(ApiModel):
    """Two PromQL queries for one revision, each the **cumulative** value of a counter.

    Return one series per process (``sum by (pod) (...)``, or by ``instance``): at every
    measurement the judge reads each series, takes its increase since the previous
    measurement itself (a value that went down is a restarted process, counted from 0), and
    so judges exact request counts however the scrape and measurement intervals relate.
    """

    requests: Query
    """Requests served so far, for example
    ``sum by (pod) (http_requests_total{version="{{canaryRevision}}"})``."""
    errors: Query
    """Failed requests so far, from the same counter (an empty answer is zero errors)."""

    rules: ClassVar[tuple[Rule, ...]] = (_cumulative("requests"), _cumulative("errors"))


_WORSE_ABOVE_TOLERANCE = Rule(
    cel="!has(self.worseRatio) || self.worseRatio > 1.0 + "
    "(has(self.tolerance) ? self.tolerance : 0.0)",
    message="worseRatio must exceed 1 + tolerance",
    check=lambda j: j.worse_ratio > 1.0 + j.tolerance,
    field=".worseRatio",
)
"""A sequential test needs its alternative above its null (judge and latency alike)."""


class LatencyCounts(ApiModel):
    """Two cumulative counts for one revision from its latency histogram."""

    requests: Query
    """Requests observed so far, for example
    ``sum by (pod) (http_request_duration_seconds_count{version="{{canaryRevision}}"})``."""
    slow: Query
    """Requests slower than your threshold so far: the histogram's count minus its bucket
    at the threshold, for example ``sum by (pod) (..._count{...}) - sum by (pod)
    (..._bucket{...,le="0.25"})``."""

    rules: ClassVar[tuple[Rule, ...]] = (_cumulative("requests"), _cumulative("slow"))


class LatencyComparison(ApiModel):
    """Is the canary slower? The share of requests slower than a threshold, canary against
    stable, judged by the same sequential test as the errors (with half of ``alpha``)."""

    canary: LatencyCounts
    """The canary's requests and slow requests."""
    stable: LatencyCounts
    """The stable's, from the same histogram and threshold."""
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    """Relative increase of the slow share still counted as not worse (0.1: 10%)."""
    worse_ratio: Annotated[float, Field(ge=1)] = 2.0
    """The ratio of slow shares (canary over stable) the test is tuned to detect."""

    rules: ClassVar[tuple[Rule, ...]] = (_WORSE_ABOVE_TOLERANCE,)

    @model_validator(mode="before")
    @classmethod
    def _no_quantile_queries(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(
            isinstance(data.get(side), str) for side in ("canary", "stable")
        ):
            raise ValueError(
                "latency.canary and latency.stable are now {requests, slow} cumulative "
                "counts, not a quantile query: count the requests slower than a threshold "
                "from the histogram (_count minus _bucket{le=...}); see the README's judge "
                "section"
            )
        return data


class ComparativeJudge(PrometheusConnection):
    """Compare the canary with the stable: sequential tests on their exact error counts
    (and, optionally, slow-request counts) between measurements, which fail a canary that
    is not worse with probability at most ``alpha`` over the whole life of the analysis,
    however long it keeps measuring."""

    canary: CountQueries
    """The canary's cumulative request and error counts."""
    stable: CountQueries
    """The stable's cumulative request and error counts."""
    alpha: Annotated[float, Field(ge=0.0001, le=0.2)] = 0.05
    """Highest probability of ever failing a canary that is not worse (a false alarm),
    over the whole analysis run."""
    beta: Annotated[float, Field(ge=0.0001, le=0.2)] = 0.05
    """Highest probability that one test passes a canary ``worseRatio`` times worse."""
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    """Relative increase of the error rate still counted as not worse (0.1: 10%)."""
    worse_ratio: Annotated[float, Field(ge=1)] = 2.0
    """The ratio of error rates (canary over stable) the test is tuned to detect; above
    ``1 + tolerance``."""
    min_requests: Annotated[int, Field(ge=0)] = 100
    """Canary requests needed in a test before the judge may pass it."""
    latency: LatencyComparison | None = None
    """Also compare the share of slow requests (the same test and guarantee)."""

    rules: ClassVar[tuple[Rule, ...]] = (_WORSE_ABOVE_TOLERANCE,)


class WebHeader(ApiModel):
    """One HTTP header of a web measurement."""

    key: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[!#-'*+.0-9A-Z^-z|~-]+$")]
    """The header's name."""
    value: Annotated[str, Field(max_length=8192)]
    """Its value; ``{{args.NAME}}`` is filled in (Secret-valued arguments too)."""


_FREE_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


class WebProvider(ApiModel):
    """An HTTP request whose JSON answer is the measured ``result`` (Argo Rollouts'
    ``web`` provider). ``{{args.NAME}}`` is filled in the URL (escaped for a URL), the
    header values, the ``body`` (as written) and the strings of ``jsonBody`` (as JSON)."""

    url: Annotated[str, Field(min_length=1, max_length=8192)]
    """The address, http or https."""
    method: Literal["GET", "POST", "PUT"] = "GET"
    """The request method; a body needs POST or PUT."""
    headers: Annotated[list[WebHeader], Field(max_length=MAX_LIST)] | None = None
    """Request headers."""
    body: Annotated[str, Field(max_length=65536)] | None = None
    """A body sent as written."""
    json_body: Annotated[dict[str, Any], Field(json_schema_extra=_FREE_OBJECT)] | None = None
    """A body given as a JSON object (sent with ``Content-Type: application/json``)."""
    json_path: Annotated[str, Field(max_length=1024)] = "{$}"
    """The part of the JSON answer that is ``result``, as a Kubernetes JSONPath such as
    ``{$.data.ok}`` (default: the whole answer)."""
    timeout_seconds: Annotated[int, Field(ge=1, le=300)] = 10
    """How long to wait for the answer."""
    insecure: bool = False
    """Skip TLS certificate verification (https only)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!(has(self.body) && has(self.jsonBody))",
            message="set body or jsonBody, not both",
            check=lambda w: not (w.body is not None and w.json_body is not None),
        ),
        Rule(
            cel="!(has(self.body) || has(self.jsonBody)) || "
            "(has(self.method) && self.method != 'GET')",
            message="a body needs method POST or PUT",
            check=lambda w: (w.body is None and w.json_body is None) or w.method != "GET",
            field=".method",
        ),
        Rule(
            cel="self.url.startsWith('http://') || self.url.startsWith('https://') || "
            "self.url.startsWith('{{')",
            message="must start with http:// or https:// (or be an argument)",
            check=lambda w: w.url.startswith(("http://", "https://", "{{")),
            field=".url",
        ),
    )


class JobMetadata(ApiModel):
    """Labels and annotations for the Job of each measurement."""

    labels: dict[str, str] | None = None
    """Labels (the Job also gets Stepwise's own)."""
    annotations: dict[str, str] | None = None
    """Annotations."""


class JobProvider(ApiModel):
    """A Kubernetes Job per measurement (Argo Rollouts' ``job`` provider): Successful when
    the Job completes, Failed when it fails. ``{{args.NAME}}`` is filled in its strings."""

    metadata: JobMetadata | None = None
    """Labels and annotations of the Job."""
    spec: Annotated[
        dict[str, Any],
        Field(
            json_schema_extra={
                **_FREE_OBJECT,
                "required": ["template"],
            }
        ),
    ]
    """A batch/v1 JobSpec, passed to the API server as written (after the arguments)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        # The schema requires it on the server; this is lint's side.
        Rule(
            cel=None,
            message="Required value: a JobSpec needs a pod template",
            check=lambda j: isinstance(j.spec.get("template"), dict),
            field=".spec.template",
        ),
    )


class MetricProvider(ApiModel):
    """Where a metric's measurements come from (exactly one provider)."""

    prometheus: PrometheusProvider | None = None
    """A PromQL query judged by the metric's thresholdRange or conditions."""
    judge: ComparativeJudge | None = None
    """A comparative canary-versus-stable judge that decides by itself."""
    web: WebProvider | None = None
    """An HTTP request whose JSON answer is judged by the metric's conditions."""
    job: JobProvider | None = None
    """A Kubernetes Job: its completion is the verdict."""

    rules: ClassVar[tuple[Rule, ...]] = (
        exactly_one(
            "prometheus",
            "judge",
            "web",
            "job",
            message="choose exactly one provider: prometheus, judge, web or job",
        ),
    )

    @property
    def kind(self) -> str:
        """``prometheus``, ``judge``, ``web`` or ``job``."""
        for name in ("prometheus", "judge", "web", "job"):
            if getattr(self, name) is not None:
                return name
        return "none"


class MinSamples(ApiModel):
    """A guard: too little traffic holds the analysis instead of judging it."""

    query: Annotated[str, Field(min_length=1, max_length=8192)]
    """A PromQL query returning the sample count (for example canary requests)."""
    min: Annotated[float, Field(ge=0)]
    """The count below which a measurement is NoData (held under onNoData; never Failed)."""


def _decides_by_itself(provider: str, message: str) -> Rule:
    """A metric whose ``provider`` gives the verdict has no criteria of its own."""

    def check(m: Metric) -> bool:
        return getattr(m.provider, provider) is None or (
            m.threshold_range is None
            and m.success_condition is None
            and m.failure_condition is None
            and m.min_samples is None
        )

    return Rule(
        cel=f"!has(self.provider.{provider}) || !(has(self.thresholdRange) || "
        "has(self.successCondition) || has(self.failureCondition) || has(self.minSamples))",
        message=message,
        check=check,
    )


class Metric(ApiModel):
    """One metric of a template."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*)?$")]
    """The metric's name (unique in the template)."""
    interval: DurationOrArg = "30s"
    """Time between measurements (or ``{{args.NAME}}``, as every number below)."""
    count: CountOrArg = 1
    """Measurements to take before the metric's verdict is final (at least 1)."""
    initial_delay: DurationOrArg = 0
    """Wait this long before the first measurement."""
    failure_limit: CountOrArg = 0
    """Failed measurements tolerated; one more fails the metric."""
    inconclusive_limit: CountOrArg = 0
    """Inconclusive measurements tolerated; one more makes the metric Inconclusive."""
    consecutive_error_limit: CountOrArg = 4
    """Consecutive provider errors tolerated; one more applies ``onProviderError``."""
    threshold_range: ThresholdRange | None = None
    """Successful when the value lies in this range."""
    success_condition: Annotated[str, Field(max_length=1024)] | None = None
    """A condition on ``result`` (for example ``result >= 0.99``); a small safe grammar."""
    failure_condition: Annotated[str, Field(max_length=1024)] | None = None
    """A condition on ``result`` that fails the measurement."""
    on_no_data: BlindPolicy = "Hold"
    """When the query returns no data: Hold (neither promote nor roll back), Fail, Pass."""
    on_provider_error: BlindPolicy = "Hold"
    """When errors exceed ``consecutiveErrorLimit``: Hold, Fail or Pass."""
    min_samples: MinSamples | None = None
    """Hold instead of judging while traffic is too low."""
    provider: MetricProvider
    """The metric provider."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.count) || type(self.count) != int || int(self.count) >= 1",
            message="must be at least 1",
            check=lambda m: not isinstance(m.count, int) or m.count >= 1,
            field=".count",
        ),
        Rule(
            cel="has(self.thresholdRange) || has(self.successCondition) || "
            "has(self.failureCondition) || has(self.provider.judge) || has(self.provider.job)",
            message="a metric needs thresholdRange, successCondition or failureCondition "
            "(or a judge or job provider)",
            check=lambda m: (
                m.threshold_range is not None
                or m.success_condition is not None
                or m.failure_condition is not None
                or m.provider.judge is not None
                or m.provider.job is not None
            ),
        ),
        _decides_by_itself(
            "job",
            "a job metric is judged by its Job: remove thresholdRange, "
            "successCondition, failureCondition and minSamples",
        ),
        Rule(
            cel="!has(self.provider.web) || !has(self.minSamples)",
            message="minSamples is a PromQL query: a web metric cannot have one",
            check=lambda m: m.provider.web is None or m.min_samples is None,
            field=".minSamples",
        ),
        _decides_by_itself(
            "judge",
            "a judge metric decides by itself: remove thresholdRange, "
            "successCondition, failureCondition and minSamples (use judge.minRequests)",
        ),
        Rule(
            cel="!has(self.provider.judge) || !has(self.onNoData) || self.onNoData == 'Hold'",
            message="a judge metric needs onNoData: Hold (its 'need more data' verdict is "
            "reported as NoData)",
            check=lambda m: m.provider.judge is None or m.on_no_data == "Hold",
            field=".onNoData",
        ),
    )


class AnalysisTemplateSpec(ApiModel):
    """Arguments and metrics."""

    args: (
        Annotated[list[TemplateArg], Field(max_length=MAX_LIST, json_schema_extra=NAMED_LIST)]
        | None
    ) = None
    """Arguments its queries use."""
    metrics: Annotated[
        list[Metric],
        Field(min_length=1, max_length=MAX_LIST, json_schema_extra=NAMED_LIST),
    ]
    """The metrics; every one must succeed for the analysis to succeed."""
    dry_run: Annotated[list[DryRun], Field(max_length=MAX_LIST)] | None = None
    """Metrics measured and reported but never failing the analysis."""
    measurement_retention: (
        Annotated[list[MeasurementRetention], Field(max_length=MAX_LIST)] | None
    ) = None
    """How many measurements of a metric the status keeps (default 10)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        # On the server the lists' map keys reject duplicates; these rules are for lint.
        Rule(
            cel=None,
            message="metric names must be unique",
            check=lambda s: len({m.name for m in s.metrics}) == len(s.metrics),
            field=".metrics",
        ),
        Rule(
            cel=None,
            message="argument names must be unique",
            check=lambda s: len({a.name for a in s.args or []}) == len(s.args or []),
            field=".args",
        ),
    )


class _TemplateObject(ApiModel):
    """What an AnalysisTemplate and a ClusterAnalysisTemplate hold; only ``kind`` tells
    them apart."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["stepwise.dev/v1alpha1"] = API_VERSION
    """The API version."""
    kind: str
    """The kind."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: AnalysisTemplateSpec
    """Arguments and metrics."""


class AnalysisTemplate(_TemplateObject):
    """Namespaced metrics that Rollouts in its namespace reference by name."""

    kind: Literal["AnalysisTemplate"] = "AnalysisTemplate"
    """The kind."""


class ClusterAnalysisTemplate(_TemplateObject):
    """Cluster-wide metrics that any Rollout references with ``clusterScope: true``."""

    kind: Literal["ClusterAnalysisTemplate"] = "ClusterAnalysisTemplate"
    """The kind."""
