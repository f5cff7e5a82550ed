"""A small, safe language for ``successCondition`` and ``failureCondition``.

Where it sits: :mod:`controller.core.measurement` parses a metric's condition with
:func:`parse` and evaluates it on the values a query returned. The text comes from an
AnalysisTemplate, that is from users, so it is never given to ``eval`` or ``compile``:
it is parsed with :func:`ast.parse` (which only builds a syntax tree) and every node is
checked against the whitelist below and turned into a tiny tree of our own, which
:meth:`Condition.evaluate` interprets. Anything else is rejected with an
:class:`ExpressionError` that says what is not allowed and where.

The language
------------

=====================================  ===================================================
form                                   meaning
=====================================  ===================================================
``result``                             the measured value: a number when the query gave
                                       one value, a vector when it gave several series
``0.99``, ``1e3``, ``5``               numbers (always floats); ``true``/``false`` or
                                       ``True``/``False``
``< <= > >= == !=``                    comparisons, chained as in ``0.1 < result < 0.5``
``+ - * /``, unary ``-`` ``+``         arithmetic with IEEE rules (``x / 0`` is ±Inf or
                                       NaN, never an error)
``and``, ``or``, ``not``, ``( )``      logic on true/false
``len(result)``                        number of series (1 for a single value)
``result[i]``                          the i-th series (by sorted label set; negative
                                       indices count from the end)
``isnan(x)``, ``isinf(x)``, ``abs(x)``  as in :mod:`math`
``all(x)``, ``any(x)``                 reduce a vector of true/false to one
``min(x)``, ``max(x)``, ``sum(x)``     reduce a vector of numbers to one
=====================================  ===================================================

Vectors broadcast like NumPy: ``result >= 0.99`` on three series is a vector of three
true/false values, and ``and``/``or``/``not`` work element by element. The verdict of a
condition that ends as a vector is decided by the caller: :mod:`~controller.core.measurement`
requires *every* element of a success condition and *any* element of a failure
condition (each series must pass). ``and``/``or`` short-circuit on single true/false
values, so ``len(result) > 1 and result[1] > 0.5`` never indexes past the end.

Limits: at most 1024 characters and 200 syntax nodes; deeper nesting is rejected.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias, TypeVar

MAX_LENGTH: Final = 1024
MAX_NODES: Final = 200

_T = TypeVar("_T", float, bool)


class ExpressionError(ValueError):
    """A condition that is not in the language, or that cannot be evaluated on a value."""


@dataclass(frozen=True)
class Vector:
    """Several values, numbers or true/false, one per series."""

    items: tuple[float, ...] | tuple[bool, ...]
    boolean: bool

    def __len__(self) -> int:
        return len(self.items)


Value: TypeAlias = float | bool | Vector


# -- the tree we interpret -------------------------------------------------------------


@dataclass(frozen=True)
class _Num:
    value: float


@dataclass(frozen=True)
class _Bool:
    value: bool


@dataclass(frozen=True)
class _Result:
    pass


@dataclass(frozen=True)
class _Neg:
    operand: _Node


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _Arith:
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Compare:
    ops: tuple[str, ...]
    operands: tuple[_Node, ...]


@dataclass(frozen=True)
class _Logic:
    op: str  # "and" | "or"
    operands: tuple[_Node, ...]


@dataclass(frozen=True)
class _Call:
    name: str
    arg: _Node


@dataclass(frozen=True)
class _Index:
    value: _Node
    index: int


_Node: TypeAlias = (
    _Num | _Bool | _Result | _Neg | _Not | _Arith | _Compare | _Logic | _Call | _Index
)

_ARITH: Final[dict[type[ast.operator], str]] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
}
_COMPARE: Final[dict[type[ast.cmpop], str]] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}
_FUNCTIONS: Final = frozenset({"len", "isnan", "isinf", "abs", "all", "any", "min", "max", "sum"})
_CONSTANTS: Final = {"true": True, "false": False}
_SYNTAX_NAMES: Final = {
    "Attribute": "attribute access",
    "Lambda": "a lambda",
    "List": "a list",
    "Tuple": "a tuple",
    "Set": "a set",
    "Dict": "a dict",
    "IfExp": "an if-expression",
    "NamedExpr": "an assignment",
    "ListComp": "a comprehension",
    "SetComp": "a comprehension",
    "DictComp": "a comprehension",
    "GeneratorExp": "a generator",
    "JoinedStr": "an f-string",
    "Await": "await",
    "Yield": "yield",
    "YieldFrom": "yield",
    "Starred": "a starred expression",
    "Slice": "a slice",
}


@dataclass(frozen=True)
class Condition:
    """A parsed condition; :meth:`evaluate` it on a measured value."""

    text: str
    _root: _Node

    def evaluate(self, result: float | Sequence[float]) -> bool | tuple[bool, ...]:
        """The condition's value for ``result`` (one number, or one per series).

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
        out = _interpret(self._root, bound)
        if isinstance(out, bool):
            return out
        if isinstance(out, Vector) and out.boolean:
            return tuple(bool(v) for v in out.items)
        raise ExpressionError(
            f"condition {self.text!r} gives a number, not true or false "
            "(compare it, for example result >= 0.99)"
        )


