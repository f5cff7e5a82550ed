"""The demo scenario end to end, without a terminal: a good release is promoted, a bad
one is rolled back automatically, and afterwards requests reach only the stable version."""

from __future__ import annotations

from pathlib import Path

import pytest

from demodriver import scenario
from localcluster import LocalCluster, LocalPrometheus

pytestmark = pytest.mark.e2e


def test_good_release_promoted_bad_release_rolled_back(
    local_cluster: LocalCluster, kubeconfig: Path, prometheus: LocalPrometheus, tmp_path: Path
) -> None:
    """v2 is promoted; v3's regression is rolled back; after the rollback only v2 serves."""
    lines: list[str] = []
    result = scenario.run(kubeconfig, prometheus, tmp_path, say=lines.append, namespace="e2e-demo")
    report = "\n".join(lines + scenario.summary(result))
    assert result.good_promoted, report
    assert result.bad_rolled_back, report
    assert "AnalysisFailed" in report or "success-rate" in result.abort_message, report
    assert result.regression_to_weight_zero is not None
    assert result.regression_to_weight_zero < 30, report
    assert result.bad_requests_seen > 0, report  # the canary really served the regression
    assert result.revisions_after_rollback == {result.v2}, report
