"""JSON Patch (RFC 6902) applied to plain dicts, as the API server would apply it: the
router tests check the effect of the operations a router computes, not their text."""

from __future__ import annotations

from typing import Any

import jsonpatch


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``doc`` with ``ops`` applied; a failed ``test`` raises ValueError."""
    try:
        out = jsonpatch.apply_patch(doc, ops)
    except jsonpatch.JsonPatchTestFailed as failed:
        raise ValueError(f"test failed: {failed}") from failed
    assert isinstance(out, dict)
    return out