@functools.lru_cache(maxsize=512)
def parse(text: str) -> Condition:
    """Parse a condition; raises :class:`ExpressionError` for anything outside the language."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"condition is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ExpressionError("condition is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"condition {text!r} is not valid{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"condition {text!r} cannot be parsed: {exc}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise ExpressionError(f"condition has {count} syntax nodes, more than {MAX_NODES}")
    return Condition(text, _convert(tree.body, text))


def check(text: str) -> str | None:
    """The reason ``text`` is not a valid condition, or None (for ``stepwise lint``)."""
    try:
        parse(text)
    except ExpressionError as exc:
        return str(exc)
    return None


def _reject(node: ast.AST, what: str, text: str) -> ExpressionError:
    col = getattr(node, "col_offset", None)
    where = f" at column {col + 1}" if isinstance(col, int) else ""
    return ExpressionError(
        f"{what} is not allowed in a condition{where} ({text!r}); allowed: result, numbers, "
        "comparisons, and/or/not, + - * /, len, isnan, isinf, abs, all, any, min, max, "
        "sum, result[i]"
    )


def _convert(node: ast.AST, text: str) -> _Node:  # noqa: PLR0912 - one case per node kind
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return _Bool(node.value)
        if isinstance(node.value, int | float):
            return _Num(float(node.value))
        raise _reject(node, f"the constant {node.value!r}", text)
    if isinstance(node, ast.Name):
        if node.id == "result":
            return _Result()
        if node.id in _CONSTANTS:
            return _Bool(_CONSTANTS[node.id])
        raise _reject(node, f"the name {node.id!r}", text)
    if isinstance(node, ast.UnaryOp):
        operand = _convert(node.operand, text)
        if isinstance(node.op, ast.USub):
            return _Neg(operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            return _Not(operand)
        raise _reject(node, f"the operator {type(node.op).__name__}", text)
    if isinstance(node, ast.BinOp):
        op = _ARITH.get(type(node.op))
        if op is None:
            raise _reject(node, f"the operator {type(node.op).__name__}", text)
        return _Arith(op, _convert(node.left, text), _convert(node.right, text))
    if isinstance(node, ast.BoolOp):
        logic = "and" if isinstance(node.op, ast.And) else "or"
        return _Logic(logic, tuple(_convert(v, text) for v in node.values))
    if isinstance(node, ast.Compare):
        ops = []
        for cmp in node.ops:
            symbol = _COMPARE.get(type(cmp))
            if symbol is None:
                raise _reject(node, f"the comparison {type(cmp).__name__}", text)
            ops.append(symbol)
        operands = (node.left, *node.comparators)
        return _Compare(tuple(ops), tuple(_convert(o, text) for o in operands))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise _reject(node, f"calling {name}()", text)
        if len(node.args) != 1 or node.keywords:
            raise ExpressionError(f"{node.func.id}() takes exactly one argument ({text!r})")
        if isinstance(node.args[0], ast.Starred):
            raise _reject(node.args[0], "a starred argument", text)
        return _Call(node.func.id, _convert(node.args[0], text))
    if isinstance(node, ast.Subscript):
        return _Index(_convert(node.value, text), _index(node.slice, text))
    raise _reject(node, _SYNTAX_NAMES.get(type(node).__name__, type(node).__name__), text)


def _index(node: ast.AST, text: str) -> int:
    negative = False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        negative, node = True, node.operand
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    ):
        return -node.value if negative else node.value
    raise _reject(node, "an index that is not a whole number", text)


# -- evaluation ------------------------------------------------------------------------


def _interpret(node: _Node, result: Value) -> Value:
    if isinstance(node, _Num | _Bool):
        return node.value
    if isinstance(node, _Result):
        return result
    if isinstance(node, _Neg):
        return _map_num(_interpret(node.operand, result), operator.neg, "-")
    if isinstance(node, _Not):
        return _map_bool(_interpret(node.operand, result), operator.not_, "not")
    if isinstance(node, _Arith):
        return _zip_num(
            _interpret(node.left, result),
            _interpret(node.right, result),
            _ARITH_FN[node.op],
            node.op,
        )
    if isinstance(node, _Compare):
        return _compare(node, result)
    if isinstance(node, _Logic):
        return _logic(node, result)
    if isinstance(node, _Call):
        return _call(node.name, _interpret(node.arg, result))
    return _subscript(_interpret(node.value, result), node.index)


def _divide(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


_ARITH_FN: Final[dict[str, Callable[[float, float], float]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
}
_COMPARE_FN: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _describe(value: Value) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, float):
        return "a number"
    return f"a vector of {'true/false' if value.boolean else 'numbers'}"


def _num_items(value: Value, what: str) -> tuple[float, ...] | float:
    if isinstance(value, bool) or (isinstance(value, Vector) and value.boolean):
        raise ExpressionError(f"{what} needs numbers, got {_describe(value)}")
    if isinstance(value, Vector):
        return tuple(float(v) for v in value.items)
    return value


def _bool_items(value: Value, what: str) -> tuple[bool, ...] | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, Vector) and value.boolean:
        return tuple(bool(v) for v in value.items)
    raise ExpressionError(f"{what} needs true/false, got {_describe(value)}")


def _map_num(value: Value, fn: Callable[[float], float], what: str) -> Value:
    items = _num_items(value, what)
    if isinstance(items, tuple):
        return Vector(tuple(fn(v) for v in items), boolean=False)
    return fn(items)


def _map_bool(value: Value, fn: Callable[[bool], bool], what: str) -> Value:
    items = _bool_items(value, what)
    if isinstance(items, tuple):
        return Vector(tuple(fn(v) for v in items), boolean=True)
    return fn(items)


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


def _compare(node: _Compare, result: Value) -> Value:
    values = [_interpret(o, result) for o in node.operands]
    out: Value | None = None
    for op, left, right in zip(node.ops, values, values[1:], strict=False):
        a, b = _num_items(left, op), _num_items(right, op)
        fn = _COMPARE_FN[op]
        step: Value
        if not isinstance(a, tuple) and not isinstance(b, tuple):
            step = fn(a, b)
        else:
            step = Vector(tuple(fn(x, y) for x, y in _pairs(a, b, op)), boolean=True)
        out = step if out is None else _zip_bool(out, step, operator.and_, "and")
    if out is None:  # pragma: no cover - ast.Compare has at least one operator
        raise ExpressionError("empty comparison")
    return out


def _zip_bool(left: Value, right: Value, fn: Callable[[bool, bool], bool], what: str) -> Value:
    a, b = _bool_items(left, what), _bool_items(right, what)
    if not isinstance(a, tuple) and not isinstance(b, tuple):
        return fn(a, b)
    return Vector(tuple(fn(x, y) for x, y in _pairs(a, b, what)), boolean=True)


def _logic(node: _Logic, result: Value) -> Value:
    fn: Callable[[bool, bool], bool] = operator.and_ if node.op == "and" else operator.or_
    acc = _interpret(node.operands[0], result)
    _bool_items(acc, node.op)
    for operand in node.operands[1:]:
        if isinstance(acc, bool) and acc is (node.op == "or"):
            return acc  # short-circuit: true or ..., false and ...
        acc = _zip_bool(acc, _interpret(operand, result), fn, node.op)
    return acc


def _call(name: str, arg: Value) -> Value:
    if name == "len":
        return float(len(arg)) if isinstance(arg, Vector) else 1.0
    if name == "isnan":
        return _test(arg, math.isnan, name)
    if name == "isinf":
        return _test(arg, math.isinf, name)
    if name == "abs":
        return _map_num(arg, abs, name)
    if name in ("all", "any"):
        items = _bool_items(arg, f"{name}()")
        if isinstance(items, bool):
            return items
        return all(items) if name == "all" else any(items)
    items_num = _num_items(arg, f"{name}()")
    if isinstance(items_num, float):
        return items_num
    if not items_num:
        raise ExpressionError(f"{name}() of an empty vector")
    reducer: dict[str, Callable[[tuple[float, ...]], float]] = {
        "min": min,
        "max": max,
        "sum": math.fsum,
    }
    return reducer[name](items_num)


def _test(arg: Value, fn: Callable[[float], bool], name: str) -> Value:
    items = _num_items(arg, f"{name}()")
    if isinstance(items, tuple):
        return Vector(tuple(fn(v) for v in items), boolean=True)
    return fn(items)


def _subscript(value: Value, index: int) -> Value:
    if isinstance(value, bool):
        raise ExpressionError("cannot index true/false")
    items: Sequence[float | bool] = value.items if isinstance(value, Vector) else (value,)
    if not -len(items) <= index < len(items):
        raise ExpressionError(
            f"index {index} is out of range: the query returned {len(items)} series"
        )
    return items[index]
