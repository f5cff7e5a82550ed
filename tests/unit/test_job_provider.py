"""The ``job`` provider: Job names, arguments in a Job spec, what a Job's status means,
which Jobs are still wanted and which are cleaned up (:mod:`controller.core.jobs`); the
taker over a fake API (:mod:`controller.runtime.measure_job`); and the measuring pool's
treatment of Job measurements (deadline, no breaker, stop)."""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from controller.adapters.kube import ROLLOUT_LABEL as KUBE_ROLLOUT_LABEL
from controller.api.analysis import JobProvider, Metric
from controller.api.rollout import (
    AbortStatus,
    AnalysisPhase,
    AnalysisRunStatus,
    MetricResult,
    Rollout,
    RolloutStatus,
)
from controller.core import analysis as an
from controller.core import jobs
from controller.core.measurement import Outcome
from controller.errors import ForbiddenError, InvalidError, NotFoundError
from controller.runtime.measure import Variables
from controller.runtime.measure_job import JobTaker
from controller.runtime.measuring import MeasuringPool, current_stop, stop_on
from tests.support.clock import FakeClock
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STARTED = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def ref(**changes: Any) -> jobs.JobRef:
    """Measurement 1 of metric smoke in run step-0 of revision abc of Rollout web."""
    base: dict[str, Any] = {
        "namespace": "shop",
        "rollout": "web",
        "run": "step-0",
        "revision": "abc",
        "run_started": STARTED,
        "metric": "smoke",
        "index": 1,
    }
    return jobs.JobRef(**{**base, **changes})


def job_spec() -> dict[str, Any]:
    """A JobSpec with arguments in its strings."""
    return {
        "backoffLimit": 0,
        "template": {
            "metadata": {"annotations": {"stepwise.dev/exit-code": "0"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "smoke",
                        "image": "curl:{{ args.tag }}",
                        "args": ["--fail", "http://{{args.host}}/healthz?r={{rollout}}"],
                        "env": [{"name": "REVISION", "value": "{{canaryRevision}}"}],
                    }
                ],
            },
        },
    }


VALUES = {
    "namespace": "shop",
    "rollout": "web",
    "canaryRevision": "abc",
    "args.host": "web-canary",
    "args.tag": "8.8.0",
}


# -- names ------------------------------------------------------------------------------


def test_the_same_measurement_always_gets_the_same_name() -> None:
    """The name is readable, ends in a hash, and is the same for equal measurements."""
    name = ref().name
    assert name == ref().name
    assert name.startswith("web-abc-step-0-smoke-1-")
    assert re.fullmatch(r"web-abc-step-0-smoke-1-[0-9a-f]{8}", name)


@pytest.mark.parametrize(
    "change",
    [
        {"index": 2},
        {"metric": "load"},
        {"run": "step-2"},
        {"revision": "def"},
        {"run_started": STARTED + dt.timedelta(seconds=1)},
        {"namespace": "other"},
    ],
    ids=["next-index", "other-metric", "other-run", "other-revision", "retried-run", "namespace"],
)
def test_another_measurement_gets_another_name(change: dict[str, Any]) -> None:
    """Each part of the measurement (a retried run's start included) changes the name."""
    assert ref(**change).name != ref().name


def test_the_run_start_counts_in_whole_seconds() -> None:
    """Microseconds of the run's start (lost when a status is written and read back)
    never change the name: a restarted controller finds the same Job."""
    assert ref(run_started=STARTED.replace(microsecond=0)).name == ref().name


def test_a_long_name_is_cut_to_63_characters_and_keeps_its_hash() -> None:
    """A long Rollout name is cut, without a trailing dash, and two measurements that
    differ only past the cut still differ."""
    long = ref(rollout="a" * 60 + "-b", metric="m" * 63)
    assert len(long.name) <= 63
    assert LABEL.match(long.name)
    assert long.name != ref(rollout="a" * 60 + "-b", metric="m" * 63, index=2).name


@given(
    rollout=st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,80}[a-z0-9])?", fullmatch=True),
    metric=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
    index=st.integers(min_value=0, max_value=10**6),
)
def test_every_name_is_a_valid_label_value(rollout: str, metric: str, index: int) -> None:
    """Whatever the Rollout and metric names, the Job's name fits a label value (the
    Job controller labels its pods with it)."""
    name = ref(rollout=rollout, metric=metric, index=index).name
    assert len(name) <= 63
    assert LABEL.match(name), name


