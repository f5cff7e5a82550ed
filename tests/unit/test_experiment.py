"""The ``experiment`` canary step, decided purely: names, arguments, and the life of an
experiment (Pending, Running, its end, and the clean-ups) in a simulated world."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import intents as intents_mod
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import (
    ExperimentStep,
    Measurement,
    Rollout,
    Step,
)
from controller.cli import rollouts
from controller.core import experiment as ex
from controller.core.finalize import finalize_actions
from controller.core.model import (
    DeleteExperimentSet,
    ExperimentSetState,
    Observed,
    Plan,
    ScaleExperimentSet,
    SetWeight,
    TemplateKey,
    TrafficState,
)
from tests.support.manifests import rollout as rollout_doc
from tests.support.plan import ROUTED, annotate, at, canary_of, m, make, new_image, stable_world
from tests.support.world import World, settle, step

BASELINE_VS_CANARY: dict[str, Any] = {
    "templates": [
        {"name": "baseline", "specRef": "stable"},
        {"name": "canary", "specRef": "canary"},
    ]
}
ERRORS = {"name": "errors", "templateName": "errors"}


def experiment(**extra: Any) -> dict[str, Any]:
    """An experiment step: a baseline of stable and a copy of the canary, plus ``extra``."""
    return {"experiment": {**BASELINE_VS_CANARY, **extra}}


# -- a world that also runs experiment ReplicaSets -------------------------------------


@dataclass
class ExpWorld(World):
    """The simulated world, with the experiment ReplicaSets the runtime would create."""

    experiment_sets: dict[str, ExperimentSetState] = field(default_factory=dict)
    created: list[ScaleExperimentSet] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def observed(self, measurements: dict[tuple[str, str], Measurement] | None = None) -> Observed:
        """The world as the runtime would observe it, experiment sets included."""
        return dataclasses.replace(
            super().observed(measurements), experiment_sets=tuple(self.experiment_sets.values())
        )

    def apply(self, result: Plan, now: dt.datetime) -> None:
        """The plan's actions, experiment ones included."""
        super().apply(result, now)
        for action in result.actions:
            if isinstance(action, ScaleExperimentSet):
                if action.name not in self.experiment_sets:
                    self.created.append(action)
                old = self.experiment_sets.get(action.name)
                self.experiment_sets[action.name] = ExperimentSetState(
                    action.name,
                    action.template,
                    action.pod_hash,
                    action.replicas,
                    min(old.ready, action.replicas) if old else 0,
                    action.service,
                )
            elif isinstance(action, DeleteExperimentSet):
                self.deleted.append(action.name)
                self.experiment_sets.pop(action.name, None)

    def ready_all(self) -> None:
        """Every pod becomes Ready, the experiment's too."""
        super().ready_all()
        for name, s in self.experiment_sets.items():
            self.experiment_sets[name] = dataclasses.replace(s, ready=s.replicas)


def started(
    steps: list[dict[str, Any]], *, when: dt.datetime | None = None, **canary: Any
) -> tuple[Rollout, ExpWorld]:
    """A stable Rollout with ``steps`` and its new revision, settled (at ``when``, by
    default ``at(0)``) where it waits."""
    ro, plain = stable_world(make(steps, **canary))
    world = ExpWorld(replica_sets=plain.replica_sets, services=plain.services)
    world.templates[TemplateKey("errors")] = plain.templates[TemplateKey("errors")]
    ro = new_image(ro)
    ro, _ = settle(ro, world, when or at(0))
    return ro, world


def reasons(result: Plan) -> list[str]:
    """The reasons of a plan's events."""
    return [e.reason for e in result.events]


# -- names and arguments ---------------------------------------------------------------


