"""Structured logging for every Stepwise process.

One structlog configuration: JSON lines in the cluster (one object a line, ready for a
log pipeline), coloured key=value on a terminal. Reconciles bind ``rollout``,
``namespace`` and ``reconcile_id`` with :func:`structlog.contextvars.bind_contextvars`,
so every line a reconcile writes carries them without passing a logger around.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console", "auto"]


def configure(fmt: LogFormat = "auto", level: str = "info") -> None:
    """Configure structlog (and route the standard library's loggers through it).

    ``auto`` picks the console renderer when stderr is a terminal and JSON otherwise.
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"log level {level!r} is not one of debug, info, warning, error")
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries (urllib3, kubernetes) log through the standard library; keep them quiet
    # unless asked, and render them the same way.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric_level, logging.WARNING))
