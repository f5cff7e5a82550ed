"""Offline validation of Stepwise manifests: the same models and rules the controller uses.

:func:`validate_document` turns one parsed YAML document into a list of problems, each
naming the field (``spec.strategy.canary.steps[2].pause.duration``) the way the API
server does, so that ``stepwise lint`` and ``kubectl apply`` agree.
"""

from __future__ import annotations

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


def validate_document(doc: dict[str, Any]) -> list[Problem]:
    """The problems of one Stepwise document (empty when it is valid)."""
    kind = str(doc.get("kind"))
    meta = doc.get("metadata") or {}
    name = str(meta.get("name", "(unnamed)")) if isinstance(meta, dict) else "(unnamed)"
    if doc.get("apiVersion") != API_VERSION:
        return [Problem(kind, name, "apiVersion", f"unsupported version; use {API_VERSION}")]
    try:
        KINDS[kind].model_validate(doc)
    except ValidationError as exc:
        return [Problem(kind, name, f, r) for f, r in problems_of(exc)]
    return []
