"""Reading a controller process from the outside: its /metrics page and its JSON logs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from localcluster import LocalCluster
from localcluster.controller import ControllerProcess


def metric(page: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def requests(page: str) -> dict[tuple[str, str], float]:
    """``stepwise_api_requests_total`` by ``(verb, code)``."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "stepwise_api_requests_total":
                key = (sample.labels["verb"], sample.labels["code"])
                out[key] = out.get(key, 0.0) + sample.value
    return out


def log_lines(proc: ControllerProcess, event: str, **fields: Any) -> list[dict[str, Any]]:
    """The controller's JSON log lines with this ``event`` and these field values."""
    return [
        entry
        for entry in proc.logs()
        if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items())
    ]


@contextlib.contextmanager
def frozen(cluster: LocalCluster, component: str) -> Iterator[None]:
    """A control-plane process stopped with SIGSTOP for the block, then SIGCONT (so the
    garbage collector, say, cannot act meanwhile)."""
    proc = cluster.component(component)
    proc.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.signal(signal.SIGCONT)
