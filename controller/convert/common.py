"""What every converter shares: the dropped-line record, the result, the options, and the
last gate (each Stepwise object through :func:`validate_document`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from controller.api.analysis import AnalysisTemplateSpec
from controller.api.validation import is_stepwise, validate_document
from controller.core import analysis as an


@dataclass(frozen=True)
class Dropped:
    """One thing that did not carry over: the peer object, its field, and why."""

    kind: str
    """The peer object's kind (``Canary``, ``Rollout``, ...)."""
    name: str
    """The peer object's name."""
    field: str
    """The field (``spec.analysis.webhooks[0]``), or ``(object)`` for all of it."""
    why: str
    """What happened to it and what the user can do."""
    source: str = ""
    """The input file (set by :func:`controller.convert.convert`)."""

    def at(self, source: str) -> Dropped:
        """The same line, for the input file ``source``."""
        return dataclasses.replace(self, source=source)

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.kind}/{self.name}: {self.field}: {self.why}"


@dataclass(frozen=True)
class Conversion:
    """The result of a run: per input file its output documents, and what was dropped."""

    outputs: dict[str, list[dict[str, Any]]]
    """Input file -> the documents that replace its own (in order)."""
    dropped: list[Dropped] = field(default_factory=list)
    """One entry per thing not carried over, in input order."""


@dataclass(frozen=True)
class Options:
    """How to fill in what a peer object leaves to its controller's installation."""

    flagger_provider: str = "istio"
    """The mesh provider of a Canary without ``spec.provider`` (Flagger's own default is
    its ``-mesh-provider`` flag, ``istio`` unless the installation set another)."""


def name_of(doc: dict[str, Any]) -> str:
    """``metadata.name`` of a parsed document, or ``(unnamed)``."""
    meta = doc.get("metadata")
    if isinstance(meta, dict) and meta.get("name"):
        return str(meta["name"])
    return "(unnamed)"


def gate(
    made: list[dict[str, Any]], kind: str, name: str
) -> tuple[list[dict[str, Any]], list[Dropped]]:
    """Run each Stepwise object of ``made`` through the offline validation; one that
    Stepwise refuses is left out, with one line per problem (named after the peer object
    ``kind``/``name`` it came from). Other objects pass."""
    kept: list[dict[str, Any]] = []
    lost: list[Dropped] = []
    for doc in made:
        if not is_stepwise(doc):
            kept.append(doc)
            continue
        problems = [(p.field, p.reason) for p in validate_document(doc)]
        if not problems and doc.get("kind") != "Rollout":
            spec = AnalysisTemplateSpec.model_validate(doc["spec"])
            problems = an.condition_problems(spec)
        if not problems:
            kept.append(doc)
            continue
        for where, reason in problems:
            lost.append(
                Dropped(
                    kind,
                    name,
                    where,
                    f"Stepwise refuses the converted {doc['kind']}/{name_of(doc)}: {reason}; "
                    "it is not written",
                )
            )
    return kept, lost


_NOT_NAME = re.compile(r"[^a-z0-9-]+")


def dns_label(text: str) -> str:
    """``text`` as a lowercase name of letters, digits and dashes (at most 63)."""
    out = _NOT_NAME.sub("-", text.lower()).strip("-")
    return out[:63].rstrip("-") or "x"
