"""A real Kubernetes control plane as local processes on 127.0.0.1.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose
pods become Ready) run from the binaries that ``hack/cluster/build.sh`` builds, on free
ports, with generated certificates and an admin kubeconfig. ``LocalCluster`` starts them
in order, waits for each to be ready (failing at once, with its last log lines, if one
exits), registers the fake nodes, and tears everything down, temp directory included.

Why not kwokctl's binary runtime: the tests need to restart or kill single components
(the API server mid-rollout) and to fail a fixture the moment one crashes; owning the
few processes directly keeps that to a method call each.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from localcluster import pki as pki_mod
from localcluster.process import Component, ComponentError, Running, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "cluster" / "build.sh"
STAGES = REPO / "hack" / "cluster" / "kwok-stages.yaml"

#: Label, annotation and taint of the fake nodes. Test pods tolerate the taint and select
#: the label, so the same tests run on a kind cluster whose real node is schedulable too.
KWOK_NODE_LABEL = ("type", "kwok")
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
#: Pod IPs (kwok's ``--cidr``; the first pod gets 127.1.0.1) and the fake nodes' IP, both
#: in the loopback range so that a process can serve a pod on its podIP:port here
#: (hack/podrunner). 127.0.0.0/16 stays for the local processes (127.0.0.1, 127.0.0.x).
#: The API server refuses loopback addresses in IPv4 EndpointSlices, so the controller
#: manager cannot publish these pods; the pod runner publishes its pods' slices itself.
POD_CIDR = "127.1.0.0/16"
#: kwok keeps the pod IPs it handed out in memory only, so each kwok a LocalCluster starts
#: (a first one, then one per restart) hands out a range of POD_CIDR of its own: 16 ranges
#: of 4,094 addresses in a /16, taken in turn. A new kwok can then never give a new pod
#: the address of a pod that lives on from an earlier kwok (until 16 restarts later).
KWOK_RANGES = 16
NODE_IP = "127.2.0.1"


def ensure_binaries() -> Path:
    """Build (or reuse) the control-plane binaries; returns their directory."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=False, stdout=subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        raise ComponentError(
            f"building the control plane failed ({BUILD_SCRIPT}); its error is printed above"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Endpoints:
    """How to reach the running cluster."""

    kubeconfig: Path
    server: str
    ca_cert: Path
    admin_cert: Path
    admin_key: Path


#: How often start() tries again with fresh ports when a component found its port taken
#: (a free port is only free until another process binds it).
START_ATTEMPTS = 3
_PORT_TAKEN = "address already in use"

#: The components that talk to the API server, restarted after it (see restart_apiserver).
_API_CLIENTS = ("kube-controller-manager", "kube-scheduler", "kwok")


