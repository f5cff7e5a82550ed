"""What the cluster benchmarks share: the machine and its load, statistics, tables and
JSON results, a local cluster with the CRDs, a fleet of Rollouts, and a recorder of every
status a Rollout goes through.

Where it sits: each ``bench/<name>.py`` (``python -m bench.<name>``) starts what it needs
through these helpers, measures, prints one table and writes
``bench/results/<name>.json``. Nothing here is a test fixture: the processes come from
:mod:`localcluster` (the same control plane the integration tests use), the Rollout
manifests from :mod:`tests.support.manifests`, and the status recorder is the
controller's own :class:`controller.runtime.informer.Informer`, so a benchmark watches
the API server exactly the way the controller does.

The machine is shared (another engineer's test run may be going on), so every result
carries the load average sampled during the run: a figure without it means little.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import ssl
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from controller import logs
from controller.api.base import parse_duration
from controller.api.rollout import GROUP, VERSION
from controller.core.hashing import template_hash
from controller.runtime.informer import Informer
from localcluster import Endpoints, LocalCluster, ensure_binaries, install_crds
from localcluster.traefik import gateway_api_crds
from tests.support.kube import CRD_DIR
from tests.support.manifests import rollout as rollout_manifest

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
PLURAL = "rollouts"

Number = float | int


# -- the machine and its load ------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What the figures were measured on."""

    cores: int
    memory_gib: float
    kernel: str
    python: str

    @classmethod
    def current(cls) -> Machine:
        """This machine."""
        total_kib = 0
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total_kib = int(line.split()[1])
        return cls(
            cores=os.cpu_count() or 0,
            memory_gib=round(total_kib / 1024 / 1024, 1),
            kernel=platform.release(),
            python=platform.python_version(),
        )


class LoadMonitor:
    """Samples the load average every few seconds while a benchmark runs.

    Use as a context manager; :meth:`summary` gives the 1-minute load at the start, at
    the end, its mean and its maximum (and the 5/15-minute values at the end).
    """

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg())
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 1)
        self.samples.append(os.getloadavg())

    def summary(self) -> dict[str, float]:
        """1-minute load: start, end, mean and max over the run; 5/15-minute at the end."""
        samples = self.samples or [os.getloadavg()]
        ones = [s[0] for s in samples]
        return {
            "load1_start": ones[0],
            "load1_end": ones[-1],
            "load1_mean": round(statistics.fmean(ones), 2),
            "load1_max": max(ones),
            "load5_end": samples[-1][1],
            "load15_end": samples[-1][2],
        }


def load_line(load: Mapping[str, float]) -> str:
    """The load summary as one line for a table's header."""
    return (
        f"load avg (1 min) start {load['load1_start']:.2f}, mean {load['load1_mean']:.2f}, "
        f"max {load['load1_max']:.2f}, end {load['load1_end']:.2f} "
        f"(5/15 min at end {load['load5_end']:.2f}/{load['load15_end']:.2f})"
    )


def machine_line(machine: Machine) -> str:
    """The machine as one line for a table's header."""
    return (
        f"machine: {machine.cores} cores, {machine.memory_gib:g} GiB, Linux "
        f"{machine.kernel}, Python {machine.python}"
    )


# -- statistics, tables, results ---------------------------------------------------------


def percentile(values: Sequence[Number], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summarize(values: Sequence[Number]) -> dict[str, float]:
    """n, median, p95, p99 and max of a sample (only n for an empty one)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": float(statistics.median(values)),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": float(max(values)),
        "min": float(min(values)),
    }


def seconds(value: float | None, digits: int = 2) -> str:
    """A duration for a table cell (``-`` for none)."""
    return "-" if value is None else f"{value:.{digits}f}s"


def render_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain-text table, columns as wide as their widest cell."""
    body = [list(header), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (the results directory is not committed)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=_json_default))
    return path


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def quiet_logs() -> None:
    """Warnings and errors only from the controller code a benchmark runs in-process."""
    logs.configure("console", "warning")


# -- processes and metrics ---------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


class ProcessSampler:
    """Samples a process's RSS every second (for the peak) while it runs."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid = pid
        self.every = every
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
            except OSError:
                return  # the process is gone
            if self._stop.wait(self.every):
                return

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=self.every + 1)


@dataclass(frozen=True)
class Usage:
    """A controller process's CPU time, API requests and reconcile passes at one instant
    (for deltas over a window)."""

    at: float
    cpu: float
    requests: float
    requests_429: float
    reconciles: float

    @classmethod
    def of(cls, pid: int, metrics_text: str) -> Usage:
        """Read both now."""
        return cls(
            at=time.monotonic(),
            cpu=cpu_seconds(pid),
            requests=metric_sum(metrics_text, "stepwise_api_requests_total"),
            requests_429=metric_sum(metrics_text, "stepwise_api_requests_total", code="429"),
            reconciles=metric_sum(metrics_text, "stepwise_reconcile_total"),
        )


def metric_sum(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples named ``sample`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def apiserver_metrics(endpoints: Endpoints) -> str:
    """The API server's own ``/metrics`` (read with the admin certificate)."""
    ctx = ssl.create_default_context(cafile=str(endpoints.ca_cert))
    ctx.load_cert_chain(str(endpoints.admin_cert), str(endpoints.admin_key))
    req = urllib.request.Request(f"{endpoints.server}/metrics")  # noqa: S310 - local https
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:  # noqa: S310
        return str(resp.read().decode())


