"""Argo Rollouts' own blue-green manifests, as Stepwise manifests.

``tests/fixtures/argo-bluegreen/`` holds every standalone file of argoproj/argo-rollouts
(at :data:`ARGO_COMMIT`) that declares a Rollout with ``spec.strategy.blueGreen``,
copied verbatim under a header naming its source. The only change made to them is the
one a user migrating from Argo makes: ``apiVersion: argoproj.io/v1alpha1`` becomes
``stepwise.dev/v1alpha1`` on the Rollout (and analysis template) documents, at load time.

Each file is either covered or excluded with a stated reason (a known Stepwise failure
would be listed apart). A covered file passes ``stepwise lint`` and a server-side dry-run
create of all its objects; every covered file is also applied to the local cluster with
the controller running, rolled to a second image and promoted (by hand where the
manifest turns auto-promotion off).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import REVISION_LABEL
from controller.api import intents
from controller.api.validation import validate_document
from localcluster import KWOK_NODE_LABEL, KWOK_TAINT
from localcluster.controller import ControllerProcess
from tests.integration.test_crd_validation import create, named_fields
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.linting import Linter, Server

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argo-bluegreen"
ARGO_COMMIT = "9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d"
ARGO_API = "argoproj.io/v1alpha1"
STEPWISE_API = "stepwise.dev/v1alpha1"
CONVERTED_KINDS = ("Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate")

ARGO_SOURCES = (
    "docs/features/kustomize/example/rollouts-demo.yaml",
    "examples/helm-blue-green/templates/rollout.yaml",
    "examples/rollout-bluegreen.yaml",
    "pkg/kubectl-argo-rollouts/cmd/lint/testdata/valid-blue-green.yml",
    "pkg/kubectl-argo-rollouts/info/testdata/blue-green/bluegreen-rollout.yaml",
    "test/e2e/functional/alb-bluegreen-rollout.yaml",
    "test/e2e/functional/bluegreen-duration-template.yaml",
    "test/e2e/functional/rollout-bluegreen.yaml",
)
"""Every ``.yaml``/``.yml`` file at ARGO_COMMIT with a ``blueGreen:`` key, less the CRD
schemas (manifests/crds, manifests/install.yaml) and the canary testdata whose only
``blueGreen`` is an empty ``status.blueGreen: {}``. A fixture is named after its source
path with ``/`` replaced by ``__``."""

COVERED = (
    "docs__features__kustomize__example__rollouts-demo.yaml",
    "examples__rollout-bluegreen.yaml",
    "pkg__kubectl-argo-rollouts__cmd__lint__testdata__valid-blue-green.yml",
    "test__e2e__functional__alb-bluegreen-rollout.yaml",
    "test__e2e__functional__rollout-bluegreen.yaml",
)
"""Linted, dry-run created, and run to promotion on the local cluster."""

INFO_TESTDATA = "pkg__kubectl-argo-rollouts__info__testdata__blue-green__bluegreen-rollout.yaml"

EXCLUDED: dict[str, str] = {
    "examples__helm-blue-green__templates__rollout.yaml": (
        "a Helm chart template: its `{{ }}` directives make it YAML only once Helm renders "
        "it with the chart's values (name, replicas, image, the Services it names)"
    ),
    "test__e2e__functional__bluegreen-duration-template.yaml": (
        "a text template of Argo's e2e harness: ROLLOUT_NAME is replaced by a generated "
        "name before it is applied; as written, the upper-case names are refused by any "
        "API server"
    ),
    INFO_TESTDATA: (
        "a live object read back from a cluster (`kubectl get -o yaml`), the input of "
        "`kubectl argo rollouts get` tests: it carries server-set metadata (uid, "
        "resourceVersion, which a create refuses, selfLink, generation), the pod "
        "template's `creationTimestamp: null`, which Argo's CRD does not declare either, "
        "and Argo's own status (stableRS, currentPodHash, pauseConditions), which is the "
        "controller's to write"
    ),
}
"""Left out, with why: none of them is something a user applies as it stands."""

LINT_GAPS: dict[str, str] = {}
"""Excluded manifests on which lint misses a spec field the API server refuses."""

KNOWN_FAILING: dict[str, str] = {}
"""Manifests that should pass but do not, because of a Stepwise bug or gap (none now).
They run as strict xfails, so a fix shows up as a failure asking to move them."""

ARGO_DEFAULTS = {
    "autoPromotionEnabled": True,
    "scaleDownDelaySeconds": 30,
    "abortScaleDownDelaySeconds": 30,
}
"""What Argo Rollouts assumes for these blueGreen fields when a manifest leaves them out
(its utils/defaults package); the API server must default them the same way."""

SCALE_DOWN_DELAY = 4
"""scaleDownDelaySeconds for the live runs (Argo's default is 30, rollout-bluegreen.yaml
sets 10): shortened to keep the test fast; the old revision must still wait it out."""

NEXT_IMAGE = {
    "argoproj/rollouts-demo:blue": "argoproj/rollouts-demo:green",
    "nginx:1.19-alpine": "nginx:1.20-alpine",
}
"""The second revision of each live run: the manifest's image, changed."""


