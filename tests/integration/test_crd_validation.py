"""The generated CRDs on the real API server: they install, `kubectl explain` teaches the
API, every invalid case is rejected naming its field (the same verdict as lint), the
examples are accepted, and the server's defaults are the models' defaults."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import RolloutSpec
from controller.api.validation import is_stepwise, validate_document
from localcluster import LocalCluster
from tests.support.invalid_cases import CASES, CLUSTER_CASES, Case
from tests.support.manifests import analysis_template, rollout

pytestmark = pytest.mark.integration

GROUP, VERSION = "stepwise.dev", "v1alpha1"
PLURALS = {
    "Rollout": "rollouts",
    "AnalysisTemplate": "analysistemplates",
    "ClusterAnalysisTemplate": "clusteranalysistemplates",
}
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLES = sorted([*(DEPLOY / "examples").glob("*.yaml"), *(DEPLOY / "templates").glob("*.yaml")])


def create(
    api_client: client.ApiClient, namespace: str, doc: dict[str, Any], *, dry_run: bool
) -> dict[str, Any]:
    """Create a Stepwise object with strict field validation (as kubectl does)."""
    custom = client.CustomObjectsApi(api_client)
    plural = PLURALS[doc["kind"]]
    extra: dict[str, Any] = {"field_validation": "Strict"}
    if dry_run:
        extra["dry_run"] = "All"
    if doc["kind"] == "ClusterAnalysisTemplate":
        result = custom.create_cluster_custom_object(GROUP, VERSION, plural, doc, **extra)
    else:
        result = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, doc, **extra
        )
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("case", CASES + CLUSTER_CASES, ids=lambda c: c.id)
def test_server_rejects_naming_the_field_like_lint(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, case: Case
) -> None:
    """The API server answers 422 naming the field; lint rejects the same document."""
    with pytest.raises(ApiException) as err:
        create(api_client, namespace, case.doc, dry_run=True)
    # 422 for schema and CEL failures; 400 for unknown fields under strict decoding.
    assert err.value.status in (400, 422), err.value.body
    assert case.on_server in named_fields(err.value.body), err.value.body
    assert validate_document(case.doc), "lint accepted what the server rejected"


def named_fields(body: str) -> set[str]:
    """The field paths a rejection names: its causes' fields (schema and CEL), or the
    unknown fields of a strict decoding error."""
    status = json.loads(body)
    causes = (status.get("details") or {}).get("causes") or []
    fields = {str(cause.get("field", "")) for cause in causes}
    fields.update(re.findall(r'unknown field "([^"]+)"', str(status.get("message", ""))))
    return fields - {""}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, path: Path
) -> None:
    """The shipped examples' Stepwise objects are accepted by the server (and by lint);
    the Services an example carries are the core API's."""
    for doc in filter(is_stepwise, yaml.safe_load_all(path.read_text())):
        doc["metadata"].pop("namespace", None)
        create(api_client, namespace, doc, dry_run=True)
        assert validate_document(doc) == []


def _drop_empty(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_empty(v) for k, v in node.items() if v not in ({}, [], None)}
    if isinstance(node, list):
        return [_drop_empty(v) for v in node]
    return node


def test_server_defaults_equal_model_defaults(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str
) -> None:
    """A minimal Rollout and AnalysisTemplate come back from the server with exactly the
    defaults the models fill in."""
    minimal = rollout(
        "defaults",
        steps=[{"setWeight": 10}, {"pause": {}}],
        analysis={"templates": [{"templateName": "t"}]},
    )
    del minimal["spec"]["replicas"]
    stored = create(api_client, namespace, minimal, dry_run=False)
    expected = RolloutSpec.model_validate(minimal["spec"]).wire()
    assert _drop_empty(stored["spec"]) == _drop_empty(expected)

    template = analysis_template("defaults")
    stored_t = create(api_client, namespace, template, dry_run=False)
    expected_t = AnalysisTemplateSpec.model_validate(template["spec"]).wire()
    assert _drop_empty(stored_t["spec"]) == _drop_empty(expected_t)


def test_kubectl_explain_shows_the_descriptions(
    local_cluster: LocalCluster, stepwise_crds: None, kubeconfig: Path
) -> None:
    """`kubectl explain rollout.spec.strategy.canary.steps` prints the field docs."""
    kubectl = local_cluster.bin_dir / "kubectl"
    out = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "explain",
            "rollout.spec.strategy.canary.steps",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "The steps, in order." in out
    assert "setWeight\t<integer>" in out
    assert "Send this percentage of traffic to the canary (0 to 100)." in out
