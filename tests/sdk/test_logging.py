"""Request logging: useful fields, never a secret."""

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
