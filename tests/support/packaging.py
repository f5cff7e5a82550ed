"""The harness of tests/integration/test_packaging.py: Helm and kubectl runs, the chart
installed with a token of its ServiceAccount, one team's namespace with a router and
templates (:class:`World`), the rollout driven through it, the owner-reference policy,
and the RBAC rules taken away one at a time (:class:`RuleCase`)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from controller.core.hashing import template_hash
from localcluster import LocalCluster, free_port
from localcluster.controller import REPO, ControllerProcess
from localcluster.traefik import gateway_api_crds
from tests.support.analysis import template_doc
from tests.support.kube import install_crds, wait_for
from tests.support.manifests import pod_spec
from tests.support.manifests import rollout as rollout_doc
from tests.support.route_objects import http_route, ingress, ingress_path, istio_object

CHART = REPO / "charts" / "stepwise"
DEPLOY = REPO / "deploy"
BASE_RBAC = DEPLOY / "base" / "rbac.yaml"
HACK_CRDS = REPO / "hack" / "crds"
BUILD_HELM = REPO / "hack" / "cluster" / "build-helm.sh"
LEASE = "stepwise-controller"
#: Seconds a completed scenario is watched for a late refusal: more than two of the
#: chart's Lease retry periods (2 s), so a refused renewal shows.
SETTLE = 5.0
FIELD_MANAGER = "stepwise-packaging-test"
STEPWISE = ("stepwise.dev", "v1alpha1")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
SMI = ("split.smi-spec.io", "v1alpha2", "trafficsplits")
ISTIO = ("networking.istio.io", "v1")


#: The scenario that exercises a rule's resource (Gateway API for all the others).
ROUTER_FOR = {
    "trafficsplits": "smi",
    "virtualservices": "istio",
    "destinationrules": "istio",
    "ingresses": "nginx",
}


# -- tools ------------------------------------------------------------------------------


def built_helm() -> Path:
    """Helm, built from its Go module into the binary cache (reused when built)."""
    proc = subprocess.run(["bash", str(BUILD_HELM)], check=False, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{BUILD_HELM} failed; its error is printed above")
    return Path(proc.stdout.strip().splitlines()[-1])


def run(argv: list[str | Path], stdin: str | None = None) -> str:
    """Run a tool; fail the test with its output when it fails."""
    proc = subprocess.run(
        [str(a) for a in argv], check=False, capture_output=True, text=True, input=stdin
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{Path(str(argv[0])).name} {' '.join(map(str, argv[1:]))} failed:\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def render(
    helm: Path, release: str, namespace: str, values: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``helm template`` of the chart (CRDs included) as parsed objects."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        json.dump(values or {}, f)  # JSON is YAML
        f.flush()
        out = run(
            [
                helm,
                "template",
                release,
                CHART,
                "--namespace",
                namespace,
                "--include-crds",
                "--values",
                f.name,
            ]
        )
    return [d for d in yaml.safe_load_all(out) if d]


def server_side_apply(kubectl: Path, kubeconfig: Path, docs: list[dict[str, Any]]) -> str:
    """``kubectl apply --server-side`` of the objects (real writes, not a dry run)."""
    return run(
        [
            kubectl,
            f"--kubeconfig={kubeconfig}",
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            "-",
        ],
        stdin=yaml.safe_dump_all(docs),
    )


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [d for d in docs if d["kind"] == kind]


@contextlib.contextmanager
def absent_ok() -> Iterator[None]:
    """Let a 404 from the API server pass: the object is already gone."""
    try:
        yield
    except ApiException as exc:
        if exc.status != 404:
            raise


def delete_cluster_scoped(api_client: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    """Delete the ClusterRoles and ClusterRoleBindings among ``docs`` (never the CRDs,
    which the whole session shares)."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    for doc in docs:
        name = doc["metadata"]["name"]
        with absent_ok():
            if doc["kind"] == "ClusterRole":
                rbac.delete_cluster_role(name)
            elif doc["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(name)


@contextlib.contextmanager
def namespaces(api_client: client.ApiClient) -> Iterator[Callable[[str], str]]:
    """Makes fresh namespaces; all are deleted afterwards, Rollout finalizers cleared
    first. The controller's (``stepwise-system-*``) are held to the restricted Pod
    Security Standard, as deploy/base's namespace is."""
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        labels = (
            {"pod-security.kubernetes.io/enforce": "restricted"}
            if prefix == "stepwise-system"
            else {}
        )
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            try:
                rollouts = custom.list_namespaced_custom_object(*STEPWISE, name, "rollouts")
            except ApiException:
                rollouts = {"items": []}
            for item in rollouts["items"]:
                custom.patch_namespaced_custom_object(
                    *STEPWISE,
                    name,
                    "rollouts",
                    item["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )
            core.delete_namespace(name, propagation_policy="Background")


def build_helm(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run build-helm.sh with exactly ``env``."""
    return subprocess.run(
        ["bash", str(BUILD_HELM)], capture_output=True, text=True, env=env, check=False, timeout=60
    )


# -- the chart and the kustomize base ----------------------------------------------------


def wait_available(api_client: client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    """Wait until the Deployment has ``replicas`` available pods (kwok runs them)."""
    apps = client.AppsV1Api(api_client)

    def available() -> bool:
        status = apps.read_namespaced_deployment(name, namespace).status
        return (status.available_replicas or 0) == replicas

    wait_for(f"deployment {namespace}/{name} available", available, timeout=60)


def rules_of(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    """The rules of the one ``kind`` object whose name ends with ``name_suffix``."""
    (found,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    rules: list[dict[str, Any]] = found["rules"]
    return rules


# -- owner-reference permission enforcement -----------------------------------------------

#: What the OwnerReferencesPermissionEnforcement admission plugin checks (it is on in
#: OpenShift and hardened clusters, off in the test API server, and cannot be turned on
#: from a test): setting ``blockOwnerDeletion`` on an owner reference needs ``update`` on
#: the owner's ``finalizers`` subresource. This policy asks the same of ServiceAccounts
#: for owner references to Rollouts (on ReplicaSets, TrafficSplits, Ingresses and Jobs, the
#: objects Stepwise owns), through the authorizer, and refuses like the plugin (403).
OWNER_POLICY = "stepwise-test-owner-references"
OWNER_CHECK = (
    "!has(object.metadata.ownerReferences) || object.metadata.ownerReferences.all(ref, "
    "!has(ref.blockOwnerDeletion) || !ref.blockOwnerDeletion || ref.kind != 'Rollout' || "
    "!ref.apiVersion.startsWith('stepwise.dev/') || "
    "(oldObject != null && has(oldObject.metadata.ownerReferences) && "
    "oldObject.metadata.ownerReferences.exists(o, o.uid == ref.uid && "
    "has(o.blockOwnerDeletion) && o.blockOwnerDeletion)) || "
    "authorizer.group('stepwise.dev').resource('rollouts').subresource('finalizers')"
    ".namespace(object.metadata.namespace).name(ref.name).check('update').allowed())"
)
OWNER_MESSAGE = (
    "'cannot set blockOwnerDeletion if an ownerReference refers to a resource you cannot "
    "set finalizers on: User \"' + request.userInfo.username + '\" cannot update resource "
    '"rollouts/finalizers" in API group "stepwise.dev" in the namespace "\' + '
    "object.metadata.namespace + '\"'"
)


@contextlib.contextmanager
def owner_reference_policy(api_client: client.ApiClient) -> Iterator[None]:
    """The owner-reference permission check, as a ValidatingAdmissionPolicy, for the
    controllers these tests run as ServiceAccounts (other tests' run as admin)."""
    admission = client.AdmissionregistrationV1Api(api_client)
    rules = [
        {
            "apiGroups": [group],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": [resource],
        }
        for group, resource in (
            ("apps", "replicasets"),
            ("split.smi-spec.io", "trafficsplits"),
            ("networking.k8s.io", "ingresses"),
            ("batch", "jobs"),
        )
    ]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": OWNER_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": rules},
            "matchConditions": [
                {
                    "name": "service-accounts",
                    "expression": "request.userInfo.username.startsWith('system:serviceaccount:')",
                }
            ],
            "validations": [
                {
                    "expression": OWNER_CHECK,
                    "messageExpression": OWNER_MESSAGE,
                    "reason": "Forbidden",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": OWNER_POLICY},
        "spec": {"policyName": OWNER_POLICY, "validationActions": ["Deny"]},
    }
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)

    def checked() -> bool:
        status = admission.read_validating_admission_policy(OWNER_POLICY).status
        if status is None or not status.observed_generation:
            return False
        problems = status.type_checking.expression_warnings if status.type_checking else None
        assert not problems, problems
        return True

    wait_for("the owner-reference policy type-checked", checked)
    try:
        yield
    finally:
        admission.delete_validating_admission_policy_binding(OWNER_POLICY)
        admission.delete_validating_admission_policy(OWNER_POLICY)


def owner_reference_refused(install: Install, namespace: str) -> bool:
    """Whether the ServiceAccount is refused a ReplicaSet (dry run) with a
    blockOwnerDeletion owner reference to a Rollout: the policy is in force."""
    api = config.new_client_from_config(config_file=str(install.kubeconfig))  # type: ignore[no-untyped-call]
    owner = {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "Rollout",
        "name": "probe",
        "uid": str(uuid.uuid4()),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = {"probe": "owner-reference"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "probe", "ownerReferences": [owner]},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "registry.local/probe"}]},
            },
        },
    }
    try:
        client.AppsV1Api(api).create_namespaced_replica_set(namespace, body, dry_run="All")
    except ApiException as exc:
        return exc.status == 403 and "blockOwnerDeletion" in str(exc.body)
    finally:
        api.close()
    return False


