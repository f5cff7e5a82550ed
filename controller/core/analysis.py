"""Analysis runs: which measurements are due, how each changes the tally, what the
tally means.

A run belongs to one canary revision: ``step-<i>`` for an analysis step, ``background``
for the strategy's background analysis. Each metric is measured every ``interval``;
its measurements are judged (by :mod:`controller.core.measurement`) before they reach
:func:`record`. The rules, in the order they are checked after every measurement:

===================================================  ===================================
condition                                            metric phase
===================================================  ===================================
``failed > failureLimit``                            Failed (the rollout aborts)
``consecutiveErrors > consecutiveErrorLimit``        by ``onProviderError``: Fail →
                                                     Failed, Pass → counts as Successful,
                                                     Hold → Error (blind: blocks
                                                     promotion, never aborts; measuring
                                                     goes on and a good answer clears it)
``inconclusive > inconclusiveLimit``                 Inconclusive (the rollout waits for
                                                     a person: promote or abort)
counted measurements ``>= count``                    Successful (step runs stop here;
                                                     background runs keep measuring
                                                     until promotion), but Inconclusive
                                                     if none of them succeeded
otherwise                                            Running
===================================================  ===================================

NoData is judged by ``onNoData``: Fail counts a failed measurement, Pass a successful
one, Hold counts neither (the run waits, blind, and says so). Errors never count as
failures: a Prometheus outage alone can neither promote nor roll back a canary unless
the template asks for it.

A run's phase: Failed if any metric failed; else Error if any is held blind; else
Inconclusive if any is; else Successful if all are; else Running. A missing template
makes the run Error from the start, with the reason; once the template can be read the
run starts afresh (:func:`stale`).

A metric is *blind* (held) while it is Error under ``onProviderError: Hold``, or while
it is still Running and its latest answer was NoData under ``onNoData: Hold``.
:func:`notices` compares a run before and after a pass and names each metric that has
just gone blind (or from one blind cause to the other) or just become Inconclusive;
:mod:`controller.core.plan` turns those into one Warning event per transition, never
one per pass.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final, Literal

from controller.api.analysis import (
    AnalysisTemplateSpec,
    DryRun,
    MeasurementRetention,
    Metric,
    TemplateArg,
    arg_name,
    name_matches,
)
from controller.api.base import parse_duration
from controller.api.rollout import (
    AnalysisArg,
    AnalysisPhase,
    AnalysisRunStatus,
    CanaryStrategy,
    Measurement,
    MetricResult,
    Rollout,
    RolloutAnalysis,
    Strategy,
)
from controller.core import expr, promql, web
from controller.core.model import TemplateKey

BACKGROUND = "background"
KEEP_MEASUREMENTS = 10


def step_run_name(index: int) -> str:
    """The run name of the analysis step at ``index``."""
    return f"step-{index}"


def step_index(run_name: str) -> int:
    """The step index in a name made by :func:`step_run_name`; ValueError for a name
    that does not end in an integer."""
    return int(run_name.removeprefix("step-"))


def run_analysis(canary: CanaryStrategy, run_name: str) -> RolloutAnalysis | None:
    """The analysis the run ``run_name`` measures: the background analysis for
    :data:`BACKGROUND`, else its step's (None when the spec has no such analysis)."""
    if run_name == BACKGROUND:
        return canary.analysis
    if not run_name.startswith("step-"):
        return None  # an experiment's run: controller.core.experiment measures it
    index = step_index(run_name)
    step = canary.steps[index] if index < len(canary.steps) else None
    return step.analysis if step is not None else None


PRE_PROMOTION = "pre-promotion"
"""The run of a blue-green ``prePromotionAnalysis``."""
POST_PROMOTION = "post-promotion"
"""The run of a blue-green ``postPromotionAnalysis``."""


def strategy_run_analysis(strategy: Strategy, run_name: str) -> RolloutAnalysis | None:
    """The analysis the run ``run_name`` measures, whatever the strategy."""
    if strategy.blue_green is not None:
        if run_name == PRE_PROMOTION:
            return strategy.blue_green.pre_promotion_analysis
        if run_name == POST_PROMOTION:
            return strategy.blue_green.post_promotion_analysis
        return None
    if strategy.canary is None:
        return None
    return run_analysis(strategy.canary, run_name)


