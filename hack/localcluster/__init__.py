"""Local test infrastructure: a real control plane and a real Prometheus as processes.

``python -m localcluster up|down|status`` for people; :class:`LocalCluster` and
:class:`LocalPrometheus` for pytest fixtures.
"""

from localcluster.cluster import (
    KWOK_NODE_LABEL,
    KWOK_TAINT,
    Endpoints,
    LocalCluster,
    ensure_binaries,
)
from localcluster.crds import install_crds
from localcluster.process import Component, ComponentError, free_port, wait_until
from localcluster.prometheus import LocalPrometheus

__all__ = [
    "KWOK_NODE_LABEL",
    "KWOK_TAINT",
    "Component",
    "ComponentError",
    "Endpoints",
    "LocalCluster",
    "LocalPrometheus",
    "ensure_binaries",
    "free_port",
    "install_crds",
    "wait_until",
]
