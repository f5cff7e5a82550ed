"""Invalid Rollouts and AnalysisTemplates, each with the field its rejection must name.

Both the real API server (``tests/integration/test_crd_validation.py``) and
``stepwise lint`` (``tests/unit/test_lint.py``) must reject every one, naming that field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.manifests import analysis_template, deep, rollout

Doc = dict[str, Any]
CANARY = "spec.strategy.canary"


_EXP_CANARY: Doc = {"name": "c", "specRef": "canary"}
"""An experiment template copying the canary."""


@dataclass(frozen=True)
class Case:
    """One invalid document and the field path its error must name."""

    id: str
    doc: Doc
    field: str
    server_field: str | None = None
    """Where the API server names a deeper path than lint (the unknown key itself, the
    second of two duplicates), that path."""

    @property
    def on_server(self) -> str:
        """The field path the API server's rejection must name."""
        return self.server_field or self.field


def _ro(edit: Callable[[Doc], None], **kwargs: Any) -> Doc:
    doc = rollout("bad", **kwargs)
    edit(doc)
    return doc


NGINX: Doc = {"nginx": {"stableIngress": "app"}}


def _routed(traffic_routing: Doc, **kwargs: Any) -> Doc:
    """A Rollout with Services s and c and ``traffic_routing``."""
    return rollout(
        "bad", stableService="s", canaryService="c", trafficRouting=deep(traffic_routing), **kwargs
    )


def _canary(doc: Doc) -> Doc:
    canary: Doc = doc["spec"]["strategy"]["canary"]
    return canary


def _at(edit: Callable[[Doc], None]) -> Doc:
    doc = deep(analysis_template("bad"))
    edit(doc)
    return doc


def _metric(doc: Doc) -> Doc:
    metric: Doc = doc["spec"]["metrics"][0]
    return metric