@dataclass(frozen=True)
class ResolvedAnalysis:
    """The metrics an analysis measures, with the arguments its queries need. The
    metrics' numbers (``count``, ``interval``, the limits) have their ``{{args.NAME}}``
    filled in; ``dry_run`` names the metrics that never fail the run, and ``retention``
    how many measurements of a metric the status keeps when not :data:`KEEP_MEASUREMENTS`."""

    metrics: tuple[Metric, ...]
    template_args: tuple[TemplateArg, ...]
    args: tuple[AnalysisArg, ...]
    problem: str | None = None
    dry_run: frozenset[str] = frozenset()
    retention: Mapping[str, int] = dataclass_field(default_factory=dict)

    def keep(self, metric: str) -> int:
        """How many measurements of ``metric`` the status keeps."""
        return self.retention.get(metric, KEEP_MEASUREMENTS)


#: The Metric fields that may be ``{{args.NAME}}``: (attribute, field name, is a duration).
ARG_NUMBER_FIELDS: Final = (
    ("interval", "interval", True),
    ("count", "count", False),
    ("initial_delay", "initialDelay", True),
    ("failure_limit", "failureLimit", False),
    ("inconclusive_limit", "inconclusiveLimit", False),
    ("consecutive_error_limit", "consecutiveErrorLimit", False),
)


def number(value: int | str) -> int:
    """A count or limit of a resolved metric (its argument already filled in)."""
    if isinstance(value, str):
        raise ValueError(f"argument {value} was not filled in")  # resolve() always does
    return value


def fill_numbers(metric: Metric, values: Mapping[str, str | None]) -> Metric | str:
    """``metric`` with every ``{{args.NAME}}`` of :data:`ARG_NUMBER_FIELDS` replaced by
    the argument's value (``values``: name to literal value, None for a Secret-valued
    argument), or a problem naming the metric, the field and the argument."""
    update: dict[str, int | str] = {}
    for attribute, name, duration in ARG_NUMBER_FIELDS:
        arg = arg_name(getattr(metric, attribute))
        if arg is None:
            continue
        where = f"metric {metric.name} {name} ({{{{args.{arg}}}}})"
        if arg not in values:
            return f"{where}: no argument {arg} is declared"
        raw = values[arg]
        if raw is None:
            return f"{where}: argument {arg} comes from a Secret; a number cannot"
        text = raw.strip()
        if duration:
            try:
                parse_duration(int(text) if text.isdigit() else text)
            except ValueError as exc:
                return f"{where}: {exc}"
            update[attribute] = int(text) if text.isdigit() else text
            continue
        if not text.isdigit():
            return f"{where}: {raw!r} is not a whole number"
        least = 1 if attribute == "count" else 0
        if int(text) < least:
            return f"{where}: must be at least {least}, not {text}"
        update[attribute] = int(text)
    return metric.model_copy(update=update) if update else metric


_META_KEY = re.compile(r"^metadata[.](labels|annotations)\['([^']+)'\]$")
_PATH_PART = re.compile(r"\.?([A-Za-z][A-Za-z0-9_-]*)|\['([^']+)'\]")


def field_value(doc: Mapping[str, Any], path: str) -> str | None:
    """The scalar at ``path`` (see :data:`controller.api.rollout.FIELD_PATH`) in ``doc``, as
    text (booleans as ``true``/``false``), or None when nothing scalar is there. As in the
    Downward API (and Argo), a label or annotation that is not set is the empty string."""
    meta_key = _META_KEY.match(path)
    if meta_key is not None:
        kind, key = meta_key.groups()
        return str(((doc.get("metadata") or {}).get(kind) or {}).get(key, ""))
    here: Any = doc
    at = 0
    while at < len(path):
        part = _PATH_PART.match(path, at)
        if part is None or not isinstance(here, Mapping):
            return None
        here = here.get(part.group(1) or part.group(2))
        at = part.end()
    if isinstance(here, bool):
        return "true" if here else "false"
    return str(here) if isinstance(here, str | int | float) else None


