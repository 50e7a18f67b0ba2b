"""Error responses and transport failures become the documented exceptions."""

import copy
import pickle

import httpx
import pytest

from airia import (
    AiriaAPIError,
    AiriaClient,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    WebSocketClosedError,
)
from airia import exceptions as public_exceptions

from .conftest import API_KEY, FakeServer, problem


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, APIStatusError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
    ],
)
def test_status_maps_to_class(api, server: FakeServer, status, cls):
    server.script(*(problem(status, "Nope") for _ in range(3)))
    with pytest.raises(cls) as info:
        api()("create_conversation", user_id="u")
    error = info.value
    assert type(error) is cls
    assert isinstance(error, AiriaAPIError)
    assert error.status_code == status
    assert error.message == "Nope"
    assert error.correlation_id == "server-cid"
    assert error.body["status"] == status
    assert error.response.status_code == status


def test_seed_not_found_pattern(client, server: FakeServer):
    with pytest.raises(AiriaAPIError) as info:
        client.delete_conversation(conversation_id="nonexistent_id")
    assert info.value.status_code == 404
    assert info.value.message == "Conversation not found"


def test_str_keeps_official_format(client, server: FakeServer):
    response = problem(404, "Conversation not found")
    server.script(response)
    with pytest.raises(NotFoundError) as info:
        client.get_conversation("x")
    assert str(info.value) == f"404: Conversation not found - {response.text}"
    assert info.value.detailed_message == response.text


def test_message_falls_back_to_error_member(client, server: FakeServer):
    server.script(httpx.Response(400, json={"error": "bad thing"}))
    with pytest.raises(BadRequestError, match="bad thing"):
        client.create_conversation(user_id="u")


