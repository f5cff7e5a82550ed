"""The demo app's configuration rules and the load generator's bounds (the processes
themselves are exercised in tests/integration/test_prometheus_analysis.py)."""

from __future__ import annotations

from typing import Any

import pytest

from demoapp.app import Config, DemoApp
from demoapp.load import MAX_RPS, check_target, run


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"errorRate": 0.2}, Config(error_rate=0.2), id="error-rate"),
        pytest.param(
            {"latencyMs": 50, "jitterMs": 5}, Config(latency_ms=50, jitter_ms=5), id="latency"
        ),
        pytest.param({}, Config(), id="nothing"),
    ],
)
def test_config_updates(changes: dict[str, Any], expected: Config) -> None:
    """The admin endpoint's JSON changes only the fields it names."""
    assert Config().updated(changes) == expected


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        pytest.param({"errorRate": 1.5}, "errorRate must lie in", id="rate-above-one"),
        pytest.param({"errorRate": True}, "must be a number", id="boolean"),
        pytest.param({"latencyMs": -1}, "latencyMs and jitterMs", id="negative-latency"),
        pytest.param({"error_rate": 0.1}, "unknown field", id="snake-case"),
    ],
)
def test_config_rejects_bad_input(changes: dict[str, Any], needle: str) -> None:
    """Bad admin input is a ValueError (a 400 answer), never a half-applied change."""
    with pytest.raises(ValueError, match=needle):
        Config().updated(changes)


def test_error_rate_extremes_are_exact() -> None:
    """errorRate 0 never fails a request and 1 always does."""
    app = DemoApp(service="s", version="v1", config=Config(error_rate=0.0), seed=1)
    assert not any(app.plan()[1] for _ in range(200))
    app.configure({"errorRate": 1.0, "latencyMs": 0})
    assert all(app.plan() == (0.0, True) for _ in range(200))


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("http://127.0.0.1:8080/", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080/x?y=1", True),
        ("http://127.9.9.9:8080/", True),
        ("http://10.0.0.1:8080/", False),
        ("http://example.com/", False),
        ("https://127.0.0.1:8443/", False),
        ("127.0.0.1:8080", False),
    ],
)
def test_load_targets_are_loopback_only(target: str, ok: bool) -> None:
    """The load generator only ever sends to this machine."""
    if ok:
        check_target(target)
    else:
        with pytest.raises(ValueError):  # noqa: PT011 - two messages
            check_target(target)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"rps": MAX_RPS + 1, "duration": 1}, id="too-fast"),
        pytest.param({"rps": 10, "duration": 7200}, id="too-long"),
        pytest.param({"rps": 0, "duration": 1}, id="no-rate"),
    ],
)
def test_load_is_bounded(kwargs: dict[str, float]) -> None:
    """Rates and durations beyond the caps are refused before anything is sent."""
    with pytest.raises(ValueError, match="must lie in"):
        run("http://127.0.0.1:1/", **kwargs)
