"""Leader election settings are checked before anything runs."""

from __future__ import annotations

import pytest
from kubernetes import client

from controller.errors import ConfigError
from controller.runtime.leader import LeaderElector


def test_invalid_timings_are_rejected() -> None:
    """lease_duration > renew_deadline > 1.2 * retry_period, else ConfigError."""
    with client.ApiClient() as api:
        with pytest.raises(ConfigError, match="lease_duration > renew_deadline"):
            LeaderElector(api, "ns", "l", "me", lease_duration=5, renew_deadline=5, retry_period=1)
        with pytest.raises(ConfigError, match="lease_duration > renew_deadline"):
            LeaderElector(api, "ns", "l", "me", lease_duration=15, renew_deadline=2, retry_period=2)
        with pytest.raises(ConfigError, match="identity"):
            LeaderElector(api, "ns", "l", "")
