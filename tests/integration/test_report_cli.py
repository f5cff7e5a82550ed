"""``stepwise report`` as a process against the real API server and a real Prometheus.

The release records are written through the status subresource, as the controller writes
them (the CRD keeping every field proves the schema holds the record); no controller
runs in these namespaces, so nothing else touches those statuses. For ``--prometheus``,
the real Prometheus scrapes a small exporter serving the controller's release series.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from controller.api.rollout import Release
from localcluster import LocalPrometheus, free_port
from localcluster.controller import ControllerProcess
from tests.integration.test_cli import Cli, one_line_error
from tests.support.cluster import GROUP, PLURAL, VERSION, Cluster
from tests.support.kube import wait_for
from tests.support.manifests import rollout as rollout_doc
from tests.support.releases import release_record

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def release(
    days_ago: float, outcome: str | None, revision: str = "5f7d9c8b6", **fields: Any
) -> Release:
    """A release that started ``days_ago`` (changed 30 s before) and ended 20 min later."""
    return release_record(
        NOW - dt.timedelta(days=days_ago),
        outcome,
        revision=revision,
        changed_before=dt.timedelta(seconds=30),
        ended_after=dt.timedelta(minutes=20),
        **fields,
    )


def aborted(days_ago: float) -> Release:
    """An abort by analysis with every field the record has, steps to restore time."""
    started = NOW - dt.timedelta(days=days_ago)
    return release(
        days_ago,
        "Aborted",
        revision="7a1b2c3d4",
        reason="AnalysisFailed",
        message="analysis step-1: metric success-rate failed 2 times",
        steps=[{"index": 0, "endedAt": (started + dt.timedelta(minutes=1)).isoformat()}],
        analyses=[
            {
                "name": "step-1",
                "phase": "Failed",
                "endedAt": (started + dt.timedelta(minutes=3)).isoformat(),
            }
        ],
        approvals=[{"step": 2, "since": (started + dt.timedelta(minutes=2)).isoformat()}],
        detectedAt=(started + dt.timedelta(seconds=60)).isoformat(),
        restoredAt=(started + dt.timedelta(minutes=20, seconds=4)).isoformat(),
        timeToDetectSeconds=90.0,
        timeToRestoreSeconds=4.0,
    )


def write_releases(kube: Cluster, name: str, releases: list[Release]) -> None:
    """Write ``status.releases`` through the status subresource, and check that the API
    server kept every field (a structural schema silently prunes unknown ones)."""
    wire = [r.wire() for r in releases]
    kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, kube.ns, PLURAL, name, {"status": {"releases": wire}}
    )
    kept = kube.status(name).get("releases")
    assert [Release.model_validate(r).wire() for r in kept or []] == wire


@pytest.fixture
def env(
    api_client: client.ApiClient, namespace: str, stepwise_crds: None, kubeconfig: Path
) -> tuple[Cluster, Cli]:
    """The test's namespace with Rollouts ``checkout`` (three releases in the last month,
    one older) and ``cart`` (no release yet); no controller."""
    kube = Cluster(api_client, namespace)
    kube.create(rollout_doc("checkout"))
    kube.create(rollout_doc("cart"))
    write_releases(
        kube,
        "checkout",
        [
            release(45, "Promoted", leadTimeSeconds=300.0),
            release(20, "Promoted", leadTimeSeconds=300.0),
            aborted(10),
            release(5, "Promoted", revision="7a1b2c3d4", attempt=2, leadTimeSeconds=900.0),
            release(0.01, None, revision="9e8d7c6b5"),
        ],
    )
    return kube, Cli(kubeconfig, namespace)


def test_table_of_a_namespace(env: tuple[Cluster, Cli]) -> None:
    """The table: each Rollout's figures from its status and its releases in the period;
    a Rollout with no release says so."""
    _, cli = env
    result = cli("report")
    assert result.returncode == 0, result.stderr
    cart, checkout = result.stdout.split("\n\n", 1)
    assert cart.splitlines()[0].startswith(f"Rollout {cli.namespace}/cart: last 30d (")
    assert "No releases yet" in cart
    lines = checkout.splitlines()
    assert lines[0].startswith(f"Rollout {cli.namespace}/checkout: last 30d")
    figures = {ln.split("   ")[0].strip(): ln for ln in lines[2:7]}
    assert "0.07" in figures["deploys per day"]  # 2 promoted / 30 days
    assert "2 promoted in 30 days" in figures["deploys per day"]
    assert "33%" in figures["change failure rate"]
    assert "median 1m30s, p90 1m30s" in figures["time to detect"]
    assert "median 4.0s" in figures["time to restore"]
    assert "median 10m00s" in figures["lead time"]
    assert all(" status " in ln for ln in figures.values())
    rows = [ln.split() for ln in checkout.split("\n\n")[1].splitlines()]
    assert rows[0][:3] == ["OUTCOME", "REASON", "REVISION"]
    assert [r[:3] for r in rows[1:]] == [
        ["Promoted", "-", "5f7d9c8b6"],
        ["Aborted", "AnalysisFailed", "7a1b2c3d4"],
        ["Promoted", "-", "7a1b2c3d4#2"],
        ["InProgress", "-", "9e8d7c6b5"],
    ]


def test_json_and_markdown_of_one_rollout(env: tuple[Cluster, Cli]) -> None:
    """-o json has the figures with their source and the releases as the status holds
    them; -o markdown has the same in tables."""
    _, cli = env
    result = cli("report", "checkout", "-o", "json", "--since", "2w")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["period"]["since"] == "2w"
    (ro,) = doc["rollouts"]
    assert (ro["name"], ro["complete"]) == ("checkout", True)
    assert ro["figures"]["promoted"] == 1  # 5 days ago; the one of 20 days is outside 2w
    assert ro["figures"]["aborted"] == 1
    assert ro["figures"]["changeFailureRate"] == {"value": 0.5, "source": "status"}
    assert ro["figures"]["timeToDetect"]["medianSeconds"] == 90.0
    assert [r["revision"] for r in ro["releases"]] == ["7a1b2c3d4", "7a1b2c3d4", "9e8d7c6b5"]
    assert ro["releases"][0]["analyses"][0]["phase"] == "Failed"

    md = cli("report", "checkout", "-o", "markdown")
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith(f"### {cli.namespace}/checkout: last 30d")
    assert "| change failure rate | 33% | status |" in md.stdout
    assert "| Aborted | AnalysisFailed | 7a1b2c3d4 | registry.local/app:v2 |" in md.stdout


def test_all_namespaces_and_errors(env: tuple[Cluster, Cli]) -> None:
    """-A reports this namespace's Rollouts among the others; a missing Rollout, a NAME
    with -A and a bad --since are one-line errors with the CLI's exit codes."""
    _, cli = env
    every = cli("report", "-A", "-o", "json")
    assert every.returncode == 0, every.stderr
    names = {(r["namespace"], r["name"]) for r in json.loads(every.stdout)["rollouts"]}
    assert {(cli.namespace, "cart"), (cli.namespace, "checkout")} <= names

    missing = cli("report", "nope")
    assert missing.returncode == 4
    assert f"rollout {cli.namespace}/nope not found" in one_line_error(missing)
    assert missing.stdout == ""

    both = cli("report", "checkout", "-A")
    assert both.returncode == 2
    assert "a NAME needs its namespace" in one_line_error(both)

    bad = cli("report", "--since", "1.5d")
    assert bad.returncode == 2
    assert "--since: '1.5d' is not a period" in one_line_error(bad)


