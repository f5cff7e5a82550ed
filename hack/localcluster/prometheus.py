"""A real Prometheus (Debian's ``prometheus`` package) scraping local processes.

Targets are added while it runs through a file-based service discovery file, so a test
can start a process on a free port and have it scraped at the configured interval
(1 s by default) without restarting Prometheus.

With ``discover_pods`` (a cluster's :class:`~localcluster.cluster.Endpoints`) it also
scrapes the cluster's pods, found through the API server, in the job ``kubernetes-pods``
with the relabelling of a standard in-cluster install (:data:`POD_RELABEL_CONFIGS`): only
pods annotated ``prometheus.io/scrape: "true"``, at the port of ``prometheus.io/port``
(and the path of ``prometheus.io/path``, default ``/metrics``), not while Pending,
Succeeded or Failed; each series gets the target labels ``namespace``, ``pod`` and every
pod label, its name sanitized (``app.kubernetes.io/name`` becomes
``app_kubernetes_io_name``). A pod label that the scraped series has too (``version``,
say) wins, and the series' own value is kept as ``exported_version``.

Debian builds Prometheus without Kubernetes service discovery ("Kubernetes support has
been completely removed", its NEWS.Debian), so ``kubernetes_sd_configs`` is used only
when the binary accepts it (``promtool check config`` says so). Otherwise
:class:`PodDiscovery` does its part: it lists and watches pods through the API server
and writes them to a file-based discovery file as the targets Kubernetes discovery
(role ``pod``) would give, with the same ``__meta_kubernetes_*`` labels, so the same
relabelling applies. Prometheus reads that file every second.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from localcluster.process import Component, ComponentError, Running, free_port, wait_until

if TYPE_CHECKING:
    from localcluster.cluster import Endpoints

log = logging.getLogger(__name__)

#: The job of the pods discovered through the API server.
PODS_JOB = "kubernetes-pods"
_POD = "__meta_kubernetes_pod_"

#: The relabelling of the ``kubernetes-pods`` job, as a standard in-cluster install has it
#: (the prometheus-community chart's ``kubernetes-pods`` job, less its scheme and
#: parameter annotations).
POD_RELABEL_CONFIGS: list[dict[str, Any]] = [
    {
        "source_labels": [f"{_POD}annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    },
    {
        "source_labels": [f"{_POD}annotation_prometheus_io_path"],
        "action": "replace",
        "target_label": "__metrics_path__",
        "regex": "(.+)",
    },
    {
        "source_labels": ["__address__", f"{_POD}annotation_prometheus_io_port"],
        "action": "replace",
        "regex": r"([^:]+)(?::\d+)?;(\d+)",
        "replacement": "$1:$2",
        "target_label": "__address__",
    },
    {"action": "labelmap", "regex": f"{_POD}label_(.+)"},
    {
        "source_labels": ["__meta_kubernetes_namespace"],
        "action": "replace",
        "target_label": "namespace",
    },
    {"source_labels": [f"{_POD}name"], "action": "replace", "target_label": "pod"},
    {
        "source_labels": [f"{_POD}phase"],
        "action": "drop",
        "regex": "Pending|Succeeded|Failed|Completed",
    },
]

DEFAULT_BINARY = "/usr/bin/prometheus"


def find_binary() -> Path:
    """The prometheus binary, or a clear error saying how to install it."""
    found = shutil.which("prometheus") or (
        DEFAULT_BINARY if Path(DEFAULT_BINARY).exists() else None
    )
    if not found:
        raise ComponentError(
            "prometheus is not installed: run 'make deps' (it runs "
            "'apt-get install prometheus'), or put a prometheus binary on PATH"
        )
    return Path(found)


class LocalPrometheus(Running):
    """Prometheus on a free 127.0.0.1 port with a dynamic list of scrape targets."""

    def __init__(
        self,
        *,
        scrape_interval: str = "1s",
        binary: Path | None = None,
        workdir: Path | None = None,
        discover_pods: Endpoints | None = None,
    ) -> None:
        """``discover_pods`` adds the ``kubernetes-pods`` job for that cluster (see the
        module docstring): Kubernetes discovery reaches the API server at ``server`` with
        the cluster's CA and the admin client certificate, or through ``kubeconfig`` for
        an external cluster (kind: ``server`` is empty); :class:`PodDiscovery` uses the
        kubeconfig."""
        self.binary = binary or find_binary()
        self.scrape_interval = scrape_interval
        self.discover_pods = discover_pods
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="stepwise-prometheus-"))
        self.port = 0
        self._targets: dict[str, dict[str, Any]] = {}
        self.component: Component | None = None
        self.pod_discovery: PodDiscovery | None = None

    @property
    def url(self) -> str:
        """Base URL, for example ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def _sd_file(self) -> Path:
        return self.workdir / "targets.json"

    def start(self, timeout: float = 30.0) -> None:
        """Write the configuration, start Prometheus and wait until it is ready."""
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        config = self.workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write the configuration.
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": self.scrape_interval,
                        "evaluation_interval": self.scrape_interval,
                    },
                    "scrape_configs": [
                        {
                            "job_name": "local",
                            "file_sd_configs": [
                                {"files": [str(self._sd_file)], "refresh_interval": "1s"}
                            ],
                        },
                        *self._pod_scrape_configs(),
                    ],
                },
                indent=2,
            )
        )
        self.component = Component(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2h",
                "--log.level=warn",
            ],
            self.workdir / "prometheus.log",
        )
        try:
            self.component.start()
            wait_until("prometheus", self._ready, [self.component], timeout)
        except BaseException:
            self.stop()
            raise

    def _pod_scrape_configs(self) -> list[dict[str, Any]]:
        """The ``kubernetes-pods`` job, with Kubernetes discovery if this Prometheus has it
        and else with :class:`PodDiscovery` writing its targets (started here)."""
        cluster = self.discover_pods
        if cluster is None:
            return []
        job: dict[str, Any] = {"job_name": PODS_JOB, "relabel_configs": POD_RELABEL_CONFIGS}
        sd: dict[str, Any] = {"role": "pod"}
        if cluster.server:
            sd["api_server"] = cluster.server
            sd["tls_config"] = {
                "ca_file": str(cluster.ca_cert),
                "cert_file": str(cluster.admin_cert),
                "key_file": str(cluster.admin_key),
            }
        else:
            sd["kubeconfig_file"] = str(cluster.kubeconfig)
        if self._accepts({"scrape_configs": [{**job, "kubernetes_sd_configs": [sd]}]}):
            return [{**job, "kubernetes_sd_configs": [sd]}]
        if self.pod_discovery is None:
            self.pod_discovery = PodDiscovery(cluster.kubeconfig, self.workdir / "pods.json")
            self.pod_discovery.start()
        files = [str(self.pod_discovery.path)]
        return [{**job, "file_sd_configs": [{"files": files, "refresh_interval": "1s"}]}]

    def _accepts(self, config: dict[str, Any]) -> bool:
        """Whether ``promtool check config`` (beside the binary) accepts ``config``."""
        promtool = self.binary.with_name("promtool")
        if not promtool.exists():
            return False
        path = self.workdir / "check.yml"
        path.write_text(json.dumps(config))
        try:
            proc = subprocess.run(
                [str(promtool), "check", "config", "--syntax-only", str(path)],
                check=False,
                capture_output=True,
                timeout=30,
            )
        finally:
            path.unlink(missing_ok=True)
        return proc.returncode == 0

    def pod_targets(self) -> list[dict[str, Any]]:
        """The active targets of the ``kubernetes-pods`` job."""
        return [t for t in self.active_targets() if t.get("scrapePool") == PODS_JOB]

    def stop(self) -> None:
        """Stop Prometheus (and pod discovery) and remove its data."""
        if self.component is not None:
            self.component.stop()
        if self.pod_discovery is not None:
            self.pod_discovery.stop()
            self.pod_discovery = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pause(self) -> None:
        """Stop the process but keep its data and port (simulates Prometheus going down)."""
        if self.component is not None:
            self.component.stop()

    def resume(self, timeout: float = 30.0) -> None:
        """Start a paused Prometheus again on the same port."""
        if self.component is None:
            raise RuntimeError("prometheus was never started")
        self.component.start()
        wait_until("prometheus", self._ready, [self.component], timeout)

    def add_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape ``address`` (host:port) from now on, with extra target labels."""
        self._targets[name] = {"targets": [address], "labels": {"target": name, **(labels or {})}}
        self._write_targets()

    def remove_target(self, name: str) -> None:
        """Stop scraping a target added with :meth:`add_target`."""
        self._targets.pop(name, None)
        self._write_targets()

    def query(self, promql: str) -> Any:
        """An instant query through the HTTP API; returns ``data`` of the response."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local http
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return body["data"]

    def active_targets(self) -> list[dict[str, Any]]:
        """The targets Prometheus currently scrapes, as ``/api/v1/targets`` reports them."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as resp:  # noqa: S310
            return list(json.loads(resp.read())["data"]["activeTargets"])

    def _write_targets(self) -> None:
        tmp = self._sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self._targets.values())))
        tmp.replace(self._sd_file)  # atomic: Prometheus never reads half a file

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)


class PodDiscovery:
    """Kubernetes pod discovery (role ``pod``) for a Prometheus built without it: lists
    and watches all pods through the API server and keeps a file-based discovery file
    with one target per container port (one per container without ports) of every pod
    that has an IP, labelled as Kubernetes discovery labels it: ``__address__``
    ``podIP:port``, ``__meta_kubernetes_namespace``, and ``__meta_kubernetes_pod_`` +
    ``name``, ``ip``, ``uid``, ``phase``, ``ready``, ``node_name``, ``host_ip``,
    ``controller_kind``/``_name``, ``container_name``/``_image``/``_init``,
    ``container_port_name``/``_number``/``_protocol``, ``label_<name>`` and
    ``labelpresent_<name>``, ``annotation_<name>`` and ``annotationpresent_<name>``
    (names sanitized to ``[a-zA-Z0-9_]``). Init containers are left out.

    The file is rewritten at most every ``write_interval`` seconds (a burst of pod
    events costs one write); Prometheus reads it every second."""

    def __init__(
        self,
        kubeconfig: Path,
        path: Path,
        *,
        watch_timeout: int = 2,
        write_interval: float = 0.25,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.path = path
        self.watch_timeout = watch_timeout
        self.write_interval = write_interval
        self._lock = threading.Lock()  # the pods and the dirty flag
        self._write_lock = threading.Lock()  # one writer of the file at a time
        self._pods: dict[str, dict[str, Any]] = {}
        self._dirty = True
        self._written: str | None = None
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._threads: list[threading.Thread] = []
        self._api: Any = None

    def start(self, timeout: float = 30.0) -> None:
        """Start watching; returns once the first list is written."""
        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        self._write()
        self._threads = [
            threading.Thread(target=self._run, name="pod-discovery", daemon=True),
            threading.Thread(target=self._writer, name="pod-discovery-file", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not self._synced.wait(timeout):
            self.stop()
            raise ComponentError(f"pod discovery: listing pods failed within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop watching (within the watch timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.watch_timeout + 5)
        self._threads = []
        if self._api is not None:
            self._api.close()
            self._api = None

    def _writer(self) -> None:
        while not self._stop.wait(self.write_interval):
            self._write()

    def _run(self) -> None:
        core = client.CoreV1Api(self._api)
        while not self._stop.is_set():
            try:
                resp: Any = core.list_pod_for_all_namespaces(
                    _preload_content=False, _request_timeout=30
                )
                body = json.loads(resp.data)
                with self._lock:
                    self._pods = {p["metadata"]["uid"]: p for p in body.get("items") or []}
                    self._dirty = True
                self._write()
                self._synced.set()
                rv = str(body["metadata"]["resourceVersion"])
                while not self._stop.is_set():
                    rv = self._watch(core, rv)
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: list again
                    log.warning("pod discovery: %s %s; listing again", exc.status, exc.reason)
                    self._stop.wait(1.0)
            except Exception as exc:  # the API server is away (restarting, say)
                log.warning("pod discovery: %r; listing again", exc)
                self._stop.wait(1.0)

    def _watch(self, core: client.CoreV1Api, rv: str) -> str:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(  # type: ignore[no-untyped-call]
            core.list_pod_for_all_namespaces,
            resource_version=rv,
            timeout_seconds=self.watch_timeout,
            allow_watch_bookmarks=True,
            deserialize=False,
            _request_timeout=self.watch_timeout + 30,
        ):
            pod = event["object"]
            rv = str(pod["metadata"].get("resourceVersion", rv))
            with self._lock:
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._pods[pod["metadata"]["uid"]] = pod
                    self._dirty = True
                elif event["type"] == "DELETED":
                    self._pods.pop(pod["metadata"]["uid"], None)
                    self._dirty = True
            if self._stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]
        return rv

    def _write(self) -> None:
        with self._write_lock:
            with self._lock:
                if not self._dirty:
                    return
                self._dirty = False
                pods = list(self._pods.values())
            groups = [group for pod in pods for group in pod_target_groups(pod)]
            groups.sort(key=lambda g: (g["labels"]["__meta_kubernetes_namespace"], g["targets"]))
            text = json.dumps(groups)
            if text == self._written:
                return
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)  # atomic: Prometheus never reads half a file
            self._written = text


def pod_target_groups(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets Kubernetes discovery (role ``pod``) gives for one pod, as file-based
    discovery groups (none while the pod has no IP)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip:
        return []
    conditions = status.get("conditions") or []
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), "unknown")
    common = {
        "__meta_kubernetes_namespace": meta.get("namespace", ""),
        f"{_POD}name": meta.get("name", ""),
        f"{_POD}ip": ip,
        f"{_POD}uid": meta.get("uid", ""),
        f"{_POD}phase": status.get("phase", ""),
        f"{_POD}ready": str(ready).lower(),
        f"{_POD}node_name": spec.get("nodeName", ""),
        f"{_POD}host_ip": status.get("hostIP", ""),
    }
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is not None:
        common[f"{_POD}controller_kind"] = owner.get("kind", "")
        common[f"{_POD}controller_name"] = owner.get("name", "")
    for kind, values in (("label", meta.get("labels")), ("annotation", meta.get("annotations"))):
        for name, value in (values or {}).items():
            common[f"{_POD}{kind}_{_sanitize(name)}"] = str(value)
            common[f"{_POD}{kind}present_{_sanitize(name)}"] = "true"
    groups = []
    for container in spec.get("containers") or []:
        base = {
            **common,
            f"{_POD}container_name": container.get("name", ""),
            f"{_POD}container_image": container.get("image", ""),
            f"{_POD}container_init": "false",
        }
        ports = container.get("ports") or []
        if not ports:
            groups.append({"targets": [ip], "labels": base})
        for port in ports:
            number = port.get("containerPort")
            labels = {
                **base,
                f"{_POD}container_port_name": port.get("name", ""),
                f"{_POD}container_port_number": str(number),
                f"{_POD}container_port_protocol": port.get("protocol", "TCP"),
            }
            groups.append({"targets": [f"{ip}:{number}"], "labels": labels})
    return groups


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)
