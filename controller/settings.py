"""The controller's settings: flags of ``stepwise run``, each also an environment variable
(``STEPWISE_<NAME>``), frozen once parsed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """How one controller process runs."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True, extra="forbid")

    kubeconfig: str | None = None
    """Path of a kubeconfig; default: in-cluster configuration, else ~/.kube/config."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all."""
    workers: int = Field(default=4, ge=1, le=64)
    """Reconciles run in parallel (each Rollout is handled by one worker at a time)."""
    leader_election: bool = True
    """Run leader election so only one replica writes."""
    lease_name: str = "stepwise-controller"
    """Name of the coordination.k8s.io Lease."""
    lease_namespace: str = "default"
    """Namespace of the Lease."""
    lease_duration: float = Field(default=15.0, gt=0)
    """Seconds a lease is valid without renewal; a successor may take over after it."""
    renew_deadline: float = Field(default=10.0, gt=0)
    """Seconds the leader keeps trying to renew before it stops writing."""
    retry_period: float = Field(default=2.0, gt=0)
    """Seconds between lease attempts."""
    identity: str | None = None
    """This replica's identity in the Lease (default: hostname and a random suffix)."""
    health_port: int = Field(default=8081, ge=0, le=65535)
    """Port of /healthz, /readyz and /metrics (0 picks a free port)."""
    bind_address: str = "0.0.0.0"  # noqa: S104 - a pod's probes come from outside it
    """Address the health and metrics server listens on."""
    log_format: Literal["json", "console", "auto"] = "auto"
    """JSON lines, or readable console output (auto: console on a terminal)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged."""
    prometheus_address: str | None = None
    """Prometheus used by metrics whose template names no address."""
    watch_timeout: float = Field(default=60.0, gt=0)
    """Seconds after which a watch is renewed even if quiet."""
    heartbeat_timeout: float = Field(default=120.0, gt=0)
    """/healthz fails when a watch has shown no sign of life for this long."""
    notifications_config: str = "stepwise-notifications"
    """ConfigMap (in the notifications namespace) listing the webhook targets; none: no
    notifications."""
    notifications_namespace: str | None = None
    """Namespace of that ConfigMap, of its Secrets and of the delivery ledger (default: the
    lease namespace, which is the controller's own)."""
    notifications_max_age: float = Field(default=3600.0, gt=0)
    """Seconds after which a notification is never sent (nor retried any more)."""