# -- loading -----------------------------------------------------------------------------

_SEPARATOR = re.compile(r"^---(\s|$)")
_CONVERTED_KIND = re.compile(rf"^kind:\s*({'|'.join(CONVERTED_KINDS)})\s*$")
_ARGO_API_LINE = re.compile(rf"^apiVersion:\s*{re.escape(ARGO_API)}\s*$")


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".yaml", ".yml"))


def source_path(fixture: str) -> str:
    return fixture.replace("__", "/")


def convert(text: str) -> str:
    """The manifest with Argo's apiVersion line replaced by Stepwise's in each document
    of a converted kind; every other line is kept as it is."""
    docs: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if _SEPARATOR.match(line):
            docs.append([line])
        else:
            docs[-1].append(line)
    out: list[str] = []
    for doc in docs:
        ours = any(_CONVERTED_KIND.match(line) for line in doc)
        for line in doc:
            if ours and _ARGO_API_LINE.match(line):
                out.append(f"apiVersion: {STEPWISE_API}" + ("\n" if line.endswith("\n") else ""))
            else:
                out.append(line)
    return "".join(out)


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def converted(fixture: str) -> list[dict[str, Any]]:
    return documents(convert((FIXTURES / fixture).read_text()))


def cases(names: tuple[str, ...] | list[str]) -> list[Any]:
    """Covered manifests, then the known failing ones as strict xfails."""
    return [
        *names,
        *[
            pytest.param(name, marks=pytest.mark.xfail(reason=why, strict=True))
            for name, why in KNOWN_FAILING.items()
        ],
    ]


# -- which manifests ---------------------------------------------------------------------


def test_the_fixtures_are_the_argo_sources_each_with_its_header() -> None:
    names = fixture_names()
    assert sorted(map(source_path, names)) == sorted(ARGO_SOURCES)
    for name in names:
        header = (FIXTURES / name).read_text().splitlines()[0]
        expected = f"https://github.com/argoproj/argo-rollouts/blob/{ARGO_COMMIT}/"
        assert header == f"# Source: {expected}{source_path(name)}", name


def test_every_fixture_is_covered_or_excluded_with_a_reason() -> None:
    """Nothing is skipped silently: the three lists split the fixtures exactly."""
    listed = [*COVERED, *EXCLUDED, *KNOWN_FAILING]
    assert len(listed) == len(set(listed)), "a manifest is in two lists"
    assert sorted(listed) == fixture_names()
    assert all(why.strip() for why in [*EXCLUDED.values(), *KNOWN_FAILING.values()])
    assert len(COVERED) >= 2


@pytest.mark.parametrize("fixture", sorted(EXCLUDED))
def test_an_excluded_manifest_is_refused_as_it_stands(
    fixture: str, linter: Linter, server: Server
) -> None:
    """An exclusion hides nothing Stepwise would take: lint refuses the file, and so does
    the API server (each Rollout document it can parse)."""
    text = convert((FIXTURES / fixture).read_text())
    assert linter(fixture, text)[0] == 1
    try:
        docs = documents(text)
    except yaml.YAMLError:
        return  # a template, YAML only once rendered: nothing to send
    rollouts = [d for d in docs if d.get("kind") == "Rollout"]
    assert rollouts
    for doc in rollouts:
        assert not server.accepts(doc), doc["metadata"]["name"]


def parseable(fixture: str) -> bool:
    try:
        converted(fixture)
    except yaml.YAMLError:
        return False
    return True


@pytest.mark.parametrize(
    "fixture",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(reason=LINT_GAPS[name], raises=AssertionError, strict=True),
        )
        if name in LINT_GAPS
        else name
        for name in sorted(EXCLUDED)
        if parseable(name)
    ],
)
def test_lint_names_the_spec_fields_the_server_refuses(
    fixture: str, api_client: client.ApiClient, stepwise_crds: None, namespace: str
) -> None:
    """On an excluded manifest too, every field of metadata or spec that the API server
    names in its refusal is one lint names (the status is the controller's)."""
    for doc in converted(fixture):
        if doc["kind"] != "Rollout":
            continue
        sent = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
        with pytest.raises(ApiException) as refused:
            create(api_client, namespace, sent, dry_run=True)
        server = {f for f in named_fields(refused.value.body) if not f.startswith("status")}
        assert server
        lint = {p.field for p in validate_document(doc)}
        assert server <= lint, f"the server names {sorted(server - lint)}, lint does not"


