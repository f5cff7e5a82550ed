"""Status writes while an analysis measures every second, through the controller process
and the real Prometheus: tallies are written at most every 10 s, nothing counted is lost,
and a verdict is written in the pass that reached it (core/batching.py)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from localcluster.controller import ControllerProcess
from tests.support.analysis import create_template, template_doc
from tests.support.cluster import Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration

COUNT = 25


def template() -> dict[str, Any]:
    """One metric measured every second, always Successful (no range: no own-data wait)."""
    return template_doc(
        "every-second",
        {
            "name": "up",
            "interval": "1s",
            "count": COUNT,
            "thresholdRange": {"min": 1},
            "provider": {"prometheus": {"query": "vector(1)"}},
        },
    )


def test_tallies_are_batched_and_nothing_counted_is_lost(
    kube: Cluster, measuring: ControllerProcess
) -> None:
    """25 measurements a second apart: while the analysis runs, the status is written a
    handful of times (not 25), each write a tally at least ~10 s after the previous
    one; the run ends Successful with all 25 counted, written in the pass that counted
    the 25th."""
    create_template(kube, template())
    steps = [
        {"setWeight": 20},
        {"analysis": {"templates": [{"templateName": "every-second"}]}},
        {"pause": {}},
    ]
    kube.create(rollout_doc("app", replicas=2, steps=steps))
    wait_for("healthy", lambda: kube.status("app").get("phase") == "Healthy")
    kube.set_image("app", "registry.local/app:v2")
    wait_for(
        "paused after the analysis",
        lambda: kube.status("app").get("currentStepIndex") == 2,
        timeout=90,
    )
    run = kube.status("app")["analysisRuns"][0]
    assert run["phase"] == "Successful"
    assert run["metrics"][0]["count"] == COUNT
    assert run["metrics"][0]["successful"] == COUNT
    entries = measuring.logs()
    writes = [
        dt.datetime.fromisoformat(str(e["timestamp"]))
        for e in entries
        if e.get("event") == "status written"
        and "analysis of step 1 running" in str(e.get("message", ""))
    ]
    # 25 s of measuring: one write as the run starts, then tallies every >= 10 s.
    assert 1 <= len(writes) <= 4, writes
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(writes)]
    assert all(gap >= 9.5 for gap in gaps), gaps
