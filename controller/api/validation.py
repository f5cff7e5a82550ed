"""Offline validation of Stepwise manifests: the same models and rules the controller uses.

:func:`validate_document` turns one parsed YAML document into a list of problems, each
naming the field (``spec.strategy.canary.steps[2].pause.duration``) the way the API
server does, so that ``stepwise lint`` and ``kubectl apply`` agree.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from controller.api.analysis import AnalysisTemplate, ClusterAnalysisTemplate
from controller.api.rollout import API_VERSION, Rollout

KINDS: dict[str, type[BaseModel]] = {
    "Rollout": Rollout,
    "AnalysisTemplate": AnalysisTemplate,
    "ClusterAnalysisTemplate": ClusterAnalysisTemplate,
}

# Parts of a pydantic error location that name a union member or a validator, not a field.
_TYPE_TAGS = {"int", "str", "float", "bool", "dict", "list", "none", "literal"}


@dataclass(frozen=True)
class Problem:
    """One reason a document is invalid."""

    kind: str
    name: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}: {self.field}: {self.reason}"


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("spec", "steps", 2, "pause")`` as ``spec.steps[2].pause``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in part or part.startswith("function-"):
            continue
        else:
            out += f".{part}" if out else part
    return out


def problems_of(error: ValidationError) -> list[tuple[str, str]]:
    """(field path, reason) pairs of a pydantic error, rules' field paths included."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "rule" and err.get("ctx", {}).get("field"):
            loc = (*loc, *str(err["ctx"]["field"]).split("."))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        pair = (field_path(loc) or "(object)", message)
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def is_stepwise(doc: Any) -> bool:
    """Whether a parsed document is one of our kinds."""
    return (
        isinstance(doc, dict)
        and doc.get("kind") in KINDS
        and str(doc.get("apiVersion", "")).startswith("stepwise.dev/")
    )


_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_ROLLOUT_NAME = 63
"""A Rollout's name is the ``stepwise.dev/rollout`` label value of its pods, so at most 63
characters (the CRD says so too)."""


def name_problems(kind: str, meta: Any) -> list[tuple[str, str]]:
    """What the API server would say of ``metadata.name``: required (unless generateName),
    a lowercase DNS subdomain of at most 253 characters, and 63 for a Rollout."""
    if not isinstance(meta, dict):
        return [("metadata", "must be an object")]
    name = meta.get("name")
    if name is None:
        return [] if meta.get("generateName") else [("metadata.name", "Required value")]
    if not isinstance(name, str) or not _SUBDOMAIN.fullmatch(name) or len(name) > 253:
        return [
            (
                "metadata.name",
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        ]
    if kind == "Rollout" and len(name) > MAX_ROLLOUT_NAME:
        return [
            (
                "metadata.name",
                f"Too long: may not be more than {MAX_ROLLOUT_NAME} bytes (it is the "
                "stepwise.dev/rollout label value of the Rollout's pods)",
            )
        ]
    return []


def validate_document(doc: dict[str, Any]) -> list[Problem]:
    """The problems of one Stepwise document (empty when it is valid)."""
    kind = str(doc.get("kind"))
    meta = doc.get("metadata") or {}
    name = str(meta.get("name", "(unnamed)")) if isinstance(meta, dict) else "(unnamed)"
    if doc.get("apiVersion") != API_VERSION:
        return [Problem(kind, name, "apiVersion", f"unsupported version; use {API_VERSION}")]
    problems = [Problem(kind, name, f, r) for f, r in name_problems(kind, meta)]
    try:
        # As the API server does: nulls are dropped (then defaulted), and types are strict
        # ("3" is no integer, 20.0 no integer, "yes" and 1 no boolean).
        wire = json.dumps(without_nulls(doc), default=_text)
        KINDS[kind].model_validate_json(wire, strict=True)
    except ValidationError as exc:
        problems += [Problem(kind, name, f, r) for f, r in problems_of(exc)]
    # A null is dropped, but not for a field the schema does not know: strict decoding
    # refuses ``creationTimestamp: null`` in a pod template's metadata (common in objects
    # serialised from Go), so lint looks for unknown fields with the nulls kept.
    seen = {(p.field, p.reason) for p in problems}
    for field, reason in _unknown_null_fields(kind, doc):
        if (field, reason) not in seen:
            problems.append(Problem(kind, name, field, reason))
    return problems


def _unknown_null_fields(kind: str, doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, "unknown field") of the null-valued fields the schema does not know."""
    try:
        KINDS[kind].model_validate_json(json.dumps(doc, default=_text), strict=True)
    except ValidationError as exc:
        return [
            (field_path(tuple(err["loc"])) or "(object)", "unknown field")
            for err in exc.errors(include_url=False)
            if err["type"] == "extra_forbidden" and err.get("input") is None
        ]
    return []


def without_nulls(value: Any) -> Any:
    """``value`` with every null field of an object removed, at any depth (the API server
    prunes them from a custom resource before it applies defaults)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def _text(value: Any) -> str:
    """YAML timestamps (and anything else JSON lacks) as the text the server would get."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)
