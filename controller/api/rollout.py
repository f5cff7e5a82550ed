"""The ``Rollout`` resource (``stepwise.dev/v1alpha1``): its spec, status and the manual
intents that the CLI (or a GitOps repository) writes as annotations.

A Rollout owns one ReplicaSet per pod-template revision. Its ``strategy.canary.steps``
say how the new revision takes traffic; its status carries everything the controller
needs to resume after a crash (step index, pause start, abort, analysis counters).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import ConfigDict, Field

from controller.api.base import ApiModel, Rule, exactly_one
from controller.api.types import (
    Condition,
    Duration,
    IntOrPercent,
    LabelSelector,
    LabelValue,
    ObjectName,
    ServiceName,
    condition_list_schema,
)

GROUP: Final = "stepwise.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "stepwise.dev/v1alpha1"

MAX_STEPS = 64
MAX_LIST = 32
NAMED_LIST: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}
"""Schema of a list whose items are keyed by ``name`` (the server rejects duplicates)."""

# -- pod template ----------------------------------------------------------------------


class TemplateMetadata(ApiModel):
    """Labels and annotations of the pods a revision runs."""

    labels: Annotated[dict[str, LabelValue], Field(json_schema_extra={"maxProperties": 64})] = (
        Field(default_factory=dict)
    )
    """Pod labels; they must include every ``selector.matchLabels`` entry."""
    annotations: dict[str, str] | None = None
    """Pod annotations."""


class PodTemplate(ApiModel):
    """A PodTemplateSpec. The pod spec is passed to the ReplicaSet as written and
    validated there by the API server."""

    model_config = ConfigDict(extra="allow")

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Pod metadata."""
    spec: Annotated[
        dict[str, Any],
        Field(
            json_schema_extra={
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "required": ["containers"],
                "properties": {
                    "containers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        },
                        "description": "The pod's containers (at least one).",
                    }
                },
            }
        ),
    ]
    """The pod spec (a Kubernetes PodSpec)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.spec.containers) && size(self.spec.containers) > 0",
            message="the pod template needs at least one container",
            check=lambda t: bool(t.spec.get("containers")),
            field=".spec.containers",
        ),
    )


# -- steps -----------------------------------------------------------------------------


class Pause(ApiModel):
    """Wait: for ``duration`` when it is given, otherwise until the Rollout is promoted."""

    duration: Duration | None = None
    """How long to wait (30s, 5m, 1h, or an integer of seconds); omit it to wait for
    ``stepwise promote``."""


class TemplateRef(ApiModel):
    """A reference to an AnalysisTemplate (or a ClusterAnalysisTemplate)."""

    template_name: ObjectName
    """The template's name."""
    cluster_scope: bool = False
    """Look the name up among ClusterAnalysisTemplates instead of the Rollout's namespace."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the Rollout's namespace."""

    name: ObjectName
    """The Secret's name."""
    key: Annotated[str, Field(min_length=1)]
    """The key within the Secret."""


FIELD_PATH = r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9_-]*|\['[^']+'\])*$"
"""A field of the Rollout: dotted names, a map key in ``['...']`` (for keys with dots or
slashes), for example ``metadata.labels['app.kubernetes.io/version']``."""


class FieldRef(ApiModel):
    """A field of the Rollout itself."""

    field_path: Annotated[str, Field(max_length=256, pattern=FIELD_PATH)]
    """The field's path from the Rollout's top, e.g. ``metadata.labels['env']`` or
    ``spec.template.metadata.labels.version``; it must hold a string, number or boolean
    when the analysis starts (a label or annotation that is not set reads as empty, as
    in the Downward API)."""


class ArgValueFrom(ApiModel):
    """Where an argument's value comes from (exactly one field)."""

    secret_key_ref: SecretKeyRef | None = None
    """A Secret key (the value is never logged)."""
    pod_template_hash_value: Literal["Stable", "Latest"] | None = None
    """The pod-template hash of the stable revision (``Stable``) or of the revision being
    rolled out (``Latest``)."""
    field_ref: FieldRef | None = None
    """A field of the Rollout (its labels, annotations, pod template or status)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        exactly_one("secretKeyRef", "podTemplateHashValue", "fieldRef", subject="valueFrom"),
    )


class AnalysisArg(ApiModel):
    """A value passed to an analysis template's argument of the same name."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    """The argument's name, as the template declares it."""
    value: str | None = None
    """A literal value."""
    value_from: ArgValueFrom | None = None
    """A value read from a Secret, a revision's pod-template hash or a field of the
    Rollout."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="set value or valueFrom, not both",
            check=lambda a: not (a.value is not None and a.value_from is not None),
        ),
    )


_TEMPLATES = Annotated[list[TemplateRef], Field(min_length=1, max_length=MAX_LIST)]
_ARGS = Annotated[
    list[AnalysisArg],
    Field(
        max_length=MAX_LIST,
        json_schema_extra=NAMED_LIST,
    ),
]


def _unique(names: list[str]) -> bool:
    return len(names) == len(set(names))


#: The most measurements of one metric a status keeps (``measurementRetention.limit``).
MAX_RETAINED = 100

#: A metric name, or a regular expression over metric names (``.*`` for all).
MetricNamePattern = Annotated[str, Field(min_length=1, max_length=256)]


class DryRun(ApiModel):
    """Metrics measured and reported but never failing the analysis (Argo's ``dryRun``)."""

    metric_name: MetricNamePattern
    """A metric's name, or a regular expression matched against the whole name (``.*``
    or ``*`` for every metric)."""


class MeasurementRetention(ApiModel):
    """How many of a metric's latest measurements the status keeps."""

    metric_name: MetricNamePattern
    """A metric's name, or a regular expression as in ``dryRun``."""
    limit: Annotated[int, Field(ge=1, le=MAX_RETAINED)]
    """Measurements kept."""


def name_matches(pattern: str, name: str) -> bool:
    """Whether a ``dryRun``/``measurementRetention`` entry names the metric ``name``: the
    same name, ``*``, or a regular expression that matches the whole name (an invalid
    expression matches only itself)."""
    if pattern in (name, "*"):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


