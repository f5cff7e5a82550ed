"""Traefik v3 as the local data plane: its Kubernetes Gateway API provider watches the
cluster and routes real HTTP requests on 127.0.0.1 by the weights of HTTPRoutes.

Traefik runs as a process outside the cluster (built by ``hack/cluster/build-traefik.sh``)
and talks to the API server as a ServiceAccount of its own, with the permissions its
Gateway provider needs (Traefik's documented ClusterRole, without the pod read that only
OpenTelemetry uses) and a token from the TokenRequest API. ``LocalTraefik.start()``
installs the Gateway API CRDs (standard channel, the version Traefik was built against),
creates a GatewayClass and a Gateway with one HTTP listener, and waits until Traefik has
accepted and programmed them; an HTTPRoute then names the Gateway in its ``parentRefs``
(:meth:`LocalTraefik.parent_ref`) and is served on :attr:`LocalTraefik.url`.

How Gateway listeners map to Traefik: a listener is bound to the entryPoint whose address
ends in ``:<listener port>`` (Traefik's ``entryPointName``; an HTTP listener skips an
entryPoint with TLS). So the Gateway's listener port is the free port of the ``web``
entryPoint, not a cluster port; a listener with another port is refused with a
"Cannot find entryPoint" condition.

Backends are reached at the addresses of their Service's EndpointSlices (Traefik's
default, not the ClusterIP): only endpoints with ``conditions.ready: true`` and a port
whose name equals the Service port's name count. The API server refuses loopback
addresses in IPv4 EndpointSlices ("may not be in the loopback range"), so a backend on
127.0.0.x is published as an FQDN EndpointSlice whose address is the dotted quad
(:func:`loopback_endpoint_slice`): Traefik joins address and port into the server URL
without looking at the address type.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from localcluster.crds import install_crds
from localcluster.process import Component, ComponentError, Running, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "cluster" / "build-traefik.sh"

#: The controllerName Traefik's Gateway provider claims GatewayClasses by (fixed upstream).
CONTROLLER_NAME = "traefik.io/gateway-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
#: Label on this instance's GatewayClass; Traefik's ``labelSelector`` picks it, so two
#: LocalTraefiks on one cluster never both claim a class (or fight over statuses).
INSTANCE_LABEL = "stepwise.dev/traefik-instance"

#: What Traefik's Gateway provider reads and writes (its documented ClusterRole: it
#: informs on all of these, and update status of what it reconciles).
_ROUTE_KINDS = [
    "gatewayclasses",
    "gateways",
    "httproutes",
    "grpcroutes",
    "tcproutes",
    "tlsroutes",
    "referencegrants",
    "backendtlspolicies",
]
RBAC_RULES = [
    client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["list", "watch"]),
    client.V1PolicyRule(
        api_groups=[""],
        resources=["services", "secrets", "configmaps"],
        verbs=["get", "list", "watch"],
    ),
    client.V1PolicyRule(
        api_groups=["discovery.k8s.io"], resources=["endpointslices"], verbs=["list", "watch"]
    ),
    client.V1PolicyRule(
        api_groups=[GATEWAY_GROUP], resources=_ROUTE_KINDS, verbs=["get", "list", "watch"]
    ),
    client.V1PolicyRule(
        api_groups=[GATEWAY_GROUP],
        resources=[f"{kind}/status" for kind in _ROUTE_KINDS],
        verbs=["update"],
    ),
]

#: Lifetime asked of the ServiceAccount token (a pytest session is far shorter).
TOKEN_SECONDS = 24 * 3600


def ensure_traefik() -> Path:
    """Build (or reuse) Traefik and the Gateway API CRDs; returns their directory."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=False, stdout=subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        raise ComponentError(
            f"building Traefik failed ({BUILD_SCRIPT}); its error is printed above"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def gateway_api_crds() -> list[Path]:
    """The Gateway API's standard-channel CRDs (built or reused with Traefik)."""
    return standard_crds(ensure_traefik())


