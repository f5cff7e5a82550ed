"""``spec.workloadRef`` (:mod:`controller.core.workload`): the API rules, resolving a
Deployment's pod template into the Rollout, and how far ``scaleDown`` scales the
Deployment."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.api.rollout import Rollout, RolloutSpec, ScaleDown
from controller.api.validation import validate_document
from controller.core.hashing import template_hash
from controller.core.workload import (
    REPLICAS_BEFORE_ANNOTATION,
    SCALE_DOWN_ANNOTATION,
    Deployment,
    Resolved,
    ScaleDeployment,
    pod_template,
    resolve,
    scale_deployment,
)
from tests.support.manifests import pod_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argo-workload-ref"
REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def spec(**fields: Any) -> dict[str, Any]:
    """A workloadRef Rollout spec (no template, no selector) with ``fields`` over it."""
    base: dict[str, Any] = {
        "replicas": 3,
        "workloadRef": dict(REF),
        "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
    }
    return {**base, **fields}


def rollout(**fields: Any) -> Rollout:
    """A parsed workloadRef Rollout ``shop/app``."""
    return Rollout.model_validate(
        {"metadata": {"name": "app", "namespace": "shop"}, "spec": spec(**fields)}
    )


def deployment(
    *, replicas: int = 3, image: str = "registry.local/app:v1", **annotations: str
) -> Deployment:
    """The Deployment ``shop/web`` as the API server returns it (metadata fields a
    Rollout's template has no use for included)."""
    return Deployment(
        name="web",
        namespace="shop",
        replicas=replicas,
        template={
            "metadata": {"labels": {"app": "web"}, "creationTimestamp": None, "name": "x"},
            "spec": {**pod_spec(image), "restartPolicy": "Always"},
        },
        selector={"matchLabels": {"app": "web"}},
        annotations=annotations,
    )


# -- the API rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        pytest.param({"template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()},
                      "selector": {"matchLabels": {"app": "web"}}}, "template", id="both"),
        pytest.param({"workloadRef": None}, "template", id="neither"),
        pytest.param({"selector": {}}, "selector", id="empty-selector"),
        pytest.param({"workloadRef": {**REF, "scaleDown": "always"}}, "workloadRef.scaleDown",
                     id="unknown-scaleDown"),
        pytest.param({"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment"}},
                     "workloadRef.name", id="no-name"),
    ],
)  # fmt: skip
def test_invalid_workload_refs_name_the_field(fields: dict[str, Any], where: str) -> None:
    """Exactly one of template and workloadRef; a given selector is not empty; scaleDown
    is never, onsuccess or progressively; the name is required."""
    doc = {k: v for k, v in spec(**fields).items() if v is not None}
    with pytest.raises(ValidationError) as err:
        RolloutSpec.model_validate(doc)
    assert where in str(err.value), str(err.value)


def test_a_template_still_needs_a_selector() -> None:
    """Without workloadRef the selector stays required (there is nothing to take it from)."""
    doc = {k: v for k, v in spec().items() if k != "workloadRef"}
    doc["template"] = {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()}
    with pytest.raises(ValidationError, match="selector is required with template"):
        RolloutSpec.model_validate(doc)


def test_scale_down_defaults_to_never_as_in_argo() -> None:
    """An omitted scaleDown leaves the Deployment alone."""
    ref = rollout().spec.workload_ref
    assert ref is not None
    assert ref.scale_down == "never"


def argo_documents(path: Path) -> list[dict[str, Any]]:
    """The file's documents, its Rollouts moved to Stepwise's API version (the one change
    a user migrating from Argo Rollouts makes)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "Rollout":
            doc["apiVersion"] = "stepwise.dev/v1alpha1"
    return docs


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_lint_accepts_argos_workload_ref_manifests(path: Path) -> None:
    """Argo Rollouts' own workloadRef manifests, with only the apiVersion changed, lint
    clean (their Rollouts have no template and, but for one, no selector)."""
    rollouts = [d for d in argo_documents(path) if d["kind"] == "Rollout"]
    assert rollouts
    for doc in rollouts:
        assert validate_document(doc) == []


# -- resolving the Deployment's template ---------------------------------------------------


def resolved(ro: Rollout, dep: Deployment | None) -> Resolved:
    """``resolve``, which must succeed."""
    out = resolve(ro, dep)
    assert isinstance(out, Resolved), out
    return out


def test_the_deployments_template_and_selector_become_the_rollouts() -> None:
    """The pod spec is taken as the API server holds it; of the template's metadata only
    labels and annotations; the selector is the Deployment's; workloadRef is dropped."""
    out = resolved(rollout(), deployment())
    assert out.template == {
        "metadata": {"labels": {"app": "web"}},
        "spec": {**pod_spec(), "restartPolicy": "Always"},
    }
    assert out.selector == {"matchLabels": {"app": "web"}}
    spec_ = out.rollout.spec
    assert spec_.workload_ref is None
    assert spec_.pod_template.wire() == out.template
    assert spec_.pod_selector.wire() == out.selector
    assert spec_.replicas == 3
    assert out.rollout.metadata.name == "app"


