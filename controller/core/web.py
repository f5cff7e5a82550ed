"""The ``web`` provider's decisions: the request a metric's template makes, and what the
answer means (Argo Rollouts' ``web`` metric provider).

Where it sits in the flow::

    runtime.measure_web: variables ─▶ render_request() here ─▶ WebRequest
        ─▶ adapters.web.WebClient.send() (the HTTP exchange; never raises) ─▶ WebAnswer
        ─▶ evaluate() here: WebAnswer + Metric ─▶ Outcome ─▶ scrub() ─▶ the status

Nothing here does I/O. Placeholders are ``{{args.NAME}}`` and ``{{rollout}}``,
``{{namespace}}``, ``{{stableRevision}}``, ``{{canaryRevision}}``, ``{{stableService}}``,
``{{canaryService}}``, ``{{activeService}}``, ``{{previewService}}``, ``{{interval}}``
(spaces inside the braces allowed). A value never changes the structure of what it is
put in:

=================================  ==========================================================
where the placeholder stands       how its value is written
=================================  ==========================================================
``url``, the whole start           the value *is* the address: it must be an ``http://`` or
(``{{args.base}}/api``)            ``https://`` URL with a host, and is taken as written
``url``, in the host               only letters, digits, ``. - _ :``; anything else is refused
                                   (no ``@``, ``/`` or ``#`` that would send the request
                                   elsewhere)
``url``, in the path               percent-escaped as one path segment (``/`` ``?`` ``#``
                                   ``%`` included); ``.`` and ``..`` are refused
``url``, in the query or fragment  percent-escaped as one query value (``&`` ``=`` ``+``
                                   ``#`` included)
a header value                     as written; a value with a line break or another control
                                   character is refused (no header can be added)
``body``                           as written (the body is the template's own text)
``jsonBody``                       inside its strings (and keys) only: the body is built as
                                   an object and serialized, so a value stays one string
=================================  ==========================================================

An unknown placeholder, one without a value and a refused value are a
:class:`~controller.core.promql.TemplateError` naming the field and the placeholder,
never the value (it may come from a Secret).

What an answer means, checked in this order:

===============================================  ==========================================
answer                                           outcome
===============================================  ==========================================
no answer within ``timeoutSeconds``              Error, kind ``timeout`` (the measuring
                                                 pool's breaker counts it)
no connection, TLS failure, a redirect to        Error with the adapter's explanation
another host or too many, an answer larger       (kinds ``unreachable``, ``tls``,
than the cap                                     ``http``, ``bad_response``)
HTTP status outside 200-299                      Error naming the status, with a short
                                                 excerpt of the body (401/403: ``auth``,
                                                 429: ``throttled``, others: ``http``)
a body that is not JSON (empty, HTML, ``NaN``)   Error, with an excerpt
a ``jsonPath`` this module cannot read           Error naming the expression
``jsonPath`` matches nothing                     NoData (the metric's ``onNoData`` decides)
``jsonPath`` selects ``null``                    NoData (blind, not bad)
otherwise                                        ``result`` is the selected value (several
                                                 matches: the list of them) and is judged:
``failureCondition`` holds                       Failed
``thresholdRange`` with a number outside it      Failed (bounds inclusive)
``thresholdRange`` with a result that is not a   Error (true/false is not a number)
number
``successCondition`` holds                       Successful
``successCondition`` fails, no                   Failed
``failureCondition``
both conditions given and neither holds          Inconclusive
no ``successCondition`` (nothing failed)         Successful
a condition that cannot be evaluated             Error naming the metric and the reason
===============================================  ==========================================

The measured value in the status is the result as compact JSON (``true``, ``0.95``,
``{"ok":true}``), cut at :data:`MAX_VALUE_CHARS`. JSONPath is the Kubernetes form Argo
Rollouts uses (one ``{...}`` expression): ``{$}``, ``{$.data.ok}``, ``{.data.ok}``,
``{$.items[0].value}``, ``{$.items[-1]}``, ``{$['a.b']}``, ``{$.items[*].ok}``,
``{$.items[1:3]}``, ``{$..ok}``; filters (``[?(...)]``) are not supported.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from controller.api.analysis import Metric, WebProvider
from controller.core import expr, promql
from controller.core.measurement import (
    ErrorKind,
    Outcome,
    QueryError,
    failure_held,
    outside_range,
    success_missed,
    unevaluable,
)

KNOWN_VARIABLES: Final = promql.KNOWN_VARIABLES | {"activeService", "previewService"}
MAX_VALUE_CHARS: Final = 256
"""The longest measured value kept in the status (longer ones end in ``…``)."""
EXCERPT_CHARS: Final = 200
"""The longest excerpt of an answer's body put in a message."""
REDACTED: Final = "***"

