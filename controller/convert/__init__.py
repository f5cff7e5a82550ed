"""``stepwise convert``: Stepwise manifests from a peer's (Argo Rollouts, Flagger).

Pure translation, no I/O: :func:`convert` takes every input file's parsed YAML documents
(all files at once, since a Flagger Canary needs its MetricTemplates and Deployment, which
may live in other files) and returns, per file, the documents to write and, for the whole
run, one :class:`Dropped` line per thing that did not carry over. The CLI
(:mod:`controller.cli.convert`) reads and writes the files around it.

Where it sits::

    cli.convert: files ─▶ yaml ─▶ convert() here ─▶ argo.convert_argo() / flagger.convert_canary()
        ─▶ api.validation.validate_document() on every Stepwise object ─▶ YAML out, lines on stderr
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller.convert.argo import ARGO_GROUP, convert_argo
from controller.convert.common import Conversion, Dropped, Options
from controller.convert.flagger import FLAGGER_GROUP, Inventory, convert_flagger

__all__ = ["Conversion", "Dropped", "Options", "convert", "is_peer"]


def is_peer(doc: Any) -> bool:
    """Whether a parsed document is an Argo Rollouts or Flagger object."""
    if not isinstance(doc, dict):
        return False
    group = str(doc.get("apiVersion", "")).split("/", 1)[0]
    return group in (ARGO_GROUP, FLAGGER_GROUP)


def convert(files: Mapping[str, Sequence[Any]], options: Options | None = None) -> Conversion:
    """Convert every file's documents. Objects of neither peer pass through unchanged;
    each peer object becomes zero or more Stepwise objects (and the Services or routes
    the peer would have generated), in the place of the original in its file."""
    opts = options or Options()
    inventory = Inventory.of([doc for docs in files.values() for doc in docs])
    outputs: dict[str, list[dict[str, Any]]] = {}
    dropped: list[Dropped] = []
    for source, docs in files.items():
        out: list[dict[str, Any]] = []
        for doc in docs:
            if doc is None:
                continue
            if not is_peer(doc):
                out.append(doc)
                continue
            group = str(doc.get("apiVersion", "")).split("/", 1)[0]
            if group == ARGO_GROUP:
                made, lost = convert_argo(doc)
            else:
                made, lost = convert_flagger(doc, inventory, opts)
            out.extend(made)
            dropped.extend(d.at(source) for d in lost)
        outputs[source] = out
    return Conversion(outputs=outputs, dropped=dropped)
