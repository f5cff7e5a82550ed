"""Arguments in a metric's numbers, ``dryRun`` and ``measurementRetention``
(:mod:`controller.core.analysis`): filled in and checked when the analysis is resolved;
a bad value is a problem that names the metric, the field and the argument."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.api.analysis import AnalysisTemplateSpec, name_matches
from controller.api.rollout import (
    AnalysisRunStatus,
    Measurement,
    MetricResult,
    Rollout,
    RolloutAnalysis,
)
from controller.core import analysis as an
from controller.core.model import TemplateKey
from tests.support.manifests import rollout as rollout_doc
from tests.unit.test_analysis import T0, at, metric

KEY = TemplateKey("t", False)


def spec(metrics: list[dict[str, Any]], **fields: Any) -> AnalysisTemplateSpec:
    """A template of these metrics (Prometheus, threshold 0.99 unless given)."""
    full = [
        {"thresholdRange": {"min": 0.99}, "provider": {"prometheus": {"query": "q"}}, **m}
        for m in metrics
    ]
    return AnalysisTemplateSpec.model_validate({"metrics": full, **fields})


def resolve(template: AnalysisTemplateSpec, **analysis: Any) -> an.ResolvedAnalysis:
    ref = RolloutAnalysis.model_validate({"templates": [{"templateName": "t"}], **analysis})
    return an.resolve(ref, {KEY: template})


# -- arguments in numbers --------------------------------------------------------------


def test_every_number_field_takes_an_argument_from_the_template_or_the_rollout() -> None:
    template = spec(
        [
            {
                "name": "m",
                "interval": "{{args.every}}",
                "count": "{{ args.n }}",
                "initialDelay": "{{args.delay}}",
                "failureLimit": "{{args.fails}}",
                "inconclusiveLimit": "{{args.unsure}}",
                "consecutiveErrorLimit": "{{args.errors}}",
            }
        ],
        args=[
            {"name": "every", "value": "1m"},
            {"name": "n", "value": "3"},
            {"name": "delay", "value": "15"},
            {"name": "fails", "value": "1"},
            {"name": "unsure", "value": "2"},
            {"name": "errors"},
        ],
    )
    r = resolve(template, args=[{"name": "n", "value": "5"}, {"name": "errors", "value": "0"}])
    assert r.problem is None
    (m,) = r.metrics
    assert (m.interval, m.count, m.initial_delay) == ("1m", 5, 15)
    assert (m.failure_limit, m.inconclusive_limit, m.consecutive_error_limit) == (1, 2, 0)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("count", "three", "metric m count ({{args.x}}): 'three' is not a whole number"),
        ("count", "0", "metric m count ({{args.x}}): must be at least 1, not 0"),
        ("count", "-2", "'-2' is not a whole number"),
        ("failureLimit", "1.5", "metric m failureLimit ({{args.x}}): '1.5' is not a whole"),
        ("interval", "soon", "metric m interval ({{args.x}}): 'soon' is not a duration"),
        ("initialDelay", "", "metric m initialDelay ({{args.x}}): '' is not a duration"),
    ],
)
def test_a_bad_argument_value_is_a_problem_naming_metric_field_and_argument(
    field: str, value: str, says: str
) -> None:
    template = spec([{"name": "m", field: "{{args.x}}"}], args=[{"name": "x"}])
    r = resolve(template, args=[{"name": "x", "value": value}])
    assert r.problem is not None
    assert says in r.problem
    assert r.metrics == ()  # nothing is measured with a half-filled metric


def test_a_number_from_a_secret_or_an_undeclared_argument_is_refused() -> None:
    secret = spec(
        [{"name": "m", "count": "{{args.n}}"}],
        args=[{"name": "n", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    )
    assert "argument n comes from a Secret" in (resolve(secret).problem or "")
    undeclared = spec([{"name": "m", "count": "{{args.nope}}"}])
    assert "no argument nope is declared" in (resolve(undeclared).problem or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("count", "{{args.n}} + 1"),
        ("count", "{{ args.n"),
        ("count", "5"),  # a number as a string is not Argo's int-or-string either
        ("interval", "{{args.n}}s"),
        ("failureLimit", True),
    ],
)
def test_only_a_whole_placeholder_is_an_argument(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        metric(**{field: value})
    assert field in str(err.value) or "whole number" in str(err.value)


def test_a_literal_count_below_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be at least 1"):
        metric(count=0)


# -- dryRun ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("error-rate", "error-rate", True),
        ("error-rate", "error-rate-2", False),
        ("*", "anything", True),
        (".*", "anything", True),
        ("error-.*", "error-rate", True),
        ("rate", "error-rate", False),  # the whole name, not a part
        ("[", "[", True),  # an invalid expression matches only itself
        ("[", "x", False),
    ],
)
def test_dry_run_and_retention_names(pattern: str, name: str, matches: bool) -> None:
    assert name_matches(pattern, name) is matches


def run_of(r: an.ResolvedAnalysis) -> AnalysisRunStatus:
    return an.start("step-0", "rev", r, T0)


def measure(run: AnalysisRunStatus, r: an.ResolvedAnalysis, **phases: str) -> AnalysisRunStatus:
    measurements = {
        ("step-0", name): Measurement(phase=phase, message=f"{name} said {phase}", started_at=T0)
        for name, phase in phases.items()
    }
    return an.apply_measurements(run, r, measurements, at(60))


def test_a_dry_run_metric_that_fails_never_fails_the_run_and_is_reported() -> None:
    template = spec(
        [{"name": "judged"}, {"name": "trial"}],
        dryRun=[{"metricName": "trial"}],
    )
    r = resolve(template)
    assert r.dry_run == {"trial"}
    run = run_of(r)
    assert [m.dry_run for m in run.metrics] == [False, True]
    run = measure(run, r, judged="Successful", trial="Failed")
    assert {m.name: m.phase for m in run.metrics} == {"judged": "Successful", "trial": "Failed"}
    assert run.phase == "Successful"
    assert "dry run (not counted): trial Failed" in run.message


def test_a_judged_metric_still_fails_the_run_beside_a_dry_run_one() -> None:
    template = spec([{"name": "judged"}, {"name": "trial"}], dryRun=[{"metricName": "trial"}])
    r = resolve(template)
    run = measure(run_of(r), r, judged="Failed", trial="Successful")
    assert run.phase == "Failed"
    assert run.message.startswith("judged:")


def test_the_rollout_can_put_every_metric_in_dry_run() -> None:
    r = resolve(spec([{"name": "a"}, {"name": "b"}]), dryRun=[{"metricName": ".*"}])
    run = measure(run_of(r), r, a="Failed")
    assert run.phase == "Running"  # b has not finished: the run waits for it, never fails
    run = measure(run, r, b="Failed")
    assert run.phase == "Successful"


def test_a_blind_dry_run_metric_holds_nothing() -> None:
    r = resolve(spec([{"name": "a"}]), dryRun=[{"metricName": "a"}])
    run = measure(run_of(r), r, a="NoData")
    (result,) = run.metrics
    assert result.phase == "Running"
    assert an.blindness(result, r.metrics[0]) is None
    held = result.model_copy(update={"dry_run": False})
    assert an.blindness(held, r.metrics[0]) == "NoData"  # the same metric, judged


# -- measurementRetention --------------------------------------------------------------


def test_retention_keeps_the_latest_n_and_the_rollout_wins_over_the_template() -> None:
    template = spec(
        [{"name": "a"}, {"name": "b", "count": 50}],
        measurementRetention=[{"metricName": ".*", "limit": 3}],
    )
    r = resolve(template, measurementRetention=[{"metricName": "b", "limit": 40}])
    assert (r.keep("a"), r.keep("b")) == (3, 40)
    assert resolve(spec([{"name": "c"}])).keep("c") == an.KEEP_MEASUREMENTS
    result = MetricResult(name="b", phase="Running", next_at=T0)
    m = r.metrics[1]
    for i in range(45):
        measured = Measurement(phase="Successful", value=str(i), started_at=at(i))
        result = an.record(result, m, measured, at(i), keep=r.keep("b"))
    assert [x.value for x in result.measurements] == [str(i) for i in range(5, 45)]


def test_retention_limit_bounds() -> None:
    with pytest.raises(ValidationError):
        spec([{"name": "a"}], measurementRetention=[{"metricName": "a", "limit": 0}])
    with pytest.raises(ValidationError):
        spec([{"name": "a"}], measurementRetention=[{"metricName": "a", "limit": 101}])


def test_count_from_an_argument_decides_when_the_metric_succeeds() -> None:
    template = spec([{"name": "m", "count": "{{args.n}}"}], args=[{"name": "n", "value": "2"}])
    r = resolve(template)
    run = measure(run_of(r), r, m="Successful")
    assert run.phase == "Running"
    assert "1 of 2 measurement(s)" in run.metrics[0].message
    run = measure(run, r, m="Successful")
    assert run.phase == "Successful"


# -- arguments in conditions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "filled"),
    [
        ('result == "{{args.x}}"', "It worked!", 'result == "It worked!"'),
        ("result == '{{ args.x }}'", "It worked!", "result == 'It worked!'"),
        ("result < {{args.x}}", "0.5", "result < 0.5"),
        ("result < {{args.x}}", " 1e3 ", "result < 1e3"),
        # A value cannot end the string it is put in, nor start code after it.
        ('result == "{{args.x}}"', '" || true || "', 'result == "\\" || true || \\""'),
        ("result == '{{args.x}}'", "' || true || '", "result == '\\' || true || \\''"),
        ('result == "{{args.x}}"', "a\\", 'result == "a\\\\"'),
        ('result == "{{args.x}}"', "two\nlines", 'result == "two\\nlines"'),
        # A quote of the other kind inside a string is just a character.
        ('result == "it\'s {{args.x}}"', "fine", 'result == "it\'s fine"'),
    ],
)
def test_an_argument_in_a_condition_is_a_value_never_code(
    text: str, value: str, filled: str
) -> None:
    assert an.fill_condition(text, {"x": value}) == filled


@pytest.mark.parametrize(
    ("text", "values", "says"),
    [
        (
            "result < {{args.x}}",
            {"x": "1 or true"},
            "outside quotes a condition takes only a number",
        ),
        ("result < {{args.x}}", {"x": "len(result)"}, "outside quotes"),
        ('result == "{{args.x}}"', {"x": None}, "comes from a Secret"),
        ("result < {{args.y}}", {"x": "1"}, "no argument y is declared"),
    ],
)
def test_a_condition_argument_that_is_not_a_plain_value_is_refused(
    text: str, values: dict[str, str | None], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        an.fill_condition(text, values)


def test_conditions_are_filled_when_the_analysis_is_resolved_and_a_bad_value_named() -> None:
    template = spec(
        [{"name": "m", "thresholdRange": None, "successCondition": "result < {{args.max}}"}],
        args=[{"name": "max", "value": "0.05"}],
    )
    assert resolve(template).metrics[0].success_condition == "result < 0.05"
    bad = resolve(template, args=[{"name": "max", "value": "1 or true"}])
    assert bad.problem is not None
    assert bad.problem.startswith("metric m successCondition: argument max is '1 or true'")


def test_lint_checks_a_condition_with_arguments_by_its_shape() -> None:
    good = spec(
        [
            {
                "name": "m",
                "thresholdRange": None,
                "successCondition": 'result == "{{args.x}}" and result != {{ args.y }}',
            }
        ]
    )
    assert an.condition_problems(good) == []
    bad = spec(
        [{"name": "m", "thresholdRange": None, "successCondition": "result <= < {{args.x}}"}]
    )
    assert [field for field, _ in an.condition_problems(bad)] == [
        "spec.metrics[0].successCondition"
    ]


def test_lint_and_the_reconciler_refuse_a_web_json_path_the_runtime_cannot_read() -> None:
    def web(path: str) -> AnalysisTemplateSpec:
        web_metric = {
            "name": "gate",
            "thresholdRange": None,
            "successCondition": "result == true",
            "provider": {"web": {"url": "http://gate/", "jsonPath": path}},
        }
        return AnalysisTemplateSpec.model_validate({"metrics": [web_metric]})

    assert an.condition_problems(web("{$.data.ok}")) == []
    ((field, reason),) = an.condition_problems(web("{$.items[?(@.ok)]}"))
    assert field == "spec.metrics[0].provider.web.jsonPath"
    assert reason


# -- arguments read from the Rollout (valueFrom.fieldRef) ------------------------------


def _rollout_with_labels() -> Rollout:
    doc = rollout_doc("app")
    doc["metadata"]["labels"] = {"env": "prod", "app.kubernetes.io/version": "1.4"}
    doc["spec"]["template"]["metadata"]["labels"]["version"] = "7"
    return Rollout.model_validate(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "app"),
        ("metadata.labels['env']", "prod"),
        ("metadata.labels['app.kubernetes.io/version']", "1.4"),
        ("spec.template.metadata.labels.version", "7"),
        ("spec.replicas", "4"),
        ("spec.paused", "false"),
        ("metadata.labels['absent']", ""),  # as the Downward API has it
        ("metadata.annotations['absent']", ""),
        ("status.absent", None),
        ("spec.template.metadata.labels", None),  # a map, not a scalar
        ("metadata.name.deeper", None),
    ],
)
def test_a_field_path_reads_a_scalar_of_the_rollout(path: str, value: str | None) -> None:
    doc = _rollout_with_labels().model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"]["replicas"], doc["spec"]["paused"] = 4, False
    assert an.field_value(doc, path) == value


def test_a_field_ref_argument_is_filled_from_the_rollout_and_reaches_the_query() -> None:
    template = spec(
        [{"name": "m", "provider": {"prometheus": {"query": "up{env='{{args.env}}'}"}}}],
        args=[{"name": "env"}],
    )
    ref = RolloutAnalysis.model_validate(
        {
            "templates": [{"templateName": "t"}],
            "args": [
                {"name": "env", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['env']"}}}
            ],
        }
    )
    resolved = an.resolve(ref, {KEY: template}, _rollout_with_labels())
    assert resolved.problem is None
    assert [(a.name, a.value) for a in resolved.args] == [("env", "prod")]


def test_a_field_ref_to_nothing_is_a_problem_naming_the_argument_and_path() -> None:
    template = spec([{"name": "m"}], args=[{"name": "rev"}])
    ref = RolloutAnalysis.model_validate(
        {
            "templates": [{"templateName": "t"}],
            "args": [{"name": "rev", "valueFrom": {"fieldRef": {"fieldPath": "status.nothing"}}}],
        }
    )
    resolved = an.resolve(ref, {KEY: template}, _rollout_with_labels())
    assert resolved.problem == (
        "argument rev: valueFrom.fieldRef.fieldPath 'status.nothing' holds no "
        "string, number or boolean in Rollout app"
    )


def test_a_field_path_outside_the_grammar_is_refused_by_validation() -> None:
    with pytest.raises(ValidationError, match="fieldPath"):
        RolloutAnalysis.model_validate(
            {
                "templates": [{"templateName": "t"}],
                "args": [{"name": "x", "valueFrom": {"fieldRef": {"fieldPath": "a[0]; b"}}}],
            }
        )