def apiserver_429s(endpoints: Endpoints) -> float:
    """429 answers the API server has given so far, to anyone."""
    return metric_sum(apiserver_metrics(endpoints), "apiserver_request_total", code="429")


def log_time(entry: Mapping[str, Any]) -> float:
    """The wall-clock time (epoch seconds) of one of the controller's JSON log lines."""
    return dt.datetime.fromisoformat(str(entry["timestamp"])).timestamp()


def retried_429s(entries: Iterable[Mapping[str, Any]], since: float = 0.0) -> int:
    """429 answers the controller retried (its metric counts a call once, after retries)."""
    return sum(
        1
        for e in entries
        if e.get("event") == "kubernetes api call failed; retrying"
        and e.get("status") == 429
        and log_time(e) >= since
    )


# -- the cluster -------------------------------------------------------------------------


@contextmanager
def bench_cluster(
    nodes: int, controller_manager_qps: int | None = None
) -> Iterator[tuple[LocalCluster, client.ApiClient]]:
    """A fresh local control plane with ``nodes`` kwok nodes, the Stepwise CRDs and the
    Gateway API HTTPRoute CRD installed; torn down (work directory included) afterwards."""
    cluster = LocalCluster(
        ensure_binaries(), nodes=nodes, controller_manager_qps=controller_manager_qps
    )
    cluster.start(timeout=180)
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.endpoints.kubeconfig), client_configuration=configuration
    )
    configuration.connection_pool_maxsize = 32  # several client threads share this client
    api = client.ApiClient(configuration)
    try:
        install_crds(api, [*sorted(CRD_DIR.glob("*.yaml")), *gateway_api_crds()])
        yield cluster, api
    finally:
        api.close()  # type: ignore[no-untyped-call]
        cluster.stop()


def create_namespace(api: client.ApiClient, name: str) -> None:
    """Create a namespace (no error if it exists)."""
    try:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
    except ApiException as exc:
        if exc.status != 409:
            raise


# -- a fleet of Rollouts -----------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One Rollout of a fleet."""

    namespace: str
    name: str
    replicas: int

    @property
    def key(self) -> str:
        """``namespace/name``, as the informer keys it."""
        return f"{self.namespace}/{self.name}"


class Fleet:
    """Creates Rollouts and changes their image in parallel (a few client threads)."""

    def __init__(self, api: client.ApiClient, workers: int = 4) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.workers = workers

    def create(self, members: Sequence[Member], steps: list[dict[str, Any]]) -> float:
        """Create every Rollout (replica-ratio mode, on the kwok nodes); seconds taken."""

        def one(m: Member) -> None:
            doc = rollout_manifest(m.name, replicas=m.replicas, steps=steps)
            self.custom.create_namespaced_custom_object(GROUP, VERSION, m.namespace, PLURAL, doc)

        started = time.monotonic()
        self._each(one, members)
        return time.monotonic() - started

    def set_image(self, members: Sequence[Member], image: str) -> dict[str, float]:
        """Change every Rollout's image; the monotonic time each change was acknowledged."""
        done: dict[str, float] = {}
        ops = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]

        def one(m: Member) -> None:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, m.namespace, PLURAL, m.name, ops,
                _content_type="application/json-patch+json",
            )  # fmt: skip
            done[m.key] = time.monotonic()

        self._each(one, members)
        return done

    def _each(self, fn: Callable[[Member], None], members: Sequence[Member]) -> None:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for future in [pool.submit(fn, m) for m in members]:
                future.result()


def revision_with_image(rollout: Mapping[str, Any], image: str) -> str:
    """The revision (pod-template hash) a Rollout gets when its image becomes ``image``."""
    template = json.loads(json.dumps(rollout["spec"]["template"]))
    template["spec"]["containers"][0]["image"] = image
    return template_hash(template)


# -- every status a Rollout goes through -------------------------------------------------

#: The status fields a snapshot keeps (analysis runs and conditions are left out).
KEPT = (
    "phase",
    "currentStepIndex",
    "canaryWeight",
    "stableRevision",
    "canaryRevision",
    "pauseStartTime",
    "stepStartTime",
    "abort",
    "message",
    "observedGeneration",
)


@dataclass(frozen=True)
class Snapshot:
    """One status of one Rollout, as the watch delivered it."""

    at: float
    """Monotonic time the recorder saw it."""
    status: dict[str, Any]