# -- the conversion ----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", COVERED)
def test_the_conversion_changes_only_the_api_version(fixture: str) -> None:
    text = (FIXTURES / fixture).read_text()
    new = convert(text)
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True) if a != b]
    ours = [d for d in documents(text) if d["kind"] in CONVERTED_KINDS]
    assert ours
    assert changed == [(f"apiVersion: {ARGO_API}", f"apiVersion: {STEPWISE_API}")] * len(ours)
    for before, after in zip(documents(text), documents(new), strict=True):
        if before["kind"] in CONVERTED_KINDS:
            assert (before["apiVersion"], after["apiVersion"]) == (ARGO_API, STEPWISE_API)
            assert {**after, "apiVersion": ARGO_API} == before
        else:
            assert after == before


# -- lint and the API server -------------------------------------------------------------


@pytest.mark.parametrize("fixture", cases(COVERED))
def test_stepwise_lint_accepts_it(fixture: str, linter: Linter) -> None:
    code, out, err = linter(fixture, convert((FIXTURES / fixture).read_text()))
    assert (code, out) == (0, ""), out
    ours = [d for d in converted(fixture) if d["kind"] in CONVERTED_KINDS]
    assert f"{len(ours)} Stepwise object(s) checked: valid" in err


def create_object(
    api_client: client.ApiClient, namespace: str, doc: dict[str, Any], *, dry_run: bool
) -> Any:
    """Create any object of the manifests with strict field validation (as kubectl
    does), or only dry-run it on the server."""
    if doc["apiVersion"] == STEPWISE_API:
        return create(api_client, namespace, doc, dry_run=dry_run)
    options: dict[str, Any] = {"field_validation": "Strict"}
    if dry_run:
        options["dry_run"] = "All"
    kind = (doc["apiVersion"], doc["kind"])
    if kind == ("v1", "Service"):
        return client.CoreV1Api(api_client).create_namespaced_service(namespace, doc, **options)
    if kind == ("networking.k8s.io/v1", "Ingress"):
        return client.NetworkingV1Api(api_client).create_namespaced_ingress(
            namespace, doc, **options
        )
    raise AssertionError(f"no create for {kind}: add it here")


@pytest.mark.parametrize("fixture", cases(COVERED))
def test_the_api_server_accepts_every_object(
    fixture: str, api_client: client.ApiClient, stepwise_crds: None, namespace: str
) -> None:
    """Server-side dry-run create of each object; the Rollout comes back with its
    blue-green settings as written (nothing pruned or rewritten), the unset ones
    defaulted to Argo's defaults, and its pod template untouched."""
    docs = converted(fixture)
    assert any(d["kind"] == "Rollout" for d in docs)
    for doc in docs:
        result = create_object(api_client, namespace, doc, dry_run=True)
        if doc["kind"] == "Rollout":
            written = doc["spec"]["strategy"]["blueGreen"]
            assert result["spec"]["strategy"]["blueGreen"] == {**ARGO_DEFAULTS, **written}
            assert result["spec"]["template"] == doc["spec"]["template"]


# -- on the live cluster -----------------------------------------------------------------


def for_the_local_cluster(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's Rollout, adapted to the test cluster; returns it."""
    (rollout,) = [d for d in docs if d["kind"] == "Rollout"]
    pod = rollout["spec"]["template"]["spec"]
    # The local cluster's nodes are kwok's fake ones, tainted and labelled; manifests
    # written for real clusters tolerate neither, so the pods get both here.
    assert "tolerations" not in pod
    assert "nodeSelector" not in pod
    pod["tolerations"] = [{"key": KWOK_TAINT["key"], "operator": "Exists"}]
    pod["nodeSelector"] = {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1]}
    # Shortened to keep the test fast (see SCALE_DOWN_DELAY).
    rollout["spec"]["strategy"]["blueGreen"]["scaleDownDelaySeconds"] = SCALE_DOWN_DELAY
    return rollout


def selector(kube: Cluster, service: str) -> dict[str, str]:
    return dict(kube.core.read_namespaced_service(service, kube.ns).spec.selector or {})