def test_pod_hash_is_never_a_rollout_revision_and_differs_per_template_step_and_canary() -> None:
    """Each template of each step and canary gets its own pod hash, never the revision it
    copies (so the stable Service, pinned to the stable revision, never selects it)."""
    hashes = {
        ex.pod_hash(canary, step, template, source)
        for canary, source in (("c1", "s1"), ("c2", "s1"))
        for step in (0, 3)
        for template in ("baseline", "canary")
    }
    assert len(hashes) == 8
    assert not hashes & {"c1", "c2", "s1"}
    assert ex.pod_hash("c1", 0, "baseline", "s1") == ex.pod_hash("c1", 0, "baseline", "s1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("{{templates.baseline.podTemplateHash}}", "B", id="pod-hash"),
        pytest.param("{{ templates.canary.podTemplateHash }}", "C", id="spaces"),
        pytest.param("{{templates.canary.replicaset.name}}", "app-canary-C", id="rs-name"),
        pytest.param(
            'revision="{{templates.baseline.podTemplateHash}}"', 'revision="B"', id="in-text"
        ),
        pytest.param("{{args.other}}", "{{args.other}}", id="other-placeholders-kept"),
    ],
)
def test_template_placeholders_are_filled_in(value: str, expected: str) -> None:
    """``{{templates.<name>.podTemplateHash}}`` and ``.replicaset.name`` become the values
    of the experiment's ReplicaSets; other placeholders are left for the template."""
    spec = ExperimentStep.model_validate(BASELINE_VS_CANARY)
    sets = {
        "baseline": ex.Wanted(spec.templates[0], "s", "B", "app-baseline-B", None),
        "canary": ex.Wanted(spec.templates[1], "c", "C", "app-canary-C", None),
    }
    assert ex.fill_templates(value, sets) == expected


def test_analysis_args_fill_templates_and_pod_template_hash_values() -> None:
    """An experiment analysis gets literal args: the experiment's hashes, the stable and
    latest revisions for ``podTemplateHashValue``, and the step's dryRun."""
    spec = ExperimentStep.model_validate(
        {
            **BASELINE_VS_CANARY,
            "dryRun": [{"metricName": "errors"}],
            "analyses": [
                {
                    **ERRORS,
                    "args": [
                        {"name": "b", "value": "{{templates.baseline.podTemplateHash}}"},
                        {"name": "s", "valueFrom": {"podTemplateHashValue": "Stable"}},
                        {"name": "l", "valueFrom": {"podTemplateHashValue": "Latest"}},
                    ],
                }
            ],
        }
    )
    sets = ex.wanted_sets("app", 2, spec, "canaryrev", "stablerev")
    assert spec.analyses is not None
    analysis = ex.analysis_for(spec, spec.analyses[0], sets, stable="stablerev", canary="canaryrev")
    assert not isinstance(analysis, str)
    values = {a.name: a.value for a in analysis.args or []}
    assert values == {
        "b": ex.pod_hash("canaryrev", 2, "baseline", "stablerev"),
        "s": "stablerev",
        "l": "canaryrev",
    }
    assert [d.metric_name for d in analysis.dry_run or []] == ["errors"]


def test_an_argument_naming_a_missing_template_is_a_problem_naming_it() -> None:
    """A placeholder naming a template the experiment lacks is refused with its name."""
    spec = ExperimentStep.model_validate(
        {
            **BASELINE_VS_CANARY,
            "analyses": [
                {**ERRORS, "args": [{"name": "x", "value": "{{templates.nope.podTemplateHash}}"}]}
            ],
        }
    )
    assert spec.analyses is not None
    sets = ex.wanted_sets("app", 0, spec, "c", "s")
    problem = ex.analysis_for(spec, spec.analyses[0], sets, stable="s", canary="c")
    assert isinstance(problem, str)
    assert "argument x" in problem
    assert "template nope" in problem


# -- the API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        pytest.param(
            {"templates": [{"name": "c", "specRef": "latest"}]}, "specRef", id="bad-spec-ref"
        ),
        pytest.param({"templates": []}, "templates", id="no-templates"),
        pytest.param(
            {**BASELINE_VS_CANARY, "analyses": [{"name": "a"}]},
            "exactly one of templateName, templates",
            id="analysis-without-template",
        ),
        pytest.param(
            {"templates": [{"name": "c", "specRef": "canary"}, {"name": "c", "specRef": "stable"}]},
            "template names must be unique",
            id="duplicate-templates",
        ),
        pytest.param(
            {
                "templates": [
                    {
                        "name": "c",
                        "specRef": "canary",
                        "metadata": {"labels": {"stepwise.dev/revision": "x"}},
                    }
                ]
            },
            "must not set stepwise.dev/revision",
            id="revision-label",
        ),
    ],
)
def test_invalid_experiments_are_refused_naming_the_problem(
    doc: dict[str, Any], needle: str
) -> None:
    """An experiment step the controller cannot run is refused with a reason."""
    with pytest.raises(ValidationError, match=needle):
        ExperimentStep.model_validate(doc)


