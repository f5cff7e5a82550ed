"""A small, safe language for ``successCondition`` and ``failureCondition``.

Where it sits: :mod:`controller.core.measurement` parses a metric's condition with
:func:`parse` and evaluates it on the values a query returned; :mod:`controller.core.analysis`
asks :func:`check` so that a template with a condition outside the language is an invalid
spec before it measures anything. The text comes from an AnalysisTemplate, that is from
users, so it is never given to ``eval`` or ``compile``: a hand-written tokenizer and
precedence-climbing parser build a tiny tree of our own, which :meth:`Condition.evaluate`
interprets. Anything else is rejected with an :class:`ExpressionError` that says what is
not allowed and at which column.

The language is the part of `expr <https://expr-lang.org>`_ (the language Argo Rollouts
evaluates conditions in) that Argo Rollouts' examples and documentation use, with its
precedence and its meaning, plus Argo's own functions (``default``, ``asInt``,
``asFloat``, ``isNaN``, ``isInf``, ``isNil``). Every condition in those manifests is kept
in ``tests/fixtures/argo-conditions.txt`` and judged by ``tests/unit/test_expr_argo.py``.

=========================================  ================================================
form                                       meaning
=========================================  ================================================
``result``                                 the measured value (see *Values* below)
``0.99``, ``1e3``, ``1_000``, ``0x1F``     numbers (all numbers are floats)
``"text"``, ``'text'``                     strings, with ``\\n \\t \\\\ \\uXXXX`` escapes and
                                           the string's own quote escaped (``\\"`` or ``\\'``)
``true``, ``false``, ``nil``               constants (``True``/``False`` also accepted)
``== !=``                                  equality of any two values; values of different
                                           types are unequal, never an error
``< <= > >=``                              order of two numbers or two strings; chained as
                                           in ``0.1 < result < 0.5``
``+ - * / %``, unary ``-``                 arithmetic with IEEE rules (``x / 0`` is ±Inf or
                                           NaN); ``+`` also joins two strings; ``%`` takes
                                           whole numbers
``&&``/``and``, ``||``/``or``,             logic on true/false, short-circuiting:
``!``/``not``, ``( )``                     ``len(result) > 0 && result[0] > 1`` never
                                           indexes past the end
``x in list``, ``"key" in map``,           membership (``not in`` negates)
``x ?? y``                                 ``x``, or ``y`` when ``x`` is nil
``result.field``, ``result["field"]``      a field of a map (nil when it is missing);
``result?.field``                          ``?.`` gives nil instead of an error on nil
``result[i]``                              the i-th item; negative ``i`` counts from the end
``len(x)``                                 items of a list or map, characters of a string
``isNaN(x)``, ``isInf(x)``, ``abs(x)``     as in :mod:`math` (``isnan``/``isinf`` too)
``isNil(x)``                               ``x`` is nil
``default(x, d)``                          ``x``, or ``d`` when ``x`` is nil (a Datadog
                                           query with no points, a missing field)
``asInt(x)``, ``asFloat(x)``               a number from a number or from text (``"42"``)
``min(..)``, ``max(..)``, ``sum(l)``,      of a list, or of several numbers (an empty
``mean(l)``, ``median(l)``                 list is an error, except ``sum`` gives 0)
``all(l, {pred})``, ``any``, ``none``,     a predicate over the items of a list: ``#`` is
``one``, ``filter``, ``map``, ``count``,   the item and ``.field`` a field of it; the
``sum(l, {pred})``                         braces may be left out: ``all(result, # < 1)``
``all(x)``, ``any(x)``, ``count(x)``       reduce a list of true/false
=========================================  ================================================

Values. :meth:`Condition.evaluate_json` binds ``result`` to a JSON value as a web
provider returns it (a map, a list, a string, a number, true/false or nil), as Argo
does. :meth:`Condition.evaluate` binds the values of a Prometheus query: one series is a
number, several are a *vector*, which broadcasts like NumPy: ``result >= 0.99`` on three
series is a vector of three true/false values, ``&&``/``||``/``!`` work element by element,
and the caller decides the verdict (:mod:`~controller.core.measurement` requires *every*
element of a success condition and *any* element of a failure condition). Argo documents
a Prometheus result as an array and its manifests write ``result[0] >= 0.95``; so here a
single series is also a list of one: ``result[0]``, ``len(result)`` and ``all(result, #
< 1)`` work on it.

Precedence is expr's: ``||`` < ``&&`` < comparisons and ``in`` < ``+ -`` < ``* / %`` <
``??``; ``!``/``not`` apply to the operand right after them (``!a == b`` is ``(!a) == b``,
so write ``!(result > 1)``), unary ``-`` binds tighter than ``*``.

A condition must end as true or false: anything else is an error, as in Argo.

Not in the language (rejected with the reason): array and map literals, ``**``/``^``,
``? :``, ``..``, slices, pipes, ``let``, ``matches``/``contains``/``startsWith``/
``endsWith``, method calls and every other function.

Limits: at most 1024 characters, 200 syntax nodes and 40 levels of nesting; an
evaluation stops after 100,000 predicate calls.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias, TypeVar

MAX_LENGTH: Final = 1024
MAX_NODES: Final = 200
MAX_DEPTH: Final = 40
MAX_STEPS: Final = 100_000
_MAX_JSON_DEPTH: Final = 64

_T = TypeVar("_T", float, bool)


class ExpressionError(ValueError):
    """A condition that is not in the language, or that cannot be evaluated on a value."""


@dataclass(frozen=True)
class Vector:
    """Several values, numbers or true/false, one per Prometheus series."""

    items: tuple[float, ...] | tuple[bool, ...]
    boolean: bool

    def __len__(self) -> int:
        return len(self.items)


Value: TypeAlias = "bool | float | str | Vector | tuple[Value, ...] | Mapping[str, Value] | None"


# -- the tree we interpret -------------------------------------------------------------


@dataclass(frozen=True)
class _Const:
    value: bool | float | str | None


@dataclass(frozen=True)
class _Result:
    pass


@dataclass(frozen=True)
class _Item:
    """``#``: the item a predicate is looking at."""