# -- the controller as the chart's ServiceAccount -----------------------------------------


@dataclass(frozen=True)
class Install:
    """The chart applied in one namespace, and a kubeconfig holding only a token of its
    ServiceAccount (what a pod of the Deployment gets)."""

    namespace: str
    release: str
    docs: list[dict[str, Any]]
    kubeconfig: Path

    @property
    def user(self) -> str:
        """The ServiceAccount's user name, as the API server's refusals name it."""
        return f"system:serviceaccount:{self.namespace}:{self.release}"

    def role(self, kind: str) -> dict[str, Any]:
        """The applied ClusterRole (every rule), or the lease Role."""
        suffix = "-leader-election" if kind == "Role" else ""
        (found,) = [
            d for d in of_kind(self.docs, kind) if d["metadata"]["name"] == self.release + suffix
        ]
        return found

    def controller_args(self) -> list[str]:
        """The Deployment's flags for ``stepwise run``, but the health port (the test
        picks a free one)."""
        (deployment,) = of_kind(self.docs, "Deployment")
        args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return [a for a in args if not a.startswith("--health-port=")]


def cluster_access(local_cluster: LocalCluster, kubeconfig: Path) -> tuple[str, str]:
    """(server URL, CA file) of the cluster under test."""
    endpoints = local_cluster.endpoints
    if endpoints.server:
        return endpoints.server, str(endpoints.ca_cert)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    return str(cfg.host), str(cfg.ssl_ca_cert)


