"""The Grafana dashboard (deploy/grafana/stepwise-dashboard.json) queries only metrics the
controller exports (controller/runtime/metrics.py), and shows every one of them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram

from controller.runtime.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "stepwise-dashboard.json"

#: PromQL words that are not metric names: aggregations, functions called without a
#: following "(" never occur, so only keywords and modifiers need listing.
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"^label_values\(\s*(.*?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)$")


def exported_names() -> dict[str, set[str]]:
    """Every sample name the controller's registry can expose, by metric family."""
    metrics = Metrics()
    families: dict[str, set[str]] = {}
    for attribute in vars(metrics).values():
        if isinstance(attribute, Counter):
            base = attribute._name
            families[base] = {f"{base}_total", f"{base}_created"}
        elif isinstance(attribute, Histogram):
            base = attribute._name
            families[base] = {f"{base}_{s}" for s in ("bucket", "count", "sum", "created")}
        elif isinstance(attribute, Gauge):
            families[attribute._name] = {attribute._name}
    return families


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label names, functions, keywords,
    durations, strings and Grafana variables left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = _GROUPING.sub("", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in KEYWORDS}


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression in the dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and value.startswith("label_values"):
                found = _LABEL_VALUES.match(value)
                assert found, f"unreadable variable query {value!r}"
                yield found.group(1)
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sum by (le) (rate(stepwise_x_bucket[$__rate_interval]))", {"stepwise_x_bucket"}),
        ('max by (pod) (a{phase=~"Failed|Error", x="by (y)"}) / b', {"a", "b"}),
        ("histogram_quantile(0.99, c) and on(job) d offset 5m", {"c", "d"}),
    ],
    ids=["range-and-grouping", "matchers-and-strings", "numbers-keywords-offset"],
)
def test_metric_names_are_read_from_promql(expr: str, expected: set[str]) -> None:
    """The extractor finds metric names and nothing else."""
    assert metric_names(expr) == expected


def test_every_expression_uses_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    """Each PromQL expression selects only series that metrics.py defines."""
    known = set().union(*exported_names().values())
    exprs = list(expressions(dashboard))
    assert len(exprs) >= 10
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"{expr!r} uses {sorted(names - known)}, not in metrics.py"


def test_every_exported_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    """No metric family of metrics.py is left off the dashboard."""
    used = set().union(*(metric_names(e) for e in expressions(dashboard)))
    missing = [family for family, names in exported_names().items() if not names & used]
    assert missing == []


def test_panels_have_unique_ids_and_a_description(dashboard: dict[str, Any]) -> None:
    """Panel ids are unique and every graph says what it shows."""
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("description"), panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
