"""The revision of a pod template: a short, stable hash of its canonical JSON.

Like Kubernetes' ``pod-template-hash``, it names the ReplicaSet of a revision and pins
Service selectors to it. It is computed from the Rollout's template as written (keys
sorted, no whitespace), so the same template always gives the same revision, and
re-applying an old template gives the old revision back.
"""

from __future__ import annotations

import json
from typing import Any

from controller.api.rollout import PodTemplate

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
# No vowels, so a hash never spells a word; digits that look like letters are left out.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash."""
    h = _FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def encode(value: int) -> str:
    """A 32-bit number in the hash alphabet (at most 7 characters)."""
    out = ""
    while True:
        value, digit = divmod(value, len(_ALPHABET))
        out = _ALPHABET[digit] + out
        if value == 0:
            return out


def template_hash(template: PodTemplate | dict[str, Any]) -> str:
    """The revision of a pod template."""
    wire = template.wire() if isinstance(template, PodTemplate) else template
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return encode(fnv1a_32(canonical.encode()))
