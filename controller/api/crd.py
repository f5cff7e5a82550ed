"""CustomResourceDefinitions generated from the API models.

pydantic's JSON schema is rewritten into a Kubernetes *structural* schema: references
inlined, ``Optional`` unwrapped, ``const`` turned into ``enum``, titles and null defaults
dropped, ``extra="allow"`` objects marked ``x-kubernetes-preserve-unknown-fields``. The
rules' CEL arrives through :meth:`ApiModel.__get_pydantic_json_schema__`.

``python -m controller.api.crd`` writes the YAML into ``deploy/crds`` and the chart;
``tests/unit/test_crd_generation.py`` fails when the committed files drift from the models.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from controller.api.analysis import AnalysisTemplateSpec
from controller.api.base import ApiModel
from controller.api.rollout import GROUP, VERSION, RolloutSpec, RolloutStatus
from controller.api.validation import MAX_ROLLOUT_NAME

JsonDict = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
OUTPUT_DIRS = (REPO / "deploy" / "crds", REPO / "charts" / "stepwise" / "crds")


def structural(model: type[ApiModel]) -> JsonDict:
    """The structural OpenAPI v3 schema of ``model``."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _convert(schema, defs)


def _convert(node: JsonDict, defs: JsonDict) -> JsonDict:
    node = dict(node)
    base: JsonDict = {}
    if "$ref" in node:
        base = _convert(defs[node.pop("$ref").rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {options} structurally")
        base = _convert(options[0], defs)
    out: JsonDict = dict(base)
    for key, value in node.items():
        _convert_key(out, key, value, defs)
    if out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" in out:
        del out["additionalProperties"]
    if "properties" in out and "x-kubernetes-preserve-unknown-fields" not in out:
        out.setdefault("type", "object")
    return out


def _convert_key(out: JsonDict, key: str, value: Any, defs: JsonDict) -> None:
    if key == "title" or (key == "default" and value is None):
        return
    if key == "const":
        out["enum"] = [value]
    elif key == "properties":
        out["properties"] = {k: _convert(v, defs) for k, v in value.items()}
    elif key == "items":
        out["items"] = _convert(value, defs)
    elif key == "additionalProperties":
        if isinstance(value, dict) and value:
            out["additionalProperties"] = _convert(value, defs)
        elif value is True or value == {}:
            out["x-kubernetes-preserve-unknown-fields"] = True
        # additionalProperties: false (extra="forbid") has no structural form: the
        # server prunes unknown fields instead, and lint rejects them.
    elif key == "x-kubernetes-validations":
        out[key] = [*out.get(key, []), *value]
    else:
        out[key] = value


def _top_level(
    description: str, spec: JsonDict, status: JsonDict | None, *, max_name: int | None = None
) -> JsonDict:
    metadata: JsonDict = {"type": "object"}
    if max_name is not None:
        metadata["properties"] = {"name": {"type": "string", "maxLength": max_name}}
    properties: JsonDict = {
        "apiVersion": {"type": "string", "description": "The API version: stepwise.dev/v1alpha1."},
        "kind": {"type": "string", "description": "The kind of the object."},
        "metadata": metadata,
        "spec": spec,
    }
    if status is not None:
        properties["status"] = status
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": properties,
    }


def _crd(
    *,
    kind: str,
    plural: str,
    scope: str,
    short_names: list[str],
    schema: JsonDict,
    subresources: JsonDict | None = None,
    columns: list[JsonDict] | None = None,
) -> JsonDict:
    version: JsonDict = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    if subresources:
        version["subresources"] = subresources
    if columns:
        version["additionalPrinterColumns"] = columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "stepwise"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["stepwise"],
            },
            "versions": [version],
        },
    }


def rollout_crd() -> JsonDict:
    """The Rollout CRD: status and scale subresources, printer columns."""
    status = structural(RolloutStatus)
    return _crd(
        kind="Rollout",
        plural="rollouts",
        scope="Namespaced",
        short_names=["swro"],
        schema=_top_level(
            "A Rollout: a Deployment whose new revisions roll out as a judged canary.",
            structural(RolloutSpec),
            status,
            # The name is the stepwise.dev/rollout label value of its pods and ReplicaSets,
            # and a label value holds at most 63 characters.
            max_name=MAX_ROLLOUT_NAME,
        ),
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        columns=[
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Step", "type": "integer", "jsonPath": ".status.currentStepIndex"},
            {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
            {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
            {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
            {"name": "Waiting", "type": "string", "jsonPath": ".status.waitReason"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def analysis_template_crd(*, cluster: bool) -> JsonDict:
    """The AnalysisTemplate CRD, or with ``cluster`` the ClusterAnalysisTemplate CRD."""
    kind = "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate"
    return _crd(
        kind=kind,
        plural=f"{kind.lower()}s",
        scope="Cluster" if cluster else "Namespaced",
        short_names=["cat"] if cluster else ["at"],
        schema=_top_level(
            "Metrics that judge a canary"
            + (", usable by Rollouts in any namespace." if cluster else "."),
            structural(AnalysisTemplateSpec),
            None,
        ),
        columns=[{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
    )


def all_crds() -> list[JsonDict]:
    """Every Stepwise CRD."""
    return [
        rollout_crd(),
        analysis_template_crd(cluster=False),
        analysis_template_crd(cluster=True),
    ]


def render(crd: JsonDict) -> str:
    """One CRD as YAML, with a header saying it is generated."""
    header = "# Generated from controller/api by `make crds`; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def expected_files() -> dict[Path, str]:
    """The files ``make crds`` writes, with their contents."""
    files: dict[Path, str] = {}
    for crd in all_crds():
        text = render(crd)
        for directory in OUTPUT_DIRS:
            files[directory / f"{crd['metadata']['name']}.yaml"] = text
    return files


def main() -> int:
    """Write the CRD files."""
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
