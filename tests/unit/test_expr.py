"""The safe condition language: what it computes, what it rejects, and that rejecting
never runs anything."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.expr import MAX_LENGTH, ExpressionError, check, parse

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
    ],
)
def test_evaluates(text: str, result: float | list[float], expected: object) -> None:
    """Each form of the language computes what the docstring table says."""
    assert parse(text).evaluate(result) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param('__import__("os").system("true")', "calling __import__", id="import"),
        pytest.param("result.__class__", "attribute access", id="dunder-attribute"),
        pytest.param("open('/etc/passwd')", "calling open()", id="builtin-call"),
        pytest.param("eval('1')", "calling eval()", id="eval"),
        pytest.param("(lambda: 1)()", "calling", id="lambda-call"),
        pytest.param("lambda: 1", "a lambda", id="lambda"),
        pytest.param("[x for x in result]", "a comprehension", id="comprehension"),
        pytest.param("result ** 1000", "Pow", id="power"),
        pytest.param("result % 2", "Mod", id="modulo"),
        pytest.param("'text' == result", "the constant 'text'", id="string"),
        pytest.param("foo > 1", "the name 'foo'", id="unknown-name"),
        pytest.param("result[1:2]", "not a whole number", id="slice"),
        pytest.param("result[0.5]", "not a whole number", id="float-index"),
        pytest.param("result if True else 0", "an if-expression", id="if-expression"),
        pytest.param("(x := 1)", "an assignment", id="walrus"),
        pytest.param("len(result, 1)", "exactly one argument", id="two-arguments"),
        pytest.param("all(result=1)", "exactly one argument", id="keyword-argument"),
        pytest.param("result in (1, 2)", "In", id="membership"),
        pytest.param("result is None", "Is", id="identity"),
        pytest.param("result >", "not valid", id="syntax-error"),
        pytest.param("", "empty", id="empty"),
        pytest.param("x" * (MAX_LENGTH + 1), "longer than", id="too-long"),
        pytest.param("+".join(["1"] * 150), "syntax nodes", id="too-many-nodes"),
        pytest.param("(" * 300 + "1" + ")" * 300, "", id="deep-nesting"),
        pytest.param("result\x00", "", id="null-byte"),
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
    try:
        condition.evaluate([0.5, 2.0])
        condition.evaluate(1.0)
    except ExpressionError:
        pass


@given(st.floats(), st.floats(allow_nan=False, allow_infinity=False))
def test_threshold_conditions_agree_with_python(value: float, bound: float) -> None:
    """`result >= b` and `result < b` are IEEE comparisons (NaN fails both)."""
    assert parse(f"result >= {bound!r}").evaluate(value) == (value >= bound)
    assert parse(f"result < {bound!r}").evaluate(value) == (value < bound)