def test_a_step_with_experiment_and_another_action_is_refused() -> None:
    """A step takes exactly one action, experiment included."""
    with pytest.raises(ValidationError, match=r"exactly one of .*experiment"):
        Step.model_validate({**experiment(), "setWeight": 10})
    assert Step.model_validate(experiment()).kind == "experiment"


# -- the life of an experiment ---------------------------------------------------------


def test_experiment_creates_baseline_and_canary_sets_and_waits_for_them() -> None:
    """On reaching the step, one ReplicaSet per template is created from the stable or the
    canary template, labelled apart from the Rollout's, and the step waits for them."""
    ro, world = stable_world(make([experiment(duration="1m")]))
    stable = ro.status.stable_revision
    assert stable is not None
    xw = ExpWorld(replica_sets=world.replica_sets, services=world.services)
    ro = new_image(ro)
    canary = canary_of(ro)
    ro, result = step(ro, xw, at(0))
    scales = [a for a in result.actions if isinstance(a, ScaleExperimentSet)]
    assert [(a.template, a.spec_ref, a.source, a.replicas) for a in scales] == [
        ("baseline", "stable", stable, 1),
        ("canary", "canary", canary, 1),
    ]
    assert {a.pod_hash for a in scales}.isdisjoint({stable, canary})
    assert "ExperimentStarted" in reasons(result)
    assert ro.status.experiment is not None
    assert ro.status.experiment.phase == "Pending"
    assert ro.status.wait_reason == "PodsNotReady"
    assert ro.status.current_step_index == 0


def test_experiment_runs_for_its_duration_then_ends_and_its_sets_go() -> None:
    """Once Ready the experiment runs for ``duration``; then the step completes and the
    experiment's ReplicaSets are deleted."""
    ro, world = started([experiment(duration="1m"), {"pause": {}}])
    exp = ro.status.experiment
    assert exp is not None
    assert exp.phase == "Running"
    assert exp.running_since == at(0)
    assert ro.status.wait_reason == "ExperimentRunning"
    assert len(world.experiment_sets) == 2
    ro, result = step(ro, world, at(59))
    assert ro.status.current_step_index == 0
    assert not any(isinstance(a, DeleteExperimentSet) for a in result.actions)
    assert result.requeue_after == pytest.approx(1.0)
    ro, result = step(ro, world, at(60))
    assert "ExperimentCompleted" in reasons(result)
    assert ro.status.current_step_index == 1
    assert ro.status.experiment is not None
    assert ro.status.experiment.phase == "Successful"
    assert sorted(a.name for a in result.actions if isinstance(a, DeleteExperimentSet)) == sorted(
        t.replica_set for t in exp.templates
    )
    assert world.experiment_sets == {}


def test_duration_counts_from_when_every_set_is_ready() -> None:
    """Time spent waiting for pods does not count toward the duration."""
    ro, plain = stable_world(make([experiment(duration="30s"), {"pause": {}}]))
    world = ExpWorld(replica_sets=plain.replica_sets, services=plain.services)
    ro = new_image(ro)
    ro, _ = step(ro, world, at(0))
    ro, _ = step(ro, world, at(100))  # pods still not Ready
    assert ro.status.experiment is not None
    assert ro.status.experiment.phase == "Pending"
    world.ready_all()
    ro, _ = step(ro, world, at(200))
    assert ro.status.experiment is not None
    assert ro.status.experiment.running_since == at(200)
    ro, _ = step(ro, world, at(229))
    assert ro.status.current_step_index == 0
    ro, _ = step(ro, world, at(230))
    assert ro.status.current_step_index == 1


