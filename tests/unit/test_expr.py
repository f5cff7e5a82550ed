"""The safe condition language: what it computes, what it rejects, and that rejecting
never runs anything."""

from __future__ import annotations

import contextlib
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.expr import MAX_LENGTH, MAX_STEPS, ExpressionError, check, parse

NAN = math.nan
INF = math.inf


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        pytest.param("result >= 0.99", 0.995, True, id="threshold-pass"),
        pytest.param("result >= 0.99", 0.98, False, id="threshold-fail"),
        pytest.param("result < 0.5", [0.1, 0.7], (True, False), id="vector-elementwise"),
        pytest.param("all(result < 0.5)", [0.1, 0.7], False, id="all"),
        pytest.param("any(result < 0.5)", [0.1, 0.7], True, id="any"),
        pytest.param("0.1 < result < 0.5", 0.3, True, id="chained-inside"),
        pytest.param("0.1 < result < 0.5", 0.6, False, id="chained-outside"),
        pytest.param("not (result > 1)", 0.5, True, id="not"),
        pytest.param("result > 1 or result < 0", -1.0, True, id="or"),
        pytest.param("result > 0 and result < 1", 0.5, True, id="and"),
        pytest.param("-result > -1", 0.5, True, id="unary-minus"),
        pytest.param("result * 100 >= 99", 0.995, True, id="arithmetic"),
        pytest.param("result[0] / result[1] > 2", [10.0, 4.0], True, id="index-ratio"),
        pytest.param("result[-1] == 4", [10.0, 4.0], True, id="negative-index"),
        pytest.param("result[0] == 3", 3.0, True, id="scalar-is-one-element"),
        pytest.param("len(result) == 3", [1.0, 2.0, 3.0], True, id="len-vector"),
        pytest.param("len(result) == 1", 7.0, True, id="len-scalar"),
        pytest.param("isnan(result)", NAN, True, id="isnan"),
        pytest.param("isinf(result)", INF, True, id="isinf"),
        pytest.param("result > 1e9", INF, True, id="inf-compares-as-number"),
        pytest.param("result >= 0", NAN, False, id="nan-compares-false"),
        pytest.param("abs(result) < 1", -0.5, True, id="abs"),
        pytest.param("max(result) < 0.5 and min(result) > 0.1", [0.2, 0.4], True, id="min-max"),
        pytest.param("sum(result) == 6", [1.0, 2.0, 3.0], True, id="sum"),
        pytest.param("result / 0 > 1", 1.0, True, id="division-by-zero-is-inf"),
        pytest.param("isnan(result / 0)", 0.0, True, id="zero-by-zero-is-nan"),
        pytest.param("true", 0.0, True, id="constant-true"),
        pytest.param("False or result == 2", 2.0, True, id="python-constant"),
        pytest.param("len(result) > 1 and result[1] > 0.5", [1.0], False, id="and-short-circuits"),
        pytest.param("len(result) == 1 or result[5] > 0", 1.0, True, id="or-short-circuits"),
        pytest.param(
            "result > 0.5 and len(result) == 2", [0.7, 0.1], (True, False), id="broadcast-bool"
        ),
        pytest.param("result > 0 && result < 1", 0.5, True, id="and-symbol"),
        pytest.param("result > 1 || result < 0", 0.5, False, id="or-symbol"),
        pytest.param("!(result > 1)", 0.5, True, id="bang"),
        pytest.param("!(result > 0.5)", [0.7, 0.1], (False, True), id="bang-vector"),
        pytest.param("isNaN(result) || result >= 0.95", NAN, True, id="isNaN"),
        pytest.param("isInf(result)", -INF, True, id="isInf"),
        pytest.param("result[0] >= 0.95", [0.97], True, id="one-series-index-0"),
        pytest.param("result[0] >= 0.95", 0.97, True, id="scalar-index-0"),
        pytest.param("result[len(result) - 1] == 4", [10.0, 4.0], True, id="computed-index"),
        pytest.param("all(result, # < 1000)", [1.0, 999.0], True, id="predicate-bare"),
        pytest.param("all(result, {# < 1000})", [1.0, 1999.0], False, id="predicate-braces"),
        pytest.param("any(result, # > 1)", [1.0, 2.0], True, id="any-predicate"),
        pytest.param("none(result, # > 5)", [1.0, 2.0], True, id="none-predicate"),
        pytest.param("one(result, # > 1)", [1.0, 2.0, 0.5], True, id="one-predicate"),
        pytest.param("count(result, # > 0.5) >= 2", [0.7, 0.1, 0.9], True, id="count"),
        pytest.param("len(filter(result, # > 0.5)) == 2", [0.7, 0.1, 0.9], True, id="filter"),
        pytest.param("sum(map(result, # * 2)) == 6", [1.0, 2.0], True, id="map"),
        pytest.param("sum(result, # * 10) == 30", [1.0, 2.0], True, id="sum-predicate"),
        pytest.param("all(result, # < 1)", 0.5, True, id="predicate-on-one-series"),
        pytest.param("all(result, # < 1)", [], True, id="all-of-nothing"),
        pytest.param("any(result, # < 1)", [], False, id="any-of-nothing"),
        pytest.param("2 in result", [2.0, 3.0], True, id="in"),
        pytest.param("5 not in result", [2.0, 3.0], True, id="not-in"),
        pytest.param("default(result, 0) < 10", 3.0, True, id="default-of-value"),
        pytest.param("max(result, 0.5) == 0.5", 0.2, True, id="max-variadic"),
        pytest.param("mean(result) == 2", [1.0, 3.0], True, id="mean"),
        pytest.param("median(result) == 2", [1.0, 2.0, 30.0], True, id="median"),
        pytest.param("sum(result) == 0", [], True, id="sum-of-nothing"),
        pytest.param("result % 2 == 1", 7.0, True, id="modulo"),
        pytest.param("-7 % 3 == -1", 0.0, True, id="modulo-sign-of-dividend"),
        pytest.param("result == 3", [3.0, 4.0], (True, False), id="equality-broadcasts"),
        pytest.param("(result > 1) == true", [3.0, 0.0], (True, False), id="bool-vector-eq"),
        pytest.param("result == true", 1.0, False, id="number-is-not-true"),
        pytest.param("asInt(result) == 2", 2.9, True, id="asInt-truncates"),
        pytest.param("asFloat(result) == 2.5", 2.5, True, id="asFloat-of-number"),
        pytest.param("1_000 == 1e3 && 0x10 == 16 && .5 == 0.5", 0.0, True, id="number-forms"),
        pytest.param("1 < 2 == true", 0.0, True, id="comparison-then-equality"),
    ],
)
def test_evaluates(text: str, result: float | list[float], expected: object) -> None:
    """Each form of the language computes what the docstring table says."""
    assert parse(text).evaluate(result) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param('__import__("os").system("true")', "calling __import__", id="import"),
        pytest.param("result.__class__()", "calling the method __class__()", id="method-call"),
        pytest.param("open('/etc/passwd')", "calling open()", id="builtin-call"),
        pytest.param("eval('1')", "calling eval()", id="eval"),
        pytest.param("(lambda: 1)()", "the name 'lambda'", id="lambda-call"),
        pytest.param("lambda: 1", "the name 'lambda'", id="lambda"),
        pytest.param("[x for x in result]", "a list literal", id="comprehension"),
        pytest.param("{a: 1}", "a map literal", id="map-literal"),
        pytest.param("result ** 1000", "the power operator '**'", id="power"),
        pytest.param("result ^ 2", "the power operator '^'", id="power-caret"),
        pytest.param("result > 1 ? true : false", "'? :'", id="ternary"),
        pytest.param("1..3", "a range", id="range"),
        pytest.param("result | len()", "a pipe", id="pipe"),
        pytest.param("'a' contains 'b'", "the operator 'contains'", id="contains"),
        pytest.param("'a' matches '.*'", "the operator 'matches'", id="regex"),
        pytest.param("foo > 1", "the name 'foo'", id="unknown-name"),
        pytest.param("results[0] >= 0.9", "the name 'results'", id="unknown-results"),
        pytest.param("result[1:2]", "a slice", id="slice"),
        pytest.param("result[0.5]", "not a whole number", id="float-index"),
        pytest.param("result if True else 0", "unexpected 'if'", id="if-expression"),
        pytest.param("(x := 1)", "the name 'x'", id="walrus"),
        pytest.param("len(result, 1)", "exactly one argument", id="two-arguments"),
        pytest.param("default(result)", "exactly two arguments", id="one-argument"),
        pytest.param("max()", "at least one argument", id="no-arguments"),
        pytest.param("all(result=1)", "found '='", id="keyword-argument"),
        pytest.param("result = 1", "compare with ==", id="assignment"),
        pytest.param("result in (1, 2)", "expected ')'", id="tuple"),
        pytest.param("result is None", "unexpected 'is'", id="identity"),
        pytest.param("# > 1", "'#' outside a predicate", id="item-outside-predicate"),
        pytest.param(".field > 1", "outside a predicate", id="field-outside-predicate"),
        pytest.param("filter(result)", "a list and a predicate", id="filter-without-predicate"),
        pytest.param("all(result, {# > 1)", "expected '}'", id="unclosed-brace"),
        pytest.param("'open", "not closed", id="unclosed-string"),
        pytest.param(r"'\q'", "unknown escape", id="bad-escape"),
        pytest.param(r"'\ud800'", "invalid escape", id="surrogate-escape"),
        pytest.param(r"'\"'", "unknown escape", id="escaped-other-quote"),
        pytest.param("1e999 > result", "out of range", id="huge-number"),
        pytest.param("result not 1", "'not in'", id="stray-not"),
        pytest.param("result >", "not valid", id="syntax-error"),
        pytest.param("", "empty", id="empty"),
        pytest.param("x" * (MAX_LENGTH + 1), "longer than", id="too-long"),
        pytest.param("+".join(["1"] * 150), "syntax nodes", id="too-many-nodes"),
        pytest.param("(" * 300 + "1" + ")" * 300, "nests deeper", id="deep-nesting"),
        pytest.param("!" * 100 + "true", "nests deeper", id="deep-unary"),
        pytest.param("result\x00", "the character '\\x00' is not allowed", id="null-byte"),
    ],
)
def test_rejects_outside_the_language(text: str, needle: str) -> None:
    """Anything outside the whitelist raises ExpressionError with a reason (nothing runs)."""
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert needle in str(info.value)
    assert check(text) == str(info.value)