def test_empty_namespace(kubeconfig: Path, namespace: str, stepwise_crds: None) -> None:
    """No Rollout in the namespace: said on stderr, exit 0, as ``list`` does."""
    result = Cli(kubeconfig, namespace)("report")
    assert result.returncode == 0
    assert result.stderr.strip() == "No rollouts found."


# -- --prometheus ------------------------------------------------------------------------


class Exporter:
    """The controller's release series for one namespace, served for Prometheus."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry()
        self.releases = Counter(
            "stepwise_releases",
            "Releases by outcome.",
            ["namespace", "rollout", "outcome", "reason"],
            registry=self.registry,
        )
        buckets = (1, 5, 25, 35, 120, 600, 1200, 3600)
        self.histograms = {
            key: Histogram(
                f"stepwise_release_{key}_seconds",
                key,
                ["namespace", "rollout"],
                buckets=buckets,
                registry=self.registry,
            )
            for key in ("time_to_detect", "time_to_restore", "lead_time")
        }
        for outcome, reason in (("Promoted", ""), ("Aborted", "AnalysisFailed")):
            self.releases.labels(namespace, "legacy", outcome, reason)  # born at zero
        for histogram in self.histograms.values():
            histogram.labels(namespace, "legacy")
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    def record(self) -> None:
        """Three promotions (lead time 600 s), one abort by analysis (detect 30 s,
        restore 3 s), as the controller counts them."""
        ns = self.namespace
        self.releases.labels(ns, "legacy", "Promoted", "").inc(3)
        self.releases.labels(ns, "legacy", "Aborted", "AnalysisFailed").inc()
        for _ in range(3):
            self.histograms["lead_time"].labels(ns, "legacy").observe(600)
        self.histograms["time_to_detect"].labels(ns, "legacy").observe(30)
        self.histograms["time_to_restore"].labels(ns, "legacy").observe(3)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scraped(
    env: tuple[Cluster, Cli], prometheus: LocalPrometheus
) -> Iterator[tuple[Cluster, Cli, LocalPrometheus]]:
    """A Rollout ``legacy`` whose status holds only 2 releases (its limit) of a month with
    more, and Prometheus holding its counters: zero for 10 s, then the month's releases."""
    kube, cli = env
    doc = rollout_doc("legacy")
    doc["spec"]["releaseHistoryLimit"] = 2
    kube.create(doc)
    write_releases(
        kube, "legacy", [release(3, "Promoted", leadTimeSeconds=60.0), release(1, "Superseded")]
    )
    exporter = Exporter(kube.ns)
    prometheus.add_target(f"report-{kube.ns}", f"127.0.0.1:{exporter.port}")
    selector = f'stepwise_releases_total{{namespace="{kube.ns}",outcome="Promoted"}}'
    try:
        wait_for("the zero counters scraped", lambda: prometheus.query(selector)["result"])
        time.sleep(10)  # increase() reads a counter that starts at 0 and ends here
        exporter.record()
        wait_for(
            "the releases scraped",
            lambda: prometheus.query(f"{selector} == 3")["result"],
        )
        time.sleep(2)
        yield kube, cli, prometheus
    finally:
        prometheus.remove_target(f"report-{kube.ns}")
        exporter.close()


