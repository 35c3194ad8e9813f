"""Structured logs, configured in one place: JSON lines for machines, a readable console for people.

:func:`configure_logging` (called by :func:`oo.runtime.configure`) routes structlog *and* the
standard library's loggers (ours and every library's) through one handler on the root logger, so
each line carries the same keys: ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``event``,
and whatever is bound in the context, such as the ``decision_id`` of :func:`bound_decision`.

The format is ``OO_LOG_FORMAT``: ``json`` (one JSON object per line), ``console`` (aligned,
coloured when the stream is a terminal), or ``auto`` (the default: console on a terminal, JSON
otherwise, so a service whose output goes to a file or a log collector writes JSON).

A process whose logging someone else already set up (Airflow's task runner configures structlog
and the root logger itself) is left alone.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Literal
from uuid import UUID

import structlog
from structlog.typing import Processor

LogFormat = Literal["auto", "json", "console"]

HANDLER_NAME = "oo"
"""Name of the root handler installed here (replaced, never duplicated, on a second call)."""

_configured_by_us = False


def shared_processors() -> list[Processor]:
    """What every line goes through, from structlog or from the standard library."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def wants_json(fmt: LogFormat, stream: IO[str]) -> bool:
    """JSON unless asked for the console, or ``auto`` and ``stream`` is a terminal."""
    if fmt == "auto":
        return not _isatty(stream)
    return fmt == "json"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def renderer_for(fmt: LogFormat, stream: IO[str]) -> list[Processor]:
    """The last processors of a line: JSON (tracebacks as text) or structlog's console renderer."""
    if wants_json(fmt, stream):
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer(colors=_isatty(stream))]


def configure_logging(
    level: str | int = "INFO", fmt: LogFormat = "auto", stream: IO[str] | None = None, force: bool = False
) -> None:
    """Route structlog and the standard library through one root handler writing to ``stream``
    (standard error by default) in format ``fmt`` at ``level``.

    A second call replaces what the first installed. When the root logger already has another
    handler (Airflow, pytest's capture), only structlog is configured, to hand its events to that
    handler, as the standard library would have; ``force`` adds ours beside it all the same.
    """
    global _configured_by_us
    stream = stream or sys.stderr
    if _configured_by_us or not structlog.is_configured():
        structlog.configure(
            processors=[*shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
        _configured_by_us = True
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == HANDLER_NAME:
            root.removeHandler(handler)
    if root.handlers and not force:  # someone else owns the root logger
        return
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer_for(fmt, stream)],
            foreign_pre_chain=shared_processors(),
        )
    )
    root.addHandler(handler)
    root.setLevel(level)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger named ``name`` (keyword arguments are bound to each of its lines)."""
    return structlog.stdlib.get_logger(name, **initial)


@contextmanager
def bound_decision(decision_id: UUID | str | None, **more: Any) -> Iterator[None]:
    """Every log line inside carries ``decision_id`` (and ``more``); nothing is bound for ``None``."""
    if decision_id is None and not more:
        yield
        return
    values = {**({"decision_id": str(decision_id)} if decision_id is not None else {}), **more}
    with structlog.contextvars.bound_contextvars(**values):
        yield
