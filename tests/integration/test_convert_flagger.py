"""Flagger's own sample Canaries, converted by ``stepwise convert`` and sent to the API server.

``tests/fixtures/flagger/`` holds every YAML block of Flagger's documentation
(``docs/gitbook/**/*.md``) and kustomize examples that declares a ``Canary`` or a
``MetricTemplate`` as a whole object (fragments that only show a part of a spec are left
out), each under a header naming its source path and Flagger commit, plus the podinfo
Deployment of ``kustomize/podinfo`` that most samples target. The samples of one page
are converted together (a Canary's MetricTemplates are on the same page), next to the
Deployment, with the mesh provider the page assumes when a Canary does not name one.

Every written object passes ``validate_document`` (for Stepwise's kinds) and a
server-side dry-run create. What does not carry over is asserted line by line against
``expected/<page>.txt`` (exit 1), so a change in the mapping shows up here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic

from controller.adapters.kube import REVISION_LABEL
from controller.api.validation import is_stepwise, validate_document
from controller.cli import main
from localcluster import KWOK_NODE_LABEL, KWOK_TAINT
from localcluster.controller import ControllerProcess
from tests.integration.test_lint_server_agreement import server_accepts
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.packaging import install_router_crds

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flagger"
EXPECTED = FIXTURES / "expected"
FLAGGER_COMMIT = "15bd6ad555e6c935da55f0ab95977be74c149bd6"
DEPLOYMENT = FIXTURES / "kustomize__podinfo__deployment.yaml"


def pages() -> list[str]:
    """Each source page (or file) of the samples: the fixture names less the block number."""
    names = {re.sub(r"__\d+\.yaml$", "", p.name) for p in FIXTURES.glob("*__[0-9]*.yaml")}
    return sorted(names)


def provider_of(page: str) -> str:
    """The mesh provider a page's Canaries assume when they name none."""
    if "gatewayapi" in page:
        return "gatewayapi:v1"
    if "linkerd" in page:
        return "linkerd"
    return "istio"


def run_convert(
    page: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], list[dict[str, Any]]]:
    """Convert a page's samples with the Deployment: (exit code, stderr lines with the
    fixtures directory cut off, written documents)."""
    files = [str(p) for p in sorted(FIXTURES.glob(f"{page}__[0-9]*.yaml"))]
    provider = provider_of(page)
    code = main(
        ["convert", "--flagger-provider", provider, *files, str(DEPLOYMENT), "-o", str(out_dir)]
    )
    err = capsys.readouterr().err
    lines = [line.replace(f"{FIXTURES}/", "") for line in err.splitlines()]
    docs = [
        d
        for path in sorted(out_dir.glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    return code, lines, docs


def test_every_fixture_names_its_flagger_source() -> None:
    """Each fixture starts with a header naming its source file at the pinned commit."""
    for path in FIXTURES.glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith(
            f"# Source: https://github.com/fluxcd/flagger/blob/{FLAGGER_COMMIT}/"
        ), path.name


def test_every_page_has_its_expected_lines() -> None:
    """Each page has a file of expected dropped lines, and no file is left over."""
    assert {p.stem for p in EXPECTED.glob("*.txt")} == set(pages())


@pytest.fixture(scope="module")
def router_crds(api_client: client.ApiClient) -> None:
    """Gateway API, SMI and Istio CRDs, for the HTTPRoutes and VirtualServices written."""
    install_router_crds(api_client)


def resource_of(api_client: client.ApiClient, doc: dict[str, Any]) -> Any:
    """The dynamic client's resource for a document's apiVersion and kind."""
    dyn = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    return dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])


def dry_run(api_client: client.ApiClient, namespace: str, doc: dict[str, Any]) -> None:
    """A server-side dry-run create of any object, with strict field validation."""
    body = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    resource_of(api_client, doc).create(
        body=body, namespace=namespace, dry_run="All", field_validation="Strict"
    )


@pytest.mark.parametrize("page", pages())
def test_flagger_samples_convert_and_the_server_accepts_them(
    page: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    api_client: client.ApiClient,
    stepwise_crds: None,
    router_crds: None,
    namespace: str,
) -> None:
    """A page's samples convert with exactly the expected dropped lines (exit 1 when
    there are any), and every object written is valid offline and on the server."""
    code, lines, docs = run_convert(page, tmp_path, capsys)
    expected = (EXPECTED / f"{page}.txt").read_text().splitlines()
    assert lines == expected
    assert code == (1 if expected else 0)
    for doc in docs:
        if is_stepwise(doc):
            assert validate_document(doc) == [], doc["metadata"]["name"]
            assert server_accepts(api_client, namespace, doc), doc["metadata"]["name"]
        else:
            dry_run(api_client, namespace, doc)