@dataclass(frozen=True)
class _Unary:
    op: str  # "-" | "+" | "not"
    symbol: str  # as written, for messages
    operand: _Node


@dataclass(frozen=True)
class _Binary:
    op: str  # + - * / % == != in "not in" ??
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Compare:
    ops: tuple[str, ...]  # < <= > >=, chained
    operands: tuple[_Node, ...]


@dataclass(frozen=True)
class _Logic:
    op: str  # "and" | "or"
    symbol: str
    operands: tuple[_Node, ...]


@dataclass(frozen=True)
class _Member:
    value: _Node
    key: _Node
    optional: bool


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Node, ...]


@dataclass(frozen=True)
class _Predicate:
    name: str
    collection: _Node
    body: _Node


_Node: TypeAlias = (
    _Const | _Result | _Item | _Unary | _Binary | _Compare | _Logic | _Member | _Call | _Predicate
)


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _Unary):
        return (node.operand,)
    if isinstance(node, _Binary):
        return (node.left, node.right)
    if isinstance(node, _Compare | _Logic):
        return node.operands
    if isinstance(node, _Member):
        return (node.value, node.key)
    if isinstance(node, _Call):
        return node.args
    if isinstance(node, _Predicate):
        return (node.collection, node.body)
    return ()


def _count(node: _Node) -> int:
    return 1 + sum(_count(c) for c in _children(node))


# -- the public face -------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A parsed condition; :meth:`evaluate` it on Prometheus values, :meth:`evaluate_json`
    on a JSON value."""

    text: str
    _root: _Node

    def evaluate(self, result: float | Sequence[float]) -> bool | tuple[bool, ...]:
        """The condition's value for Prometheus values (one number, or one per series).

        A single true/false, or one per series when the condition stays a vector.
        Raises :class:`ExpressionError` when the condition does not fit the value (an
        index past the end, a number where true/false is needed, vectors of different
        lengths).
        """
        bound: Value
        if isinstance(result, int | float):
            bound = float(result)
        else:
            values = tuple(float(v) for v in result)
            bound = values[0] if len(values) == 1 else Vector(values, boolean=False)
        out = _interpret(self._root, _Env(bound, series=True))
        if isinstance(out, bool):
            return out
        if isinstance(out, Vector) and out.boolean:
            return tuple(bool(v) for v in out.items)
        raise self._not_boolean(out)

    def evaluate_json(self, result: object) -> bool:
        """The condition's value for ``result`` as a JSON provider returns it: a map, a
        list, a string, a number, true/false or None (what :func:`json.loads` gives).

        Raises :class:`ExpressionError` when the value is not JSON or the condition does
        not fit it (a field of nil, an order between a number and a string, a condition
        that is not true or false).
        """
        out = _interpret(self._root, _Env(_from_json(result, 0), series=False))
        if isinstance(out, bool):
            return out
        raise self._not_boolean(out)

    def _not_boolean(self, out: Value) -> ExpressionError:
        return ExpressionError(
            f"condition {self.text!r} gives {_describe(out)}, not true or false "
            "(compare it, for example result >= 0.99)"
        )


@functools.lru_cache(maxsize=512)
def parse(text: str) -> Condition:
    """Parse a condition; raises :class:`ExpressionError` for anything outside the language."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"condition is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ExpressionError("condition is empty")
    root = _Parser(text, _tokenize(text)).parse()
    count = _count(root)
    if count > MAX_NODES:
        raise ExpressionError(f"condition has {count} syntax nodes, more than {MAX_NODES}")
    return Condition(text, root)


def check(text: str) -> str | None:
    """The reason ``text`` is not a valid condition, or None (for ``stepwise lint``)."""
    try:
        parse(text)
    except ExpressionError as exc:
        return str(exc)
    return None