def test_the_rollout_label_is_the_replicasets_label() -> None:
    """Jobs carry the same stepwise.dev/rollout label as the Rollout's ReplicaSets."""
    assert jobs.ROLLOUT_LABEL == KUBE_ROLLOUT_LABEL


# -- arguments --------------------------------------------------------------------------


def test_arguments_are_filled_in_strings_only() -> None:
    """Placeholders are filled in every string, at any depth; numbers, booleans and keys
    are left as they are; ``{{ args.x }}`` with spaces works."""
    filled = jobs.fill(job_spec(), VALUES)
    container = filled["template"]["spec"]["containers"][0]
    assert container["image"] == "curl:8.8.0"
    assert container["args"] == ["--fail", "http://web-canary/healthz?r=web"]
    assert container["env"] == [{"name": "REVISION", "value": "abc"}]
    assert filled["backoffLimit"] == 0


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize(
    "attack",
    [
        '", "securityContext": {"privileged": true}, "x": "',
        "x\n  hostNetwork: true\nspec:\n  template: {}",
        "{{args.tag}}",
        ']}, {"name": "evil", "image": "evil"}]',
        "${IFS}; rm -rf / #",
    ],
    ids=["json-break", "yaml-break", "placeholder-in-value", "list-break", "shell"],
)
def test_an_argument_never_changes_the_structure(attack: str) -> None:
    """A hostile argument value stays the text of the one string it was put in: the
    filled spec has the same keys, lists and types as the template, and the value
    appears exactly as given (a placeholder in it is not filled in again)."""
    values = {**VALUES, "args.host": attack}
    filled = jobs.fill(job_spec(), values)
    assert _shape(filled) == _shape(job_spec())
    assert filled["template"]["spec"]["containers"][0]["args"][1] == (
        f"http://{attack}/healthz?r=web"
    )
    assert "privileged" not in str(_shape(filled))


def test_an_unknown_argument_is_an_error_naming_the_field() -> None:
    """``{{args.NAME}}`` with no such argument names the field's path."""
    spec = job_spec()
    spec["template"]["spec"]["containers"][0]["args"][0] = "{{args.missing}}"
    with pytest.raises(jobs.JobTemplateError) as err:
        jobs.fill(spec, VALUES)
    assert str(err.value) == ("spec.template.spec.containers[0].args[0]: no argument 'missing'")


def test_other_double_braces_are_left_as_written() -> None:
    """A script's own ``{{...}}`` (a Go template for kubectl, say) is not an argument."""
    text = "kubectl get pods -o go-template='{{range .items}}{{.metadata.name}}{{end}}' {{ foo }}"
    assert jobs.fill(text, VALUES) == text


def test_a_secret_valued_argument_is_refused() -> None:
    """A Secret's value is never written into a Job: the error names the field and says
    to read the Secret in the pod; the value itself is not in the message."""
    values = {**VALUES, "args.token": "s3cr3t"}
    secret = jobs.secret_names(values, ("s3cr3t",))
    assert secret == {"args.token"}
    spec = job_spec()
    spec["template"]["spec"]["containers"][0]["env"][0]["value"] = "{{args.token}}"
    with pytest.raises(jobs.JobTemplateError) as err:
        jobs.fill(spec, values, secret)
    assert "spec.template.spec.containers[0].env[0].value" in str(err.value)
    assert "secretKeyRef" in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_an_empty_secret_value_marks_nothing() -> None:
    """An empty Secret value hides nothing, so empty plain values are not refused."""
    assert jobs.secret_names({"stableService": "", "args.a": "x"}, ("",)) == frozenset()


def provider(**spec: Any) -> JobProvider:
    """A JobProvider of :func:`job_spec` with ``spec`` changes."""
    return JobProvider.model_validate(
        {
            "metadata": {"labels": {"team": "{{args.host}}", jobs.METRIC_LABEL: "mine"}},
            "spec": {**job_spec(), **spec},
        }
    )


