"""Release records (``status.releases`` entries) for the tests of ``stepwise report``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.api.rollout import Release


def release_record(
    started: dt.datetime,
    outcome: str | None,
    *,
    revision: str,
    changed_before: dt.timedelta,
    ended_after: dt.timedelta,
    **fields: Any,
) -> Release:
    """A release of the image registry.local/app:v2 that started at ``started`` (its
    template changed by kubectl ``changed_before`` that) and, if it has an ``outcome``,
    ended ``ended_after`` it; ``fields`` are further fields of the record, as on the wire."""
    doc: dict[str, Any] = {
        "revision": revision,
        "images": ["registry.local/app:v2"],
        "changedBy": "kubectl-set",
        "changedAt": (started - changed_before).isoformat(),
        "startedAt": started.isoformat(),
        **fields,
    }
    if outcome is not None:
        doc |= {"outcome": outcome, "endedAt": (started + ended_after).isoformat()}
    return Release.model_validate(doc)