def test_a_failed_analysis_aborts_and_removes_the_experiment() -> None:
    """A failing experiment analysis aborts the rollout like a failed analysis step: the
    experiment is Failed, its ReplicaSets go and nothing is promoted."""
    ro, world = started([experiment(duration="10m", analyses=[ERRORS])])
    stable = ro.status.stable_revision
    assert [r.name for r in ro.status.analysis_runs] == [ex.run_name(0, "errors")]
    ro, result = step(ro, world, at(1), {(ex.run_name(0, "errors"), "errors"): m("Failed")})
    assert ro.status.abort is not None
    assert ro.status.abort.reason == "AnalysisFailed"
    assert "analysis errors of the experiment of step 0" in ro.status.abort.message
    assert ro.status.experiment is not None
    assert ro.status.experiment.phase == "Failed"
    assert any(isinstance(a, DeleteExperimentSet) for a in result.actions)
    assert world.experiment_sets == {}
    ro, _ = settle(ro, world, at(100))
    assert ro.status.stable_revision == stable
    assert world.experiment_sets == {}


def test_required_analysis_ends_an_experiment_without_duration() -> None:
    """Without a duration, the experiment ends when its required analyses succeed."""
    required = {**ERRORS, "requiredForCompletion": True}
    ro, world = started([experiment(analyses=[required]), {"pause": {}}])
    run = ex.run_name(0, "errors")
    ro, _ = step(ro, world, at(1), {(run, "errors"): m("Successful")})
    assert ro.status.current_step_index == 0
    assert ro.status.wait_reason == "AnalysisRunning"
    ro, result = step(ro, world, at(12), {(run, "errors"): m("Successful")})
    assert ro.status.current_step_index == 1
    assert "ExperimentCompleted" in reasons(result)


def test_required_analysis_keeps_the_experiment_past_its_duration() -> None:
    """A required analysis still running holds the step after the duration has passed."""
    required = {**ERRORS, "requiredForCompletion": True}
    ro, world = started([experiment(duration="5s", analyses=[required]), {"pause": {}}])
    ro, _ = step(ro, world, at(6))
    assert ro.status.current_step_index == 0
    assert ro.status.experiment is not None
    assert "waits for analysis errors" in ro.status.experiment.message


def test_without_duration_or_required_analysis_it_waits_for_promote() -> None:
    """An experiment with no end of its own waits for ``stepwise promote`` at its step."""
    ro, world = started([experiment(), {"pause": {}}])
    assert ro.status.wait_reason == "AwaitingPromotion"
    canary = ro.status.canary_revision
    assert canary is not None
    ro = annotate(ro, **{intents_mod.PROMOTE: intents_mod.promote_value(canary, 0)})
    ro, result = step(ro, world, at(5))
    assert "ExperimentPromoted" in reasons(result)
    assert ro.status.current_step_index == 1
    assert world.experiment_sets == {}


@pytest.mark.parametrize(
    "end",
    [
        pytest.param("abort", id="abort"),
        pytest.param("promote-full", id="promote-full"),
        pytest.param("new-revision", id="new-revision"),
        pytest.param("back-to-stable", id="back-to-stable"),
    ],
)
def test_whatever_ends_the_canary_removes_the_experiment(end: str) -> None:
    """An abort, promote-full, a newer revision or the stable template again terminates
    the experiment and deletes its ReplicaSets."""
    ro, world = started([experiment(duration="1h"), {"pause": {}}])
    canary = ro.status.canary_revision
    assert canary is not None
    old = set(world.experiment_sets)
    assert len(old) == 2
    if end == "abort":
        ro = annotate(ro, **{intents_mod.ABORT: canary})
    elif end == "promote-full":
        ro = annotate(ro, **{intents_mod.PROMOTE_FULL: canary})
    elif end == "new-revision":
        ro = new_image(ro, "registry.local/app:v3")
    else:
        ro = new_image(ro, "registry.local/app:v1")
    ro, result = step(ro, world, at(10))
    assert old.isdisjoint(world.experiment_sets)
    assert set(world.deleted) >= old
    if end == "new-revision":
        assert ro.status.experiment is not None
        assert ro.status.experiment.revision == ro.status.canary_revision
        assert len(world.experiment_sets) == 2  # the new canary's own experiment
    else:
        assert "ExperimentTerminated" in reasons(result)
        assert ro.status.experiment is not None
        assert ro.status.experiment.phase == "Terminated"
        assert world.experiment_sets == {}