def install_chart(
    helm: Path,
    kubectl: Path,
    kubeconfig: Path,
    api_client: client.ApiClient,
    local_cluster: LocalCluster,
    namespace: str,
    workdir: Path,
    values: dict[str, Any],
) -> Install:
    """Apply the chart, mint a token of its ServiceAccount (TokenRequest API) and write a
    kubeconfig with that token and the cluster's CA."""
    release = f"stepwise-{uuid.uuid4().hex[:6]}"
    docs = render(helm, release, namespace, values)
    server_side_apply(kubectl, kubeconfig, docs)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        release, namespace, request
    )
    server, ca = cluster_access(local_cluster, kubeconfig)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "cluster", "cluster": {"server": server, "certificate-authority": ca}}
        ],
        "users": [{"name": release, "user": {"token": token.status.token}}],
        "contexts": [{"name": release, "context": {"cluster": "cluster", "user": release}}],
        "current-context": release,
    }
    path = workdir / f"{release}.kubeconfig"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return Install(namespace, release, docs, path)


def install_router_crds(api_client: client.ApiClient) -> None:
    """The Gateway API, SMI and Istio CRDs the routers need (Ingress is built in)."""
    install_crds(
        api_client,
        [
            *gateway_api_crds(),
            HACK_CRDS / "smi-trafficsplit.yaml",
            HACK_CRDS / "istio-virtualservice.yaml",
            HACK_CRDS / "istio-destinationrule.yaml",
        ],
    )


