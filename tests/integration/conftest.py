"""Fixtures of the integration tests only."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from tests.support.linting import Linter, Server


@pytest.fixture
def linter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Linter:
    """``stepwise lint`` on files written in the test's directory."""
    return Linter(tmp_path, capsys)


@pytest.fixture
def server(api_client: client.ApiClient, namespace: str, stepwise_crds: None) -> Server:
    """The API server's strict dry run in the test's namespace, Stepwise CRDs installed."""
    return Server(api_client, namespace)