# -- tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "number" | "string" | "name" | "op" | "end"
    text: str
    col: int  # 1-based, in the text as given
    value: float | str | None = None


_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER: Final = re.compile(
    r"0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.(?!\.)[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?"
)
_OPERATORS: Final = (
    "&&", "||", "==", "!=", "<=", ">=", "??", "?.", "**", "..", "::",
    "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[", "]", "{", "}",
    ",", ".", "#", "^", "?", ":", ";", "=", "&", "|", "~",
)  # fmt: skip
_SIMPLE_ESCAPES: Final = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
}  # fmt: skip
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}


def _syntax(text: str, col: int, message: str) -> ExpressionError:
    return ExpressionError(f"condition {text!r} is not valid at column {col}: {message}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        col = i + 1
        if ch in " \t\r\n":
            i += 1
            continue
        if ch in "\"'":
            value, i = _string(text, i)
            tokens.append(_Token("string", text[col - 1 : i], col, value))
            continue
        number = _NUMBER.match(text, i)
        if number is not None and (ch != "." or number.end() > i + 1):
            tokens.append(_Token("number", number.group(), col, _number(text, number.group(), col)))
            i = number.end()
            continue
        name = _NAME.match(text, i)
        if name is not None:
            tokens.append(_Token("name", name.group(), col))
            i = name.end()
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is None:
            raise _syntax(text, col, f"the character {ch!r} is not allowed")
        tokens.append(_Token("op", op, col))
        i += len(op)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _number(text: str, literal: str, col: int) -> float:
    try:
        value = (
            float(int(literal, 0)) if literal[:2].lower() in ("0x", "0o", "0b") else float(literal)
        )
    except (ValueError, OverflowError):
        raise _syntax(text, col, f"{literal!r} is not a number") from None
    if not math.isfinite(value):
        raise _syntax(text, col, f"the number {literal} is out of range")
    return value


def _string(text: str, start: int) -> tuple[str, int]:
    """The value of the string literal at ``start`` and the index after it."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\n":
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        escape = text[i + 1] if i + 1 < len(text) else ""
        if escape in _SIMPLE_ESCAPES or escape == quote:
            out.append(_SIMPLE_ESCAPES.get(escape, escape))
            i += 2
        elif escape in _HEX_ESCAPES:
            digits = text[i + 2 : i + 2 + _HEX_ESCAPES[escape]]
            code = int(digits, 16) if re.fullmatch(r"[0-9a-fA-F]+", digits) else -1
            if len(digits) != _HEX_ESCAPES[escape] or not (
                0 <= code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF
            ):
                raise _syntax(text, i + 1, f"invalid escape \\{escape}{digits}")
            out.append(chr(code))
            i += 2 + len(digits)
        else:
            raise _syntax(text, i + 1, f"unknown escape \\{escape}")
    raise _syntax(text, start + 1, "the string is not closed")


# -- parsing ---------------------------------------------------------------------------

#: Binary operators and their precedence, as in expr.
_BINARY: Final = {
    "||": 10, "or": 10,
    "&&": 15, "and": 15,
    "==": 20, "!=": 20, "<": 20, ">": 20, "<=": 20, ">=": 20, "in": 20,
    "+": 30, "-": 30,
    "*": 60, "/": 60, "%": 60,
    "??": 500,
}  # fmt: skip
_ORDER: Final = frozenset({"<", ">", "<=", ">="})
_LOGIC: Final = {"||": "or", "or": "or", "&&": "and", "and": "and"}
#: expr operators outside this language, named for the message.
_UNSUPPORTED: Final = {
    "**": "the power operator '**'",
    "^": "the power operator '^'",
    "?": "the conditional operator '? :'",
    "..": "a range '..'",
    "|": "a pipe '|'",
    "matches": "the operator 'matches'",
    "contains": "the operator 'contains'",
    "startsWith": "the operator 'startsWith'",
    "endsWith": "the operator 'endsWith'",
}
_CONSTANTS: Final[dict[str, bool | None]] = {
    "true": True,
    "false": False,
    "True": True,
    "False": False,
    "nil": None,
}
#: Functions and their number of arguments (least, most; None for no limit).
_FUNCTIONS: Final[dict[str, tuple[int, int | None]]] = {
    "len": (1, 1),
    "abs": (1, 1),
    "isNaN": (1, 1),
    "isnan": (1, 1),
    "isInf": (1, 1),
    "isinf": (1, 1),
    "isNil": (1, 1),
    "asInt": (1, 1),
    "asFloat": (1, 1),
    "default": (2, 2),
    "min": (1, None),
    "max": (1, None),
    "mean": (1, None),
    "median": (1, None),
}
#: Functions whose second argument is a predicate; the first four also take one argument.
_PREDICATES: Final = ("all", "any", "count", "sum", "none", "one", "filter", "map")
_ARITY_WORDS: Final = {1: "one argument", 2: "two arguments"}
_ALLOWED: Final = (
    "allowed: result, numbers, strings, true/false/nil, comparisons, &&/and, ||/or, !/not, "
    "+ - * / %, in, ??, result.field, result[i], and the functions "
    + ", ".join(sorted([*_FUNCTIONS, *_PREDICATES], key=str.lower))
)


def _show(token: _Token) -> str:
    if token.kind == "end":
        return "the end"
    if token.kind == "number":
        return f"the number {token.text}"
    if token.kind == "string":
        return f"the string {token.text}"
    return repr(token.text)


class _Parser:
    """Precedence climbing over the tokens, with expr's precedences (see ``_BINARY``):
    ``!``/``not`` bind tighter than comparisons (``!a == b`` is ``(!a) == b``), unary
    ``-`` tighter than ``*``."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.predicates = 0  # how many predicates we are inside (``#`` and ``.f`` allowed)

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def peek(self) -> _Token:
        return self.tokens[min(self.pos + 1, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def is_op(self, *texts: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in texts

    def error(self, token: _Token, message: str) -> ExpressionError:
        return _syntax(self.text, token.col, message)

    def reject(self, token: _Token, what: str) -> ExpressionError:
        return ExpressionError(
            f"{what} is not allowed in a condition at column {token.col} ({self.text!r}); "
            + _ALLOWED
        )

    def expect(self, text: str, after: str) -> None:
        if not self.is_op(text):
            raise self.error(self.tok, f"expected {text!r} {after}, found {_show(self.tok)}")
        self.advance()

    def parse(self) -> _Node:
        root = self.expression(0)
        if self.tok.kind != "end":
            hint = " (compare with ==)" if self.is_op("=") else ""
            raise self.error(self.tok, f"unexpected {_show(self.tok)}{hint}")
        return root

    def binary(self) -> tuple[str, int] | None:
        """The binary operator at the current token (without consuming it): its name and
        how many tokens it takes; None when the expression ends here."""
        token = self.tok
        if token.kind not in ("op", "name"):
            return None
        if token.text in _UNSUPPORTED:
            raise self.reject(token, _UNSUPPORTED[token.text])
        if token.kind == "name" and token.text == "not":
            if self.peek().kind == "name" and self.peek().text == "in":
                return "not in", 2
            raise self.error(token, "unexpected 'not' (did you mean 'not in'?)")
        if token.text in _BINARY:
            return token.text, 1
        return None

    def expression(self, precedence: int) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(
                f"condition {self.text!r} nests deeper than {MAX_DEPTH} levels "
                f"(at column {self.tok.col})"
            )
        left = self.unary()
        while (found := self.binary()) is not None:
            op, width = found
            level = _BINARY["in" if op == "not in" else op]
            if level < precedence:
                break
            for _ in range(width):
                self.advance()
            if op in _ORDER:
                left = self.comparison(left, op, level)
            elif op in _LOGIC:
                right = self.expression(level + 1)
                name = _LOGIC[op]
                if isinstance(left, _Logic) and left.op == name:
                    left = _Logic(name, left.symbol, (*left.operands, right))
                else:
                    left = _Logic(name, op, (left, right))
            else:
                left = _Binary(op, left, self.expression(level + 1))
        self.depth -= 1
        return left

    def comparison(self, left: _Node, op: str, level: int) -> _Node:
        """``a < b <= c``: each comparison with its neighbours, all of them must hold."""
        ops = [op]
        operands = [left, self.expression(level + 1)]
        while self.tok.kind == "op" and self.tok.text in _ORDER:
            ops.append(self.advance().text)
            operands.append(self.expression(level + 1))
        return _Compare(tuple(ops), tuple(operands))

    def unary(self) -> _Node:
        token = self.tok
        if self.is_op("!") or (token.kind == "name" and token.text == "not"):
            self.advance()
            return _Unary("not", token.text, self.expression(50))
        if self.is_op("-", "+"):
            self.advance()
            return _Unary(token.text, token.text, self.expression(90))
        return self.postfix(self.primary())

    def primary(self) -> _Node:
        token = self.tok
        if token.kind in ("number", "string"):
            self.advance()
            return _Const(token.value)
        if token.kind == "name":
            self.advance()
            if self.is_op("("):
                return self.call(token)
            if token.text in _CONSTANTS:
                return _Const(_CONSTANTS[token.text])
            if token.text == "result":
                return _Result()
            raise self.reject(token, f"the name {token.text!r}")
        if self.is_op("("):
            self.advance()
            inner = self.expression(0)
            self.expect(")", "to close the '(' at column " + str(token.col))
            return inner
        if self.is_op("#", "."):
            if not self.predicates:
                what = "'#'" if token.text == "#" else "a field without a value before the '.'"
                raise self.reject(
                    token, f"{what} outside a predicate such as all(result, {{# > 0}})"
                )
            self.advance()
            if token.text == "#":
                return _Item()
            return _Member(_Item(), _Const(self.field_name()), optional=False)
        if self.is_op("["):
            raise self.reject(token, "a list literal")
        if self.is_op("{"):
            raise self.reject(token, "a map literal (braces only wrap a predicate)")
        if token.kind == "end":
            raise self.error(token, "expected a value, found the end")
        raise self.error(token, f"expected a value, found {_show(token)}")

    def field_name(self) -> str:
        if self.tok.kind != "name":
            raise self.error(self.tok, f"expected a field name, found {_show(self.tok)}")
        return self.advance().text

    def postfix(self, node: _Node) -> _Node:
        while True:
            token = self.tok
            if self.is_op(".", "?."):
                self.advance()
                optional = token.text == "?."
                if optional and self.is_op("["):
                    node = self.index(node, optional=True)
                    continue
                name = self.tok
                node = _Member(node, _Const(self.field_name()), optional)
                if self.is_op("("):
                    raise self.reject(name, f"calling the method {name.text}()")
            elif self.is_op("["):
                node = self.index(node, optional=False)
            elif self.is_op("("):
                raise self.reject(token, "calling a value that is not a function name")
            else:
                return node

    def index(self, node: _Node, *, optional: bool) -> _Node:
        opening = self.advance()
        if self.is_op(":"):
            raise self.reject(self.tok, "a slice")
        key = self.expression(0)
        if self.is_op(":"):
            raise self.reject(self.tok, "a slice")
        if isinstance(key, _Const) and isinstance(key.value, float) and not key.value.is_integer():
            raise self.reject(opening, "an index that is not a whole number")
        self.expect("]", f"to close the '[' at column {opening.col}")
        return _Member(node, key, optional)

    def call(self, name: _Token) -> _Node:
        opening = self.advance()
        if name.text in _PREDICATES:
            return self.predicate_call(name)
        if name.text not in _FUNCTIONS:
            raise self.reject(name, f"calling {name.text}()")
        args: list[_Node] = []
        if not self.is_op(")"):
            args.append(self.expression(0))
            while self.is_op(","):
                self.advance()
                args.append(self.expression(0))
        self.expect(")", f"to close the '(' at column {opening.col}")
        least, most = _FUNCTIONS[name.text]
        if len(args) < least or (most is not None and len(args) > most):
            if least == most:
                wanted = f"exactly {_ARITY_WORDS.get(least, str(least))}"
            else:
                wanted = f"at least {_ARITY_WORDS.get(least, str(least))}"
            raise self.error(name, f"{name.text}() takes {wanted}, not {len(args)}")
        return _Call(name.text, tuple(args))

    def predicate_call(self, name: _Token) -> _Node:
        if self.is_op(")"):
            raise self.error(name, f"{name.text}() needs a list")
        collection = self.expression(0)
        if self.is_op(")") and name.text in ("all", "any", "count", "sum"):
            self.advance()
            return _Call(name.text, (collection,))
        if not self.is_op(","):
            raise self.error(
                self.tok,
                f"{name.text}() takes a list and a predicate, as in {name.text}(result, "
                f"{{# > 0}}); expected ',' but found {_show(self.tok)}",
            )
        self.advance()
        self.predicates += 1
        if self.is_op("{"):
            brace = self.advance()
            body = self.expression(0)
            self.expect("}", f"to close the '{{' at column {brace.col}")
        else:
            body = self.expression(0)
        self.predicates -= 1
        self.expect(")", f"to close {name.text}(")
        return _Predicate(name.text, collection, body)


# -- values ----------------------------------------------------------------------------


def _from_json(value: object, depth: int) -> Value:
    """A JSON-like Python value as a :data:`Value` (numbers become floats)."""
    if depth > _MAX_JSON_DEPTH:
        raise ExpressionError(f"result is nested deeper than {_MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            raise ExpressionError(f"result holds the number {value}, out of range") from None
    if isinstance(value, list | tuple):
        return tuple(_from_json(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        out: dict[str, Value] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ExpressionError(f"result holds a map with the key {key!r}, not a string")
            out[key] = _from_json(item, depth + 1)
        return out
    raise ExpressionError(f"result is a {type(value).__name__}, not a JSON value")


def _describe(value: Value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Vector):
        return f"a vector of {'true/false' if value.boolean else 'numbers'}"
    if isinstance(value, tuple):
        return "a list"
    return "a map"


def _fmt(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, float | str):
        return repr(value) if isinstance(value, str) else f"{value:g}"
    return _describe(value)


# -- evaluation ------------------------------------------------------------------------


@dataclass
class _Env:
    result: Value
    series: bool  # Prometheus values: a number is also a list of one
    items: list[Value] = field(default_factory=list)  # the ``#`` of each open predicate
    steps: int = 0


def _interpret(node: _Node, env: _Env) -> Value:
    if isinstance(node, _Const):
        return node.value
    if isinstance(node, _Result):
        return env.result
    if isinstance(node, _Item):
        if not env.items:  # pragma: no cover - the parser allows # only in a predicate
            raise ExpressionError("'#' outside a predicate")
        return env.items[-1]
    if isinstance(node, _Unary):
        return _unary(node, _interpret(node.operand, env))
    if isinstance(node, _Binary):
        return _binary(node, env)
    if isinstance(node, _Compare):
        return _compare(node, env)
    if isinstance(node, _Logic):
        return _logic(node, env)
    if isinstance(node, _Member):
        value = _interpret(node.value, env)
        if value is None and node.optional:
            return None
        return _member(value, _interpret(node.key, env), env)
    if isinstance(node, _Call):
        return _call(node.name, [_interpret(a, env) for a in node.args], env)
    return _predicate(node, env)


def _divide(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _modulo(a: float, b: float) -> float:
    if not (a.is_integer() and b.is_integer()):
        raise ExpressionError(f"% needs whole numbers, got {_fmt(a)} % {_fmt(b)}")
    if b == 0.0:
        raise ExpressionError("% by zero")
    return math.fmod(a, b)  # the sign of the dividend, as in Go


_ARITH_FN: Final[dict[str, Callable[[float, float], float]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
    "%": _modulo,
}
_ORDER_FN: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _num_items(value: Value, what: str) -> tuple[float, ...] | float:
    if isinstance(value, float):
        return value
    if isinstance(value, Vector) and not value.boolean:
        return tuple(float(v) for v in value.items)
    raise ExpressionError(f"{what} needs numbers, got {_describe(value)}")


def _bool_items(value: Value, what: str) -> tuple[bool, ...] | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, Vector) and value.boolean:
        return tuple(bool(v) for v in value.items)
    raise ExpressionError(f"{what} needs true/false, got {_describe(value)}")


def _pairs(a: tuple[_T, ...] | _T, b: tuple[_T, ...] | _T, what: str) -> list[tuple[_T, _T]]:
    """Element pairs of two operands at least one of which is a vector (the other is
    repeated)."""
    left = a if isinstance(a, tuple) else None
    right = b if isinstance(b, tuple) else None
    if left is not None and right is not None and len(left) != len(right):
        raise ExpressionError(f"{what} on vectors of {len(left)} and {len(right)} series")
    size = len(left) if left is not None else len(right or ())
    lefts = left if left is not None else (a,) * size
    rights = right if right is not None else (b,) * size
    return list(zip(lefts, rights, strict=True))  # type: ignore[arg-type]


def _zip_num(left: Value, right: Value, fn: Callable[[float, float], float], what: str) -> Value:
    a, b = _num_items(left, what), _num_items(right, what)
    if not isinstance(a, tuple) and not isinstance(b, tuple):
        return fn(a, b)
    return Vector(tuple(fn(x, y) for x, y in _pairs(a, b, what)), boolean=False)


def _zip_bool(left: Value, right: Value, fn: Callable[[bool, bool], bool], what: str) -> Value:
    a, b = _bool_items(left, what), _bool_items(right, what)
    if not isinstance(a, tuple) and not isinstance(b, tuple):
        return fn(a, b)
    return Vector(tuple(fn(x, y) for x, y in _pairs(a, b, what)), boolean=True)


def _unary(node: _Unary, value: Value) -> Value:
    if node.op == "not":
        items = _bool_items(value, node.symbol)
        if isinstance(items, tuple):
            return Vector(tuple(not v for v in items), boolean=True)
        return not items
    nums = _num_items(value, f"unary {node.symbol}")
    if isinstance(nums, tuple):
        return Vector(tuple(-v for v in nums) if node.op == "-" else nums, boolean=False)
    return -nums if node.op == "-" else nums


def _binary(node: _Binary, env: _Env) -> Value:
    left = _interpret(node.left, env)
    if node.op == "??":
        return left if left is not None else _interpret(node.right, env)
    right = _interpret(node.right, env)
    if node.op in ("==", "!="):
        return _equality(node.op, left, right)
    if node.op in ("in", "not in"):
        found = _contains(left, right, env, node.op)
        return found if node.op == "in" else not found
    if node.op == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if isinstance(left, str) or isinstance(right, str):
        raise ExpressionError(
            f"{node.op} needs numbers, got {_describe(left)} and {_describe(right)}"
        )
    return _zip_num(left, right, _ARITH_FN[node.op], node.op)


def _equal(a: Value, b: Value) -> bool:
    """expr's ``==``: values of different types are unequal; numbers by IEEE rules."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, float) and isinstance(b, float):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Vector | tuple) and isinstance(b, Vector | tuple):
        xs = a.items if isinstance(a, Vector) else a
        ys = b.items if isinstance(b, Vector) else b
        return len(xs) == len(ys) and all(_equal(x, y) for x, y in zip(xs, ys, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return False


def _equality(op: str, left: Value, right: Value) -> Value:
    def same(a: Value, b: Value) -> bool:
        return _equal(a, b) is (op == "==")

    if isinstance(left, Vector) and isinstance(right, Vector):
        if len(left) != len(right):
            raise ExpressionError(f"{op} on vectors of {len(left)} and {len(right)} series")
        pairs = zip(left.items, right.items, strict=True)
        return Vector(tuple(same(a, b) for a, b in pairs), boolean=True)
    if isinstance(left, Vector):
        return Vector(tuple(same(a, right) for a in left.items), boolean=True)
    if isinstance(right, Vector):
        return Vector(tuple(same(left, b) for b in right.items), boolean=True)
    return same(left, right)


def _compare(node: _Compare, env: _Env) -> Value:
    values = [_interpret(o, env) for o in node.operands]
    out: Value = True
    for op, left, right in zip(node.ops, values, values[1:], strict=False):
        step: Value
        if isinstance(left, str) and isinstance(right, str):
            step = _ORDER_FN[op](left, right)  # type: ignore[arg-type]
        elif isinstance(left, float | Vector) and isinstance(right, float | Vector):
            a, b = _num_items(left, op), _num_items(right, op)
            fn = _ORDER_FN[op]
            if not isinstance(a, tuple) and not isinstance(b, tuple):
                step = fn(a, b)
            else:
                step = Vector(tuple(fn(x, y) for x, y in _pairs(a, b, op)), boolean=True)
        else:
            raise ExpressionError(
                f"{op} needs two numbers or two strings, got {_describe(left)} "
                f"and {_describe(right)}"
            )
        out = step if out is True else _zip_bool(out, step, operator.and_, "and")
    return out


def _logic(node: _Logic, env: _Env) -> Value:
    fn: Callable[[bool, bool], bool] = operator.and_ if node.op == "and" else operator.or_
    acc = _interpret(node.operands[0], env)
    _bool_items(acc, node.symbol)
    for operand in node.operands[1:]:
        if isinstance(acc, bool) and acc is (node.op == "or"):
            return acc  # short-circuit: true || ..., false && ...
        acc = _zip_bool(acc, _interpret(operand, env), fn, node.symbol)
    return acc


def _items(value: Value, env: _Env, what: str) -> tuple[Value, ...]:
    """The items of a list (or of a vector, or of one Prometheus value)."""
    if isinstance(value, tuple):
        return value
    if isinstance(value, Vector):
        return value.items
    if env.series and isinstance(value, float):
        return (value,)
    raise ExpressionError(f"{what} needs a list, got {_describe(value)}")


def _member(value: Value, key: Value, env: _Env) -> Value:
    if isinstance(value, Mapping):
        if not isinstance(key, str):
            raise ExpressionError(f"a map is read with a string key, not {_describe(key)}")
        return value.get(key)
    if isinstance(key, str):
        raise ExpressionError(
            f"cannot read the field {key!r} of {_describe(value)} (use ?. or default() "
            "when it may be missing)"
        )
    if (
        value is None
        or isinstance(value, bool | str)
        or (isinstance(value, float) and not env.series)
    ):
        raise ExpressionError(f"cannot index {_describe(value)}")
    items = _items(value, env, "an index")
    if not isinstance(key, float) or not key.is_integer():
        raise ExpressionError(f"an index must be a whole number, got {_fmt(key)}")
    index = int(key)
    if not -len(items) <= index < len(items):
        held = (
            f"the list has {len(items)} items"
            if isinstance(value, tuple)
            else f"the query returned {len(items)} series"
        )
        raise ExpressionError(f"index {index} is out of range: {held}")
    return items[index]


def _contains(item: Value, container: Value, env: _Env, op: str) -> bool:
    if isinstance(container, Mapping):
        if not isinstance(item, str):
            raise ExpressionError(f"{op} a map needs a string key, got {_describe(item)}")
        return item in container
    return any(_equal(item, x) for x in _items(container, env, op))


def _numbers(args: list[Value], name: str) -> list[float]:
    """The numbers of the arguments of min/max/mean/median: numbers, or lists of them."""
    out: list[float] = []
    for arg in args:
        if isinstance(arg, float):
            out.append(arg)
            continue
        if isinstance(arg, Vector) and not arg.boolean:
            out.extend(float(v) for v in arg.items)
            continue
        if isinstance(arg, tuple) and all(isinstance(v, float) for v in arg):
            out.extend(v for v in arg if isinstance(v, float))
            continue
        raise ExpressionError(f"{name}() needs numbers, got {_describe(arg)}")
    if not out:
        empty = "vector" if any(isinstance(a, Vector) for a in args) else "list"
        raise ExpressionError(f"{name}() of an empty {empty}")
    return out


def _fsum(values: Sequence[float]) -> float:
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):  # inf + -inf, or an intermediate overflow
        return sum(values, 0.0)


def _test(arg: Value, fn: Callable[[float], bool], name: str) -> Value:
    items = _num_items(arg, f"{name}()")
    if isinstance(items, tuple):
        return Vector(tuple(fn(v) for v in items), boolean=True)
    return fn(items)


_FLOAT_TEXT: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)|nan",
    re.IGNORECASE,
)


def _as_int(arg: Value) -> float:
    if isinstance(arg, float):
        if not math.isfinite(arg) or abs(arg) >= 2.0**63:
            raise ExpressionError(f"asInt() of {_fmt(arg)}: not a whole number in range")
        return float(math.trunc(arg))
    if isinstance(arg, str):
        if re.fullmatch(r"[+-]?[0-9]+", arg) is None:
            raise ExpressionError(f"asInt() of {arg!r}: not a whole number")
        number = int(arg)
        if not -(2**63) <= number < 2**63:
            raise ExpressionError(f"asInt() of {arg!r}: out of range")
        return float(number)
    raise ExpressionError(f"asInt() needs a number or a string, got {_describe(arg)}")


def _as_float(arg: Value) -> float:
    if isinstance(arg, float):
        return arg
    if isinstance(arg, str):
        if _FLOAT_TEXT.fullmatch(arg) is None:
            raise ExpressionError(f"asFloat() of {arg!r}: not a number")
        number = float(arg)
        if math.isinf(number) and "inf" not in arg.lower():
            raise ExpressionError(f"asFloat() of {arg!r}: out of range")
        return number
    raise ExpressionError(f"asFloat() needs a number or a string, got {_describe(arg)}")


def _call(name: str, args: list[Value], env: _Env) -> Value:  # noqa: PLR0912 - one case per function
    arg = args[0]
    if name == "len":
        if isinstance(arg, tuple | Vector | Mapping | str):
            return float(len(arg))
        if env.series and isinstance(arg, float):
            return 1.0
        raise ExpressionError(f"len() needs a list, a map or a string, got {_describe(arg)}")
    if name in ("isNaN", "isnan"):
        return _test(arg, math.isnan, name)
    if name in ("isInf", "isinf"):
        return _test(arg, math.isinf, name)
    if name == "abs":
        nums = _num_items(arg, "abs()")
        return Vector(tuple(map(abs, nums)), False) if isinstance(nums, tuple) else abs(nums)
    if name == "isNil":
        return arg is None
    if name == "default":
        return arg if arg is not None else args[1]
    if name == "asInt":
        return _as_int(arg)
    if name == "asFloat":
        return _as_float(arg)
    if name in ("all", "any", "count"):
        if isinstance(arg, bool):
            return float(arg) if name == "count" else arg
        flags = _flags(arg, env, name)
        if name == "count":
            return float(sum(flags))
        return all(flags) if name == "all" else any(flags)
    if name == "sum":
        if isinstance(arg, float):
            return arg
        return _fsum(_numbers([arg], "sum") if _items(arg, env, "sum()") else [])
    numbers = _numbers(args, name)
    if name == "min":
        return min(numbers)
    if name == "max":
        return max(numbers)
    if name == "mean":
        return _fsum(numbers) / len(numbers)
    return float(statistics.median(numbers))


def _flags(value: Value, env: _Env, name: str) -> list[bool]:
    items = _bool_items(value, f"{name}()") if isinstance(value, Vector) else None
    if isinstance(items, tuple):
        return list(items)
    out: list[bool] = []
    for item in _items(value, env, f"{name}()"):
        if not isinstance(item, bool):
            raise ExpressionError(f"{name}() needs true/false, got {_describe(item)}")
        out.append(item)
    return out


def _predicate(node: _Predicate, env: _Env) -> Value:
    items = _items(_interpret(node.collection, env), env, f"{node.name}()")

    def apply(item: Value) -> Value:
        env.steps += 1
        if env.steps > MAX_STEPS:
            raise ExpressionError(f"evaluation took more than {MAX_STEPS} predicate steps")
        env.items.append(item)
        try:
            return _interpret(node.body, env)
        finally:
            env.items.pop()

    def holds(item: Value) -> bool:
        out = apply(item)
        if not isinstance(out, bool):
            raise ExpressionError(
                f"the predicate of {node.name}() gives {_describe(out)} for the item "
                f"{_fmt(item)}, not true or false"
            )
        return out

    if node.name == "all":
        return all(holds(i) for i in items)
    if node.name == "any":
        return any(holds(i) for i in items)
    if node.name == "none":
        return not any(holds(i) for i in items)
    if node.name == "one":
        return sum(holds(i) for i in items) == 1
    if node.name == "count":
        return float(sum(holds(i) for i in items))
    if node.name == "filter":
        return tuple(i for i in items if holds(i))
    mapped = tuple(apply(i) for i in items)
    if node.name == "map":
        return mapped
    return _fsum(_numbers([mapped], "sum")) if mapped else 0.0