def test_the_job_is_labelled_annotated_and_owned_by_the_rollout() -> None:
    """Stepwise's labels (over the template's own), the revision, run start and index as
    annotations, a controller owner reference to the Rollout, backoffLimit as given and
    ttlSecondsAfterFinished defaulted."""
    body = jobs.build_job(ref(), provider(), VALUES, owner_uid="uid-1")
    meta = body["metadata"]
    assert meta["name"] == ref().name
    assert meta["namespace"] == "shop"
    assert meta["labels"] == {
        "team": "web-canary",
        "stepwise.dev/rollout": "web",
        "stepwise.dev/analysis-run": "step-0",
        "stepwise.dev/metric": "smoke",
    }
    assert meta["annotations"] == {
        "stepwise.dev/revision": "abc",
        "stepwise.dev/run-started": "2026-01-01T12:00:00Z",
        "stepwise.dev/measurement": "1",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "stepwise.dev/v1alpha1",
            "kind": "Rollout",
            "name": "web",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert body["spec"]["backoffLimit"] == 0
    assert body["spec"]["ttlSecondsAfterFinished"] == jobs.DEFAULT_TTL
    assert jobs.ref_of(body) is not None
    assert jobs.made_for(body, ref())
    assert not jobs.made_for(body, ref(index=2))


def test_a_ttl_given_is_kept() -> None:
    """The template's ttlSecondsAfterFinished wins over the default."""
    body = jobs.build_job(ref(), provider(ttlSecondsAfterFinished=60), VALUES, owner_uid="u")
    assert body["spec"]["ttlSecondsAfterFinished"] == 60


@pytest.mark.parametrize(
    ("spec", "limit"),
    [
        ({}, jobs.DEFAULT_WAIT),
        ({"activeDeadlineSeconds": 120}, 180.0),
        ({"activeDeadlineSeconds": 3600}, 3660.0),
        ({"activeDeadlineSeconds": "{{args.d}}"}, jobs.DEFAULT_WAIT),
        ({"activeDeadlineSeconds": True}, jobs.DEFAULT_WAIT),
    ],
    ids=["default", "short-deadline", "long-deadline", "not-a-number", "boolean"],
)
def test_the_wait_limit_follows_active_deadline_seconds(spec: dict[str, Any], limit: float) -> None:
    """The Job's own deadline plus a margin, or ten minutes."""
    assert jobs.wait_limit(spec) == limit


# -- the measurement's index, from the status -------------------------------------------


def status(
    *,
    count: int = 1,
    run_phase: AnalysisPhase = "Running",
    metric_phase: AnalysisPhase = "Running",
    run: str = "step-0",
    started: dt.datetime = STARTED,
    canary: str = "abc",
    aborted: bool = False,
) -> RolloutStatus:
    """A status whose run ``run`` of revision abc has taken ``count`` smoke measurements."""
    runs = [
        AnalysisRunStatus(
            name=run,
            revision="abc",
            phase=run_phase,
            started_at=started,
            metrics=[MetricResult(name="smoke", phase=metric_phase, count=count)],
        )
    ]
    abort = (
        AbortStatus(reason="AnalysisFailed", message="m", revision="abc", time=T0)
        if aborted
        else None
    )
    return RolloutStatus(canary_revision=canary, analysis_runs=runs, abort=abort)


def rollout_with(st_: RolloutStatus) -> Rollout:
    """Rollout web in namespace shop with a uid and this status."""
    doc = rollout_doc("web")
    doc["metadata"] |= {"namespace": "shop", "uid": "uid-1"}
    ro = Rollout.model_validate(doc)
    return ro.model_copy(update={"status": st_})


def test_the_index_is_the_count_of_measurements_taken() -> None:
    """The second measurement of a metric is index 1."""
    found = jobs.ref_for(rollout_with(status(count=1)), "step-0", "smoke")
    assert found == ref()


def test_a_run_not_in_the_status_has_no_job() -> None:
    """A due item whose run is not the canary's says so."""
    found = jobs.ref_for(rollout_with(status(canary="zzz")), "step-0", "smoke")
    assert found == "analysis run step-0 of the canary is not in the Rollout's status"


# -- what a Job's status means ----------------------------------------------------------


def job(*conditions: tuple[str, str, str], name: str = "web-abc-step-0-smoke-1") -> dict[str, Any]:
    """A Job with conditions (type, reason, message), all True."""
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": "job-uid"},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions
            ]
        },
    }


