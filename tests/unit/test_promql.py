"""Filling PromQL templates: placeholders by context, escaping, and that no value can
change a query's structure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.promql import (
    KNOWN_VARIABLES,
    Segment,
    TemplateError,
    escape,
    is_safe_token,
    lookback,
    placeholders,
    render,
    segments,
    unquote,
)

BUILTINS = {
    "rollout": "checkout",
    "namespace": "shop",
    "stableRevision": "6f7d9c",
    "canaryRevision": "84b2e1",
    "stableService": "checkout-stable",
    "canaryService": "checkout-canary",
    "interval": "1m",
}

DOUBLE = 'sum(rate(http_requests_total{service="{{args.x}}",code!~"5.."}[5m]))'
SINGLE = "sum(rate(http_requests_total{service='{{args.x}}'}[5m]))"
RAW = "sum(rate(http_requests_total{service=`{{args.x}}`}[5m]))"
CODE = "sum(rate({{args.x}}[5m]))"
COMMENT = "vector(1) # owner: {{args.x}}\n + vector(2)"
CONTEXTS = {"double": DOUBLE, "single": SINGLE, "raw": RAW, "code": CODE, "comment": COMMENT}

INJECTIONS = [
    '"} or vector(1) #',
    'x"} or vector(1) #',
    '\\"} or vector(1) #',
    '\\\\"} or vector(1) #',
    "'} or vector(1) #",
    "\\'} or vector(1) #",
    "` or vector(1) #",
    '"} or vector(1)\n#',
    "\n} or vector(1) #",
    '\\\n"} or vector(1)',
    '"}[5m])) or vector(1) or sum(rate(x{a="',
    "}} or vector(1) {{",
    "{{args.x}}",
    '\r"\x00\t\x7f}',
    "\\",
    "",
]


def _render_or_error(template: str, value: str) -> str | TemplateError:
    try:
        return render(template, {"args.x": value})
    except TemplateError as exc:
        return exc


def assert_only_the_literal_changed(template: str, rendered: str, value: str) -> None:
    """The rendered query has the template's code and comments byte for byte, the same
    literals in the same places, and each literal decodes to the template's text with
    the placeholder replaced by exactly ``value``."""
    before, after = segments(template), segments(rendered)
    assert [(s.kind, s.quote) for s in before] == [(s.kind, s.quote) for s in after]
    for b, a in zip(before, after, strict=True):
        if b.kind == "string":
            assert unquote(a.text) == unquote(b.text).replace("{{args.x}}", value)
        else:
            assert a.text == b.text.replace("{{args.x}}", value)


@pytest.mark.parametrize("context", CONTEXTS, ids=str)
@pytest.mark.parametrize("value", INJECTIONS, ids=repr)
def test_injection_cannot_change_the_structure(context: str, value: str) -> None:
    """A hostile value stays inside its literal, exactly, or is rejected naming the variable."""
    template = CONTEXTS[context]
    rendered = _render_or_error(template, value)
    if isinstance(rendered, TemplateError):
        assert rendered.variables == ("args.x",)
        assert "{{args.x}}" in str(rendered)
        if len(value) > 3 and value != "{{args.x}}":
            assert value not in str(rendered)
        assert context in ("raw", "code", "comment"), f"{value!r} rejected inside {context}"
        return
    assert_only_the_literal_changed(template, rendered, value)


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        pytest.param(
            'rate(x{svc="{{args.svc}}"}[{{interval}}])',
            {"args.svc": "api", "interval": "5m"},
            'rate(x{svc="api"}[5m])',
            id="literal-and-duration",
        ),
        pytest.param(
            "x{rev='{{ canaryRevision }}'}",
            {"canaryRevision": "84b2e1"},
            "x{rev='84b2e1'}",
            id="spaces-in-braces-single-quotes",
        ),
        pytest.param(
            'x{a="{{args.v}}"}',
            {"args.v": 'he said "hi"\\n'},
            'x{a="he said \\"hi\\"\\\\n"}',
            id="double-quote-and-backslash-escaped",
        ),
        pytest.param(
            "x{a='{{args.v}}'}", {"args.v": 'it\'s "ok"'}, "x{a='it\\'s \"ok\"'}", id="single"
        ),
        pytest.param(
            'x{a="{{args.v}}"}', {"args.v": "a\nb\tc\x01"}, 'x{a="a\\nb\\tc\\x01"}', id="controls"
        ),
        pytest.param(
            "x{a=`{{args.v}}`}", {"args.v": 'a\\"b'}, 'x{a=`a\\"b`}', id="raw-string-verbatim"
        ),
        pytest.param(
            "x > {{args.t}} and y < {{args.u}}",
            {"args.t": "0.99", "args.u": "1e3"},
            "x > 0.99 and y < 1e3",
            id="numbers-outside-literals",
        ),
        pytest.param(
            "sum({{args.metric}})",
            {"args.metric": "job:http_requests:rate5m"},
            "sum(job:http_requests:rate5m)",
            id="identifier-outside-literals",
        ),
        pytest.param(
            'x{a="#{{args.v}}"} # {{rollout}}',
            {"args.v": "#", "rollout": "r1"},
            'x{a="##"} # r1',
            id="hash-inside-a-literal-is-not-a-comment",
        ),
        pytest.param(
            'x{a=~"{{args.re}}"}',
            {"args.re": "api|web.*"},
            'x{a=~"api|web.*"}',
            id="regex-metacharacters-kept",
        ),
        pytest.param(
            'x{a="{{args.my-arg}}",b="{{args.my-arg}}"}',
            {"args.my-arg": "v"},
            'x{a="v",b="v"}',
            id="dashed-name-used-twice",
        ),
        pytest.param(
            " ".join(f'{name}="{{{{{name}}}}}"' for name in sorted(KNOWN_VARIABLES)),
            BUILTINS,
            " ".join(f'{name}="{BUILTINS[name]}"' for name in sorted(KNOWN_VARIABLES)),
            id="every-builtin",
        ),
    ],
)
def test_render(template: str, variables: dict[str, str], expected: str) -> None:
    """Placeholders are filled according to where they stand."""
    assert render(template, variables) == expected


@pytest.mark.parametrize(
    ("template", "variables", "needles", "names"),
    [
        pytest.param(
            'x{a="{{args.missing}}"}', {}, ["no value for {{args.missing}}"], ("args.missing",),
            id="missing-arg",
        ),
        pytest.param(
            'x{a="{{canaryServiec}}"}', {}, ["unknown variable(s): {{canaryServiec}}"],
            ("canaryServiec",), id="unknown-variable",
        ),
        pytest.param(
            'x{a="{{bogus}}",b="{{args.y}}"}[{{interval}}]', {"interval": "5m"},
            ["unknown variable(s): {{bogus}}", "no value for {{args.y}}"],
            ("bogus", "args.y"), id="all-problems-at-once",
        ),
        pytest.param(
            "rate(x[{{interval}}])", {"interval": "5m] or vector(1"},
            ["unsafe value for {{interval}}", "put the placeholder inside quotes"],
            ("interval",), id="unsafe-outside-literal",
        ),
        pytest.param(
            "x{a=`{{args.v}}`}", {"args.v": "a`b"}, ["raw `...` string cannot hold a backtick"],
            ("args.v",), id="backtick-in-raw",
        ),
        pytest.param(
            'x{a="{{ foo bar }}"}', {}, ["malformed placeholder(s): '{{ foo bar }}'"], (),
            id="malformed-placeholder",
        ),
        pytest.param('x{a="{{args.}}"}', {}, ["malformed placeholder"], (), id="empty-arg-name"),
        pytest.param('x{a="{{args.x"}', {"args.x": "v"}, ["malformed"], (), id="unclosed"),
    ],
)  # fmt: skip
def test_render_errors_name_the_variables(
    template: str, variables: dict[str, str], needles: list[str], names: tuple[str, ...]
) -> None:
    """Every problem is reported at once, naming the placeholders at fault."""
    with pytest.raises(TemplateError) as info:
        render(template, variables)
    for needle in needles:
        assert needle in str(info.value)
    assert info.value.variables == names


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        pytest.param('x{a="\\{{args.x}}"}', "right after a backslash", id="backslash-before"),
        pytest.param('x{a="{{args.x}}}', "unterminated string literal", id="unterminated"),
        pytest.param('x{a="{{args.x}}\n"}', "unterminated string literal", id="newline-in-quotes"),
        pytest.param("x{a=`{{args.x}}}", "unterminated raw string", id="unterminated-raw"),
    ],
)
def test_malformed_templates_are_rejected(template: str, needle: str) -> None:
    """A template whose literals cannot be delimited is an error, whatever the value."""
    with pytest.raises(TemplateError, match=needle):
        render(template, {"args.x": "v"})


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("5m", True),
        ("1h30m", True),
        ("500ms", True),
        ("0.99", True),
        ("1e3", True),
        ("http_requests_total", True),
        ("job:rate5m", True),
        ("", False),
        ("-1", False),
        ("or", False),
        ("BY", False),
        ("a b", False),
        ("5m)", False),
        ("x{a}", False),
        ("1.5m", False),
        ("a\n", False),
        ('"x"', False),
    ],
)
def test_safe_tokens(value: str, safe: bool) -> None:
    """Outside literals only one duration, number or non-keyword identifier is accepted."""
    assert is_safe_token(value) is safe


def test_secret_values_are_never_echoed() -> None:
    """A rejected value (which may come from a Secret) does not appear in the error."""
    with pytest.raises(TemplateError) as info:
        render("x > {{args.token}}", {"args.token": "s3cr3t-t0ken value"})
    assert "s3cr3t" not in str(info.value)


def test_segments_follow_the_promql_lexer() -> None:
    """Strings, raw strings and comments are found as PromQL finds them."""
    query = 'a{b="c\\"#",d=\'e\'} # note "x\nf{g=`h\\`}'
    assert segments(query) == [
        Segment("code", "a{b="),
        Segment("string", '"c\\"#"', '"'),
        Segment("code", ",d="),
        Segment("string", "'e'", "'"),
        Segment("code", "} "),
        Segment("comment", '# note "x'),
        Segment("code", "\nf{g="),
        Segment("string", "`h\\`", "`"),
        Segment("code", "}"),
    ]


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('"a\\"b"', 'a"b'),
        ("'a\\'b'", "a'b"),
        ('"\\x41\\101\\u00e9\\U0001F600"', "AAé\U0001f600"),
        ('"\\a\\b\\f\\n\\r\\t\\v\\\\"', "\a\b\f\n\r\t\v\\"),
        ("`a\\n`", "a\\n"),
    ],
)
def test_unquote(literal: str, value: str) -> None:
    """unquote reads PromQL's escapes."""
    assert unquote(literal) == value


