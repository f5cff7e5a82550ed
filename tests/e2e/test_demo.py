"""The demo scenario end to end on the real data plane (Traefik as the Gateway, pods that
serve, a Prometheus that discovers them), without a terminal: a good release is promoted
with no failed request through the Gateway, a bad one is rolled back automatically, and
afterwards requests reach only the stable version."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from kubernetes import client

from demodriver import scenario
from localcluster import LocalCluster

pytestmark = pytest.mark.e2e


def test_good_release_promoted_bad_release_rolled_back(
    local_cluster: LocalCluster, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """v2 is promoted and no request fails through the Gateway meanwhile; v3's
    regression is rolled back; after the rollback only v2 serves."""
    lines: list[str] = []
    try:
        result = scenario.run(
            local_cluster.endpoints, tmp_path, say=lines.append, namespace="e2e-demo"
        )
    finally:
        # Its pods would otherwise hold their addresses for the rest of the session.
        client.CoreV1Api(api_client).delete_namespace("e2e-demo", propagation_policy="Background")
    report = "\n".join(lines + scenario.summary(result))
    assert result.good_promoted, report
    assert result.bad_rolled_back, report
    assert "AnalysisFailed" in report or "success-rate" in result.abort_message, report
    assert result.regression_to_weight_zero is not None
    assert result.regression_to_weight_zero < 30, report
    assert result.bad_requests_seen > 0, report  # the canary really served the regression
    assert result.versions_after_rollback == {"v2"}, report
    _record_matches_what_the_demo_saw(result, report)
    # stepwise report at the end: 2 promoted (v1, v2), 1 aborted (v3) by analysis
    printed = "\n".join(result.report)
    assert "AnalysisFailed" in printed, report
    assert "1 of 2" in printed or "33%" in printed, report
    counts = result.promotion_counts
    assert counts.get("ok", 0) > 100, report  # 60 requests/s through the whole release
    assert counts.get("gateway error", 0) == 0, report
    assert counts.get("no answer", 0) == 0, report
    assert counts.get("app error", 0) == 0, report  # v1 and v2 are both healthy


def _time(value: object) -> dt.datetime:
    assert isinstance(value, str), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _record_matches_what_the_demo_saw(result: scenario.Result, report: str) -> None:
    """v3's entry in the delivery record tells the story the demo measured on its own
    clock (same machine, same clock as the controller):

    - the change: ``changedAt`` is the demo's image change, to the second the API server
      keeps in managedFields;
    - detection: ``detectedAt`` (the start of the first failing measurement's window) is
      no earlier than one scrape interval (1 s) before the demo raised v3's error rate,
      and no later than the evidence could take to show: one scrape interval, the
      query's rate window (5 s) and one measurement interval (1 s) after it; so the
      record's time to detect is the demo's change-to-regression time within that;
    - restore: ``restoredAt`` (the pass that wrote weight 0 and read it back) is within a
      scrape interval of the moment the demo saw Traefik apply weight 0.
    """
    entry = result.bad_record
    assert (entry.get("outcome"), entry.get("reason")) == ("Aborted", "AnalysisFailed"), report
    assert result.bad_released_at is not None, report
    assert result.bad_from is not None, report
    assert result.bad_weight_zero_at is not None, report
    second = dt.timedelta(seconds=1)
    changed = _time(entry["changedAt"])
    released = result.bad_released_at
    assert released - second <= changed <= released + second, (entry, report)
    detected = _time(entry["detectedAt"])
    print(  # the measured offsets, for the test log
        f"detectedAt - regression: {(detected - result.bad_from).total_seconds():+.2f}s; "
        f"restoredAt - Traefik weight 0: "
        f"{(_time(entry['restoredAt']) - result.bad_weight_zero_at).total_seconds():+.2f}s"
    )
    assert result.bad_from - second <= detected <= result.bad_from + 7 * second, (entry, report)
    demo_ttd = (result.bad_from - changed).total_seconds()
    assert -1 <= entry["timeToDetectSeconds"] - demo_ttd <= 7, (entry, report)
    restored = _time(entry["restoredAt"])
    assert abs((restored - result.bad_weight_zero_at).total_seconds()) <= 1, (entry, report)
    aborted = _time(entry["endedAt"])
    demo_ttr = (result.bad_weight_zero_at - aborted).total_seconds()
    assert abs(entry["timeToRestoreSeconds"] - demo_ttr) <= 1, (entry, report)
