"""How much of Argo Rollouts' own manifests Stepwise takes with only the apiVersion changed.

``tests/fixtures/argo-corpus/`` holds every YAML file under ``examples/`` and ``test/e2e/``
of argoproj/argo-rollouts (at :data:`ARGO_COMMIT`) with a top-level ``kind: Rollout``,
``AnalysisTemplate`` or ``ClusterAnalysisTemplate`` line, copied verbatim under a header
naming its source. The unit counted is one such document. Left out of the count, each by a
rule the test applies (never by hand):

* files that are not YAML as written (Helm templates, an unquoted ``{{args.x}}``);
* Rollouts routed by a cloud-only or plugin router (:data:`CLOUD_ROUTERS`) or using step
  plugins: Stepwise has no such router, by design (the README says why);
* text templates of Argo's e2e harness, whose placeholder names (``ROLLOUT_NAME``,
  ``REPLACEME``, ``$$name$$``) any API server refuses until the harness fills them.

Every counted document, with its apiVersion changed, must pass ``stepwise lint`` and a
server-side dry-run create, except those in :data:`REFUSED`, each with its reason (the
README lists the same). The test fails if a listed document starts passing (move it out)
or an unlisted one is refused, and it asserts the share accepted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controller.cli import main
from tests.integration.test_argo_bluegreen_examples import convert
from tests.integration.test_lint_server_agreement import server_accepts

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argo-corpus"
ARGO_COMMIT = "9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d"
KINDS = ("Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate")
CLOUD_ROUTERS = ("alb", "appMesh", "apisix", "ambassador", "plugins")
"""Routers Stepwise does not have: the cloud load balancers and meshes (AWS ALB and App
Mesh, APISIX, Ambassador) and Argo's router plugins."""
PLACEHOLDER = re.compile(r"ROLLOUT_NAME|REPLACEME|\$\$name\$\$")
SHARE = 0.90
"""The share of counted documents that must be accepted (issue 21 asks for 90%)."""

REFUSED: dict[str, str] = {
    "test__e2e__istio__istio-host-split-ping-pong.yaml#3": (
        "`pingPong` swaps two Services' roles at each promotion; it exists for the AWS ALB "
        "router's readiness gates, which Stepwise does not have, and with the routers it has "
        "the stable and canary Services do the same job"
    ),
    "test__e2e__smi_ingress__rollout-smi-ingress-canary.yaml#3": (
        "two traffic routers at once (NGINX and SMI): a Rollout names exactly one router, "
        "because a write that reaches one router and not the other would leave a partial "
        "split that Stepwise cannot yet detect and repair across routers"
    ),
}
"""``fixture#index`` of the counted documents Stepwise refuses, with the reason; the
README's migration section lists the same ones."""


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".yaml", ".yml"))


def loaded(fixture: str) -> list[Any] | None:
    """The file's documents with the apiVersion changed, or None if it is not YAML."""
    try:
        return list(yaml.safe_load_all(convert((FIXTURES / fixture).read_text())))
    except yaml.YAMLError:
        return None


def left_out(doc: dict[str, Any]) -> str | None:
    """Why a document is not counted, or None if it is."""
    if PLACEHOLDER.search(str((doc.get("metadata") or {}).get("name", ""))):
        return "harness template"
    if doc["kind"] != "Rollout":
        return None
    canary = ((doc.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    routing = canary.get("trafficRouting") or {}
    if any(router in routing for router in CLOUD_ROUTERS):
        return "cloud or plugin router"
    if any("plugin" in (step or {}) for step in canary.get("steps") or []):
        return "step plugin"
    return None


def corpus() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The counted documents by ``fixture#index``, and the left-out ones with why."""
    counted: dict[str, dict[str, Any]] = {}
    out: dict[str, str] = {}
    for name in fixture_names():
        docs = loaded(name)
        if docs is None:
            out[name] = "not YAML as written"
            continue
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
                continue
            key = f"{name}#{index}"
            why = left_out(doc)
            if why is None:
                counted[key] = doc
            else:
                out[key] = why
    return counted, out


COUNTED, LEFT_OUT = corpus()


def test_the_fixtures_name_their_source() -> None:
    for name in fixture_names():
        header = (FIXTURES / name).read_text().splitlines()[0]
        source = name.replace("__", "/")
        assert source.startswith(("examples/", "test/e2e/")), name
        assert header == (
            f"# Source: https://github.com/argoproj/argo-rollouts/blob/{ARGO_COMMIT}/{source}"
        )


def test_the_corpus_is_the_one_the_readme_counts() -> None:
    """The numbers the README gives, so a change to the corpus or the rules shows."""
    reasons = sorted(set(LEFT_OUT.values()))
    assert reasons == [
        "cloud or plugin router",
        "harness template",
        "not YAML as written",
        "step plugin",
    ]
    assert len(COUNTED) == 77
    assert all(key in COUNTED for key in REFUSED)


def lint_accepts(doc: dict[str, Any], tmp_path: Path) -> bool:
    path = tmp_path / "doc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return main(["lint", "-q", str(path)]) == 0


@pytest.mark.parametrize("key", sorted(COUNTED))
def test_lint_and_the_server_take_the_document_unless_listed(
    key: str, tmp_path: Path, api_client: client.ApiClient, stepwise_crds: None, namespace: str
) -> None:
    doc = COUNTED[key]
    accepted = lint_accepts(doc, tmp_path) and server_accepts(api_client, namespace, doc)
    if key in REFUSED:
        assert not accepted, f"{key} is accepted now: take it out of REFUSED (and the README)"
    else:
        assert accepted, f"{key} is refused: {doc['kind']}/{doc['metadata']['name']}"


def test_the_share_accepted_is_at_least_ninety_percent() -> None:
    share = 1 - len(REFUSED) / len(COUNTED)
    assert share >= SHARE, f"{share:.0%} accepted"
