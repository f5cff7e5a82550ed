"""Flagger -> Stepwise: a ``Canary`` (``flagger.app/v1beta1``) becomes a Rollout that takes
its pods from the Canary's Deployment (``spec.workloadRef``), an AnalysisTemplate named
after the Canary with its metrics and webhooks, and the objects Flagger generates at run
time but Stepwise expects to exist: the apex, ``-primary`` and ``-canary`` Services, and
an HTTPRoute (Gateway API) or VirtualService (Istio). ``MetricTemplate`` objects are read
for the Canaries that use them and are not written themselves.

The choices, in Flagger's terms:

==============================  ===========================================================
Flagger                         Stepwise
==============================  ===========================================================
``targetRef`` (Deployment)      ``spec.workloadRef`` with ``scaleDown: onsuccess`` (Flagger
                                scales its target to zero once the primary serves)
``service`` name and ports      Services ``<svc>``, ``<svc>-primary`` (stable) and
                                ``<svc>-canary`` with the Deployment's selector
``stepWeight``/``maxWeight``,   ``setWeight`` steps, each followed by ``pause: interval``
``stepWeights``
``iterations`` + ``match``      one ``setHeaderRoute`` step per match, then a pause of
                                ``iterations`` intervals
``iterations`` (blue-green)     ``kubernetes`` provider: the blueGreen strategy (apex
                                Service active, canary Service preview); other providers:
                                a pause of ``iterations`` intervals with no traffic
``metrics`` and ``rollout`` /   a background analysis (template ``<canary>``): every metric
``load-test`` webhooks          measured each ``interval``, ``count`` = the checks Flagger
                                needs, ``failureLimit`` and ``consecutiveErrorLimit`` =
                                ``threshold - 1``, ``onNoData``/``onProviderError: Fail``
                                (Flagger counts "no values" and errors as failed checks)
built-in metrics                Stepwise's built-in ClusterAnalysisTemplates of the provider
``pre-rollout`` webhooks        an analysis step before the first weight
``confirm-rollout`` /           ``pause: {}`` first / last (``stepwise promote``)
``confirm-promotion``
``suspend``                     ``spec.paused``
``skipAnalysis``                no steps and no analysis (promote once Ready)
==============================  ===========================================================
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from controller.api.base import parse_duration
from controller.api.rollout import API_VERSION
from controller.convert.common import Dropped, Options, dns_label, gate, name_of

FLAGGER_GROUP: Final = "flagger.app"
FLAGGER_VERSION: Final = "flagger.app/v1beta1"

#: Flagger's defaults (``pkg/apis/flagger/v1beta1``).
DEFAULT_INTERVAL: Final = "1m"
DEFAULT_THRESHOLD: Final = 1
DEFAULT_MAX_WEIGHT: Final = 100


@dataclass(frozen=True)
class Builtin:
    """Stepwise's built-in ClusterAnalysisTemplates for one metrics convention, and the
    thresholds they judge with (in Flagger's units: percent, milliseconds)."""

    success_rate: str
    """The success-rate template's name."""
    latency: str
    """The p99 latency template's name."""
    min_success_percent: float = 99.0
    """The success-rate template's ``thresholdRange.min``, as a percentage."""
    max_latency_ms: float = 500.0
    """The latency template's ``thresholdRange.max``, in milliseconds."""


#: The convention of each Flagger provider (deploy/templates/*.yaml; a unit test keeps
#: the names and thresholds in step with those files).
BUILTINS: Final[dict[str, Builtin]] = {
    "http": Builtin("http-success-rate", "http-latency-p99"),
    "istio": Builtin("istio-success-rate", "istio-latency-p99"),
    "nginx": Builtin("nginx-success-rate", "nginx-latency-p99"),
    "linkerd": Builtin("linkerd-success-rate", "linkerd-latency-p99"),
}

#: Flagger providers Stepwise routes, by the router they map to.
ROUTERS: Final[dict[str, str]] = {
    "istio": "istio",
    "nginx": "nginx",
    "linkerd": "smi",
    "smi": "smi",
    "osm": "smi",
    "gatewayapi": "gatewayAPI",
    "kubernetes": "none",
}

_SPEC_KEYS: Final = {
    "targetRef",
    "service",
    "analysis",
    "provider",
    "progressDeadlineSeconds",
    "skipAnalysis",
    "suspend",
    "ingressRef",
    "autoscalerRef",
}
_ANALYSIS_KEYS: Final = {
    "interval",
    "threshold",
    "maxWeight",
    "stepWeight",
    "stepWeights",
    "iterations",
    "match",
    "metrics",
    "webhooks",
}
_SERVICE_KEYS: Final = {
    "name",
    "port",
    "targetPort",
    "portName",
    "appProtocol",
    "hosts",
    "gateways",
    "gatewayRefs",
    "apex",
    "primary",
    "canary",
    "trafficPolicy",
    "match",
    "retries",
    "timeout",
    "corsPolicy",
    "headers",
    "rewrite",
}
#: Service fields copied as they are into the generated Istio VirtualService's route.
_ISTIO_ROUTE_KEYS: Final = ("match", "retries", "timeout", "corsPolicy", "headers", "rewrite")
_WEB_HOOKS: Final = ("pre-rollout", "rollout", "load-test")


_STR: Final = (str,)
_INT: Final = (int,)
_NUM: Final = (int, float)
_OBJ: Final = (dict,)
_LIST: Final = (list,)

#: The type of each Canary field the converter reads (``[]``: each item of a list).
#: A field of another type is reported and left out before anything reads it.
SHAPE: Final[dict[str, tuple[type, ...]]] = {
    "spec": _OBJ,
    "spec.targetRef": _OBJ,
    "spec.targetRef.name": _STR,
    "spec.targetRef.kind": _STR,
    "spec.provider": _STR,
    "spec.progressDeadlineSeconds": _INT,
    "spec.skipAnalysis": (bool,),
    "spec.suspend": (bool,),
    "spec.ingressRef": _OBJ,
    "spec.ingressRef.name": _STR,
    "spec.autoscalerRef": _OBJ,
    "spec.autoscalerRef.name": _STR,
    "spec.autoscalerRef.kind": _STR,
    "spec.service": _OBJ,
    "spec.service.name": _STR,
    "spec.service.port": _INT,
    "spec.service.targetPort": (int, str),
    "spec.service.portName": _STR,
    "spec.service.appProtocol": _STR,
    "spec.service.hosts": _LIST,
    "spec.service.hosts[]": _STR,
    "spec.service.gateways": _LIST,
    "spec.service.gateways[]": _STR,
    "spec.service.gatewayRefs": _LIST,
    "spec.service.gatewayRefs[]": _OBJ,
    "spec.service.apex": _OBJ,
    "spec.service.primary": _OBJ,
    "spec.service.canary": _OBJ,
    "spec.analysis": _OBJ,
    "spec.analysis.interval": _STR,
    "spec.analysis.threshold": _INT,
    "spec.analysis.maxWeight": _INT,
    "spec.analysis.stepWeight": _INT,
    "spec.analysis.stepWeights": _LIST,
    "spec.analysis.stepWeights[]": _INT,
    "spec.analysis.iterations": _INT,
    "spec.analysis.match": _LIST,
    "spec.analysis.match[]": _OBJ,
    "spec.analysis.match[].headers": _OBJ,
    "spec.analysis.metrics": _LIST,
    "spec.analysis.metrics[]": _OBJ,
    "spec.analysis.metrics[].name": _STR,
    "spec.analysis.metrics[].interval": _STR,
    "spec.analysis.metrics[].templateRef": _OBJ,
    "spec.analysis.metrics[].templateRef.name": _STR,
    "spec.analysis.metrics[].templateRef.namespace": _STR,
    "spec.analysis.metrics[].thresholdRange": _OBJ,
    "spec.analysis.metrics[].thresholdRange.min": _NUM,
    "spec.analysis.metrics[].thresholdRange.max": _NUM,
    "spec.analysis.metrics[].threshold": _NUM,
    "spec.analysis.metrics[].templateVariables": _OBJ,
    "spec.analysis.webhooks": _LIST,
    "spec.analysis.webhooks[]": _OBJ,
    "spec.analysis.webhooks[].name": _STR,
    "spec.analysis.webhooks[].type": _STR,
    "spec.analysis.webhooks[].url": _STR,
    "spec.analysis.webhooks[].timeout": _STR,
    "spec.analysis.webhooks[].metadata": _OBJ,
}


def misshapen(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Remove from ``doc`` (in place) each field of :data:`SHAPE` whose value has another
    type (a null counts as absent); (field path, expected type) of each."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, pattern: str, path: str) -> None:
        if isinstance(node, dict):
            for key in list(node):
                child_pattern = f"{pattern}.{key}" if pattern else str(key)
                child_path = f"{path}.{key}" if path else str(key)
                check(node, key, child_pattern, child_path)
        elif isinstance(node, list):
            for index in reversed(range(len(node))):
                check(node, index, f"{pattern}[]", f"{path}[{index}]")

    def check(parent: Any, key: Any, pattern: str, path: str) -> None:
        expected = SHAPE.get(pattern)
        if expected is None and not any(
            k.startswith((f"{pattern}.", f"{pattern}[")) for k in SHAPE
        ):
            return
        value = parent[key]
        if value is None:
            del parent[key]
            return
        if expected is not None and (
            not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)
        ):
            found.append((path, " or ".join(_TYPE_NAMES[t] for t in expected)))
            del parent[key]
            return
        walk(value, pattern, path)

    walk(doc, "", "")
    return sorted(found)


_TYPE_NAMES: Final = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    dict: "an object",
    list: "a list",
    bool: "true or false",
}


