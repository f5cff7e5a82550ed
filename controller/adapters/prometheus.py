"""The Prometheus adapter: run one PromQL query, report what happened. It never raises.

Where it sits in the flow::

    runtime: variables ─▶ core.promql.render ─▶ PrometheusClient.query()  (this module)
             ─▶ QueryResponse (result, or error with a kind and Prometheus's own text)
             ─▶ core.measurement.evaluate / core.judge.judge_measurement

Everything that can go wrong (connection refused, timeouts, TLS, 4xx/5xx, a body that is
not the API's JSON, a credentials file that cannot be read, a bug in a library) comes
back as a :class:`~controller.core.measurement.QueryResponse` whose ``error`` is set;
:mod:`controller.core.measurement` decides what it means. Secrets (bearer token, basic
password, extra header values) are resolved by the runtime and passed in
:class:`PrometheusSettings`; this module does no Kubernetes I/O and never logs them, nor
the query text (a rendered query may hold a Secret-valued argument); messages are
scrubbed of them and of any ``redact`` values the caller passes.

Why it reads the raw HTTP response. ``prometheus-api-client`` 0.7's
``PrometheusConnect.custom_query()`` returns only ``data.result``, which loses
``data.resultType`` (a scalar and a string look alike, as do an empty vector and an
empty matrix), and on any status other than 200 it raises
``PrometheusApiClientException("HTTP Status Code 400 (b'...')")``: the body as the
``repr`` of bytes, with no status attribute and no headers (so no ``Retry-After``). We
therefore give the library our own ``requests.Session`` with a response hook that keeps
the last response of the calling thread: the library still builds and sends the request
(URL, parameters, authentication, TLS verification, timeout), and we read
``resultType``, Prometheus's error JSON (``{"status": "error", "errorType": "bad_data",
"error": "1:16: parse error: ..."}``) and ``Retry-After`` from the real response.

Retries. The library mounts a urllib3 ``Retry`` (three tries, one-second backoff, on
408/429/5xx) by default; we pass one that never retries, so tenacity is the single retry
policy: connection errors (refused, reset, connect timeout), 5xx except Prometheus's own
query ``timeout``/``canceled`` (repeating a query that ran out of time cannot finish in
the time left), and 429 honouring ``Retry-After``. Nothing else is retried (400 bad
query, 401/403, 422, TLS, read timeouts). The metric's ``timeout`` bounds the whole
measurement, retries and waits included: each attempt gets the time that is left (and
asks Prometheus to stop at 90% of it, so its own timeout text arrives first), a wait
that would not leave time for another attempt ends the retries, and ``max_attempts``
caps them. A dead Prometheus therefore gives an Error in well under a second (refused
connections, 0.2 s + 0.4 s of backoff), an unroutable one within the timeout.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import requests
import requests.adapters
import requests.auth
import structlog
import tenacity
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from controller.adapters.retry import retry_after_seconds
from controller.api.analysis import PrometheusConnection
from controller.api.base import parse_duration
from controller.api.rollout import SecretKeyRef
from controller.clock import SYSTEM_CLOCK, Clock
from controller.core.measurement import ErrorKind, QueryResponse, ResultType
from controller.core.web import scrub

log = structlog.get_logger("stepwise.prometheus")

_RESULT_TYPES: Final[frozenset[str]] = frozenset({"scalar", "vector", "matrix", "string"})
_ERROR_TYPES: Final[dict[str, ErrorKind]] = {
    "bad_data": "bad_data",
    "execution": "execution",
    "timeout": "timeout",
    "canceled": "canceled",
    "internal": "internal",
    "unavailable": "unavailable",
}
#: Prometheus error types that a retry cannot fix even on a 5xx status.
_FINAL_ERROR_TYPES: Final = frozenset({"timeout", "canceled", "bad_data", "execution"})
_MIN_ATTEMPT_SECONDS: Final = 0.05


@dataclass(frozen=True)
class BasicCredentials:
    """HTTP basic authentication (the password is never shown in a repr)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class PrometheusSettings:
    """How to reach one Prometheus; secrets already resolved by the runtime."""

    url: str
    """Base URL, for example ``http://prometheus.monitoring:9090``."""
    timeout: float = 10.0
    """Seconds one query may take, retries and waits included (the metric's timeout)."""
    bearer_token: str | None = field(default=None, repr=False)
    """A bearer token (from a Secret)."""
    bearer_token_file: str | None = None
    """A file holding a bearer token, read at every query (projected tokens rotate)."""
    basic_auth: BasicCredentials | None = field(default=None, repr=False)
    """Basic authentication."""
    ca_file: str | None = None
    """A PEM file of CA certificates to verify Prometheus's certificate with."""
    insecure_skip_verify: bool = False
    """Accept any certificate (tests only; urllib3 warns on every request)."""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Extra HTTP headers; their values are treated as secrets."""
    max_attempts: int = 3
    """Attempts per query, the first included."""
    backoff: float = 0.2
    """Seconds before the first retry; doubles each time."""
    max_backoff: float = 2.0
    """Longest wait between attempts (``Retry-After`` may ask for more, within the timeout)."""
    connect_timeout: float = 3.0
    """Seconds to establish a connection (capped by the time left)."""

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("the Prometheus address must be an http:// or https:// URL")
        methods = [self.bearer_token, self.bearer_token_file, self.basic_auth]
        if sum(m is not None for m in methods) > 1:
            raise ValueError("choose one authentication method: bearer token, file or basic")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @property
    def safe_url(self) -> str:
        """The URL without user information, for logs and messages."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.netloc.rsplit("@", 1)[-1]
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")

    def secrets(self) -> tuple[str, ...]:
        """Every value that must never appear in a log line or a message."""
        found: list[str] = []
        if self.bearer_token:
            found.append(self.bearer_token)
        if self.basic_auth is not None:
            found.append(self.basic_auth.password)
        password = urllib.parse.urlsplit(self.url).password
        if password:
            found.append(password)
        found.extend(v for _, v in self.headers if len(v) >= 4)
        return tuple(found)

    @classmethod
    def from_connection(
        cls,
        connection: PrometheusConnection,
        *,
        secret: Callable[[SecretKeyRef], str],
        default_url: str | None = None,
        ca_file: str | None = None,
        **tuning: Any,
    ) -> PrometheusSettings:
        """Settings for a metric's provider block. ``secret`` resolves a Secret key (the
        runtime's job); ``ca_file`` is where the runtime wrote ``caSecret``'s bundle."""
        url = connection.address or default_url
        if not url:
            raise ValueError("no Prometheus address: set the provider's address or a default")
        auth = connection.auth
        return cls(
            url=url,
            timeout=parse_duration(connection.timeout),
            bearer_token=secret(auth.bearer_token) if auth and auth.bearer_token else None,
            bearer_token_file=auth.bearer_token_file if auth else None,
            basic_auth=(
                BasicCredentials(secret(auth.basic.username), secret(auth.basic.password))
                if auth and auth.basic
                else None
            ),
            ca_file=ca_file,
            insecure_skip_verify=connection.insecure_skip_verify,
            headers=tuple(sorted((connection.headers or {}).items())),
            **tuning,
        )


