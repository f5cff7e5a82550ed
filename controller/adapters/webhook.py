"""The notification POST: one JSON body to one webhook receiver, and what came back.
It never raises, never retries, and decides nothing.

Where it sits in the flow::

    runtime.notifier (a sender thread per target)
        ─▶ WebhookSender.post()  (this module) ─▶ Delivery (status, or an error)
        ─▶ core.notifications.outcome_of (delivered, retry or drop)

The HTTP exchange is the web analysis provider's :class:`~controller.adapters.web.WebClient`
(the whole exchange bounded by the timeout, TLS verified, redirects only to the same
origin so a token never travels elsewhere, answers read up to a size limit). Retries
belong to the caller, which knows how long a notification stays worth sending.

A webhook URL is a credential (a Slack URL carries its secret in the path), as is the
token: the error text this returns has both replaced by ``<url>`` and ``<token>``, so
the runtime may log it next to the target's name.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Final

from controller.adapters.web import WebClient
from controller.core.web import WebRequest

_MAX_ANSWER: Final = 64 * 1024
"""A receiver's answer is not read; this much is accepted before it counts as too large."""


@dataclass(frozen=True)
class Delivery:
    """The receiver's answer to one POST."""

    status: int | None
    """The HTTP status, or None when no answer came (timeout, refused, TLS ...)."""
    error: str = ""
    """Why there is no usable answer, with the URL and token scrubbed."""
    kind: str = ""
    """The error's kind (``timeout``, ``unreachable``, ``tls``, ``http`` ...)."""


class WebhookSender:
    """POSTs notification bodies (``client`` is injected for tests)."""

    def __init__(self, client: WebClient | None = None) -> None:
        self.client = client or WebClient(max_bytes=_MAX_ANSWER)

    def post(self, url: str, body: bytes, *, token: str | None, timeout: float) -> Delivery:
        """POST ``body`` as JSON to ``url``, with ``Authorization: Bearer <token>`` when a
        token is given. Never raises."""
        headers = [("Content-Type", "application/json")]
        if token:
            headers.append(("Authorization", f"Bearer {token}"))
        request = WebRequest(
            method="POST", url=url, headers=tuple(headers), body=body, timeout=timeout
        )
        answer = self.client.send(request)
        if answer.error is None:
            return Delivery(status=answer.status)
        return Delivery(
            status=answer.status,  # a 2xx whose answer was too large still delivered
            error=scrub(answer.error.message, url, token),
            kind=answer.error.kind,
        )


def scrub(text: str, url: str, token: str | None) -> str:
    """``text`` without the URL (whole, or any part after its host) and the token."""
    parts = urllib.parse.urlsplit(url)
    secrets = [url, parts.path, parts.query, parts.netloc, parts.netloc.rsplit("@", 1)[-1]]
    secrets.append(parts.hostname or "")
    if token:
        secrets.append(token)
    for secret in sorted((s for s in secrets if len(s) > 1), key=len, reverse=True):
        text = text.replace(secret, "<token>" if secret == token else "<url>")
    return text
