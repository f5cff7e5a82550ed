"""The Grafana dashboard (deploy/grafana/stepwise-dashboard.json) queries only metrics the
controller exports (controller/runtime/metrics.py), shows every one of them, and its
Delivery row shows the delivery record's figures per Rollout."""

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


#: Variables Grafana itself defines.
BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__range_s"})
_VARIABLE = re.compile(r"\$\{?(\w+)")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_QUANTILE = re.compile(r"histogram_quantile\(\s*([0-9.]+)\s*,\s*sum by \(([^)]*)\)")


def test_every_variable_an_expression_uses_is_defined(dashboard: dict[str, Any]) -> None:
    """A ``$name`` in a query is a dashboard variable or one of Grafana's own."""
    defined = {v["name"] for v in dashboard["templating"]["list"]} | BUILTIN_VARIABLES
    for expr in expressions(dashboard):
        assert set(_VARIABLE.findall(expr)) <= defined, expr


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    """No two panels share a grid cell (Grafana would push one of them elsewhere)."""
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def row_panels(dashboard: dict[str, Any], title: str) -> dict[str, dict[str, Any]]:
    """The panels under the row ``title``, by title (up to the next row)."""
    panels = dashboard["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == title)
    found: dict[str, dict[str, Any]] = {}
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        found[panel["title"]] = panel
    return found


def exprs(panel: dict[str, Any]) -> list[str]:
    """A panel's query expressions."""
    return [t["expr"] for t in panel["targets"]]


def test_delivery_row_has_each_figure_per_rollout(dashboard: dict[str, Any]) -> None:
    """The Delivery row shows deploy frequency, change failure rate, outcomes and the
    three times; every query filters by the namespace and rollout variables, keeps the
    rollout (and namespace) apart, and looks back over the delivery window."""
    delivery = row_panels(dashboard, "Delivery")
    assert set(delivery) == {
        "Deploy frequency",
        "Change failure rate",
        "Releases by outcome",
        "Time to detect",
        "Time to restore",
        "Lead time",
    }
    for title, panel in delivery.items():
        for expr in exprs(panel):
            assert 'namespace=~"$namespace", rollout=~"$rollout"' in expr, title
            assert "[$window]" in expr, title
            groupings = _BY.findall(expr)
            assert groupings, title
            for grouping in groupings:
                labels = {label.strip() for label in grouping.split(",")}
                assert {"namespace", "rollout"} <= labels, (title, expr)
        for target in panel["targets"]:
            assert "{{rollout}}" in target["legendFormat"], title


def test_deploy_frequency_and_change_failure_rate_read_the_outcomes(
    dashboard: dict[str, Any],
) -> None:
    """Deploys per day count promotions; the failure rate divides aborts by promotions
    plus aborts (superseded releases count in neither)."""
    delivery = row_panels(dashboard, "Delivery")
    [frequency] = exprs(delivery["Deploy frequency"])
    assert metric_names(frequency) == {"stepwise_releases_total"}
    assert 'outcome="Promoted"' in frequency
    assert frequency.endswith("* 86400")
    [rate] = exprs(delivery["Change failure rate"])
    aborted, total = rate.split(" / ")
    assert 'outcome="Aborted"' in aborted
    assert 'outcome=~"Promoted|Aborted"' in total
    assert delivery["Change failure rate"]["fieldConfig"]["defaults"]["unit"] == "percentunit"


@pytest.mark.parametrize(
    ("title", "family", "quantiles"),
    [
        ("Time to detect", "stepwise_release_time_to_detect_seconds", {"0.5", "0.9"}),
        ("Time to restore", "stepwise_release_time_to_restore_seconds", {"0.5", "0.9"}),
        ("Lead time", "stepwise_release_lead_time_seconds", {"0.5"}),
    ],
)
def test_release_time_percentiles_come_from_the_buckets_per_rollout(
    dashboard: dict[str, Any], title: str, family: str, quantiles: set[str]
) -> None:
    """Each percentile is histogram_quantile over the rate of that histogram's buckets,
    summed by le and rollout, in seconds."""
    assert family in exported_names()
    panel = row_panels(dashboard, "Delivery")[title]
    seen: set[str] = set()
    for expr in exprs(panel):
        assert metric_names(expr) == {f"{family}_bucket"}, expr
        assert f"rate({family}_bucket{{" in expr
        found = _QUANTILE.match(expr)
        assert found, expr
        assert {"le", "namespace", "rollout"} == {s.strip() for s in found.group(2).split(",")}
        seen.add(found.group(1))
    assert seen == quantiles
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_the_delivery_window_is_a_variable_of_days(dashboard: dict[str, Any]) -> None:
    """The Delivery panels' look-back is chosen on the dashboard: a day to a month, a
    week by default."""
    [window] = [v for v in dashboard["templating"]["list"] if v["name"] == "window"]
    assert window["type"] == "interval"
    assert window["query"].split(",") == ["1d", "7d", "14d", "30d"]
    assert window["current"]["value"] == "7d"
