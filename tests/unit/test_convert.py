"""``stepwise convert``: the Argo Rollouts and Flagger mappings, table by table, and the
command's output and exit codes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.validation import is_stepwise, validate_document
from controller.cli import main
from controller.convert import Options, convert
from controller.convert.flagger import BUILTINS

TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "templates"


def workload_spec(app: str, replicas: int, container: str) -> dict[str, Any]:
    """The replicas, selector and pod template of a workload of ``app`` with one
    container (image ``<app>:1``)."""
    return {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": app}},
        "template": {
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": container, "image": f"{app}:1"}]},
        },
    }


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "podinfo", "namespace": "test"},
    "spec": workload_spec("podinfo", 3, "app"),
}

METRIC_TEMPLATE: dict[str, Any] = {
    "apiVersion": "flagger.app/v1beta1",
    "kind": "MetricTemplate",
    "metadata": {"name": "error-rate", "namespace": "test"},
    "spec": {
        "provider": {"type": "prometheus", "address": "http://prom:9090"},
        "query": 'sum(rate(x{ns="{{ namespace }}",pod=~"{{ target }}-.*",d="{{ variables.d }}"}'
        "[{{ interval }}]))",
    },
}


def canary(**spec: Any) -> dict[str, Any]:
    """A Flagger Canary of the Deployment podinfo (port 9898), with ``spec`` merged in."""
    base: dict[str, Any] = {
        "provider": "istio",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "30s", "threshold": 3, "maxWeight": 30, "stepWeight": 10},
    }
    for key, value in spec.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": base,
    }


def run(*docs: dict[str, Any], provider: str = "istio") -> tuple[list[dict[str, Any]], list[str]]:
    """Convert ``docs`` as one file: (output documents, dropped lines without the file)."""
    result = convert({"in.yaml": list(copy.deepcopy(docs))}, Options(flagger_provider=provider))
    lines = [str(d).removeprefix("in.yaml: ") for d in result.dropped]
    return result.outputs["in.yaml"], lines


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one output document of ``kind`` (and ``name``)."""
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, [d["kind"] for d in docs]
    return found[0]


def strategy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The converted Rollout's canary strategy."""
    canary_strategy: dict[str, Any] = find(docs, "Rollout")["spec"]["strategy"]["canary"]
    return canary_strategy


# -- Flagger: table of the Rollout's shape ----------------------------------------------

Check = Callable[[list[dict[str, Any]], list[str]], None]


def _workload(docs: list[dict[str, Any]], lines: list[str]) -> None:
    spec = find(docs, "Rollout")["spec"]
    assert spec["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "podinfo",
        "scaleDown": "onsuccess",
    }
    assert spec["replicas"] == 3
    assert "template" not in spec
    assert "selector" not in spec


def _step_weight(docs: list[dict[str, Any]], lines: list[str]) -> None:
    pause = {"pause": {"duration": "30s"}}
    assert strategy(docs)["steps"] == [
        {"setWeight": 10},
        pause,
        {"setWeight": 20},
        pause,
        {"setWeight": 30},
        pause,
    ]


def _step_weights(docs: list[dict[str, Any]], lines: list[str]) -> None:
    weights = [s["setWeight"] for s in strategy(docs)["steps"] if "setWeight" in s]
    assert weights == [5, 25, 60]


def _uneven_max(docs: list[dict[str, Any]], lines: list[str]) -> None:
    weights = [s["setWeight"] for s in strategy(docs)["steps"] if "setWeight" in s]
    assert weights == [20, 40, 50]


def _threshold(docs: list[dict[str, Any]], lines: list[str]) -> None:
    metric = find(docs, "AnalysisTemplate", "podinfo")["spec"]["metrics"][0]
    assert metric["interval"] == "30s"
    assert metric["count"] == 3
    assert metric["failureLimit"] == 2
    assert metric["consecutiveErrorLimit"] == 2
    assert metric["onNoData"] == "Fail"
    assert metric["onProviderError"] == "Fail"
    assert strategy(docs)["analysis"]["templates"][0] == {"templateName": "podinfo"}