@pytest.mark.parametrize(
    ("text", "result", "needle"),
    [
        pytest.param("result", 1.0, "gives a number", id="number-not-boolean"),
        pytest.param("result[3] > 0", [1.0, 2.0], "out of range", id="index-out-of-range"),
        pytest.param("result + (result > 1)", 1.0, "needs numbers", id="bool-arithmetic"),
        pytest.param("not result", 1.0, "needs true/false", id="not-of-number"),
        pytest.param("all(result)", [1.0, 2.0], "needs true/false", id="all-of-numbers"),
        pytest.param("min(result) > 0", [], "of an empty vector", id="min-of-nothing"),
    ],
)
def test_evaluation_errors_are_expression_errors(
    text: str, result: float | list[float], needle: str
) -> None:
    """A condition that does not fit the value raises ExpressionError, never another error."""
    with pytest.raises(ExpressionError, match=needle):
        parse(text).evaluate(result)


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        pytest.param("result == true", True, True, id="boolean"),
        pytest.param("result == 'I am OK'", "I am OK", True, id="text-single-quotes"),
        pytest.param('result == "I am OK"', "I am OK", True, id="text-double-quotes"),
        pytest.param("result == 'true'", True, False, id="true-is-not-text"),
        pytest.param("result == 1", "1", False, id="text-is-not-number"),
        pytest.param("result == nil", None, True, id="nil"),
        pytest.param("result != nil", 0, True, id="zero-is-not-nil"),
        pytest.param("result.ok && result.rate >= 0.9", {"ok": True, "rate": 0.95}, True, id="map"),
        pytest.param("result['average.duration'] < 15", {"average.duration": 9}, True, id="key"),
        pytest.param("result.missing == nil", {}, True, id="missing-field-is-nil"),
        pytest.param("result.a.b == 1", {"a": {"b": 1}}, True, id="nested"),
        pytest.param("result?.a?.b == nil", None, True, id="optional-chaining"),
        pytest.param("result?.[0] == nil", None, True, id="optional-index"),
        pytest.param("result.a ?? 5 == 5", {"a": None}, True, id="nil-coalescing"),
        pytest.param("result.a ?? 5 == 3", {"a": 3}, True, id="nil-coalescing-value"),
        pytest.param("result[1].count < 20", [{"count": 30}, {"count": 10}], True, id="list"),
        pytest.param("result[-1] == 'c'", ["a", "b", "c"], True, id="negative-index"),
        pytest.param("len(result) == 5", "héllo", True, id="len-of-text-counts-characters"),
        pytest.param("len(result) == 2", {"a": 1, "b": 2}, True, id="len-of-map"),
        pytest.param("'b' in result", {"a": 1, "b": 2}, True, id="key-in-map"),
        pytest.param("'x' in result", ["x", "y"], True, id="text-in-list"),
        pytest.param("all(result, .ok)", [{"ok": True}, {"ok": True}], True, id="field-shorthand"),
        pytest.param("any(result, #.v > 1)", [{"v": 0}, {"v": 2}], True, id="item-field"),
        pytest.param("all(result, {all(#, # > 0)})", [[1, 2], [3]], True, id="nested-predicates"),
        pytest.param("len(result) == 0", [], True, id="empty-list"),
        pytest.param("all(result)", [True, True], True, id="all-of-booleans"),
        pytest.param("any(result)", [False, True], True, id="any-of-booleans"),
        pytest.param("count(result) == 1", [False, True], True, id="count-of-booleans"),
        pytest.param("max(result) < 0.05", [0.01, 0.02], True, id="max-of-list"),
        pytest.param("min(result) == -1", [3, -1, 2], True, id="min-of-list"),
        pytest.param("default(result, 0) < 10", None, True, id="default-of-nil"),
        pytest.param("default(result.x, 7) == 7", {}, True, id="default-of-missing"),
        pytest.param("isNil(result)", None, True, id="isNil"),
        pytest.param("asInt(result) == 42", "42", True, id="asInt-of-text"),
        pytest.param("asInt(result) == -3", -3.7, True, id="asInt-truncates-toward-zero"),
        pytest.param("asFloat(result) >= 1.1", "1.1", True, id="asFloat-of-text"),
        pytest.param("isNaN(asFloat(result))", "NaN", True, id="asFloat-nan"),
        pytest.param("result.a + result.b == 'xy'", {"a": "x", "b": "y"}, True, id="concat"),
        pytest.param("result < 'b'", "a", True, id="text-order"),
        pytest.param(r'result == "\"\\\n\u00e9\t' + "'\"", "\"\\\né\t'", True, id="escapes"),
        pytest.param("result == result", [1, {"a": [None]}], True, id="deep-equality"),
        pytest.param("result.x == 1", {"x": 1, "y": 2}, True, id="number-from-int"),
        pytest.param("len(result) > 0 and result[0] > 1", [], False, id="word-and-short-circuits"),
        pytest.param("true || result.a.b", None, True, id="or-short-circuits-error"),
    ],
)
def test_evaluates_json(text: str, result: object, expected: bool) -> None:
    """Conditions on JSON values, as a web provider returns them (expr's semantics: values
    of different types are unequal, a missing field is nil)."""
    assert parse(text).evaluate_json(result) is expected


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        pytest.param("result == true", True, True, id="TestEvaluateConditionWithSuccess"),
        pytest.param("result == false", True, False, id="TestEvaluateConditionWithFailure"),
        pytest.param(
            "all(result.service_apdex.values.values, {# > 1})",
            {"service_apdex": {"label": None, "values": {"values": [2.0, 2.0]}}},
            True,
            id="TestEvaluateArray",
        ),
        pytest.param("2 in result", [2.0, 2.0], True, id="TestEvaluateInOperator"),
        pytest.param("result > 1", 5.0, True, id="TestEvaluateFloat64"),
        pytest.param("asInt(result) == 1", "1", True, id="TestEvaluateAsInt-text"),
        pytest.param("asInt(result) == 1", 1, True, id="TestEvaluateAsInt-int"),
        pytest.param("asInt(result) == 1", 1.123, True, id="TestEvaluateAsInt-float"),
        pytest.param("asFloat(result) == 1.1", "1.1", True, id="TestEvaluateAsFloat-text"),
        pytest.param("asFloat(result) <= 1.1", "1.1", True, id="TestEvaluateAsFloat-le"),
        pytest.param("asFloat(result) == 1", 1, True, id="TestEvaluateAsFloat-int"),
        pytest.param(
            "result.a > 0 && result.b && all(result.c, {# < 5}) && result.d == nil",
            {"a": 1, "b": True, "c": [1, 2, 3], "d": None},
            True,
            id="web-provider-test",
        ),
        pytest.param(
            "result.count == 10 and result['average.duration'] < 15.0",
            {"count": 10, "average.duration": 12.5},
            True,
            id="newrelic-provider-test",
        ),
        pytest.param("result[2].count < 20", [{}, {}, {"count": 19}], True, id="list-of-maps"),
        pytest.param("result[0].Values[0] == 0.1", [{"Values": [0.1]}], True, id="cloudwatch"),
        pytest.param("result >= 0.9 || isNaN(result)", NAN, True, id="nan-guard"),
        pytest.param("all(result, # > 10)", [11.0, 12.0], True, id="datadog-grouped"),
        pytest.param("10 in result", [10.0, 11.0], True, id="in-numbers"),
        pytest.param("len(result) != 2", [1.0, 2.0], False, id="len"),
    ],
)
def test_argo_go_unit_test_conditions(text: str, result: object, expected: bool) -> None:
    """Conditions from Argo Rollouts' Go unit tests (utils/evaluate, the providers'
    tests) give the verdicts those tests assert."""
    assert parse(text).evaluate_json(result) is expected


