"""Which pods the runner serves, and how a pod becomes a demo-app command line.

Pure functions over pods as the API server sends them (JSON dicts), so they are the same
for a listed pod and a watched one.

A pod opts in with the annotation ``stepwise.dev/serve: "true"`` (put it in the pod
template). kwok then makes it Running with a loopback podIP but not Ready
(``hack/cluster/kwok-stages.yaml``); the runner serves it on ``podIP:containerPort`` (the
first container's first port) and annotates ``stepwise.dev/serving: "true"`` once the
process answers ``/healthz``, which makes kwok mark it Ready.

The first container's ``env`` (literal ``value`` entries; ``valueFrom`` is ignored) sets
the demo app's options:

================  ===============================  ====================================
env name          demo-app option                  when unset
================  ===============================  ====================================
``VERSION``       ``--version``                    pod label ``app.kubernetes.io/version``,
                                                   else ``stepwise.dev/revision``, else
                                                   ``unknown``
``SERVICE``       ``--service``                    pod label ``app.kubernetes.io/name``,
                                                   else ``app``, else ``demo``
``ERROR_RATE``    ``--error-rate`` (0..1)          0
``LATENCY_MS``    ``--latency-ms``                 20
``JITTER_MS``     ``--jitter-ms``                  0
``SEED``          ``--seed``                       random
================  ===============================  ====================================

A value the demo app refuses (``ERROR_RATE=2``) makes its process exit at once; the
runner logs that like any crash and the pod stays un-Ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Pod annotation that asks for a process (the pod template sets it).
SERVE_ANNOTATION = "stepwise.dev/serve"
#: Pod annotation the runner writes: "true" once the process answers, "false" after.
SERVING_ANNOTATION = "stepwise.dev/serving"

VERSION_LABELS = ("app.kubernetes.io/version", "stepwise.dev/revision")
SERVICE_LABELS = ("app.kubernetes.io/name", "app")

#: env name -> demo-app option (VERSION and SERVICE have label fallbacks, see above).
ENV_OPTIONS = {
    "ERROR_RATE": "--error-rate",
    "LATENCY_MS": "--latency-ms",
    "JITTER_MS": "--jitter-ms",
    "SEED": "--seed",
}


class NotServableError(ValueError):
    """The pod opted in but cannot be served (no container port, say)."""


@dataclass(frozen=True)
class ServeSpec:
    """One demo-app process for one pod."""

    namespace: str
    name: str
    uid: str
    host: str
    port: int
    version: str
    service: str
    options: tuple[tuple[str, str], ...] = ()
    """Further demo-app options from the env, in ENV_OPTIONS order."""

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    def argv(self, python: str) -> list[str]:
        """The command line: ``python -m demoapp --host ... --port ...``."""
        argv = [python, "-m", "demoapp", "--host", self.host, "--port", str(self.port)]
        argv += ["--version", self.version, "--service", self.service]
        for option, value in self.options:
            argv += [option, value]
        return argv


def meta(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod's metadata (empty dict if missing)."""
    return pod.get("metadata") or {}


def key(pod: dict[str, Any]) -> str:
    """``namespace/name``, for logs."""
    m = meta(pod)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def opted_in(pod: dict[str, Any]) -> bool:
    """Whether the pod asks to be served."""
    return (meta(pod).get("annotations") or {}).get(SERVE_ANNOTATION) == "true"


def marked_serving(pod: dict[str, Any]) -> bool:
    """Whether the pod carries ``stepwise.dev/serving: "true"``."""
    return (meta(pod).get("annotations") or {}).get(SERVING_ANNOTATION) == "true"


def wants_process(pod: dict[str, Any]) -> bool:
    """An opted-in pod that is Running with a podIP and not being deleted."""
    status = pod.get("status") or {}
    return (
        opted_in(pod)
        and not meta(pod).get("deletionTimestamp")
        and status.get("phase") == "Running"
        and bool(status.get("podIP"))
    )


def is_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def serve_spec(pod: dict[str, Any]) -> ServeSpec:
    """The process for a pod that :func:`wants_process`; :class:`NotServableError` if the pod
    has no container port to bind."""
    m = meta(pod)
    containers = (pod.get("spec") or {}).get("containers") or []
    ports = (containers[0].get("ports") or []) if containers else []
    if not ports or not isinstance(ports[0].get("containerPort"), int):
        raise NotServableError(f"pod {key(pod)}: its first container declares no containerPort")
    env = {
        e["name"]: str(e["value"])
        for e in (containers[0].get("env") or [])
        if "name" in e and e.get("value") is not None
    }
    labels = m.get("labels") or {}
    return ServeSpec(
        namespace=m.get("namespace", ""),
        name=m.get("name", ""),
        uid=m.get("uid", ""),
        host=str((pod.get("status") or {}).get("podIP")),
        port=int(ports[0]["containerPort"]),
        version=env.get("VERSION") or _first_label(labels, VERSION_LABELS) or "unknown",
        service=env.get("SERVICE") or _first_label(labels, SERVICE_LABELS) or "demo",
        options=tuple((opt, env[name]) for name, opt in ENV_OPTIONS.items() if name in env),
    )


def _first_label(labels: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if labels.get(name):
            return labels[name]
    return None
