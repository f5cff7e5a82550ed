"""The base of every Stepwise API model, and cross-field rules declared once, checked twice.

Models are pydantic v2, camelCase on the wire, one docstring per field (the docstrings
become the CRD descriptions that ``kubectl explain`` shows). A cross-field check is a
:class:`Rule`: a CEL expression that the API server evaluates (it goes into the CRD's
``x-kubernetes-validations``) and the same predicate in Python, which ``stepwise lint``
and the controller evaluate. ``tests/integration/test_crd_validation.py`` feeds the same
invalid objects to both and requires the same verdict, so the two cannot drift apart
unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError


@dataclass(frozen=True)
class Rule:
    """A cross-field validation of one object.

    ``cel`` runs on the API server with ``self`` bound to the object's wire form (None
    where the schema itself enforces the rule, as list map keys reject duplicates);
    ``check`` receives the parsed model. ``field`` is the path relative to the object
    that the error names (a CEL ``fieldPath``, for example ``.steps``).
    """

    cel: str | None
    message: str
    check: Callable[[Any], bool]
    field: str = ""

    def cel_validation(self) -> dict[str, str] | None:
        """The ``x-kubernetes-validations`` entry for this rule, if it has one."""
        if self.cel is None:
            return None
        entry = {"rule": self.cel, "message": self.message}
        if self.field:
            entry["fieldPath"] = self.field
        return entry


def exactly_one(*wire_names: str, subject: str = "", message: str = "") -> Rule:
    """A rule that exactly one of these fields (by their wire names) is set. Its message
    is ``message``, or else "``subject`` takes exactly one of" the names."""
    message = message or f"{subject} takes exactly one of {', '.join(wire_names)}"
    has = ", ".join(f"has(self.{name})" for name in wire_names)

    def check(model: Any) -> bool:
        by_wire = {field.alias or name: name for name, field in type(model).model_fields.items()}
        return [getattr(model, by_wire[name]) for name in wire_names].count(None) == len(
            wire_names
        ) - 1

    return Rule(cel=f"[{has}].exists_one(x, x)", message=message, check=check)


class ApiModel(BaseModel):
    """Base of all API models: camelCase aliases, unknown fields rejected, docstrings as
    descriptions, and :class:`Rule` checks after field validation."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )

    #: Cross-field rules of this object (also emitted into the CRD schema).
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if not rule.check(self):
                raise PydanticCustomError(
                    "rule",
                    "{message}",
                    {"message": rule.message, "field": rule.field.lstrip(".")},
                )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Attach the CEL side of this model's rules to its schema."""
        schema = handler(core_schema)
        validations = [v for r in cls.rules if (v := r.cel_validation()) is not None]
        if validations:
            target = handler.resolve_ref_schema(schema)
            target.setdefault("x-kubernetes-validations", []).extend(validations)
        return schema

    def wire(self) -> dict[str, Any]:
        """The object as it is sent to the API server (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- durations -------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int) -> float:
    """Seconds in a duration: an integer of seconds, or Go-style ``30s``, ``5m``, ``1h30m``.

    Raises ``ValueError`` naming the accepted forms for anything else.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is an integer of seconds or a string like 30s, 5m or 1h")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a duration: use an integer of seconds or a number with a "
            "unit ms, s, m or h (30s, 5m, 1h, 1m30s)"
        )
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
