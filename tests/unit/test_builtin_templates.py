"""The built-in metric templates in deploy/templates: every query renders with a Rollout's
variables, uses only variables the controller provides, and judges as intended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api.analysis import ClusterAnalysisTemplate
from controller.core.promql import placeholders, render

TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "templates"
BUILTIN = {"namespace", "rollout", "stableRevision", "canaryRevision", "stableService",
           "canaryService", "interval"}  # fmt: skip


def _all() -> list[ClusterAnalysisTemplate]:
    return [
        ClusterAnalysisTemplate.model_validate(doc)
        for path in sorted(TEMPLATES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def _queries(t: ClusterAnalysisTemplate) -> list[str]:
    out: list[str] = []
    for metric in t.spec.metrics:
        assert metric.provider.prometheus is not None
        out.append(metric.provider.prometheus.query)
        if metric.min_samples:
            out.append(metric.min_samples.query)
    return out


@pytest.mark.parametrize("template", _all(), ids=lambda t: t.metadata.name)
def test_queries_render_with_rollout_variables(template: ClusterAnalysisTemplate) -> None:
    """Each query names only built-in variables or its own args, and renders them inside
    string literals (a value with a quote stays inside its literal)."""
    args = {f"args.{a.name}": f'x"{a.name}' for a in template.spec.args or []}
    variables: dict[str, Any] = {name: f'v"{name}' for name in BUILTIN} | args
    variables["interval"] = "30s"
    for query in _queries(template):
        used = set(placeholders(query))
        assert used <= BUILTIN | set(args), used
        rendered = render(query, variables)
        assert "{{" not in rendered
        for name in used - {"interval"}:
            assert f'v\\"{name}' in rendered or f'x\\"{name[5:]}' in rendered


def test_every_convention_has_success_rate_and_latency() -> None:
    """Generic, Istio, Envoy (Gateway API), NGINX ingress and Linkerd each ship a success
    rate and a p99 latency template, guarded by a minimum request count."""
    names = {t.metadata.name for t in _all()}
    for prefix in ("http", "istio", "envoy", "nginx", "linkerd"):
        assert f"{prefix}-success-rate" in names
        assert f"{prefix}-latency-p99" in names
    for t in _all():
        for metric in t.spec.metrics:
            assert metric.min_samples is not None
            assert metric.on_no_data == "Hold"