@dataclass
class StatusRecorder:
    """Watches Rollouts (all namespaces) and keeps each distinct status it sees, in order.

    Built on the controller's own informer, so it lists, watches, and relists on 410
    the way the controller does. Handlers run on the informer thread right after the
    cache takes the event, so :meth:`Informer.get` there returns that very version.
    """

    api: client.ApiClient
    history: dict[str, list[Snapshot]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _informer: Informer[dict[str, Any]] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start watching; returns once the first list is in."""
        self._informer = Informer.custom_resources(
            self.api, group=GROUP, version=VERSION, plural=PLURAL, watch_timeout=60
        )
        self._informer.add_handler(self._seen)
        self._informer.start()
        if not self._informer.wait_for_sync(timeout):
            raise TimeoutError("the Rollout watch did not sync")

    def stop(self) -> None:
        """Stop watching."""
        if self._informer is not None:
            self._informer.stop()

    def _seen(self, key: str) -> None:
        assert self._informer is not None
        obj = self._informer.get(key)
        if obj is None:
            return
        raw = obj.get("status") or {}
        status = {k: raw[k] for k in KEPT if k in raw}
        with self._lock:
            versions = self.history.setdefault(key, [])
            if not versions or versions[-1].status != status:
                versions.append(Snapshot(time.monotonic(), status))

    def get(self, key: str) -> dict[str, Any] | None:
        """The Rollout as cached now (a copy)."""
        assert self._informer is not None
        return self._informer.get(key)

    def latest(self, key: str) -> dict[str, Any]:
        """The latest status seen (empty if none)."""
        with self._lock:
            versions = self.history.get(key) or []
            return dict(versions[-1].status) if versions else {}

    def snapshots(self, key: str) -> list[Snapshot]:
        """Every status seen, oldest first."""
        with self._lock:
            return list(self.history.get(key) or [])

    def first(self, key: str, when: Callable[[dict[str, Any]], bool]) -> Snapshot | None:
        """The first status seen for which ``when`` holds."""
        return next((s for s in self.snapshots(key) if when(s.status)), None)

    def wait_all(
        self,
        keys: Iterable[str],
        when: Callable[[dict[str, Any]], bool],
        timeout: float,
        *,
        what: str = "",
        progress: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Wait until ``when`` holds for every key's latest status; the keys for which it
        still does not when ``timeout`` passes (empty: all made it)."""
        return self.wait_each(dict.fromkeys(keys, when), timeout, what=what, progress=progress)

    def wait_each(
        self,
        checks: Mapping[str, Callable[[dict[str, Any]], bool]],
        timeout: float,
        *,
        what: str = "",
        progress: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Wait until each key's own check holds for its latest status; the keys still
        failing theirs when ``timeout`` passes (empty: all made it)."""
        pending = dict(checks)
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while pending and time.monotonic() < deadline:
            pending = {k: c for k, c in pending.items() if not c(self.latest(k))}
            if progress is not None and time.monotonic() - last_report > 15:
                progress(f"  ... {what}: {len(pending)} still waiting")
                last_report = time.monotonic()
            if pending:
                time.sleep(0.1 if len(pending) < 50 else 0.25)  # spare the 2 cores
        return sorted(pending)


def healthy_on(revision: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """Predicate: phase Healthy (on ``revision``, if given) with no canary in flight."""

    def check(status: dict[str, Any]) -> bool:
        stable = status.get("stableRevision")
        return (
            status.get("phase") == "Healthy"
            and stable is not None
            and status.get("canaryRevision") in (None, stable)
            and (revision is None or stable == revision)
        )

    return check


def parse_time(value: str) -> float:
    """An RFC 3339 timestamp from a status as epoch seconds."""
    return dt.datetime.fromisoformat(value).timestamp()


def pause_lateness(
    snapshots: Sequence[Snapshot], revision: str, steps: Sequence[Mapping[str, Any]]
) -> dict[int, float]:
    """How late each timed pause of ``revision`` ended, by step index, in seconds.

    A pause at step ``i`` starts at the ``pauseStartTime`` seen while the index is
    ``i``; it ends when the controller completes the step, which is the
    ``stepStartTime`` it writes with index ``i + 1`` (both are the controller's clock at
    the reconcile that decided). Lateness = end - start - duration; negative would mean
    a pause cut short.
    """
    pause_start: dict[int, float] = {}
    step_start: dict[int, float] = {}
    for snap in snapshots:
        s = snap.status
        if s.get("canaryRevision") != revision or s.get("currentStepIndex") is None:
            continue
        index = int(s["currentStepIndex"])
        if s.get("pauseStartTime"):
            pause_start.setdefault(index, parse_time(s["pauseStartTime"]))
        if s.get("stepStartTime"):
            step_start.setdefault(index, parse_time(s["stepStartTime"]))
    late: dict[int, float] = {}
    for index, step in enumerate(steps):
        duration = (step.get("pause") or {}).get("duration")
        if duration is None or index not in pause_start or index + 1 not in step_start:
            continue
        wanted = parse_duration(duration)
        late[index] = step_start[index + 1] - pause_start[index] - wanted
    return late
