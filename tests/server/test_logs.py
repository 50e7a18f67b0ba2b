"""The server's logging set-up: one access line per request, whichever order uvicorn
and the app configure logging in."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import uvicorn

from airia_server.logs import FLUSH_SECONDS, AccessLog, TextFormatter, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    loggers = [
        logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    ]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


async def _app(scope, receive, send) -> None:  # pragma: no cover - never called
    raise AssertionError


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("uvicorn_first", [True, False], ids=["worker", "single"])
def test_uvicorn_writes_no_access_line_of_its_own(uvicorn_first: bool) -> None:
    # A `serve --workers` process: uvicorn sets its loggers up, then the app factory
    # configures logging. A single process: the other way round.
    def uvicorn_setup() -> None:
        uvicorn.Config(_app, log_config=None, access_log=False).configure_logging()

    if uvicorn_first:
        uvicorn_setup()
    configure_logging("INFO", "json")
    if not uvicorn_first:
        uvicorn_setup()
    # uvicorn logs each request itself when this is true (asked per connection).
    assert not logging.getLogger("uvicorn.access").hasHandlers()
    # Its server messages still reach the root handler.
    assert logging.getLogger("uvicorn.error").hasHandlers()
    assert logging.getLogger("uvicorn.error").isEnabledFor(logging.INFO)


class _Stream:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def flush(self) -> None:
        pass


async def test_access_lines_are_written_together_soon_after() -> None:
    log, stream = AccessLog(), _Stream()
    log.configure(True, stream)
    for status in (200, 201, 404):
        log.emit("GET", "/v1/Conversations/x", status, 1.5)
        await asyncio.sleep(0)  # requests finish in different turns of the loop
    assert stream.writes == []  # not one write per turn
    await asyncio.sleep(FLUSH_SECONDS * 3)
    (written,) = stream.writes
    lines = [json.loads(line) for line in written.splitlines()]
    assert [line["status"] for line in lines] == [200, 201, 404]
    assert lines[0]["message"] == "GET /v1/Conversations/x 200 1.5ms"


async def test_pending_access_lines_are_written_on_flush() -> None:
    # The lifespan's shutdown and the exit handler call flush: nothing is left behind.
    log, stream = AccessLog(), _Stream()
    log.configure(True, stream)
    log.emit("POST", "/v1/Conversations", 201, 3.0)
    log.flush()
    assert b'"POST /v1/Conversations 201 3.0ms"' in b"".join(stream.writes)
    await asyncio.sleep(FLUSH_SECONDS * 3)  # the timer finds nothing more to write
    assert len(stream.writes) == 1


def test_lines_left_by_a_loop_that_stopped_are_written_by_the_next() -> None:
    log, stream = AccessLog(), _Stream()
    log.configure(True, stream)

    async def request(status: int, wait: float) -> None:
        log.emit("GET", "/healthz", status, 0.1)
        await asyncio.sleep(wait)

    asyncio.run(request(200, 0))  # stops before its flush is due
    assert stream.writes == []
    asyncio.run(request(201, FLUSH_SECONDS * 3))
    statuses = [json.loads(line)["status"] for line in b"".join(stream.writes).splitlines()]
    assert statuses == [200, 201]


def test_text_lines_escape_what_a_client_could_forge_a_line_or_a_colour_with() -> None:
    """A path with a newline wrote a forged line of its own; an ESC coloured the
    reader's terminal; a NUL went to the file as it was. (JSON lines escape them.)"""
    path = "/v1/Conversations/x\n12:00:00 ERROR airia_server [-] FORGED\r\x1b[31mred\x00\x7f\x85"
    record = logging.LogRecord("airia_server.access", logging.INFO, "", 0, "GET %s", (path,), None)
    record.correlation_id = "c1"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line and "\x00" not in line
    assert line.endswith(
        "[c1] GET /v1/Conversations/x\\x0a12:00:00 ERROR airia_server [-] FORGED"
        "\\x0d\\x1b[31mred\\x00\\x7f\\x85"
    )


def test_a_traceback_keeps_its_lines_in_text() -> None:
    try:
        raise ValueError("bad\x1b[31m")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "", 0, "oops", None, sys.exc_info())
    record.correlation_id = "-"
    text = TextFormatter().format(record)
    assert text.count("\n") >= 3 and "\x1b" not in text and "bad\\x1b[31m" in text
