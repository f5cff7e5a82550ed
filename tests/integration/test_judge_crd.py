"""The comparative judge's API on the real API server: its CEL rules reject the same
judge metrics as lint, naming the same fields, and the server's defaults for a judge
block are the model's."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api.analysis import AnalysisTemplateSpec
from controller.api.validation import validate_document
from tests.support.invalid_cases import Case
from tests.support.judge_cases import JUDGE_CASES, judge_template

pytestmark = pytest.mark.integration


def create(
    api_client: client.ApiClient, namespace: str, doc: dict[str, Any], *, dry_run: bool
) -> dict[str, Any]:
    """Create an AnalysisTemplate with strict field validation."""
    extra: dict[str, Any] = {"field_validation": "Strict"}
    if dry_run:
        extra["dry_run"] = "All"
    result = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", namespace, "analysistemplates", doc, **extra
    )
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("case", JUDGE_CASES, ids=lambda c: c.id)
def test_server_rejects_judge_misuse_like_lint(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, case: Case
) -> None:
    """The API server answers 422 naming the field; lint rejects the same document."""
    with pytest.raises(ApiException) as err:
        create(api_client, namespace, case.doc, dry_run=True)
    assert err.value.status == 422, err.value.body
    assert case.field in err.value.body, err.value.body
    assert validate_document(case.doc), "lint accepted what the server rejected"


def test_server_defaults_a_judge_like_the_model(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str
) -> None:
    """A minimal judge metric is accepted and comes back with the model's defaults."""
    doc = judge_template()
    stored = create(api_client, namespace, doc, dry_run=False)
    assert stored["spec"] == AnalysisTemplateSpec.model_validate(doc["spec"]).wire()