# -- a converted Canary, run by the controller -------------------------------------------

BLUE_GREEN = FIXTURES / "docs__gitbook__tutorials__kubernetes-blue-green__07.yaml"
NEXT_IMAGE = "ghcr.io/stefanprodan/podinfo:6.0.1"


def for_the_local_cluster(tmp_path: Path) -> tuple[Path, Path]:
    """Flagger's blue-green podinfo Canary and its Deployment, as files to convert, with
    two changes for the local cluster: the Deployment's pods tolerate and select kwok's
    fake nodes, the Canary's metrics and webhooks are left out (no Prometheus series of
    podinfo and no Flagger load tester run here; their conversion is asserted above), and
    its interval is 1s instead of 30s (10 iterations: 10 s before the switch, not 5 min)."""
    (canary,) = [d for d in yaml.safe_load_all(BLUE_GREEN.read_text()) if d]
    del canary["spec"]["analysis"]["metrics"]
    del canary["spec"]["analysis"]["webhooks"]
    canary["spec"]["analysis"]["interval"] = "1s"
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    pod["tolerations"] = [{"key": KWOK_TAINT["key"], "operator": "Exists"}]
    pod["nodeSelector"] = {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1]}
    canary_file, deployment_file = tmp_path / "canary.yaml", tmp_path / "deployment.yaml"
    canary_file.write_text(yaml.safe_dump(canary))
    deployment_file.write_text(yaml.safe_dump(deployment))
    return canary_file, deployment_file


def active_selector(kube: Cluster) -> dict[str, str]:
    """The apex Service's selector (the blue-green active Service)."""
    return dict(kube.core.read_namespaced_service("podinfo", kube.ns).spec.selector or {})


def test_a_converted_flagger_canary_runs_to_promotion(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    api_client: client.ApiClient,
    kube: Cluster,
    controller: ControllerProcess,
) -> None:
    """The converted blue-green Canary, applied next to its Deployment: the Rollout takes
    over (Healthy, the Deployment scaled to 0 as Flagger scales its target), and a new
    image set on the Deployment, as CI does with Flagger, is previewed on the canary
    Service and promoted: the apex Service then selects it."""
    canary_file, deployment_file = for_the_local_cluster(tmp_path)
    out = tmp_path / "out"
    code = main(["convert", str(canary_file), str(deployment_file), "-o", str(out)])
    lines = [line.removeprefix(f"{canary_file}: ") for line in capsys.readouterr().err.splitlines()]
    assert code == 1
    assert lines == [
        "Canary/podinfo: spec.service.portDiscovery: Stepwise has no equivalent; not carried over",
        "Canary/podinfo: spec.autoscalerRef: Stepwise does not manage the "
        "HorizontalPodAutoscaler podinfo: point its scaleTargetRef at the Rollout (apiVersion "
        "stepwise.dev/v1alpha1, kind Rollout, name podinfo)",
    ]
    docs = [
        d
        for name in ("deployment.yaml", "canary.yaml")
        for d in yaml.safe_load_all((out / name).read_text())
        if d
    ]
    assert [d["kind"] for d in docs] == ["Deployment", "Rollout", "Service", "Service"]
    rollout = docs[1]
    assert rollout["spec"]["strategy"] == {
        "blueGreen": {
            "activeService": "podinfo",
            "previewService": "podinfo-canary",
            "autoPromotionSeconds": 10,
        }
    }
    for doc in docs:
        doc["metadata"].pop("namespace", None)
        if doc["kind"] == "Deployment":
            kube.apps.create_namespaced_deployment(kube.ns, doc)
        elif doc["kind"] == "Service":
            kube.core.create_namespaced_service(kube.ns, doc)
    kube.create(rollout)

    wait_for("the Rollout Healthy", lambda: kube.healthy("podinfo"), 90)
    old = kube.status("podinfo")["stableRevision"]
    assert active_selector(kube) == {"app": "podinfo", REVISION_LABEL: old}
    wait_for(
        "the Deployment scaled to 0",
        lambda: kube.apps.read_namespaced_deployment("podinfo", kube.ns).spec.replicas == 0,
        60,
    )

    kube.apps.patch_namespaced_deployment(
        "podinfo",
        kube.ns,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "podinfod", "image": NEXT_IMAGE}]}}
            }
        },
    )

    changed = time.monotonic()

    def promoted() -> dict[str, Any] | None:
        status = kube.status("podinfo")
        moved = status.get("stableRevision") not in (None, old)
        return status if moved and status.get("phase") == "Healthy" else None

    status = wait_for("the new image promoted", promoted, 120)
    # Flagger runs its 10 iterations before the switch; the Rollout waits as long.
    assert time.monotonic() - changed >= 10
    new = status["stableRevision"]
    assert active_selector(kube) == {"app": "podinfo", REVISION_LABEL: new}
    template = kube.apps.read_namespaced_replica_set(f"podinfo-{new}", kube.ns).spec.template
    assert template.spec.containers[0].image == NEXT_IMAGE
    assert kube.apps.read_namespaced_deployment("podinfo", kube.ns).spec.replicas == 0