def test_the_rollouts_own_selector_is_kept() -> None:
    """A Rollout that has a selector keeps it (Argo Rollouts takes the Deployment's only
    when the Rollout has none)."""
    dep = deployment()
    dep = Deployment(
        **{**dep.__dict__, "template": {**dep.template, "metadata": {"labels": {"app": "web",
                                                                              "tier": "api"}}}}
    )  # fmt: skip
    out = resolved(rollout(selector={"matchLabels": {"tier": "api"}}), dep)
    assert out.selector == {"matchLabels": {"tier": "api"}}


def test_a_change_to_the_deployments_template_is_a_new_revision() -> None:
    """The revision is the hash of the resolved template: a new image, a new revision;
    the same Deployment read twice, the same revision."""
    ro = rollout()
    v1 = resolved(ro, deployment()).rollout.spec.pod_template
    again = resolved(ro, deployment()).rollout.spec.pod_template
    v2 = resolved(ro, deployment(image="registry.local/app:v2")).rollout.spec.pod_template
    assert template_hash(v1) == template_hash(again)
    assert template_hash(v1) != template_hash(v2)


def test_a_missing_deployment_names_spec_workload_ref_name() -> None:
    """No such Deployment: one problem naming the field, the Deployment and the namespace."""
    assert resolve(rollout(), None) == [
        'spec.workloadRef.name: Deployment "web" not found in namespace shop; the Rollout '
        "takes no action until it exists"
    ]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("apps/v1", "ReplicaSet"), ("v1", "PodTemplate"), ("apps/v1", "StatefulSet"),
     ("extensions/v1beta1", "Deployment")],
)  # fmt: skip
def test_another_kind_is_a_problem_naming_the_field(api_version: str, kind: str) -> None:
    """Only an apps/v1 Deployment is resolved; anything else is reported, whatever exists."""
    ro = rollout(workloadRef={"apiVersion": api_version, "kind": kind, "name": "web"})
    problems = resolve(ro, deployment())
    assert isinstance(problems, list)
    assert len(problems) == 1
    assert problems[0].startswith(f"spec.workloadRef.kind: {api_version} {kind} is not supported")


def test_a_selector_that_misses_the_deployments_pods_is_a_problem() -> None:
    """The Rollout's own selector must match the Deployment's pod labels, as it must
    match a template of its own; the problem names both fields."""
    problems = resolve(rollout(selector={"matchLabels": {"app": "other"}}), deployment())
    assert isinstance(problems, list)
    assert len(problems) == 1
    assert problems[0].startswith("spec.selector: selector.matchLabels must match")
    assert 'Deployment "web", spec.workloadRef.name' in problems[0]


def test_a_deployment_template_without_containers_is_a_problem() -> None:
    """A template the Rollout's rules refuse is reported, not run."""
    dep = deployment()
    dep = Deployment(**{**dep.__dict__, "template": {"metadata": {"labels": {"app": "web"}},
                                                     "spec": {"containers": []}}})  # fmt: skip
    problems = resolve(rollout(), dep)
    assert isinstance(problems, list)
    assert any(p.startswith("spec.template") for p in problems), problems


def test_pod_template_does_not_alias_the_deployment() -> None:
    """The resolved template is a copy: changing it leaves the Deployment's as it was."""
    dep = deployment()
    before = copy.deepcopy(dict(dep.template))
    pod_template(dep)["spec"]["containers"][0]["image"] = "changed"
    assert dict(dep.template) == before


# -- scaleDown -------------------------------------------------------------------------------


def scale(
    mode: ScaleDown, dep: Deployment, *, ready: int, healthy: bool = False, replicas: int = 3
) -> ScaleDeployment | None:
    """``scale_deployment`` for a Rollout of ``replicas`` pods."""
    return scale_deployment(mode, dep, replicas=replicas, ready=ready, healthy=healthy)