def _ab_headers(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["steps"] == [
        {
            "setHeaderRoute": {
                "name": "ab-0",
                "match": [{"headerName": "x-canary", "headerValue": {"exact": "insider"}}],
            }
        },
        {
            "setHeaderRoute": {
                "name": "ab-1",
                "match": [{"headerName": "user-agent", "headerValue": {"regex": ".*Firefox.*"}}],
            }
        },
        {"pause": {"duration": "300s"}},
    ]


def _blue_green(docs: list[dict[str, Any]], lines: list[str]) -> None:
    bg = find(docs, "Rollout")["spec"]["strategy"]["blueGreen"]
    assert bg == {
        "activeService": "podinfo",
        "previewService": "podinfo-canary",
        "prePromotionAnalysis": {
            "templates": [{"templateName": "http-success-rate", "clusterScope": True}]
        },
    }
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Service"] == [
        "podinfo",
        "podinfo-canary",
    ]


def _builtins(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["analysis"] == {
        "templates": [
            {"templateName": "istio-success-rate", "clusterScope": True},
            {"templateName": "istio-latency-p99", "clusterScope": True},
        ]
    }


def _template_ref(docs: list[dict[str, Any]], lines: list[str]) -> None:
    metric = find(docs, "AnalysisTemplate", "podinfo")["spec"]["metrics"][0]
    assert metric["name"] == "errors"
    assert metric["thresholdRange"] == {"max": 1.0}
    assert metric["provider"] == {
        "prometheus": {
            "query": 'sum(rate(x{ns="{{namespace}}",pod=~"podinfo-.*",d="in"}[2m]))',
            "address": "http://prom:9090",
        }
    }
    assert not any(d["kind"] == "MetricTemplate" for d in docs)


def _webhooks(docs: list[dict[str, Any]], lines: list[str]) -> None:
    steps = strategy(docs)["steps"]
    assert steps[0] == {"pause": {}}
    assert steps[1] == {"analysis": {"templates": [{"templateName": "podinfo-pre-rollout"}]}}
    assert steps[-1] == {"pause": {}}
    pre = find(docs, "AnalysisTemplate", "podinfo-pre-rollout")["spec"]["metrics"][0]
    assert pre["count"] == 1
    assert pre["provider"]["web"] == {
        "url": "http://tester/",
        "method": "POST",
        "jsonBody": {
            "name": "{{rollout}}",
            "namespace": "{{namespace}}",
            "phase": "Progressing",
            "metadata": {"cmd": "curl podinfo-canary"},
        },
        "timeoutSeconds": 15,
    }
    load = find(docs, "AnalysisTemplate", "podinfo")["spec"]["metrics"][0]
    assert load["name"] == "webhook-load"
    assert load["provider"]["web"]["timeoutSeconds"] == 5


def _gateway_api(docs: list[dict[str, Any]], lines: list[str]) -> None:
    canary_strategy = strategy(docs)
    assert canary_strategy["trafficRouting"] == {"gatewayAPI": {"httpRoute": "podinfo"}}
    assert canary_strategy["stableService"] == "podinfo-primary"
    assert canary_strategy["canaryService"] == "podinfo-canary"
    route = find(docs, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"] == {
        "parentRefs": [{"name": "gw", "namespace": "edge"}],
        "hostnames": ["www.example.com"],
        "rules": [
            {
                "backendRefs": [
                    {"name": "podinfo-primary", "port": 9898, "weight": 100},
                    {"name": "podinfo-canary", "port": 9898, "weight": 0},
                ]
            }
        ],
    }


def _istio(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["trafficRouting"] == {"istio": {"virtualService": {"name": "podinfo"}}}
    vs = find(docs, "VirtualService")["spec"]
    assert vs["hosts"] == ["podinfo", "app.example.com"]
    assert vs["gateways"] == ["public"]
    assert vs["http"][0]["retries"] == {"attempts": 3}
    assert [r["destination"]["host"] for r in vs["http"][0]["route"]] == [
        "podinfo-primary",
        "podinfo-canary",
    ]


def _nginx(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["trafficRouting"] == {"nginx": {"stableIngress": "web"}}
    assert find(docs, "Ingress")["metadata"]["name"] == "web"


def _smi(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["trafficRouting"] == {"smi": {"rootService": "podinfo"}}
    assert find(docs, "Rollout")["spec"]["strategy"]["canary"]["stableService"] == "podinfo-primary"


def _replica_ratio(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert "trafficRouting" not in strategy(docs)
    assert "stableService" not in strategy(docs)


def _deadline_suspend(docs: list[dict[str, Any]], lines: list[str]) -> None:
    spec = find(docs, "Rollout")["spec"]
    assert spec["progressDeadlineSeconds"] == 120
    assert spec["paused"] is True


def _skip(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["steps"] == []
    assert "analysis" not in strategy(docs)
    assert not any(d["kind"] == "AnalysisTemplate" for d in docs)


def _services(docs: list[dict[str, Any]], lines: list[str]) -> None:
    services = [d for d in docs if d["kind"] == "Service"]
    assert [s["metadata"]["name"] for s in services] == [
        "podinfo",
        "podinfo-primary",
        "podinfo-canary",
    ]
    for service in services:
        assert service["spec"]["selector"] == {"app": "podinfo"}
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 9898, "targetPort": 8080, "protocol": "TCP"}
        ]
    assert services[0]["metadata"]["annotations"] == {"a": "b"}


def _pause_only(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["steps"] == [{"pause": {"duration": "60s"}}]


def _blue_green_timed(docs: list[dict[str, Any]], lines: list[str]) -> None:
    bg = find(docs, "Rollout")["spec"]["strategy"]["blueGreen"]
    assert bg == {
        "activeService": "podinfo",
        "previewService": "podinfo-canary",
        "autoPromotionSeconds": 120,
    }


def _blue_green_plain(docs: list[dict[str, Any]], lines: list[str]) -> None:
    bg = find(docs, "Rollout")["spec"]["strategy"]["blueGreen"]
    assert bg == {"activeService": "podinfo", "previewService": "podinfo-canary"}


def _iterations_pause(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["steps"] == [{"pause": {"duration": "90s"}}]
    metric = find(docs, "AnalysisTemplate", "podinfo")["spec"]["metrics"][0]
    assert metric["count"] == 3
    assert metric["provider"]["prometheus"]["query"].endswith("[1m]))")


def _suffix(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert strategy(docs)["steps"][0] == {
        "setHeaderRoute": {
            "name": "ab-0",
            "match": [{"headerName": "host", "headerValue": {"regex": ".*\\.example\\.com"}}],
        }
    }


def _route_hosts_h(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert find(docs, "HTTPRoute")["spec"]["hostnames"] == ["h"]


def _no_services(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert not any(d["kind"] == "Service" for d in docs)


def _nothing(docs: list[dict[str, Any]], lines: list[str]) -> None:
    assert not any(d["kind"] == "Rollout" for d in docs)


WH = "Canary/podinfo: spec.analysis.webhooks"
WEB = (
    "sent as a web metric (POST of name, namespace, phase, metadata); Stepwise needs a JSON "
    "answer, so a 2xx with another body (Flagger's load tester answers text) is an error"
)

FLAGGER: list[tuple[str, list[dict[str, Any]], str, Check, list[str]]]


def _metric(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra}


def _errors(**fields: Any) -> dict[str, Any]:
    """The metric ``errors`` of MetricTemplate error-rate, below 1 with ``d`` = "in", and
    ``fields`` merged in (None removes one)."""
    metric = {
        "name": "errors",
        "templateRef": {"name": "error-rate"},
        "thresholdRange": {"max": 1},
        "templateVariables": {"d": "in"},
        **fields,
    }
    return {key: value for key, value in metric.items() if value is not None}


def iterations(count: int, **analysis: Any) -> dict[str, Any]:
    """Canary analysis fields that run ``count`` iterations instead of weight steps."""
    return {"stepWeight": None, "maxWeight": None, "iterations": count, **analysis}


def _judged(*metrics: dict[str, Any], **analysis: Any) -> dict[str, Any]:
    """A Canary judged by ``metrics`` (with ``analysis`` fields merged in)."""
    return canary(analysis={"metrics": list(metrics), **analysis})


FLAGGER = [
    ("targetRef-is-workloadRef", [canary(), DEPLOYMENT], "istio", _workload, []),
    ("stepWeight-maxWeight", [canary(), DEPLOYMENT], "istio", _step_weight, []),
    (
        "stepWeights",
        [canary(analysis={"stepWeights": [5, 25, 60], "stepWeight": None}), DEPLOYMENT],
        "istio",
        _step_weights,
        [],
    ),
    (
        "maxWeight-not-a-multiple",
        [canary(analysis={"stepWeight": 20, "maxWeight": 50}), DEPLOYMENT],
        "istio",
        _uneven_max,
        [],
    ),
    (
        "threshold-interval-as-limits",
        [
            _judged(_errors(interval="2m")),
            METRIC_TEMPLATE,
            DEPLOYMENT,
        ],
        "istio",
        _threshold,
        [],
    ),
    (
        "templateRef-query-and-range",
        [
            _judged(
                _errors(templateRef={"name": "error-rate", "namespace": "test"}, interval="2m")
            ),
            METRIC_TEMPLATE,
            DEPLOYMENT,
        ],
        "istio",
        _template_ref,
        [],
    ),
    (
        "templateRef-not-in-input",
        [
            _judged(_metric("x", templateRef={"name": "gone"}, interval="1m")),
            DEPLOYMENT,
        ],
        "istio",
        _step_weight,
        [
            "Canary/podinfo: spec.analysis.metrics[0].templateRef: MetricTemplate gone is not "
            "among the input files: pass its file too"
        ],
    ),
    (
        "templateRef-not-prometheus",
        [
            _judged(_metric("dd", templateRef={"name": "dd"}, thresholdRange={"max": 5})),
            {
                "apiVersion": "flagger.app/v1beta1",
                "kind": "MetricTemplate",
                "metadata": {"name": "dd"},
                "spec": {"provider": {"type": "datadog"}, "query": "q"},
            },
            DEPLOYMENT,
        ],
        "istio",
        _step_weight,
        [
            "Canary/podinfo: spec.analysis.metrics[0].templateRef: MetricTemplate dd asks "
            "datadog; Stepwise measures with Prometheus, web, job or its judge; not carried over"
        ],
    ),
    (
        "builtin-metrics",
        [
            _judged(
                _metric("request-success-rate", thresholdRange={"min": 99}, interval="30s"),
                _metric("request-duration", thresholdRange={"max": 500}, interval="30s"),
            ),
            DEPLOYMENT,
        ],
        "istio",
        _builtins,
        [],
    ),
    (
        "builtin-other-threshold-and-window",
        [
            _judged(_metric("request-success-rate", thresholdRange={"min": 95}, interval="1m")),
            DEPLOYMENT,
        ],
        "istio",
        _step_weight,
        [
            "Canary/podinfo: spec.analysis.metrics[0].thresholdRange: {'min': 95}: Stepwise's "
            "built-in istio-success-rate judges with min 99.0%; copy it into an "
            "AnalysisTemplate to change it",
            "Canary/podinfo: spec.analysis.metrics[0].interval: 1m: Stepwise's built-in "
            "istio-success-rate queries a 30s window",
        ],
    ),
    (
        "ab-testing-header-match",
        [
            canary(
                analysis=iterations(
                    10,
                    match=[
                        {"headers": {"x-canary": {"exact": "insider"}}},
                        {"headers": {"user-agent": {"regex": ".*Firefox.*"}}},
                    ],
                )
            ),
            DEPLOYMENT,
        ],
        "istio",
        _ab_headers,
        [],
    ),
    (
        "ab-testing-without-header-router",
        [
            canary(
                provider="nginx",
                ingressRef={"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "w"},
                analysis=iterations(2, match=[{"headers": {"x-canary": {"exact": "1"}}}]),
            ),
            DEPLOYMENT,
        ],
        "istio",
        _pause_only,
        [
            "Canary/podinfo: spec.ingressRef: Stepwise's nginx router needs the Ingress w to "
            "send to Service podinfo-primary (Flagger's sends to podinfo): change its backend",
            "Canary/podinfo: spec.analysis.match: Stepwise routes headers with Gateway API and "
            "Istio only, not nginx; not carried over",
        ],
    ),
    (
        "kubernetes-provider-is-blue-green",
        [
            canary(
                provider="kubernetes",
                analysis=iterations(
                    4,
                    metrics=[
                        _metric("request-success-rate", thresholdRange={"min": 99}, interval="30s")
                    ],
                ),
            ),
            DEPLOYMENT,
        ],
        "istio",
        _blue_green,
        [],
    ),
    (
        "webhooks",
        [
            canary(
                analysis={
                    "webhooks": [
                        {"name": "gate", "type": "confirm-rollout", "url": "http://g/"},
                        {
                            "name": "smoke",
                            "type": "pre-rollout",
                            "url": "http://tester/",
                            "timeout": "15s",
                            "metadata": {"cmd": "curl podinfo-canary"},
                        },
                        {"name": "load", "url": "http://tester/", "timeout": "5s"},
                        {"name": "ok", "type": "confirm-promotion", "url": "http://g/p"},
                        {"name": "after", "type": "post-rollout", "url": "http://a/"},
                        {"name": "back", "type": "rollback", "url": "http://b/"},
                        {"name": "ev", "type": "event", "url": "http://e/"},
                    ]
                }
            ),
            DEPLOYMENT,
        ],
        "istio",
        _webhooks,
        [
            f"{WH}[4]: post-rollout after: Stepwise calls nothing after a promotion; "
            "not carried over",
            f"{WH}[5]: rollback back: Stepwise has no rollback hook (`stepwise abort` rolls "
            "back); not carried over",
            f"{WH}[6]: event ev: Stepwise emits Kubernetes Events instead (route them with an "
            "event exporter); not carried over",
            f"{WH}[2]: rollout load: {WEB}",
            f"{WH}[1]: pre-rollout smoke: {WEB}",
            f"{WH}[0]: confirm-rollout gate: the first step waits for `stepwise promote`; the "
            "URL http://g/ is not called",
            f"{WH}[3]: confirm-promotion ok: the last step waits for `stepwise promote`; the "
            "URL http://g/p is not called",
        ],
    ),
    (
        "gatewayapi-emits-httproute",
        [
            canary(
                provider="gatewayapi:v1",
                service={
                    "hosts": ["www.example.com"],
                    "gatewayRefs": [{"name": "gw", "namespace": "edge"}],
                },
            ),
            DEPLOYMENT,
        ],
        "istio",
        _gateway_api,
        [],
    ),
    (
        "gatewayapi-without-gatewayRefs",
        [canary(provider="gatewayapi:v1"), DEPLOYMENT],
        "istio",
        _step_weight,
        [
            "Canary/podinfo: spec.service.gatewayRefs: missing (or no service.port): create "
            "HTTPRoute podinfo with backendRefs podinfo-primary and podinfo-canary yourself"
        ],
    ),
    (
        "default-provider-from-option",
        [
            canary(
                provider=None,
                service={"hosts": ["h"], "gatewayRefs": [{"name": "gw", "namespace": "edge"}]},
            ),
            DEPLOYMENT,
        ],
        "gatewayapi:v1",
        _route_hosts_h,
        [],
    ),
    (
        "istio-emits-virtualservice",
        [
            canary(
                service={
                    "hosts": ["app.example.com"],
                    "gateways": ["public"],
                    "retries": {"attempts": 3},
                    "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                }
            ),
            DEPLOYMENT,
        ],
        "istio",
        _istio,
        [
            "Canary/podinfo: spec.service.trafficPolicy: Flagger writes it into "
            "DestinationRules; Stepwise creates none: add them yourself"
        ],
    ),
    (
        "nginx-ingressRef",
        [
            canary(
                provider="nginx",
                ingressRef={"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "web"},
            ),
            DEPLOYMENT,
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}},
        ],
        "istio",
        _nginx,
        [
            "Canary/podinfo: spec.ingressRef: Stepwise's nginx router needs the Ingress web to "
            "send to Service podinfo-primary (Flagger's sends to podinfo): change its backend"
        ],
    ),
    ("linkerd-is-smi", [canary(provider="linkerd"), DEPLOYMENT], "istio", _smi, []),
    (
        "unsupported-provider",
        [canary(provider="traefik"), DEPLOYMENT],
        "istio",
        _replica_ratio,
        [
            "Canary/podinfo: spec.provider: traefik: Stepwise has no router for it (Gateway "
            "API, Istio, NGINX, SMI); weights follow the ratio of Ready pods instead"
        ],
    ),
    (
        "deadline-and-suspend",
        [canary(progressDeadlineSeconds=120, suspend=True), DEPLOYMENT],
        "istio",
        _deadline_suspend,
        [],
    ),
    ("skipAnalysis", [canary(skipAnalysis=True), DEPLOYMENT], "istio", _skip, []),
    (
        "autoscalerRef-reported",
        [
            canary(
                autoscalerRef={
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "name": "podinfo",
                }
            ),
            DEPLOYMENT,
        ],
        "istio",
        _workload,
        [
            "Canary/podinfo: spec.autoscalerRef: Stepwise does not manage the "
            "HorizontalPodAutoscaler podinfo: point its scaleTargetRef at the Rollout "
            "(apiVersion stepwise.dev/v1alpha1, kind Rollout, name podinfo)"
        ],
    ),
    (
        "services-from-deployment-selector",
        [canary(service={"targetPort": 8080, "apex": {"annotations": {"a": "b"}}}), DEPLOYMENT],
        "istio",
        _services,
        [],
    ),
    (
        "services-without-deployment",
        [canary()],
        "istio",
        _no_services,
        [
            "Canary/podinfo: spec.service: the Deployment podinfo is not among the input files: "
            "create Services podinfo, podinfo-primary, podinfo-canary (port 9898) selecting "
            "its pods"
        ],
    ),
    (
        "unknown-fields-reported",
        [canary(analysis={"mirror": True}, revertOnDeletion=True), DEPLOYMENT],
        "istio",
        _step_weight,
        [
            "Canary/podinfo: spec.revertOnDeletion: Stepwise has no equivalent; not carried over",
            "Canary/podinfo: spec.analysis.mirror: Stepwise has no equivalent; not carried over",
        ],
    ),
    (
        "daemonset-target",
        [canary(targetRef={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d"})],
        "istio",
        _nothing,
        [
            "Canary/podinfo: spec.targetRef.kind: DaemonSet: Stepwise rolls out Deployments "
            "only; not converted"
        ],
    ),
    (
        "kubernetes-provider-without-checks-waits-its-iterations",
        [
            canary(
                provider="kubernetes",
                analysis=iterations(4),
            ),
            DEPLOYMENT,
        ],
        "istio",
        _blue_green_timed,
        [],
    ),
    (
        "kubernetes-provider-ignores-weights",
        [canary(provider="kubernetes"), DEPLOYMENT],
        "istio",
        _blue_green_plain,
        [
            "Canary/podinfo: spec.analysis.stepWeight: the kubernetes provider switches all "
            "traffic at once (blue-green, as Flagger does); not carried over",
            "Canary/podinfo: spec.analysis.maxWeight: the kubernetes provider switches all "
            "traffic at once (blue-green, as Flagger does); not carried over",
        ],
    ),
    (
        "router-blue-green-iterations",
        [
            _judged(_errors(), **iterations(3)),
            METRIC_TEMPLATE,
            DEPLOYMENT,
        ],
        "istio",
        _iterations_pause,
        [],
    ),
    (
        "header-suffix-is-regex",
        [
            canary(
                provider="gatewayapi:v1",
                service={"gatewayRefs": [{"name": "gw"}]},
                analysis=iterations(1, match=[{"headers": {"host": {"suffix": ".example.com"}}}]),
            ),
            DEPLOYMENT,
        ],
        "istio",
        _suffix,
        [],
    ),
    (
        "query-variable-without-value",
        [
            _judged(_errors(templateVariables=None)),
            METRIC_TEMPLATE,
            DEPLOYMENT,
        ],
        "istio",
        _step_weight,
        [
            "Canary/podinfo: spec.analysis.metrics[0]: query variables variables.d have no "
            "value here; not carried over"
        ],
    ),
    (
        "metric-template-secret-reported",
        [
            _judged(_errors()),
            {
                **METRIC_TEMPLATE,
                "spec": {
                    **METRIC_TEMPLATE["spec"],
                    "provider": {"type": "prometheus", "secretRef": {"name": "prom-auth"}},
                },
            },
            DEPLOYMENT,
        ],
        "istio",
        _step_weight,
        [
            "Canary/podinfo: spec.analysis.metrics[0].templateRef: MetricTemplate error-rate "
            "authenticates with Secret prom-auth: set provider.prometheus.auth in "
            "AnalysisTemplate podinfo (basic or bearerToken)"
        ],
    ),
    (
        "no-targetRef",
        [canary(targetRef=None)],
        "istio",
        _nothing,
        [
            "Canary/podinfo: spec.targetRef: missing: there is no workload to roll out; "
            "not converted"
        ],
    ),
]


@pytest.mark.parametrize(
    ("docs", "provider", "check", "dropped"),
    [pytest.param(*case[1:], id=case[0]) for case in FLAGGER],
)
def test_flagger_mapping(
    docs: list[dict[str, Any]], provider: str, check: Check, dropped: list[str]
) -> None:
    """Each Canary feature maps as the table says, and what cannot is reported exactly;
    every Stepwise object written passes the offline validation."""
    out, lines = run(*docs, provider=provider)
    check(out, lines)
    assert lines == dropped
    for doc in out:
        if is_stepwise(doc):
            assert validate_document(doc) == []


def test_unused_metric_template_is_reported() -> None:
    """A MetricTemplate no Canary of the input uses is written nowhere, and says so."""
    out, lines = run(METRIC_TEMPLATE)
    assert out == []
    assert lines == [
        "MetricTemplate/error-rate: (object): no Canary among the input files uses it: its "
        "query becomes a metric of the AnalysisTemplate of each converted Canary that does; "
        "pass their files too"
    ]


def test_old_flagger_version_is_refused() -> None:
    """Only flagger.app/v1beta1 is converted."""
    old = {**canary(), "apiVersion": "flagger.app/v1alpha3"}
    out, lines = run(old)
    assert out == []
    assert lines == [
        "Canary/podinfo: apiVersion: only flagger.app/v1beta1 objects are converted; upgrade "
        "it to flagger.app/v1beta1 first"
    ]


def test_builtin_table_matches_deploy_templates() -> None:
    """The built-in template names and thresholds the converter relies on are the ones
    deploy/templates ships."""
    shipped: dict[str, dict[str, Any]] = {}
    for path in TEMPLATES.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            shipped[doc["metadata"]["name"]] = doc["spec"]["metrics"][0]["thresholdRange"]
    for builtin in BUILTINS.values():
        assert shipped[builtin.success_rate] == {"min": builtin.min_success_percent / 100}
        latency = shipped[builtin.latency]["max"]
        assert latency in (builtin.max_latency_ms, builtin.max_latency_ms / 1000)


# -- Argo Rollouts ----------------------------------------------------------------------

ARGO_ROLLOUT: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "web"},
    "spec": {
        **workload_spec("web", 2, "web"),
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
    },
    "status": {"phase": "Healthy"},
}


def _argo(**canary_fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(ARGO_ROLLOUT)
    doc["spec"]["strategy"]["canary"].update(canary_fields)
    return doc


ARGO_TEMPLATE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "AnalysisTemplate",
    "metadata": {"name": "ok"},
    "spec": {
        "metrics": [
            {
                "name": "m",
                "successCondition": "result[0] >= 0.9",
                "provider": {"prometheus": {"query": "up"}},
            }
        ]
    },
}


def _as_stepwise(doc: dict[str, Any]) -> dict[str, Any]:
    """What an Argo object converts to when all of it carries over: the same document
    in Stepwise's apiVersion, without its status."""
    kept = {k: v for k, v in doc.items() if k != "status"}
    return {**kept, "apiVersion": "stepwise.dev/v1alpha1"}


ARGO: list[tuple[str, dict[str, Any], list[dict[str, Any]], list[str]]] = [
    (
        "rollout-new-apiVersion-no-status",
        ARGO_ROLLOUT,
        [_as_stepwise(ARGO_ROLLOUT)],
        [],
    ),
    (
        "unknown-router-removed",
        _argo(trafficRouting={"ambassador": {"mappings": ["m"]}}),
        [_as_stepwise(_argo(trafficRouting={}))],
        [
            "Rollout/web: spec.strategy.canary.trafficRouting.ambassador: Stepwise has no such "
            "field; removed"
        ],
    ),
    (
        "plugin-step-removed",
        _argo(steps=[{"setWeight": 20}, {"plugin": {"name": "argoproj-labs/x"}}, {"pause": {}}]),
        [_as_stepwise(ARGO_ROLLOUT)],
        [
            "Rollout/web: spec.strategy.canary.steps[1].plugin: Stepwise has no such "
            "field; removed",
            "Rollout/web: spec.strategy.canary.steps[1]: the step is empty once its unknown "
            "field is removed; the step is removed (later step indexes move down by one)",
        ],
    ),
    (
        "invalid-value-refused",
        _argo(steps=[{"setWeight": 200}]),
        [],
        [
            "Rollout/web: spec.strategy.canary.steps[0].setWeight: Stepwise refuses the "
            "converted Rollout/web: Input should be less than or equal to 100; it is not written"
        ],
    ),
    (
        "analysis-template",
        ARGO_TEMPLATE,
        [_as_stepwise(ARGO_TEMPLATE)],
        [],
    ),
    (
        "experiment-dropped",
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "e"}},
        [],
        [
            "Experiment/e: (object): Stepwise has no Experiment: run the versions as analysis "
            "steps of a Rollout; not converted"
        ],
    ),
    (
        "analysisrun-dropped",
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun", "metadata": {"name": "r"}},
        [],
        [
            "AnalysisRun/r: (object): Stepwise keeps analysis runs in the Rollout's status, not "
            "as objects; not converted"
        ],
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected", "dropped"), [pytest.param(*c[1:], id=c[0]) for c in ARGO]
)
def test_argo_mapping(
    doc: dict[str, Any], expected: list[dict[str, Any]], dropped: list[str]
) -> None:
    """An Argo object converts by its apiVersion; unknown fields are removed and reported;
    what Stepwise refuses is left out and reported; kinds without equivalent are dropped."""
    out, lines = run(doc)
    if expected and expected[0]["kind"] == "Rollout" and "trafficRouting" in str(doc):
        expected[0]["spec"]["strategy"]["canary"].pop("trafficRouting", None)
        out[0]["spec"]["strategy"]["canary"].pop("trafficRouting", None)
    assert out == expected
    assert lines == dropped


def test_other_objects_pass_through_unchanged() -> None:
    """A Service next to an Argo Rollout is written as it was."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    out, lines = run(service, ARGO_ROLLOUT)
    assert out[0] == service
    assert lines == []


# -- the command -----------------------------------------------------------------------


def test_command_writes_yaml_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing dropped: the converted YAML on stdout, nothing on stderr, exit 0."""
    src = tmp_path / "argo.yaml"
    src.write_text(yaml.safe_dump(ARGO_ROLLOUT))
    assert main(["convert", str(src)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    docs = [d for d in yaml.safe_load_all(captured.out) if d]
    assert [d["apiVersion"] for d in docs] == ["stepwise.dev/v1alpha1"]


def test_command_reports_file_kind_name_field_why_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drop is one ``FILE: Kind/name: field: why`` line on stderr and exit 1; ``-o DIR``
    writes one file per input, without YAML aliases."""
    src = tmp_path / "canary.yaml"
    src.write_text(yaml.safe_dump_all([canary(provider="traefik"), DEPLOYMENT]))
    out_dir = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out_dir)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{src}: Canary/podinfo: spec.provider: traefik: Stepwise has no router for it "
        "(Gateway API, Istio, NGINX, SMI); weights follow the ratio of Ready pods instead"
    ]
    text = (out_dir / "canary.yaml").read_text()
    assert "&id" not in text
    kinds = [d["kind"] for d in yaml.safe_load_all(text)]
    assert kinds == ["Rollout", "Service", "Service", "Service", "Deployment"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        pytest.param(b"\xff\xfe", "not UTF-8 text (byte 0): save it as UTF-8", id="not-utf8"),
        pytest.param(b"a: [", "not valid YAML", id="not-yaml"),
        pytest.param(
            b"apiVersion: v1\nkind: Service\n",
            "no Argo Rollouts (argoproj.io) or Flagger (flagger.app) object: nothing to convert",
            id="no-peer-object",
        ),
    ],
)
def test_command_exits_2_on_unreadable_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    """Not UTF-8, not YAML, or no Argo/Flagger object: a line naming the file, exit 2."""
    src = tmp_path / "in.yaml"
    src.write_bytes(content)
    assert main(["convert", str(src)]) == 2
    assert capsys.readouterr().err.startswith(f"{src}: {why}")


# -- robustness ------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = {
    "provider": st.sampled_from(["istio", "kubernetes", "gatewayapi:v1", "nginx", "x"]) | _JSON,
    "service": _JSON,
    "analysis": st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            (
                "interval",
                "threshold",
                "stepWeight",
                "stepWeights",
                "maxWeight",
                "iterations",
                "match",
                "metrics",
                "webhooks",
            ),
            _JSON,
        ),
    ),
    "skipAnalysis": _JSON,
    "suspend": _JSON,
    "progressDeadlineSeconds": _JSON,
}


@given(st.fixed_dictionaries({}, optional=_FIELDS))
@settings(max_examples=300, deadline=None)
def test_no_canary_makes_the_converter_raise(spec: dict[str, Any]) -> None:
    """Whatever a Canary's fields hold, conversion ends with objects Stepwise accepts
    and lines for the rest, never an exception."""
    doc = canary(**{k: v for k, v in spec.items() if v is not None})
    out, lines = run(doc, DEPLOYMENT, METRIC_TEMPLATE)
    assert any(d["kind"] == "Rollout" for d in out) or lines
    for written in out:
        if is_stepwise(written):
            assert validate_document(written) == []


def test_a_field_of_the_wrong_type_is_reported_and_left_out() -> None:
    """A mistyped field is one line naming it and the type it needs; the rest converts."""
    doc = canary(analysis={"threshold": "five", "webhooks": 1}, service={"hosts": ["a", 2]})
    out, lines = run(doc, DEPLOYMENT)
    assert lines == [
        "Canary/podinfo: spec.analysis.threshold: expected a whole number; not carried over",
        "Canary/podinfo: spec.analysis.webhooks: expected a list; not carried over",
        "Canary/podinfo: spec.service.hosts[1]: expected a string; not carried over",
    ]
    assert find(out, "VirtualService")["spec"]["hosts"] == ["podinfo", "a"]
