"""Packaging on the real API server. The Helm chart (cluster-wide and namespaced) and the
kustomize base are accepted by server-side apply, pods and all; the controller, running
with nothing but a token of the chart's ServiceAccount, completes a rollout with each
traffic router and with analysis; and its RBAC is least privilege: with any one rule, or
any one verb of a rule, taken away, the same rollout is refused: a 403 naming that
resource and verb, which the controller logs.

The owner-reference permission check of OpenShift-like clusters, which needs the
``rollouts/finalizers`` rule, is stood in for by a ValidatingAdmissionPolicy (the test
API server cannot enable the admission plugin). Helm is built from its Go module by
``hack/cluster/build-helm.sh`` (cached like the control plane); kubectl is the control
plane's.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localcluster import KWOK_NODE_LABEL, KWOK_TAINT, LocalCluster, LocalPrometheus
from localcluster.controller import ControllerProcess
from tests.support.kube import wait_for
from tests.support.packaging import (
    BASE_RBAC,
    CHART,
    DEPLOY,
    Install,
    Installer,
    RuleCase,
    World,
    build_helm,
    built_helm,
    controller_for,
    delete_cluster_scoped,
    drive,
    forbidden,
    install_chart,
    install_router_crds,
    measurements,
    namespaces,
    of_kind,
    owner_reference_policy,
    refusals,
    render,
    rule_cases,
    rules_of,
    run,
    run_without,
    server_side_apply,
    shared_chart,
    verb_cases,
    wait_available,
)

pytestmark = pytest.mark.integration

KWOK_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1]},
    "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists"}],
}

#: Rules and verbs the removal tests cannot show to be needed here, and why (a new rule
#: must be exercised or named here with the reason).
#: Router objects are observed from a watch where list and watch are granted; without
#: either, each observation is a GET instead and nothing is refused, so taking them away
#: breaks no Rollout (tests/integration/test_router_reads.py shows the GET fallback).
_WATCH_ONLY = "an optimisation: without it routers observe by GET"
_ROLE_METADATA = (
    "blue-green activeMetadata/previewMetadata only, which the packaging scenario (a "
    "canary) does not set; tests/integration/test_bluegreen.py runs it"
)
_NOTIFY = (
    "notifications only, with targets configured, which the packaging scenario does not "
    "configure (it shows the targets and ledger reads: configmaps:get); the calls run "
    "in tests/integration/test_notifications.py, with an admin's rights"
)
_WORKLOAD_REF = (
    "spec.workloadRef's scaleDown only, which the packaging scenario (a Rollout with a "
    "template of its own) does not use; tests/integration/test_workload_ref.py runs it"
)
NOT_EXERCISED: dict[str, str] = {
    **{
        f"{resource}:{verb}": _WATCH_ONLY
        for resource in (
            "httproutes",
            "trafficsplits",
            "virtualservices",
            "destinationrules",
            "ingresses",
        )
        for verb in ("list", "watch")
    },
    "pods": _ROLE_METADATA,
    "pods:list": _ROLE_METADATA,
    "pods:patch": _ROLE_METADATA,
    "deployments:patch": _WORKLOAD_REF,
    **dict.fromkeys(
        ("configmaps:create", "configmaps:update", "secrets:get", "events:create"), _NOTIFY
    ),
}


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Path:
    """Helm, built from its Go module into the binary cache (reused when built)."""
    return built_helm()


@pytest.fixture(scope="module")
def kubectl(local_cluster: LocalCluster) -> Path:
    """The control plane's kubectl."""
    return local_cluster.bin_dir / "kubectl"


@pytest.fixture
def fresh_namespace(api_client: client.ApiClient) -> Iterator[Callable[[str], str]]:
    """Makes fresh namespaces, deleted afterwards (:func:`namespaces`)."""
    with namespaces(api_client) as make:
        yield make