_PLACEHOLDER: Final = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME: Final = re.compile(r"\s*(args\.[A-Za-z_][A-Za-z0-9_-]*|[A-Za-z][A-Za-z0-9]*)\s*")
_HOST_VALUE: Final = re.compile(r"[A-Za-z0-9._:-]*")
_HEADER_FORBIDDEN: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Characters a URL may carry as they are; others in the template's own text are escaped.
_URL_SAFE: Final = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True)
class WebRequest:
    """One HTTP request, filled in and ready to send."""

    method: str
    url: str = field(repr=False)
    """The address (it may hold argument values: see :meth:`safe_url`)."""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Header names and values, in order (a name may repeat)."""
    body: bytes | None = field(default=None, repr=False)
    timeout: float = 10.0
    """Seconds the whole exchange may take, redirects included."""
    insecure: bool = False
    """Accept any TLS certificate."""

    @property
    def safe_url(self) -> str:
        """``scheme://host:port/path`` without user information, query or fragment, for
        messages (still to be scrubbed: the path may hold an argument)."""
        return safe_url(self.url)


@dataclass(frozen=True)
class WebAnswer:
    """What the adapter got: a status and body, or an error. Filled by the adapter."""

    status: int | None = None
    body: bytes = b""
    content_type: str = ""
    error: QueryError | None = None
    """Set when there is no HTTP answer to judge (timeout, refused, TLS, too large ...)."""

    @classmethod
    def failed(cls, kind: ErrorKind, message: str, status: int | None = None) -> WebAnswer:
        """An exchange that gave no answer to judge."""
        return cls(status=status, error=QueryError(kind, message, status))


def safe_url(url: str) -> str:
    """``url`` without user information, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


# -- templating ------------------------------------------------------------------------

UrlPosition = Literal["start", "scheme", "host", "path", "query", "fragment"]


@dataclass(frozen=True)
class _Refused:
    why: str


class _Filler:
    """Fills the placeholders of one request, collecting what is wrong field by field."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = variables
        self.problems: list[str] = []
        self.names: list[str] = []

    def fill(
        self,
        template: str,
        where: str,
        place: Callable[[str, str], str | _Refused] = lambda value, before: value,
        literal: Callable[[str], str] = lambda text: text,
    ) -> str:
        """``template`` with each placeholder replaced by ``place(value, text before
        it)``; the template's own text goes through ``literal``."""
        out: list[str] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(template):
            out.append(literal(template[pos : match.start()]))
            self._stray(template[pos : match.start()], where)
            pos = match.end()
            found = _NAME.fullmatch(match.group(1))
            if found is None:
                self.problems.append(f"{where}: malformed placeholder {match.group(0)!r}")
                continue
            name = found.group(1)
            value = self._value(name, where)
            if value is None:
                continue
            placed = place(value, template[: match.start()])
            if isinstance(placed, _Refused):
                self._refuse(name, where, placed.why)
                continue
            out.append(placed)
        out.append(literal(template[pos:]))
        self._stray(template[pos:], where)
        return "".join(out)

    def _stray(self, text: str, where: str) -> None:
        if "{{" in text:
            start = text.index("{{")
            self.problems.append(f"{where}: unclosed placeholder {text[start : start + 40]!r}")

    def _value(self, name: str, where: str) -> str | None:
        if not name.startswith("args.") and name not in KNOWN_VARIABLES:
            known = ", ".join(sorted(KNOWN_VARIABLES))
            self._refuse(name, where, f"unknown variable (known: args.NAME, {known})")
            return None
        value = self.variables.get(name)
        if value is None:
            self._refuse(name, where, "no value")
        return value

    def _refuse(self, name: str, where: str, why: str) -> None:
        self.problems.append(f"{where}: {{{{{name}}}}}: {why}")
        self.names.append(name)

    def raise_if_any(self) -> None:
        """Raise a TemplateError listing every problem found so far."""
        if self.problems:
            raise promql.TemplateError("; ".join(self.problems), tuple(self.names))