@pytest.mark.parametrize(
    "literal", ['"a\\\'"', "'a\\\"'", '"a\\q"', '"a', '"a\nb"', '"\\x8f"', '"a\\"']
)
def test_unquote_rejects_what_prometheus_rejects(literal: str) -> None:
    """Escapes PromQL does not accept (the other quote, unknown letters) are errors."""
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        unquote(literal)


def test_placeholders_lists_names_in_order() -> None:
    """placeholders() reports every use, for lint and for collecting arguments."""
    assert placeholders('x{a="{{args.a}}"}[{{ interval }}] {{args.a}}') == [
        "args.a",
        "interval",
        "args.a",
    ]


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(st.sampled_from(['"', "'"]), _TEXT)
def test_escape_round_trips(quote: str, value: str) -> None:
    """Any text escaped for a quoted literal reads back exactly."""
    assert unquote(quote + escape(value, quote) + quote) == value


@given(st.sampled_from(["double", "single", "raw", "code", "comment"]), _TEXT)
def test_no_value_changes_the_structure(context: str, value: str) -> None:
    """For any value and any position: confined to its literal, or rejected."""
    template = CONTEXTS[context]
    rendered = _render_or_error(template, value)
    if isinstance(rendered, TemplateError):
        assert context not in ("double", "single")
        return
    assert_only_the_literal_changed(template, rendered, value)