@pytest.fixture(scope="module")
def owner_reference_enforcement(api_client: client.ApiClient) -> Iterator[None]:
    """The owner-reference permission check of OpenShift-like clusters, as a policy."""
    with owner_reference_policy(api_client):
        yield


@pytest.fixture(scope="module")
def router_crds(api_client: client.ApiClient) -> None:
    """The Gateway API, SMI and Istio CRDs the routers need (Ingress is built in)."""
    install_router_crds(api_client)


@pytest.fixture(scope="module")
def chart_installer(
    helm: Path,
    kubectl: Path,
    kubeconfig: Path,
    api_client: client.ApiClient,
    local_cluster: LocalCluster,
    stepwise_crds: None,
) -> Installer:
    """Installs the chart with a ServiceAccount token kubeconfig (:func:`install_chart`)."""
    return functools.partial(install_chart, helm, kubectl, kubeconfig, api_client, local_cluster)


@pytest.fixture(scope="module")
def shared_install(
    chart_installer: Installer,
    api_client: client.ApiClient,
    prometheus: LocalPrometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    """The chart (cluster-wide) in its own namespace, for every removal case."""
    workdir = tmp_path_factory.mktemp("rbac")
    with shared_chart(api_client, chart_installer, prometheus.url, workdir) as install:
        yield install


@pytest.fixture
def refused_without(
    shared_install: Install,
    api_client: client.ApiClient,
    router_crds: None,
    owner_reference_enforcement: None,
    fresh_namespace: Callable[[str], str],
    tmp_path: Path,
) -> Callable[[RuleCase], None]:
    """Runs the scenario with a case taken away, in a fresh team namespace, and checks
    that it is refused (:func:`run_without`)."""

    def check(case: RuleCase) -> None:
        run_without(case, shared_install, api_client, fresh_namespace("shop"), tmp_path)

    return check


def test_build_helm_without_go_says_how_to_fix_it(tmp_path: Path) -> None:
    """Without Go on PATH the Helm build stops at once, naming Go and STEPWISE_HELM."""
    result = build_helm({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "no Go toolchain on PATH" in result.stderr
    assert "STEPWISE_HELM" in result.stderr


def test_build_helm_uses_a_given_helm_as_it_is(tmp_path: Path) -> None:
    """STEPWISE_HELM is printed back if it is an executable, refused by name if not."""
    helm = tmp_path / "helm3"
    helm.write_text("#!/bin/sh\n")
    result = build_helm({**os.environ, "STEPWISE_HELM": str(helm)})
    assert result.returncode == 1
    assert f"STEPWISE_HELM={helm} is not an executable" in result.stderr
    helm.chmod(0o755)
    result = build_helm({**os.environ, "STEPWISE_HELM": str(helm)})
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, str(helm), "")


# -- the chart and the kustomize base are accepted ----------------------------------------


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_the_chart_is_applied_and_its_pods_run_under_restricted_security(
    helm: Path,
    kubectl: Path,
    kubeconfig: Path,
    api_client: client.ApiClient,
    stepwise_crds: None,
    fresh_namespace: Callable[[str], str],
    mode: str,
) -> None:
    """``helm template`` output, CRDs included, is server-side applied without error, and
    both replicas are admitted by the restricted Pod Security Standard and run."""
    namespace = fresh_namespace("stepwise-system")
    values: dict[str, Any] = {"prometheus": {"address": "http://prometheus:9090"}, **KWOK_PLACEMENT}
    if mode == "namespaced":
        values["watchNamespaces"] = [fresh_namespace("team-a"), fresh_namespace("team-b")]
    release = f"stepwise-{uuid.uuid4().hex[:6]}"
    docs = render(helm, release, namespace, values)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        {
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        }
    )
    try:
        server_side_apply(kubectl, kubeconfig, docs)
        wait_available(api_client, namespace, release, 2)
    finally:
        delete_cluster_scoped(api_client, docs)
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in of_kind(docs, "Role")}
    expected = {(namespace, f"{release}-leader-election")}
    if mode == "namespaced":
        expected |= {(ns, release) for ns in values["watchNamespaces"]}
    assert roles == expected
    (deployment,) = of_kind(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--leader-election" in container["args"]
    assert f"--lease-namespace={namespace}" in container["args"]
    assert "--log-format=json" in container["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_kustomize_base_is_applied(
    kubectl: Path, kubeconfig: Path, api_client: client.ApiClient, stepwise_crds: None
) -> None:
    """``kubectl kustomize deploy/`` is server-side applied without error, and the
    restricted namespace admits the controller's pods (created, if never scheduled)."""
    docs = [d for d in yaml.safe_load_all(run([kubectl, "kustomize", DEPLOY])) if d]
    assert sorted(d["kind"] for d in docs) == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )
    (namespace,) = of_kind(docs, "Namespace")
    ns = namespace["metadata"]["name"]
    core = client.CoreV1Api(api_client)
    try:
        server_side_apply(kubectl, kubeconfig, docs)
        wait_for(
            "two controller pods admitted",
            lambda: (
                len(
                    core.list_namespaced_pod(
                        ns, label_selector="app.kubernetes.io/name=stepwise"
                    ).items
                )
                == 2
            ),
        )
    finally:
        delete_cluster_scoped(api_client, docs)
        core.delete_namespace(ns, propagation_policy="Background")


