"""The web provider's HTTP exchange: send one filled-in request, report what came back.
It never raises and decides nothing.

Where it sits in the flow::

    runtime.measure_web: core.web.render_request ─▶ WebClient.send()  (this module)
        ─▶ core.web.WebAnswer (status and body, or an error with a kind)
        ─▶ core.web.evaluate

Built on the standard library's :mod:`http.client` (no HTTP library is a dependency),
so that every rule is ours and visible here:

* **Time.** ``request.timeout`` bounds the whole exchange, redirects included: every
  socket operation gets the time that is left, and running out is an error of kind
  ``timeout`` (the measuring pool's breaker counts those).
* **TLS.** Certificates are verified against the system's CAs unless ``insecure``.
* **Redirects.** At most :attr:`WebClient.max_redirects`, and only to the same scheme,
  host and port (a redirect elsewhere could carry the request's headers, which may hold
  a token, to another server): 301/302/303 become a GET without a body, 307/308 repeat
  the request as it was.
* **Size.** An answer larger than :attr:`WebClient.max_bytes` is an error (its
  ``Content-Length`` is believed when present; otherwise reading stops there).
* **Proxies.** ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` from the environment are
  honoured as the Prometheus adapter's ``requests`` honours them (``https`` through a
  ``CONNECT`` tunnel); tests pass ``proxies={}``.
* **No retries.** A measurement is not repeated (a POST may not be idempotent); the
  metric's ``consecutiveErrorLimit`` absorbs a transient failure.

Header values are sent as UTF-8. Nothing is logged here: the runtime logs the exchange
once, scrubbed of Secret values (the URL and headers may hold them).
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from controller.clock import SYSTEM_CLOCK, Clock
from controller.core.measurement import ErrorKind
from controller.core.web import WebAnswer, WebRequest, safe_url

MAX_BYTES: Final = 1024 * 1024
"""The largest answer read (1 MiB)."""
MAX_REDIRECTS: Final = 3
_CHUNK: Final = 64 * 1024
_USER_AGENT: Final = "stepwise-web-provider"


class _FailedError(Exception):
    """Ends the exchange with this error."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status


@dataclass(frozen=True)
class _Hop:
    method: str
    url: str
    body: bytes | None


