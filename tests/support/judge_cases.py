"""AnalysisTemplates with a comparative ``judge`` metric: a valid one and invalid ones,
each with the field its rejection must name. ``tests/unit/test_judge.py`` checks lint
rejects them; ``tests/integration/test_judge_crd.py`` checks the API server agrees."""

from __future__ import annotations

from typing import Any

from tests.support.invalid_cases import Case
from tests.support.manifests import analysis_template

COUNTS = {
    "canary": {"requests": "sum by (pod) (a)", "errors": "sum by (pod) (b)"},
    "stable": {"requests": "sum by (pod) (c)", "errors": "sum by (pod) (d)"},
}
LATENCY = {
    "canary": {"requests": "sum by (pod) (e)", "slow": "sum by (pod) (f)"},
    "stable": {"requests": "sum by (pod) (g)", "slow": "sum by (pod) (h)"},
}


def judge_template(name: str = "compare", **metric: Any) -> dict[str, Any]:
    """An AnalysisTemplate whose only metric is a judge, with ``metric`` fields merged in."""
    doc = analysis_template(name)
    doc["spec"]["metrics"] = [
        {
            "name": "errors-vs-stable",
            "interval": "30s",
            "provider": {"judge": dict(COUNTS)},
            **metric,
        }
    ]
    return doc


M = "spec.metrics[0]"

JUDGE_CASES: list[Case] = [
    Case("judge-with-threshold", judge_template("bad", thresholdRange={"min": 0.9}), M),
    Case(
        "judge-with-min-samples",
        judge_template("bad", minSamples={"query": "x", "min": 1}),
        M,
    ),
    Case("judge-needs-hold", judge_template("bad", onNoData="Pass"), f"{M}.onNoData"),
    Case(
        "worse-ratio-below-tolerance",
        judge_template("bad", provider={"judge": {**COUNTS, "tolerance": 1.5}}),
        f"{M}.provider.judge.worseRatio",
    ),
    Case(
        "two-providers",
        judge_template("bad", provider={"prometheus": {"query": "q"}, "judge": COUNTS}),
        f"{M}.provider",
    ),
    Case("no-provider", judge_template("bad", provider={}), f"{M}.provider"),
    Case(
        "alpha-too-large",
        judge_template("bad", provider={"judge": {**COUNTS, "alpha": 0.5}}),
        f"{M}.provider.judge.alpha",
    ),
    Case(
        "latency-tolerance-negative",
        judge_template(
            "bad", provider={"judge": {**COUNTS, "latency": {**LATENCY, "tolerance": -1}}}
        ),
        f"{M}.provider.judge.latency.tolerance",
    ),
    Case(
        "latency-worse-ratio-below-tolerance",
        judge_template(
            "bad", provider={"judge": {**COUNTS, "latency": {**LATENCY, "tolerance": 1.5}}}
        ),
        f"{M}.provider.judge.latency.worseRatio",
    ),
    Case(
        "increase-over-interval",
        judge_template(
            "bad",
            provider={
                "judge": {
                    **COUNTS,
                    "canary": {
                        "requests": "sum(increase(http_requests_total[{{interval}}]))",
                        "errors": "sum by (pod) (b)",
                    },
                }
            },
        ),
        f"{M}.provider.judge.canary.requests",
    ),
    Case(
        "rate-of-errors",
        judge_template(
            "bad",
            provider={
                "judge": {
                    **COUNTS,
                    "stable": {"requests": "sum by (pod) (c)", "errors": "sum(rate(x[5m]))"},
                }
            },
        ),
        f"{M}.provider.judge.stable.errors",
    ),
    Case(
        "slow-over-a-window",
        judge_template(
            "bad",
            provider={
                "judge": {
                    **COUNTS,
                    "latency": {
                        **LATENCY,
                        "canary": {"requests": "sum by (pod) (e)", "slow": "f[{{ interval }}]"},
                    },
                }
            },
        ),
        f"{M}.provider.judge.latency.canary.slow",
    ),
]
