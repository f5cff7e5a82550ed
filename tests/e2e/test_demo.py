"""The demo scenario end to end on the real data plane (Traefik as the Gateway, pods that
serve, a Prometheus that discovers them), without a terminal: a good release is promoted
with no failed request through the Gateway, a bad one is rolled back automatically, and
afterwards requests reach only the stable version."""

from __future__ import annotations

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
    counts = result.promotion_counts
    assert counts.get("ok", 0) > 100, report  # 60 requests/s through the whole release
    assert counts.get("gateway error", 0) == 0, report
    assert counts.get("no answer", 0) == 0, report
    assert counts.get("app error", 0) == 0, report  # v1 and v2 are both healthy
