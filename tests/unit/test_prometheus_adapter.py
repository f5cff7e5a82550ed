"""The Prometheus adapter against a fake HTTP transport: what it sends, how it classifies
every failure, when it retries (and when not), that it never raises, and that it never
leaks a secret into a log line or a message."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict
from structlog.testing import capture_logs

from controller.adapters.prometheus import (
    BasicCredentials,
    PrometheusClient,
    PrometheusSettings,
)
from controller.api.analysis import PrometheusProvider
from controller.api.rollout import SecretKeyRef
from controller.core.measurement import QueryResponse
from tests.support.clock import FakeClock

URL = "http://prometheus.test:9090"
T = 1_795_000_000.0

Reply = tuple[int, Any, Mapping[str, str]] | BaseException


def ok(result_type: str = "vector", result: Any = None, **extra: Any) -> Reply:
    """A 200 answer of the Prometheus API."""
    data = {"resultType": result_type, "result": [] if result is None else result}
    return (200, {"status": "success", "data": data, **extra}, {})


def error(status: int, error_type: str, text: str, **headers: str) -> Reply:
    """An error answer of the Prometheus API."""
    return (status, {"status": "error", "errorType": error_type, "error": text}, headers)


class SleepingClock(FakeClock):
    """The fake clock, which also moves when the client sleeps (each sleep recorded)."""

    def __init__(self) -> None:
        super().__init__(start=100.0)
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


class FakeTransport(requests.adapters.BaseAdapter):
    """Answers requests from a script (the last entry repeats) and records them."""

    def __init__(
        self, *script: Reply, clock: SleepingClock | None = None, cost: float = 0.0
    ) -> None:
        super().__init__()
        self.script = list(script)
        self.sent: list[requests.PreparedRequest] = []
        self.options: list[dict[str, Any]] = []
        self._clock = clock
        self._cost = cost

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.sent.append(request)
        self.options.append(kwargs)
        if self._clock is not None:  # a slow failure takes at most the connect timeout
            self._clock.advance(min(self._cost, kwargs["timeout"][0]))
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(reply, BaseException):
            raise reply
        status, body, headers = reply
        response = requests.Response()
        response.status_code = status
        response._content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        response.headers = CaseInsensitiveDict(headers)
        response.encoding = "utf-8"
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        """Nothing to release."""

    def params(self, index: int = -1) -> dict[str, str]:
        """The query parameters of a sent request."""
        query = urllib.parse.urlsplit(self.sent[index].url or "").query
        return dict(urllib.parse.parse_qsl(query))


def client(
    *script: Reply, clock: SleepingClock | None = None, cost: float = 0.0, **settings: Any
) -> tuple[PrometheusClient, FakeTransport, SleepingClock]:
    """A client whose transport follows ``script``."""
    clock = clock or SleepingClock()
    transport = FakeTransport(*script, clock=clock, cost=cost)
    prom = PrometheusClient(
        PrometheusSettings(url=URL, **settings),
        transport=transport,
        sleep=clock.sleep,
        clock=clock,
    )
    return prom, transport, clock


REFUSED = requests.exceptions.ConnectionError(
    "HTTPConnectionPool(host='prometheus.test', port=9090): Max retries exceeded with url: "
    "/api/v1/query?query=secret_query (Caused by NewConnectionError('<conn>: Failed to "
    "establish a new connection: [Errno 111] Connection refused'))"
)


def test_instant_query_sends_the_query_and_keeps_the_result_type() -> None:
    """One request to /api/v1/query with the query and Prometheus's own timeout."""
    prom, transport, _ = client(ok("scalar", [T, "0.99"], warnings=["w1"]), timeout=5.0)
    response = prom.query("scalar(vector(0.99))", metric="m")
    assert response == QueryResponse.ok("scalar", [T, "0.99"], ("w1",))
    assert len(transport.sent) == 1
    assert (transport.sent[0].url or "").startswith(f"{URL}/api/v1/query?")
    params = transport.params()
    assert params["query"] == "scalar(vector(0.99))"
    assert float(params["timeout"]) == pytest.approx(4.5)  # 90% of the time left
    assert transport.options[0]["timeout"] == (3.0, 5.0)  # (connect, read)


