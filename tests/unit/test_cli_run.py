"""``stepwise run``'s settings: each flag, else its STEPWISE_<FLAG> variable, else the
default; the help names the variable each flag reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from controller.cli import _RUN_FLAGS, build_parser, run_settings
from controller.errors import ConfigError
from controller.settings import Settings


def settings(argv: list[str], env: Mapping[str, str] | None = None) -> Settings:
    """The settings ``stepwise run ARGV`` would run with in environment ``env``."""
    args = build_parser().parse_args(["run", *argv])
    return run_settings(args, env or {})


def test_without_flags_or_variables_the_defaults_apply() -> None:
    """No flag and no variable: exactly the Settings defaults."""
    assert settings([]) == Settings()


@pytest.mark.parametrize(
    ("argv", "env", "field", "expected"),
    [
        pytest.param([], {"STEPWISE_NAMESPACE": "shop"}, "namespaces", ("shop",), id="ns-env"),
        pytest.param(
            [], {"STEPWISE_NAMESPACE": "shop, pay,"}, "namespaces", ("shop", "pay"), id="ns-list"
        ),
        pytest.param(
            ["--namespace=a", "--namespace", "b"],
            {},
            "namespaces",
            ("a", "b"),
            id="ns-flag-repeated",
        ),
        pytest.param(
            ["--namespace=a"],
            {"STEPWISE_NAMESPACE": "shop"},
            "namespaces",
            ("a",),
            id="ns-flag-replaces-env-not-appends",
        ),
        pytest.param(
            [], {"STEPWISE_NAMESPACES": "shop"}, "namespaces", (), id="ns-plural-is-not-read"
        ),
        pytest.param([], {"STEPWISE_WORKERS": "8"}, "workers", 8, id="int-env"),
        pytest.param(["--workers=2"], {"STEPWISE_WORKERS": "8"}, "workers", 2, id="flag-wins"),
        pytest.param(
            [], {"STEPWISE_LEADER_ELECTION": "false"}, "leader_election", False, id="bool-env"
        ),
        pytest.param(
            ["--leader-election"],
            {"STEPWISE_LEADER_ELECTION": "false"},
            "leader_election",
            True,
            id="bool-flag-wins",
        ),
        pytest.param(["--no-leader-election"], {}, "leader_election", False, id="bool-no-flag"),
        pytest.param(
            [], {"STEPWISE_WATCH_TIMEOUT": "30"}, "watch_timeout", 30.0, id="watch-timeout-env"
        ),
        pytest.param(
            ["--heartbeat-timeout=90"], {}, "heartbeat_timeout", 90.0, id="heartbeat-flag"
        ),
        pytest.param([], {"POD_NAME": "pod-1"}, "identity", "pod-1", id="identity-pod-name"),
        pytest.param(
            [],
            {"POD_NAME": "pod-1", "STEPWISE_IDENTITY": "me"},
            "identity",
            "me",
            id="identity-env-over-pod-name",
        ),
        pytest.param(
            ["--identity=cli"],
            {"POD_NAME": "pod-1", "STEPWISE_IDENTITY": "me"},
            "identity",
            "cli",
            id="identity-flag-wins",
        ),
        pytest.param([], {"STEPWISE_WORKERS": "  "}, "workers", 4, id="blank-env-ignored"),
    ],
)
def test_flags_win_over_variables_which_win_over_defaults(
    argv: list[str], env: dict[str, str], field: str, expected: Any
) -> None:
    """Each setting comes from its flag, else STEPWISE_<FLAG>, else the default."""
    assert getattr(settings(argv, env), field) == expected


#: A valid value, unlike the default, for every run flag.
SAMPLES: dict[str, tuple[str, Any]] = {
    "kubeconfig": ("/k", "/k"),
    "namespace": ("a,b", ("a", "b")),
    "workers": ("7", 7),
    "leader-election": ("false", False),
    "lease-name": ("lock", "lock"),
    "lease-namespace": ("sys", "sys"),
    "lease-duration": ("20", 20.0),
    "renew-deadline": ("12", 12.0),
    "retry-period": ("3", 3.0),
    "identity": ("me", "me"),
    "health-port": ("9000", 9000),
    "bind-address": ("127.0.0.1", "127.0.0.1"),
    "log-format": ("json", "json"),
    "log-level": ("debug", "debug"),
    "prometheus-address": ("http://p:9090", "http://p:9090"),
    "watch-timeout": ("30", 30.0),
    "heartbeat-timeout": ("100", 100.0),
    "notifications-config": ("hooks", "hooks"),
    "notifications-namespace": ("ops", "ops"),
    "notifications-max-age": ("600", 600.0),
}


def run_flags() -> list[str]:
    """Every long option of ``stepwise run`` but --help, without its dashes."""
    sub = build_parser()._subparsers._group_actions[0].choices["run"]
    return sorted(
        opt[2:]
        for action in sub._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt not in ("--help",) and not opt.startswith("--no-")
    )


def test_every_flag_has_a_variable_of_its_own_name_named_in_its_help() -> None:
    """For every run flag, STEPWISE_<FLAG> sets the same setting and the help names it."""
    assert run_flags() == sorted(_RUN_FLAGS)
    assert sorted(SAMPLES) == sorted(_RUN_FLAGS)
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for flag, (raw, expected) in SAMPLES.items():
        name = "STEPWISE_" + flag.upper().replace("-", "_")
        assert name in text.replace("\n", " ").replace("  ", " "), name
        got = getattr(settings([], {name: raw}), _RUN_FLAGS[flag])
        assert got == expected, name
        assert got != getattr(Settings(), _RUN_FLAGS[flag]), f"{name}: sample equals default"
    assert "STEPWISE_NAMESPACES" not in text


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        pytest.param([], {"STEPWISE_WORKERS": "abc"}, "STEPWISE_WORKERS='abc'", id="env-int"),
        pytest.param(
            [], {"STEPWISE_LEADER_ELECTION": "maybe"}, "STEPWISE_LEADER_ELECTION", id="env-bool"
        ),
        pytest.param([], {"STEPWISE_LOG_FORMAT": "xml"}, "STEPWISE_LOG_FORMAT", id="env-choice"),
        pytest.param(["--workers=0"], {}, "--workers", id="flag-range"),
        pytest.param([], {"STEPWISE_WATCH_TIMEOUT": "-1"}, "STEPWISE_WATCH_TIMEOUT", id="neg"),
    ],
)
def test_a_bad_value_is_refused_naming_where_it_came_from(
    argv: list[str], env: dict[str, str], names: str
) -> None:
    """An invalid value is a ConfigError naming its flag or variable, not a traceback."""
    with pytest.raises(ConfigError, match="invalid settings") as err:
        settings(argv, env)
    assert names in str(err.value)