def test_prometheus_for_a_period_longer_than_the_status_holds(
    scraped: tuple[Cluster, Cli, LocalPrometheus],
) -> None:
    """``legacy``'s figures come from Prometheus (its status holds less than the period),
    and the output says so; ``checkout``'s status covers it and keeps its own."""
    _, cli, prometheus = scraped
    result = cli("report", "-o", "json", "--prometheus", prometheus.url)
    assert result.returncode == 0, result.stderr
    rollouts = {r["name"]: r for r in json.loads(result.stdout)["rollouts"]}
    legacy = rollouts["legacy"]
    assert legacy["complete"] is False
    figures = legacy["figures"]
    assert (figures["promoted"], figures["aborted"]) == (3, 1)
    assert figures["changeFailureRate"] == {"value": 0.25, "source": "prometheus"}
    assert figures["deploysPerDay"]["value"] == pytest.approx(3 / 30)
    # one observation of 30 s in the bucket (25, 35]: histogram_quantile interpolates
    assert figures["timeToDetect"]["medianSeconds"] == pytest.approx(30.0)
    assert 1.0 < figures["timeToRestore"]["medianSeconds"] <= 5.0
    assert 120.0 < figures["leadTime"]["medianSeconds"] <= 600.0
    assert figures["leadTime"]["source"] == "prometheus"
    assert f"figures from Prometheus at {prometheus.url}" in legacy["note"]
    assert [r["outcome"] for r in legacy["releases"]] == ["Promoted", "Superseded"]
    assert rollouts["checkout"]["figures"]["deploysPerDay"]["source"] == "status"

    table = cli("report", "legacy", "--prometheus", prometheus.url)
    assert table.returncode == 0, table.stderr
    assert "prometheus   histogram_quantile over the period" in table.stdout
    assert "note: figures from Prometheus" in table.stdout