class World:
    """One team's namespace, set up through the admin API: Services, the router's object,
    a Secret, an AnalysisTemplate that reads it, a ClusterAnalysisTemplate, the Rollout."""

    def __init__(self, api_client: client.ApiClient, namespace: str, router: str) -> None:
        self.ns = namespace
        self.router = router
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.cluster_template = f"always-pass-{namespace}"

    # -- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Everything but the Rollout."""
        for name in ("app-stable", "app-canary", *(("app",) if self.router == "istio" else ())):
            self.core.create_namespaced_service(
                self.ns,
                client.V1Service(
                    metadata=client.V1ObjectMeta(name=name),
                    spec=client.V1ServiceSpec(
                        selector={"app": "app"},
                        ports=[client.V1ServicePort(port=80, target_port=8080)],
                    ),
                ),
            )
        self.core.create_namespaced_secret(
            self.ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="analysis"),
                data={"token": base64.b64encode(b"s3cr3t").decode()},
            ),
        )
        self.custom.create_namespaced_custom_object(
            *STEPWISE, self.ns, "analysistemplates", self.template()
        )
        self.custom.create_cluster_custom_object(
            *STEPWISE, "clusteranalysistemplates", self.cluster_template_doc()
        )
        self._router_objects()

    def template(self) -> dict[str, Any]:
        """An AnalysisTemplate whose query carries an argument read from a Secret, and a
        job metric whose Job completes (its Job is created, read, listed and deleted:
        the jobs rule's verbs)."""
        query = 'label_replace(vector(1), "token", "{{args.token}}", "", "")'
        secret = {"secretKeyRef": {"name": "analysis", "key": "token"}}
        metric = {
            "name": "token-echo",
            "interval": "1s",
            "count": 2,
            "thresholdRange": {"min": 1},
            "provider": {"prometheus": {"query": query}},
        }
        pod = {**pod_spec("registry.local/smoke:v1"), "restartPolicy": "Never"}
        job = {
            "name": "smoke",
            "provider": {
                "job": {
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "metadata": {"annotations": {"stepwise.dev/exit-code": "0"}},
                            "spec": pod,
                        },
                    }
                }
            },
        }
        return template_doc(
            "token-echo", metric, job, args=[{"name": "token", "valueFrom": secret}]
        )

    def cluster_template_doc(self) -> dict[str, Any]:
        """A ClusterAnalysisTemplate that always passes."""
        metric = {
            "name": "always",
            "interval": "1s",
            "thresholdRange": {"min": 1},
            "provider": {"prometheus": {"query": "vector(1)"}},
        }
        return template_doc(self.cluster_template, metric, cluster=True)

    def _router_objects(self) -> None:
        if self.router == "gatewayAPI":
            route = http_route("app", [{"backendRefs": [{"name": "app-stable", "port": 80}]}])
            self.custom.create_namespaced_custom_object(*GATEWAY[:2], self.ns, GATEWAY[2], route)
        elif self.router == "istio":  # by subset: the VirtualService and DestinationRule
            labels = {"app": "app"}
            subsets = [{"name": "stable", "labels": labels}, {"name": "canary", "labels": labels}]
            rule = istio_object("DestinationRule", "app", {"host": "app", "subsets": subsets})
            self.custom.create_namespaced_custom_object(*ISTIO, self.ns, "destinationrules", rule)
            destination = {"host": "app", "subset": "stable", "port": {"number": 80}}
            primary = {"name": "primary", "route": [{"destination": destination}]}
            service = istio_object(
                "VirtualService", "app", {"hosts": ["app.example.com"], "http": [primary]}
            )
            self.custom.create_namespaced_custom_object(*ISTIO, self.ns, "virtualservices", service)
        elif self.router == "nginx":
            path = ingress_path("/", "app-stable")
            rule = {"host": "app.example.com", "http": {"paths": [path]}}
            self.networking.create_namespaced_ingress(self.ns, ingress("web", [rule]))
        # smi: the controller creates the TrafficSplit itself

    def rollout(self) -> dict[str, Any]:
        """One replica; 50% to the canary, then both templates; promoted after them."""
        routings: dict[str, dict[str, Any]] = {
            "gatewayAPI": {"gatewayAPI": {"httpRoute": "app"}},
            "smi": {"smi": {}},
            "istio": {
                "istio": {
                    "virtualService": {"name": "app"},
                    "destinationRule": {
                        "name": "app",
                        "stableSubsetName": "stable",
                        "canarySubsetName": "canary",
                    },
                }
            },
            "nginx": {"nginx": {"stableIngress": "web"}},
        }
        routing = routings[self.router]
        templates = [
            {"templateName": "token-echo"},
            {"templateName": self.cluster_template, "clusterScope": True},
        ]
        doc = rollout_doc(
            "app",
            replicas=1,
            steps=[{"setWeight": 50}, {"analysis": {"templates": templates}}],
            stableService="app-stable",
            canaryService="app-canary",
            trafficRouting=routing,
            scaleDownDelaySeconds=0,
            abortScaleDownDelaySeconds=0,
        )
        doc["spec"]["revisionHistoryLimit"] = 0
        return doc

    # -- reading and changing -------------------------------------------------------------

    def create_rollout(self) -> None:
        """Create the Rollout."""
        self.custom.create_namespaced_custom_object(*STEPWISE, self.ns, "rollouts", self.rollout())

    def get(self) -> dict[str, Any]:
        """The Rollout."""
        found = self.custom.get_namespaced_custom_object(*STEPWISE, self.ns, "rollouts", "app")
        assert isinstance(found, dict)
        return found

    def status(self) -> dict[str, Any]:
        """The Rollout's status."""
        return self.get().get("status") or {}

    def set_image(self, image: str) -> str:
        """Change the image; returns the new revision."""
        template = copy.deepcopy(self.get()["spec"]["template"])
        template["spec"]["containers"][0]["image"] = image
        self.custom.patch_namespaced_custom_object(
            *STEPWISE, self.ns, "rollouts", "app", {"spec": {"template": template}}
        )
        return template_hash(template)

    def replica_sets(self) -> set[str]:
        """Names of the ReplicaSets in the namespace."""
        return {
            str(rs.metadata.name) for rs in self.apps.list_namespaced_replica_set(self.ns).items
        }

    def routed_canary_weight(self) -> int | None:
        """The canary's weight as the router's object says (None: no canary there)."""
        if self.router == "gatewayAPI":
            route = self.custom.get_namespaced_custom_object(
                *GATEWAY[:2], self.ns, GATEWAY[2], "app"
            )
            refs = route["spec"]["rules"][0]["backendRefs"]
            return next((int(r["weight"]) for r in refs if r["name"] == "app-canary"), None)
        if self.router == "smi":
            split = self.custom.get_namespaced_custom_object(*SMI[:2], self.ns, SMI[2], "app")
            backends = split["spec"]["backends"]
            return next((int(b["weight"]) for b in backends if b["service"] == "app-canary"), None)
        if self.router == "istio":
            vs = self.custom.get_namespaced_custom_object(*ISTIO, self.ns, "virtualservices", "app")
            route = vs["spec"]["http"][0]["route"]
            return next(
                (int(d["weight"]) for d in route if d["destination"].get("subset") == "canary"),
                None,
            )
        ingress = self.networking.read_namespaced_ingress("web-app-canary", self.ns)
        return int(ingress.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight"])

    def cleanup(self) -> None:
        """Delete the cluster-scoped template (the namespace goes with its fixture)."""
        with absent_ok():
            self.custom.delete_cluster_custom_object(
                *STEPWISE, "clusteranalysistemplates", self.cluster_template
            )


def drive(world: World, *, timeout: float, give_up: Callable[[], bool] = lambda: False) -> str:
    """Create the Rollout, wait until v1 is Healthy, roll out v2 and wait until it is
    promoted and the old ReplicaSet deleted. Returns "completed", or the stage it was
    stuck at when ``give_up()`` said so or the time ran out."""
    deadline = time.monotonic() + timeout

    def reach(check: Callable[[], bool]) -> bool:
        while time.monotonic() < deadline:
            if check():
                return True
            if give_up():
                return False
            time.sleep(0.2)
        return False

    world.create_rollout()
    if not reach(lambda: world.status().get("phase") == "Healthy"):
        return "stuck before v1 was Healthy"
    canary = world.set_image("registry.local/app:v2")

    def promoted() -> bool:
        s = world.status()
        return (s.get("stableRevision"), s.get("phase"), s.get("canaryWeight")) == (
            canary,
            "Healthy",
            0,
        )

    if not reach(promoted):
        return f"stuck before v2 was promoted: {world.status().get('message')}"
    if not reach(lambda: world.replica_sets() == {f"app-{canary}"}):
        return "stuck before the old ReplicaSet was deleted"
    return "completed"


def refusals(proc: ControllerProcess, user: str) -> list[str]:
    """Log lines where the API server refused the ServiceAccount (an RBAC 403), and the
    informers' 403s (a refused watch has no message to name the user)."""
    if not proc.log_path.exists():
        return []
    text = proc.log_path.read_text(errors="replace").replace('\\"', '"')
    return [
        line
        for line in text.splitlines()
        if f'User "{user}" cannot ' in line or ('"informer": ' in line and '"status": 403' in line)
    ]


def forbidden(log: str) -> list[str]:
    """Log lines with a 403, but for writes into a namespace being deleted: a cluster-wide
    controller still sees the Rollouts of earlier tests while their namespaces go, and
    the API server refuses new objects there with Forbidden whatever the RBAC."""
    return [
        line
        for line in log.splitlines()
        if "forbidden" in line.lower() and "because it is being terminated" not in line
    ]


def measurements(metrics: str, namespace: str) -> dict[tuple[str, str], float]:
    """stepwise_analysis_measurements_total of one namespace, by (metric, phase)."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "stepwise_analysis_measurements_total" and (
                labels.get("namespace") == namespace
            ):
                out[(labels["metric"], labels["phase"])] = sample.value
    return out


P = TypeVar("P", bound=ControllerProcess)


def controller_for(process: type[P], install: Install, log_dir: Path) -> P:
    """``stepwise run`` with the token kubeconfig and the chart's own flags (leader
    election on, the Lease in the chart's namespace, its Prometheus, its namespaces), as
    a ``process`` (a ControllerProcess or a subclass)."""
    return process(
        install.kubeconfig,
        log_dir,
        leader_election=True,
        lease_name=LEASE,
        lease_namespace=install.namespace,
        extra=install.controller_args(),
    )


#: :func:`install_chart` with the tools and cluster bound: (namespace, workdir, values).
Installer = Callable[[str, Path, dict[str, Any]], Install]


@contextlib.contextmanager
def shared_chart(
    api_client: client.ApiClient, installer: Installer, prometheus_url: str, workdir: Path
) -> Iterator[Install]:
    """The chart (cluster-wide) in its own namespace, for every removal case."""
    core = client.CoreV1Api(api_client)
    namespace = f"stepwise-rbac-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    install = installer(namespace, workdir, {"prometheus": {"address": prometheus_url}})
    try:
        yield install
    finally:
        delete_cluster_scoped(api_client, install.docs)
        core.delete_namespace(namespace, propagation_policy="Background")


# -- every rule, and every verb, is needed ----------------------------------------------


@dataclass(frozen=True)
class RuleCase:
    """One rule of the chart's RBAC (or one verb of a rule) taken away for one test."""

    kind: str
    index: int
    rule: dict[str, Any]
    verb: str | None = None

    @property
    def id(self) -> str:
        """The rule's resources (and verbs, for the two Lease rules, or the one verb)."""
        name = "+".join(self.rule["resources"])
        if self.verb is not None:
            return f"{name}:{self.verb}"
        return f"{name}:{'+'.join(self.rule['verbs'])}" if self.kind == "Role" else name

    @property
    def verbs(self) -> list[str]:
        """The verbs taken away."""
        return [self.verb] if self.verb is not None else list(self.rule["verbs"])

    @property
    def router(self) -> str:
        """The router whose scenario exercises the rule."""
        return next(
            (ROUTER_FOR[r] for r in self.rule["resources"] if r in ROUTER_FOR), "gatewayAPI"
        )

    def without(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rules`` less this rule, or less this verb of it."""
        out = []
        for i, rule in enumerate(rules):
            if i != self.index:
                out.append(rule)
            elif self.verb is not None:
                out.append({**rule, "verbs": [v for v in rule["verbs"] if v != self.verb]})
        return out

    def refused(self, lines: list[str]) -> list[str]:
        """The refusals that name this rule's resource with a verb taken away. A refused
        watch carries no message (its body is a stream), so it is an informer's 403
        after its list went through."""
        wanted = [
            f'cannot {verb} resource "{resource}"'
            for verb in self.verbs
            for resource in self.rule["resources"]
        ]
        watchers = [
            (f'"informer": "{resource}"', f'"informer": "{resource}.')
            for resource in self.rule["resources"]
            if "watch" in self.verbs
        ]
        return [
            line
            for line in lines
            if any(w in line for w in wanted)
            or (
                '"status": 403' in line
                and "cannot list" not in line
                and any(a in line or b in line for a, b in watchers)
            )
        ]


def rule_cases() -> list[RuleCase]:
    """Every rule of deploy/base's ClusterRole and lease Role (the chart's, by
    ``test_chart_and_kustomize_grant_the_same_rules``)."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(BASE_RBAC.read_text())}
    return [
        RuleCase(kind, i, rule)
        for kind in ("ClusterRole", "Role")
        for i, rule in enumerate(docs[kind]["rules"])
    ]


def verb_cases() -> list[RuleCase]:
    """Each verb of the rules with more than one (a one-verb rule is a rule case)."""
    return [
        RuleCase(case.kind, case.index, case.rule, verb)
        for case in rule_cases()
        if len(case.rule["verbs"]) > 1
        for verb in case.rule["verbs"]
    ]


def allowed(api_client: client.ApiClient, install: Install, case: RuleCase, shop: str) -> bool:
    """Whether the API server's authorizer grants the first verb taken away, now."""
    resource, _, subresource = case.rule["resources"][0].partition("/")
    cluster_scoped = resource == "clusteranalysistemplates"
    names = case.rule.get("resourceNames") or [""]
    attributes = client.V1ResourceAttributes(
        group=case.rule["apiGroups"][0],
        resource=resource,
        subresource=subresource or None,
        verb=case.verbs[0],
        namespace=None if cluster_scoped else install.namespace if case.kind == "Role" else shop,
        name=names[0] or None,
    )
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=install.user,
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{install.namespace}",
                "system:authenticated",
            ],
            resource_attributes=attributes,
        )
    )
    answer = client.AuthorizationV1Api(api_client).create_subject_access_review(review)
    return bool(answer.status.allowed)


