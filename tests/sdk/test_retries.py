"""Retries: idempotent requests (and POSTs with an Idempotency-Key) only, jittered
backoff, Retry-After honoured. The idempotency keys themselves: test_idempotency."""

import httpx
import pytest

from airia import APIConnectionError, InternalServerError, RateLimitError
from airia._base_client import Retries
from airia._constants import INITIAL_RETRY_DELAY, MAX_RETRY_DELAY

from .conftest import FakeServer, problem


def test_get_retried_on_503_then_succeeds(api, server: FakeServer, sleeps):
    call = api()
    cid = call("create_conversation", user_id="u").conversation_id
    server.script(problem(503, "busy"), problem(503, "busy"))
    got = call("get_conversation", cid)
    assert got.conversation_id == cid
    assert [r.method for r in server.requests] == ["POST", "GET", "GET", "GET"]
    assert len(sleeps) == 2
    # Jitter takes off at most a quarter of the exponential step.
    assert 0.75 * INITIAL_RETRY_DELAY <= sleeps[0] <= INITIAL_RETRY_DELAY
    assert 1.5 * INITIAL_RETRY_DELAY <= sleeps[1] <= 2 * INITIAL_RETRY_DELAY


def test_retries_reuse_the_correlation_id(api, server: FakeServer):
    server.script(problem(503, "busy"))
    api()("get_conversations_feed")
    ids = {r.headers["X-Correlation-ID"] for r in server.requests}
    assert len(server.requests) == 2 and len(ids) == 1


def test_gives_up_after_max_retries(api, server: FakeServer, sleeps):
    server.script(*(problem(503, "busy") for _ in range(5)))
    with pytest.raises(InternalServerError):
        api(max_retries=3)("get_conversations_feed")
    assert len(server.requests) == 4
    assert len(sleeps) == 3


def test_max_retries_zero_disables(api, server: FakeServer, sleeps):
    server.script(problem(503, "busy"))
    with pytest.raises(InternalServerError):
        api(max_retries=0)("get_conversations_feed")
    assert len(server.requests) == 1 and sleeps == []


def test_backoff_is_capped(client, sleeps):
    request = httpx.Request("GET", "http://x/")
    client.max_retries = 20
    assert client._retry_delay(request, Retries(spent=15), None) <= MAX_RETRY_DELAY


def test_post_without_a_key_is_never_retried(api, server: FakeServer, sleeps):
    call = api()
    cid = call("create_conversation", user_id="u").conversation_id
    server.script(problem(503, "busy"))
    with pytest.raises(InternalServerError):
        call("share_conversation", cid, "bob")
    assert [r.method for r in server.requests] == ["POST", "POST"] and sleeps == []
    assert "Idempotency-Key" not in server.last.headers


def test_post_without_a_key_not_retried_on_connection_error(api, server: FakeServer, sleeps):
    call = api()
    cid = call("create_conversation", user_id="u").conversation_id
    server.script(httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError):
        call("send_typing", cid, user_id="u")
    assert len(server.requests) == 2 and sleeps == []


@pytest.mark.parametrize("method", ["update_conversation", "delete_conversation"])
def test_put_and_delete_are_retried(api, server: FakeServer, sleeps, method):
    call = api()
    cid = call("create_conversation", user_id="u").conversation_id
    server.script(problem(502, "bad gateway"))
    args = (cid, "t") if method == "update_conversation" else (cid,)
    call(method, *args)
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    "failure",
    [
        lambda: httpx.ConnectError("refused"),
        lambda: httpx.ReadTimeout("slow"),
        lambda: problem(408, "timeout"),
        lambda: problem(504, "gateway timeout"),
    ],
    ids=["connect", "timeout", "408", "504"],
)
def test_transient_failures_retried(api, server: FakeServer, sleeps, failure):
    server.script(failure())
    api()("get_conversations_feed")
    assert len(server.requests) == 2 and len(sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_other_statuses_not_retried(api, server: FakeServer, sleeps, status):
    server.script(problem(status, "no"))
    with pytest.raises(Exception):  # noqa: B017 - the class is covered in test_errors
        api()("get_conversations_feed")
    assert len(server.requests) == 1 and sleeps == []


def test_retry_after_is_honoured(api, server: FakeServer, sleeps):
    server.script(httpx.Response(429, json={"message": "slow"}, headers={"Retry-After": "3"}))
    api()("get_conversations_feed")
    assert sleeps == [3.0]


def test_retry_after_too_long_is_not_waited(api, server: FakeServer, sleeps):
    server.script(httpx.Response(429, json={"message": "slow"}, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimitError) as info:
        api()("get_conversations_feed")
    assert sleeps == [] and info.value.retry_after == 3600.0


def test_retry_after_garbage_falls_back_to_backoff(api, server: FakeServer, sleeps):
    server.script(httpx.Response(503, headers={"Retry-After": "soon"}))
    api()("get_conversations_feed")
    assert len(sleeps) == 1 and sleeps[0] <= INITIAL_RETRY_DELAY
