"""``AnalysisTemplate`` and ``ClusterAnalysisTemplate``: the metrics that judge a canary.

A metric is measured every ``interval`` for ``count`` measurements; each measurement is
judged Successful, Failed, Inconclusive, Error or NoData, and the limits below turn the
tally into a verdict. ``onNoData`` and ``onProviderError`` say what blindness means:
by default the analysis holds (it neither promotes nor rolls back while it cannot see).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from controller.api.base import ApiModel, Rule
from controller.api.rollout import API_VERSION, MAX_LIST, ObjectMeta, SecretKeyRef
from controller.api.types import Duration

BlindPolicy = Literal["Hold", "Fail", "Pass"]


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


class MetricProvider(ApiModel):
    """Where a metric's measurements come from (exactly one provider)."""

    prometheus: PrometheusProvider | None = None
    """A PromQL query judged by the metric's thresholdRange or conditions."""
    judge: ComparativeJudge | None = None
    """A comparative canary-versus-stable judge that decides by itself."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.prometheus) != has(self.judge)",
            message="choose exactly one provider: prometheus or judge",
            check=lambda p: (p.prometheus is None) != (p.judge is None),
        ),
    )


class MinSamples(ApiModel):
    """A guard: too little traffic holds the analysis instead of judging it."""

    query: Annotated[str, Field(min_length=1, max_length=8192)]
    """A PromQL query returning the sample count (for example canary requests)."""
    min: Annotated[float, Field(ge=0)]
    """The count below which a measurement is NoData (held under onNoData; never Failed)."""


class Metric(ApiModel):
    """One metric of a template."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*)?$")]
    """The metric's name (unique in the template)."""
    interval: Duration = "30s"
    """Time between measurements."""
    count: Annotated[int, Field(ge=1)] = 1
    """Measurements to take before the metric's verdict is final."""
    initial_delay: Duration = 0
    """Wait this long before the first measurement."""
    failure_limit: Annotated[int, Field(ge=0)] = 0
    """Failed measurements tolerated; one more fails the metric."""
    inconclusive_limit: Annotated[int, Field(ge=0)] = 0
    """Inconclusive measurements tolerated; one more makes the metric Inconclusive."""
    consecutive_error_limit: Annotated[int, Field(ge=0)] = 4
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
            cel="has(self.thresholdRange) || has(self.successCondition) || "
            "has(self.failureCondition) || has(self.provider.judge)",
            message="a metric needs thresholdRange, successCondition or failureCondition "
            "(or a judge provider)",
            check=lambda m: (
                m.threshold_range is not None
                or m.success_condition is not None
                or m.failure_condition is not None
                or m.provider.judge is not None
            ),
        ),
        Rule(
            cel="!has(self.provider.judge) || !(has(self.thresholdRange) || "
            "has(self.successCondition) || has(self.failureCondition) || has(self.minSamples))",
            message="a judge metric decides by itself: remove thresholdRange, "
            "successCondition, failureCondition and minSamples (use judge.minRequests)",
            check=lambda m: (
                m.provider.judge is None
                or (
                    m.threshold_range is None
                    and m.success_condition is None
                    and m.failure_condition is None
                    and m.min_samples is None
                )
            ),
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
        Annotated[
            list[TemplateArg],
            Field(
                max_length=MAX_LIST,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Arguments its queries use."""
    metrics: Annotated[
        list[Metric],
        Field(
            min_length=1,
            max_length=MAX_LIST,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ]
    """The metrics; every one must succeed for the analysis to succeed."""

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


class AnalysisTemplate(ApiModel):
    """Namespaced metrics that Rollouts in its namespace reference by name."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["stepwise.dev/v1alpha1"] = API_VERSION
    """The API version."""
    kind: Literal["AnalysisTemplate"] = "AnalysisTemplate"
    """The kind."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: AnalysisTemplateSpec
    """Arguments and metrics."""


class ClusterAnalysisTemplate(ApiModel):
    """Cluster-wide metrics that any Rollout references with ``clusterScope: true``."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["stepwise.dev/v1alpha1"] = API_VERSION
    """The API version."""
    kind: Literal["ClusterAnalysisTemplate"] = "ClusterAnalysisTemplate"
    """The kind."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: AnalysisTemplateSpec
    """Arguments and metrics."""