def set_rules(
    api_client: client.ApiClient, install: Install, kind: str, rules: list[dict[str, Any]]
) -> None:
    """Replace the rules of the chart's ClusterRole or lease Role."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    name = install.role(kind)["metadata"]["name"]
    body = {"rules": rules}
    merge = "application/merge-patch+json"
    if kind == "ClusterRole":
        rbac.patch_cluster_role(name, body, _content_type=merge)
    else:
        rbac.patch_namespaced_role(name, install.namespace, body, _content_type=merge)


class Launched(ControllerProcess):
    """A controller process started without waiting for /readyz: one whose list is refused
    never becomes ready, and that is part of what is being shown."""

    def launch(self) -> None:
        """Start the process and return at once."""
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'hack'}"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )


def run_without(
    case: RuleCase,
    install: Install,
    api_client: client.ApiClient,
    shop: str,
    log_dir: Path,
) -> None:
    """The scenario with ``case`` taken away from the RBAC must be refused: a 403 naming
    the resource and a verb taken away. A rollout that merely fails to finish proves
    nothing (a slow machine does that too), so it is given as long as the full-rights
    run and must still show the refusal."""
    world = World(api_client, shop, case.router)
    coordination = client.CoordinationV1Api(api_client)
    with absent_ok():  # a fresh install has no Lease yet (creating it is one of the rules)
        coordination.delete_namespaced_lease(LEASE, install.namespace)
    full = install.role(case.kind)["rules"]
    set_rules(api_client, install, case.kind, case.without(full))
    proc = controller_for(Launched, install, log_dir)
    try:
        wait_for("the rule taken away", lambda: not allowed(api_client, install, case, shop))
        if "rollouts/finalizers" in case.rule["resources"]:
            wait_for("owner references refused", lambda: owner_reference_refused(install, shop))
        proc.launch()
        try:

            def refused_now() -> list[str]:
                return case.refused(refusals(proc, install.user))

            # The team's objects come after the controller has listed (or been refused):
            # only a watch brings them, as in a cluster where Stepwise was installed first.
            wait_for(
                "the controller started",
                lambda: proc.probe("/readyz") == 200 or refused_now() or not proc.alive(),
                timeout=30,
            )
            world.setup()
            outcome = drive(world, timeout=90, give_up=lambda: bool(refused_now()))
            if outcome == "completed":  # a verb used only later, e.g. renewing the Lease
                with contextlib.suppress(AssertionError):
                    wait_for("a refusal", refused_now, timeout=SETTLE)
            refused = refused_now()
        finally:
            # Not stop(): a controller still waiting for a refused list to sync ignores
            # SIGTERM until its 60 s sync timeout. Its Lease is deleted before each case.
            proc.sigkill()
    finally:
        set_rules(api_client, install, case.kind, full)
        wait_for("the rule restored", lambda: allowed(api_client, install, case, shop))
        world.cleanup()
    print(f"{case.id}: {outcome}; {refused[0][:400] if refused else 'no 403 logged'}")
    assert refused, f"{outcome} without {case.id}, but no 403 was logged:\n{proc.tail()}"