def render_request(spec: WebProvider, variables: Mapping[str, str]) -> WebRequest:
    """The request a web metric makes, with every placeholder filled (see the module
    docstring for the rules). Raises :class:`~controller.core.promql.TemplateError` naming
    every field and placeholder at fault (never a value), or ``ValueError`` when the
    filled URL is not an http(s) URL with a host."""
    filler = _Filler(variables)
    url = filler.fill(spec.url, "url", _place_in_url, _quote_literal)
    headers: list[tuple[str, str]] = []
    for header in spec.headers or ():
        where = f"headers[{header.key}]"
        if _HEADER_FORBIDDEN.search(header.value):
            filler.problems.append(f"{where}: holds a line break or another control character")
        headers.append((header.key, filler.fill(header.value, where, _place_in_header)))
    body: bytes | None = None
    if spec.body is not None:
        body = filler.fill(spec.body, "body").encode()
    elif spec.json_body is not None:
        document = _fill_json(spec.json_body, "jsonBody", filler)
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
    filler.raise_if_any()
    if not _is_http_url(url):
        raise ValueError("the url, filled in, is not an http:// or https:// URL with a host")
    return WebRequest(
        method=spec.method,
        url=url,
        headers=tuple(headers),
        body=body,
        timeout=float(spec.timeout_seconds),
        insecure=spec.insecure,
    )


def _is_http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 address
        return False


def _quote_literal(text: str) -> str:
    """The template's own URL text with what a URL cannot carry (spaces, non-ASCII)
    percent-escaped; its ``%XX`` escapes and delimiters stay."""
    return urllib.parse.quote(text, safe=_URL_SAFE)


def url_position(before: str) -> UrlPosition:
    """Where in a URL a placeholder stands, from the template text before it (the values
    of earlier placeholders never move it: they are escaped, except a whole URL at the
    start, which stands for the scheme and host)."""
    start = _PLACEHOLDER.match(before)
    if before == "":
        return "start"
    if start is not None and start.start() == 0 and "://" not in before:
        before = "http://h" + before[start.end() :]  # the start's value: a scheme and host
    text = _PLACEHOLDER.sub("x", before)
    end = text.find("://")
    if end < 0:
        return "scheme"
    position: UrlPosition = "host"
    for ch in text[end + 3 :]:
        if ch == "#":
            return "fragment"
        if ch == "?" and position in ("host", "path"):
            position = "query"
        elif ch == "/" and position == "host":
            position = "path"
    return position


def _place_in_url(value: str, before: str) -> str | _Refused:
    position = url_position(before)
    if position == "start":
        if not _is_http_url(value) or any(
            ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value
        ):
            return _Refused(
                "at the start of the url the value must be an http:// or https:// URL with "
                "a host, without spaces"
            )
        if "?" in value or "#" in value:
            return _Refused("at the start of the url the value cannot hold ? or #")
        return _quote_literal(value)
    if position == "scheme":
        return _Refused("a placeholder cannot stand in the url's scheme")
    if position == "host":
        if not _HOST_VALUE.fullmatch(value):
            return _Refused("in the url's host a value may hold only letters, digits and . - _ :")
        return value
    if position == "path" and value in (".", ".."):
        return _Refused("in the url's path a value cannot be . or .. (it would move up)")
    return urllib.parse.quote(value, safe="")


def _place_in_header(value: str, before: str) -> str | _Refused:
    if _HEADER_FORBIDDEN.search(value):
        return _Refused("a header value cannot hold a line break or another control character")
    return value


def _fill_json(node: Any, where: str, filler: _Filler) -> Any:
    if isinstance(node, str):
        return filler.fill(node, where)
    if isinstance(node, list):
        return [_fill_json(v, f"{where}[{i}]", filler) for i, v in enumerate(node)]
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = filler.fill(key, f"{where} key {key!r}")
            if name in out:
                filler.problems.append(f"{where}: two keys become one ({key!r})")
            out[name] = _fill_json(value, f"{where}.{key}", filler)
        return out
    return node


# -- JSONPath --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Child:
    name: str


@dataclass(frozen=True)
class _At:
    index: int


@dataclass(frozen=True)
class _Slice:
    start: int | None
    stop: int | None


@dataclass(frozen=True)
class _All:
    pass


@dataclass(frozen=True)
class _Descend:
    name: str


_Step = _Child | _At | _Slice | _All | _Descend