DONE = {SCALE_DOWN_ANNOTATION: "done", REPLICAS_BEFORE_ANNOTATION: "3"}
BEFORE_3 = {SCALE_DOWN_ANNOTATION: "in-progress", REPLICAS_BEFORE_ANNOTATION: "3"}


@pytest.mark.parametrize(
    ("mode", "dep", "ready", "healthy", "expected"),
    [
        # never: whatever happens, the Deployment is left alone.
        pytest.param("never", deployment(), 3, True, None, id="never-healthy"),
        pytest.param("never", deployment(), 1, False, None, id="never-progressing"),
        # onsuccess: nothing until Healthy, then 0 and done.
        pytest.param("onsuccess", deployment(), 2, False, None, id="onsuccess-not-yet"),
        pytest.param("onsuccess", deployment(), 3, True, (0, 3, True), id="onsuccess-healthy"),
        pytest.param("onsuccess", deployment(replicas=0), 3, True, (0, 0, True),
                     id="onsuccess-already-0-is-marked-done"),
        pytest.param("onsuccess", deployment(replicas=0, **DONE), 3, True, None,
                     id="onsuccess-done-is-written-once"),
        pytest.param("onsuccess", deployment(replicas=2, **DONE), 3, True, None,
                     id="onsuccess-scaled-up-by-a-person-after-done"),
        # progressively: spec.replicas - ready, within [0, before]; Healthy: 0 and done.
        pytest.param("progressively", deployment(), 0, False, None, id="prog-none-ready"),
        pytest.param("progressively", deployment(), 1, False, (2, 3, False), id="prog-1-ready"),
        pytest.param("progressively", deployment(replicas=2, **BEFORE_3), 2, False,
                     (1, 3, False), id="prog-2-ready"),
        pytest.param("progressively", deployment(replicas=1, **BEFORE_3), 3, False,
                     (0, 3, False), id="prog-all-ready-not-healthy"),
        pytest.param("progressively", deployment(replicas=0, **BEFORE_3), 3, True,
                     (0, 3, True), id="prog-healthy-done"),
        pytest.param("progressively", deployment(replicas=0, **BEFORE_3), 1, False,
                     (2, 3, False), id="prog-ready-lost-before-healthy-scales-back-up"),
        pytest.param("progressively", deployment(replicas=2), 0, False, None,
                     id="prog-never-above-what-it-had"),
        pytest.param("progressively", deployment(replicas=0, **DONE), 1, False, None,
                     id="prog-done-never-scales-up-for-a-later-revision"),
        pytest.param("progressively", deployment(replicas=5), 4, False, (0, 5, False),
                     id="prog-more-ready-than-wanted-goes-to-0-not-below"),
    ],
)  # fmt: skip
def test_scale_down(
    mode: ScaleDown,
    dep: Deployment,
    ready: int,
    healthy: bool,
    expected: tuple[int, int, bool] | None,
) -> None:
    """The Deployment's replicas per scaleDown, as (replicas, before, done); None: no write."""
    got = scale(mode, dep, ready=ready, healthy=healthy)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.replicas, got.before, got.done) == expected
    assert got.previous == dep.replicas
    assert got.name == "web"


@given(
    before=st.integers(0, 20),
    current=st.integers(0, 20),
    replicas=st.integers(0, 20),
    ready=st.integers(0, 25),
)
def test_progressively_stays_within_what_the_deployment_had(
    before: int, current: int, replicas: int, ready: int
) -> None:
    """Never below 0, never above the replicas recorded before the first scale-down, and
    with the Rollout's Ready pods about spec.replicas: ``ready + target`` is
    ``max(ready, min(before + ready, replicas))``."""
    dep = deployment(replicas=current, **{REPLICAS_BEFORE_ANNOTATION: str(before)})
    got = scale("progressively", dep, ready=ready, replicas=replicas)
    if got is None:
        assert current == max(0, min(before, replicas - ready))  # already there
        return
    assert 0 <= got.replicas <= before
    assert got.replicas != current
    assert ready + got.replicas == max(ready, min(before + ready, replicas))
    assert got.before == before
    assert not got.done


def test_an_unreadable_before_annotation_falls_back_to_the_current_count() -> None:
    """A hand-edited annotation that is not a count is ignored (the current count is the
    ceiling), never a crash."""
    dep = deployment(replicas=3, **{REPLICAS_BEFORE_ANNOTATION: "three"})
    assert dep.replicas_before is None
    got = scale("progressively", dep, ready=1)
    assert got is not None
    assert (got.replicas, got.before) == (2, 3)
