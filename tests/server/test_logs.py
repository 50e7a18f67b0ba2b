"""The server's logging set-up: one access line per request, whichever order uvicorn
and the app configure logging in."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import uvicorn

from airia_server.logs import configure_logging


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