def test_chart_and_kustomize_grant_the_same_rules(helm: Path) -> None:
    """The chart's ClusterRole and lease Role equal deploy/base's; in namespaced mode the
    Roles and the small ClusterRole split the same rules between them."""
    base = list(yaml.safe_load_all(BASE_RBAC.read_text()))
    cluster = render(helm, "stepwise", "stepwise-system")
    assert rules_of(cluster, "ClusterRole") == rules_of(base, "ClusterRole")
    assert rules_of(cluster, "Role", "-leader-election") == rules_of(base, "Role")
    namespaced = render(helm, "stepwise", "stepwise-system", {"watchNamespaces": ["a"]})
    split = rules_of(namespaced, "Role", "stepwise") + rules_of(namespaced, "ClusterRole")
    assert split == rules_of(base, "ClusterRole")


def test_the_chart_lints_and_its_notes_tell_what_was_installed(
    helm: Path, kubeconfig: Path
) -> None:
    """`helm lint --strict` passes, and the NOTES an install prints name the mode, the
    Lease and, only when none is set, the missing default Prometheus."""
    run([helm, "lint", "--strict", CHART])

    def notes(*sets: str) -> str:
        argv: list[str | Path] = [helm, "install", "x", CHART, "-n", "ops", "--dry-run=client"]
        for value in sets:
            argv += ["--set", value]
        out = run([*argv, f"--kubeconfig={kubeconfig}"])
        return out[out.index("NOTES:") :]

    cluster_wide = notes()
    assert "the whole cluster (ClusterRole x-stepwise)" in cluster_wide
    assert "Lease ops/stepwise-controller; 2 replica(s), one writes." in cluster_wide
    assert "No default Prometheus" in cluster_wide
    namespaced = notes("watchNamespaces={shop,payments}", "prometheus.address=http://p:9090")
    assert "namespaces shop, payments (namespaced mode: a Role in each)" in namespaced
    assert "No default Prometheus" not in namespaced