def pod(
    name: str,
    *,
    phase: str = "Failed",
    code: int | None = 1,
    reason: str = "Error",
    message: str = "",
    owner: str = "job-uid",
    finished: str = "2026-01-01T12:00:05Z",
    init: bool = False,
    status_reason: str = "",
) -> dict[str, Any]:
    """A pod of the Job whose container ended with ``code``."""
    containers = []
    if code is not None:
        terminated = {"exitCode": code, "reason": reason, "finishedAt": finished}
        if message:
            terminated["message"] = message
        containers = [{"name": "smoke", "state": {"terminated": terminated}}]
    status_: dict[str, Any] = {"phase": phase}
    status_["initContainerStatuses" if init else "containerStatuses"] = containers
    if status_reason:
        status_ |= {"reason": status_reason, "message": "The node was low on resource: memory."}
    return {
        "metadata": {"name": name, "ownerReferences": [{"uid": owner}]},
        "status": status_,
    }


FAILED = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


@pytest.mark.parametrize(
    ("the_job", "pods", "problem", "expected"),
    [
        (job(), [], None, None),
        (job(("Suspended", "JobSuspended", "")), [], None, None),
        (job(("SuccessCriteriaMet", "", "")), [], None, None),
        (
            job(("SuccessCriteriaMet", "", ""), ("Complete", "", "")),
            [],
            None,
            ("Successful", "job web-abc-step-0-smoke-1 completed"),
        ),
        (
            job(FAILED),
            [pod("web-abc-step-0-smoke-1-x7k2p", message="GET /healthz: 503")],
            None,
            (
                "Failed",
                "job web-abc-step-0-smoke-1 failed: BackoffLimitExceeded: pod "
                "web-abc-step-0-smoke-1-x7k2p: container smoke: exit code 1: GET /healthz: 503",
            ),
        ),
        (
            job(FAILED),
            [
                pod("old", finished="2026-01-01T12:00:01Z", code=2),
                pod("new", finished="2026-01-01T12:00:09Z", code=3, reason="OOMKilled"),
                pod("ok", phase="Succeeded", code=None),
                pod("other-jobs", owner="another", finished="2026-01-01T13:00:00Z"),
            ],
            None,
            (
                "Failed",
                "job web-abc-step-0-smoke-1 failed: BackoffLimitExceeded: pod new: container "
                "smoke: exit code 3 (OOMKilled)",
            ),
        ),
        (
            job(FAILED),
            [pod("p", init=True, code=127, message="exec: not found")],
            None,
            (
                "Failed",
                "job web-abc-step-0-smoke-1 failed: BackoffLimitExceeded: pod p: container "
                "smoke: exit code 127: exec: not found",
            ),
        ),
        (
            job(FAILED),
            [pod("p", code=None, status_reason="Evicted")],
            None,
            (
                "Failed",
                "job web-abc-step-0-smoke-1 failed: BackoffLimitExceeded: pod p: Evicted: "
                "The node was low on resource: memory.",
            ),
        ),
        (
            job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")),
            [],
            None,
            (
                "Failed",
                "job web-abc-step-0-smoke-1 failed: DeadlineExceeded: Job was active longer "
                "than specified deadline",
            ),
        ),
        (
            job(FAILED),
            [],
            "pods is forbidden",
            (
                "Failed",
                "job web-abc-step-0-smoke-1 failed: BackoffLimitExceeded: Job has reached the "
                "specified backoff limit (its pods could not be read: pods is forbidden)",
            ),
        ),
    ],
    ids=[
        "running",
        "suspended",
        "success-criteria-only",
        "complete",
        "failed-pod",
        "newest-failed-pod-of-this-job",
        "init-container",
        "evicted",
        "deadline",
        "pods-unreadable",
    ],
)
def test_a_jobs_status_is_its_outcome(
    the_job: dict[str, Any],
    pods: list[dict[str, Any]],
    problem: str | None,
    expected: tuple[str, str] | None,
) -> None:
    """Complete is Successful; Failed is Failed, naming the Job, its reason and the
    failed pod's exit code and message; neither is no outcome yet."""
    got = jobs.outcome(the_job, pods, problem)
    assert (None if got is None else (got.phase, got.message)) == expected