def test_a_restarted_controller_continues_the_same_experiment() -> None:
    """Planned again from the persisted status and the same world, nothing is created
    again and the experiment keeps its start (level-triggered)."""
    ro, world = started([experiment(duration="1m", analyses=[ERRORS]), {"pause": {}}])
    before = ro.status.experiment
    created = list(world.created)
    again, result = step(ro, world, at(30))
    assert again.status.experiment == before
    assert world.created == created
    assert "ExperimentStarted" not in reasons(result)
    assert not [
        a for a in result.actions if isinstance(a, ScaleExperimentSet | DeleteExperimentSet)
    ]


def test_measurements_are_due_only_while_the_experiment_runs() -> None:
    """The experiment's analyses are measured while it runs, not after it ended."""
    ro, world = started([experiment(duration="1m", analyses=[ERRORS]), {"pause": {}}])
    templates: dict[TemplateKey, AnalysisTemplateSpec | str] = dict(world.templates)
    due = ex.due_in(ro, templates, at(1))
    assert [(d.run, d.metric.name) for d in due] == [(ex.run_name(0, "errors"), "errors")]
    ro, _ = step(ro, world, at(60))
    assert ro.status.current_step_index == 1
    assert ex.due_in(ro, templates, at(70)) == []


def test_the_baseline_argument_is_the_baseline_pods_revision_label() -> None:
    """``{{templates.baseline.podTemplateHash}}`` is exactly the revision label of the
    baseline ReplicaSet's pods, so a judge query can select them."""
    analysis = {
        **ERRORS,
        "args": [{"name": "baseline-hash", "value": "{{templates.baseline.podTemplateHash}}"}],
    }
    ro, world = started([experiment(duration="1m", analyses=[analysis])])
    baseline = next(a for a in world.created if a.template == "baseline")
    canary = ro.spec.strategy.canary
    assert canary is not None
    spec = canary.steps[0].experiment
    assert spec is not None
    assert spec.analyses is not None
    sets = ex.wanted_sets("app", 0, spec, ro.status.canary_revision or "", baseline.source)
    filled = ex.analysis_for(
        spec, spec.analyses[0], sets, stable=baseline.source, canary=ro.status.canary_revision or ""
    )
    assert not isinstance(filled, str)
    assert [a.value for a in filled.args or []] == [baseline.pod_hash]


def test_stepwise_status_shows_the_running_experiment() -> None:
    """``stepwise status`` prints the experiment's step, phase and ReplicaSets, and says
    that an experiment without an end of its own awaits ``stepwise promote``."""
    ro, _ = started([experiment(), {"pause": {}}])
    doc = ro.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["metadata"]["namespace"] = "shop"
    exp = ro.status.experiment
    assert exp is not None
    lines = rollouts.describe(doc, [])
    sets = ", ".join(f"{t.name}={t.replica_set}" for t in exp.templates)
    assert f"  experiment step 0: Running {sets}" in lines
    assert rollouts.awaiting_approval(doc) == "stepwise promote app -n shop"


# -- weighted templates (traffic to the experiment's Services) ------------------------

WEIGHTED: dict[str, Any] = {
    "duration": "1m",
    "templates": [
        {"name": "baseline", "specRef": "stable", "weight": 5},
        {"name": "canary", "specRef": "canary", "weight": 10, "service": {"name": "exp-canary"}},
    ],
}
#: The steps of the weighted tests: 20% to the canary, then the experiment, then a pause.
WEIGHTED_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"experiment": WEIGHTED},
    {"pause": {}},
]


def routed_started(
    steps: list[dict[str, Any]] | None = None,
) -> tuple[Rollout, ExpWorld, dict[str, str]]:
    """A routed (Gateway API) Rollout settled in the Running experiment of
    :data:`WEIGHTED_STEPS`, its world, and the experiment's Service by template."""
    ro, plain = stable_world(make(steps or WEIGHTED_STEPS, routed=True), routed=True)
    world = ExpWorld(routed=True, replica_sets=plain.replica_sets, services=plain.services)
    world.templates[TemplateKey("errors")] = plain.templates[TemplateKey("errors")]
    ro, _ = settle(new_image(ro), world, at(0))
    services = {s.template: s.service or "" for s in world.experiment_sets.values()}
    return ro, world, services


