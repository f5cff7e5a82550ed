"""Which measurements the runtime must take (:func:`controller.core.analysis.due_in`):
each run in the status is measured for the analysis its name points at, only for the
canary revision, and a run whose step or analysis left the spec measures nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import Rollout
from controller.core import analysis as an
from controller.core.model import TemplateKey
from tests.support.manifests import analysis_template
from tests.support.manifests import rollout as rollout_doc

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def template(metric: str) -> AnalysisTemplateSpec:
    """The test template, its one metric named ``metric``."""
    spec = analysis_template()["spec"]
    spec["metrics"][0]["name"] = metric
    return AnalysisTemplateSpec.model_validate(spec)


TEMPLATES: dict[TemplateKey, AnalysisTemplateSpec | str] = {
    TemplateKey("step-rate"): template("step-success"),
    TemplateKey("bg-rate"): template("bg-success"),
}
ARGS = [{"name": "service", "value": "app"}]
STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"analysis": {"templates": [{"templateName": "step-rate"}], "args": ARGS}},
    {"pause": {}},
]
BACKGROUND = {"templates": [{"templateName": "bg-rate"}], "args": ARGS}


def rollout(runs: list[tuple[str, str]], *, steps: list[dict[str, Any]] = STEPS) -> Rollout:
    """A Rollout with canary revision c1 and a running run per (name, revision), each
    measuring both metrics (a run measures only those its analysis has)."""
    doc = rollout_doc("app", steps=steps, analysis=BACKGROUND)
    metrics = [
        {"name": name, "phase": "Running", "nextAt": T0.isoformat()}
        for name in ("step-success", "bg-success")
    ]
    doc["status"] = {
        "canaryRevision": "c1",
        "analysisRuns": [
            {"name": name, "revision": revision, "phase": "Running",
             "startedAt": T0.isoformat(), "metrics": metrics}
            for name, revision in runs
        ],
    }  # fmt: skip
    return Rollout.model_validate(doc)


def test_run_names_point_at_their_analysis() -> None:
    """``step-<i>`` is the analysis of step i, ``background`` the background analysis;
    a step without analysis, or beyond the steps, has none."""
    canary = rollout([]).spec.strategy.canary
    assert an.step_index(an.step_run_name(1)) == 1
    assert an.run_analysis(canary, an.step_run_name(1)) == canary.steps[1].analysis
    assert an.run_analysis(canary, an.BACKGROUND) == canary.analysis
    assert an.run_analysis(canary, an.step_run_name(0)) is None
    assert an.run_analysis(canary, an.step_run_name(7)) is None


def test_a_name_that_is_no_run_name_is_an_error() -> None:
    """Only names made by ``step_run_name`` (and ``background``) are parsed."""
    with pytest.raises(ValueError, match="invalid literal"):
        an.step_index("warm-up")


def test_due_for_each_run_of_the_canary_revision() -> None:
    """Both runs of c1 are measured for their own templates; a run of another revision
    is not measured."""
    ro = rollout([(an.step_run_name(1), "c1"), (an.BACKGROUND, "c1"), ("step-1", "c0")])
    due = an.due_in(ro, TEMPLATES, T0)
    assert [(d.run, d.metric.name) for d in due] == [
        ("step-1", "step-success"),
        ("background", "bg-success"),
    ]


def test_nothing_due_before_the_next_measurement() -> None:
    """A metric is due only once its ``nextAt`` is reached."""
    ro = rollout([(an.BACKGROUND, "c1")])
    assert an.due_in(ro, TEMPLATES, T0 - dt.timedelta(seconds=1)) == []


def test_a_run_whose_analysis_left_the_spec_measures_nothing() -> None:
    """The steps were edited: step 1 is no longer an analysis, and there is no step 5."""
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}]
    ro = rollout([("step-1", "c1"), ("step-5", "c1")], steps=steps)
    assert an.due_in(ro, TEMPLATES, T0) == []


def test_a_missing_template_measures_nothing() -> None:
    """Without its template a run has no metric to measure (it reports the problem)."""
    ro = rollout([(an.BACKGROUND, "c1")])
    assert an.due_in(ro, {}, T0) == []