def with_field_refs(analysis: RolloutAnalysis, rollout: Rollout) -> RolloutAnalysis | str:
    """``analysis`` with each ``valueFrom.fieldRef`` argument replaced by the value the
    Rollout holds there now, or a problem naming the argument and the path."""
    refs = [a for a in analysis.args or [] if a.value_from and a.value_from.field_ref]
    if not refs:
        return analysis
    doc = rollout.model_dump(mode="json", by_alias=True, exclude_none=True)
    args: list[AnalysisArg] = []
    for arg in analysis.args or []:
        ref = arg.value_from.field_ref if arg.value_from else None
        if ref is None:
            args.append(arg)
            continue
        value = field_value(doc, ref.field_path)
        if value is None:
            return (
                f"argument {arg.name}: valueFrom.fieldRef.fieldPath {ref.field_path!r} holds "
                f"no string, number or boolean in Rollout {rollout.metadata.name}"
            )
        args.append(AnalysisArg(name=arg.name, value=value))
    return analysis.model_copy(update={"args": args})


def resolve(
    analysis: RolloutAnalysis,
    templates: Mapping[TemplateKey, AnalysisTemplateSpec | str],
    rollout: Rollout | None = None,
) -> ResolvedAnalysis:
    """Collect the metrics of every referenced template; a missing one is a problem.
    Arguments read from the Rollout's fields (``fieldRef``) need ``rollout``."""
    if rollout is not None:
        filled_in = with_field_refs(analysis, rollout)
        if isinstance(filled_in, str):
            return ResolvedAnalysis((), (), (), filled_in)
        analysis = filled_in
    elif any(a.value_from and a.value_from.field_ref for a in analysis.args or []):
        return ResolvedAnalysis((), (), (), "an argument reads a field of the Rollout")
    metrics: list[Metric] = []
    template_args: list[TemplateArg] = []
    # The Rollout's entries come last, so that its retention limit wins over a template's.
    dry_runs: list[DryRun] = []
    retained: list[MeasurementRetention] = []
    for ref in analysis.templates:
        key = TemplateKey(ref.template_name, ref.cluster_scope)
        spec = templates.get(key)
        kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
        if spec is None:
            return ResolvedAnalysis((), (), (), f"{kind} {ref.template_name} was not read")
        if isinstance(spec, str):
            return ResolvedAnalysis((), (), (), f"{kind} {ref.template_name}: {spec}")
        metrics.extend(spec.metrics)
        template_args.extend(spec.args or [])
        dry_runs.extend(spec.dry_run or [])
        retained.extend(spec.measurement_retention or [])
    dry_runs.extend(analysis.dry_run or [])
    retained.extend(analysis.measurement_retention or [])
    names = [m.name for m in metrics]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return ResolvedAnalysis((), (), (), f"metric names repeat across templates: {dupes}")
    given = {a.name for a in analysis.args or []}
    missing = sorted(
        a.name
        for a in template_args
        if a.value is None and a.value_from is None and a.name not in given
    )
    if missing:
        return ResolvedAnalysis((), (), (), f"no value for template argument(s) {missing}")
    values: dict[str, str | None] = {a.name: a.value for a in template_args}
    values |= {a.name: a.value for a in analysis.args or []}
    filled: list[Metric] = []
    for metric in metrics:
        done = fill_numbers(metric, values)
        if not isinstance(done, str):
            done = fill_conditions(done, values)
        if isinstance(done, str):
            return ResolvedAnalysis((), (), (), done)
        filled.append(done)
    return ResolvedAnalysis(
        tuple(filled),
        tuple(template_args),
        tuple(analysis.args or []),
        dry_run=frozenset(
            m.name for m in filled if any(name_matches(d.metric_name, m.name) for d in dry_runs)
        ),
        retention={
            m.name: kept.limit
            for m in filled
            for kept in retained
            if name_matches(kept.metric_name, m.name)
        },
    )


_PLACEHOLDER = re.compile(r"[{][{] *args[.]([A-Za-z_][A-Za-z0-9_-]*) *[}][}]")
_NUMBER = re.compile(r"^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$")
#: What lint puts for an argument it does not know the value of: a string inside quotes,
#: a number outside them.
SAMPLE_VALUE: Final = "0"