class RolloutAnalysis(ApiModel):
    """Analysis run by a step: the step waits for its verdict."""

    templates: _TEMPLATES
    """The templates whose metrics are measured."""
    args: _ARGS | None = None
    """Values for the templates' arguments."""
    dry_run: Annotated[list[DryRun], Field(max_length=MAX_LIST)] | None = None
    """Metrics measured and reported but never failing this analysis (added to the
    templates' own)."""
    measurement_retention: (
        Annotated[list[MeasurementRetention], Field(max_length=MAX_LIST)] | None
    ) = None
    """How many measurements of a metric the status keeps (over the templates' own)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.args) || self.args.all(a, self.args.exists_one(b, b.name == a.name))",
            message="argument names must be unique",
            check=lambda a: _unique([x.name for x in a.args or []]),
            field=".args",
        ),
    )


class SetCanaryScale(ApiModel):
    """Set the canary's replica count apart from its traffic weight (exactly one field)."""

    replicas: Annotated[int, Field(ge=0)] | None = None
    """An absolute number of canary pods."""
    weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Canary pods as a percentage of ``spec.replicas``."""
    match_traffic_weight: bool | None = None
    """Go back to sizing the canary by its traffic weight."""

    rules: ClassVar[tuple[Rule, ...]] = (
        exactly_one("replicas", "weight", "matchTrafficWeight", subject="setCanaryScale"),
    )


class StringMatch(ApiModel):
    """How a header value is matched (exactly one field)."""

    exact: str | None = None
    """The whole value."""
    prefix: str | None = None
    """A prefix of the value."""
    regex: str | None = None
    """A regular expression (RE2 syntax)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        exactly_one("exact", "prefix", "regex", subject="a header value match"),
    )


class HeaderMatch(ApiModel):
    """One request header condition."""

    header_name: Annotated[str, Field(min_length=1, max_length=256)]
    """The header's name."""
    header_value: StringMatch
    """How its value must match."""


class SetHeaderRoute(ApiModel):
    """Send requests matching headers to the canary, whatever the weight. An empty
    ``match`` removes the route."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9-]+$")]
    """The route's name (the router names the rule or route after it)."""
    match: Annotated[list[HeaderMatch], Field(max_length=16)] = Field(default_factory=list)
    """All of these must match; omit to remove the route."""


class RouteMatch(ApiModel):
    """One request condition of a mirror route: every field given must match."""

    method: StringMatch | None = None
    """The HTTP method."""
    path: StringMatch | None = None
    """The URL path."""
    headers: (
        Annotated[dict[str, StringMatch], Field(json_schema_extra={"maxProperties": 16})] | None
    ) = None
    """Request headers, by name."""


class SetMirrorRoute(ApiModel):
    """Copy requests matching any of ``match`` to the canary (the copy's answer is
    dropped; the requests are served by the route's stable and canary split as
    before). An empty ``match`` removes the route."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9-]+$")]
    """The route's name (the router names its route after it)."""
    match: Annotated[list[RouteMatch], Field(max_length=16)] = Field(default_factory=list)
    """Requests matching any of these are mirrored; omit to remove the route."""
    percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percent of the matching requests that are mirrored (default 100)."""


# -- the experiment step (Argo Rollouts' ``experiment``) ---------------------------------

EXPERIMENT_TEMPLATE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ExperimentService(ApiModel):
    """A Service for an experiment template's pods."""

    name: ServiceName | None = None
    """The Service's name (default: the name of the template's ReplicaSet)."""


class ExperimentTemplate(ApiModel):
    """One ReplicaSet the experiment runs, from the stable or the canary pod template."""

    name: Annotated[str, Field(min_length=1, max_length=52, pattern=EXPERIMENT_TEMPLATE_NAME)]
    """The template's name (``{{templates.<name>.podTemplateHash}}`` in analysis args)."""
    spec_ref: Literal["stable", "canary"]
    """Whose pod template the ReplicaSet runs: the stable revision's or the canary's."""
    replicas: Annotated[int, Field(ge=0)] = 1
    """Pods of the template's ReplicaSet."""
    metadata: TemplateMetadata | None = None
    """Labels and annotations added to the template's pods (over the source template's)."""
    selector: LabelSelector | None = None
    """The ReplicaSet's selector (default: the Rollout's); with ``metadata`` labels it
    keeps the pods out of Services that select the Rollout's labels."""
    weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percent of the traffic the router sends to the template's Service while the
    experiment runs, taken from the stable's share (needs ``trafficRouting`` with
    gatewayAPI, istio or smi; the Service is created even without ``service``)."""
    service: ExperimentService | None = None
    """Create a Service selecting exactly the template's pods, for as long as they run."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.metadata) || !has(self.metadata.labels) || "
            "!(['stepwise.dev/revision', 'stepwise.dev/rollout', 'stepwise.dev/experiment']"
            ".exists(k, k in self.metadata.labels))",
            message="experiment template metadata must not set stepwise.dev/revision, "
            "stepwise.dev/rollout or stepwise.dev/experiment: Stepwise sets them to tell the "
            "experiment's pods from the Rollout's",
            check=lambda t: (
                t.metadata is None
                or not {"stepwise.dev/revision", "stepwise.dev/rollout", "stepwise.dev/experiment"}
                & set(t.metadata.labels)
            ),
            field=".metadata.labels",
        ),
    )


class ExperimentAnalysis(ApiModel):
    """An analysis run while the experiment's ReplicaSets are Ready."""

    name: Annotated[str, Field(min_length=1, max_length=48, pattern=EXPERIMENT_TEMPLATE_NAME)]
    """The analysis' name within the experiment (its run is ``experiment-<step>-<name>``,
    a label value on the Jobs a job metric starts)."""
    template_name: ObjectName | None = None
    """The AnalysisTemplate (or, with ``clusterScope``, ClusterAnalysisTemplate) to run."""
    cluster_scope: bool = False
    """Look ``templateName`` up among ClusterAnalysisTemplates."""
    templates: _TEMPLATES | None = None
    """Several templates instead of ``templateName``."""
    args: _ARGS | None = None
    """Values for the templates' arguments; a value may use
    ``{{templates.<name>.podTemplateHash}}`` and ``{{templates.<name>.replicaset.name}}``."""
    required_for_completion: bool = False
    """The experiment does not end until this analysis has ended, even past ``duration``."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.templateName) != has(self.templates)",
            message="an experiment analysis takes exactly one of templateName, templates",
            check=lambda a: (a.template_name is None) != (a.templates is None),
        ),
    )

    def analysis(self) -> RolloutAnalysis:
        """The analysis as a step would run it (placeholders in ``args`` left as written)."""
        refs = self.templates or [
            TemplateRef(template_name=self.template_name or "", cluster_scope=self.cluster_scope)
        ]
        return RolloutAnalysis(templates=refs, args=self.args)


class ExperimentStep(ApiModel):
    """Run ReplicaSets beside the Rollout's (a fresh baseline of stable, a copy of the
    canary) and analyses that compare them; the step ends when ``duration`` has passed
    (counted from when every ReplicaSet is Ready) and the analyses that are
    ``requiredForCompletion`` have ended. A failed analysis aborts the rollout."""

    templates: Annotated[
        list[ExperimentTemplate],
        Field(min_length=1, max_length=MAX_LIST, json_schema_extra=NAMED_LIST),
    ]
    """The ReplicaSets to run (names unique)."""
    duration: Duration | None = None
    """How long the experiment runs once its ReplicaSets are Ready; without it, until its
    required analyses end (or, with none, until ``stepwise promote``)."""
    analyses: (
        Annotated[
            list[ExperimentAnalysis], Field(max_length=MAX_LIST, json_schema_extra=NAMED_LIST)
        ]
        | None
    ) = None
    """Analyses run while the experiment runs (names unique)."""
    dry_run: Annotated[list[DryRun], Field(max_length=MAX_LIST)] | None = None
    """Metrics measured and reported but never failing the experiment's analyses."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=None,
            message="experiment template names must be unique",
            check=lambda e: _unique([t.name for t in e.templates]),
            field=".templates",
        ),
        Rule(
            cel=None,
            message="experiment analysis names must be unique",
            check=lambda e: _unique([a.name for a in e.analyses or []]),
            field=".analyses",
        ),
    )