def test_prometheus_unreachable_or_without_series(
    scraped: tuple[Cluster, Cli, LocalPrometheus],
) -> None:
    """Prometheus not there: a one-line error naming the URL, exit 4, nothing printed.
    Prometheus without the Rollout's series: the report with the status's figures marked
    partial, and an error naming the URL and the Rollout, exit 4."""
    kube, cli, prometheus = scraped
    dead = f"http://127.0.0.1:{free_port()}"
    down = cli("report", "legacy", "--prometheus", dead)
    assert down.returncode == 4
    assert f"cannot query Prometheus at {dead} (unreachable)" in one_line_error(down)
    assert down.stdout == ""

    doc = rollout_doc("fresh")
    doc["spec"]["releaseHistoryLimit"] = 1
    kube.create(doc)
    write_releases(kube, "fresh", [release(2, "Promoted")])
    none = cli("report", "fresh", "--prometheus", prometheus.url)
    assert none.returncode == 4
    error = one_line_error(none)
    assert f"Prometheus at {prometheus.url} has no stepwise_releases_total series" in error
    assert f"{kube.ns}/fresh" in error
    assert "status (partial)" in none.stdout


# -- with the controller -----------------------------------------------------------------


def test_report_of_releases_the_controller_recorded(
    api_client: client.ApiClient,
    namespace: str,
    stepwise_crds: None,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """The controller records the first revision (promoted at once) and a canary aborted
    by hand; the report reads its record: one deploy, one failure, the abort's times."""
    proc = ControllerProcess(kubeconfig, tmp_path, namespaces=[namespace])
    proc.start()
    try:
        kube, cli = Cluster(api_client, namespace), Cli(kubeconfig, namespace)
        kube.create(rollout_doc("app", replicas=2, steps=[{"setWeight": 50}, {"pause": {}}]))
        wait_for("healthy", lambda: kube.healthy("app"), 60)
        kube.set_image("app", "registry.local/app:v2")
        wait_for("paused", lambda: kube.status("app").get("phase") == "Paused", 60)
        assert cli("abort", "app").returncode == 0
        wait_for(
            "restored",
            lambda: any(
                r.get("timeToRestoreSeconds") is not None
                for r in kube.status("app").get("releases") or []
            ),
            60,
        )
        result = cli("report", "app", "-o", "json")
        assert result.returncode == 0, result.stderr
        (ro,) = json.loads(result.stdout)["rollouts"]
        figures = ro["figures"]
        assert (figures["promoted"], figures["aborted"]) == (1, 1)
        assert figures["changeFailureRate"]["value"] == 0.5
        first, second = ro["releases"]
        assert first["outcome"] == "Promoted"
        assert first["images"] == ["registry.local/app:v1"]
        assert (second["outcome"], second["reason"]) == ("Aborted", "Manual")
        assert second["images"] == ["registry.local/app:v2"]
        assert figures["timeToDetect"]["medianSeconds"] == second["timeToDetectSeconds"]
        assert figures["timeToRestore"]["medianSeconds"] == second["timeToRestoreSeconds"]
        table = cli("report", "app")
        assert table.returncode == 0, table.stderr
        assert "Aborted    Manual" in table.stdout
    finally:
        proc.stop()