@pytest.mark.parametrize(
    ("text", "result", "needle"),
    [
        pytest.param("asInt(result) == 1.1", "1.1", "not a whole number", id="asInt-of-decimal"),
        pytest.param("asFloat(result) == 1.1", "NotANum", "not a number", id="asFloat-of-word"),
        pytest.param("asFloat(result) > 1", True, "needs a number or a string", id="asFloat-bool"),
        pytest.param("asInt(result) > 1", INF, "not a whole number in range", id="asInt-inf"),
        pytest.param("result", "text", "gives a string, not true or false", id="not-boolean"),
        pytest.param("result < 0.05", None, "got nil and a number", id="nil-ordered"),
        pytest.param("result < 1", "0.5", "two numbers or two strings", id="text-ordered"),
        pytest.param("result.a", None, "cannot read the field 'a' of nil", id="field-of-nil"),
        pytest.param("result.a == 1", [1], "cannot read the field 'a' of a list", id="field-list"),
        pytest.param("result[0] == 1", 1.0, "cannot index a number", id="index-of-number"),
        pytest.param("result[3] == 1", [1, 2], "the list has 2 items", id="index-past-the-end"),
        pytest.param("result[1] == 1", {"a": 1}, "string key", id="number-key-of-map"),
        pytest.param("result.ok && true", {}, "&& needs true/false, got nil", id="nil-and"),
        pytest.param("result.ok || true", {"ok": 1}, "|| needs true/false", id="number-or"),
        pytest.param("!result", "x", "! needs true/false", id="bang-of-text"),
        pytest.param("-result > 1", "x", "needs numbers", id="minus-text"),
        pytest.param("result + 1 > 1", "x", "needs numbers", id="text-plus-number"),
        pytest.param("result % 2 == 1", 7.5, "whole numbers", id="modulo-of-fraction"),
        pytest.param("result % 0 == 1", 7, "by zero", id="modulo-by-zero"),
        pytest.param("all(result, # > 1)", {"a": 1}, "all() needs a list", id="all-of-map"),
        pytest.param("all(result, #)", [1], "predicate of all() gives a number", id="pred-num"),
        pytest.param("len(result) > 1", 5, "len() needs a list", id="len-of-number"),
        pytest.param("max(result) > 1", ["a"], "max() needs numbers", id="max-of-text"),
        pytest.param("max(result) > 1", [], "of an empty list", id="max-of-nothing"),
        pytest.param("mean(result) > 1", [], "of an empty list", id="mean-of-nothing"),
        pytest.param("1 in result", "abc", "in needs a list", id="in-text"),
        pytest.param("1 in result", {"1": 1}, "string key", id="number-in-map"),
        pytest.param("result > 1", object(), "not a JSON value", id="not-json"),
        pytest.param("result > 1", {1: 2}, "not a string", id="non-string-key"),
        pytest.param("result > 1", 10**400, "out of range", id="huge-int"),
    ],
)
def test_json_evaluation_errors(text: str, result: object, needle: str) -> None:
    """A condition that does not fit a JSON value raises ExpressionError saying why."""
    with pytest.raises(ExpressionError, match=re.escape(needle)):
        parse(text).evaluate_json(result)