class Step(ApiModel):
    """One canary step: exactly one of its fields is set."""

    set_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Send this percentage of traffic to the canary (0 to 100)."""
    pause: Pause | None = None
    """Wait for a duration, or until promoted."""
    analysis: RolloutAnalysis | None = None
    """Measure the canary and wait for a verdict."""
    set_canary_scale: SetCanaryScale | None = None
    """Size the canary independently of its weight."""
    set_header_route: SetHeaderRoute | None = None
    """Route requests with matching headers to the canary (Gateway API and Istio)."""
    set_mirror_route: SetMirrorRoute | None = None
    """Copy matching requests to the canary while they are served as before (Istio)."""
    experiment: ExperimentStep | None = None
    """Run a fresh baseline and canary (or other ReplicaSets) beside the Rollout and
    analyse them; a failed analysis aborts."""

    rules: ClassVar[tuple[Rule, ...]] = (
        exactly_one(
            "setWeight",
            "pause",
            "analysis",
            "setCanaryScale",
            "setHeaderRoute",
            "setMirrorRoute",
            "experiment",
            subject="a step",
        ),
    )

    @property
    def kind(self) -> str:
        """The step's action name (setWeight, pause, ...)."""
        for name, field in type(self).model_fields.items():
            if getattr(self, name) is not None:
                return field.alias or name
        return "empty"


# -- traffic routing -------------------------------------------------------------------


class GatewayApiRouting(ApiModel):
    """Gateway API: weights of the stable and canary backendRefs of an HTTPRoute."""

    http_route: ObjectName
    """The HTTPRoute's name (in the Rollout's namespace)."""
    rule_names: Annotated[list[str], Field(max_length=MAX_LIST)] | None = None
    """Only the rules with these names; by default every rule whose backendRefs include
    the stable Service."""


class IstioVirtualService(ApiModel):
    """The VirtualService whose destinations carry the weights."""

    name: ObjectName
    """The VirtualService's name."""
    routes: Annotated[list[str], Field(max_length=MAX_LIST)] | None = None
    """Names of the HTTP routes to manage; by default all that reach the routed host
    (with ``tlsRoutes`` or ``tcpRoutes`` there may be none)."""
    tls_routes: Annotated[list[IstioTlsRoute], Field(max_length=MAX_LIST)] | None = None
    """TLS routes to manage, each chosen by its match's port and SNI hosts."""
    tcp_routes: Annotated[list[IstioTcpRoute], Field(max_length=MAX_LIST)] | None = None
    """TCP routes to manage, each chosen by its match's port."""


class IstioTlsRoute(ApiModel):
    """Selects the VirtualService's TLS routes whose matches name one port, this one
    (none given: matches without a port), and exactly these SNI hosts."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """The port of the route's matches."""
    sni_hosts: Annotated[list[str], Field(max_length=MAX_LIST)] | None = None
    """All the SNI hosts of the route's matches, in any order."""


class IstioTcpRoute(ApiModel):
    """Selects the VirtualService's TCP routes whose matches name one port, this one
    (none given: matches without a port)."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """The port of the route's matches."""


class IstioDestinationRule(ApiModel):
    """Route by subset of one host instead of by two Services."""

    name: ObjectName
    """The DestinationRule's name."""
    canary_subset_name: Annotated[str, Field(min_length=1)]
    """The subset that selects the canary revision."""
    stable_subset_name: Annotated[str, Field(min_length=1)]
    """The subset that selects the stable revision."""


class IstioRouting(ApiModel):
    """Istio: destination weights in a VirtualService."""

    virtual_service: IstioVirtualService
    """The VirtualService to manage."""
    destination_rule: IstioDestinationRule | None = None
    """Route by subsets of one host (otherwise by the stable and canary Services)."""


class NginxRouting(ApiModel):
    """NGINX ingress: a canary Ingress cloned from the stable one, weighted by annotation."""

    stable_ingress: ObjectName
    """The Ingress that sends traffic to the stable Service."""
    annotation_prefix: str = "nginx.ingress.kubernetes.io"
    """The ingress controller's annotation prefix."""


class SmiRouting(ApiModel):
    """SMI: backend weights of a TrafficSplit."""

    traffic_split_name: ObjectName | None = None
    """The TrafficSplit's name (default: the Rollout's name)."""
    root_service: ServiceName | None = None
    """The Service clients address (default: the stable Service)."""