def apply_manifest(
    api_client: client.ApiClient, kube: Cluster, docs: list[dict[str, Any]], rollout: dict[str, Any]
) -> None:
    """Create the manifest's objects (the Rollout last), with a minimal Service for any
    the Rollout names that the manifest does not carry."""
    for doc in docs:
        if doc is not rollout:
            create_object(api_client, kube.ns, doc, dry_run=False)
    bg = rollout["spec"]["strategy"]["blueGreen"]
    present = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    labels = rollout["spec"]["template"]["metadata"]["labels"]
    for name in (bg["activeService"], bg.get("previewService")):
        if name and name not in present:
            kube.core.create_namespaced_service(
                kube.ns,
                {"metadata": {"name": name}, "spec": {"selector": labels, "ports": [{"port": 80}]}},
            )
    create_object(api_client, kube.ns, rollout, dry_run=False)


@pytest.mark.parametrize("fixture", cases(COVERED))
def test_it_runs_to_promotion(
    fixture: str,
    kube: Cluster,
    api_client: client.ApiClient,
    controller: ControllerProcess,
) -> None:
    """First revision Healthy behind the active Service; a new image goes to preview,
    is promoted (automatically, or by hand when the manifest says so); the active
    Service then selects it, it is stable, and the old ReplicaSet goes to zero only
    once its scale-down delay has passed."""
    docs = converted(fixture)
    rollout = for_the_local_cluster(docs)
    apply_manifest(api_client, kube, docs, rollout)

    name = rollout["metadata"]["name"]
    replicas = rollout["spec"].get("replicas", 1)
    bg = rollout["spec"]["strategy"]["blueGreen"]
    active, preview = bg["activeService"], bg.get("previewService")
    base = {  # the Service's own selector, as the manifest (or apply_manifest) set it
        s: selector(kube, s) for s in (active, preview) if s
    }

    wait_for("the first revision Healthy", lambda: kube.healthy(name), 60)
    old = kube.status(name)["stableRevision"]
    assert kube.ready(name, old) == (replicas, replicas)
    for service, own in base.items():
        assert selector(kube, service) == {**own, REVISION_LABEL: old}

    image = rollout["spec"]["template"]["spec"]["containers"][0]["image"]
    new = kube.set_image(name, NEXT_IMAGE[image])
    assert new != old

    if bg.get("autoPromotionEnabled", True) is False:
        paused = wait_for(
            "the new revision awaiting promotion",
            lambda: (
                (s := kube.status(name)).get("waitReason") == "AwaitingPromotion"
                and s.get("canaryRevision") == new
                and s
            ),
            60,
        )
        assert paused["phase"] == "Paused", paused
        assert paused["stableRevision"] == old, paused
        assert selector(kube, active)[REVISION_LABEL] == old
        if preview:
            assert selector(kube, preview)[REVISION_LABEL] == new
        assert kube.ready(name, new) == (replicas, replicas)
        assert kube.ready(name, old) == (replicas, replicas)
        kube.annotate(name, **{intents.PROMOTE: intents.promote_value(new, 0)})

    promoted = wait_for(
        "the new revision stable",
        lambda: (s := kube.status(name)).get("stableRevision") == new and s,
        60,
    )
    seen = dt.datetime.now(dt.UTC)
    assert selector(kube, active) == {**base[active], REVISION_LABEL: new}
    if preview:
        assert selector(kube, preview) == {**base[preview], REVISION_LABEL: new}
    assert kube.ready(name, new) == (replicas, replicas)
    # The old revision is kept up for the delay, not scaled down with the switch.
    assert kube.ready(name, old)[0] == replicas, promoted
    # Scheduled in the pass that promoted the new revision, for the delay from then.
    scheduled = [d for d in promoted.get("scaleDown", []) if d["revision"] == old]
    assert len(scheduled) == 1, promoted
    entry = scheduled[0]
    at = dt.datetime.fromisoformat(entry["at"])
    assert at <= seen + dt.timedelta(seconds=SCALE_DOWN_DELAY), entry

    wait_for("the old revision at zero", lambda: kube.ready(name, old)[0] == 0, 30, 0.1)
    assert dt.datetime.now(dt.UTC) >= at, entry
    wait_for("Healthy", lambda: kube.healthy(name), 30)
    status = kube.status(name)
    assert (status["stableRevision"], status["canaryRevision"]) == (new, new), status
    assert status["blueGreen"].get("activeSelector") == new, status
    assert status["blueGreen"].get("previewSelector") == (new if preview else None), status
    assert selector(kube, active) == {**base[active], REVISION_LABEL: new}
