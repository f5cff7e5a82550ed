"""The web provider: every outcome of an answer (:func:`controller.core.web.evaluate`),
the escaping of values in the URL, headers, body and jsonBody (injection attempts
included), the JSONPath subset, the HTTP exchange against a real local server (redirects,
size cap, timeout, TLS, proxy), and Secret values kept out of messages, values and logs."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.adapters.web import WebClient
from controller.api.analysis import Metric, TemplateArg, WebProvider
from controller.api.rollout import Rollout
from controller.cli import _measurer
from controller.core import analysis as an
from controller.core.measurement import Outcome
from controller.core.promql import TemplateError
from controller.core.web import (
    WebAnswer,
    WebRequest,
    evaluate,
    parse_json_path,
    render_request,
    scrub,
    url_position,
)
from controller.runtime.measure import PrometheusMeasurer, Variables
from controller.runtime.measure_web import WebMeasurer
from controller.runtime.measuring import MeasuringPool
from controller.settings import Settings
from localcluster import pki
from tests.support.clock import FakeClock
from tests.support.manifests import rollout as rollout_doc

VARIABLES = {
    "namespace": "shop",
    "rollout": "checkout",
    "stableRevision": "aaa111",
    "canaryRevision": "bbb222",
    "stableService": "checkout-stable",
    "canaryService": "checkout-canary",
    "interval": "30s",
    "args.service": "checkout",
}


def metric(web: dict[str, Any] | None = None, **fields: Any) -> Metric:
    """A web metric named ``gate`` (successCondition ``result == true`` unless the test
    gives criteria)."""
    if not {"thresholdRange", "successCondition", "failureCondition"} & set(fields):
        fields["successCondition"] = "result == true"
    spec = {"url": "http://gate.test/check", **(web or {})}
    return Metric.model_validate({"name": "gate", "provider": {"web": spec}, **fields})


def provider(**spec: Any) -> WebProvider:
    """A WebProvider (url ``http://gate.test/check`` unless given)."""
    spec.setdefault("url", "http://gate.test/check")
    return WebProvider.model_validate(spec)


REQUEST = WebRequest("GET", "http://gate.test/check?token=abc")


def ok(payload: Any) -> WebAnswer:
    """A 200 answer with ``payload`` as JSON."""
    return WebAnswer(status=200, body=json.dumps(payload).encode())


# -- the outcome table -----------------------------------------------------------------

ON_DATA = {"jsonPath": "{$.data.ok}"}


def assert_outcome(
    m: Metric, answer: WebAnswer, phase: str, value: str | None, says: str, kind: str | None
) -> None:
    """The answer's outcome has this phase, value and error kind, and a message saying
    ``says`` that names the metric (when not Successful) and never shows the query string."""
    outcome = evaluate(m, REQUEST, answer)
    assert (outcome.phase, outcome.value, outcome.error_kind) == (phase, value, kind)
    assert says in outcome.message
    if phase != "Successful":
        assert outcome.message.startswith("gate: ")
    assert "token=abc" not in outcome.message


@pytest.mark.parametrize(
    ("answer", "says", "kind"),
    [
        pytest.param(
            WebAnswer.failed("timeout", "no answer from http://gate.test:80 within 10s"),
            "request failed (timeout): no answer", "timeout", id="timeout",
        ),
        pytest.param(
            WebAnswer.failed("unreachable", "cannot connect to http://gate.test: refused"),
            "request failed (unreachable)", "unreachable", id="refused",
        ),
        pytest.param(
            WebAnswer.failed("tls", "TLS with https://gate.test failed"), "(tls)", "tls", id="tls"
        ),
        pytest.param(
            WebAnswer.failed("http", "redirected (HTTP 302) to another host"),
            "to another host", "http", id="redirect-elsewhere",
        ),
        pytest.param(
            WebAnswer(status=503, body=b"upstream   down\n\nretry later"),
            "GET http://gate.test/check answered HTTP 503: upstream down retry later", "http",
            id="http-503-with-excerpt",
        ),
        pytest.param(
            WebAnswer(status=404, body=b""), "answered HTTP 404: (empty)", "http",
            id="http-404-empty",
        ),
        pytest.param(
            WebAnswer(status=401, body=b'{"error":"no"}'), "HTTP 401", "auth", id="http-401-auth"
        ),
        pytest.param(
            WebAnswer(status=429, body=b"slow down"), "HTTP 429", "throttled",
            id="http-429-throttled",
        ),
        pytest.param(
            WebAnswer(status=302, body=b""), "HTTP 302", "http", id="redirect-not-followed"
        ),
        pytest.param(
            WebAnswer(status=200, body=b"<html>ok</html>", content_type="text/html"),
            "not JSON (text/html)", "bad_response", id="html",
        ),
        pytest.param(
            WebAnswer(status=200, body=b"  "), "the answer is empty", "bad_response",
            id="empty-body",
        ),
        pytest.param(
            WebAnswer(status=200, body=b'{"v": NaN}'), "NaN is not JSON", "bad_response",
            id="nan-is-not-json",
        ),
    ],
)  # fmt: skip
def test_an_answer_that_cannot_be_judged_is_an_error_of_its_kind(
    answer: WebAnswer, says: str, kind: str
) -> None:
    """A request that failed, an HTTP error status, a body that is not JSON: an Error
    without a value, with the error kind the pool's breaker reads."""
    assert_outcome(metric(), answer, "Error", None, says, kind)


@pytest.mark.parametrize(
    ("answer", "m", "phase", "value", "says", "kind"),
    [
        pytest.param(
            ok({"data": {}}), metric(ON_DATA), "NoData", None,
            "jsonPath '{$.data.ok}' matched nothing", None, id="no-match",
        ),
        pytest.param(
            ok({"data": {"ok": None}}), metric(ON_DATA), "NoData", "null",
            "selected null", None, id="null",
        ),
        pytest.param(
            ok({"data": {"ok": True}}), metric(ON_DATA), "Successful", "true", "", None,
            id="success",
        ),
        pytest.param(
            ok({"data": {"ok": False}}), metric(ON_DATA), "Failed", "false",
            "successCondition 'result == true' does not hold for the result false", None,
            id="success-condition-fails",
        ),
        pytest.param(
            ok({"data": {"ok": False}}),
            metric(ON_DATA, failureCondition="result == false"), "Failed", "false",
            "failureCondition 'result == false' holds", None, id="failure-condition-holds",
        ),
        pytest.param(
            ok({"data": {"ok": "maybe"}}),
            metric(ON_DATA, successCondition="result == true", failureCondition="result == false"),
            "Inconclusive", '"maybe"', "neither successCondition", None, id="inconclusive",
        ),
        pytest.param(
            ok({"data": {"ok": True, "rate": 0.95}}),
            metric({"jsonPath": "{$.data}"}, successCondition="result.ok && result.rate >= 0.9"),
            "Successful", '{"ok":true,"rate":0.95}', "", None, id="object-fields",
        ),
        pytest.param(
            ok({"rate": 0.995}), metric({"jsonPath": "{$.rate}"}, thresholdRange={"min": 0.99}),
            "Successful", "0.995", "", None, id="threshold-pass",
        ),
        pytest.param(
            ok({"rate": 0.9}), metric({"jsonPath": "{$.rate}"}, thresholdRange={"min": 0.99}),
            "Failed", "0.9", "0.9 is below thresholdRange.min 0.99", None, id="threshold-below",
        ),
        pytest.param(
            ok({"rate": 7}), metric({"jsonPath": "{$.rate}"}, thresholdRange={"max": 5}),
            "Failed", "7", "7 is above thresholdRange.max 5", None, id="threshold-above",
        ),
        pytest.param(
            ok({"rate": True}), metric({"jsonPath": "{$.rate}"}, thresholdRange={"max": 5}),
            "Error", "true", "thresholdRange needs a number; the result is true/false", None,
            id="threshold-on-a-bool",
        ),
        pytest.param(
            ok({"rate": "0.5"}), metric({"jsonPath": "{$.rate}"}, thresholdRange={"max": 5}),
            "Error", '"0.5"', "the result is a string", None, id="threshold-on-a-string",
        ),
        pytest.param(
            ok({"data": 3}), metric({"jsonPath": "{$.data}"}, successCondition="result.ok"),
            "Error", "3", "cannot evaluate the condition", None, id="condition-cannot-apply",
        ),
        pytest.param(
            ok({"items": [{"ok": True}, {"ok": False}]}),
            metric({"jsonPath": "{$.items[*].ok}"}, successCondition="all(result, # == true)"),
            "Failed", "[true,false]", "does not hold", None, id="several-matches-are-a-list",
        ),
        pytest.param(
            ok({"data": 1}), metric({"jsonPath": "{$.items[?(@.ok)]}"}), "Error", None,
            "filters [?(...)] are not supported", None, id="unsupported-json-path",
        ),
    ],
)  # fmt: skip
def test_every_answer_has_a_stated_outcome(
    answer: WebAnswer, m: Metric, phase: str, value: str | None, says: str, kind: str | None
) -> None:
    """Each kind of answer gives the outcome the module docstring's table states."""
    assert_outcome(m, answer, phase, value, says, kind)


def test_a_long_value_is_cut_for_the_status() -> None:
    """A large selected value is kept short in the status."""
    outcome = evaluate(metric(successCondition="true"), REQUEST, ok({"x": "y" * 5000}))
    assert outcome.phase == "Successful"
    assert outcome.value is not None
    assert len(outcome.value) == 256
    assert outcome.value.endswith("…")


# -- JSONPath ----------------------------------------------------------------------------

DOC = {
    "data": {"ok": True, "a.b": 1, "nested": {"ok": False}},
    "items": [{"value": 1, "ok": True}, {"value": 2, "ok": False}, {"value": 3, "ok": True}],
}


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("{$}", [DOC]),
        ("{}", [DOC]),
        ("{.}", [DOC]),
        ("$", [DOC]),
        ("{$.data.ok}", [True]),
        ("{.data.ok}", [True]),
        ("{ $.data.ok }", [True]),
        ("{$.items[0].value}", [1]),
        ("{$.items[-1].value}", [3]),
        ("{$.items[5].value}", []),
        ("{$.data['a.b']}", [1]),
        ('{$.data["a.b"]}', [1]),
        ("{$.items[*].value}", [1, 2, 3]),
        ("{$.items.*.value}", [1, 2, 3]),
        ("{$.items[1:].value}", [2, 3]),
        ("{$.items[:1].value}", [1]),
        ("{$..ok}", [True, False, True, False, True]),
        ("{$.missing.ok}", []),
        ("{$.data.ok.deeper}", []),
        ("{$.data[0]}", []),
    ],
)
def test_json_path_selects_like_kubernetes(path: str, matches: list[Any]) -> None:
    """The supported JSONPath forms select what kubectl's would."""
    assert parse_json_path(path).select(DOC) == matches


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("{$.items[?(@.ok)]}", "filters"),
        ("value: {$.data}", "one {...} expression"),
        ("{$.data.}", "needs a field name"),
        ("{$.items[a]}", "a bracket holds"),
        ("{$ data}", "expected"),
    ],
)
def test_json_path_outside_the_subset_is_refused(path: str, says: str) -> None:
    """An expression outside the subset is an error that says what and where."""
    with pytest.raises(ValueError, match="jsonPath") as info:
        parse_json_path(path)
    assert says in str(info.value)