class ManagedRoute(ApiModel):
    """A header or mirror route Stepwise may add to the router's object."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9-]+$")]
    """The name a ``setHeaderRoute`` or ``setMirrorRoute`` step uses."""


class TrafficRouting(ApiModel):
    """The router that shifts traffic (exactly one). Omit ``trafficRouting`` altogether
    to split traffic by replica ratio."""

    gateway_api: GatewayApiRouting | None = Field(default=None, alias="gatewayAPI")
    """Gateway API HTTPRoute."""
    istio: IstioRouting | None = None
    """Istio VirtualService."""
    nginx: NginxRouting | None = None
    """NGINX ingress canary annotations."""
    smi: SmiRouting | None = None
    """SMI TrafficSplit."""
    managed_routes: (
        Annotated[list[ManagedRoute], Field(max_length=MAX_LIST, json_schema_extra=NAMED_LIST)]
        | None
    ) = None
    """The header and mirror routes the steps may set, highest precedence first; when
    given, every ``setHeaderRoute`` and ``setMirrorRoute`` name must be listed."""

    rules: ClassVar[tuple[Rule, ...]] = (
        exactly_one(
            "gatewayAPI",
            "istio",
            "nginx",
            "smi",
            message="set exactly one traffic router: gatewayAPI, istio, nginx or smi",
        ),
        Rule(
            cel=None,  # the list map key rejects duplicates on the server
            message="managedRoutes names must be unique",
            check=lambda t: _unique([r.name for r in t.managed_routes or []]),
            field=".managedRoutes",
        ),
    )

    @property
    def kind(self) -> str:
        """Which router is configured."""
        if self.gateway_api:
            return "gatewayAPI"
        if self.istio:
            return "istio"
        if self.nginx:
            return "nginx"
        return "smi"

    @property
    def supports_header_routes(self) -> bool:
        """Whether this router can route by header (Gateway API and Istio can)."""
        return self.gateway_api is not None or self.istio is not None


class RoleMetadata(ApiModel):
    """Labels and annotations added to the pods of a revision while it has a role."""

    labels: Annotated[dict[str, LabelValue], Field(json_schema_extra={"maxProperties": 64})] = (
        Field(default_factory=dict)
    )
    """Labels added to the role's pods (never a selector label or the revision label)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to the role's pods."""


def _role_labels_keep_selectors(spec: RolloutSpec, strategy: str) -> bool:
    """Whether no role metadata of ``strategy`` (blueGreen or canary) sets a selector label
    or the revision label."""
    bg, canary = spec.strategy.blue_green, spec.strategy.canary
    roles: tuple[RoleMetadata | None, ...] = ()
    if strategy == "blueGreen" and bg is not None:
        roles = (bg.active_metadata, bg.preview_metadata)
    elif strategy == "canary" and canary is not None:
        roles = (canary.stable_metadata, canary.canary_metadata)
    selected = spec.selector.match_labels if spec.selector is not None else None
    reserved = set(selected or {}) | {"stepwise.dev/revision"}
    return all(not reserved & set(role.labels) for role in roles if role is not None)


def _role_cel(strategy: str, role: str) -> str:
    """CEL, on a RolloutSpec: the ``role`` metadata of ``strategy`` sets no selector label
    and not the revision label."""
    at = f"self.strategy.{strategy}.{role}"
    return (
        f"(!has({at}) || !has({at}.labels) || "
        f"(!('stepwise.dev/revision' in {at}.labels) && (!has(self.selector) || "
        "!has(self.selector.matchLabels) || "
        f"self.selector.matchLabels.all(k, !(k in {at}.labels)))))"
    )


def _roles_cel(strategy: str, *roles: str) -> str:
    """CEL: no ``role`` of ``strategy`` sets a selector label or the revision label."""
    each = " && ".join(_role_cel(strategy, role) for role in roles)
    return f"(!has(self.strategy.{strategy}) || ({each}))"


# -- the canary strategy ---------------------------------------------------------------


class BackgroundAnalysis(RolloutAnalysis):
    """Analysis that runs in the background from ``startingStep`` until promotion; a
    failure aborts the rollout at any step."""

    starting_step: Annotated[int, Field(ge=0)] = 0
    """The step index (0-based) at which it starts."""


_STEPS = Annotated[list[Step], Field(max_length=MAX_STEPS)]


def _has_header_step(canary: CanaryStrategy) -> bool:
    return any(s.set_header_route is not None for s in canary.steps)


def _has_mirror_step(canary: CanaryStrategy) -> bool:
    return any(s.set_mirror_route is not None for s in canary.steps)


def _has_experiment_weight(canary: CanaryStrategy) -> bool:
    return any(
        t.weight is not None
        for s in canary.steps
        if s.experiment is not None
        for t in s.experiment.templates
    )


def _by_subset(canary: CanaryStrategy) -> bool:
    """Whether the canary routes by Istio DestinationRule subsets."""
    routing = canary.traffic_routing
    return (
        routing is not None and routing.istio is not None and bool(routing.istio.destination_rule)
    )


def _step_routes_managed(canary: CanaryStrategy) -> bool:
    """With ``managedRoutes``, every header and mirror route a step names is listed."""
    routing = canary.traffic_routing
    if routing is None or routing.managed_routes is None:
        return True
    listed = {r.name for r in routing.managed_routes}
    for step in canary.steps:
        route = step.set_header_route or step.set_mirror_route
        if route is not None and route.name not in listed:
            return False
    return True


class CanaryStrategy(ApiModel):
    """How a new revision is brought in: services, router, steps and analysis."""

    stable_service: ServiceName | None = None
    """Service that selects the stable revision (Stepwise pins its selector to the stable
    pod-template hash). Required with trafficRouting, except Istio subset routing."""
    canary_service: ServiceName | None = None
    """Service that selects the canary revision. Required with trafficRouting, except
    Istio subset routing."""
    traffic_routing: TrafficRouting | None = None
    """The router; omit to split traffic by the ratio of Ready pods."""
    steps: _STEPS = Field(default_factory=list)
    """The steps, in order. With no steps a new revision is promoted once it is Ready."""
    analysis: BackgroundAnalysis | None = None
    """Background analysis across steps."""
    max_surge: IntOrPercent = "25%"
    """Pods allowed above ``spec.replicas`` while the canary scales (number or percent)."""
    max_unavailable: IntOrPercent = "25%"
    """Pods allowed below ``spec.replicas`` while the canary scales (number or percent)."""
    abort_scale_down_delay_seconds: Annotated[int, Field(ge=0)] = 30
    """After an abort, how long the canary keeps its pods once traffic is back on stable."""
    scale_down_delay_seconds: Annotated[int, Field(ge=0)] = 30
    """After promotion, how long the old stable keeps its pods once traffic has moved."""
    dynamic_stable_scale: bool = False
    """With a traffic router: scale the stable down to the share of traffic it still
    carries as the canary's weight grows (and back up on abort, moving traffic back as
    its pods become Ready), instead of keeping it at full size until promotion."""
    stable_metadata: RoleMetadata | None = None
    """Labels and annotations on the stable revision's pods (taken off when it stops
    being stable), for example for a monitoring selector."""
    canary_metadata: RoleMetadata | None = None
    """Labels and annotations on the canary revision's pods while it is the canary;
    replaced by ``stableMetadata`` when it is promoted."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.trafficRouting) || (has(self.stableService) && has(self.canaryService))"
            " || (has(self.trafficRouting.istio) && "
            "has(self.trafficRouting.istio.destinationRule))",
            message="trafficRouting needs both stableService and canaryService (only Istio "
            "subset routing, istio.destinationRule, works without them)",
            check=lambda c: (
                c.traffic_routing is None
                or (c.stable_service is not None and c.canary_service is not None)
                or _by_subset(c)
            ),
            field=".trafficRouting",
        ),
        Rule(
            cel="!has(self.dynamicStableScale) || !self.dynamicStableScale || "
            "has(self.trafficRouting)",
            message="dynamicStableScale needs trafficRouting (without a router traffic "
            "follows the pods, so the stable is already scaled to its share)",
            check=lambda c: not c.dynamic_stable_scale or c.traffic_routing is not None,
            field=".dynamicStableScale",
        ),
        Rule(
            cel="!has(self.maxSurge) || !has(self.maxUnavailable) || !("
            "(self.maxSurge == 0 || self.maxSurge == '0%') && "
            "(self.maxUnavailable == 0 || self.maxUnavailable == '0%'))",
            message="maxSurge and maxUnavailable cannot both be 0: no pod could ever be "
            "added or removed",
            check=lambda c: not (c.max_surge in (0, "0%") and c.max_unavailable in (0, "0%")),
            field=".maxUnavailable",
        ),
        Rule(
            cel="!has(self.stableService) || !has(self.canaryService) || "
            "self.stableService != self.canaryService",
            message="canaryService must differ from stableService",
            check=lambda c: c.stable_service is None or c.stable_service != c.canary_service,
            field=".canaryService",
        ),
        Rule(
            cel="!has(self.steps) || !self.steps.exists(s, has(s.setHeaderRoute)) || "
            "(has(self.trafficRouting) && "
            "(has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio)))",
            message="setHeaderRoute needs a router that supports header routes "
            "(trafficRouting.gatewayAPI or trafficRouting.istio)",
            check=lambda c: (
                not _has_header_step(c)
                or (c.traffic_routing is not None and c.traffic_routing.supports_header_routes)
            ),
            field=".steps",
        ),
        Rule(
            cel="!has(self.steps) || !self.steps.exists(s, has(s.experiment) && "
            "s.experiment.templates.exists(t, has(t.weight))) || (has(self.trafficRouting) "
            "&& (has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio) || "
            "has(self.trafficRouting.smi)))",
            message="steps[].experiment.templates[].weight needs a router that can split "
            "traffic to experiment Services: trafficRouting.gatewayAPI, istio or smi "
            "(nginx cannot split three ways; without a router traffic follows the pods); "
            "omit weight to run the templates without production traffic",
            check=lambda c: (
                not _has_experiment_weight(c)
                or (
                    c.traffic_routing is not None
                    and (
                        c.traffic_routing.gateway_api is not None
                        or c.traffic_routing.istio is not None
                        or c.traffic_routing.smi is not None
                    )
                )
            ),
            field=".steps",
        ),
        Rule(
            cel="!has(self.steps) || !self.steps.exists(s, has(s.setMirrorRoute)) || "
            "(has(self.trafficRouting) && has(self.trafficRouting.istio))",
            message="setMirrorRoute needs a router that supports mirror routes "
            "(trafficRouting.istio)",
            check=lambda c: (
                not _has_mirror_step(c)
                or (c.traffic_routing is not None and c.traffic_routing.istio is not None)
            ),
            field=".steps",
        ),
        Rule(
            cel="!has(self.steps) || !has(self.trafficRouting) || "
            "!has(self.trafficRouting.managedRoutes) || self.steps.all(s, "
            "(!has(s.setHeaderRoute) || self.trafficRouting.managedRoutes.exists(r, "
            "r.name == s.setHeaderRoute.name)) && (!has(s.setMirrorRoute) || "
            "self.trafficRouting.managedRoutes.exists(r, r.name == s.setMirrorRoute.name)))",
            message="every setHeaderRoute and setMirrorRoute name must be listed in "
            "trafficRouting.managedRoutes",
            check=_step_routes_managed,
            field=".steps",
        ),
        Rule(
            cel="!has(self.analysis) || !has(self.analysis.startingStep) || "
            "self.analysis.startingStep == 0 || "
            "(has(self.steps) && self.analysis.startingStep < size(self.steps))",
            message="analysis.startingStep must be the index of an existing step",
            check=lambda c: (
                c.analysis is None
                or c.analysis.starting_step == 0
                or c.analysis.starting_step < len(c.steps)
            ),
            field=".analysis.startingStep",
        ),
    )