def test_instant_query_at_a_time() -> None:
    """``at`` becomes the ``time`` parameter."""
    prom, transport, _ = client(ok())
    prom.query("up", at=dt.datetime.fromtimestamp(T, dt.UTC))
    assert float(transport.params()["time"]) == T


def test_range_query() -> None:
    """A range query goes to /api/v1/query_range and comes back as a matrix."""
    matrix = [{"metric": {}, "values": [[T, "1"], [T + 15, "2"]]}]
    prom, transport, _ = client(ok("matrix", matrix))
    start = dt.datetime.fromtimestamp(T, dt.UTC)
    response = prom.query_range("up", start=start, end=start + dt.timedelta(minutes=1), step="15s")
    assert response == QueryResponse.ok("matrix", matrix)
    assert "/api/v1/query_range?" in (transport.sent[0].url or "")
    assert transport.params()["step"] == "15s"


@pytest.mark.parametrize(
    ("reply", "kind", "status", "says"),
    [
        pytest.param(
            error(400, "bad_data", 'invalid parameter "query": 1:5: parse error: unexpected "("'),
            "bad_data", 400,
            'Prometheus answered HTTP 400 (bad_data): invalid parameter "query": 1:5: parse error',
            id="promql-syntax-error",
        ),
        pytest.param(
            error(422, "execution", "found duplicate series for the match group"),
            "execution", 422, "(execution): found duplicate series", id="execution-error",
        ),
        pytest.param(
            error(503, "timeout", "query timed out in expression evaluation"),
            "timeout", 503, "query timed out", id="prometheus-timeout-not-retried",
        ),
        pytest.param(
            (401, "Unauthorized\n", {}), "auth", 401, "answered HTTP 401: Unauthorized",
            id="unauthorized",
        ),
        pytest.param(
            (404, "<html>404 page not found</html>", {}), "http", 404, "404 page not found",
            id="wrong-path",
        ),
        pytest.param(
            (200, "<html>proxy login</html>", {}), "bad_response", 200, "not the Prometheus API",
            id="html-instead-of-json",
        ),
        pytest.param(
            (200, {"status": "success"}, {}), "bad_response", 200, "not the Prometheus API",
            id="json-without-data",
        ),
        pytest.param(
            ok("histogramish"), "bad_response", None, "unknown resultType", id="unknown-type"
        ),
        pytest.param(
            requests.exceptions.ReadTimeout("read timed out"), "timeout", None,
            f"no answer from {URL} within 10.0s", id="read-timeout-not-retried",
        ),
        pytest.param(
            requests.exceptions.SSLError(
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get "
                "local issuer certificate (_ssl.c:1006)"
            ),
            "tls", None, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
            id="tls-not-retried",
        ),
        pytest.param(
            requests.exceptions.TooManyRedirects("loop"), "http", None, "TooManyRedirects",
            id="other-request-error",
        ),
        pytest.param(
            RuntimeError("a bug in a library"), "client", None, "RuntimeError: a bug",
            id="unexpected-exception-is-contained",
        ),
    ],
)  # fmt: skip
def test_failures_are_classified_and_not_retried(
    reply: Reply, kind: str, status: int | None, says: str
) -> None:
    """Permanent failures come back at once as an error response (never an exception)."""
    prom, transport, clock = client(reply)
    response = prom.query("up", metric="m")
    assert response.error is not None
    assert (response.error.kind, response.error.status) == (kind, status)
    assert says in response.error.message
    assert len(transport.sent) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("replies", "sleeps"),
    [
        pytest.param(
            [error(503, "unavailable", "not ready"), error(503, "unavailable", "x"), ok()],
            [0.2, 0.4], id="5xx-with-backoff",
        ),
        pytest.param([(502, "Bad Gateway", {}), ok()], [0.2], id="5xx-from-a-proxy"),
        pytest.param([REFUSED, ok()], [0.2], id="connection-refused"),
        pytest.param(
            [requests.exceptions.ConnectTimeout("connect timed out"), ok()], [0.2],
            id="connect-timeout",
        ),
        pytest.param(
            [error(429, "", "slow down", **{"Retry-After": "1.5"}), ok()], [1.5],
            id="429-honours-retry-after",
        ),
    ],
)  # fmt: skip
def test_transient_failures_are_retried(replies: list[Reply], sleeps: list[float]) -> None:
    """Connection errors, 5xx and 429 are retried with backoff (or Retry-After)."""
    prom, transport, clock = client(*replies)
    assert prom.query("up").error is None
    assert len(transport.sent) == len(replies)
    assert clock.sleeps == pytest.approx(sleeps)