def fill_condition(text: str, values: Mapping[str, str | None]) -> str:
    """A condition with its ``{{args.NAME}}`` replaced by the arguments' values, or
    ValueError naming the argument. A value is text, never code: inside a quoted string it
    is escaped for that string; outside quotes it must be a number (so ``result <
    {{args.max}}`` works, and no value can add an operator, a call or a quote). A
    Secret-valued argument (value None) is refused: the condition is shown in messages."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        found = _PLACEHOLDER.match(text, i) if ch == "{" else None
        if found is not None:
            name = found.group(1)
            if name not in values:
                raise ValueError(f"no argument {name} is declared")
            value = values[name]
            if value is None:
                raise ValueError(f"argument {name} comes from a Secret; a condition cannot")
            if quote is not None:
                escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
                out.append(escaped.replace("\n", "\\n"))
            elif _NUMBER.match(value.strip()):
                out.append(value.strip())
            else:
                raise ValueError(
                    f"argument {name} is {value!r}: outside quotes a condition takes only a "
                    "number (put the placeholder in quotes to compare text)"
                )
            i = found.end()
            continue
        if quote is not None and ch == "\\" and i + 1 < len(text):
            out.append(text[i : i + 2])
            i += 2
            continue
        if ch in "'\"":
            quote = None if quote == ch else (ch if quote is None else quote)
        out.append(ch)
        i += 1
    return "".join(out)


def fill_conditions(metric: Metric, values: Mapping[str, str | None]) -> Metric | str:
    """``metric`` with the arguments filled in its conditions (:func:`fill_condition`),
    or a problem naming the metric and the field."""
    update: dict[str, str] = {}
    for attribute, name in (
        ("success_condition", "successCondition"),
        ("failure_condition", "failureCondition"),
    ):
        text = getattr(metric, attribute)
        if text is None or "{{" not in text:
            continue
        try:
            update[attribute] = fill_condition(text, values)
        except ValueError as exc:
            return f"metric {metric.name} {name}: {exc}"
    return metric.model_copy(update=update) if update else metric


def condition_problems(spec: AnalysisTemplateSpec) -> list[tuple[str, str]]:
    """(field, reason) for every success or failure condition of a template that the
    runtime's own parser (:mod:`controller.core.expr`) cannot parse, and every web
    ``jsonPath`` that :mod:`controller.core.web` cannot; ``stepwise lint`` and
    the reconciler both ask, so such a template is invalid before it measures anything."""
    out: list[tuple[str, str]] = []
    for i, metric in enumerate(spec.metrics):
        for field, text in (
            ("successCondition", metric.success_condition),
            ("failureCondition", metric.failure_condition),
        ):
            # Arguments are filled in when a run starts: check the shape with a sample.
            sample = _PLACEHOLDER.sub(SAMPLE_VALUE, text) if text is not None else None
            reason = expr.check(sample) if sample is not None else None
            if reason is not None:
                out.append((f"spec.metrics[{i}].{field}", reason))
        if metric.provider.web is not None:
            try:
                web.parse_json_path(metric.provider.web.json_path)
            except web.JsonPathError as exc:
                out.append((f"spec.metrics[{i}].provider.web.jsonPath", str(exc)))
    return out


def start(
    name: str, revision: str, resolved: ResolvedAnalysis, now: dt.datetime
) -> AnalysisRunStatus:
    """A new run; each metric's first measurement is due after its initial delay, and
    never before its query's window (:func:`own_data_from`) lies within the run."""
    if resolved.problem:
        return AnalysisRunStatus(
            name=name, revision=revision, phase="Error", started_at=now, message=resolved.problem
        )
    results = []
    for m in resolved.metrics:
        delay = parse_duration(m.initial_delay)
        window = own_data_from(m, resolved)
        first = now + dt.timedelta(seconds=max(delay, window))
        message = (
            f"first measurement at {first.isoformat(timespec='seconds')}: the query reads "
            f"{window:g}s back, and a run judges only data from after it started"
            if window > delay
            else ""
        )
        results.append(
            MetricResult(
                name=m.name,
                phase="Running",
                next_at=first,
                message=message,
                dry_run=m.name in resolved.dry_run,
            )
        )
    return AnalysisRunStatus(
        name=name, revision=revision, phase="Running", started_at=now, metrics=results
    )