class _CredentialsError(Exception):
    """The bearer token file could not be read (not a requests error: never retried)."""


class _BearerAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Bearer ...`` from a value or, at every request, a file."""

    def __init__(self, token: str | None, token_file: str | None) -> None:
        self._token = token
        self._file = token_file

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._token
        if token is None and self._file is not None:
            try:
                token = Path(self._file).read_text().strip()
            except OSError as exc:
                raise _CredentialsError(
                    f"cannot read the bearer token file {self._file}: {exc.strerror}"
                ) from None
            if not token:
                raise _CredentialsError(f"the bearer token file {self._file} is empty")
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(<hidden>)"


@dataclass(frozen=True)
class _Attempt:
    """One try: its response, whether another try may help, and how long to wait."""

    response: QueryResponse
    transient: bool = False
    retry_after: float | None = None


#: urllib3 retries disabled: tenacity is the only retry policy.
_NO_RETRY: Final = Retry(total=0, raise_on_status=False)


class PrometheusClient:
    """Instant and range queries against one Prometheus (see the module docstring).

    ``transport`` replaces the HTTP transport (tests pass a fake, as with httpx's
    MockTransport); ``sleep`` and ``clock`` are injected for the same reason.
    """

    def __init__(
        self,
        settings: PrometheusSettings,
        *,
        transport: requests.adapters.BaseAdapter | None = None,
        sleep: Callable[[float], None] = tenacity.nap.sleep,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._local = threading.local()
        session = requests.Session()
        session.verify = settings.ca_file or not settings.insecure_skip_verify
        session.hooks["response"].append(self._keep_response)
        auth: requests.auth.AuthBase | None = None
        if settings.bearer_token is not None or settings.bearer_token_file is not None:
            auth = _BearerAuth(settings.bearer_token, settings.bearer_token_file)
        elif settings.basic_auth is not None:
            auth = requests.auth.HTTPBasicAuth(
                settings.basic_auth.username, settings.basic_auth.password
            )
        base = settings.url.rstrip("/")
        self._prom = PrometheusConnect(
            url=base,
            # The library annotates headers as dict and auth as tuple; it hands both to
            # requests, which takes None and any AuthBase.
            headers=dict(settings.headers) or None,  # type: ignore[arg-type]
            disable_ssl=settings.insecure_skip_verify,
            retry=_NO_RETRY,
            auth=auth,  # type: ignore[arg-type]
            session=session,
        )
        if transport is not None:
            session.mount(base, transport)
        self._secrets = settings.secrets()

    def close(self) -> None:
        """Release the connection pool."""
        self._prom.close()

    def query(
        self,
        promql: str,
        *,
        metric: str = "",
        timeout: float | None = None,
        at: dt.datetime | None = None,
        redact: Collection[str] = (),
    ) -> QueryResponse:
        """An instant query (``/api/v1/query``), at ``at`` or now. Never raises.

        ``timeout`` (seconds, default the settings') bounds the whole call; ``metric``
        names the query in logs; ``redact`` are values (Secret-valued arguments) to scrub
        from messages.
        """

        def send(params: dict[str, str], timeouts: tuple[float, float]) -> None:
            if at is not None:
                params["time"] = f"{at.timestamp():.3f}"
            # requests takes a (connect, read) pair; the library's "int" hint is too narrow.
            self._prom.custom_query(promql, params=params, timeout=timeouts)  # type: ignore[arg-type]

        return self._guarded(send, metric=metric, timeout=timeout, redact=redact)

    def query_range(
        self,
        promql: str,
        *,
        start: dt.datetime,
        end: dt.datetime,
        step: str,
        metric: str = "",
        timeout: float | None = None,
        redact: Collection[str] = (),
    ) -> QueryResponse:
        """A range query (``/api/v1/query_range``; start and end are whole seconds, as the
        library sends them). Never raises; the answer is a ``matrix``."""

        def send(params: dict[str, str], timeouts: tuple[float, float]) -> None:
            self._prom.custom_query_range(
                promql,
                start_time=start,
                end_time=end,
                step=step,
                params=params,
                timeout=timeouts,  # type: ignore[arg-type]
            )

        return self._guarded(send, metric=metric, timeout=timeout, redact=redact)

    # -- the retry loop ----------------------------------------------------------------

    def _guarded(
        self,
        send: Callable[[dict[str, str], tuple[float, float]], None],
        *,
        metric: str,
        timeout: float | None,
        redact: Collection[str],
    ) -> QueryResponse:
        secrets = (*self._secrets, *(r for r in redact if r))
        started = self._clock.monotonic()
        try:
            response, attempts = self._with_retries(
                send, started + (timeout or self.settings.timeout), metric
            )
        except Exception as exc:  # the adapter never raises into the caller
            response, attempts = (
                QueryResponse.failed("client", f"unexpected {type(exc).__name__}: {exc}"),
                1,
            )
        elapsed = self._clock.monotonic() - started
        if response.error is None:
            log.debug(
                "prometheus query answered",
                metric=metric,
                url=self.settings.safe_url,
                result_type=response.result_type,
                attempts=attempts,
                seconds=round(elapsed, 3),
            )
            return response
        message = scrub(response.error.message, secrets)
        if attempts > 1:
            message += f" (after {attempts} attempts in {elapsed:.1f}s)"
        log.warning(
            "prometheus query failed",
            metric=metric,
            url=self.settings.safe_url,
            kind=response.error.kind,
            status=response.error.status,
            attempts=attempts,
            seconds=round(elapsed, 3),
            error=message,
        )
        return QueryResponse.failed(response.error.kind, message, response.error.status)

    def _with_retries(
        self,
        send: Callable[[dict[str, str], tuple[float, float]], None],
        deadline: float,
        metric: str,
    ) -> tuple[QueryResponse, int]:
        def planned_wait(state: tenacity.RetryCallState) -> float:
            last: _Attempt = state.outcome.result() if state.outcome else _Attempt(_EMPTY)
            if last.retry_after is not None:
                return last.retry_after
            return min(
                self.settings.max_backoff, self.settings.backoff * 2.0 ** (state.attempt_number - 1)
            )

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= self.settings.max_attempts:
                return True
            left = deadline - self._clock.monotonic() - planned_wait(state)
            return left < _MIN_ATTEMPT_SECONDS

        def before_sleep(state: tenacity.RetryCallState) -> None:
            last: _Attempt = state.outcome.result() if state.outcome else _Attempt(_EMPTY)
            err = last.response.error
            log.info(
                "prometheus query failed, retrying",
                metric=metric,
                url=self.settings.safe_url,
                kind=err.kind if err else None,
                status=err.status if err else None,
                attempt=state.attempt_number,
                wait=round(planned_wait(state), 3),
            )

        retrying = tenacity.Retrying(
            stop=stop,
            wait=planned_wait,
            retry=tenacity.retry_if_result(lambda a: bool(a.transient)),
            sleep=self._sleep,
            before_sleep=before_sleep,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        counter = {"n": 0}

        def attempt() -> _Attempt:
            counter["n"] += 1
            return self._attempt(send, deadline)

        last: _Attempt = retrying(attempt)
        response = last.response
        if last.transient and last.retry_after is not None and response.error is not None:
            left = max(0.0, deadline - self._clock.monotonic())
            if last.retry_after > left:
                response = QueryResponse.failed(
                    response.error.kind,
                    f"{response.error.message}; Retry-After {last.retry_after:g}s exceeds "
                    f"the {left:.1f}s left of the timeout",
                    response.error.status,
                )
        return response, counter["n"]

    # -- one attempt -------------------------------------------------------------------

    def _keep_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._local.response = response

    def _attempt(
        self, send: Callable[[dict[str, str], tuple[float, float]], None], deadline: float
    ) -> _Attempt:
        left = deadline - self._clock.monotonic()
        if left < _MIN_ATTEMPT_SECONDS:
            return _Attempt(QueryResponse.failed("timeout", "no time left for the query"))
        self._local.response = None
        params = {"timeout": f"{max(left * 0.9, 0.001):.3f}"}
        url = self.settings.safe_url
        try:
            send(params, (min(self.settings.connect_timeout, left), left))
        except PrometheusApiClientException as exc:
            return self._http_error(exc)
        except requests.exceptions.SSLError as exc:
            return _Attempt(
                QueryResponse.failed("tls", f"TLS handshake with {url} failed: {_reason(exc)}")
            )
        except requests.exceptions.ConnectionError as exc:
            return _Attempt(
                QueryResponse.failed("unreachable", f"cannot connect to {url}: {_reason(exc)}"),
                transient=True,
            )
        except requests.exceptions.Timeout:
            return _Attempt(
                QueryResponse.failed("timeout", f"no answer from {url} within {left:.1f}s")
            )
        except requests.exceptions.JSONDecodeError:
            return _Attempt(self._not_json())
        except _CredentialsError as exc:
            return _Attempt(QueryResponse.failed("auth", str(exc)))
        except requests.exceptions.RequestException as exc:
            return _Attempt(
                QueryResponse.failed("http", f"request to {url} failed: {type(exc).__name__}")
            )
        except (KeyError, TypeError):
            return _Attempt(self._not_json())
        return _Attempt(self._success())

    def _captured(self) -> requests.Response | None:
        response: requests.Response | None = getattr(self._local, "response", None)
        return response

    def _success(self) -> QueryResponse:
        response = self._captured()
        if response is None:
            return QueryResponse.failed("client", "the response was not captured")
        try:
            body = response.json()
            data = body["data"]
            result_type = data["resultType"]
            result = data["result"]
        except (ValueError, KeyError, TypeError):
            return self._not_json()
        if result_type not in _RESULT_TYPES:
            return QueryResponse.failed("bad_response", f"unknown resultType {result_type!r}")
        warnings = body.get("warnings") or ()
        rtype: ResultType = result_type
        return QueryResponse.ok(rtype, result, tuple(str(w) for w in warnings))

    def _not_json(self) -> QueryResponse:
        response = self._captured()
        status = response.status_code if response is not None else None
        snippet = _snippet(response.text) if response is not None else ""
        return QueryResponse.failed(
            "bad_response",
            f"{self.settings.safe_url} answered something that is not the Prometheus API's "
            f"JSON (HTTP {status}): {snippet}",
            status,
        )

    def _http_error(self, exc: PrometheusApiClientException) -> _Attempt:
        response = self._captured()
        if response is None:
            return _Attempt(QueryResponse.failed("http", _snippet(str(exc))))
        status = response.status_code
        error_type = ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping) and body.get("status") == "error":
            error_type = str(body.get("errorType", ""))
            message = (
                f"Prometheus answered HTTP {status} ({error_type or 'error'}): "
                f"{body.get('error', '')}"
            )
        else:
            message = f"{self.settings.safe_url} answered HTTP {status}: {_snippet(response.text)}"
        kind = _kind(status, error_type)
        transient = status == 429 or (status >= 500 and error_type not in _FINAL_ERROR_TYPES)
        retry_after = (
            retry_after_seconds(response.headers.get("Retry-After"), self._clock.now())
            if status in (429, 503)
            else None
        )
        return _Attempt(QueryResponse.failed(kind, message, status), transient, retry_after)


_EMPTY: Final = QueryResponse()


def _kind(status: int, error_type: str) -> ErrorKind:
    if error_type in _ERROR_TYPES:
        return _ERROR_TYPES[error_type]
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "throttled"
    return "http"


_ERRNO: Final = re.compile(r"\[Errno -?\d+\] [^'\")(]+|\[SSL: [A-Z_]+\][^'\")(]*")


def _reason(exc: BaseException) -> str:
    """The root cause of a requests error without the URL (whose query string holds the
    PromQL): ``[Errno 111] Connection refused``, ``[SSL: CERTIFICATE_VERIFY_FAILED] ...``."""
    match = _ERRNO.search(str(exc))
    if match:
        return match.group(0).strip().rstrip(".,:")
    if "timed out" in str(exc).lower():
        return "connection timed out"
    return type(exc).__name__


def _snippet(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