def test_chart_options(helm: Path) -> None:
    """The ServiceMonitor renders when enabled; router and Secret access can be turned off;
    several replicas without leader election are refused."""
    docs = render(
        helm,
        "stepwise",
        "ops",
        {
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
            "rbac": {"readSecrets": False, "routers": {"smi": False, "istio": False}},
            "image": {"digest": "sha256:" + "0" * 64},
        },
    )
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["ports"][0]["name"] == "metrics"
    resources = {r for rule in rules_of(docs, "ClusterRole") for r in rule["resources"]}
    assert not resources & {"secrets", "trafficsplits", "virtualservices", "destinationrules"}
    assert {"httproutes", "ingresses"} <= resources
    (deployment,) = of_kind(docs, "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/stepwise-dev/stepwise@sha256:" + "0" * 64
    proc = subprocess.run(
        [str(helm), "template", "x", str(CHART), "--set", "leaderElection.enabled=false"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled" in proc.stderr


# -- the controller as the chart's ServiceAccount -----------------------------------------


@pytest.mark.parametrize(
    ("router", "mode"),
    [
        ("gatewayAPI", "cluster-wide"),
        ("gatewayAPI", "namespaced"),
        ("smi", "cluster-wide"),
        ("istio", "cluster-wide"),
        ("nginx", "cluster-wide"),
    ],
)
def test_the_controller_completes_a_rollout_as_the_charts_service_account(
    chart_installer: Installer,
    api_client: client.ApiClient,
    prometheus: LocalPrometheus,
    router_crds: None,
    owner_reference_enforcement: None,
    fresh_namespace: Callable[[str], str],
    tmp_path: Path,
    router: str,
    mode: str,
) -> None:
    """With only the chart's RBAC, the controller routes 50% to the canary, runs both
    templates (one reading a Secret), promotes it, restores the route and deletes the old
    ReplicaSet; the API server never refuses it anything."""
    namespace = fresh_namespace("stepwise-system")
    shop = fresh_namespace("shop")
    values: dict[str, Any] = {"prometheus": {"address": prometheus.url}}
    if mode == "namespaced":
        values["watchNamespaces"] = [shop]
    install = chart_installer(namespace, tmp_path, values)
    world = World(api_client, shop, router)
    try:
        proc = controller_for(ControllerProcess, install, tmp_path)
        proc.start()
        try:
            world.setup()  # after the controller's lists: its watches must bring them
            outcome = drive(world, timeout=90)
            assert outcome == "completed", proc.tail()
            metrics = proc.metrics()
        finally:
            proc.stop()
        assert world.routed_canary_weight() == 0
        taken = measurements(metrics, shop)
        assert taken.get(("token-echo", "Successful"), 0) >= 2
        assert taken.get(("always", "Successful"), 0) >= 1
        assert {phase for _, phase in taken} == {"Successful"}
        assert refusals(proc, install.user) == []
        log = proc.log_path.read_text()
        assert forbidden(log) == []
        assert "s3cr3t" not in log
    finally:
        world.cleanup()
        delete_cluster_scoped(api_client, install.docs)


# -- every rule, and every verb, is needed ----------------------------------------------


RULE_CASES = [c for c in rule_cases() if c.id not in NOT_EXERCISED]
VERB_CASES = [c for c in verb_cases() if c.id not in NOT_EXERCISED]


def test_only_the_documented_rules_and_verbs_are_left_out_of_the_removal_tests() -> None:
    """Each rule and verb is either taken away below or named, with the reason, in
    NOT_EXERCISED."""
    every = {c.id for c in [*rule_cases(), *verb_cases()]}
    assert set(NOT_EXERCISED) <= every
    assert every - {c.id for c in [*RULE_CASES, *VERB_CASES]} == set(NOT_EXERCISED)


@pytest.mark.parametrize("case", RULE_CASES, ids=[c.id for c in RULE_CASES])
def test_without_any_one_rule_the_rollout_is_refused(
    refused_without: Callable[[RuleCase], None], case: RuleCase
) -> None:
    """The same scenario, with one rule taken away from the chart's RBAC, is refused with
    a 403 naming the rule's resource."""
    refused_without(case)


@pytest.mark.parametrize("case", VERB_CASES, ids=[c.id for c in VERB_CASES])
def test_without_any_one_verb_the_rollout_is_refused(
    refused_without: Callable[[RuleCase], None], case: RuleCase
) -> None:
    """Likewise with one verb taken away from a rule that has several."""
    refused_without(case)