def test_retry_after_as_an_http_date() -> None:
    """Retry-After may be an HTTP date."""
    clock = SleepingClock()
    when = email.utils.format_datetime(clock.now() + dt.timedelta(seconds=3), True)
    prom, _, _ = client(error(429, "", "slow", **{"Retry-After": when}), ok(), clock=clock)
    assert prom.query("up").error is None
    assert clock.sleeps[0] == pytest.approx(3.0, abs=1.1)


def test_retry_after_beyond_the_timeout_gives_up_at_once() -> None:
    """A Retry-After longer than the time left ends the query now, saying so."""
    prom, transport, clock = client(error(429, "", "slow down", **{"Retry-After": "30"}))
    response = prom.query("up")
    assert response.error is not None
    assert response.error.kind == "throttled"
    assert "Retry-After 30s exceeds the 10.0s left of the timeout" in response.error.message
    assert (len(transport.sent), clock.sleeps) == (1, [])


def test_a_dead_prometheus_is_an_error_quickly() -> None:
    """Refused connections: three attempts, 0.6 s of backoff in all, then unreachable."""
    prom, transport, clock = client(REFUSED)
    response = prom.query("up", metric="success-rate")
    assert response.error is not None
    assert response.error.kind == "unreachable"
    assert response.error.message == (
        f"cannot connect to {URL}: [Errno 111] Connection refused (after 3 attempts in 0.6s)"
    )
    assert "secret_query" not in response.error.message  # the URL's query string is not shown
    assert len(transport.sent) == 3
    assert sum(clock.sleeps) == pytest.approx(0.6)


def test_the_timeout_bounds_retries() -> None:
    """Slow failures stop retrying when no time is left for another attempt."""
    prom, transport, clock = client(
        requests.exceptions.ConnectTimeout("timed out"), cost=3.0, max_attempts=10, timeout=7.0
    )
    started = clock.monotonic()
    response = prom.query("up")
    assert response.error is not None
    assert response.error.kind == "unreachable"
    assert clock.monotonic() - started == pytest.approx(7.0)
    assert len(transport.sent) == 3
    # each attempt gets what is left: 7 s, then 7 - 3 - 0.2, then 7 - 6.2 - 0.4
    assert [o["timeout"][1] for o in transport.options] == pytest.approx([7.0, 3.8, 0.4])


def test_bearer_token_basic_auth_and_headers(tmp_path: Path) -> None:
    """Credentials and extra headers reach the request; a token file is re-read each time."""
    prom, transport, _ = client(ok(), bearer_token="tok-1", headers=(("X-Scope-OrgID", "team"),))
    prom.query("up")
    assert transport.sent[-1].headers["Authorization"] == "Bearer tok-1"
    assert transport.sent[-1].headers["X-Scope-OrgID"] == "team"

    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    prom, transport, _ = client(ok(), bearer_token_file=str(token_file))
    prom.query("up")
    token_file.write_text("rotated\n")
    prom.query("up")
    assert [r.headers["Authorization"] for r in transport.sent] == [
        "Bearer first",
        "Bearer rotated",
    ]

    prom, transport, _ = client(ok(), basic_auth=BasicCredentials("alice", "pw"))
    prom.query("up")
    expected = base64.b64encode(b"alice:pw").decode()
    assert transport.sent[-1].headers["Authorization"] == f"Basic {expected}"


def test_an_unreadable_token_file_is_an_auth_error(tmp_path: Path) -> None:
    """No request is sent without its credentials; the error says which file."""
    missing = tmp_path / "nope"
    prom, transport, _ = client(ok(), bearer_token_file=str(missing))
    response = prom.query("up")
    assert response.error is not None
    assert response.error.kind == "auth"
    assert f"cannot read the bearer token file {missing}" in response.error.message
    assert transport.sent == []
    (tmp_path / "empty").write_text("\n")
    prom, _, _ = client(ok(), bearer_token_file=str(tmp_path / "empty"))
    assert "is empty" in (prom.query("up").error or pytest.fail("no error")).message