def test_non_json_error_body(client, server: FakeServer):
    client.max_retries = 0  # a 502 would be retried
    server.script(httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(InternalServerError) as info:
        client.create_conversation(user_id="u")
    assert info.value.message == "Bad Gateway"
    assert info.value.body is None
    assert info.value.detailed_message == "<html>Bad gateway</html>"


def test_correlation_id_falls_back_to_request(client, server: FakeServer):
    server.script(httpx.Response(500, text=""))
    with pytest.raises(InternalServerError) as info:
        client.create_conversation(user_id="u", correlation_id="mine")
    assert info.value.correlation_id == "mine"


def test_response_header_correlation_id_wins(client, server: FakeServer):
    server.script(httpx.Response(404, json={}, headers={"X-Correlation-ID": "from-header"}))
    with pytest.raises(NotFoundError) as info:
        client.get_conversation("x", correlation_id="mine")
    assert info.value.correlation_id == "from-header"


def test_unprocessable_lists_errors(client, server: FakeServer):
    server.script(problem(422, "Validation failed", errors=[{"field": "title"}]))
    with pytest.raises(UnprocessableEntityError) as info:
        client.update_conversation("c", title="")
    assert info.value.errors == [{"field": "title"}]


def test_rate_limit_retry_after(client, server: FakeServer):
    client.max_retries = 0  # a 429 would be retried
    server.script(httpx.Response(429, json={"message": "slow down"}, headers={"Retry-After": "7"}))
    with pytest.raises(RateLimitError) as info:
        client.create_conversation(user_id="u")
    assert info.value.retry_after == 7.0


def test_secret_echoed_by_server_is_redacted(client, server: FakeServer):
    server.script(httpx.Response(401, json={"message": f"bad key {API_KEY}"}))
    with pytest.raises(AuthenticationError) as info:
        client.create_conversation(user_id="u")
    assert API_KEY not in str(info.value)
    assert "[REDACTED]" in info.value.message
    # Nor in the parsed body, which code logs as often as the message.
    assert info.value.body == {"message": "bad key [REDACTED]"}
    assert API_KEY not in info.value.detailed_message


def test_a_key_too_short_to_be_one_is_not_redacted_out_of_every_word(server: FakeServer):
    """A one-letter key would turn every `k` of the message into [REDACTED]."""
    server.script(httpx.Response(401, json={"message": "Invalid API key k"}))
    http = httpx.Client(transport=httpx.MockTransport(server))
    with AiriaClient(base_url="http://testserver/", api_key="k", http_client=http) as client:
        with pytest.raises(AuthenticationError) as info:
            client.create_conversation(user_id="u")
    assert info.value.message == "Invalid API key k"


def test_connection_error(api, server: FakeServer):
    server.script(*(httpx.ConnectError("Connection refused") for _ in range(3)))
    with pytest.raises(APIConnectionError) as info:
        api()("get_conversation", "c", correlation_id="cid")
    error = info.value
    assert isinstance(error, AiriaAPIError) and not isinstance(error, APITimeoutError)
    assert error.status_code is None
    assert error.correlation_id == "cid"
    assert "Connection refused" in str(error)


def test_a_connection_lost_after_it_was_made_is_not_called_a_failure_to_connect(
    api, server: FakeServer
):
    server.script(*(httpx.RemoteProtocolError("peer closed connection") for _ in range(3)))
    with pytest.raises(APIConnectionError) as info:
        api()("get_conversation", "c")
    assert "Could not connect" not in info.value.message
    assert info.value.message.startswith("The connection to http://testserver/v1/Conversations/c")
    assert "peer closed connection" in info.value.message


def test_timeout_error(api, server: FakeServer):
    server.script(httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError) as info:
        api(max_retries=0)("create_conversation", user_id="u")
    assert isinstance(info.value, APIConnectionError)
    assert "timed out" in info.value.message


@pytest.mark.parametrize("words", ["timed out", ""])  # the sync transport's, the async one's
def test_a_timeout_reads_the_same_from_both_clients(api, server: FakeServer, words: str):
    server.script(httpx.ReadTimeout(words))
    with pytest.raises(APITimeoutError) as info:
        api(max_retries=0)("get_conversation", "c")
    assert str(info.value) == (
        "Request to http://testserver/v1/Conversations/c timed out (ReadTimeout)"
    )


def test_public_exceptions_module_reexports_everything():
    import airia
    from airia import _exceptions

    for name in _exceptions.__all__:
        if name == "make_status_error":
            continue
        assert getattr(public_exceptions, name) is getattr(_exceptions, name)
        assert getattr(airia, name) is getattr(_exceptions, name)
        assert name in airia.__all__


def test_official_constructor_still_works():
    error = AiriaAPIError(500, "boom", "raw")
    assert (error.status_code, error.message, error.detailed_message) == (500, "boom", "raw")
    assert str(error) == "500: boom - raw"
    assert error.body is None and error.correlation_id is None and error.response is None


@pytest.mark.parametrize(
    "error",
    [
        APIConnectionError("Could not connect", correlation_id="cid", idempotency_key="k"),
        APITimeoutError("Request timed out"),
        WebSocketClosedError("closed", close_code=1008, close_reason="access removed"),
        AiriaAPIError(
            500, "boom", "raw", body={"message": "boom"}, correlation_id="cid", idempotency_key="k"
        ),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling_and_deepcopy(error: AiriaAPIError) -> None:
    """A process pool sends a worker's error to the parent by pickle: one that cannot be
    rebuilt breaks the whole pool (BrokenProcessPool)."""
    for copy_of in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
        assert type(copy_of) is type(error)
        assert copy_of.__dict__ == error.__dict__
        assert (copy_of.args, str(copy_of)) == (error.args, str(error))


BUILTIN_SCRIPT = """
import builtins, sys
if sys.argv[1] == "taken":
    builtins.AiriaAPIError = "the program's own"
import airia
print(builtins.AiriaAPIError is airia.AiriaAPIError, AiriaAPIError is airia.AiriaAPIError)
"""


@pytest.mark.parametrize(("setup", "printed"), [("free", "True True"), ("taken", "False False")])
def test_import_airia_makes_airia_api_error_a_builtin_unless_the_name_is_taken(
    setup, printed
) -> None:
    """The seed's "Delete Conversation" example catches `AiriaAPIError` unimported."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", BUILTIN_SCRIPT, setup],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, printed), result.stderr
