"""The one retry policy for calls to the Kubernetes API, and the translation of client
errors onto :mod:`controller.errors`.

Every adapter call goes ``fn()`` -> :func:`translate` (an ``ApiException`` or a urllib3 /
socket error becomes a :class:`~controller.errors.ApiError`) -> :class:`RetryPolicy`
(tenacity). Only :class:`~controller.errors.TransientApiError` is retried: connection
errors and timeouts, 5xx, and 429, which waits at least the server's ``Retry-After``.
Everything else (404, 409, 403, 422, ...) reaches the caller at once, because retrying
cannot fix it: a conflict needs a fresh read, a bad spec needs a condition.

Attempts and total time are capped, so a worker is never stuck in here for long: once
the budget is spent the last ``TransientApiError`` is raised and the work queue's
rate limiter takes over (``add_rate_limited``). Waits grow exponentially with jitter.
The sleep is injectable (tests pass a recorder; the informer passes a stop-aware wait).
"""

from __future__ import annotations

import copy
import email.utils
import json
import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
import tenacity
import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.clock import SYSTEM_CLOCK, Clock
from controller.errors import (
    ApiError,
    ApiUnavailableError,
    TooManyRequestsError,
    TransientApiError,
    from_status,
)

T = TypeVar("T")

log = structlog.get_logger()

#: Client-side failures that mean "no answer from the server": worth retrying.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,  # MaxRetryError, ProtocolError, timeouts, NewConnectionError
    ConnectionError,
    TimeoutError,
    socket.timeout,
)


def translate(exc: BaseException, *, clock: Clock = SYSTEM_CLOCK) -> ApiError:
    """The :mod:`controller.errors` exception for a client-library error.

    ``ApiException`` maps through :func:`controller.errors.from_status` with the
    Kubernetes ``Status`` message and reason when the body has them, and ``Retry-After``
    (seconds or an HTTP date) for 429. Connection errors and timeouts become
    :class:`~controller.errors.ApiUnavailableError`. An ``ApiError`` is returned as is.
    Raise the result ``from`` the original to keep the cause. ``clock`` reads an HTTP
    date's distance.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message, reason = _status_message(exc)
        retry_after = retry_after_seconds(_retry_after_header(exc.headers), clock.now())
        return from_status(status, message, reason=reason, retry_after=retry_after)
    if isinstance(exc, _CONNECTION_ERRORS):
        return ApiUnavailableError(f"{type(exc).__name__}: {exc}")
    raise TypeError(f"not a Kubernetes client error: {type(exc).__name__}: {exc}") from exc


def is_translatable(exc: BaseException) -> bool:
    """True for the errors :func:`translate` understands."""
    return isinstance(exc, (ApiError, ApiException, *_CONNECTION_ERRORS))


def _status_message(exc: ApiException) -> tuple[str, str]:
    reason = str(exc.reason or "")
    message = reason or f"HTTP {exc.status}"
    body = exc.body
    if isinstance(body, str) and body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            message = str(doc.get("message") or message)
            reason = str(doc.get("reason") or reason)
    return message, reason


def _retry_after_header(headers: Any) -> str | None:
    """The ``Retry-After`` header of an ``ApiException``'s headers, whatever its case."""
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if str(name).lower() == "retry-after":
                return str(value)
    return None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """The seconds a ``Retry-After`` header value asks for: a number of seconds, or an
    HTTP date (from ``now``); None when there is none or it is not readable, 0 for a time
    already past."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient API errors are retried."""

    max_attempts: int = 5
    """Attempts in total, the first one included."""

    max_total: float = 20.0
    """Seconds: no attempt starts after this much time has passed since the first."""

    initial_wait: float = 0.1
    """Seconds before the second attempt; doubles on each further attempt."""

    max_wait: float = 5.0
    """Cap on the exponential wait (a longer ``Retry-After`` is still honoured)."""

    jitter: float = 0.1
    """Up to this many seconds of random jitter are added to every exponential wait."""

    def retrying(
        self,
        *,
        sleep: Callable[[float], object] = tenacity.nap.sleep,
        should_stop: Callable[[], bool] | None = None,
    ) -> tenacity.Retrying:
        """A tenacity controller for this policy.

        The callable it runs must raise :mod:`controller.errors` exceptions already (see
        :meth:`call`, which translates). ``should_stop`` ends retrying early, for example
        when the process is shutting down.
        """
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(
            self.max_attempts
        ) | tenacity.stop_before_delay(self.max_total)
        if should_stop is not None:
            stop = stop | _StopWhen(should_stop)

        def pause(seconds: float) -> None:
            sleep(seconds)

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientApiError),
            stop=stop,
            wait=self._wait,
            sleep=pause,
            before_sleep=_log_retry,
            reraise=True,
        )

    def call(
        self,
        fn: Callable[[], T],
        *,
        sleep: Callable[[float], object] = tenacity.nap.sleep,
        should_stop: Callable[[], bool] | None = None,
    ) -> T:
        """Run ``fn`` with client errors translated, retrying the transient ones."""

        def attempt() -> T:
            try:
                return fn()
            except ApiError:
                raise
            except Exception as exc:
                if is_translatable(exc):
                    raise translate(exc) from exc
                raise

        result: T = self.retrying(sleep=sleep, should_stop=should_stop)(attempt)
        return result

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exponential = tenacity.wait_exponential_jitter(
            multiplier=self.initial_wait, max=self.max_wait, exp_base=2, jitter=self.jitter
        )(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TooManyRequestsError) and exc.retry_after is not None:
            return max(exc.retry_after, exponential)
        return float(exponential)


class _StopWhen(tenacity.stop.stop_base):
    """Stop retrying as soon as ``flag()`` is true."""

    def __init__(self, flag: Callable[[], bool]) -> None:
        self._flag = flag

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._flag()


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.info(
        "kubernetes api call failed; retrying",
        attempt=state.attempt_number,
        wait_seconds=round(wait, 3),
        error=type(exc).__name__,
        status=getattr(exc, "status", None),
        message=str(exc),
    )


def dedicated_client(api_client: client.ApiClient) -> client.ApiClient:
    """A new API client with the same server and credentials as ``api_client``, its own
    connection pool, and urllib3's own retries off, so this module's policy is the only
    one.

    urllib3 retries a failed or timed-out GET three more times by default, which
    multiplies every client-side timeout by four: a watch on a dead connection, or a
    lease renewal, would be given up on four times later than asked. Watches and leader
    election use such a client; the caller closes it.
    """
    config = copy.deepcopy(api_client.configuration)
    config.retries = False
    dedicated = client.ApiClient(configuration=config)
    for name, value in api_client.default_headers.items():
        dedicated.set_default_header(name, value)  # type: ignore[no-untyped-call]
    return dedicated


DEFAULT_POLICY = RetryPolicy()
"""The policy adapters use unless a caller needs a tighter budget."""


def call_api(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], object] = tenacity.nap.sleep,
) -> T:
    """Run one Kubernetes API call under the default retry policy (see :class:`RetryPolicy`)."""
    return policy.call(fn, sleep=sleep)
