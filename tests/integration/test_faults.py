"""Faults users meet, on the live cluster with the controller as a process: a provider that
hangs must not hold back anyone else's decisions."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster.controller import ControllerProcess
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

STUCK = 12
QUERY_TIMEOUT = 20
"""The hung template's query timeout: a pass that waited on the provider would take this
long at least."""


@pytest.fixture
def hung_prometheus() -> Iterator[str]:
    """A server that accepts connections and never answers (a Prometheus that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def hung_template(address: str) -> dict[str, Any]:
    """One metric against the hung server, every 2 s."""
    return {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "hung"},
        "spec": {
            "metrics": [
                {
                    "name": "success",
                    "interval": "2s",
                    "thresholdRange": {"min": 0.9},
                    "provider": {
                        "prometheus": {
                            "address": address,
                            "query": "vector(1)",
                            "timeout": f"{QUERY_TIMEOUT}s",
                        }
                    },
                }
            ]
        },
    }


def test_an_abort_is_not_held_back_by_a_hung_provider(
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
    kubeconfig: Path,
    tmp_path: Path,
    hung_prometheus: str,
) -> None:
    """12 Rollouts wait on a Prometheus that never answers; a manual abort of another
    Rollout still completes (weight 0, stable full) long before any query to it could
    have timed out, because no reconcile waits on a provider."""
    kube = Cluster(api_client, namespace)
    kube.custom.create_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", namespace, "analysistemplates", hung_template(hung_prometheus)
    )
    analysed = [{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "hung"}]}}]
    names = [f"stuck-{i}" for i in range(STUCK)]
    for name in names:
        kube.create(rollout_doc(name, replicas=2, steps=analysed))
    kube.create(rollout_doc("victim", replicas=5, steps=[{"setWeight": 20}, {"pause": {}}]))
    proc = ControllerProcess(kubeconfig, tmp_path, namespaces=[namespace])
    proc.start()
    try:
        wait_for("all healthy", lambda: all(kube.healthy(n) for n in [*names, "victim"]), 90)
        for name in names:
            kube.set_image(name, "registry.local/app:v2")
        revision = kube.set_image("victim", "registry.local/app:v2")

        def first_run(name: str) -> dict[str, Any]:
            runs: list[dict[str, Any]] = kube.status(name).get("analysisRuns") or [{}]
            return runs[0]

        wait_for(
            "every stuck Rollout waiting on the hung provider",
            lambda: all(first_run(n).get("phase") == "Running" for n in names),
            90,
        )
        wait_for("victim paused at 20%", lambda: kube.status("victim").get("canaryWeight") == 20)
        stable = kube.status("victim")["stableRevision"]
        asked = time.monotonic()
        kube.annotate("victim", **{"stepwise.dev/abort": revision})

        def restored() -> bool:
            s = kube.status("victim")
            return s.get("canaryWeight") == 0 and kube.ready("victim", stable) == (5, 5)

        wait_for("victim restored to stable", restored, 60, interval=0.05)
        seconds = time.monotonic() - asked
        print(f"abort under a hung provider: annotation to weight 0 and stable full {seconds:.2f}s")
        assert seconds < QUERY_TIMEOUT, f"the abort waited on the provider ({seconds:.1f}s)"
        runs = [first_run(n) for n in names]
        assert all(r.get("phase") in ("Running", "Error") for r in runs), runs
    finally:
        proc.stop()