def standard_crds(build_dir: Path) -> list[Path]:
    """The Gateway API standard-channel CRD files of a build directory.

    The channel also ships ``*_vap_safeupgrades.yaml``, a ValidatingAdmissionPolicy that
    refuses Gateway API CRDs without its bundle-version annotation; it is left out (the
    tests install the CRDs as they are, and a cluster may hold CRDs from elsewhere)."""
    files = [
        path
        for path in sorted((build_dir / "gateway-api-crds").glob("*.yaml"))
        # A look at the text, not a parse: the CRDs are large and install_crds parses them.
        if re.search(r"^kind: CustomResourceDefinition$", path.read_text(), re.MULTILINE)
    ]
    if not files:
        raise ComponentError(f"no Gateway API CRDs in {build_dir / 'gateway-api-crds'}")
    return files


def loopback_endpoint_slice(
    service: str, address: str, port: int, *, port_name: str = "http"
) -> dict[str, Any]:
    """An EndpointSlice putting one ready endpoint ``address:port`` (a 127.0.0.x backend)
    behind a selector-less Service whose port is named ``port_name``.

    The address type is FQDN because the API server refuses loopback addresses in IPv4
    slices; Traefik uses the address as it is (see the module docstring). The API server
    answers with a warning that FQDN endpoints are deprecated."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-loopback",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "stepwise-tests",
            },
        },
        "addressType": "FQDN",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


class LocalTraefik(Running):
    """Traefik on free 127.0.0.1 ports, serving one Gateway of the cluster.

    Use as a context manager, or ``start()`` / ``stop()``. ``stop()`` deletes what
    ``start()`` created in the cluster (Gateway, GatewayClass, ServiceAccount, ClusterRole
    and binding) but leaves the CRDs and the Gateway's namespace in place."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str = "stepwise-gateway",
        gateway_name: str | None = None,
        build_dir: Path | None = None,
        workdir: Path | None = None,
        log_level: str = "INFO",
    ) -> None:
        """``kubeconfig`` is an admin kubeconfig (LocalCluster's ``endpoints.kubeconfig``);
        Traefik gets the API server address and CA from it, and a token of its own.
        ``namespace`` holds the Gateway and Traefik's ServiceAccount (created if missing).
        """
        self.kubeconfig = kubeconfig
        self.gateway_namespace = namespace
        self._build_dir = build_dir
        self.log_level = log_level
        self.instance = uuid.uuid4().hex[:8]
        # A name of its own: an HTTPRoute left in a namespace still being deleted names
        # the Gateway of an earlier instance, and must not attach to this one (seen: a
        # test's requests went to the routes of the test before it and got 502).
        self.gateway_name = gateway_name or f"stepwise-gateway-{self.instance}"
        self.gateway_class = f"stepwise-traefik-{self.instance}"
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="stepwise-traefik-"))
        self.port = 0
        self.api_port = 0
        self.component: Component | None = None
        self._api: client.ApiClient | None = None
        self._cleanup: list[tuple[str, Callable[[], object]]] = []

    # -- public ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the Gateway's listener serves, for example ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """Traefik's own API and ``/ping`` (the ``traefik`` entryPoint)."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def listener_name(self) -> str:
        """The Gateway's one listener (HTTP, on :attr:`port`)."""
        return "web"

    def parent_ref(self) -> dict[str, Any]:
        """The ``parentRefs`` entry that attaches an HTTPRoute to this Gateway."""
        return {
            "group": GATEWAY_GROUP,
            "kind": "Gateway",
            "name": self.gateway_name,
            "namespace": self.gateway_namespace,
            "sectionName": self.listener_name,
        }

    def start(self, timeout: float = 60.0) -> None:
        """Install the CRDs, create RBAC, GatewayClass and Gateway, start Traefik and wait
        until it has accepted and programmed the Gateway."""
        deadline = time.monotonic() + timeout
        build_dir = self._build_dir or ensure_traefik()
        binary = build_dir / "traefik"
        if not binary.is_file():
            raise ComponentError(
                f"no traefik binary in {build_dir}; run hack/cluster/build-traefik.sh"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        try:
            install_crds(self._api, standard_crds(build_dir))
            self.port, self.api_port = free_port(), free_port()
            token = self._service_account()
            config_file = self._write_config(token)
            self._create_gateway()
            self.component = Component(
                "traefik",
                # Traefik prefers KUBECONFIG and in-cluster variables over its configured
                # endpoint; `env -u` keeps the test runner's environment out of that choice.
                [
                    "env",
                    "-u",
                    "KUBECONFIG",
                    "-u",
                    "KUBERNETES_SERVICE_HOST",
                    "-u",
                    "KUBERNETES_SERVICE_PORT",
                    str(binary),
                    f"--configFile={config_file}",
                ],
                self.workdir / "traefik.log",
            )
            self.component.start()
            wait_until("traefik /ping", self._ping, [self.component], _left(deadline))
            wait_until(
                f"Gateway {self.gateway_namespace}/{self.gateway_name} Accepted and Programmed",
                self._gateway_programmed,
                [self.component],
                _left(deadline),
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Traefik, delete what start() created in the cluster, remove the work dir."""
        if self.component is not None:
            self.component.stop()
            self.component = None
        if self._api is not None:
            for kind, delete in reversed(self._cleanup):
                try:
                    delete()
                except ApiException as exc:
                    if exc.status != 404:
                        raise ComponentError(f"deleting the {kind} failed: {exc}") from exc
            self._cleanup.clear()
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def check(self) -> None:
        """Raise :class:`ComponentError`, with the log tail, if Traefik has exited."""
        if self.component is not None:
            self.component.check()

    def api(self, path: str) -> Any:
        """A GET on Traefik's API, for example ``/api/http/services``; the decoded JSON."""
        with urllib.request.urlopen(f"{self.api_url}{path}", timeout=5) as resp:  # noqa: S310
            return json.loads(resp.read())

    def weights(self, route_namespace: str, route_name: str) -> dict[str, int]:
        """The weights Traefik currently applies to an HTTPRoute's backends, by Service
        name (summed over the route's rules), as its API reports its weighted services."""
        prefix = f"httproute-{route_namespace}-{route_name}-gw-"
        # The API pages its lists (100 a page by default) and searches names by substring.
        query = urllib.parse.urlencode({"search": prefix, "per_page": 10000})
        found: dict[str, int] = {}
        for service in self.api(f"/api/http/services?{query}"):
            if not str(service.get("name", "")).startswith(prefix):
                continue
            for backend in (service.get("weighted") or {}).get("services") or []:
                name = _backend_service(str(backend["name"]), route_namespace)
                found[name] = found.get(name, 0) + int(backend.get("weight", 1))
        return found

    # -- start-up -------------------------------------------------------------------

    def _service_account(self) -> str:
        """Namespace, ServiceAccount, ClusterRole and binding; returns a fresh token."""
        assert self._api is not None
        core = client.CoreV1Api(self._api)
        rbac = client.RbacAuthorizationV1Api(self._api)
        ns, name = self.gateway_namespace, f"traefik-{self.instance}"
        # Created if missing and left in place: a namespace takes seconds to terminate, and
        # the next LocalTraefik (another test module's) would find it terminating.
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        core.create_namespaced_service_account(
            ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
        self._cleanup.append(
            ("ServiceAccount", lambda: core.delete_namespaced_service_account(name, ns))
        )
        role = f"stepwise-traefik-{self.instance}"
        rbac.create_cluster_role(
            client.V1ClusterRole(metadata=client.V1ObjectMeta(name=role), rules=RBAC_RULES)
        )
        self._cleanup.append(("ClusterRole", lambda: rbac.delete_cluster_role(role)))
        rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=role),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=ns)],
            )
        )
        self._cleanup.append(("ClusterRoleBinding", lambda: rbac.delete_cluster_role_binding(role)))
        # No audiences: the API server's own (its service-account issuer by default).
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
        )
        answer = core.create_namespaced_service_account_token(name, ns, request)
        if answer.status is None or not answer.status.token:
            raise ComponentError(
                f"the TokenRequest for ServiceAccount {ns}/{name} returned no token"
            )
        return answer.status.token

    def _write_config(self, token: str) -> Path:
        """Token and CA files and Traefik's static configuration; returns its path."""
        assert self._api is not None
        server = str(self._api.configuration.host)
        ca_source = self._api.configuration.ssl_ca_cert
        if not server.startswith("https://") or not ca_source:
            raise ComponentError(
                f"{self.kubeconfig} names no https server with a CA certificate; "
                "Traefik needs both to reach the API server"
            )
        # Copies: the client may have written inline CA data to a temp file of its own.
        ca = self.workdir / "ca.crt"
        ca.write_bytes(Path(ca_source).read_bytes())
        token_file = self.workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        # Stop within a second of SIGTERM instead of waiting 10 s for open connections.
        lifecycle = {"requestAcceptGraceTimeout": "0s", "graceTimeOut": "1s"}
        static = {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "log": {"level": self.log_level, "noColor": True},
            "entryPoints": {
                "web": {
                    "address": f"127.0.0.1:{self.port}",
                    "transport": {"lifeCycle": dict(lifecycle)},
                },
                "traefik": {
                    "address": f"127.0.0.1:{self.api_port}",
                    "transport": {"lifeCycle": dict(lifecycle)},
                },
            },
            "ping": {"entryPoint": "traefik"},
            # One JSON line a request: which server answered, and how (for diagnosis).
            "accessLog": {"filePath": str(self.workdir / "access.log"), "format": "json"},
            "api": {"insecure": True, "dashboard": False},
            "providers": {
                # Apply a changed configuration 100 ms after the last event, not 2 s.
                "providersThrottleDuration": "100ms",
                "kubernetesGateway": {
                    "endpoint": server,
                    "token": str(token_file),
                    "certAuthFilePath": str(ca),
                    "labelSelector": f"{INSTANCE_LABEL}={self.instance}",
                    "statusAddress": {"ip": "127.0.0.1"},
                },
            },
        }
        path = self.workdir / "traefik.yaml"
        path.write_text(yaml.safe_dump(static, sort_keys=False))
        return path

    def _create_gateway(self) -> None:
        assert self._api is not None
        custom = client.CustomObjectsApi(self._api)
        cls, ns, name = self.gateway_class, self.gateway_namespace, self.gateway_name
        custom.create_cluster_custom_object(
            GATEWAY_GROUP,
            GATEWAY_VERSION,
            "gatewayclasses",
            {
                "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
                "kind": "GatewayClass",
                "metadata": {"name": cls, "labels": {INSTANCE_LABEL: self.instance}},
                "spec": {"controllerName": CONTROLLER_NAME},
            },
        )
        self._cleanup.append(
            (
                "GatewayClass",
                lambda: custom.delete_cluster_custom_object(
                    GATEWAY_GROUP, GATEWAY_VERSION, "gatewayclasses", cls
                ),
            )
        )
        custom.create_namespaced_custom_object(
            GATEWAY_GROUP,
            GATEWAY_VERSION,
            ns,
            "gateways",
            {
                "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
                "kind": "Gateway",
                "metadata": {"name": name},
                "spec": {
                    "gatewayClassName": cls,
                    "listeners": [
                        {
                            "name": self.listener_name,
                            "protocol": "HTTP",
                            # Traefik binds a listener to the entryPoint with this port.
                            "port": self.port,
                            "allowedRoutes": {"namespaces": {"from": "All"}},
                        }
                    ],
                },
            },
        )
        self._cleanup.append(
            (
                "Gateway",
                lambda: custom.delete_namespaced_custom_object(
                    GATEWAY_GROUP, GATEWAY_VERSION, ns, "gateways", name
                ),
            )
        )

    # -- readiness ------------------------------------------------------------------

    def _ping(self) -> bool:
        with urllib.request.urlopen(f"{self.api_url}/ping", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)

    def _gateway_programmed(self) -> bool:
        assert self._api is not None
        gateway = client.CustomObjectsApi(self._api).get_namespaced_custom_object(
            GATEWAY_GROUP, GATEWAY_VERSION, self.gateway_namespace, "gateways", self.gateway_name
        )
        assert isinstance(gateway, dict)
        generation = gateway["metadata"].get("generation")
        conditions = {
            c["type"]: c
            for c in (gateway.get("status") or {}).get("conditions") or []
            if c.get("observedGeneration") == generation
        }
        return all(
            conditions.get(kind, {}).get("status") == "True" for kind in ("Accepted", "Programmed")
        )


def _backend_service(traefik_name: str, namespace: str) -> str:
    """The Service in the name Traefik gives a route's backend, for example ``stable`` in
    ``httproute-ns-app-gw-gwns-gw-ep-web-0-85af443a7b9efb0a4579-svc-ns-stable-0`` (the
    router's name, ``-svc-``, the Service's namespace and name, the backendRef's index)."""
    marker = f"-svc-{namespace}-"
    if marker not in traefik_name:
        return traefik_name
    return traefik_name.rsplit(marker, 1)[1].split("@", 1)[0].rsplit("-", 1)[0]


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.5)