def own_data_from(metric: Metric, resolved: ResolvedAnalysis) -> float:
    """Seconds after a run's start before ``metric``'s queries read only the run's own
    samples: the longest window (range plus offset) of its queries, with ``{{interval}}``
    and literal arguments filled in. 0 for a judge, whose first measurement is only its
    baseline reading."""
    if metric.provider.prometheus is None:
        return 0.0
    interval = metric.interval if isinstance(metric.interval, str) else f"{metric.interval}s"
    values = {f"args.{a.name}": a.value for a in resolved.template_args if a.value is not None}
    values |= {f"args.{a.name}": a.value for a in resolved.args if a.value is not None}
    values["interval"] = interval
    queries = [metric.provider.prometheus.query]
    if metric.min_samples is not None:
        queries.append(metric.min_samples.query)
    longest = 0.0
    for query in queries:
        filled = query
        for key, value in values.items():
            filled = filled.replace("{{" + key + "}}", value)
        try:
            longest = max(longest, promql.lookback(filled))
        except promql.TemplateError:
            continue  # an unterminated literal: the query fails on its own, later
    return longest


def stale(run: AnalysisRunStatus, resolved: ResolvedAnalysis) -> bool:
    """Whether a run that started without its templates (Error, no metrics) should start
    afresh because they can be read now."""
    return run.phase == "Error" and not run.metrics and resolved.problem is None


@dataclass(frozen=True)
class Due:
    """A measurement the runtime must take before the next plan."""

    run: str
    metric: Metric
    template_args: tuple[TemplateArg, ...]
    args: tuple[AnalysisArg, ...]


def due(
    run: AnalysisRunStatus, resolved: ResolvedAnalysis, now: dt.datetime, *, background: bool
) -> list[Due]:
    """The metrics of ``run`` whose next measurement is due at ``now`` (a background run
    keeps measuring after it succeeds, until promotion)."""
    if run.phase == "Failed" or (run.phase == "Successful" and not background):
        return []
    if resolved.problem:
        return []
    by_name = {m.name: m for m in resolved.metrics}
    out: list[Due] = []
    for result in run.metrics:
        metric = by_name.get(result.name)
        if metric is None or not _measuring(result, background=background):
            continue
        if result.next_at is None or result.next_at <= now:
            out.append(Due(run.name, metric, resolved.template_args, resolved.args))
    return out


def due_in(
    rollout: Rollout,
    templates: Mapping[TemplateKey, AnalysisTemplateSpec | str],
    now: dt.datetime,
) -> list[Due]:
    """The measurements due at ``now`` for the runs in the status of the canary revision
    (runs start in a plan; their first measurement is taken on the next pass)."""
    out: list[Due] = []
    for run in rollout.status.analysis_runs:
        if run.revision != rollout.status.canary_revision:
            continue
        analysis = strategy_run_analysis(rollout.spec.strategy, run.name)
        if analysis is None:
            continue
        resolved = resolve(analysis, templates, rollout)
        out.extend(due(run, resolved, now, background=run.name == BACKGROUND))
    return out


def _measuring(result: MetricResult, *, background: bool) -> bool:
    if result.phase == "Failed":
        return False
    return background or result.phase != "Successful"


BUSY_RECHECK = dt.timedelta(seconds=30)
"""How long a metric whose measurement is being taken may go without a pass: its result
wakes the Rollout, so this is only a safety net."""


def next_due(
    run: AnalysisRunStatus,
    *,
    background: bool,
    busy: Collection[str] = (),
    now: dt.datetime | None = None,
) -> dt.datetime | None:
    """When the run next needs a measurement (None when it needs none). A metric in
    ``busy`` is being measured already: it is due again only :data:`BUSY_RECHECK` after
    ``now`` (its result wakes the Rollout before that)."""
    if run.phase in ("Failed", "Successful") and not background:
        return None
    times = [
        r.next_at if r.name not in busy or now is None else max(r.next_at, now + BUSY_RECHECK)
        for r in run.metrics
        if r.next_at and _measuring(r, background=background)
    ]
    return min(times) if times else None


