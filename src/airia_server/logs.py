"""Logging: every line carries the request's correlation id; JSON lines or readable text."""

from __future__ import annotations

import asyncio
import atexit
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


# `ticket=`, its letters in either case or percent-encoded ("tick%65t=" is read as
# "ticket=" too, and would otherwise carry the ticket into the log in clear).
_TICKET_NAME = "".join(f"(?:{c}|%{ord(c):x}|%{ord(c.upper()):x})" for c in "ticket")
_SECRET_QUERY = re.compile(rf"({_TICKET_NAME}=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide WebSocket tickets, which servers and proxies would log as part of the URL."""
    return _SECRET_QUERY.sub(r"\1[REDACTED]", text)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn"):
            message = record.getMessage()
            if "=" in message:
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


# C0 controls, DEL and C1 controls: a newline in a logged path forged a whole line of
# its own, an ESC drove the reader's terminal, a NUL reached the file as it was.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class TextFormatter(logging.Formatter):
    """One line per record, as a reader sees it: what a client sent (a path, a header
    in a message) has its control characters written as `\\xNN`. A traceback keeps
    its own line breaks. (JSON lines escape them by themselves.)"""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)-5s %(name)s [%(correlation_id)s] %(message)s",
            "%H:%M:%S",
        )

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL.sub(_escaped, super().formatMessage(record))

    def formatException(self, ei) -> str:
        return _CONTROL_BUT_NEWLINE.sub(_escaped, super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _CONTROL_BUT_NEWLINE.sub(_escaped, super().formatStack(stack_info))


FLUSH_SECONDS = 0.02
"""How long an access line may wait to be written with the ones after it."""


class AccessLog:
    """One line per request. As JSON it skips the logging machinery, which costs more
    than many requests do: lines are encoded directly and written together, at most
    `FLUSH_SECONDS` after the first of them (under load a turn of the event loop
    finishes only a few requests, so a write per turn was a write every few
    requests, on an output `serve --workers` processes share). What is pending is
    written at shutdown and at exit; a process killed outright loses at most the
    last `FLUSH_SECONDS` of lines. As text (on a terminal) it goes through
    `logging`."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("airia_server.access")
        self._json = False
        self._stream = None
        self._pending: list[bytes] = []
        self._second = -1
        self._stamp = ""
        self._at_exit = False
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def configure(self, json_lines: bool, stream) -> None:
        self.flush()
        self._json = json_lines
        self._stream = stream
        if not self._at_exit:
            atexit.register(self.flush)
            self._at_exit = True

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def emit(self, method: str, path: str, status: int, millis: float) -> None:
        if not self._json or self._stream is None:
            self._logger.info(
                "%s %s %s %.1fms",
                method,
                path,
                status or "-",
                millis,
                extra={"status": status, "path": path},
            )
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            t = time.gmtime(second)
            self._second = second
            self._stamp = (
                f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:"
                f"{t.tm_min:02d}:{t.tm_sec:02d}"
            )
        entry = {
            "ts": f"{self._stamp}.{int((now - second) * 1000):03d}Z",
            "level": "info",
            "logger": "airia_server.access",
            "message": f"{method} {path} {status or '-'} {millis:.1f}ms",
            "status": status,
            "path": path,
            "correlation_id": correlation_id_var.get() or "-",
            "tenant": tenant_var.get() or "-",
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: write at once
            self._pending.append(_encode(entry))
            self.flush()
            return
        if not self._pending or loop is not self._flush_loop:
            # (A loop that stopped before its flush came never writes: this one will.)
            loop.call_later(FLUSH_SECONDS, self.flush)
            self._flush_loop = loop
        self._pending.append(_encode(entry))

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if lines and self._stream is not None:
            try:
                self._stream.write(b"\n".join(lines) + b"\n")
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed: nothing more to say
                pass


access_log = AccessLog()


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
    access_log.configure(fmt == "json", getattr(sys.stderr, "buffer", None))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # `access_log` writes the access log. uvicorn writes its own line for every
    # request when its "uvicorn.access" logger has a handler anywhere up the tree
    # (it asks once per connection); that would log each request twice, through the
    # slow `logging` path. A `serve --workers` process builds its app (and so calls
    # this) after uvicorn set this logger up, so it is silenced here, not only there.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
