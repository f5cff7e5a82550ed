"""Filling a metric's PromQL template with values, without letting a value change the
query's structure.

Where it sits: before a measurement the runtime collects the variables (template and
Rollout arguments, Secret values included, the rollout's names and revisions, the
metric's interval) and calls :func:`render`; the adapter sends the result to Prometheus.

Placeholders are ``{{args.NAME}}`` and ``{{rollout}}``, ``{{namespace}}``,
``{{stableRevision}}``, ``{{canaryRevision}}``, ``{{stableService}}``,
``{{canaryService}}``, ``{{interval}}`` (spaces inside the braces are allowed). Each is
replaced according to where it stands in the template, found with the PromQL lexer's
rules for string literals and comments (:func:`segments`):

=========================================  ===============================================
where the placeholder stands               what the value may be, and how it is written
=========================================  ===============================================
inside ``"..."``                           anything: ``\\`` ``"`` and control characters
                                           are escaped for that literal (``\\n``,
                                           ``\\xNN``), so the value stays inside it
inside ``'...'``                           anything, escaped likewise for ``'``
inside a raw `````...````` string          anything but a backtick (a raw string has no
                                           escapes, so a backtick would end it) or a
                                           carriage return (Prometheus drops those):
                                           rejected
outside any string literal (or in a        only one conservative token: a duration
``#`` comment)                             (``5m``, ``1h30m``), a number (``0.99``,
                                           ``1e3``) or an identifier (``http_requests``,
                                           ``job:rate5m``) that is not a PromQL keyword;
                                           anything else is rejected
right after a backslash inside a literal   the template is rejected (the backslash would
                                           swallow the value's first character)
=========================================  ===============================================

A placeholder with an unknown name, or one without a value, is an error naming it. A
rejected value is never echoed in an error (it may come from a Secret); the error names
the variable. Regular-expression metacharacters in a value used by ``=~`` are not
escaped: the value *is* the regular expression (the query's structure is unchanged).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

KNOWN_VARIABLES: Final = frozenset(
    {
        "rollout",
        "namespace",
        "stableRevision",
        "canaryRevision",
        "stableService",
        "canaryService",
        "interval",
    }
)

_PLACEHOLDER: Final = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME: Final = re.compile(r"\s*(args\.[A-Za-z_][A-Za-z0-9_-]*|[A-Za-z][A-Za-z0-9]*)\s*")
_TOKEN: Final = re.compile(
    r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+"  # a duration: 5m, 1h30m, 500ms
    r"|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"  # a number: 0.99, 1e3
    r"|[A-Za-z_:][A-Za-z0-9_:]*"  # an identifier: a metric or label name
)
#: Words that are operators or modifiers in PromQL: never accepted as a bare value.
KEYWORDS: Final = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "atan2",
        "start",
        "end",
    }
)

SegmentKind = Literal["code", "string", "comment"]


class TemplateError(ValueError):
    """A template that cannot be filled; ``variables`` are the placeholders at fault."""

    def __init__(self, message: str, variables: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.variables = variables


@dataclass(frozen=True)
class Segment:
    """A run of a PromQL query: code, a string literal (with its quotes), or a comment."""

    kind: SegmentKind
    text: str
    quote: str = ""
    """``"``, ``'`` or a backtick for a string literal."""


def segments(query: str) -> list[Segment]:
    """Split a query into code, string literals and comments as the PromQL lexer does.

    Raises :class:`TemplateError` for an unterminated string literal (a newline inside a
    quoted string ends nothing in PromQL: it is an error there too).
    """
    return _segments(query, template=False)


def _segments(query: str, *, template: bool) -> list[Segment]:
    out: list[Segment] = []
    start = i = 0
    while i < len(query):
        ch = query[i]
        if ch in "\"'`#":
            end = _end_of_literal(query, i, template=template) if ch != "#" else _eol(query, i)
            if start < i:
                out.append(Segment("code", query[start:i]))
            if ch == "#":
                out.append(Segment("comment", query[i:end]))
            else:
                out.append(Segment("string", query[i:end], ch))
            start = i = end
        else:
            i += 1
    if start < len(query):
        out.append(Segment("code", query[start:]))
    return out


def _eol(query: str, i: int) -> int:
    end = query.find("\n", i)
    return len(query) if end < 0 else end