# -- templating: the URL -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "value", "expected"),
    [
        pytest.param(
            "http://gate.test/api/{{args.x}}/status", "checkout",
            "http://gate.test/api/checkout/status", id="path-plain",
        ),
        pytest.param(
            "http://gate.test/api/{{args.x}}/status", "x/../../admin?steal=1#frag",
            "http://gate.test/api/x%2F..%2F..%2Fadmin%3Fsteal%3D1%23frag/status",
            id="path-injection-stays-one-segment",
        ),
        pytest.param(
            "http://gate.test/check?service={{args.x}}&v=1", "a&admin=true#",
            "http://gate.test/check?service=a%26admin%3Dtrue%23&v=1",
            id="query-injection-stays-one-value",
        ),
        pytest.param(
            "http://gate.test/check?q={{ args.x }}", "a b+c/d%2F",
            "http://gate.test/check?q=a%20b%2Bc%2Fd%252F", id="query-spaces-plus-percent",
        ),
        pytest.param(
            "http://gate.test/check?q={{args.x}}", "über", "http://gate.test/check?q=%C3%BCber",
            id="query-unicode",
        ),
        pytest.param(
            "http://{{args.x}}.shop.svc:8080/check", "checkout-canary",
            "http://checkout-canary.shop.svc:8080/check", id="host-plain",
        ),
        pytest.param(
            "{{args.x}}/api/check", "https://gate.test:8443",
            "https://gate.test:8443/api/check", id="whole-start",
        ),
        pytest.param(
            "http://gate.test/{{canaryRevision}}/{{namespace}}?i={{interval}}", "",
            "http://gate.test/bbb222/shop?i=30s", id="builtin-variables",
        ),
        pytest.param(
            "http://gate.test/a b?x=ü", "", "http://gate.test/a%20b?x=%C3%BC",
            id="literal-text-escaped",
        ),
    ],
)  # fmt: skip
def test_a_url_value_is_escaped_for_where_it_stands(url: str, value: str, expected: str) -> None:
    """A value in the path is one segment, in the query one value: no value can add a
    segment, a parameter or a fragment, nor leave the host."""
    request = render_request(provider(url=url), {**VARIABLES, "args.x": value})
    assert request.url == expected


