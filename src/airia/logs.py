"""Logging helpers, with the names the official `airia` package exports.

The correlation id of the request being made lives in a context variable: each
request sets it (to the `correlation_id=` passed, or a fresh UUID4), so log lines
written while it runs, and `get_correlation_id()` after it, name that request.
`configure_logging()` gives the `airia` logger a handler that prints it.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from contextvars import ContextVar
from typing import IO

from ._constants import LOGGER_NAME

correlation_id_context: ContextVar[str] = ContextVar("airia_correlation_id", default="")

_DEFAULT_FORMAT = "%(asctime)s | %(levelname)-8s | %(name)s:%(funcName)s:%(lineno)d - %(message)s"
_LEVEL_COLORS = {
    "DEBUG": "\033[36m",
    "INFO": "\033[32m",
    "WARNING": "\033[33m",
    "ERROR": "\033[31m",
    "CRITICAL": "\033[35m",
}
_RESET = "\033[0m"


def get_correlation_id() -> str:
    """The correlation id of the current context: the last request's, or "" if none."""
    return correlation_id_context.get()


def set_correlation_id(correlation_id: str | None = None) -> str:
    """Make `correlation_id` (a fresh UUID4 when None) the current context's; returns it."""
    if correlation_id is None:
        correlation_id = str(uuid.uuid4())
    correlation_id_context.set(correlation_id)
    return correlation_id


def clear_correlation_id() -> None:
    correlation_id_context.set("")


class CorrelationIdFilter(logging.Filter):
    """Puts the current correlation id on each record, as `%(correlation_id)s`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = get_correlation_id() or "no-correlation-id"
        return True


class ColoredFormatter(logging.Formatter):
    """A `logging.Formatter` that colours the level name (ANSI codes), as the official
    package's does; with `use_colors=False` it is a plain formatter."""

    def __init__(self, fmt: str | None = None, use_colors: bool = True) -> None:
        super().__init__(fmt)
        self.use_colors = use_colors

    def format(self, record: logging.LogRecord) -> str:
        color = _LEVEL_COLORS.get(record.levelname) if self.use_colors else None
        if color is None:
            return super().format(record)
        plain = record.levelname
        record.levelname = f"{color}{plain}{_RESET}"
        try:
            return super().format(record)
        finally:
            record.levelname = plain


def configure_logging(
    format_string: str | None = None,
    level: str = "INFO",
    sink: str | os.PathLike[str] | IO[str] = sys.stderr,
    include_correlation_id: bool = True,
    use_colors: bool = True,
) -> logging.Logger:
    """Send the `airia` logger's records at `level` and above to `sink` (a stream, or a
    file path, appended to) and return the logger. Earlier handlers it was given are
    replaced, so calling it again reconfigures rather than doubling every line.
    Colors (level names) are for streams only, never files."""
    logger = logging.getLogger(LOGGER_NAME)
    if isinstance(level, str):
        # A level name logging does not know means INFO, as in the official package.
        known = logging.getLevelName(level.upper())
        logger.setLevel(known if isinstance(known, int) else logging.INFO)
    else:
        logger.setLevel(level)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    if isinstance(sink, (str, os.PathLike)):
        handler: logging.Handler = logging.FileHandler(os.fspath(sink), encoding="utf-8")
        use_colors = False
    else:
        handler = logging.StreamHandler(sink)
    if format_string is None:
        format_string = _DEFAULT_FORMAT
        if include_correlation_id:
            format_string = "[%(correlation_id)s] " + format_string
    handler.setFormatter(ColoredFormatter(format_string, use_colors=use_colors))
    if include_correlation_id:
        handler.addFilter(CorrelationIdFilter())
    logger.addHandler(handler)
    return logger
