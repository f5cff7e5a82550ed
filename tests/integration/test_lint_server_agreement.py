"""``stepwise lint`` agrees with the API server: every agreement case, every invalid case
of the CRD table, and every Stepwise manifest in ``deploy/`` is sent to both (a
server-side dry run with strict field validation), and the two verdicts must match."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api.validation import is_stepwise, validate_document
from tests.integration.test_crd_validation import create
from tests.support.agreement_cases import AGREEMENT
from tests.support.invalid_cases import CASES

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = [
    pytest.param(doc, id=f"{path.relative_to(DEPLOY)}:{doc['kind']}/{doc['metadata']['name']}")
    for path in sorted(DEPLOY.rglob("*.yaml"))
    if "crds" not in path.parts
    for doc in yaml.safe_load_all(path.read_text())
    if is_stepwise(doc)
]


def server_accepts(api_client: client.ApiClient, namespace: str, doc: dict[str, Any]) -> bool:
    """Whether a dry-run create succeeds (422 or 400: refused; anything else fails)."""
    doc = copy.deepcopy(doc)
    if doc["kind"] != "ClusterAnalysisTemplate":
        doc["metadata"] = {**(doc.get("metadata") or {}), "namespace": namespace}
    try:
        create(api_client, namespace, doc, dry_run=True)
    except ApiException as exc:
        if exc.status not in (400, 422):
            raise
        return False
    return True


@pytest.mark.parametrize(
    "doc",
    [
        *[pytest.param(c.doc, id=c.id) for c in AGREEMENT],
        *[pytest.param(c.doc, id=f"invalid-{c.id}") for c in CASES],
        *MANIFESTS,
    ],
)
def test_lint_and_the_server_agree(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, doc: dict[str, Any]
) -> None:
    """Lint finds a problem exactly when the API server refuses the document."""
    problems = validate_document(doc)
    assert server_accepts(api_client, namespace, doc) == (not problems), problems


@pytest.mark.parametrize("case", AGREEMENT, ids=lambda c: c.id)
def test_the_server_verdicts_are_the_ones_the_table_states(
    api_client: client.ApiClient, stepwise_crds: None, namespace: str, case: Any
) -> None:
    """The table's stated verdicts are the server's (so the unit test of lint holds too)."""
    assert server_accepts(api_client, namespace, case.doc) is case.valid