@pytest.mark.parametrize(
    ("url", "value", "says"),
    [
        pytest.param("http://gate.test/api/{{args.x}}", "..", "cannot be . or ..", id="dotdot"),
        pytest.param("http://gate.test/api/{{args.x}}", ".", "cannot be . or ..", id="dot"),
        pytest.param(
            "http://{{args.x}}/check", "evil.test/x?", "only letters, digits", id="host-slash"
        ),
        pytest.param(
            "http://{{args.x}}.internal/", "evil.test#", "only letters, digits", id="host-hash"
        ),
        pytest.param(
            "http://{{args.x}}gate.test/", "user@", "only letters, digits", id="host-userinfo"
        ),
        pytest.param(
            "{{args.x}}/check", "file:///etc/passwd", "http:// or https://", id="start-not-http"
        ),
        pytest.param(
            "{{args.x}}/check", "http://gate.test/?a=1", "cannot hold ? or #", id="start-with-query"
        ),
    ],
)
def test_a_url_value_that_would_change_the_url_is_refused(url: str, value: str, says: str) -> None:
    """Values that would move the request elsewhere are refused, naming the argument and
    never echoing the value."""
    with pytest.raises(TemplateError) as info:
        render_request(provider(url=url), {**VARIABLES, "args.x": value})
    message = str(info.value)
    assert "url: {{args.x}}" in message
    assert says in message
    assert info.value.variables == ("args.x",)
    if len(value) > 2:
        assert value not in message


