"""``AnalysisTemplate`` and ``ClusterAnalysisTemplate``: the metrics that judge a canary.

A metric is measured every ``interval`` for ``count`` measurements; each measurement is
judged Successful, Failed, Inconclusive, Error or NoData, and the limits below turn the
tally into a verdict. ``onNoData`` and ``onProviderError`` say what blindness means:
by default the analysis holds (it neither promotes nor rolls back while it cannot see).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

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


class PrometheusProvider(ApiModel):
    """Measure with a PromQL instant query."""

    address: str | None = None
    """Prometheus's base URL; default: the controller's ``--prometheus-address``."""
    query: Annotated[str, Field(min_length=1, max_length=8192)]
    """The PromQL query; ``{{args.NAME}}``, ``{{rollout}}``, ``{{namespace}}``,
    ``{{stableRevision}}``, ``{{canaryRevision}}``, ``{{interval}}`` are filled in (escaped)."""
    timeout: Duration = "10s"
    """How long one query may take."""
    auth: PrometheusAuth | None = None
    """Authentication."""
    headers: dict[str, str] | None = None
    """Extra HTTP headers."""
    ca_secret: SecretKeyRef | None = None
    """A CA bundle for Prometheus's certificate."""
    insecure_skip_verify: bool = False
    """Accept any certificate (never do this outside a test)."""


class MetricProvider(ApiModel):
    """Where a metric's measurements come from."""

    prometheus: PrometheusProvider
    """Prometheus."""


class MinSamples(ApiModel):
    """A guard: too little traffic holds the analysis instead of judging it."""

    query: Annotated[str, Field(min_length=1, max_length=8192)]
    """A PromQL query returning the sample count (for example canary requests)."""
    min: Annotated[float, Field(ge=0)]
    """The count below which a measurement is Inconclusive (never Failed)."""


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
            "has(self.failureCondition)",
            message="a metric needs thresholdRange, successCondition or failureCondition",
            check=lambda m: (
                m.threshold_range is not None
                or m.success_condition is not None
                or m.failure_condition is not None
            ),
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
