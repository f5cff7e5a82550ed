"""Argo Rollouts -> Stepwise: same kinds and field names, a new apiVersion.

Stepwise's Rollout, AnalysisTemplate and ClusterAnalysisTemplate keep Argo's field
names, so an object converts by its ``apiVersion`` (``argoproj.io/v1alpha1`` ->
``stepwise.dev/v1alpha1``). What Stepwise does not know (a field it has no equivalent
for, such as an ``experiment`` step or an ambassador router) is removed, one line each;
anything else that Stepwise refuses leaves the object out, one line per problem. Argo's
``status`` is not carried (the controller writes its own). Experiment, AnalysisRun and
other ``argoproj.io`` kinds have no equivalent and are dropped whole.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Final

from controller.api.rollout import API_VERSION
from controller.api.validation import validate_document
from controller.convert.common import Dropped, gate, name_of

ARGO_GROUP: Final = "argoproj.io"
CONVERTED_KINDS: Final = ("Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate")

_NO_EQUIVALENT: Final = {
    "Experiment": "Stepwise has no Experiment: run the versions as analysis steps of a Rollout",
    "AnalysisRun": "Stepwise keeps analysis runs in the Rollout's status, not as objects",
}

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    """``spec.steps[2].pause`` as ``["spec", "steps", 2, "pause"]``."""
    return [int(index) if index else key for key, index in _PART.findall(path)]


def _remove(doc: dict[str, Any], path: str) -> bool:
    """Delete the field at ``path`` from ``doc``; whether it was there."""
    parts = _parts(path)
    node: Any = doc
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = parts[-1] if parts else None
    if not (isinstance(node, dict) and last in node):
        return False
    del node[last]
    # An object left empty by the removal goes too (``trafficRouting: {}`` would name no
    # router); an emptied list item (a step) is left for :func:`_drop_emptied_steps`.
    while len(parts) > 1 and node == {} and isinstance(parts[-2], str):
        parts = parts[:-1]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[part]
        del parent[parts[-1]]
        node = parent
    return True


def _drop_emptied_steps(doc: dict[str, Any]) -> list[int]:
    """Remove the canary steps left empty by a removed field; their indexes."""
    canary = ((doc.get("spec") or {}).get("strategy") or {}).get("canary")
    if not isinstance(canary, dict) or not isinstance(canary.get("steps"), list):
        return []
    steps = canary["steps"]
    empty = [i for i, s in enumerate(steps) if isinstance(s, dict) and not s]
    canary["steps"] = [s for s in steps if not (isinstance(s, dict) and not s)]
    return empty


def convert_argo(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Dropped]]:
    """One Argo Rollouts object as Stepwise objects (none or one) and what was lost."""
    kind = str(doc.get("kind"))
    name = name_of(doc)
    if kind not in CONVERTED_KINDS:
        why = _NO_EQUIVALENT.get(kind, f"Stepwise has no equivalent of {kind}")
        return [], [Dropped(kind, name, "(object)", f"{why}; not converted")]
    out = copy.deepcopy(doc)
    out["apiVersion"] = API_VERSION
    lost: list[Dropped] = []
    out.pop("status", None)  # the controller writes its own; nothing the user wrote is lost
    # Remove, one at a time, the fields Stepwise does not know (a removal can reveal
    # nothing new, so this ends after at most one pass per unknown field).
    for _ in range(64):
        unknown = [p for p in validate_document(out) if p.reason == "unknown field"]
        removed = False
        for problem in unknown:
            if _remove(out, problem.field):
                removed = True
                lost.append(
                    Dropped(kind, name, problem.field, "Stepwise has no such field; removed")
                )
        if not removed:
            break
    for index in _drop_emptied_steps(out):
        lost.append(
            Dropped(
                kind,
                name,
                f"spec.strategy.canary.steps[{index}]",
                "the step is empty once its unknown field is removed; the step is removed "
                "(later step indexes move down by one)",
            )
        )
    kept, refused = gate([out], kind, name)
    return kept, lost + refused