_FIELD: Final = re.compile(r"[A-Za-z0-9_\-/$@]+|\*")
_INDEX: Final = re.compile(r"\[\s*(-?[0-9]+)\s*\]")
_SLICE: Final = re.compile(r"\[\s*(-?[0-9]+)?\s*:\s*(-?[0-9]+)?\s*\]")
_QUOTED: Final = re.compile(r"\[\s*(?:'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\")\s*\]")
_STAR: Final = re.compile(r"\[\s*\*\s*\]")


class JsonPathError(ValueError):
    """A jsonPath outside the supported subset."""


@dataclass(frozen=True)
class JsonPath:
    """A parsed jsonPath; :meth:`select` it from a JSON document."""

    text: str
    steps: tuple[_Step, ...]

    @property
    def definite(self) -> bool:
        """Whether it names one place (no wildcard, slice or descent)."""
        return all(isinstance(s, _Child | _At) for s in self.steps)

    def select(self, document: Any) -> list[Any]:
        """Every value the path matches, in document order (none: an empty list)."""
        current = [document]
        for step in self.steps:
            current = [v for node in current for v in _apply(step, node)]
        return current


def parse_json_path(text: str) -> JsonPath:
    """Parse a Kubernetes-style jsonPath (``{$.data.ok}``); raises :class:`JsonPathError`
    saying what is not supported and where."""
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        inner = stripped[1:-1].strip()
    elif "{" in stripped or "}" in stripped:
        raise JsonPathError(f"jsonPath {text!r} must be one {{...}} expression, such as {{$.data}}")
    else:
        inner = stripped
    i = 1 if inner.startswith("$") else 0
    if inner[i:] in ("", "."):
        return JsonPath(text, ())
    steps: list[_Step] = []
    while i < len(inner):
        step, i = _next_step(inner, i, text)
        steps.append(step)
    return JsonPath(text, tuple(steps))


def _next_step(inner: str, i: int, text: str) -> tuple[_Step, int]:
    if inner.startswith("..", i):
        found = _FIELD.match(inner, i + 2)
        if found is None or found.group(0) == "*":
            raise _bad_path(text, i, "'..' needs a field name after it")
        return _Descend(found.group(0)), found.end()
    if inner[i] == ".":
        found = _FIELD.match(inner, i + 1)
        if found is None:
            raise _bad_path(text, i, "'.' needs a field name after it")
        name = found.group(0)
        return (_All() if name == "*" else _Child(name)), found.end()
    if inner[i] == "[":
        if inner.startswith("[?", i) or inner.startswith("[ ?", i):
            raise _bad_path(text, i, "filters [?(...)] are not supported")
        for pattern in (_INDEX, _SLICE, _QUOTED, _STAR):
            found = pattern.match(inner, i)
            if found is None:
                continue
            if pattern is _INDEX:
                return _At(int(found.group(1))), found.end()
            if pattern is _SLICE:
                start, stop = found.group(1), found.group(2)
                return _Slice(
                    int(start) if start else None, int(stop) if stop else None
                ), found.end()
            if pattern is _QUOTED:
                raw = found.group(1) if found.group(1) is not None else found.group(2)
                return _Child(re.sub(r"\\(.)", r"\1", raw)), found.end()
            return _All(), found.end()
        raise _bad_path(
            text, i, "a bracket holds an index [0], a slice [1:3], a key ['name'] or [*]"
        )
    raise _bad_path(text, i, "expected '.', '..' or '['")


def _bad_path(text: str, i: int, why: str) -> JsonPathError:
    return JsonPathError(f"jsonPath {text!r} cannot be read at character {i + 1}: {why}")


def _apply(step: _Step, node: Any) -> Iterator[Any]:
    if isinstance(step, _Child):
        if isinstance(node, dict) and step.name in node:
            yield node[step.name]
    elif isinstance(step, _At):
        if isinstance(node, list) and -len(node) <= step.index < len(node):
            yield node[step.index]
    elif isinstance(step, _Slice):
        if isinstance(node, list):
            yield from node[step.start : step.stop]
    elif isinstance(step, _All):
        if isinstance(node, list):
            yield from node
        elif isinstance(node, dict):
            yield from node.values()
    else:
        yield from _descend(step.name, node)