class LocalCluster(Running):
    """The control plane. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        bin_dir: Path,
        *,
        nodes: int = 1,
        workdir: Path | None = None,
        external_kubeconfig: Path | None = None,
        controller_manager_qps: int | None = None,
        port_allocator: Callable[[], int] = free_port,
        taint: bool = True,
    ) -> None:
        """``external_kubeconfig`` attaches to a running cluster (kind, say): only kwok is
        started, to provide the fake nodes. ``controller_manager_qps`` raises the
        controller-manager's client rate limit (``--kube-api-qps``, burst 1.5 times
        that) from its default of 20, which otherwise paces pod creation in bursts.
        ``port_allocator`` hands out the components' ports (a free one each call).
        ``taint`` puts :data:`KWOK_TAINT` on the fake nodes, which the tests tolerate so
        that they also run on kind beside a real node; ``make cluster-up``, where every
        node is fake, leaves it off so that any manifest's pods schedule as written."""
        self.bin_dir = bin_dir
        self._port = port_allocator
        self.controller_manager_qps = controller_manager_qps
        self.external_kubeconfig = external_kubeconfig
        self.nodes = nodes
        self.taint = taint
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="stepwise-cluster-"))
        self.components: dict[str, Component] = {}
        self._endpoints: Endpoints | None = None
        self._ports: dict[str, int] = {}
        self._kwok_generation = 0

    def _controller_manager_rate(self) -> list[str]:
        qps = self.controller_manager_qps
        if qps is None:
            return []
        return [f"--kube-api-qps={qps}", f"--kube-api-burst={qps * 3 // 2}"]

    # -- public ---------------------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        """Kubeconfig and server address; only after ``start()``."""
        if self._endpoints is None:
            raise RuntimeError("the cluster is not started")
        return self._endpoints

    def start(self, timeout: float = 60.0) -> Endpoints:
        """Start every component and wait until the fake nodes are Ready.

        A component that exits because its port was taken in the meantime is not a
        failure of the cluster: everything is stopped and started again on fresh ports,
        up to ``START_ATTEMPTS`` times. Any other failure raises at once."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start(timeout)
            except ComponentError as err:
                self.stop()
                if _PORT_TAKEN not in str(err) or attempt == START_ATTEMPTS:
                    raise
                self.workdir.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def check(self) -> None:
        """Raise :class:`ComponentError`, with its last log lines, if any component has
        exited since it was started (the test fixtures call it around every test)."""
        for comp in self.components.values():
            comp.check()

    def stop(self) -> None:
        """Stop every component (reverse order) and remove the work directory."""
        for comp in reversed(list(self.components.values())):
            comp.stop()
        self.components.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self, down_for: float = 0.0, timeout: float = 60.0) -> None:
        """Stop the API server, wait ``down_for`` seconds, start it again and wait for ready;
        then restart the controller manager, the scheduler and kwok.

        A fresh API server's watch cache begins at etcd's current revision, so every watch
        the other components resume from an older resourceVersion ends in 410 Gone, and
        client-go relists only after its backoff: up to a minute, seen here, in which the
        ReplicaSet controller refuses to create pods ("read version ... is not as new as
        written version"). Restarting them leaves the shared cluster as prompt as a fresh
        one for the tests that follow; the process under test sees the same restart.
        """
        deadline = time.monotonic() + timeout
        api = self.components["kube-apiserver"]
        api.stop()
        time.sleep(down_for)
        api.start()
        wait_until("kube-apiserver", self._apiserver_ready, [api], _left(deadline))
        for name in _API_CLIENTS:
            self.components[name].stop()
        self._release_node_leases()
        self._kwok_generation += 1
        kwok = self.components["kwok"]
        kwok.argv = [a for a in kwok.argv if not a.startswith("--cidr=")]
        kwok.argv.append(f"--cidr={self.kwok_cidr}")
        for name in _API_CLIENTS:
            self.components[name].start()
        self._wait_clients_ready(deadline)

    @property
    def kwok_cidr(self) -> str:
        """The pod addresses the current kwok hands out (see :data:`KWOK_RANGES`)."""
        network = ipaddress.ip_network(POD_CIDR)
        ranges = list(network.subnets(prefixlen_diff=4))
        return str(ranges[self._kwok_generation % KWOK_RANGES])

    def _release_node_leases(self) -> None:
        """Delete the fake nodes' leases: a new kwok manages a node only once it holds its
        lease, and would otherwise wait out the old process's (40 s)."""
        with self._admin_api() as api:
            coordination = client.CoordinationV1Api(api)
            for i in range(self.nodes):
                try:
                    coordination.delete_namespaced_lease(f"kwok-node-{i}", "kube-node-lease")
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    @contextlib.contextmanager
    def _admin_api(self) -> Iterator[client.ApiClient]:
        kubeconfig = self.external_kubeconfig or self.workdir / "kubeconfig"
        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        try:
            yield api
        finally:
            api.close()

    def component(self, name: str) -> Component:
        """One running component by name (etcd, kube-apiserver, ...)."""
        return self.components[name]

    # -- start-up -------------------------------------------------------------------

    def _start(self, timeout: float) -> Endpoints:
        deadline = time.monotonic() + timeout
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.external_kubeconfig is not None:
            self._ports = {"kwok": self._port()}
            self._start_kwok(self.external_kubeconfig, logs)
            self._finish(deadline, register_nodes=True)
            self._endpoints = Endpoints(
                kubeconfig=self.external_kubeconfig,
                server="",
                ca_cert=Path(),
                admin_cert=Path(),
                admin_key=Path(),
            )
            return self._endpoints
        certs = pki_mod.generate(self.workdir / "pki")
        ports = {
            name: self._port()
            for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")
        }
        self._ports = ports
        server = f"https://127.0.0.1:{ports['apiserver']}"
        kubeconfig = self.workdir / "kubeconfig"
        kubeconfig.write_text(_kubeconfig(server, certs))
        kubeconfig.chmod(0o600)
        self._endpoints = Endpoints(
            kubeconfig=kubeconfig,
            server=server,
            ca_cert=certs.ca_cert,
            admin_cert=certs.admin_cert,
            admin_key=certs.admin_key,
        )
        self._ssl = ssl.create_default_context(cafile=str(certs.ca_cert))
        self._ssl.load_cert_chain(str(certs.admin_cert), str(certs.admin_key))

        b = self.bin_dir
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._add(
            "etcd",
            [
                str(b / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs,
        )
        wait_until(
            "etcd",
            lambda: _http_ok(f"{etcd_url}/health"),
            self.components.values(),
            _left(deadline),
        )
        self._add("kube-apiserver", self._apiserver_argv(certs, etcd_url), logs)
        wait_until(
            "kube-apiserver", self._apiserver_ready, self.components.values(), _left(deadline)
        )
        common = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--cert-dir={self.workdir / 'serving'}",
            "--v=1",
        ]
        self._add(
            "kube-controller-manager",
            [
                str(b / "kube-controller-manager"),
                *common,
                f"--secure-port={ports['kcm']}",
                f"--service-account-private-key-file={certs.sa_private}",
                f"--root-ca-file={certs.ca_cert}",
                f"--cluster-signing-cert-file={certs.ca_cert}",
                f"--cluster-signing-key-file={certs.ca_key}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                *self._controller_manager_rate(),
            ],
            logs,
        )
        self._add(
            "kube-scheduler",
            [str(b / "kube-scheduler"), *common, f"--secure-port={ports['scheduler']}"],
            logs,
        )
        self._start_kwok(kubeconfig, logs)
        self._wait_clients_ready(deadline, register_nodes=True)
        return self._endpoints

    def _wait_clients_ready(self, deadline: float, *, register_nodes: bool = False) -> None:
        """Wait for the controller manager's and scheduler's /healthz, then for Ready nodes."""
        for name, port in (("kube-controller-manager", "kcm"), ("kube-scheduler", "scheduler")):
            url = f"https://127.0.0.1:{self._ports[port]}/healthz"
            wait_until(
                name,
                lambda url=url: _http_ok(url, insecure=True),  # type: ignore[misc]
                self.components.values(),
                _left(deadline),
            )
        self._finish(deadline, register_nodes=register_nodes)

    def _start_kwok(self, kubeconfig: Path, logs: Path) -> None:
        self._add(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}",
                f"--cidr={self.kwok_cidr}",
                f"--node-ip={NODE_IP}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{self._ports['kwok']}",
            ],
            logs,
        )

    def _finish(self, deadline: float, *, register_nodes: bool) -> None:
        """Register the fake nodes (if asked) and wait until kwok reports them Ready."""
        with self._admin_api() as api:
            core = client.CoreV1Api(api)
            for i in range(self.nodes if register_nodes else 0):
                self._register_node(core, f"kwok-node-{i}")
            wait_until(
                "fake nodes Ready",
                lambda: self._nodes_ready(core),
                self.components.values(),
                _left(deadline),
            )

    def _apiserver_argv(self, certs: pki_mod.Pki, etcd_url: str) -> list[str]:
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self._ports['apiserver']}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs.sa_public}",
            f"--service-account-signing-key-file={certs.sa_private}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-serving'}",
            "--v=1",
        ]

    def _add(self, name: str, argv: list[str], logs: Path) -> None:
        comp = Component(name, argv, logs / f"{name}.log")
        comp.start()
        self.components[name] = comp

    # -- readiness ------------------------------------------------------------------

    def _apiserver_ready(self) -> bool:
        req = urllib.request.Request(f"{self.endpoints.server}/readyz")  # noqa: S310
        with urllib.request.urlopen(req, context=self._ssl, timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)

    def _register_node(self, core: client.CoreV1Api, name: str) -> None:
        node = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1],
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
                annotations={KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]},
            ),
            spec=client.V1NodeSpec(taints=[client.V1Taint(**KWOK_TAINT)] if self.taint else None),
        )
        try:
            core.create_node(node)
        except ApiException as exc:
            if exc.status != 409:  # already registered (a re-attached cluster)
                raise

    def _nodes_ready(self, core: client.CoreV1Api) -> bool:
        nodes = core.list_node(label_selector="=".join(KWOK_NODE_LABEL)).items
        ready = [
            node
            for node in nodes
            if node.status is not None
            and any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        ]
        return len(ready) >= self.nodes


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.5)


def _http_ok(url: str, *, insecure: bool = False) -> bool:
    ctx = None
    if url.startswith("https"):
        ctx = ssl.create_default_context()
        if insecure:  # self-signed serving certs of controller-manager and scheduler
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:  # noqa: S310
        return bool(resp.status == 200)


def _kubeconfig(server: str, certs: pki_mod.Pki) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "stepwise-local",
                "cluster": {"server": server, "certificate-authority": str(certs.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(certs.admin_cert),
                    "client-key": str(certs.admin_key),
                },
            }
        ],
        "contexts": [
            {"name": "stepwise-local", "context": {"cluster": "stepwise-local", "user": "admin"}}
        ],
        "current-context": "stepwise-local",
    }
    return json.dumps(config, indent=2)