def record(
    result: MetricResult,
    metric: Metric,
    measurement: Measurement,
    now: dt.datetime,
    *,
    keep: int = KEEP_MEASUREMENTS,
) -> MetricResult:
    """Add one judged measurement to a metric's tally (the status keeps its latest
    ``keep``) and work out its phase."""
    phase = measurement.phase
    counts = {
        "successful": result.successful,
        "failed": result.failed,
        "inconclusive": result.inconclusive,
        "no_data": result.no_data,
        "error": result.error,
    }
    consecutive = 0 if phase != "Error" else result.consecutive_errors + 1
    if phase == "Successful":
        counts["successful"] += 1
    elif phase == "Failed":
        counts["failed"] += 1
    elif phase == "Inconclusive":
        counts["inconclusive"] += 1
    elif phase == "Error":
        counts["error"] += 1
    elif metric.on_no_data == "Fail":
        counts["failed"] += 1
    elif metric.on_no_data == "Pass":
        counts["successful"] += 1
    else:
        counts["no_data"] += 1
    updated = result.model_copy(
        update={
            **counts,
            "count": result.count + 1,
            "consecutive_errors": consecutive,
            "measurements": [*result.measurements, measurement][-keep:],
            "next_at": now + dt.timedelta(seconds=parse_duration(metric.interval)),
        }
    )
    new_phase, message = assess(updated, metric, measurement)
    return updated.model_copy(update={"phase": new_phase, "message": message})


def assess(result: MetricResult, metric: Metric, latest: Measurement) -> tuple[AnalysisPhase, str]:
    """The metric's phase from its tally (see the module docstring for the rules)."""
    counted = result.successful + result.failed + result.inconclusive
    count, failure_limit = number(metric.count), number(metric.failure_limit)
    error_limit = number(metric.consecutive_error_limit)
    inconclusive_limit = number(metric.inconclusive_limit)
    if result.failed > failure_limit:
        return "Failed", (
            f"{result.failed} failed measurement(s), more than failureLimit "
            f"{failure_limit}; latest: {latest.message or latest.value}"
        )
    if result.consecutive_errors > error_limit:
        reason = (
            f"{result.consecutive_errors} consecutive provider errors (limit "
            f"{error_limit}): {latest.message}"
        )
        if metric.on_provider_error == "Fail":
            return "Failed", reason + "; onProviderError is Fail"
        if metric.on_provider_error == "Hold":
            return "Error", reason + "; holding (onProviderError: Hold)"
    if result.inconclusive > inconclusive_limit:
        return "Inconclusive", (
            f"{result.inconclusive} inconclusive measurement(s), more than "
            f"inconclusiveLimit {inconclusive_limit}: promote or abort"
        )
    pass_errors = metric.on_provider_error == "Pass" and result.consecutive_errors > error_limit
    if counted >= count or (pass_errors and counted + result.error >= count):
        if result.successful == 0 and counted > 0 and not pass_errors:
            # Argo passes a metric whose failures and inconclusive results stayed within
            # their limits even when nothing succeeded; we never promote on that alone.
            return "Inconclusive", (
                f"{counted} measurement(s) taken and none successful "
                f"({result.failed} failed, {result.inconclusive} inconclusive): "
                "promote or abort"
            )
        return "Successful", f"{result.successful} of {counted} measurement(s) successful"
    if latest.phase == "NoData" and metric.on_no_data == "Hold":
        return "Running", f"no data ({result.no_data} time(s)); holding (onNoData: Hold)"
    return "Running", f"{counted} of {count} measurement(s) taken"


def run_phase(metrics: list[MetricResult]) -> AnalysisPhase:
    """A run's phase from its metrics' phases. Dry-run metrics count only in a run of
    nothing else, and then only as finished (whatever their verdict) or not."""
    judged = [m for m in metrics if not m.dry_run]
    if not judged and metrics:
        return (
            "Running" if any(m.phase in ("Pending", "Running") for m in metrics) else "Successful"
        )
    phases = [m.phase for m in judged]
    worst: tuple[AnalysisPhase, ...] = ("Failed", "Error", "Inconclusive")
    for phase in worst:
        if phase in phases:
            return phase
    if phases and all(p == "Successful" for p in phases):
        return "Successful"
    return "Running"