@pytest.mark.parametrize(
    ("query", "seconds"),
    [
        pytest.param("up", 0.0, id="instant"),
        pytest.param("sum(rate(x[5m]))", 300.0, id="range"),
        pytest.param("rate(a[30s]) / rate(b[1m30s])", 90.0, id="longest-range"),
        pytest.param("rate(x[1m] offset 1h)", 3660.0, id="offset-adds"),
        pytest.param("max_over_time(rate(x[1m])[10m:30s])", 660.0, id="subquery-adds-inner"),
        pytest.param("max_over_time(x[10m:])", 600.0, id="subquery-default-step"),
        pytest.param(
            "max_over_time(rate(x[1m] offset 5m)[10m:30s] offset 1h)", 4560.0, id="nested-offsets"
        ),
        pytest.param("rate(a[5m]) + b offset 1m", 300.0, id="offset-of-another-selector"),
        pytest.param(
            "sum(rate(x[5m] offset 1m)) / sum(rate(y[10m]))", 600.0, id="longest-part-wins"
        ),
        pytest.param('x{path="[5m]"} # [1h]', 0.0, id="not-in-literals-or-comments"),
        pytest.param("rate(x[500ms])", 0.5, id="milliseconds"),
        pytest.param("increase(x[1d])", 86400.0, id="days"),
    ],
)
def test_lookback(query: str, seconds: float) -> None:
    """How far back a query reads: each part's range, plus the offsets and subquery ranges
    that apply to it; the longest part."""
    assert lookback(query) == seconds
