"""Request logging: useful fields, never a secret."""

import io
import logging

import httpx
import pytest

from airia import AiriaClient, NotFoundError

from .conftest import API_KEY, BASE_URL, FakeServer, problem


def test_no_logging_by_default(client, caplog):
    caplog.set_level(logging.DEBUG, logger="airia")
    client.create_conversation(user_id="u")
    assert caplog.records == []


@pytest.mark.parametrize("auth", [{"api_key": API_KEY}, {"bearer_token": "jwt-secret"}])
def test_log_line_has_fields_and_no_secret(server: FakeServer, caplog, auth):
    caplog.set_level(logging.INFO, logger="airia")
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = AiriaClient(base_url=BASE_URL, log_requests=True, http_client=http, **auth)
    client.create_conversation(user_id="u", correlation_id="cid-1")
    (record,) = caplog.records
    text = record.getMessage()
    assert record.name == "airia"
    assert "POST http://testserver/v1/Conversations -> 201" in text
    assert " ms)" in text and "correlation_id=cid-1" in text
    assert API_KEY not in caplog.text and "jwt-secret" not in caplog.text


def test_custom_logger_and_retry_warning(server: FakeServer, sleeps, caplog):
    logger = logging.getLogger("my.app")
    caplog.set_level(logging.INFO, logger="my.app")
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = AiriaClient(
        base_url=BASE_URL,
        api_key=API_KEY,
        log_requests=True,
        custom_logger=logger,
        http_client=http,
    )
    server.script(problem(503, "busy"), problem(404, f"missing {API_KEY}"))
    with pytest.raises(NotFoundError):
        client.get_conversation("c")
    assert [r.name for r in caplog.records] == ["my.app"] * 3
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING", "INFO"]
    assert "retry 1 of 2" in caplog.records[1].getMessage()
    assert API_KEY not in caplog.text


# --- the official package's logging names ---------------------------------------------


def test_the_official_packages_logging_names_import() -> None:
    import airia
    import airia.constants
    import airia.logs

    for name in (
        "configure_logging",
        "set_correlation_id",
        "get_correlation_id",
        "clear_correlation_id",
    ):
        assert getattr(airia, name) is getattr(airia.logs, name)
    assert airia.constants.DEFAULT_BASE_URL == "http://localhost:8000/"
    assert airia.constants.DEFAULT_TIMEOUT == 30.0


def test_colored_formatter_colours_the_level_name_only_when_asked() -> None:
    """`airia.logs.ColoredFormatter(fmt=None, use_colors=True)`, as the official package
    has it; `configure_logging` formats with it."""
    import inspect

    from airia.logs import ColoredFormatter, configure_logging

    assert [
        (p.name, p.default) for p in inspect.signature(ColoredFormatter).parameters.values()
    ] == [
        ("fmt", None),
        ("use_colors", True),
    ]
    record = logging.LogRecord("airia", logging.ERROR, __file__, 1, "boom", None, None)
    coloured = ColoredFormatter("%(levelname)s %(message)s").format(record)
    assert coloured == "\033[31mERROR\033[0m boom" and record.levelname == "ERROR"
    assert ColoredFormatter("%(levelname)s", use_colors=False).format(record) == "ERROR"
    assert ColoredFormatter().format(record) == "boom"
    logger = configure_logging(sink=io.StringIO())
    try:
        (handler,) = logger.handlers
        assert isinstance(handler.formatter, ColoredFormatter) and handler.formatter.use_colors
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)


def test_a_request_makes_its_correlation_id_the_contexts(client, server: FakeServer) -> None:
    from airia import clear_correlation_id, get_correlation_id, set_correlation_id

    clear_correlation_id()
    assert get_correlation_id() == ""
    cid = client.create_conversation(user_id="u", correlation_id="cid-7").conversation_id
    assert get_correlation_id() == "cid-7"
    client.get_conversation(cid)
    fresh = get_correlation_id()
    assert fresh not in ("", "cid-7")
    assert server.requests[-1].headers["x-correlation-id"] == fresh
    client.get_conversation(cid)
    assert get_correlation_id() != fresh  # one id per call, not one per context
    assert set_correlation_id("mine") == "mine" and get_correlation_id() == "mine"
    assert len(set_correlation_id()) == 36


def test_configure_logging_prints_the_correlation_id(server: FakeServer, tmp_path) -> None:
    from airia import configure_logging

    path = tmp_path / "sdk.log"
    logger = configure_logging(level="DEBUG", sink=path)
    try:
        assert logger.name == "airia"
        http = httpx.Client(transport=httpx.MockTransport(server))
        client = AiriaClient(
            base_url=BASE_URL, api_key=API_KEY, log_requests=True, http_client=http
        )
        client.create_conversation(user_id="u", correlation_id="cid-9")
        again = configure_logging(level="INFO", sink=path)  # replaces, never doubles
        client.create_conversation(user_id="u", correlation_id="cid-10")
        lines = path.read_text().splitlines()
        assert again is logger and len(logger.handlers) == 1
        assert [line.split("]")[0] for line in lines] == ["[cid-9", "[cid-10"]
        assert "\033[" not in path.read_text()  # no colors in a file
        assert API_KEY not in path.read_text()
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)


def test_an_unknown_level_name_means_info() -> None:
    from airia import configure_logging

    logger = configure_logging(level="verbose")
    try:
        assert logger.level == logging.INFO
        assert configure_logging(level="debug").level == logging.DEBUG
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)


REQUEST_LOG_SCRIPT = """
import logging, sys
import httpx
from airia import AiriaClient

def answer(request):
    return httpx.Response(404, json={"message": "Conversation not found"})

if sys.argv[1] == "configured":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="app: %(message)s")
client = AiriaClient(
    base_url="http://testserver/", api_key="k", log_requests=True,
    http_client=httpx.Client(transport=httpx.MockTransport(answer)),
)
try:
    client.get_conversation("c1", correlation_id="cid-7")
except Exception:
    pass
"""


@pytest.mark.parametrize("setup", ["bare", "configured"])
def test_log_requests_shows_its_lines_without_taking_over_configured_logging(setup) -> None:
    """`log_requests=True` in a program that set up no logging prints to stderr, as the
    official package does; in one that did, the lines go its way, and only once."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", REQUEST_LOG_SCRIPT, setup],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    line = "GET http://testserver/v1/Conversations/c1 -> 404"
    if setup == "bare":
        assert line in result.stderr and "[cid-7]" in result.stderr
        assert "\033[" not in result.stderr  # no colours into a pipe
        assert result.stdout == ""
    else:
        assert result.stdout.count(line) == 1 and result.stdout.startswith("app: ")
        assert line not in result.stderr
