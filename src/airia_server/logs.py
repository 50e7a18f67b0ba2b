"""Logging: every line carries the request's correlation id; JSON lines or readable text."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time

import msgspec

_encode = msgspec.json.Encoder(decimal_format="number").encode
correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


_SECRET_QUERY = re.compile(r"(ticket=)[^&\s\"']+")


def redact(text: str) -> str:
    """Hide WebSocket tickets, which servers and proxies would log as part of the URL."""
    return _SECRET_QUERY.sub(r"\1[REDACTED]", text)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn"):
            message = record.getMessage()
            if "ticket=" in message:
                record.msg, record.args = redact(message), None
        record.correlation_id = correlation_id_var.get() or "-"
        record.tenant = tenant_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Written for speed: the access log runs per request."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        t = time.gmtime(seconds)
        entry = {
            "ts": f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:"
            f"{t.tm_min:02d}:{t.tm_sec:02d}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _dumps(entry)


def _dumps(entry: dict) -> str:
    try:
        return _encode(entry).decode()
    except TypeError:  # an extra that JSON cannot hold: fall back to its text
        return _encode(
            {
                k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                for k, v in entry.items()
            }
        ).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)-5s %(name)s [%(correlation_id)s] %(message)s",
            "%H:%M:%S",
        )


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