def test_a_long_termination_message_keeps_its_end() -> None:
    """A log tail (FallbackToLogsOnError) is cut from the front: the end says what went
    wrong; newlines become spaces."""
    text = "\n".join(f"line {i}" for i in range(200)) + "\nFATAL: connection refused"
    got = jobs.outcome(job(FAILED), [pod("p", message=text)])
    assert got is not None
    assert got.message.endswith("line 199 FATAL: connection refused")
    assert "\n" not in got.message
    assert len(got.message) < 450


# -- wanted or not, and the clean-up ----------------------------------------------------


@pytest.mark.parametrize(
    ("st_", "why"),
    [
        (status(), None),
        (status(count=0), None),
        (status(count=2), "measurement 1 of smoke is recorded"),
        (status(aborted=True), "the canary abc was aborted"),
        (status(canary="def"), "revision abc is no longer the canary"),
        (status(started=STARTED + dt.timedelta(minutes=1)), "analysis run step-0 has ended"),
        (status(run="step-2"), "analysis run step-0 has ended"),
        (status(run_phase="Failed"), "analysis run step-0 is Failed"),
        (status(run_phase="Successful"), "analysis run step-0 is Successful"),
        (status(metric_phase="Failed"), "metric smoke has failed"),
    ],
    ids=[
        "awaited",
        "persisted-count-behind",
        "recorded",
        "aborted",
        "superseded",
        "run-restarted",
        "run-gone",
        "run-failed",
        "step-run-succeeded",
        "metric-failed",
    ],
)
def test_a_measurement_is_wanted_until_recorded_or_abandoned(
    st_: RolloutStatus, why: str | None
) -> None:
    """The reasons a Job's verdict will never be recorded, from the persisted status (a
    count behind the index is a tally not yet written: still awaited)."""
    assert jobs.unwanted(st_, ref()) == why


def test_a_background_run_that_succeeded_still_measures() -> None:
    """The background run keeps measuring after it succeeds, so its Job is awaited."""
    st_ = status(run="background", run_phase="Successful")
    assert jobs.unwanted(st_, ref(run="background")) is None


def stored(r: jobs.JobRef, verdict: str | None, created: str, **meta: Any) -> dict[str, Any]:
    """The Job of measurement ``r`` as the API returns it."""
    body = jobs.build_job(r, provider(), VALUES, owner_uid="uid-1")
    body["metadata"] |= {"uid": f"uid-{r.index}-{r.metric}", "creationTimestamp": created, **meta}
    if verdict is not None:
        body["status"] = {"conditions": [{"type": verdict, "status": "True", "reason": "R"}]}
    return body


def test_cleanup_deletes_what_nobody_will_read_and_keeps_the_newest_failure() -> None:
    """Completed and recorded: deleted. Running for an ended run: deleted. Failed and
    recorded: the newest per metric kept, older ones deleted. Awaited: kept, and the
    clean-up must look again. Foreign or already-deleting Jobs: untouched."""
    st_ = status(count=4, run_phase="Running")
    foreign = {"metadata": {"name": "someone-elses", "labels": {jobs.ROLLOUT_LABEL: "web"}}}
    found = [
        stored(ref(index=0), "Complete", "2026-01-01T12:00:01Z"),
        stored(ref(index=1), "Failed", "2026-01-01T12:00:02Z"),
        stored(ref(index=2), "Failed", "2026-01-01T12:00:03Z"),
        stored(ref(index=3), None, "2026-01-01T12:00:04Z", deletionTimestamp="x"),
        stored(ref(index=4), None, "2026-01-01T12:00:05Z"),
        stored(ref(run="step-9", index=0), None, "2026-01-01T11:00:00Z"),
        foreign,
    ]
    decided = jobs.cleanup(st_, found)
    assert {(d.name, d.reason) for d in decided.delete} == {
        (ref(index=0).name, "completed; measurement 0 of smoke is recorded"),
        (ref(index=1).name, "failed; a newer failed Job is kept"),
        (ref(run="step-9", index=0).name, "running, but analysis run step-9 has ended"),
    }
    assert decided.pending
    by_name = {d.name: d.uid for d in decided.delete}
    assert by_name[ref(index=0).name] == "uid-0-smoke"