def test_a_deeply_nested_result_is_refused() -> None:
    """A JSON value nested beyond the limit is an ExpressionError, not a RecursionError."""
    nested: object = 1
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse("len(result) == 1").evaluate_json(nested)


def test_predicates_stop_at_the_step_limit() -> None:
    """Nested predicates over a large list stop with an error instead of running on."""
    condition = parse("all(result, {all(result, {all(result, {# >= 0})})})")
    with pytest.raises(ExpressionError, match=f"more than {MAX_STEPS} predicate steps"):
        condition.evaluate_json(list(range(100)))


def test_fields_are_data_never_python_attributes() -> None:
    """``result.__class__`` reads a key of a map (nil when absent) and is an error on
    anything else: no Python attribute is ever reached."""
    condition = parse("result.__class__ == nil")
    assert condition.evaluate_json({}) is True
    assert parse("result.__class__ == 1").evaluate_json({"__class__": 1}) is True
    with pytest.raises(ExpressionError, match="cannot read the field '__class__'"):
        condition.evaluate(1.0)


@pytest.mark.parametrize(
    ("text", "column"),
    [
        pytest.param("result >= 0.9 && foo", 18, id="unknown-name"),
        pytest.param("result >= 0.9 &&", 17, id="missing-operand"),
        pytest.param("len(result) > 0 && open(1)", 20, id="call"),
        pytest.param("all(result, {# > 1) ", 19, id="unclosed"),
        pytest.param("result >= 0.9 $", 15, id="character"),
    ],
)
def test_errors_name_the_column(text: str, column: int) -> None:
    """Parse errors say at which column (1-based) the problem is."""
    assert f"at column {column}" in (check(text) or "")


