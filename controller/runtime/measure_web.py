"""Taking one measurement of a ``web`` metric: fill in the request, send it, judge it.

Where it sits: :class:`~controller.runtime.measure.PrometheusMeasurer` hands a due web
metric to :class:`WebMeasurer` (its ``web=`` provider) with the measurement's variables
(arguments, Secret values included, and the Rollout's names and revisions) and the Secret
values to keep out of sight. The request is built by :func:`controller.core.web.render_request`
(escaping every value for where it stands), sent by
:class:`controller.adapters.web.WebClient`, and the answer judged by
:func:`controller.core.web.evaluate`. The measuring pool calls this on the web provider's
own workers (``web <host:port>``), never inside a reconcile.

Nothing here raises: a failure is an Error outcome naming the metric (with its
``error_kind``, so a timeout counts toward the pool's breaker). Secret values never reach
a log line, a message or the measured value: everything shown is scrubbed of them, in
the forms a URL or a JSON text would show them too.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from controller.adapters.web import WebClient
from controller.api.rollout import Rollout
from controller.clock import SYSTEM_CLOCK, Clock
from controller.core import analysis as an
from controller.core import promql, web
from controller.core.measurement import Outcome
from controller.runtime.measure import Variables

log = structlog.get_logger("stepwise.web")


class Sender(Protocol):
    """Sends one web request (:class:`~controller.adapters.web.WebClient`, or a fake)."""

    def send(self, request: web.WebRequest) -> web.WebAnswer:
        """The answer, or why there is none (never raises)."""
        ...


class WebMeasurer:
    """A :class:`~controller.runtime.measure.ProviderTaker` for web metrics.

    ``client`` sends the requests (tests pass one without proxies, or a fake with the
    same ``send``); ``clock`` times the exchange for the log.
    """

    def __init__(self, client: Sender | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.client: Sender = client if client is not None else WebClient()
        self._clock = clock

    def __call__(self, rollout: Rollout, item: an.Due, variables: Variables) -> Outcome:
        """One judged measurement of the web metric ``item.metric`` (never raises)."""
        try:
            outcome = self._take(item, variables)
        except Exception as exc:  # never into the decision logic; the text may hold a value
            log.error("web measurement failed unexpectedly", error=type(exc).__name__)
            outcome = Outcome("Error", None, f"{item.metric.name}: unexpected {type(exc).__name__}")
        return web.scrubbed(outcome, variables.redact)

    def _take(self, item: an.Due, variables: Variables) -> Outcome:
        metric = item.metric
        spec = metric.provider.web
        if spec is None:
            return Outcome("Error", None, f"{metric.name}: not a web metric")
        try:
            request = web.render_request(spec, variables.values)
        except (promql.TemplateError, ValueError) as exc:
            return Outcome("Error", None, f"{metric.name}: {exc}")
        started = self._clock.monotonic()
        answer = self.client.send(request)
        outcome = web.evaluate(metric, request, answer)
        log.info(
            "web request answered" if answer.error is None else "web request failed",
            metric=metric.name,
            method=request.method,
            url=web.scrub(request.safe_url, variables.redact),
            status=answer.status,
            kind=answer.error.kind if answer.error is not None else None,
            seconds=round(self._clock.monotonic() - started, 3),
            phase=outcome.phase,
        )
        return outcome
