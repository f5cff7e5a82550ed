"""Small value types shared by the Stepwise resources: durations, int-or-percent,
label selectors, object references and standard conditions."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from controller.api.base import DURATION_PATTERN, ApiModel, parse_duration

#: Kubernetes names: DNS-1123 subdomain (most objects) and DNS-1035 label (Services).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

LabelValue = Annotated[str, Field(max_length=63)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
ServiceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


def _check_duration(value: str | int) -> str | int:
    parse_duration(value)
    return value


_DURATION_CEL = f"type(self) == int ? int(self) >= 0 : string(self).matches('{DURATION_PATTERN}')"

#: A duration: integer seconds or ``30s``, ``5m``, ``1h``, ``1m30s``.
Duration = Annotated[
    int | str,
    AfterValidator(_check_duration),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 32,
            "x-kubernetes-validations": [
                {
                    "rule": _DURATION_CEL,
                    "message": "must be an integer of seconds or a number with a unit "
                    "ms, s, m or h (30s, 5m, 1h, 1m30s)",
                }
            ],
        }
    ),
]

_PERCENT = re.compile(r"^[0-9]+%$")


def _check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, bool):
        raise ValueError("must be an integer or a percentage like 25%")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not _PERCENT.match(value) or int(value[:-1]) > 100:
        raise ValueError(f"{value!r} is not an integer or a percentage from 0% to 100%")
    return value


#: An absolute number or a percentage (``25%``), as Kubernetes' maxSurge.
IntOrPercent = Annotated[
    int | str,
    AfterValidator(_check_int_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 4,
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? int(self) >= 0 : "
                    "string(self).matches('^[0-9]+%$') && "
                    "int(string(self).replace('%', '')) <= 100",
                    "message": "must be a non-negative integer or a percentage from 0% to 100%",
                }
            ],
        }
    ),
]


def resolve_int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """An absolute count from an int-or-percent against ``total`` (Kubernetes semantics:
    surge rounds up, unavailability rounds down)."""
    if isinstance(value, int):
        return value
    percent = int(value[:-1])
    scaled = percent * total
    return -(-scaled // 100) if round_up else scaled // 100


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector."""

    key: str
    """The label key that the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] | None = None
    """The values, for In and NotIn."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector."""

    match_labels: (
        Annotated[dict[str, LabelValue], Field(json_schema_extra={"maxProperties": 16})] | None
    ) = None
    """Labels that a pod must carry, each with exactly this value."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Further requirements, all of which must hold."""

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether ``labels`` satisfy this selector."""
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions or []:
            present = req.key in labels
            values = req.values or []
            if req.operator == "In" and (not present or labels[req.key] not in values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True

    def to_query(self) -> str:
        """The selector as a ``labelSelector`` query string."""
        parts = [f"{k}={v}" for k, v in sorted((self.match_labels or {}).items())]
        for req in self.match_expressions or []:
            if req.operator in ("In", "NotIn"):
                parts.append(f"{req.key} {req.operator.lower()} ({','.join(req.values or [])})")
            elif req.operator == "Exists":
                parts.append(req.key)
            else:
                parts.append(f"!{req.key}")
        return ",".join(parts)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A standard Kubernetes condition (usable with ``kubectl wait --for=condition=``)."""

    type: str
    """The condition's type, for example Progressing, Healthy, Paused, InvalidSpec."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str
    """A CamelCase word saying why, for machines."""
    message: str = ""
    """A sentence saying why, for people."""
    last_transition_time: dt.datetime
    """When ``status`` last changed (kept when only the message changes)."""
    observed_generation: int | None = None
    """The spec generation this condition was computed from."""


def condition_list_schema() -> dict[str, Any]:
    """Conditions are a map keyed by type on the server too."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