SYSTEM_CAS = (True, os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("CURL_CA_BUNDLE"))


@pytest.mark.parametrize(
    ("settings", "verify"),
    [
        pytest.param({}, SYSTEM_CAS, id="system-cas"),
        pytest.param({"ca_file": "/etc/prom-ca.pem"}, "/etc/prom-ca.pem", id="ca-file"),
        pytest.param({"insecure_skip_verify": True}, False, id="insecure"),
    ],
)
def test_certificate_verification(settings: dict[str, Any], verify: object) -> None:
    """A CA file, or an explicit insecure flag, decides how the certificate is checked."""
    prom, transport, _ = client(ok(), **settings)
    prom.query("up")
    if isinstance(verify, tuple):  # requests may swap True for the environment's bundle
        assert transport.options[0]["verify"] in verify
    else:
        assert transport.options[0]["verify"] == verify


def test_secrets_never_reach_logs_or_messages() -> None:
    """Token, password, header values and redacted arguments are scrubbed everywhere."""
    header, argument = "hdr-SECRET-456", "arg-SECRET-789"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"bearer_token": "tok-SECRET-123"}, "tok-SECRET-123"),
        ({"basic_auth": BasicCredentials("alice", "hunter2-pw")}, "hunter2-pw"),
    ]
    with capture_logs() as logs:
        for auth, credential in cases:
            secrets = [credential, header, argument]
            echo = error(400, "bad_data", "parse error near " + " ".join(secrets))
            prom, _, _ = client(echo, REFUSED, ok(), headers=(("X-Api-Key", header),), **auth)
            bad = prom.query(f'x{{a="{argument}"}}', metric="m", redact=[argument])
            assert bad.error is not None
            assert bad.error.message.endswith("parse error near *** *** ***")
            prom.query("up", metric="m")  # refused, retried, then answered
            assert credential not in repr(prom.settings)
    assert len(logs) >= 4, logs
    dumped = json.dumps(logs, default=str)
    for secret in ("tok-SECRET-123", "hunter2-pw", header, argument):
        assert secret not in dumped
    assert "x{a=" not in dumped  # the query text is never logged


def test_user_info_in_the_url_is_hidden() -> None:
    """A password in the URL is neither shown nor logged."""
    settings = PrometheusSettings(url="https://bob:pa55word@prom.test:9090/prefix/")
    assert settings.safe_url == "https://prom.test:9090/prefix"
    assert "pa55word" in settings.secrets()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        pytest.param({"url": "prom:9090"}, "http:// or https://", id="no-scheme"),
        pytest.param(
            {"url": URL, "bearer_token": "a", "bearer_token_file": "/t"}, "one authentication",
            id="two-auth-methods",
        ),
        pytest.param({"url": URL, "timeout": 0}, "positive", id="zero-timeout"),
        pytest.param({"url": URL, "max_attempts": 0}, "at least 1", id="no-attempts"),
    ],
)  # fmt: skip
def test_settings_are_validated(kwargs: dict[str, Any], needle: str) -> None:
    """Impossible settings are rejected when made (by the runtime, not at query time)."""
    with pytest.raises(ValueError, match=needle):
        PrometheusSettings(**kwargs)


def test_settings_from_a_provider_block() -> None:
    """The runtime resolves Secret keys; the provider block supplies the rest."""
    provider = PrometheusProvider.model_validate(
        {
            "query": "up",
            "timeout": "4s",
            "auth": {
                "basic": {
                    "username": {"name": "prom", "key": "user"},
                    "password": {"name": "prom", "key": "pass"},
                }
            },
            "headers": {"X-Scope-OrgID": "shop"},
        }
    )
    values = {"user": "alice", "pass": "pw"}

    def secret(ref: SecretKeyRef) -> str:
        return values[ref.key]

    settings = PrometheusSettings.from_connection(
        provider, secret=secret, default_url=URL, ca_file="/ca.pem"
    )
    assert settings == PrometheusSettings(
        url=URL,
        timeout=4.0,
        basic_auth=BasicCredentials("alice", "pw"),
        ca_file="/ca.pem",
        headers=(("X-Scope-OrgID", "shop"),),
    )
    with pytest.raises(ValueError, match="no Prometheus address"):
        PrometheusSettings.from_connection(provider, secret=secret)
