"""The CRD YAML committed in deploy/ and the chart is exactly what the models generate."""

from __future__ import annotations

from typing import Any

from controller.api.crd import all_crds, expected_files, structural
from controller.api.rollout import RolloutSpec


def test_committed_crds_match_the_models() -> None:
    """Regenerating the CRDs changes nothing (run `make crds` after changing a model)."""
    stale = [
        str(path)
        for path, text in expected_files().items()
        if not path.exists() or path.read_text() != text
    ]
    assert stale == [], f"out of date, run `make crds`: {stale}"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties", "additionalProperties"):
            child = node.get(key)
            if isinstance(child, dict) and key == "properties":
                for name, sub in child.items():
                    out.extend(_walk(sub, f"{path}.{name}"))
            elif isinstance(child, dict):
                out.extend(_walk(child, f"{path}.*"))
        if isinstance(node.get("items"), dict):
            out.extend(_walk(node["items"], f"{path}[]"))
    return out


def test_schemas_are_structural() -> None:
    """Every node has a type (or is int-or-string / preserves unknown fields), and no
    reference, union or title survives."""
    for crd in all_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "$ref" not in node, path
            assert "anyOf" not in node, path
            assert "title" not in node, path
            assert (
                "type" in node
                or node.get("x-kubernetes-int-or-string")
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), f"{crd['metadata']['name']}{path} has no type"


def test_every_spec_field_has_a_description() -> None:
    """`kubectl explain` has something to say about every field of the Rollout spec."""
    missing = [
        path
        for path, node in _walk(structural(RolloutSpec))
        if path
        and not path.endswith(".*")
        and not path.endswith("[]")
        and "description" not in node
    ]
    assert missing == []
