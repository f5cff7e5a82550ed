"""Manual control: intents written as annotations on the Rollout.

Each intent names the state it was issued against, so it is level-triggered and can
never act twice or leak onto a later revision:

==============================  ==========================  ===============================
annotation                      value                       effect
==============================  ==========================  ===============================
``stepwise.dev/promote``        ``<revision>/<step>``       release the pause (or the
                                                            Inconclusive analysis) at that
                                                            step of that canary revision
``stepwise.dev/promote-full``   ``<revision>``              skip the remaining steps and
                                                            analysis of that revision
``stepwise.dev/abort``          ``<revision>``              abort that canary revision
``stepwise.dev/retry``          ``<revision>/<attempt>``    restart that revision from step 0
                                                            after its abort number ``attempt``
==============================  ==========================  ===============================

Pause and resume are the spec field ``spec.paused``.

Coexisting with GitOps (Argo CD, Flux): a GitOps tool reverts drift only in the fields
its manifest sets. ``stepwise promote``/``abort``/``retry`` add annotations the manifest
does not contain, so they survive a sync (Argo CD's three-way merge and Flux's
server-side apply both leave fields they do not own alone). A team that wants every
decision in Git commits the same annotations instead (``stepwise status`` prints the
revision hash), and because each value names its revision, a stale annotation left in
Git is inert for the next release. ``spec.paused`` is declarative: pause in Git if your
manifest sets ``paused``, otherwise ``stepwise pause`` works and survives a sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PROMOTE = "stepwise.dev/promote"
PROMOTE_FULL = "stepwise.dev/promote-full"
ABORT = "stepwise.dev/abort"
RETRY = "stepwise.dev/retry"
ALL = (PROMOTE, PROMOTE_FULL, ABORT, RETRY)


@dataclass(frozen=True)
class Intents:
    """The manual intents present on a Rollout, parsed."""

    promote: tuple[str, int] | None = None
    promote_full: str | None = None
    abort: str | None = None
    retry: tuple[str, int] | None = None

    def promotes(self, revision: str | None, step: int | None) -> bool:
        """Whether a promote intent releases this step of this revision."""
        return self.promote is not None and self.promote == (revision, step)

    def retries(self, revision: str | None, attempt: int) -> bool:
        """Whether a retry intent restarts this abort of this revision."""
        return self.retry is not None and self.retry == (revision, attempt)


def _pair(value: str | None) -> tuple[str, int] | None:
    if not value or "/" not in value:
        return None
    revision, _, number = value.rpartition("/")
    if not revision or not number.isdigit():
        return None
    return revision, int(number)


def parse(annotations: Mapping[str, str] | None) -> Intents:
    """Read the intents; a malformed value is ignored (it cannot name a state)."""
    ann = annotations or {}
    return Intents(
        promote=_pair(ann.get(PROMOTE)),
        promote_full=ann.get(PROMOTE_FULL) or None,
        abort=ann.get(ABORT) or None,
        retry=_pair(ann.get(RETRY)),
    )


def promote_value(revision: str, step: int) -> str:
    """The annotation value that releases ``step`` of ``revision``."""
    return f"{revision}/{step}"


def retry_value(revision: str, attempt: int) -> str:
    """The annotation value that retries abort number ``attempt`` of ``revision``."""
    return f"{revision}/{attempt}"
