"""AnalysisTemplates with a comparative ``judge`` metric: a valid one and invalid ones,
each with the field its rejection must name. ``tests/unit/test_judge.py`` checks lint
rejects them; ``tests/integration/test_judge_crd.py`` checks the API server agrees."""

from __future__ import annotations

from typing import Any

from tests.support.invalid_cases import Case
from tests.support.manifests import analysis_template

COUNTS = {
    "canary": {"requests": "sum(a)", "errors": "sum(b)"},
    "stable": {"requests": "sum(c)", "errors": "sum(d)"},
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
            "bad",
            provider={
                "judge": {**COUNTS, "latency": {"canary": "a", "stable": "b", "tolerance": -1}}
            },
        ),
        f"{M}.provider.judge.latency.tolerance",
    ),
]