def _end_of_literal(query: str, i: int, *, template: bool) -> int:
    quote = query[i]
    if quote == "`":
        end = query.find("`", i + 1)
        if end < 0:
            raise TemplateError(f"unterminated raw string starting at offset {i}")
        return end + 1
    k = i + 1
    while k < len(query):
        ch = query[k]
        if ch == "\\":
            if template and query.startswith("{{", k + 1):
                raise TemplateError(
                    f"a placeholder right after a backslash (offset {k}) would lose its "
                    "first character to the escape: remove the backslash"
                )
            k += 2
            continue
        if ch == quote:
            return k + 1
        if ch == "\n":
            break
        k += 1
    raise TemplateError(f"unterminated string literal starting at offset {i}")


def escape(value: str, quote: str) -> str:
    """``value`` written for the inside of a PromQL string literal delimited by ``quote``.

    Raises :class:`TemplateError` (without the value) when a raw string cannot hold it.
    """
    if quote == "`":
        if "`" in value or "\r" in value:
            raise TemplateError("the value contains a backtick or a carriage return")
        return value
    out: list[str] = []
    for ch in value:
        if ch in ("\\", quote):
            out.append("\\" + ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


_SHORT_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPE: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def unquote(literal: str) -> str:
    """The value of a PromQL string literal (quotes included), as Prometheus reads it.

    Supports the escapes PromQL accepts (``\\n``, ``\\xNN``, ``\\NNN``, ``\\uNNNN``,
    ``\\UNNNNNNNN``, the literal's own quote); raises ``ValueError`` for others.
    """
    if len(literal) < 2 or literal[0] not in "\"'`" or literal[-1] != literal[0]:
        raise ValueError(f"not a string literal: {literal!r}")
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        if "`" in body:
            raise ValueError("a raw string cannot contain a backtick")
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch in (quote, "\n"):
            raise ValueError(f"unescaped {ch!r} inside a {quote}-quoted string")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        text, i = _unescape(body, i, quote, literal)
        out.append(text)
    return "".join(out)


def _unescape(body: str, i: int, quote: str, literal: str) -> tuple[str, int]:
    """The character of the escape at ``body[i]`` (a backslash) and the index after it."""
    if i + 1 >= len(body):
        raise ValueError("a string literal cannot end with a backslash")
    code = body[i + 1]
    if code in _UNESCAPE:
        return _UNESCAPE[code], i + 2
    if code == quote:
        return quote, i + 2
    if code in "xuU":
        width = {"x": 2, "u": 4, "U": 8}[code]
        digits = body[i + 2 : i + 2 + width]
        if len(digits) != width or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
            raise ValueError(f"bad \\{code} escape in {literal!r}")
        value = int(digits, 16)
        if code == "x" and value >= 0x80:
            raise ValueError("\\x escapes above 0x7f are raw bytes; not supported")
        return chr(value), i + 2 + width
    if code in "01234567":
        digits = body[i + 1 : i + 4]
        if not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) >= 0x80:
            raise ValueError(f"bad octal escape in {literal!r}")
        return chr(int(digits, 8)), i + 4
    raise ValueError(f"unknown escape \\{code} in {literal!r}")


def placeholders(template: str) -> list[str]:
    """The variable names a template uses, in order of appearance (with repeats)."""
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(template):
        name = _NAME.fullmatch(match.group(1))
        names.append(name.group(1) if name else match.group(1).strip())
    return names


def is_safe_token(value: str) -> bool:
    """Whether ``value`` may stand outside a string literal: one duration, number or
    non-keyword identifier."""
    return bool(_TOKEN.fullmatch(value)) and value.lower() not in KEYWORDS


