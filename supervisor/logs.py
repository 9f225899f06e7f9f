"""structlog set-up: one event per line on stderr, JSON off a TTY, console on one."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from supervisor.config import LogFormat, LogLevel
from supervisor.logfile import LogFile

_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


def uses_json(log_format: LogFormat, stream: TextIO) -> bool:
    match log_format:
        case LogFormat.JSON:
            return True
        case LogFormat.CONSOLE:
            return False
        case LogFormat.AUTO:
            try:
                return not stream.isatty()
            except (AttributeError, ValueError):
                return True


def configure(
    log_format: LogFormat = LogFormat.AUTO,
    level: LogLevel = LogLevel.INFO,
    stream: TextIO | None = None,
    log_file: LogFile | None = None,
) -> None:
    """Configure structlog globally; safe to call again (a reload may change the level).

    With `log_file`, events go there instead of `stream`, always as JSON lines."""
    out = log_file.stream if log_file is not None else stream if stream is not None else sys.stderr
    renderer: structlog.types.Processor
    if log_file is not None or uses_json(log_format, out):
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get(**bound: object) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return logger.bind(**bound) if bound else logger