def apply_measurements(
    run: AnalysisRunStatus,
    resolved: ResolvedAnalysis,
    measurements: Mapping[tuple[str, str], Measurement],
    now: dt.datetime,
) -> AnalysisRunStatus:
    """Record this pass's measurements into a run and recompute its phase and message."""
    if resolved.problem or run.phase == "Failed":
        return run
    by_name = {m.name: m for m in resolved.metrics}
    metrics = []
    changed = False
    for result in run.metrics:
        m = measurements.get((run.name, result.name))
        metric = by_name.get(result.name)
        if m is not None and metric is not None:
            metrics.append(record(result, metric, m, now, keep=resolved.keep(result.name)))
            changed = True
        else:
            metrics.append(result)
    if not changed:
        return run
    phase = run_phase(metrics)
    worst = next((m for m in metrics if m.phase == phase and not m.dry_run), None)
    message = f"{worst.name}: {worst.message}" if worst and phase != "Successful" else ""
    if not message:
        message = dry_run_summary(metrics)
    return run.model_copy(update={"metrics": metrics, "phase": phase, "message": message})


def dry_run_summary(metrics: list[MetricResult]) -> str:
    """What the dry-run metrics that did not succeed said ("" when none)."""
    bad = [m for m in metrics if m.dry_run and m.phase in ("Failed", "Error", "Inconclusive")]
    return "; ".join(f"dry run (not counted): {m.name} {m.phase}: {m.message}" for m in bad)


def background_succeeded(run: AnalysisRunStatus) -> bool:
    """Whether a background run has judged the canary good so far: every metric has at
    least its ``count`` of measurements and none failed, is blind or inconclusive
    (dry-run metrics aside)."""
    return run.phase in ("Running", "Successful") and all(
        m.phase == "Successful" for m in run.metrics if not m.dry_run
    )


Blindness = Literal["NoData", "Error"]


def blindness(result: MetricResult, metric: Metric) -> Blindness | None:
    """Why a metric is held blind (see the module docstring), or None when it is not (a
    dry-run metric never holds anything)."""
    if result.dry_run:
        return None
    if result.phase == "Error" and metric.on_provider_error == "Hold":
        return "Error"
    latest = result.measurements[-1] if result.measurements else None
    if (
        result.phase == "Running"
        and latest is not None
        and latest.phase == "NoData"
        and metric.on_no_data == "Hold"
    ):
        return "NoData"
    return None


@dataclass(frozen=True)
class Notice:
    """A metric that changed into a state a person should hear about."""

    reason: Literal["AnalysisHeld", "AnalysisInconclusive"]
    metric: str
    message: str


def notices(
    before: AnalysisRunStatus, after: AnalysisRunStatus, resolved: ResolvedAnalysis
) -> list[Notice]:
    """The metrics of a run that went blind or became Inconclusive between ``before``
    and ``after`` (the same run, one pass apart); a metric already in that state in
    ``before`` is not named again."""
    by_name = {m.name: m for m in resolved.metrics}
    old = {r.name: r for r in before.metrics}
    out: list[Notice] = []
    for result in after.metrics:
        metric = by_name.get(result.name)
        if metric is None:
            continue
        previous = old.get(result.name)
        was = blindness(previous, metric) if previous is not None else None
        now = blindness(result, metric)
        if now is not None and now != was:
            out.append(Notice("AnalysisHeld", result.name, _blind_message(result, now)))
        if result.phase == "Inconclusive" and (previous is None or previous.phase != result.phase):
            out.append(Notice("AnalysisInconclusive", result.name, result.message))
    return out


def _blind_message(result: MetricResult, why: Blindness) -> str:
    if why == "Error":
        # "N consecutive provider errors (limit L): <provider message>; holding (...)"
        return f"blind, holding: {result.message}"
    latest = result.measurements[-1]
    detail = f": {latest.message}" if latest.message else ""
    return f"blind, holding: no data{detail} (onNoData: Hold)"