def test_not_binds_tighter_than_a_comparison() -> None:
    """As in expr, ``!``/``not`` apply to the operand right after them: ``!result > 1`` is
    ``(!result) > 1``, an error on a number, never a silently different verdict."""
    assert parse("!true == false").evaluate(0.0) is True
    with pytest.raises(ExpressionError, match="needs true/false"):
        parse("not result > 1").evaluate(0.5)


def test_check_accepts_a_valid_condition() -> None:
    """check() returns None for a valid condition (what `stepwise lint` would use)."""
    assert check("result >= 0.99 and not isnan(result)") is None


@given(st.text(max_size=60))
def test_arbitrary_text_never_escapes(text: str) -> None:
    """Any text parses into the language or raises ExpressionError, and so does evaluating it."""
    try:
        condition = parse(text)
    except ExpressionError:
        return
    for value in ([0.5, 2.0], 1.0, []):
        with contextlib.suppress(ExpressionError):
            condition.evaluate(value)
    for json_value in (None, True, "x", 0.5, [1, "a", None], {"a": {"b": [1.5]}, "ok": True}):
        with contextlib.suppress(ExpressionError):
            condition.evaluate_json(json_value)


@given(st.text(alphabet="result[]().#{}!&|<>=+-*/%?,:' 0123456789aeinodlsmxy", max_size=40))
def test_expression_like_text_never_escapes(text: str) -> None:
    """Text made of the language's own characters parses or raises ExpressionError, and so
    does evaluating it on Prometheus values and on JSON values."""
    try:
        condition = parse(text)
    except ExpressionError:
        return
    for value in ([0.5, 2.0], 1.0):
        with contextlib.suppress(ExpressionError):
            condition.evaluate(value)
    for json_value in (None, [1, [2], {"a": 1}], {"a": 1}, "s"):
        with contextlib.suppress(ExpressionError):
            condition.evaluate_json(json_value)


@given(st.floats(), st.floats(allow_nan=False, allow_infinity=False))
def test_threshold_conditions_agree_with_python(value: float, bound: float) -> None:
    """`result >= b` and `result < b` are IEEE comparisons (NaN fails both)."""
    assert parse(f"result >= {bound!r}").evaluate(value) == (value >= bound)
    assert parse(f"result < {bound!r}").evaluate(value) == (value < bound)
