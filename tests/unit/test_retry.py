"""The retry policy and the translation of client errors onto controller.errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from controller.adapters.retry import RetryPolicy, call_api, translate
from controller.errors import (
    ApiError,
    ApiUnavailableError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
)
from tests.support.clock import FakeClock

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def api_exception(
    status: int, *, reason: str = "", body: str | None = None, headers: dict[str, str] | None = None
) -> ApiException:
    """An ApiException as the client raises it for an HTTP answer."""
    exc = ApiException(status=status, reason=reason, body=body)
    exc.headers = headers
    return exc


def status_body(code: int, reason: str, message: str) -> str:
    """A Kubernetes Status object, as the API server sends with an error."""
    return json.dumps(
        {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}
    )


class Flaky:
    """A callable that raises the given errors in turn, then returns ``result``."""

    def __init__(self, errors: list[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


class Sleeps:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, NotFoundError),
        (409, ConflictError),
        (403, ForbiddenError),
        (422, InvalidError),
        (400, InvalidError),
        (429, TooManyRequestsError),
        (500, ServerError),
        (503, ServerError),
        (0, ApiUnavailableError),
        (401, ApiError),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else v.__name__,
)
def test_translate_maps_http_status_onto_the_error_tree(
    status: int, expected: type[ApiError]
) -> None:
    """Each HTTP status becomes its controller.errors class, keeping the status."""
    err = translate(api_exception(status, reason="Some Reason"))
    assert type(err) is expected
    if status:
        assert err.status == status


def test_translate_prefers_the_status_body_message_and_reason() -> None:
    """The Kubernetes Status message and reason (e.g. AlreadyExists) are kept."""
    body = status_body(409, "AlreadyExists", 'rollouts.stepwise.dev "web" already exists')
    err = translate(api_exception(409, reason="Conflict", body=body))
    assert isinstance(err, ConflictError)
    assert err.reason == "AlreadyExists"
    assert str(err) == 'rollouts.stepwise.dev "web" already exists'


def test_translate_survives_a_non_json_body() -> None:
    """An HTML error page from a proxy still gives a usable error."""
    err = translate(api_exception(502, reason="Bad Gateway", body="<html>oops</html>"))
    assert isinstance(err, ServerError)
    assert err.status == 502
    assert str(err) == "Bad Gateway"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("Fri, 02 Jan 2026 03:04:15 GMT", 10.0),
        ("Fri, 02 Jan 2026 03:04:00 GMT", 0.0),
        ("soon", None),
    ],
    ids=["seconds", "fraction", "http-date", "date-in-past", "garbage"],
)
def test_translate_reads_retry_after_for_429(header: str, expected: float | None) -> None:
    """Retry-After in seconds or as an HTTP date becomes retry_after; garbage is ignored."""
    err = translate(api_exception(429, headers={"Retry-After": header}), clock=FakeClock(wall=NOW))
    assert isinstance(err, TooManyRequestsError)
    assert err.retry_after == expected


def test_translate_finds_retry_after_whatever_its_case() -> None:
    """Header names are case-insensitive."""
    err = translate(api_exception(429, headers={"retry-after": "2"}))
    assert isinstance(err, TooManyRequestsError)
    assert err.retry_after == 2.0


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.MaxRetryError(None, "/api", reason=None),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.ReadTimeoutError(None, "/api", "Read timed out."),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ],
    ids=["max-retry", "protocol", "read-timeout", "refused", "timeout"],
)
def test_translate_maps_connection_failures_to_unavailable(exc: BaseException) -> None:
    """No answer from the server (refused, reset, timed out) is ApiUnavailableError."""
    assert isinstance(translate(exc), ApiUnavailableError)


def test_translate_refuses_errors_that_are_not_from_the_client() -> None:
    """A programming error is not disguised as an API error."""
    with pytest.raises(TypeError, match="not a Kubernetes client error"):
        translate(ValueError("bug"))


def test_transient_errors_are_retried_until_success_with_growing_waits() -> None:
    """5xx and connection errors are retried; waits grow exponentially (with jitter)."""
    fn = Flaky(
        [
            api_exception(503),
            urllib3.exceptions.ProtocolError("reset"),
            api_exception(500),
        ]
    )
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=5, initial_wait=0.1, max_wait=5.0, jitter=0.01)
    assert policy.call(fn, sleep=sleeps) == "ok"
    assert fn.calls == 4
    assert len(sleeps.waits) == 3
    for wait, base in zip(sleeps.waits, [0.1, 0.2, 0.4], strict=True):
        assert base <= wait <= base + 0.01


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422], ids=str)
def test_non_transient_errors_are_raised_at_once_translated(status: int) -> None:
    """A 4xx other than 429 is not retried and reaches the caller as controller.errors."""
    fn = Flaky([api_exception(status)])
    sleeps = Sleeps()
    with pytest.raises(ApiError) as info:
        RetryPolicy().call(fn, sleep=sleeps)
    assert info.value.status == status
    assert isinstance(info.value.__cause__, ApiException)
    assert fn.calls == 1
    assert sleeps.waits == []


def test_attempts_are_capped_and_the_last_transient_error_is_raised() -> None:
    """After max_attempts the last error itself is raised (not a tenacity RetryError)."""
    fn = Flaky([api_exception(503, reason=f"try {i}") for i in range(10)])
    sleeps = Sleeps()
    with pytest.raises(ServerError, match="try 2"):
        RetryPolicy(max_attempts=3).call(fn, sleep=sleeps)
    assert fn.calls == 3
    assert len(sleeps.waits) == 2


def test_wait_is_capped_at_max_wait() -> None:
    """The exponential wait never exceeds max_wait plus jitter."""
    fn = Flaky([api_exception(500) for _ in range(7)])
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=8, initial_wait=1.0, max_wait=3.0, jitter=0.0, max_total=1e6)
    policy.call(fn, sleep=sleeps)
    assert sleeps.waits == [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]


def test_429_waits_at_least_retry_after() -> None:
    """A 429 with Retry-After waits that long even when the exponential wait is shorter."""
    fn = Flaky([api_exception(429, headers={"Retry-After": "2"})])
    sleeps = Sleeps()
    assert RetryPolicy(initial_wait=0.1, jitter=0.0).call(fn, sleep=sleeps) == "ok"
    assert sleeps.waits == [2.0]


def test_retry_after_beyond_the_time_budget_is_not_waited_for() -> None:
    """If Retry-After would overrun the total budget, the 429 is raised instead of sleeping."""
    fn = Flaky([api_exception(429, headers={"Retry-After": "60"})])
    sleeps = Sleeps()
    with pytest.raises(TooManyRequestsError) as info:
        RetryPolicy(max_total=20.0).call(fn, sleep=sleeps)
    assert info.value.retry_after == 60.0
    assert sleeps.waits == []
    assert fn.calls == 1


def test_should_stop_ends_retrying_early() -> None:
    """A stop request (shutdown) ends the retries with the current error."""
    fn = Flaky([api_exception(503) for _ in range(10)])
    stopping = False

    def sleep(_: float) -> None:
        nonlocal stopping
        stopping = True

    with pytest.raises(ServerError):
        RetryPolicy(max_attempts=10).call(fn, sleep=sleep, should_stop=lambda: stopping)
    assert fn.calls == 2


def test_other_exceptions_pass_through_untouched_and_unretried() -> None:
    """A bug in the callable (ValueError) is neither translated nor retried."""
    fn = Flaky([ValueError("bug")])
    with pytest.raises(ValueError, match="bug"):
        call_api(fn, sleep=Sleeps())
    assert fn.calls == 1


def test_call_api_uses_the_default_policy() -> None:
    """call_api retries a transient error and returns the result."""
    fn: Callable[[], str] = Flaky([api_exception(0, reason="SSLError")])
    assert call_api(fn, sleep=Sleeps()) == "ok"