def test_cleanup_with_every_verdict_recorded_is_done() -> None:
    """Nothing pending once every Job's verdict is in the status."""
    st_ = status(count=1, run_phase="Successful", metric_phase="Successful")
    decided = jobs.cleanup(st_, [stored(ref(index=0), "Complete", "2026-01-01T12:00:01Z")])
    assert [d.name for d in decided.delete] == [ref(index=0).name]
    assert not decided.pending


# -- the taker over a fake API ----------------------------------------------------------


class FakeJobs:
    """The JobsApi in memory: Jobs by name, a script of states for each, Rollouts."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.creates: list[str] = []
        self.deletes: list[tuple[str, str | None]] = []
        self.finish: dict[str, tuple[str, str]] = {}
        """Job name -> (condition type, reason) set on the next read."""
        self.pods_of: dict[str, list[dict[str, Any]]] = {}
        self.rollouts: dict[str, dict[str, Any]] = {}
        self.create_error: Exception | None = None
        self.lock = threading.Lock()

    def create(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        if self.create_error is not None:
            raise self.create_error
        name = body["metadata"]["name"]
        with self.lock:
            if name in self.jobs:
                return copy.deepcopy(self.jobs[name]), False
            stored_ = copy.deepcopy(dict(body))
            stored_["metadata"] |= {
                "uid": f"uid-{len(self.creates)}",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            }
            self.jobs[name] = stored_
            self.creates.append(name)
            return copy.deepcopy(stored_), True

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            if name not in self.jobs:
                raise NotFoundError(f"jobs.batch {name!r} not found")
            if name in self.finish:
                kind, reason = self.finish[name]
                self.jobs[name]["status"] = {
                    "conditions": [{"type": kind, "status": "True", "reason": reason}]
                }
            return copy.deepcopy(self.jobs[name])

    def list_jobs(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(j) for j in self.jobs.values()]

    def delete(self, namespace: str, name: str, uid: str | None = None) -> bool:
        with self.lock:
            self.deletes.append((name, uid))
            return self.jobs.pop(name, None) is not None

    def pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return self.pods_of.get(job_name, [])

    def rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.rollouts.get(name)


def job_metric(**spec: Any) -> Metric:
    """A job metric named smoke."""
    return Metric.model_validate(
        {"name": "smoke", "provider": {"job": {"spec": {**job_spec(), **spec}}}}
    )


def variables() -> Variables:
    """The variables of the measurement (no Secrets)."""
    return Variables(dict(VALUES), ())


@pytest.fixture
def taker() -> tuple[JobTaker, FakeJobs, FakeClock]:
    """A taker polling a fake API every 10 ms, re-reading the Rollout every 50 ms."""
    api, clock = FakeJobs(), FakeClock(wall=T0)
    return (
        JobTaker(
            api, clock=clock, poll=0.01, max_poll=0.02, recheck=0.0, sweep_delays=(0.01, 0.05)
        ),
        api,
        clock,
    )


def take(t: JobTaker, st_: RolloutStatus | None = None, metric: Metric | None = None) -> Outcome:
    """One measurement of smoke in run step-0 (status: one measurement taken)."""
    ro = rollout_with(st_ or status())
    return t(ro, an.Due("step-0", metric or job_metric(), (), ()), variables())


def persisted(api: FakeJobs, st_: RolloutStatus) -> None:
    """The API server now has Rollout web with this status."""
    api.rollouts["web"] = {"status": st_.model_dump(mode="json", by_alias=True)}


def test_a_completed_job_is_a_successful_measurement(taker: Any) -> None:
    """The Job is created once, read until Complete, and is then Successful; once the
    verdict is recorded, the clean-up deletes it."""
    t, api, _ = taker
    persisted(api, status())
    name = ref().name
    api.finish[name] = ("Complete", "")
    got = take(t)
    assert (got.phase, got.message) == ("Successful", f"job {name} completed")
    assert api.creates == [name]
    persisted(api, status(count=2))
    t.clock.advance(1)  # the clean-up's delays are on the taker's clock
    wait_for("the recorded Job deleted", lambda: (name, "uid-0") in api.deletes, 5)


def test_an_existing_job_is_attached_to_not_created_again(taker: Any) -> None:
    """A controller restarted mid-measurement finds the Job by its name (409) and waits
    for it: one Job, and the log says it attached."""
    t, api, _ = taker
    persisted(api, status())
    name = ref().name
    api.jobs[name] = jobs.build_job(ref(), provider(), VALUES, owner_uid="uid-1")
    api.jobs[name]["metadata"] |= {"uid": "first", "creationTimestamp": "2026-01-01T00:00:00Z"}
    api.finish[name] = ("Failed", "BackoffLimitExceeded")
    api.pods_of[name] = [pod("p1", owner="first", message="boom")]
    with structlog.testing.capture_logs() as logs:
        got = take(t)
    assert api.creates == []
    assert got.phase == "Failed"
    assert (
        got.message
        == f"job {name} failed: BackoffLimitExceeded: pod p1: container smoke: exit code 1: boom"
    )
    assert any(e["event"] == "job attached" and e["uid"] == "first" for e in logs)


def test_a_foreign_job_of_that_name_is_not_taken_over(taker: Any) -> None:
    """A Job of that name that this measurement did not create is an Error, untouched."""
    t, api, _ = taker
    name = ref().name
    api.jobs[name] = {"metadata": {"name": name, "uid": "x"}}
    got = take(t)
    assert got.phase == "Error"
    assert "was not created for this measurement" in got.message
    assert api.deletes == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            InvalidError(
                'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value'
            ),
            'the API server refused job {name}: Job.batch "x" is invalid: '
            "spec.template.spec.containers[0].image: Required value",
        ),
        (
            ForbiddenError('jobs.batch is forbidden: User "sa" cannot create resource "jobs"'),
            "cannot create job {name}: the controller needs create and get on jobs (batch) "
            'in namespace shop: jobs.batch is forbidden: User "sa" cannot create resource "jobs"',
        ),
    ],
    ids=["invalid", "forbidden"],
)
def test_a_job_that_cannot_be_created_is_an_error(
    taker: Any, error: Exception, expected: str
) -> None:
    """A refused create is an Error naming the metric, the Job and the server's reason
    (the field it names, or the permission)."""
    t, api, _ = taker
    api.create_error = error
    got = take(t)
    assert (got.phase, got.message) == ("Error", "smoke: " + expected.format(name=ref().name))


def test_a_secret_in_the_job_spec_is_an_error_before_any_call(taker: Any) -> None:
    """A Secret-valued argument in the spec: Error, and no Job is created."""
    t, api, _ = taker
    metric = job_metric(
        template={"spec": {"containers": [{"name": "c", "image": "{{args.token}}"}]}}
    )
    ro = rollout_with(status())
    got = t(
        ro,
        an.Due("step-0", metric, (), ()),
        Variables({**VALUES, "args.token": "s3cr3t"}, ("s3cr3t",)),
    )
    assert got.phase == "Error"
    assert "comes from a Secret" in got.message
    assert "s3cr3t" not in got.message
    assert api.creates == []


def test_an_aborted_runs_job_is_deleted(taker: Any) -> None:
    """While the Job runs, the Rollout's persisted status says the canary was aborted:
    the Job is deleted (with its uid) and the measurement ends."""
    t, api, _ = taker
    persisted(api, status(aborted=True))
    got = take(t)
    assert got.phase == "Error"
    assert got.message == f"smoke: job {ref().name} deleted: the canary abc was aborted"
    assert (ref().name, "uid-0") in api.deletes


def test_a_job_past_its_limit_is_deleted_and_an_error(taker: Any) -> None:
    """A Job with no verdict after its limit (activeDeadlineSeconds plus the margin,
    from its creation) is deleted; the Error says how to allow more time."""
    t, api, clock = taker
    persisted(api, status())
    clock.advance(12 * 3600)  # far past the fake Job's creation at T0 + 0
    got = take(t, metric=job_metric(activeDeadlineSeconds=30))
    assert got.phase == "Error"
    assert "did not finish within 90s of its creation (deleted)" in got.message
    assert "activeDeadlineSeconds" in got.message
    assert [n for n, _ in api.deletes] == [ref().name]


def test_a_job_deleted_by_someone_else_is_an_error(taker: Any) -> None:
    """The Job vanished while it ran: an Error saying so."""
    t, api, _ = taker
    persisted(api, status())
    api.create = _create_then_vanish(api)
    got = take(t)
    assert got.message == f"smoke: job {ref().name} was deleted before it finished"


def _create_then_vanish(api: FakeJobs) -> Any:
    original = api.create

    def create(namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        job_, created = original(namespace, body)
        api.jobs.clear()
        return job_, created

    return create


def test_a_stop_ends_the_wait_and_leaves_the_job(taker: Any) -> None:
    """The pool's stop (the controller is stopping) ends the wait at once; the Job is
    left for the next controller to attach to."""
    t, api, _ = taker
    persisted(api, status())
    stop = threading.Event()
    result: list[Outcome] = []

    def run() -> None:
        with stop_on(stop):
            result.append(take(t))

    thread = threading.Thread(target=run)
    thread.start()
    wait_for("the Job created", lambda: api.creates, 5)
    stop.set()
    thread.join(5)
    assert result
    assert result[0].message == f"smoke: stopped waiting for job {ref().name}"
    assert ref().name in api.jobs
    assert all(n != ref().name for n, _ in api.deletes)


# -- the measuring pool and Job measurements ---------------------------------------------


class Gated:
    """A taker that blocks until released or stopped, recording the stop it saw."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.stops: list[threading.Event] = []
        self.calls = 0

    def take(self, rollout: Rollout, item: an.Due) -> Outcome:
        self.calls += 1
        stop = current_stop()
        self.stops.append(stop)
        while not self.release.is_set() and not stop.is_set():
            time.sleep(0.01)
        return Outcome("Error", None, "gave up", "timeout")