class BlueGreenStrategy(ApiModel):
    """Blue-green: the new revision runs beside the live one behind a preview Service,
    is judged there, and takes all traffic at once when the active Service is switched
    to it; the old revision stays up for a delay, so switching back is instant."""

    active_service: ServiceName
    """Service that sends production traffic to the live revision (Stepwise pins its
    selector to that revision's pod-template hash)."""
    preview_service: ServiceName | None = None
    """Service that selects the new revision before the switch (for tests and the
    pre-promotion analysis)."""
    preview_replica_count: Annotated[int, Field(ge=1)] | None = None
    """Pods of the new revision until promotion; before the switch it is scaled to
    ``spec.replicas`` and must be Ready at that size (default: full size throughout)."""
    auto_promotion_enabled: bool = True
    """Switch once the new revision is Ready (and its pre-promotion analysis succeeded);
    false pauses for ``stepwise promote``."""
    auto_promotion_seconds: Annotated[int, Field(ge=0)] | None = None
    """With auto-promotion, wait this long after the new revision is Ready (and judged)
    before the switch."""
    pre_promotion_analysis: RolloutAnalysis | None = None
    """Judged on the preview before the switch; a failure aborts, and the active Service
    never moves."""
    post_promotion_analysis: RolloutAnalysis | None = None
    """Judged after the switch, while the old revision is still up; a failure switches
    the active Service back to it."""
    scale_down_delay_seconds: Annotated[int, Field(ge=0)] = 30
    """After the switch (and a successful post-promotion analysis), how long the old
    revision keeps its pods."""
    scale_down_delay_revision_limit: Annotated[int, Field(ge=0)] | None = None
    """At most this many old revisions wait out their scale-down delay; older ones go to
    zero at once (default: no limit)."""
    abort_scale_down_delay_seconds: Annotated[int, Field(ge=0)] = 30
    """After an abort, how long the new revision keeps its pods."""
    active_metadata: RoleMetadata | None = None
    """Added to the pods of the stable revision (removed when it stops being stable)."""
    preview_metadata: RoleMetadata | None = None
    """Added to the pods of the new revision until it is stable."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.previewService) || self.previewService != self.activeService",
            message="previewService must differ from activeService",
            check=lambda b: b.preview_service is None or b.preview_service != b.active_service,
            field=".previewService",
        ),
    )


class Strategy(ApiModel):
    """The deployment strategy: exactly one of ``canary`` and ``blueGreen``."""

    canary: CanaryStrategy | None = None
    """Canary: shift traffic in steps, judge, then promote or roll back."""
    blue_green: BlueGreenStrategy | None = None
    """Blue-green: run the new revision beside the live one, judge it, switch at once."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.canary) != has(self.blueGreen)",
            message="set exactly one of canary and blueGreen",
            check=lambda s: (s.canary is None) != (s.blue_green is None),
        ),
    )

    @property
    def traffic_routing(self) -> TrafficRouting | None:
        """The canary's router; None in replica-ratio mode and for blue-green."""
        return self.canary.traffic_routing if self.canary is not None else None

    @property
    def services(self) -> tuple[str | None, str | None]:
        """The Services Stepwise pins, by role: (the live revision's, the new one's):
        stable and canary Services, or active and preview Services."""
        if self.blue_green is not None:
            return self.blue_green.active_service, self.blue_green.preview_service
        if self.canary is not None:
            return self.canary.stable_service, self.canary.canary_service
        return None, None

    def analyses(self) -> list[RolloutAnalysis]:
        """Every analysis the strategy runs (steps, background, pre- and post-promotion)."""
        if self.blue_green is not None:
            bg = self.blue_green
            return [a for a in (bg.pre_promotion_analysis, bg.post_promotion_analysis) if a]
        if self.canary is None:
            return []
        found = [s.analysis for s in self.canary.steps if s.analysis is not None]
        found += [  # experiment analyses, their {{templates...}} placeholders as written
            a.analysis()
            for s in self.canary.steps
            if s.experiment is not None
            for a in s.experiment.analyses or []
        ]
        return found + ([self.canary.analysis] if self.canary.analysis is not None else [])

    def require_canary(self) -> CanaryStrategy:
        """The canary strategy, for code that only canaries reach (a router, say)."""
        if self.canary is None:
            raise ValueError("this Rollout has no canary strategy")
        return self.canary