@pytest.mark.parametrize(
    ("before", "position"),
    [
        ("", "start"),
        ("http", "scheme"),
        ("http://", "host"),
        ("http://h:", "host"),
        ("http://h/", "path"),
        ("http://h/a?", "query"),
        ("http://h/a?b=1&c=", "query"),
        ("http://h/a#", "fragment"),
        ("http://h?x=1#", "fragment"),
        ("{{args.base}}/", "path"),
        ("{{args.base}}", "host"),
        ("http://h/{{args.p}}?x=", "query"),
    ],
)
def test_url_positions(before: str, position: str) -> None:
    """Where a placeholder stands is read from the template's own text before it."""
    assert url_position(before) == position


def test_unknown_and_missing_placeholders_are_named() -> None:
    """An unknown variable and an argument without a value are one error naming both
    (and the field each is in)."""
    spec = provider(
        url="http://gate.test/{{canaryRevison}}",
        headers=[{"key": "X-Svc", "value": "{{args.nope}}"}],
    )
    with pytest.raises(TemplateError) as info:
        render_request(spec, VARIABLES)
    message = str(info.value)
    assert "url: {{canaryRevison}}: unknown variable" in message
    assert "headers[X-Svc]: {{args.nope}}: no value" in message
    assert info.value.variables == ("canaryRevison", "args.nope")


def test_an_unclosed_or_malformed_placeholder_is_an_error() -> None:
    """A ``{{`` without its end, or with something that is not a name, is refused."""
    with pytest.raises(TemplateError, match="unclosed placeholder"):
        render_request(provider(url="http://gate.test/{{args.x"), VARIABLES)
    with pytest.raises(TemplateError, match="malformed placeholder"):
        render_request(provider(body="{{ a b }}", method="POST"), VARIABLES)


def test_a_filled_url_that_is_not_http_is_refused() -> None:
    """The URL, once filled, must still be http(s) with a host."""
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        render_request(provider(url="http:///nohost"), VARIABLES)


# -- templating: headers and bodies ------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["sec\r\nX-Admin: yes", "sec\nX-Admin: yes", "sec\rX", "sec\x00x", "sec\x1b[0m"],
)
def test_a_header_value_cannot_add_a_header(value: str) -> None:
    """A value with CR, LF or another control character in a header is refused, naming
    the header and the argument but not the value."""
    spec = provider(headers=[{"key": "Authorization", "value": "Bearer {{args.token}}"}])
    with pytest.raises(TemplateError) as info:
        render_request(spec, {**VARIABLES, "args.token": value})
    message = str(info.value)
    assert "headers[Authorization]: {{args.token}}" in message
    assert "line break" in message
    assert "sec" not in message
    assert "X-Admin" not in message


def test_headers_are_filled_as_written_and_in_order() -> None:
    """Header values take values as written (tabs and Unicode included); a name may
    repeat."""
    spec = provider(
        headers=[
            {"key": "Authorization", "value": "Bearer {{args.token}}"},
            {"key": "X-Tag", "value": "a"},
            {"key": "X-Tag", "value": "{{rollout}}\t{{args.who}}"},
        ]
    )
    request = render_request(spec, {**VARIABLES, "args.token": "t=/+ok", "args.who": "Zoë"})
    assert request.headers == (
        ("Authorization", "Bearer t=/+ok"),
        ("X-Tag", "a"),
        ("X-Tag", "checkout\tZoë"),
    )