def _descend(name: str, node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        if name in node:
            yield node[name]
        for value in node.values():
            yield from _descend(name, value)
    elif isinstance(node, list):
        for value in node:
            yield from _descend(name, value)


# -- judging ---------------------------------------------------------------------------


class _NotJsonError(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJsonError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; ``ValueError`` if it is not strict JSON (``NaN``
    and ``Infinity`` are Python's extensions, not JSON)."""
    if not body.strip():
        raise ValueError("the answer is empty")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the answer is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError, _NotJsonError) as exc:
        raise ValueError(str(exc)) from None


def evaluate(metric: Metric, request: WebRequest, answer: WebAnswer) -> Outcome:
    """Judge one answer (see the module docstring for every case and its order)."""
    name = metric.name
    where = f"{request.method} {request.safe_url}"
    if answer.error is not None:
        err = answer.error
        return Outcome(
            "Error", None, f"{name}: request failed ({err.kind}): {err.message}", err.kind
        )
    status = answer.status or 0
    if not 200 <= status < 300:
        kind: ErrorKind = (
            "auth" if status in (401, 403) else "throttled" if status == 429 else "http"
        )
        return Outcome(
            "Error",
            None,
            f"{name}: {where} answered HTTP {status}: {excerpt(answer.body)}",
            kind,
        )
    try:
        document = parse_json(answer.body)
    except ValueError as exc:
        content = f" ({answer.content_type})" if answer.content_type else ""
        return Outcome(
            "Error",
            None,
            f"{name}: {where} answered something that is not JSON{content}: {exc}: "
            f"{excerpt(answer.body)}",
            "bad_response",
        )
    json_path = metric.provider.web.json_path if metric.provider.web else "{$}"
    try:
        path = parse_json_path(json_path)
    except JsonPathError as exc:
        return Outcome("Error", None, f"{name}: {exc}")
    matches = path.select(document)
    if not matches:
        return Outcome(
            "NoData", None, f"{name}: jsonPath {json_path!r} matched nothing in the answer"
        )
    result = matches[0] if len(matches) == 1 else matches
    shown = value_text(result)
    if result is None:
        return Outcome("NoData", shown, f"{name}: jsonPath {json_path!r} selected null")
    judged = judge(metric, result)
    return Outcome(judged.phase, shown, judged.message)


def judge(metric: Metric, result: Any) -> Outcome:
    """The verdict of the metric's conditions and thresholdRange on ``result``."""
    the_result = f"the result {value_text(result)}"
    try:
        if metric.failure_condition is not None and _holds(metric.failure_condition, result):
            return failure_held(metric, the_result)
        if metric.threshold_range is not None:
            if isinstance(result, bool) or not isinstance(result, int | float):
                return Outcome(
                    "Error",
                    None,
                    f"{metric.name}: thresholdRange needs a number; the result is "
                    f"{_kind_of(result)} {value_text(result)}",
                )
            outside = outside_range(metric, result, value_text(result))
            if outside is not None:
                return outside
        if metric.success_condition is None or _holds(metric.success_condition, result):
            return Outcome("Successful", None, "")
        return success_missed(metric, the_result)
    except expr.ExpressionError as exc:
        return unevaluable(metric, exc)


def _holds(condition: str, result: Any) -> bool:
    """Whether ``condition`` holds for a JSON ``result`` (``result.ok``, ``result[0]``,
    strings and numbers as Argo's expr reads them)."""
    return expr.parse(condition).evaluate_json(result)


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def value_text(value: Any) -> str:
    """A JSON value as compact text for the status, cut at :data:`MAX_VALUE_CHARS`."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of a body as one line of text (``(empty)`` for none)."""
    text = " ".join(body[: limit * 4].decode("utf-8", errors="replace").split())
    if not text:
        return "(empty)"
    return text if len(text) <= limit else text[:limit] + "…"


# -- keeping Secrets out of messages ---------------------------------------------------


def secret_forms(secret: str) -> set[str]:
    """A Secret value in every form a message may show it: as written, trimmed, escaped
    as Python's repr and JSON print it, and percent-escaped as a URL carries it. Forms
    shorter than 4 characters are left alone, so scrubbing cannot eat ordinary text."""
    variants = {
        secret.strip(),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        urllib.parse.quote(secret, safe=_URL_SAFE),
    }
    return {secret} | {v for v in variants if len(v) >= 4}


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every form of every Secret value replaced by ``***``."""
    forms = {form for secret in secrets if secret for form in secret_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def scrubbed(outcome: Outcome, secrets: Sequence[str]) -> Outcome:
    """``outcome`` with its value and message scrubbed of the Secret values."""
    if not secrets:
        return outcome
    value = scrub(outcome.value, secrets) if outcome.value is not None else None
    return Outcome(outcome.phase, value, scrub(outcome.message, secrets), outcome.error_kind)