GATEWAY = FIXTURES / "docs__gitbook__tutorials__gatewayapi-progressive-delivery__11.yaml"


def backend_weights(api_client: client.ApiClient, namespace: str) -> dict[str, int]:
    """Service name -> weight of the HTTPRoute ``podinfo``'s backendRefs."""
    route = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "podinfo"
    )
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {ref["name"]: ref["weight"] for ref in refs}


def test_a_converted_gateway_api_canary_steps_its_weights_to_promotion(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    api_client: client.ApiClient,
    router_crds: None,
    kube: Cluster,
    controller: ControllerProcess,
) -> None:
    """Flagger's Gateway API podinfo Canary (provider from the installation, as the
    tutorial assumes), converted with its Deployment and applied with the HTTPRoute and
    Services the converter writes: a new image on the Deployment walks the HTTPRoute's
    canary weight up in Flagger's steps (10% to 50%) and is promoted; the route ends
    back on the primary Service, which now selects the new revision. Changed for the
    local cluster: kwok tolerations, no metrics, webhooks or autoscalerRef (no Prometheus,
    load tester or HPA here; their conversion is asserted above), and an analysis
    interval of 2s instead of 1m to keep the test short."""
    (canary,) = [d for d in yaml.safe_load_all(GATEWAY.read_text()) if d]
    analysis = canary["spec"]["analysis"]
    del analysis["metrics"], analysis["webhooks"]
    analysis["interval"] = "2s"
    del canary["spec"]["autoscalerRef"]
    canary_file, deployment_file = for_the_local_cluster(tmp_path)
    canary_file.write_text(yaml.safe_dump(canary))
    out = tmp_path / "out"
    args = ["convert", "--flagger-provider", "gatewayapi:v1", str(canary_file)]
    assert main([*args, str(deployment_file), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
    docs = [
        d
        for name in ("deployment.yaml", "canary.yaml")
        for d in yaml.safe_load_all((out / name).read_text())
        if d
    ]
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Deployment", "Rollout", "Service", "Service", "Service", "HTTPRoute"]
    rollout = docs[1]
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [10, 20, 30, 40, 50]
    for doc in docs:
        doc["metadata"].pop("namespace", None)
        if doc["kind"] != "Rollout":
            resource_of(api_client, doc).create(body=doc, namespace=kube.ns)
    kube.create(rollout)

    wait_for("the Rollout Healthy", lambda: kube.healthy("podinfo"), 90)
    old = kube.status("podinfo")["stableRevision"]
    primary = kube.core.read_namespaced_service("podinfo-primary", kube.ns).spec.selector
    assert primary == {"app": "podinfo", REVISION_LABEL: old}
    assert backend_weights(api_client, kube.ns) == {"podinfo-primary": 100, "podinfo-canary": 0}

    kube.apps.patch_namespaced_deployment(
        "podinfo",
        kube.ns,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "podinfod", "image": NEXT_IMAGE}]}}
            }
        },
    )
    seen: set[int] = set()

    def promoted() -> bool:
        seen.add(backend_weights(api_client, kube.ns)["podinfo-canary"])
        status = kube.status("podinfo")
        return status.get("stableRevision") not in (None, old) and status.get("phase") == "Healthy"

    wait_for("the new image promoted", promoted, 180, interval=0.1)
    new = kube.status("podinfo")["stableRevision"]
    assert {10, 20, 30, 40, 50} <= seen, seen
    wait_for(
        "the route back on the primary",
        lambda: (
            backend_weights(api_client, kube.ns) == {"podinfo-primary": 100, "podinfo-canary": 0}
        ),
        30,
    )
    primary = kube.core.read_namespaced_service("podinfo-primary", kube.ns).spec.selector
    assert primary == {"app": "podinfo", REVISION_LABEL: new}