def render(template: str, variables: Mapping[str, str]) -> str:
    """The query with every placeholder filled (see the module docstring for the rules).

    ``variables`` maps ``args.NAME`` and the built-in names to values. Raises
    :class:`TemplateError` naming every unknown placeholder, every one without a value
    and every value that cannot be placed where it stands.
    """
    unknown: list[str] = []
    missing: list[str] = []
    unsafe: list[str] = []
    unsafe_names: list[str] = []
    malformed: list[str] = []
    out: list[str] = []
    for seg in _segments(template, template=True):
        pos = 0
        for match in _PLACEHOLDER.finditer(seg.text):
            out.append(seg.text[pos : match.start()])
            pos = match.end()
            name_match = _NAME.fullmatch(match.group(1))
            if name_match is None:
                malformed.append(match.group(0))
                continue
            name = name_match.group(1)
            if not name.startswith("args.") and name not in KNOWN_VARIABLES:
                unknown.append(name)
                continue
            value = variables.get(name)
            if value is None:
                missing.append(name)
                continue
            placed = _place(value, seg)
            if placed is None:
                unsafe.append(f"{{{{{name}}}}} ({_why_unsafe(value, seg)})")
                unsafe_names.append(name)
                continue
            out.append(placed)
        rest = seg.text[pos:]
        if "{{" in rest or (seg.kind == "code" and "}}" in rest):
            malformed.append(rest.strip()[:40])
        out.append(rest)
    problems: list[str] = []
    if malformed:
        problems.append("malformed placeholder(s): " + ", ".join(repr(m) for m in malformed))
    if unknown:
        problems.append(
            "unknown variable(s): "
            + ", ".join(f"{{{{{n}}}}}" for n in unknown)
            + " (known: args.NAME, "
            + ", ".join(sorted(KNOWN_VARIABLES))
            + ")"
        )
    if missing:
        problems.append("no value for " + ", ".join(f"{{{{{n}}}}}" for n in missing))
    if unsafe:
        problems.append("unsafe value for " + "; ".join(unsafe))
    if problems:
        raise TemplateError("; ".join(problems), tuple(unknown + missing + unsafe_names))
    return "".join(out)


def _place(value: str, seg: Segment) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if seg.kind == "string":
        try:
            return escape(value, seg.quote)
        except TemplateError:
            return None
    return value if is_safe_token(value) else None


def _why_unsafe(value: str, seg: Segment) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid text"
    if seg.kind == "string":
        return "a raw `...` string cannot hold a backtick or a carriage return"
    return (
        "outside a string literal only a number, a duration like 5m or a plain identifier "
        "may stand; put the placeholder inside quotes"
    )


# -- how far back a query reads ----------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
                   "w": 604800.0, "y": 31536000.0}  # fmt: skip
_PROM_DURATION = r"(?:\d+(?:ms|s|m|h|d|w|y))+"
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_LOOKBACK_TOKEN = re.compile(
    rf"(?P<offset>\boffset\s+-?\s*(?P<by>{_PROM_DURATION}))"
    rf"|(?P<subquery>\[\s*(?P<subrange>{_PROM_DURATION})\s*:\s*(?:{_PROM_DURATION})?\s*\])"
    rf"|(?P<range>\[\s*(?P<plain>{_PROM_DURATION})\s*\])"
    r"|(?P<open>\()|(?P<close>\))|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)",
    re.IGNORECASE,
)


def prom_seconds(duration: str) -> float:
    """Seconds in a PromQL duration such as ``5m``, ``1h30m`` or ``500ms``."""
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _PART.findall(duration))


def lookback(query: str) -> float:
    """How many seconds before its evaluation time a rendered query reads, outside string
    literals and comments: a range (``[5m]``) reads that far back, an ``offset`` moves
    what it applies to further back, and a subquery (``[1h:1m]``) reads its range on top
    of what its inner expression reads (``max_over_time(rate(x[1m])[10m:30s])`` reads
    11 minutes back). The longest of the query's parts; 0 for an instant selector."""
    code = " ".join(s.text for s in segments(query) if s.kind == "code")
    groups = [0.0]  # the longest lookback inside each open parenthesis
    last = 0.0  # what the expression just read reaches back (a range or offset applies to it)
    for token in _LOOKBACK_TOKEN.finditer(code):
        kind = token.lastgroup
        if kind == "open":
            groups.append(0.0)
            last = 0.0
        elif kind == "close" and len(groups) > 1:
            last = groups.pop()
        elif kind == "subquery":
            last += prom_seconds(token.group("subrange"))
        elif kind == "range":
            last = prom_seconds(token.group("plain"))
        elif kind == "offset":
            last += prom_seconds(token.group("by"))
        elif kind == "name":
            last = 0.0  # a new selector or function starts
        groups[-1] = max(groups[-1], last)
    return max(groups)