@dataclass(frozen=True)
class Inventory:
    """The input objects a Canary may refer to: MetricTemplates and Deployments."""

    metric_templates: dict[tuple[str | None, str], dict[str, Any]] = field(default_factory=dict)
    """(namespace or None, name) -> MetricTemplate."""
    deployments: dict[tuple[str | None, str], dict[str, Any]] = field(default_factory=dict)
    """(namespace or None, name) -> Deployment."""
    referenced: set[str] = field(default_factory=set)
    """Names of the MetricTemplates some Canary's ``templateRef`` names."""

    @classmethod
    def of(cls, docs: Iterable[Any]) -> Inventory:
        """Index the documents of every input file."""
        inv = cls()
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            meta = _object(doc.get("metadata"))
            key = (meta.get("namespace"), str(meta.get("name", "")))
            api = str(doc.get("apiVersion", ""))
            if doc.get("kind") == "MetricTemplate" and api.startswith(f"{FLAGGER_GROUP}/"):
                inv.metric_templates[key] = doc
            elif doc.get("kind") == "Deployment" and api == "apps/v1":
                inv.deployments[key] = doc
            elif doc.get("kind") == "Canary" and api.startswith(f"{FLAGGER_GROUP}/"):
                analysis = _object(_object(doc.get("spec")).get("analysis"))
                metrics = analysis.get("metrics")
                for metric in metrics if isinstance(metrics, list) else []:
                    ref = metric.get("templateRef") if isinstance(metric, dict) else None
                    if isinstance(ref, dict) and ref.get("name"):
                        inv.referenced.add(str(ref["name"]))
        return inv

    @staticmethod
    def _find(
        table: dict[tuple[str | None, str], dict[str, Any]], namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        if (namespace, name) in table:
            return table[(namespace, name)]
        same = [
            v for (ns, n), v in table.items() if n == name and (ns is None or namespace is None)
        ]
        return same[0] if len(same) == 1 else None

    def metric_template(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The MetricTemplate ``name`` (in ``namespace`` when both say one)."""
        return self._find(self.metric_templates, namespace, name)

    def deployment(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The Deployment ``name`` (in ``namespace`` when both say one)."""
        return self._find(self.deployments, namespace, name)


def convert_flagger(
    doc: dict[str, Any], inventory: Inventory, options: Options
) -> tuple[list[dict[str, Any]], list[Dropped]]:
    """One Flagger object as Stepwise objects and what was lost."""
    kind = str(doc.get("kind"))
    name = name_of(doc)
    if doc.get("apiVersion") != FLAGGER_VERSION:
        why = f"only {FLAGGER_VERSION} objects are converted; upgrade it to {FLAGGER_VERSION} first"
        return [], [Dropped(kind, name, "apiVersion", why)]
    if kind == "MetricTemplate":
        # Read by the Canaries that reference it; it becomes part of their templates.
        if name in inventory.referenced:
            return [], []
        why = (
            "no Canary among the input files uses it: its query becomes a metric of the "
            "AnalysisTemplate of each converted Canary that does; pass their files too"
        )
        return [], [Dropped(kind, name, "(object)", why)]
    if kind != "Canary":
        return [], [Dropped(kind, name, "(object)", f"Stepwise has no equivalent of {kind}")]
    doc = copy.deepcopy(doc)
    shape_lost = [
        Dropped(kind, name, where, f"expected {what}; not carried over")
        for where, what in misshapen(doc)
    ]
    canary = _Canary(doc, inventory, options)
    canary.lost.extend(shape_lost)
    made = canary.convert()
    kept, refused = gate(made, kind, name)
    return kept, canary.lost + refused


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one (a field left null or mistyped)."""
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int) -> int:
    """``value`` as a whole number, or ``default`` when it is missing or not one."""
    if isinstance(value, bool):
        return default
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _seconds(value: Any) -> float | None:
    try:
        return parse_duration(value)
    except (ValueError, TypeError):
        return None


def _duration(seconds: float) -> str:
    """A whole number of seconds as ``90s`` (Stepwise's Duration grammar)."""
    return f"{math.ceil(seconds)}s"


def _weights(analysis: dict[str, Any]) -> list[int]:
    """The canary weights Flagger steps through (``stepWeights``, else ``stepWeight``
    up to ``maxWeight``)."""
    listed = analysis.get("stepWeights")
    if isinstance(listed, list) and listed:
        return [w for w in (_int(v, -1) for v in listed) if 0 <= w <= 100]
    step = _int(analysis.get("stepWeight"), 0)
    if step <= 0:
        return []
    top = min(100, _int(analysis.get("maxWeight"), DEFAULT_MAX_WEIGHT))
    out = list(range(step, top, step))
    return [*out, top] if not out or out[-1] != top else out


_FLAGGER_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


class _Canary:
    """The conversion of one Canary (state: what was lost so far)."""

    def __init__(self, doc: dict[str, Any], inventory: Inventory, options: Options) -> None:
        self.doc = doc
        self.inventory = inventory
        self.name = name_of(doc)
        self.namespace: str | None = _object(doc.get("metadata")).get("namespace")
        self.spec = _object(doc.get("spec"))
        self.analysis = _object(self.spec.get("analysis"))
        self.service = _object(self.spec.get("service"))
        self.provider = str(self.spec.get("provider") or options.flagger_provider)
        self.lost: list[Dropped] = []
        target = self.spec.get("targetRef") or {}
        self.target = str(target.get("name", ""))
        self.apex = str(self.service.get("name") or self.target)
        self.primary = f"{self.apex}-primary"
        self.canary_svc = f"{self.apex}-canary"
        self.interval = str(self.analysis.get("interval") or DEFAULT_INTERVAL)
        self.threshold = max(1, _int(self.analysis.get("threshold"), DEFAULT_THRESHOLD))

    def drop(self, where: str, why: str) -> None:
        """Record one thing not carried over."""
        self.lost.append(Dropped("Canary", self.name, where, why))

    def _meta(self, name: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if self.namespace:
            meta["namespace"] = self.namespace
        return meta

    # -- the whole Canary --------------------------------------------------------------

    def convert(self) -> list[dict[str, Any]]:
        """The objects that replace the Canary (empty when it cannot be converted)."""
        target = self.spec.get("targetRef")
        if not isinstance(target, dict) or not target.get("name"):
            self.drop("spec.targetRef", "missing: there is no workload to roll out; not converted")
            return []
        if target.get("kind") != "Deployment":
            self.drop(
                "spec.targetRef.kind",
                f"{target.get('kind')}: Stepwise rolls out Deployments only; not converted",
            )
            return []
        self._report_unknown(self.spec, _SPEC_KEYS, "spec")
        self._report_unknown(self.analysis, _ANALYSIS_KEYS, "spec.analysis")
        self._report_unknown(self.service, _SERVICE_KEYS, "spec.service")
        if self.spec.get("autoscalerRef"):
            ref = self.spec["autoscalerRef"]
            self.drop(
                "spec.autoscalerRef",
                f"Stepwise does not manage the {ref.get('kind', 'autoscaler')} "
                f"{ref.get('name', '')}: point its scaleTargetRef at the Rollout "
                f"(apiVersion {API_VERSION}, kind Rollout, name {self.name})",
            )
        router = self._router()
        blue_green = router == "none"
        analysis_objects, background, pre = self._analysis(router)
        rollout = self._rollout(router, blue_green, background, pre)
        return [rollout, *analysis_objects, *self._services(blue_green), *self._route(router)]

    def _skip(self) -> bool:
        return bool(self.spec.get("skipAnalysis")) or not self.analysis

    def _report_unknown(self, obj: dict[str, Any], known: set[str], path: str) -> None:
        for key in obj:
            if key not in known:
                self.drop(f"{path}.{key}", "Stepwise has no equivalent; not carried over")

    # -- the Rollout -------------------------------------------------------------------

    def _rollout(
        self,
        router: str | None,
        blue_green: bool,
        background: dict[str, Any] | None,
        pre: dict[str, Any] | None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "workloadRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": self.target,
                "scaleDown": "onsuccess",
            }
        }
        deployment = self.inventory.deployment(self.namespace, self.target)
        replicas = (deployment or {}).get("spec", {}).get("replicas")
        if isinstance(replicas, int):
            spec["replicas"] = replicas
        if isinstance(self.spec.get("progressDeadlineSeconds"), int):
            spec["progressDeadlineSeconds"] = self.spec["progressDeadlineSeconds"]
        if self.spec.get("suspend") is True:
            spec["paused"] = True
        if blue_green:
            spec["strategy"] = {"blueGreen": self._blue_green(background, pre)}
        else:
            spec["strategy"] = {"canary": self._canary(router, background, pre)}
        return {
            "apiVersion": API_VERSION,
            "kind": "Rollout",
            "metadata": self._meta(self.name),
            "spec": spec,
        }

    def _blue_green(
        self, background: dict[str, Any] | None, pre: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Flagger's ``kubernetes`` provider: the apex Service is switched to the new
        revision once its checks pass; the canary Service previews it."""
        bg: dict[str, Any] = {"activeService": self.apex, "previewService": self.canary_svc}
        templates = [*(pre or {}).get("templates", []), *(background or {}).get("templates", [])]
        if templates:
            bg["prePromotionAnalysis"] = {"templates": templates}
        elif not self._skip():
            # No checks to run: Flagger still lets ``iterations`` intervals pass first.
            iterations = _int(self.analysis.get("iterations"), 0)
            if iterations:
                seconds = (_seconds(self.interval) or 60.0) * iterations
                bg["autoPromotionSeconds"] = math.ceil(seconds)
        for key in ("stepWeight", "stepWeights", "maxWeight"):
            if self.analysis.get(key):
                self.drop(
                    f"spec.analysis.{key}",
                    "the kubernetes provider switches all traffic at once (blue-green, as "
                    "Flagger does); not carried over",
                )
        if self._hooks("confirm-promotion"):
            bg["autoPromotionEnabled"] = False
            self._hook_gate("confirm-promotion", "the switch waits for `stepwise promote`")
        for kind in ("confirm-rollout", "confirm-traffic-increase"):
            for index, _ in self._hooks(kind):
                self.drop(
                    f"spec.analysis.webhooks[{index}]",
                    f"{kind}: a blue-green Rollout has no gate before its preview; "
                    "not carried over",
                )
        if self.analysis.get("match"):
            self.drop(
                "spec.analysis.match",
                "the kubernetes provider routes no headers (Flagger ignores it too); "
                "not carried over",
            )
        return bg

    def _router(self) -> str | None:
        """The Stepwise router for the Canary's provider ("none": Flagger's kubernetes
        blue-green; None: no router, replica-ratio weights)."""
        base = self.provider.split(":", 1)[0]
        router = ROUTERS.get(base)
        if router is None:
            self.drop(
                "spec.provider",
                f"{self.provider}: Stepwise has no router for it (Gateway API, Istio, NGINX, "
                "SMI); weights follow the ratio of Ready pods instead",
            )
        return router

    def _canary(
        self, router: str | None, background: dict[str, Any] | None, pre: dict[str, Any] | None
    ) -> dict[str, Any]:
        canary: dict[str, Any] = {}
        routing = self._routing(router)
        if routing is not None:
            canary["stableService"] = self.primary
            canary["canaryService"] = self.canary_svc
            canary["trafficRouting"] = routing
        canary["steps"] = self._steps(router, pre)
        if background is not None:
            canary["analysis"] = background
        return canary

    def _routing(self, router: str | None) -> dict[str, Any] | None:
        if router == "gatewayAPI":
            return {"gatewayAPI": {"httpRoute": self.name}}
        if router == "istio":
            return {"istio": {"virtualService": {"name": self.name}}}
        if router == "smi":
            return {"smi": {"rootService": self.apex}}
        if router == "nginx":
            ingress = self.spec.get("ingressRef") or {}
            if not ingress.get("name"):
                self.drop(
                    "spec.ingressRef",
                    "missing: the nginx provider needs the Ingress; weights follow the ratio "
                    "of Ready pods instead",
                )
                return None
            self.drop(
                "spec.ingressRef",
                f"Stepwise's nginx router needs the Ingress {ingress['name']} to send to "
                f"Service {self.primary} (Flagger's sends to {self.apex}): change its backend",
            )
            return {"nginx": {"stableIngress": ingress["name"]}}
        return None

    def _steps(self, router: str | None, pre: dict[str, Any] | None) -> list[dict[str, Any]]:
        if self._skip():
            return []
        steps: list[dict[str, Any]] = []
        if self._hooks("confirm-rollout"):
            steps.append({"pause": {}})
            self._hook_gate("confirm-rollout", "the first step waits for `stepwise promote`")
        if pre is not None:
            steps.append({"analysis": pre})
        for index, _ in self._hooks("confirm-traffic-increase"):
            self.drop(
                f"spec.analysis.webhooks[{index}]",
                "confirm-traffic-increase: Stepwise has no gate before each weight; add "
                "`pause: {}` steps where a person should confirm",
            )
        weights = _weights(self.analysis)
        iterations = _int(self.analysis.get("iterations"), 0)
        pause = {"pause": {"duration": self.interval}}
        if weights:
            for weight in weights:
                steps += [{"setWeight": weight}, pause]
            if iterations:
                self.drop(
                    "spec.analysis.iterations",
                    "ignored next to stepWeight (as Flagger does)",
                )
        elif iterations:
            steps += self._header_steps(router)
            total = (_seconds(self.interval) or 60.0) * iterations
            steps.append({"pause": {"duration": _duration(total)}})
        if self._hooks("confirm-promotion"):
            steps.append({"pause": {}})
            self._hook_gate("confirm-promotion", "the last step waits for `stepwise promote`")
        return steps

    def _header_steps(self, router: str | None) -> list[dict[str, Any]]:
        """Flagger's A/B ``match`` list (any entry matches) as one header route each."""
        matches = self.analysis.get("match") or []
        if not matches:
            return []
        if router not in ("gatewayAPI", "istio"):
            self.drop(
                "spec.analysis.match",
                f"Stepwise routes headers with Gateway API and Istio only, not {self.provider}; "
                "not carried over",
            )
            return []
        steps: list[dict[str, Any]] = []
        for index, entry in enumerate(matches):
            where = f"spec.analysis.match[{index}]"
            headers = entry.get("headers") if isinstance(entry, dict) else None
            other = sorted(set(entry) - {"headers"}) if isinstance(entry, dict) else []
            if other:
                self.drop(
                    where, f"{', '.join(other)}: Stepwise matches headers only; not carried over"
                )
            rules = []
            for header, how in (headers or {}).items():
                value = _string_match(how)
                if value is None:
                    self.drop(
                        f"{where}.headers.{header}", f"{how}: no equivalent match; not carried over"
                    )
                    continue
                rules.append({"headerName": header, "headerValue": value})
            if rules:
                steps.append({"setHeaderRoute": {"name": dns_label(f"ab-{index}"), "match": rules}})
        return steps

    # -- analysis ----------------------------------------------------------------------

    def _hooks(self, kind: str) -> list[tuple[int, dict[str, Any]]]:
        hooks = self.analysis.get("webhooks") or []
        return [
            (i, h)
            for i, h in enumerate(hooks)
            if isinstance(h, dict) and str(h.get("type") or "rollout") == kind
        ]

    def _hook_gate(self, kind: str, what: str) -> None:
        for index, hook in self._hooks(kind):
            self.drop(
                f"spec.analysis.webhooks[{index}]",
                f"{kind} {hook.get('name', '')}: {what}; "
                f"the URL {hook.get('url', '')} is not called",
            )

    def _checks(self) -> int:
        """How many successful checks Flagger needs before it promotes."""
        return max(1, len(_weights(self.analysis)) or _int(self.analysis.get("iterations"), 1))

    def _analysis(
        self, router: str | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None]:
        """The AnalysisTemplates, the background analysis and the pre-rollout analysis."""
        for kind in ("post-rollout", "rollback", "event"):
            for index, hook in self._hooks(kind):
                self.drop(
                    f"spec.analysis.webhooks[{index}]",
                    f"{kind} {hook.get('name', '')}: " + _OTHER_HOOKS[kind],
                )
        if self._skip():
            return [], None, None
        templates: list[dict[str, Any]] = []
        metrics, refs = self._metrics(router)
        metrics += self._web_metrics(("rollout", "load-test"))
        background: dict[str, Any] | None = None
        if metrics:
            templates.append(self._template(self.name, metrics))
            refs.insert(0, {"templateName": self.name})
        if refs:
            background = {"templates": refs}
        pre: dict[str, Any] | None = None
        pre_metrics = self._web_metrics(("pre-rollout",), count=1)
        if pre_metrics:
            pre_name = dns_label(f"{self.name}-pre-rollout")
            templates.append(self._template(pre_name, pre_metrics))
            pre = {"templates": [{"templateName": pre_name}]}
        return templates, background, pre

    def _template(self, name: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "AnalysisTemplate",
            "metadata": self._meta(name),
            "spec": {"metrics": metrics},
        }

    def _judging(self, count: int | None = None) -> dict[str, Any]:
        """Flagger's check semantics: a check each interval; ``threshold`` failed checks
        (no data and errors included) roll back."""
        limit = self.threshold - 1
        return {
            "interval": self.interval,
            "count": count or self._checks(),
            "failureLimit": limit,
            "consecutiveErrorLimit": limit,
            "onNoData": "Fail",
            "onProviderError": "Fail",
        }

    def _metrics(self, router: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The Canary's metrics: (metrics of its own template, built-in template refs)."""
        out: list[dict[str, Any]] = []
        refs: list[dict[str, Any]] = []
        for index, metric in enumerate(self.analysis.get("metrics") or []):
            where = f"spec.analysis.metrics[{index}]"
            if not isinstance(metric, dict):
                continue
            name = str(metric.get("name", ""))
            if metric.get("templateRef"):
                converted = self._custom_metric(metric, where)
                if converted is not None:
                    out.append(converted)
            elif name in ("request-success-rate", "request-duration"):
                ref = self._builtin(metric, where, router)
                if ref is not None and ref not in refs:
                    refs.append(ref)
            elif metric.get("query"):
                self.drop(
                    where, f"{name}: an inline query (Flagger v1alpha3); use a MetricTemplate"
                )
            else:
                self.drop(
                    where, f"{name}: not a built-in metric and no templateRef; not carried over"
                )
        return out, refs

    def _builtin(
        self, metric: dict[str, Any], where: str, router: str | None
    ) -> dict[str, Any] | None:
        base = self.provider.split(":", 1)[0]
        convention = {"istio": "istio", "nginx": "nginx", "linkerd": "linkerd", "smi": "linkerd"}
        builtin = BUILTINS[convention.get(base, "http")]
        success = metric["name"] == "request-success-rate"
        template = builtin.success_rate if success else builtin.latency
        rng = metric.get("thresholdRange") or {}
        if "threshold" in metric:
            rng = {"min": metric["threshold"]} if success else {"max": metric["threshold"]}
        ours = {"min": builtin.min_success_percent} if success else {"max": builtin.max_latency_ms}
        if {k: float(v) for k, v in rng.items() if v is not None} != ours:
            unit = "%" if success else " ms"
            said = ", ".join(f"{k} {v}{unit}" for k, v in ours.items())
            self.drop(
                f"{where}.thresholdRange",
                f"{rng}: Stepwise's built-in {template} judges with {said}; copy it into an "
                "AnalysisTemplate to change it",
            )
        if metric.get("interval") not in (None, "30s"):
            self.drop(
                f"{where}.interval",
                f"{metric['interval']}: Stepwise's built-in {template} queries a 30s window",
            )
        return {"templateName": template, "clusterScope": True}

    def _custom_metric(self, metric: dict[str, Any], where: str) -> dict[str, Any] | None:
        ref = metric["templateRef"]
        ref_name = str(ref.get("name", ""))
        found = self.inventory.metric_template(ref.get("namespace") or self.namespace, ref_name)
        if found is None:
            self.drop(
                f"{where}.templateRef",
                f"MetricTemplate {ref_name} is not among the input files: pass its file too",
            )
            return None
        spec = _object(found.get("spec"))
        provider = _object(spec.get("provider"))
        kind = str(provider.get("type") or "prometheus")
        if kind != "prometheus":
            self.drop(
                f"{where}.templateRef",
                f"MetricTemplate {ref_name} asks {kind}; Stepwise measures with Prometheus, "
                "web, job or its judge; not carried over",
            )
            return None
        query = self._render(str(spec.get("query", "")), metric, where)
        if query is None:
            return None
        rng = {k: v for k, v in (metric.get("thresholdRange") or {}).items() if v is not None}
        if not rng and metric.get("threshold") is not None:
            rng = {"max": metric["threshold"]}
        if not rng:
            self.drop(where, "no thresholdRange: Flagger never fails it, Stepwise needs a range")
            return None
        prom: dict[str, Any] = {"query": query}
        if provider.get("address"):
            prom["address"] = provider["address"]
        if provider.get("insecureSkipVerify") is True:
            prom["insecureSkipVerify"] = True
        if provider.get("secretRef"):
            secret = _object(provider["secretRef"]).get("name", "")
            self.drop(
                f"{where}.templateRef",
                f"MetricTemplate {ref_name} authenticates with Secret {secret}: set "
                f"provider.prometheus.auth in AnalysisTemplate {self.name} (basic or bearerToken)",
            )
        return {
            "name": dns_label(str(metric.get("name", ref_name))),
            **self._judging(),
            "thresholdRange": {k: float(v) for k, v in rng.items()},
            "provider": {"prometheus": prom},
        }

    def _render(self, query: str, metric: dict[str, Any], where: str) -> str | None:
        """Flagger's query variables filled in with this Canary's values (Stepwise's own
        variables would name the Rollout's pods and Services instead)."""
        values = {
            "namespace": "{{namespace}}",
            "target": self.target,
            "service": self.apex,
            "interval": str(metric.get("interval") or DEFAULT_INTERVAL),
        }
        ingress = self.spec.get("ingressRef") or {}
        if ingress.get("name"):
            values["ingress"] = str(ingress["name"])
        for key, value in (metric.get("templateVariables") or {}).items():
            values[f"variables.{key}"] = str(value)
        missing = sorted({m for m in _FLAGGER_VAR.findall(query) if m not in values})
        if missing:
            self.drop(
                where, f"query variables {', '.join(missing)} have no value here; not carried over"
            )
            return None
        return _FLAGGER_VAR.sub(lambda m: values[m.group(1)], query)

    def _web_metrics(
        self, kinds: tuple[str, ...], count: int | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for kind in kinds:
            for index, hook in self._hooks(kind):
                where = f"spec.analysis.webhooks[{index}]"
                url = str(hook.get("url", ""))
                if not url.startswith(("http://", "https://")):
                    self.drop(where, f"url {url!r} is not http(s); not carried over")
                    continue
                timeout = _seconds(hook.get("timeout") or 10) or 10.0
                body = {
                    "name": "{{rollout}}",
                    "namespace": "{{namespace}}",
                    "phase": "Progressing",
                    "metadata": {str(k): str(v) for k, v in _object(hook.get("metadata")).items()},
                }
                out.append(
                    {
                        "name": dns_label(f"webhook-{hook.get('name', index)}"),
                        **self._judging(count),
                        "successCondition": "true",
                        "provider": {
                            "web": {
                                "url": url,
                                "method": "POST",
                                "jsonBody": body,
                                "timeoutSeconds": max(1, min(300, math.ceil(timeout))),
                            }
                        },
                    }
                )
                self.drop(
                    where,
                    f"{kind} {hook.get('name', '')}: sent as a web metric (POST of name, "
                    "namespace, phase, metadata); Stepwise needs a JSON answer, so a 2xx "
                    "with another body (Flagger's load tester answers text) is an error",
                )
        return out

    # -- generated objects -------------------------------------------------------------

    def _services(self, blue_green: bool) -> list[dict[str, Any]]:
        """The Services Flagger generates and Stepwise expects to exist."""
        port = self.service.get("port")
        if not isinstance(port, int):
            self.drop(
                "spec.service.port",
                f"missing: create Services {self.apex}, {self.primary} and {self.canary_svc} "
                "for the Deployment's pods yourself",
            )
            return []
        deployment = self.inventory.deployment(self.namespace, self.target)
        selector = ((deployment or {}).get("spec", {}).get("selector") or {}).get("matchLabels")
        roles = [("apex", self.apex), ("canary", self.canary_svc)]
        if not blue_green:
            roles.insert(1, ("primary", self.primary))
        if not isinstance(selector, dict) or not selector:
            names = ", ".join(n for _, n in roles)
            self.drop(
                "spec.service",
                f"the Deployment {self.target} is not among the input files: create Services "
                f"{names} (port {port}) selecting its pods",
            )
            return []
        port_spec: dict[str, Any] = {
            "name": str(self.service.get("portName") or "http"),
            "port": port,
            "targetPort": self.service.get("targetPort") or port,
            "protocol": "TCP",
        }
        if self.service.get("appProtocol"):
            port_spec["appProtocol"] = self.service["appProtocol"]
        out = []
        for role, name in roles:
            meta = self._meta(name)
            extra = _object(self.service.get(role))
            for key in ("labels", "annotations"):
                if isinstance(extra.get(key), dict):
                    meta[key] = {str(k): str(v) for k, v in extra[key].items()}
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": meta,
                    "spec": {"selector": dict(selector), "ports": [dict(port_spec)]},
                }
            )
        return out

    def _route(self, router: str | None) -> list[dict[str, Any]]:
        """The HTTPRoute or VirtualService Flagger generates; Stepwise manages an existing one."""
        port = self.service.get("port")
        if router == "gatewayAPI":
            return self._http_route(port)
        if router == "istio":
            return self._virtual_service(port)
        for key in ("hosts", "gateways", "gatewayRefs", "trafficPolicy", *_ISTIO_ROUTE_KEYS):
            if self.service.get(key):
                self.drop(
                    f"spec.service.{key}",
                    f"the {self.provider} provider has no route for it here; not carried over",
                )
        return []

    def _http_route(self, port: Any) -> list[dict[str, Any]]:
        refs = self.service.get("gatewayRefs") or []
        if not refs or not isinstance(port, int):
            self.drop(
                "spec.service.gatewayRefs",
                f"missing (or no service.port): create HTTPRoute {self.name} with backendRefs "
                f"{self.primary} and {self.canary_svc} yourself",
            )
            return []
        version = self.provider.split(":", 1)[1] if ":" in self.provider else "v1"
        spec: dict[str, Any] = {"parentRefs": [dict(r) for r in refs]}
        if self.service.get("hosts"):
            spec["hostnames"] = list(self.service["hosts"])
        spec["rules"] = [
            {
                "backendRefs": [
                    {"name": self.primary, "port": port, "weight": 100},
                    {"name": self.canary_svc, "port": port, "weight": 0},
                ]
            }
        ]
        for key in ("gateways", *_ISTIO_ROUTE_KEYS):
            if self.service.get(key):
                self.drop(
                    f"spec.service.{key}",
                    f"not carried into HTTPRoute {self.name}; add it yourself",
                )
        return [
            {
                "apiVersion": f"gateway.networking.k8s.io/{version}",
                "kind": "HTTPRoute",
                "metadata": self._meta(self.name),
                "spec": spec,
            }
        ]

    def _virtual_service(self, port: Any) -> list[dict[str, Any]]:
        route: dict[str, Any] = {}
        for key in _ISTIO_ROUTE_KEYS:
            if self.service.get(key):
                route[key] = self.service[key]
        destination: dict[str, Any] = {}
        if isinstance(port, int):
            destination = {"port": {"number": port}}
        route["route"] = [
            {"destination": {"host": self.primary, **destination}, "weight": 100},
            {"destination": {"host": self.canary_svc, **destination}, "weight": 0},
        ]
        spec: dict[str, Any] = {"hosts": [self.apex, *(self.service.get("hosts") or [])]}
        if self.service.get("gateways"):
            spec["gateways"] = list(self.service["gateways"])
        spec["http"] = [route]
        if self.service.get("trafficPolicy"):
            self.drop(
                "spec.service.trafficPolicy",
                "Flagger writes it into DestinationRules; Stepwise creates none: add them yourself",
            )
        return [
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": self._meta(self.name),
                "spec": spec,
            }
        ]


_OTHER_HOOKS: Final = {
    "post-rollout": "Stepwise calls nothing after a promotion; not carried over",
    "rollback": "Stepwise has no rollback hook (`stepwise abort` rolls back); not carried over",
    "event": "Stepwise emits Kubernetes Events instead (route them with an event exporter); "
    "not carried over",
}


def _string_match(how: Any) -> dict[str, str] | None:
    """A Flagger header match (exact, prefix, suffix, regex) as Stepwise's."""
    if not isinstance(how, dict) or len(how) != 1:
        return None
    ((kind, value),) = how.items()
    if kind in ("exact", "prefix", "regex"):
        return {kind: str(value)}
    if kind == "suffix":
        return {"regex": f".*{re.escape(str(value))}"}
    return None