def pool_rollout() -> Rollout:
    """A Rollout with one running run, background, for revision c1."""
    ro = Rollout.model_validate(rollout_doc("app"))
    runs = [AnalysisRunStatus(name="background", revision="c1", phase="Running", started_at=T0)]
    return ro.model_copy(
        update={
            "status": ro.status.model_copy(update={"canary_revision": "c1", "analysis_runs": runs})
        }
    )


def test_a_job_measurement_has_the_jobs_own_deadline_and_no_breaker() -> None:
    """The pool waits for a Job as long as its limit plus a margin (not the 30 s of a
    query), and timeouts of Jobs never open a breaker."""
    taker_, clock = Gated(), FakeClock()
    pool = MeasuringPool(taker_, lambda _k: None, deadline=30, breaker_after=1, clock=clock)
    try:
        m = job_metric(activeDeadlineSeconds=300)
        assert pool.deadline_of(m) == 300 + jobs.WAIT_MARGIN + 60
        assert pool.deadline_of(job_metric()) == jobs.DEFAULT_WAIT + 60
        due = [an.Due("background", m, (), ())]
        pool.measure(pool_rollout(), due, T0)
        wait_for("taken", lambda: taker_.calls == 1, 5)
        clock.advance(31)
        time.sleep(0.7)  # the deadline watchdog looks every 0.5 s
        assert pool.in_flight("default/app") == 1  # not given up at 30 s
        taker_.release.set()
        wait_for("answered", lambda: pool.in_flight("default/app") == 0, 5)
        assert pool.measure(pool_rollout(), due, T0)[("background", "smoke")].phase == "Error"
        taker_.release.clear()
        assert pool.measure(pool_rollout(), due, T0) == {}  # asked again: no breaker
        wait_for("taken again", lambda: taker_.calls == 2, 5)
        clock.advance(300 + jobs.WAIT_MARGIN + 61)
        wait_for("given up", lambda: pool.in_flight("default/app") == 0, 5)
        assert taker_.stops[1].is_set()  # the giving up asked the Job's wait to stop
        got = pool.measure(pool_rollout(), due, T0)[("background", "smoke")]
        assert "gave no answer within 420s" in got.message
        assert pool.measure(pool_rollout(), due, T0) == {}  # still no breaker
    finally:
        taker_.release.set()
        pool.close()


def test_closing_the_pool_stops_a_running_job_wait() -> None:
    """close() sets the stop that a Job measurement waits on, so a stopping controller
    does not wait for its Jobs (and leaves them for the next one)."""
    taker_ = Gated()
    pool = MeasuringPool(taker_, lambda _k: None)
    pool.measure(pool_rollout(), [an.Due("background", job_metric(), (), ())], T0)
    wait_for("taken", lambda: taker_.calls == 1, 5)
    pool.close()
    assert taker_.stops[0].is_set()


def test_outside_the_pool_nothing_asks_to_stop() -> None:
    """current_stop() off a pool worker is an event that is never set."""
    assert not current_stop().is_set()