def set_weights(result: Plan) -> list[SetWeight]:
    """The plan's weight actions."""
    return [a for a in result.actions if isinstance(a, SetWeight)]


def test_a_weighted_template_gets_a_service_named_after_its_replica_set() -> None:
    """A template with a weight and no ``service`` still gets a Service (the router needs
    one); it is named after the template's ReplicaSet, an explicit name wins."""
    spec = ExperimentStep.model_validate(WEIGHTED)
    sets = {w.template.name: w for w in ex.wanted_sets("app", 1, spec, "c", "s")}
    assert sets["baseline"].service == sets["baseline"].name
    assert sets["canary"].service == "exp-canary"
    unweighted = ExperimentStep.model_validate(BASELINE_VS_CANARY)
    assert [w.service for w in ex.wanted_sets("app", 0, unweighted, "c", "s")] == [None, None]


def test_routed_services_are_the_weighted_templates_services() -> None:
    """A router reports the weights of the weighted templates' Services only."""
    ro, _, services = routed_started()
    assert ex.routed_services(ro) == frozenset(services.values())
    plain, _ = stable_world(make([experiment(duration="1m")], routed=True), routed=True)
    assert ex.routed_services(new_image(plain)) == frozenset()


def test_while_the_experiment_runs_its_services_take_their_weight_from_the_stable() -> None:
    """Once every pod is Ready the router sends each weighted template its percentage,
    taken from the stable's share; the canary keeps its step's weight."""
    ro, world, services = routed_started()
    assert ro.status.experiment is not None
    assert ro.status.experiment.phase == "Running"
    assert world.weight == 20
    assert world.extra == {services["baseline"]: 5, services["canary"]: 10}
    assert ro.status.canary_weight == 20
    # Level-triggered: nothing more to write while it runs.
    ro, result = step(ro, world, at(30))
    assert set_weights(result) == []


def test_no_weight_while_the_experiment_pods_are_not_ready() -> None:
    """While Pending (pods not Ready) the experiment's Services get no traffic."""
    ro, plain = stable_world(make(WEIGHTED_STEPS, routed=True), routed=True)
    world = ExpWorld(routed=True, replica_sets=plain.replica_sets, services=plain.services)
    ro = new_image(ro)
    for second in range(5):
        ro, _ = step(ro, world, at(second))
        for rs in world.replica_sets.values():  # the Rollout's own pods, not the experiment's
            rs.ready = rs.replicas
        world.catch_up()
    assert ro.status.experiment is not None
    assert ro.status.experiment.phase == "Pending"
    assert world.weight == 20
    assert world.extra == {}


def test_when_the_experiment_ends_its_weights_leave_the_router_before_its_sets_go() -> None:
    """At the end the weights go back to 0 (the Services leave the split, the stable gets
    the traffic back) in one pass, and the ReplicaSets and Services are deleted only in a
    later pass, once the router no longer routes to them and has applied that."""
    ro, world, services = routed_started()
    ro, result = step(ro, world, at(60))
    assert "ExperimentCompleted" in reasons(result)
    assert set_weights(result) == [SetWeight(20, tuple(sorted((s, 0) for s in services.values())))]
    assert not any(isinstance(a, DeleteExperimentSet) for a in result.actions)
    assert world.extra == {}
    assert world.weight == 20
    assert len(world.experiment_sets) == 2
    # The data plane has not taken in the route yet: the Services are kept.
    ro, result = step(ro, world, at(60))
    assert not any(isinstance(a, DeleteExperimentSet) for a in result.actions)
    assert result.requeue_after is not None
    world.catch_up()
    ro, result = step(ro, world, at(61))
    assert sorted(a.service or "" for a in result.actions if isinstance(a, DeleteExperimentSet))
    assert world.experiment_sets == {}
    first_delete = next(i for i, e in enumerate(world.log) if "DeleteExperimentSet" in e)
    last_weight = max(i for i, e in enumerate(world.log) if "SetWeight" in e)
    assert last_weight < first_delete