class WebClient:
    """Sends web-provider requests (see the module docstring for the rules).

    ``proxies`` maps a scheme to a proxy URL (default: the environment's, as
    :func:`urllib.request.getproxies` reads them); ``clock`` is injected for tests.
    """

    def __init__(
        self,
        *,
        max_bytes: int = MAX_BYTES,
        max_redirects: int = MAX_REDIRECTS,
        proxies: Mapping[str, str] | None = None,
        bypass: Callable[[str], bool] | None = None,
        ca_file: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.proxies = dict(urllib.request.getproxies() if proxies is None else proxies)
        self._bypass = bypass if bypass is not None else _env_bypass(proxies is None)
        self.ca_file = ca_file
        self._clock = clock

    def send(self, request: WebRequest) -> WebAnswer:
        """Send ``request`` and return the answer, or the reason there is none. Never
        raises."""
        deadline = self._clock.monotonic() + request.timeout
        try:
            return self._send(request, deadline)
        except _FailedError as failure:
            return WebAnswer.failed(failure.kind, failure.message, failure.status)
        except Exception as exc:  # the adapter never raises into the caller
            return WebAnswer.failed("client", f"unexpected {type(exc).__name__}")

    def _send(self, request: WebRequest, deadline: float) -> WebAnswer:
        origin = _origin(request.url)
        hop = _Hop(request.method, request.url, request.body)
        for redirects in range(self.max_redirects + 1):
            status, headers, body = self._exchange(request, hop, deadline)
            location = headers.get("location")
            if status not in (301, 302, 303, 307, 308) or not location:
                return WebAnswer(
                    status=status, body=body, content_type=headers.get("content-type", "")
                )
            target = urllib.parse.urljoin(hop.url, location.strip())
            if _origin(target) != origin:
                raise _FailedError(
                    "http",
                    f"{safe_url(hop.url)} redirected (HTTP {status}) to another host, "
                    f"{_origin_text(target)}; not followed",
                    status,
                )
            if redirects == self.max_redirects:
                break
            if status in (307, 308):
                hop = _Hop(hop.method, target, hop.body)
            else:
                hop = _Hop("GET", target, None)
        raise _FailedError(
            "http",
            f"{safe_url(request.url)} redirected more than {self.max_redirects} times; "
            "not followed further",
        )

    # -- one exchange ------------------------------------------------------------------

    def _exchange(
        self, request: WebRequest, hop: _Hop, deadline: float
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(hop.url)
        where = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
        conn, target, extra = self._connection(parts, request, deadline)
        try:
            try:
                conn.connect()
                self._tick(conn, deadline, where)
                self._write(conn, hop, target, request, extra)
                self._tick(conn, deadline, where)
                response = conn.getresponse()
                headers = {k.lower(): v for k, v in response.getheaders()}
                body = self._read(conn, response, deadline, where)
            except _FailedError:
                raise
            except TimeoutError:
                raise _FailedError(
                    "timeout", f"no answer from {where} within {request.timeout:g}s"
                ) from None
            except ssl.SSLError as exc:
                raise _FailedError("tls", f"TLS with {where} failed: {_ssl_reason(exc)}") from None
            except http.client.RemoteDisconnected:
                raise _FailedError(
                    "unreachable", f"{where} closed the connection without answering"
                ) from None
            except http.client.HTTPException as exc:
                raise _FailedError(
                    "bad_response", f"{where} sent a malformed HTTP answer ({type(exc).__name__})"
                ) from None
            except OSError as exc:
                raise _FailedError(
                    "unreachable", f"cannot connect to {where}: {_os_reason(exc)}"
                ) from None
            return response.status, headers, body
        finally:
            conn.close()

    def _connection(
        self, parts: urllib.parse.SplitResult, request: WebRequest, deadline: float
    ) -> tuple[http.client.HTTPConnection, str, list[tuple[str, str]]]:
        """The connection for one URL (through a proxy when one applies), the request
        target to put on the request line, and headers for the proxy."""
        left = self._left(deadline, parts.netloc)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        context = self._tls(request.insecure) if parts.scheme == "https" else None
        proxy = self.proxies.get(parts.scheme)
        if proxy and not self._bypass(host):
            proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            auth = _proxy_auth(proxied)
            proxy_host, proxy_port = proxied.hostname or "", proxied.port or 80
            if context is not None:
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=left, context=context
                )
                conn.set_tunnel(host, port, headers=dict(auth))
                return conn, target, []
            absolute = urllib.parse.urlunsplit(
                ("http", _netloc(host, parts.port), parts.path or "/", parts.query, "")
            )
            return http.client.HTTPConnection(proxy_host, proxy_port, timeout=left), absolute, auth
        if context is not None:
            return (
                http.client.HTTPSConnection(host, port, timeout=left, context=context),
                target,
                [],
            )
        return http.client.HTTPConnection(host, port, timeout=left), target, []

    def _tls(self, insecure: bool) -> ssl.SSLContext:
        if insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.ca_file)

    def _write(
        self,
        conn: http.client.HTTPConnection,
        hop: _Hop,
        target: str,
        request: WebRequest,
        extra: list[tuple[str, str]],
    ) -> None:
        names = {k.lower() for k, _ in request.headers}
        conn.putrequest(hop.method, target, skip_host="host" in names)
        if "user-agent" not in names:
            conn.putheader("User-Agent", _USER_AGENT)
        for key, value in [*extra, *request.headers]:
            if hop.body is None and key.lower() in ("content-type", "content-length"):
                continue  # a redirect turned into a GET carries no body
            if key.lower() == "content-length":
                continue  # ours is the true one
            conn.putheader(key, value.encode())
        if hop.body is not None or hop.method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(hop.body or b"")))
        conn.endheaders(hop.body)

    def _read(
        self,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        deadline: float,
        where: str,
    ) -> bytes:
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            raise _FailedError(
                "bad_response",
                f"{where} answered {int(length)} bytes, more than the {self.max_bytes} read",
                response.status,
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            self._tick(conn, deadline, where)
            chunk = response.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_bytes:
                raise _FailedError(
                    "bad_response",
                    f"{where} answered more than the {self.max_bytes} bytes read",
                    response.status,
                )
            chunks.append(chunk)

    def _left(self, deadline: float, where: str) -> float:
        left = deadline - self._clock.monotonic()
        if left <= 0:
            raise _FailedError("timeout", f"no answer from {where} in the time given")
        return left

    def _tick(self, conn: http.client.HTTPConnection, deadline: float, where: str) -> None:
        """Give the next socket operation only the time that is left."""
        left = self._left(deadline, where)
        if conn.sock is not None:
            conn.sock.settimeout(left)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _netloc(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def _proxy_auth(proxy: urllib.parse.SplitResult) -> list[tuple[str, str]]:
    if proxy.username is None:
        return []
    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [("Proxy-Authorization", f"Basic {token}")]


def _env_bypass(from_environment: bool) -> Callable[[str], bool]:
    if not from_environment:
        return lambda host: False
    return lambda host: bool(urllib.request.proxy_bypass(host))


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted ({exc.verify_message})"
    return exc.reason or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"name not resolved ({exc.strerror})"
    if exc.strerror:
        return exc.strerror
    return type(exc).__name__