def _set(path: list[str | int], value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


ROUTED = {
    "stableService": "app-stable",
    "canaryService": "app-canary",
    "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
}


def _blue_green(**fields: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        doc["spec"]["strategy"] = {"blueGreen": {"activeService": "app-active", **fields}}

    return edit


BLUE_GREEN = "spec.strategy.blueGreen"

CASES: list[Case] = [
    Case(
        "weight-over-100",
        rollout("bad", steps=[{"setWeight": 120}]),
        f"{CANARY}.steps[0].setWeight",
    ),
    Case(
        "weight-negative", rollout("bad", steps=[{"setWeight": -1}]), f"{CANARY}.steps[0].setWeight"
    ),
    Case(
        "pause-duration-words",
        rollout("bad", steps=[{"setWeight": 5}, {"pause": {"duration": "10seconds"}}]),
        f"{CANARY}.steps[1].pause.duration",
    ),
    Case(
        "pause-duration-negative",
        rollout("bad", steps=[{"pause": {"duration": -5}}]),
        f"{CANARY}.steps[0].pause.duration",
    ),
    Case(
        "step-with-two-actions",
        rollout("bad", steps=[{"setWeight": 5, "pause": {}}]),
        f"{CANARY}.steps[0]",
    ),
    Case(
        "unknown-step-kind",
        rollout("bad", steps=[{"rollback": {}}]),
        f"{CANARY}.steps[0]",
        f"{CANARY}.steps[0].rollback",
    ),
    Case("empty-step", rollout("bad", steps=[{}]), f"{CANARY}.steps[0]"),
    Case(
        "selector-not-matching-template",
        _ro(_set(["spec", "selector", "matchLabels"], {"app": "other"})),
        "spec.selector",
    ),
    Case("empty-selector", _ro(_set(["spec", "selector"], {})), "spec.selector"),
    Case(
        "canary-service-equals-stable",
        rollout("bad", stableService="app", canaryService="app"),
        f"{CANARY}.canaryService",
    ),
    Case(
        "two-traffic-routers",
        _routed({"gatewayAPI": {"httpRoute": "r"}, "smi": {}}),
        f"{CANARY}.trafficRouting",
    ),
    Case(
        "no-traffic-router-named",
        _routed({}),
        f"{CANARY}.trafficRouting",
    ),
    Case(
        "routing-without-services",
        rollout("bad", trafficRouting={"gatewayAPI": {"httpRoute": "r"}}),
        f"{CANARY}.trafficRouting",
    ),
    Case(
        "header-route-without-router",
        rollout("bad", steps=[{"setHeaderRoute": {"name": "beta", "match": []}}]),
        f"{CANARY}.steps",
    ),
    Case(
        "header-route-with-nginx",
        _routed(NGINX, steps=[{"setHeaderRoute": {"name": "beta", "match": []}}]),
        f"{CANARY}.steps",
    ),
    Case(
        "starting-step-beyond-last",
        rollout(
            "bad",
            steps=[{"setWeight": 10}, {"pause": {}}],
            analysis={"templates": [{"templateName": "t"}], "startingStep": 2},
        ),
        f"{CANARY}.analysis.startingStep",
    ),
    Case("replicas-negative", _ro(_set(["spec", "replicas"], -1)), "spec.replicas"),
    Case("max-surge-over-100-percent", rollout("bad", maxSurge="150%"), f"{CANARY}.maxSurge"),
    Case("max-unavailable-word", rollout("bad", maxUnavailable="abc"), f"{CANARY}.maxUnavailable"),
    Case(
        "canary-scale-two-fields",
        rollout("bad", steps=[{"setCanaryScale": {"replicas": 2, "weight": 20}}]),
        f"{CANARY}.steps[0].setCanaryScale",
    ),
    Case(
        "canary-scale-weight-101",
        rollout("bad", steps=[{"setCanaryScale": {"weight": 101}}]),
        f"{CANARY}.steps[0].setCanaryScale.weight",
    ),
    Case(
        "analysis-step-without-templates",
        rollout("bad", steps=[{"analysis": {"templates": []}}]),
        f"{CANARY}.steps[0].analysis.templates",
    ),
    Case(
        "analysis-duplicate-args",
        rollout(
            "bad",
            steps=[
                {
                    "analysis": {
                        "templates": [{"templateName": "t"}],
                        "args": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}],
                    }
                }
            ],
        ),
        f"{CANARY}.steps[0].analysis.args",
    ),
    Case(
        "service-name-invalid", rollout("bad", stableService="Bad_Name"), f"{CANARY}.stableService"
    ),
    Case(
        "template-without-containers",
        _ro(_set(["spec", "template", "spec"], {"containers": []})),
        "spec.template.spec.containers",
    ),
    Case(
        "progress-deadline-zero",
        _ro(_set(["spec", "progressDeadlineSeconds"], 0)),
        "spec.progressDeadlineSeconds",
    ),
    Case(
        "header-match-two-kinds",
        rollout(
            "bad",
            steps=[
                {
                    "setHeaderRoute": {
                        "name": "beta",
                        "match": [{"headerName": "x", "headerValue": {"exact": "1", "regex": "1"}}],
                    }
                }
            ],
            **ROUTED,
        ),
        f"{CANARY}.steps[0].setHeaderRoute.match[0].headerValue",
    ),
    Case(
        "missing-strategy",
        _ro(lambda d: d["spec"].pop("strategy")),
        "spec.strategy",
    ),
    Case(
        "metric-names-duplicate",
        _at(lambda d: d["spec"]["metrics"].append(deep(d["spec"]["metrics"][0]))),
        "spec.metrics",
        "spec.metrics[1]",
    ),
    Case(
        "failure-limit-negative",
        _at(lambda d: _metric(d).update(failureLimit=-1)),
        "spec.metrics[0].failureLimit",
    ),
    Case(
        "interval-word",
        _at(lambda d: _metric(d).update(interval="soon")),
        "spec.metrics[0].interval",
    ),
    Case("count-zero", _at(lambda d: _metric(d).update(count=0)), "spec.metrics[0].count"),
    Case(
        "threshold-min-above-max",
        _at(lambda d: _metric(d).update(thresholdRange={"min": 2, "max": 1})),
        "spec.metrics[0].thresholdRange.min",
    ),
    Case(
        "metric-without-criterion",
        _at(lambda d: _metric(d).pop("thresholdRange")),
        "spec.metrics[0]",
    ),
    Case("no-metrics", _at(lambda d: d["spec"].update(metrics=[])), "spec.metrics"),
    Case(
        "on-no-data-unknown",
        _at(lambda d: _metric(d).update(onNoData="Ignore")),
        "spec.metrics[0].onNoData",
    ),
    Case(
        "two-auth-methods",
        _at(
            lambda d: _metric(d)["provider"]["prometheus"].update(
                auth={
                    "bearerTokenFile": "/t",
                    "basic": {
                        "username": {"name": "s", "key": "u"},
                        "password": {"name": "s", "key": "p"},
                    },
                }
            )
        ),
        "spec.metrics[0].provider.prometheus.auth",
    ),
    Case("missing-provider", _at(lambda d: _metric(d).pop("provider")), "spec.metrics[0].provider"),
    Case(
        "canary-and-blue-green",
        _ro(lambda d: d["spec"]["strategy"].update(blueGreen={"activeService": "app-active"})),
        "spec.strategy",
    ),
    Case("no-strategy", _ro(_set(["spec", "strategy"], {})), "spec.strategy"),
    Case(
        "preview-equals-active",
        _ro(_blue_green(previewService="app-active")),
        f"{BLUE_GREEN}.previewService",
    ),
    Case(
        "preview-replica-count-zero",
        _ro(_blue_green(previewReplicaCount=0)),
        f"{BLUE_GREEN}.previewReplicaCount",
    ),
    Case(
        "role-label-on-the-selector",
        _ro(_blue_green(activeMetadata={"labels": {"app": "other"}})),
        BLUE_GREEN,
    ),
    Case(
        "role-label-is-the-revision",
        _ro(_blue_green(previewMetadata={"labels": {"stepwise.dev/revision": "x"}})),
        BLUE_GREEN,
    ),
    Case(
        "canary-role-label-on-the-selector",
        _ro(lambda d: _canary(d).update(canaryMetadata={"labels": {"app": "other"}})),
        CANARY,
    ),
    Case(
        "stable-role-label-is-the-revision",
        _ro(lambda d: _canary(d).update(stableMetadata={"labels": {"stepwise.dev/revision": "x"}})),
        CANARY,
    ),
    # -- the experiment step (tests/integration/test_experiment.py) --
    Case(
        "experiment-template-weight-without-router",
        rollout("bad", steps=[{"experiment": {"templates": [_EXP_CANARY | {"weight": 5}]}}]),
        f"{CANARY}.steps",
    ),
    Case(
        "experiment-template-weight-with-nginx",
        _routed(NGINX, steps=[{"experiment": {"templates": [_EXP_CANARY | {"weight": 5}]}}]),
        f"{CANARY}.steps",
    ),
    Case(
        "experiment-template-sets-the-revision-label",
        rollout(
            "bad",
            steps=[
                {
                    "experiment": {
                        "templates": [
                            _EXP_CANARY | {"metadata": {"labels": {"stepwise.dev/revision": "x"}}}
                        ]
                    }
                }
            ],
        ),
        f"{CANARY}.steps[0].experiment.templates[0].metadata.labels",
    ),
    Case(
        "experiment-analysis-without-a-template",
        rollout(
            "bad",
            steps=[{"experiment": {"templates": [_EXP_CANARY], "analyses": [{"name": "a"}]}}],
        ),
        f"{CANARY}.steps[0].experiment.analyses[0]",
    ),
    Case(
        "experiment-spec-ref-unknown",
        rollout("bad", steps=[{"experiment": {"templates": [{"name": "c", "specRef": "x"}]}}]),
        f"{CANARY}.steps[0].experiment.templates[0].specRef",
    ),
]

CLUSTER_CASES: list[Case] = [
    Case(
        "cluster-template-failure-limit-negative",
        {
            **_at(lambda d: _metric(d).update(failureLimit=-1)),
            "kind": "ClusterAnalysisTemplate",
        },
        "spec.metrics[0].failureLimit",
    ),
]