def test_body_is_filled_as_written() -> None:
    """``body`` is the template's own text: values go in as they are, UTF-8 encoded, with
    no Content-Type added."""
    spec = provider(method="POST", body='{"service": "{{args.service}}", "n": {{args.n}}}')
    request = render_request(spec, {**VARIABLES, "args.n": "3"})
    assert request.body == b'{"service": "checkout", "n": 3}'
    assert request.headers == ()


INJECTION = '", "admin": true, "x": "'


def test_json_body_values_stay_inside_their_strings() -> None:
    """A value in jsonBody is substituted inside its JSON string only: quotes, braces and
    backslashes in it cannot add a field (the body is built as an object, then serialized)."""
    spec = provider(
        method="PUT",
        jsonBody={
            "service": "{{args.service}}",
            "note": "by {{args.who}} for {{rollout}}",
            "count": 3,
            "flags": [True, None, "{{args.who}}"],
            "nested": {"{{args.key}}": "{{namespace}}"},
        },
    )
    request = render_request(
        spec, {**VARIABLES, "args.who": INJECTION + "\\\n}", "args.key": "region"}
    )
    assert request.body is not None
    sent = json.loads(request.body)
    assert sent == {
        "service": "checkout",
        "note": f"by {INJECTION}\\\n}} for checkout",
        "count": 3,
        "flags": [True, None, INJECTION + "\\\n}"],
        "nested": {"region": "shop"},
    }
    assert "admin" not in sent
    assert ("Content-Type", "application/json") in request.headers


def test_json_body_keeps_a_given_content_type() -> None:
    """A Content-Type header given by the template is not replaced."""
    spec = provider(
        method="POST",
        jsonBody={"a": 1},
        headers=[{"key": "content-type", "value": "application/vnd.gate+json"}],
    )
    request = render_request(spec, VARIABLES)
    assert request.headers == (("content-type", "application/vnd.gate+json"),)


def test_json_body_keys_that_collide_are_refused() -> None:
    """Two keys that become the same once filled are an error, not a silent overwrite."""
    spec = provider(method="POST", jsonBody={"{{args.a}}": 1, "x": 2})
    with pytest.raises(TemplateError, match="two keys become one"):
        render_request(spec, {**VARIABLES, "args.a": "x"})


def test_request_carries_method_timeout_and_tls_choice() -> None:
    """Method, timeoutSeconds and insecure reach the request."""
    request = render_request(
        provider(url="https://gate.test/x", timeoutSeconds=3, insecure=True), VARIABLES
    )
    assert (request.method, request.timeout, request.insecure) == ("GET", 3.0, True)


# -- scrubbing ----------------------------------------------------------------------------


def test_scrub_removes_every_form_of_a_secret() -> None:
    """A Secret value is removed as written, JSON-escaped and percent-escaped."""
    secret = 'p@ss/wörd "x"'
    text = (
        f"raw {secret} json {json.dumps(secret)} url "
        "p%40ss%2Fw%C3%B6rd%20%22x%22 plus p%40ss%2Fw%C3%B6rd+%22x%22"
    )
    cleaned = scrub(text, [secret])
    assert "ss" not in cleaned.replace("***", "")
    assert cleaned.count("***") == 4


# -- the HTTP exchange against a real local server --------------------------------------


@dataclass
class Seen:
    """One request the local server received."""

    method: str
    target: str
    headers: dict[str, str]
    all_headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Server:
    """A local HTTP server whose answers the test sets per path."""

    url: str
    port: int
    routes: dict[str, Callable[[BaseHTTPRequestHandler, Seen], None]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)