# -- spec ------------------------------------------------------------------------------


def _selector_matches_template(spec: RolloutSpec) -> bool:
    if spec.selector is None or spec.template is None:
        return True
    labels = spec.template.metadata.labels
    return all(labels.get(k) == v for k, v in (spec.selector.match_labels or {}).items())


# -- workloadRef -----------------------------------------------------------------------

ScaleDown = Literal["never", "onsuccess", "progressively"]
"""What happens to a referenced Deployment's own pods (``spec.workloadRef.scaleDown``)."""


class WorkloadRef(ApiModel):
    """A Deployment whose pod template (and selector) the Rollout runs, instead of a
    ``template`` of its own (Argo Rollouts' ``workloadRef``). A change to the
    Deployment's pod template starts a new revision, as a template change does."""

    api_version: Annotated[str, Field(min_length=1, max_length=253)]
    """The referenced object's API version (``apps/v1``)."""
    kind: Annotated[str, Field(min_length=1, max_length=63)]
    """The referenced object's kind (``Deployment``; other kinds are reported in the
    status, not resolved)."""
    name: ObjectName
    """The Deployment's name, in the Rollout's namespace."""
    scale_down: ScaleDown = "never"
    """What Stepwise does with the Deployment's own pods: ``never`` leaves the Deployment
    alone; ``onsuccess`` scales it to 0 once the Rollout's first revision is Healthy;
    ``progressively`` scales it down as the Rollout's pods become Ready (the two together
    stay about ``spec.replicas``) and to 0 once the Rollout is Healthy. Either is done
    once, for the migration: a Deployment someone scales up again afterwards is left
    alone (see the ``stepwise.dev/scale-down`` annotation Stepwise writes on it)."""


class RollbackWindow(ApiModel):
    """How far back a rollback is fast-tracked."""

    revisions: Annotated[int, Field(ge=0)] = 0
    """The window counts the stable revision and the ones before it: with 3, a template
    set back to either of the two revisions before the stable one (whose ReplicaSets are
    still kept, see ``revisionHistoryLimit``) is promoted without steps or analysis."""


class RolloutSpec(ApiModel):
    """The desired state of a Rollout."""

    replicas: Annotated[int, Field(ge=0)] = 1
    """Desired pod count (shared by stable and canary as the steps say)."""
    selector: LabelSelector | None = None
    """Selects the Rollout's pods; must match the template's labels. Required with
    ``template``; with ``workloadRef`` it defaults to the Deployment's selector."""
    template: PodTemplate | None = None
    """The pod template. A change to it starts a canary. Exactly one of ``template`` and
    ``workloadRef``."""
    workload_ref: WorkloadRef | None = None
    """Take the pod template (and, without ``selector``, the selector) from a Deployment
    instead; exactly one of ``template`` and ``workloadRef``."""
    revision_history_limit: Annotated[int, Field(ge=0)] = 3
    """Old ReplicaSets kept (scaled to zero) for a fast rollback."""
    release_history_limit: Annotated[int, Field(ge=0, le=25)] = 10
    """Releases kept in ``status.releases`` (the delivery record that ``stepwise report``
    reads; older ones live on in the controller's metrics). Stepwise only."""
    rollback_window: RollbackWindow | None = None
    """Going back to one of the last revisions skips the steps and the analysis."""
    progress_deadline_seconds: Annotated[int, Field(ge=1)] = 600
    """Abort when a step makes no progress (pods not Ready) for this long."""
    progress_deadline_abort: bool = True
    """Whether passing the progress deadline aborts the new revision (traffic back to
    stable). With false the Rollout is only marked Degraded and keeps waiting. Argo's
    default is false; Stepwise's is true, so a stuck canary never keeps its traffic."""
    paused: bool = False
    """Hold the canary where it is: no step advances, no scaling, no traffic or Service
    change, no promotion (promote intents act on resume); paused time does not count
    toward progressDeadlineSeconds. Moves that take traffic away from a canary still
    happen: an abort (manual, or a failed analysis), a newer revision superseding it (a
    routed weight returns to stable; the new revision waits for resume) and re-applying
    the stable template."""
    strategy: Strategy
    """How a new revision is brought in."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.template) != has(self.workloadRef)",
            message="set exactly one of template and workloadRef",
            check=lambda s: (s.template is None) != (s.workload_ref is None),
            field=".template",
        ),
        Rule(
            cel="has(self.selector) || has(self.workloadRef)",
            message="selector is required with template (only workloadRef takes the Deployment's)",
            check=lambda s: s.selector is not None or s.workload_ref is not None,
            field=".selector",
        ),
        Rule(
            cel="!has(self.selector) || has(self.selector.matchLabels) || "
            "has(self.selector.matchExpressions)",
            message="selector must not be empty",
            check=lambda s: (
                s.selector is None or bool(s.selector.match_labels or s.selector.match_expressions)
            ),
            field=".selector",
        ),
        Rule(
            cel="!has(self.selector) || !has(self.template) || "
            "!has(self.selector.matchLabels) || self.selector.matchLabels.all(k, "
            "has(self.template.metadata) && has(self.template.metadata.labels) && "
            "k in self.template.metadata.labels && "
            "self.template.metadata.labels[k] == self.selector.matchLabels[k])",
            message="selector.matchLabels must match template.metadata.labels",
            check=_selector_matches_template,
            field=".selector",
        ),
        Rule(
            cel=_roles_cel("blueGreen", "activeMetadata", "previewMetadata"),
            message="activeMetadata and previewMetadata must not set a selector label or "
            "stepwise.dev/revision: a pod would leave its ReplicaSet",
            check=lambda spec: _role_labels_keep_selectors(spec, "blueGreen"),
            field=".strategy.blueGreen",
        ),
        Rule(
            cel=_roles_cel("canary", "stableMetadata", "canaryMetadata"),
            message="stableMetadata and canaryMetadata must not set a selector label or "
            "stepwise.dev/revision: a pod would leave its ReplicaSet",
            check=lambda spec: _role_labels_keep_selectors(spec, "canary"),
            field=".strategy.canary",
        ),
    )

    @property
    def pod_template(self) -> PodTemplate:
        """The pod template: ``template``, or the Deployment's once the runtime has
        resolved ``workloadRef`` (:mod:`controller.core.workload`)."""
        if self.template is None:
            raise ValueError("spec.template: not resolved from spec.workloadRef")
        return self.template

    @property
    def pod_selector(self) -> LabelSelector:
        """The selector: ``selector``, or the Deployment's once ``workloadRef`` is
        resolved."""
        if self.selector is None:
            raise ValueError("spec.selector: not resolved from spec.workloadRef")
        return self.selector


# -- status ----------------------------------------------------------------------------

Phase = Literal["Progressing", "Paused", "Healthy", "Degraded"]
WaitReason = Literal[
    "PodsNotReady",
    "TrafficShifting",
    "PauseStep",
    "AwaitingPromotion",
    "AnalysisRunning",
    "AnalysisBlind",
    "AnalysisInconclusive",
    "SpecPaused",
    "Blocked",
    "ExperimentRunning",
]
"""Why a Rollout is not moving on (``status.waitReason``), for programs to read:

* ``PodsNotReady``: pods of a revision are not Ready yet (counts toward
  ``progressDeadlineSeconds``);
* ``TrafficShifting``: traffic is being moved back to the stable revision;
* ``PauseStep``: a timed pause step, which ends by itself;
* ``AwaitingPromotion``: a ``pause: {}`` step: a person promotes (``stepwise promote``);
* ``AnalysisRunning``: an analysis is measuring;
* ``AnalysisBlind``: an analysis holds because a metric has no data or its provider
  fails (see the ``AnalysisBlind`` condition);
* ``AnalysisInconclusive``: a person promotes or aborts;
* ``SpecPaused``: ``spec.paused`` holds everything until resumed;
* ``Blocked``: something outside the Rollout (a missing Service, a router) must be fixed;
* ``ExperimentRunning``: an experiment step's ReplicaSets run until its duration ends.
"""
AnalysisPhase = Literal["Pending", "Running", "Successful", "Failed", "Inconclusive", "Error"]
MeasurementPhase = Literal["Successful", "Failed", "Inconclusive", "Error", "NoData"]


class Measurement(ApiModel):
    """One measurement of a metric."""

    phase: MeasurementPhase
    """How it was judged."""
    value: str | None = None
    """The measured value(s), as text."""
    message: str = ""
    """Why, for anything but Successful."""
    started_at: dt.datetime
    """When the query was sent."""
    finished_at: dt.datetime | None = None
    """When the answer came back."""


class MetricResult(ApiModel):
    """The running tally of one metric."""

    name: str
    """The metric's name in its template."""
    phase: AnalysisPhase = "Pending"
    """The metric's verdict so far."""
    count: int = 0
    """Measurements taken."""
    successful: int = 0
    """Measurements judged Successful."""
    failed: int = 0
    """Measurements judged Failed."""
    inconclusive: int = 0
    """Measurements judged Inconclusive."""
    no_data: int = 0
    """Measurements that returned no data."""
    error: int = 0
    """Measurements that could not be taken (provider errors)."""
    consecutive_errors: int = 0
    """Errors since the last good measurement."""
    message: str = ""
    """The latest explanation."""
    measurements: Annotated[list[Measurement], Field(max_length=MAX_RETAINED)] = Field(
        default_factory=list
    )
    """The latest measurements (10, or the metric's ``measurementRetention``)."""
    dry_run: bool = False
    """Measured and reported only: its verdict never fails the analysis."""
    next_at: dt.datetime | None = None
    """When the next measurement is due."""


class AnalysisRunStatus(ApiModel):
    """One analysis (a step's, or the background one) for the canary revision."""

    name: str
    """``step-<index>`` or ``background``."""
    revision: str
    """The canary revision it judges."""
    phase: AnalysisPhase = "Pending"
    """The verdict so far."""
    started_at: dt.datetime
    """When it started."""
    message: str = ""
    """The reason for the verdict."""
    metrics: list[MetricResult] = Field(default_factory=list)
    """Per-metric results."""


AbortReason = Literal[
    "AnalysisFailed", "Manual", "ProgressDeadlineExceeded", "CanaryServiceMissing"
]


class AbortStatus(ApiModel):
    """Why and when the canary was aborted."""

    reason: AbortReason
    """AnalysisFailed, Manual, ProgressDeadlineExceeded, or CanaryServiceMissing (the
    canary Service disappeared while it carried traffic)."""
    message: str
    """What happened, naming the analysis and metric when it was one."""
    revision: str
    """The aborted canary revision."""
    time: dt.datetime
    """When it was aborted."""
    attempt: Annotated[int, Field(ge=1)] = 1
    """How many times this revision has been aborted (a retry starts the next attempt)."""


class ScheduledScaleDown(ApiModel):
    """A revision whose pods are kept for a while after traffic left them."""

    revision: str
    """The pod-template hash of the ReplicaSet to scale down."""
    at: dt.datetime
    """When to scale it to zero."""


ExperimentPhase = Literal["Pending", "Running", "Successful", "Failed", "Terminated"]


class ExperimentTemplateStatus(ApiModel):
    """One ReplicaSet of the experiment."""

    name: str
    """The experiment template's name."""
    pod_template_hash: str
    """Its pods' ``stepwise.dev/revision`` label (what ``{{templates.<name>.podTemplateHash}}``
    gives an analysis)."""
    replica_set: str
    """The ReplicaSet's name."""


class ExperimentStatus(ApiModel):
    """The experiment of an ``experiment`` step (the latest one of the canary)."""

    step: int
    """The step index."""
    revision: str
    """The canary revision it belongs to."""
    phase: ExperimentPhase = "Pending"
    """Pending (ReplicaSets not all Ready), Running, Successful, Failed (an analysis
    failed) or Terminated (abort, promote-full, a new revision)."""
    started_at: dt.datetime
    """When the step created its ReplicaSets."""
    running_since: dt.datetime | None = None
    """When all its ReplicaSets were first Ready (``duration`` counts from here)."""
    message: str = ""
    """What it waits for, or why it ended."""
    templates: list[ExperimentTemplateStatus] = Field(default_factory=list)
    """Its ReplicaSets."""


class BlueGreenStatus(ApiModel):
    """Which revision each blue-green Service selects (as Argo Rollouts reports them)."""

    active_selector: str | None = None
    """Pod-template hash the active Service selects."""
    preview_selector: str | None = None
    """Pod-template hash the preview Service selects."""


ReleaseOutcome = Literal["Promoted", "Aborted", "Superseded"]


class ReleaseStep(ApiModel):
    """A step of a release that completed."""

    index: int
    """The step's index in ``spec.strategy.canary.steps``."""
    ended_at: dt.datetime
    """When it completed."""