def test_an_abort_sends_everything_to_stable_then_removes_the_experiment() -> None:
    """An abort puts the canary and the experiment Services at 0 at once; the experiment's
    sets are deleted after the router holds that."""
    ro, world, services = routed_started()
    canary = ro.status.canary_revision
    assert canary is not None
    ro = annotate(ro, **{intents_mod.ABORT: canary})
    ro, result = step(ro, world, at(10))
    assert set_weights(result) == [SetWeight(0, tuple(sorted((s, 0) for s in services.values())))]
    assert not any(isinstance(a, DeleteExperimentSet) for a in result.actions)
    assert (world.weight, world.extra) == (0, {})
    world.catch_up()
    ro, result = step(ro, world, at(11))
    assert {a.service for a in result.actions if isinstance(a, DeleteExperimentSet)} == set(
        services.values()
    )
    assert ro.status.experiment is not None
    assert ro.status.experiment.phase == "Terminated"


def test_weights_that_leave_the_stable_less_than_nothing_are_not_routed() -> None:
    """A canary weight plus experiment weights above 100 blocks the Rollout, naming both,
    and routes nothing to the experiment."""
    steps = [{"setWeight": 90}, {"experiment": WEIGHTED}, {"pause": {}}]
    ro, plain = stable_world(make(steps, routed=True), routed=True)
    world = ExpWorld(routed=True, replica_sets=plain.replica_sets, services=plain.services)
    ro = new_image(ro)
    for second in range(6):
        ro, _ = step(ro, world, at(second))
        world.ready_all()
        world.catch_up()
    assert world.extra == {}
    assert ro.status.phase == "Degraded"
    assert "(15%)" in ro.status.message
    assert "(90%)" in ro.status.message


def test_an_unweighted_experiment_never_touches_the_experiment_weights() -> None:
    """Without a weighted template every weight action is the canary's alone."""
    ro, plain = stable_world(
        make([{"setWeight": 20}, experiment(duration="1m"), {"pause": {}}], routed=True),
        routed=True,
    )
    world = ExpWorld(routed=True, replica_sets=plain.replica_sets, services=plain.services)
    ro, _ = settle(new_image(ro), world, at(0))
    ro, _ = settle(ro, world, at(60))
    assert ro.status.current_step_index == 2
    assert world.extra == {}
    assert all("extra=()" in e for e in world.log if "SetWeight" in e)


@pytest.mark.parametrize(
    ("routing", "accepted"),
    [
        pytest.param(ROUTED, True, id="gatewayAPI"),
        pytest.param(
            {**ROUTED, "trafficRouting": {"smi": {}}},
            True,
            id="smi",
        ),
        pytest.param(
            {**ROUTED, "trafficRouting": {"istio": {"virtualService": {"name": "app"}}}},
            True,
            id="istio",
        ),
        pytest.param(
            {**ROUTED, "trafficRouting": {"nginx": {"stableIngress": "app"}}},
            False,
            id="nginx",
        ),
        pytest.param({}, False, id="no-router"),
    ],
)
def test_template_weight_needs_a_router_that_splits_to_experiment_services(
    routing: dict[str, Any], accepted: bool
) -> None:
    """``weight`` is accepted with Gateway API, Istio and SMI, refused naming the field
    with NGINX (two destinations only) and without a router."""
    doc = rollout_doc("app", steps=[{"experiment": WEIGHTED}], **routing)
    if accepted:
        Rollout.model_validate(doc)
        return
    with pytest.raises(ValidationError, match=r"experiment\.templates\[\]\.weight needs"):
        Rollout.model_validate(doc)


def test_deleting_the_rollout_takes_the_experiment_services_out_of_the_router() -> None:
    """The finalizer's weight write also takes every experiment Service out of the split
    (they go with the Rollout); without experiment weights it is the canary's alone."""
    routed = TrafficState(20, extra_weights=(("exp-a", 5), ("exp-b", 10)))
    assert finalize_actions(routed) == (SetWeight(0, (("exp-a", 0), ("exp-b", 0))),)
    only_experiments = TrafficState(0, extra_weights=(("exp-a", 5),))
    assert finalize_actions(only_experiments) == (SetWeight(0, (("exp-a", 0),)),)
    assert finalize_actions(TrafficState(20)) == (SetWeight(0),)