def reply(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> Callable[[BaseHTTPRequestHandler, Seen], None]:
    """A route answering ``status`` with ``body``."""

    def answer(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def serve(context: ssl.SSLContext | None = None) -> Iterator[Server]:
    state: dict[str, Server] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                list(self.headers.items()),
                self.rfile.read(length),
            )
            server = state["s"]
            server.seen.append(seen)
            path = self.path.split("?")[0]
            if path.startswith("http://"):  # a proxy's absolute-form target
                path = "/" + path.split("/", 3)[3].split("?")[0]
            route = server.routes.get(path, reply(200, b'{"ok": true}'))
            route(self, seen)

        def do_GET(self) -> None:
            self._any()

        def do_POST(self) -> None:
            self._any()

        def do_PUT(self) -> None:
            self._any()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    scheme = "http"
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    port = httpd.server_address[1]
    state["s"] = Server(f"{scheme}://127.0.0.1:{port}", port)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state["s"]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    """A local HTTP server (answers ``{"ok": true}`` where no route is set)."""
    yield from serve()


CLIENT = WebClient(proxies={})


def test_get_sends_headers_and_reads_the_answer(server: Server) -> None:
    """A GET carries the template's headers (UTF-8, a repeated name twice) and a
    User-Agent, and the answer's status, body and content type come back."""
    server.routes["/check"] = reply(200, b'{"data": 1}', {"Content-Type": "application/json"})
    request = WebRequest(
        "GET",
        f"{server.url}/check?service=a%26b",
        (("Authorization", "Bearer t"), ("X-Tag", "a"), ("X-Tag", "Zoë")),
    )
    answer = CLIENT.send(request)
    assert (answer.status, answer.body, answer.content_type) == (
        200,
        b'{"data": 1}',
        "application/json",
    )
    (seen,) = server.seen
    assert seen.target == "/check?service=a%26b"
    assert seen.headers["authorization"] == "Bearer t"
    tags = [v for k, v in seen.all_headers if k.lower() == "x-tag"]
    assert [t.encode("latin-1").decode() for t in tags] == ["a", "Zoë"]
    assert seen.headers["user-agent"] == "stepwise-web-provider"


def test_post_sends_the_body(server: Server) -> None:
    """A POST sends its body with its length."""
    request = WebRequest("POST", f"{server.url}/m", (("Content-Type", "application/json"),),
                         b'{"a":1}')  # fmt: skip
    assert CLIENT.send(request).status == 200
    (seen,) = server.seen
    assert (seen.method, seen.body, seen.headers["content-length"]) == ("POST", b'{"a":1}', "7")


def test_non_2xx_answers_come_back_with_their_body(server: Server) -> None:
    """A 500 is an answer (the core judges it), not an adapter error."""
    server.routes["/m"] = reply(500, b"boom")
    answer = CLIENT.send(WebRequest("GET", f"{server.url}/m"))
    assert (answer.status, answer.body, answer.error) == (500, b"boom", None)


def test_a_redirect_to_the_same_host_is_followed(server: Server) -> None:
    """302 to a path on the same host is followed; after a POST it becomes a GET without
    a body, while 307 repeats the POST with its body."""
    server.routes["/old"] = reply(302, b"", {"Location": "/new"})
    server.routes["/keep"] = reply(307, b"", {"Location": f"{server.url}/new"})
    server.routes["/new"] = reply(200, b'{"moved": true}')
    answer = CLIENT.send(WebRequest("POST", f"{server.url}/old", body=b"x"))
    assert answer.body == b'{"moved": true}'
    assert [(s.method, s.target, s.body) for s in server.seen] == [
        ("POST", "/old", b"x"),
        ("GET", "/new", b""),
    ]
    server.seen.clear()
    CLIENT.send(WebRequest("POST", f"{server.url}/keep", body=b"y"))
    assert [(s.method, s.target, s.body) for s in server.seen] == [
        ("POST", "/keep", b"y"),
        ("POST", "/new", b"y"),
    ]


def test_a_redirect_to_another_host_is_not_followed(server: Server) -> None:
    """A redirect elsewhere (another host name, port or scheme) is an error naming where
    it pointed: the request's headers may hold a token."""
    for location in (
        f"http://localhost:{server.port}/new",
        "http://127.0.0.1:1/new",
        f"https://127.0.0.1:{server.port}/new",
    ):
        server.routes["/old"] = reply(302, b"", {"Location": location})
        answer = CLIENT.send(
            WebRequest("GET", f"{server.url}/old", (("Authorization", "Bearer t"),))
        )
        assert answer.error is not None
        assert answer.error.kind == "http"
        assert "redirected (HTTP 302) to another host" in answer.error.message
    assert [s.target for s in server.seen] == ["/old"] * 3


def test_too_many_redirects_stop(server: Server) -> None:
    """A redirect loop stops after three redirects."""
    server.routes["/loop"] = reply(302, b"", {"Location": "/loop"})
    answer = CLIENT.send(WebRequest("GET", f"{server.url}/loop"))
    assert answer.error is not None
    assert "redirected more than 3 times" in answer.error.message
    assert len(server.seen) == 4


def test_an_answer_larger_than_the_cap_is_refused(server: Server) -> None:
    """An answer over the size cap is an error, whether its length is announced or it
    arrives in chunks."""

    def chunked(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(4):
            handler.wfile.write(b"100\r\n" + b"x" * 256 + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    server.routes["/big"] = reply(200, b"x" * 2000)
    server.routes["/chunked"] = chunked
    small = WebClient(proxies={}, max_bytes=1000)
    for path, says in (("/big", "answered 2000 bytes"), ("/chunked", "more than the 1000")):
        answer = small.send(WebRequest("GET", f"{server.url}{path}"))
        assert answer.error is not None
        assert answer.error.kind == "bad_response"
        assert says in answer.error.message
    assert small.send(WebRequest("GET", f"{server.url}/ok")).status == 200


def test_no_answer_within_the_timeout_is_a_timeout(server: Server) -> None:
    """A server that does not answer in time gives an Error of kind timeout, within about
    the timeout."""

    def slow(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        time.sleep(2)
        reply(200, b"{}")(handler, seen)

    server.routes["/slow"] = slow
    started = time.monotonic()
    answer = CLIENT.send(WebRequest("GET", f"{server.url}/slow", timeout=0.3))
    assert time.monotonic() - started < 1.5
    assert answer.error is not None
    assert answer.error.kind == "timeout"
    assert "within 0.3s" in answer.error.message


def test_a_refused_connection_is_unreachable() -> None:
    """Nothing listening: an Error of kind unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answer = CLIENT.send(WebRequest("GET", f"http://127.0.0.1:{port}/x", timeout=2))
    assert answer.error is not None
    assert answer.error.kind == "unreachable"
    assert f"cannot connect to http://127.0.0.1:{port}" in answer.error.message


def test_an_http_proxy_gets_the_absolute_url(server: Server) -> None:
    """With an http proxy configured the request goes to the proxy with the absolute URL
    (and the proxy's credentials); a host the bypass names goes direct."""
    proxied = WebClient(proxies={"http": f"http://user:pw@127.0.0.1:{server.port}"})
    assert proxied.send(WebRequest("GET", "http://gate.test:8080/check?x=1")).status == 200
    (seen,) = server.seen
    assert seen.target == "http://gate.test:8080/check?x=1"
    assert seen.headers["proxy-authorization"] == "Basic dXNlcjpwdw=="
    direct = WebClient(proxies={"http": "http://127.0.0.1:1"}, bypass=lambda h: True)
    assert direct.send(WebRequest("GET", f"{server.url}/check")).status == 200


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    """A private CA and a serving certificate for 127.0.0.1."""
    return pki.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_server(tls_files: pki.Pki) -> Iterator[Server]:
    """A local HTTPS server with a certificate from a private CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.serving_cert, tls_files.serving_key)
    yield from serve(context)


def test_tls_is_verified_unless_insecure(https_server: Server, tls_files: pki.Pki) -> None:
    """An unknown certificate is a TLS error; insecure accepts it; a trusted CA verifies
    it."""
    untrusted = CLIENT.send(WebRequest("GET", f"{https_server.url}/check"))
    assert untrusted.error is not None
    assert untrusted.error.kind == "tls"
    assert "certificate not trusted" in untrusted.error.message
    insecure = CLIENT.send(WebRequest("GET", f"{https_server.url}/check", insecure=True))
    assert insecure.status == 200
    trusted = WebClient(proxies={}, ca_file=str(tls_files.ca_cert))
    assert trusted.send(WebRequest("GET", f"{https_server.url}/check")).status == 200


# -- the whole measurement: templating, exchange, verdict, Secrets -----------------------

TOKEN = "tok-7Hq/2x+Zr9"
SECRETS = {("shop", "gate"): TOKEN}


def rollout() -> Rollout:
    """A Rollout in namespace ``shop`` with a canary in progress."""
    doc = rollout_doc("checkout")
    doc["metadata"]["namespace"] = "shop"
    doc["status"] = {"stableRevision": "aaa111", "canaryRevision": "bbb222"}
    return Rollout.model_validate(doc)


def measure(m: Metric, *args: TemplateArg) -> Outcome:
    """One measurement of ``m`` through PrometheusMeasurer's web provider, with the
    Secret ``gate`` (key ``token``) readable."""

    def read(namespace: str, ref: Any) -> str:
        return SECRETS[(namespace, ref.name)]

    measurer = PrometheusMeasurer(read, clock=FakeClock(), web=WebMeasurer(WebClient(proxies={})))
    return measurer.take(rollout(), an.Due("step-1", m, args, ()))


TOKEN_ARG = TemplateArg.model_validate(
    {"name": "token", "valueFrom": {"secretKeyRef": {"name": "gate", "key": "token"}}}
)


def test_a_measurement_end_to_end(server: Server) -> None:
    """Variables and arguments fill the request, the server's answer is judged."""
    server.routes["/gate/checkout/bbb222"] = reply(200, b'{"data": {"ok": true, "n": 3}}')
    m = metric(
        {
            "url": server.url + "/gate/{{rollout}}/{{canaryRevision}}?svc={{args.service}}",
            "jsonPath": "{$.data}",
        },
        successCondition="result.ok && result.n > 2",
    )
    svc = TemplateArg.model_validate({"name": "service", "value": "a b&c"})
    outcome = measure(m, svc)
    assert (outcome.phase, outcome.value) == ("Successful", '{"ok":true,"n":3}')
    assert server.seen[0].target == "/gate/checkout/bbb222?svc=a%20b%26c"


def test_a_secret_never_reaches_a_message_a_value_or_a_log(server: Server) -> None:
    """A Secret-valued argument in the URL path and a header is sent, but the server's
    error page that echoes it (raw and escaped) reaches the status and the logs only as
    ***."""

    def echo(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        body = f"denied {seen.target} for {seen.headers['authorization']}".encode()
        reply(403, body)(handler, seen)

    server.routes["/check/" + "tok-7Hq%2F2x%2BZr9"] = echo
    m = metric(
        {
            "url": server.url + "/check/{{args.token}}",
            "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
        }
    )
    with capture_logs() as logs:
        outcome = measure(m, TOKEN_ARG)
    assert server.seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert (outcome.phase, outcome.error_kind) == ("Error", "auth")
    assert "HTTP 403" in outcome.message
    assert "denied /check/*** for Bearer ***" in outcome.message
    shown = json.dumps(logs) + outcome.message + str(outcome.value)
    assert TOKEN not in shown
    assert "tok-7Hq%2F2x%2BZr9" not in shown
    assert "2x+Zr9" not in shown


def test_a_secret_in_a_selected_value_is_scrubbed(server: Server) -> None:
    """A server that answers with the Secret as the result: the value shows ***."""
    server.routes["/who"] = reply(200, json.dumps({"me": TOKEN}).encode())
    m = metric({"url": server.url + "/who?t={{args.token}}", "jsonPath": "{$.me}"},
               successCondition="len(result) > 100")  # fmt: skip
    outcome = measure(m, TOKEN_ARG)
    assert outcome.phase == "Failed"
    assert outcome.value == '"***"'
    assert TOKEN not in outcome.message


def test_a_refused_secret_value_is_not_echoed() -> None:
    """A Secret-valued argument with a line break in a header is refused without being
    shown, and nothing is sent."""
    SECRETS[("shop", "bad")] = "abc\r\nX-Admin: yes"
    try:
        arg = TemplateArg.model_validate(
            {"name": "token", "valueFrom": {"secretKeyRef": {"name": "bad", "key": "t"}}}
        )
        m = metric(
            {
                "url": "http://127.0.0.1:1/x",
                "headers": [{"key": "Authorization", "value": "{{args.token}}"}],
            }
        )
        outcome = measure(m, arg)
    finally:
        del SECRETS[("shop", "bad")]
    assert outcome.phase == "Error"
    assert "headers[Authorization]: {{args.token}}" in outcome.message
    assert "X-Admin" not in outcome.message


class _Raising:
    def send(self, request: WebRequest) -> WebAnswer:
        raise RuntimeError(f"bug with {request.url}")


def test_a_bug_becomes_an_error_never_an_exception() -> None:
    """An exception anywhere in the measurement is an Error naming the metric, without
    its text (which could hold a value)."""
    taker = WebMeasurer(_Raising())
    outcome = taker(rollout(), an.Due("step-1", metric(), (), ()), Variables(VARIABLES, ()))
    assert (outcome.phase, outcome.message) == ("Error", "gate: unexpected RuntimeError")


def test_the_controller_wires_the_web_provider() -> None:
    """``stepwise run`` gives its measurer a web provider."""
    measurer = _measurer(Settings(), None)
    assert isinstance(measurer, PrometheusMeasurer)
    assert isinstance(measurer.others["web"], WebMeasurer)


def test_the_pool_waits_for_a_long_web_timeout_and_no_less_than_its_deadline() -> None:
    """A gate given timeoutSeconds 120 is not cut at the pool's 30 s; a short one keeps
    the pool's deadline (the request's own timeout gives up first, with its message)."""
    pool = MeasuringPool(PrometheusMeasurer(lambda _n, _r: ""), lambda _k: None, deadline=30)
    try:
        assert pool.deadline_of(metric({"timeoutSeconds": 120})) == 121
        assert pool.deadline_of(metric({"timeoutSeconds": 5})) == 30
    finally:
        pool.close()