class ReleaseAnalysis(ApiModel):
    """An analysis run of a release that reached a verdict."""

    name: str
    """The run's name (``step-<i>``, ``background``, ``pre-promotion``, ...)."""
    phase: AnalysisPhase
    """Its verdict."""
    ended_at: dt.datetime
    """When it reached it."""


class ReleaseApproval(ApiModel):
    """A time the release waited for a person (``stepwise promote``)."""

    step: int | None = None
    """The step it waited at (0 for a blue-green promotion, as its promote intent names it)."""
    since: dt.datetime
    """When the wait began."""


class Release(ApiModel):
    """One attempt at rolling out one revision, from the template change to its outcome."""

    revision: str
    """The pod-template hash."""
    attempt: Annotated[int, Field(ge=1)] = 1
    """1, then one more for each ``stepwise retry`` of the same revision."""
    images: list[str] = Field(default_factory=list)
    """The images of the revision's containers."""
    changed_by: str | None = None
    """The field manager that last changed ``spec.template`` (``kubectl-set``,
    ``argocd-controller``, ...), when the API server recorded one."""
    changed_at: dt.datetime
    """When the template changed (the field manager's time, to the second), or when the
    controller first saw the revision if that is unknown."""
    started_at: dt.datetime
    """When the controller started rolling it out."""
    steps: Annotated[list[ReleaseStep], Field(max_length=MAX_LIST)] = Field(default_factory=list)
    """Steps completed, in order (the last 32)."""
    analyses: Annotated[list[ReleaseAnalysis], Field(max_length=MAX_LIST)] = Field(
        default_factory=list
    )
    """Analysis runs that reached a verdict (the last 32)."""
    approvals: Annotated[list[ReleaseApproval], Field(max_length=100)] = Field(default_factory=list)
    """Waits for a manual promotion."""
    outcome: ReleaseOutcome | None = None
    """Promoted, Aborted or Superseded (a newer template replaced it before either);
    unset while it is in progress."""
    reason: AbortReason | None = None
    """Aborted only: AnalysisFailed, Manual (an abort intent, or the template set back to
    the stable revision), ProgressDeadlineExceeded or CanaryServiceMissing."""
    message: Annotated[str, Field(max_length=1024)] = ""
    """Aborted only: what failed (the analysis and metric, or the deadline), cut at 1024
    characters."""
    ended_at: dt.datetime | None = None
    """When the outcome was decided."""
    detected_at: dt.datetime | None = None
    """Aborted only: the start of the window of the first failing measurement (an abort
    by analysis), or the abort itself (any other reason)."""
    restored_at: dt.datetime | None = None
    """Aborted only: when all traffic was back on stable (a router's weight 0, or the
    canary's last Ready pod gone without one; the active Service on the stable revision
    for blue-green)."""
    time_to_detect_seconds: Annotated[float, Field(ge=0)] | None = None
    """Aborted only: ``detectedAt`` - ``changedAt``."""
    time_to_restore_seconds: Annotated[float, Field(ge=0)] | None = None
    """Aborted only: ``restoredAt`` - the abort."""
    lead_time_seconds: Annotated[float, Field(ge=0)] | None = None
    """Promoted only: from ``changedAt`` to the promotion."""


class RolloutStatus(ApiModel):
    """The observed state of a Rollout: enough to resume after a crash and to explain it."""

    model_config = ConfigDict(extra="ignore")

    phase: Phase | None = None
    """Progressing, Paused, Healthy or Degraded."""
    message: str = ""
    """What the Rollout is doing or waiting for."""
    wait_reason: WaitReason | None = None
    """Why it is not moving on, as a word programs can rely on (unset when it is not
    waiting): PodsNotReady, TrafficShifting, PauseStep, AwaitingPromotion,
    AnalysisRunning, AnalysisBlind, AnalysisInconclusive, SpecPaused or Blocked."""
    observed_generation: int = 0
    """The spec generation this status describes."""
    current_step_index: int | None = None
    """The step being carried out (equal to the step count when all are done)."""
    canary_weight: int = 0
    """The traffic percentage the router sends to the canary."""
    stable_revision: str | None = None
    """Pod-template hash of the stable revision."""
    canary_revision: str | None = None
    """Pod-template hash of the revision being rolled out (equal to stable when none)."""
    pause_start_time: dt.datetime | None = None
    """When the current pause began (a restarted controller keeps the remaining time)."""
    step_start_time: dt.datetime | None = None
    """When the current step began (for the progress deadline)."""
    abort: AbortStatus | None = None
    """Set while the canary is aborted."""
    analysis_runs: list[AnalysisRunStatus] = Field(default_factory=list)
    """Analyses of the current canary revision."""
    scale_down: list[ScheduledScaleDown] = Field(default_factory=list)
    """ReplicaSets kept up after traffic left them (scaleDownDelaySeconds,
    abortScaleDownDelaySeconds), and when each goes to zero."""
    blue_green: BlueGreenStatus | None = None
    """Blue-green only: the revisions the active and preview Services select."""
    experiment: ExperimentStatus | None = None
    """The latest experiment step's experiment (canary only)."""
    releases: Annotated[list[Release], Field(max_length=25)] = Field(default_factory=list)
    """The delivery record: the last ``spec.releaseHistoryLimit`` releases, oldest first."""
    replicas: int = 0
    """Pods of all revisions."""
    ready_replicas: int = 0
    """Ready pods of all revisions."""
    updated_replicas: int = 0
    """Pods of the canary revision."""
    selector: str = ""
    """The selector as a string (for the scale subresource and HPA)."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=condition_list_schema())] = (
        Field(default_factory=list)
    )
    """Standard conditions: Progressing, Healthy, Paused, Aborted, InvalidSpec,
    AnalysisBlind."""


# -- the resource ----------------------------------------------------------------------


class ObjectMeta(ApiModel):
    """The part of metadata that Stepwise reads."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    """The object's name."""
    namespace: str | None = None
    """The object's namespace."""
    uid: str | None = None
    """The object's UID."""
    generation: int | None = None
    """The spec generation."""
    resource_version: str | None = None
    """The version for optimistic concurrency."""
    labels: dict[str, str] | None = None
    """Labels."""
    annotations: dict[str, str] | None = None
    """Annotations (manual intents among them)."""
    creation_timestamp: dt.datetime | None = None
    """When the object was created (the older of two overlapping Rollouts keeps going)."""
    deletion_timestamp: dt.datetime | None = None
    """Set while the object is being deleted."""


class Rollout(ApiModel):
    """A Rollout: a Deployment that rolls out its new revisions as a judged canary."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["stepwise.dev/v1alpha1"] = API_VERSION
    """The API version."""
    kind: Literal["Rollout"] = "Rollout"
    """The kind."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: RolloutSpec
    """The desired state."""
    status: RolloutStatus = Field(default_factory=RolloutStatus)
    """The observed state (written by the controller through the status subresource)."""
