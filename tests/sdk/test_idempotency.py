"""Idempotency-Key on creates, message appends and uploads, and the retries it allows."""

import asyncio
import io
import json
import uuid

import httpx
import pytest

from airia import (
    AiriaAPIError,
    AiriaAsyncClient,
    AiriaClient,
    APIConnectionError,
    ConflictError,
    InternalServerError,
    UnprocessableEntityError,
)

from .conftest import API_KEY, BASE_URL, AnswerLost, FakeServer, parse_multipart, problem

KEYED = ["create_conversation", "add_message", "upload_attachment", "upload_attachment_base64"]


def _args(method: str, cid: str) -> tuple:
    return {
        "create_conversation": ("owner",),
        "add_message": (cid, "hello"),
        "upload_attachment": (cid, b"file bytes", "f.bin"),
        "upload_attachment_base64": (cid, b"file bytes", "f.bin", "application/octet-stream"),
    }[method]


@pytest.fixture
def call(api):
    return api()


@pytest.fixture
def cid(call) -> str:
    return call("create_conversation", user_id="owner").conversation_id


def _keys(requests: list[httpx.Request]) -> list[str | None]:
    return [r.headers.get("Idempotency-Key") for r in requests]


def in_progress() -> httpx.Response:
    response = problem(409, "A request with this Idempotency-Key is still running")
    response.headers["Retry-After"] = "1"
    return response


@pytest.mark.parametrize("method", KEYED)
def test_a_fresh_uuid4_key_per_call(call, cid, server: FakeServer, method):
    call(method, *_args(method, cid))
    call(method, *_args(method, cid))
    first, second = _keys(server.requests[-2:])
    assert uuid.UUID(first).version == 4 and uuid.UUID(second).version == 4
    assert first != second


@pytest.mark.parametrize("method", KEYED)
def test_the_callers_key_is_sent(call, cid, server: FakeServer, method):
    call(method, *_args(method, cid), idempotency_key="order-42/attempt")
    assert server.last.headers["Idempotency-Key"] == "order-42/attempt"


@pytest.mark.parametrize("method", KEYED)
@pytest.mark.parametrize(
    "failure",
    [lambda: httpx.ConnectError("refused"), lambda: problem(503, "busy")],
    ids=["connect", "503"],
)
def test_a_retry_sends_the_same_key_and_body(
    call, cid, server: FakeServer, sleeps, method, failure
):
    before = len(server.requests)
    server.script(failure())
    call(method, *_args(method, cid))
    first, second = server.requests[before:]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.headers["X-Correlation-ID"] == second.headers["X-Correlation-ID"]
    assert first.content == second.content  # multipart boundary included
    assert len(sleeps) == 1


def test_a_retried_create_creates_once(call, server: FakeServer, sleeps):
    server.script(httpx.ReadTimeout("slow"), problem(502, "bad gateway"))
    created = call("create_conversation", user_id="u", idempotency_key="k1")
    assert _keys(server.requests) == ["k1", "k1", "k1"]
    assert list(server.conversations) == [created.conversation_id]
    assert len(sleeps) == 2


@pytest.mark.parametrize("method", KEYED)
def test_the_same_key_and_arguments_send_the_same_bytes(call, cid, server: FakeServer, method):
    """So a caller repeating a call with its own key gets a replay, not a 422."""
    call(method, *_args(method, cid), idempotency_key="mine")
    call(method, *_args(method, cid), idempotency_key="mine")
    first, second = server.requests[-2:]
    assert first.content == second.content
    assert first.headers.get("content-type") == second.headers.get("content-type")


def test_replayed_response_is_returned_as_usual(call, cid, server: FakeServer):
    replay = {"messageId": "m9", "conversationId": cid, "createdAt": "2026-11-26T06:01:34Z"}
    server.script(httpx.Response(201, json=replay, headers={"Idempotent-Replayed": "true"}))
    assert call("add_message", cid, "hi", idempotency_key="k").message_id == "m9"


def test_409_with_retry_after_is_retried_after_waiting(call, cid, server: FakeServer, sleeps):
    server.script(in_progress())
    added = call("add_message", cid, "x", idempotency_key="k")
    assert _keys(server.requests[-2:]) == ["k", "k"]
    assert sleeps == [1.0] and added.message_id == "m1"


def test_409_while_running_is_waited_out_without_spending_retries(api, server: FakeServer, sleeps):
    """The first attempt is still running (slower than the client's timeout): giving up
    after max_retries would report a failure for a write that then lands."""
    server.script(*(in_progress() for _ in range(5)), problem(503, "busy"))
    created = api(max_retries=1)("create_conversation", user_id="u", idempotency_key="k")
    assert list(server.conversations) == [created.conversation_id]
    assert _keys(server.requests) == ["k"] * 7
    assert sleeps[:5] == [1.0] * 5 and len(sleeps) == 6


def test_409_while_running_gives_up_after_the_clients_timeout(api, server: FakeServer, sleeps):
    server.script(*(in_progress() for _ in range(20)))
    with pytest.raises(ConflictError) as caught:
        api(timeout=3.5)("create_conversation", user_id="u", idempotency_key="k")
    assert sleeps == [1.0, 1.0, 1.0, 0.5] and len(server.requests) == 5
    assert caught.value.idempotency_key == "k"


def test_409_while_running_asking_for_too_long_is_not_waited(call, server: FakeServer, sleeps):
    running = in_progress()
    running.headers["Retry-After"] = "3600"
    server.script(running)
    with pytest.raises(ConflictError):
        call("create_conversation", user_id="u")
    assert sleeps == []


def test_409_without_retry_after_is_not_retried(call, cid, server: FakeServer, sleeps):
    server.script(problem(409, "conflict"))
    with pytest.raises(ConflictError):
        call("add_message", cid, "x")
    assert sleeps == []


def test_409_with_retry_after_not_retried_without_a_key(call, cid, server: FakeServer, sleeps):
    server.script(in_progress())
    with pytest.raises(ConflictError):
        call("share_conversation", cid, "bob")
    assert sleeps == []


def test_422_key_reused_for_another_request_is_not_retried(call, cid, server: FakeServer, sleeps):
    server.script(
        problem(
            422,
            "Idempotency-Key reused for a different request",
            errors=[{"field": "Idempotency-Key", "message": "used for a different request"}],
        )
    )
    with pytest.raises(UnprocessableEntityError) as caught:
        call("add_message", cid, "other text", idempotency_key="used")
    assert caught.value.status_code == 422
    assert len(server.requests) == 2 and sleeps == []


def test_429_retry_after_is_honoured_on_a_keyed_post(call, server: FakeServer, sleeps):
    slow = httpx.Response(429, json={"message": "slow"}, headers={"Retry-After": "3"})
    server.script(slow)
    call("create_conversation", user_id="u")
    assert sleeps == [3.0] and len(server.requests) == 2


def test_other_posts_carry_no_key_and_are_not_retried(call, cid, server: FakeServer, sleeps):
    server.script(problem(503, "busy"))
    with pytest.raises(InternalServerError):
        call("share_conversation", cid, "bob")
    assert "Idempotency-Key" not in server.last.headers
    assert len(server.requests) == 2 and sleeps == []


def test_max_retries_zero_sends_a_key_but_never_retries(api, server: FakeServer, sleeps):
    server.script(problem(503, "busy"))
    with pytest.raises(InternalServerError):
        api(max_retries=0)("create_conversation", user_id="u")
    assert "Idempotency-Key" in server.last.headers
    assert len(server.requests) == 1 and sleeps == []


# -- PUTs and DELETEs: keyed too, so a retry after a lost answer gets that answer -----

PUTS_AND_DELETES = [
    "update_conversation",
    "update_participant_role",
    "delete_conversation",
    "truncate_messages",
    "remove_participant",
    "remove_external_identity",
]


def _target(call, cid: str, method: str) -> tuple:
    """The arguments of `method` on something of `cid`'s that it can change or remove."""
    if method in ("update_participant_role", "remove_participant"):
        call("share_conversation", cid, "bob", role="Collaborator")
    return {
        "update_conversation": lambda: (cid, "renamed"),
        "update_participant_role": lambda: (cid, "bob", "Viewer"),
        "delete_conversation": lambda: (cid,),
        "truncate_messages": lambda: (cid, call("add_message", cid, "hi").message_id),
        "remove_participant": lambda: (cid, "bob"),
        "remove_external_identity": lambda: (
            cid,
            call("add_external_identity", cid, "Slack", "C1", "T1").id,
        ),
    }[method]()


@pytest.mark.parametrize("method", PUTS_AND_DELETES)
def test_puts_and_deletes_send_a_key(call, cid, server: FakeServer, method):
    args = _target(call, cid, method)
    call(method, *args, idempotency_key="mine")
    assert server.last.headers["Idempotency-Key"] == "mine"


@pytest.mark.parametrize("method", ["update_conversation", "delete_conversation"])
def test_puts_and_deletes_send_a_fresh_uuid4_key_per_call(call, cid, server: FakeServer, method):
    call(method, *_target(call, cid, method))
    call(method, *_target(call, call("create_conversation", "u").conversation_id, method))
    first, second = (r.headers["Idempotency-Key"] for r in server.requests if r.method != "POST")
    assert uuid.UUID(first).version == 4 and uuid.UUID(second).version == 4
    assert first != second


@pytest.mark.parametrize("method", PUTS_AND_DELETES)
def test_a_put_or_delete_whose_answer_was_lost_gets_that_answer(
    call, cid, server: FakeServer, sleeps, method
):
    """The server did it, the client never heard: the retry, under the same key, gets
    the first answer (not a 404 for what the first attempt deleted)."""
    args = _target(call, cid, method)
    before = len(server.requests)
    server.script(AnswerLost())
    call(method, *args)
    first, second = server.requests[before:]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert len(sleeps) == 1


# -- a keyed write that gives up names its key, to call it again with ---------------


@pytest.mark.parametrize(
    "failure",
    [
        lambda: httpx.ConnectError("refused"),
        lambda: httpx.ReadTimeout("slow"),
        lambda: httpx.RemoteProtocolError("cut"),
        lambda: problem(500, "boom"),
        lambda: problem(503, "busy"),
        in_progress,
    ],
    ids=["connect", "timeout", "cut", "500", "503", "409-running"],
)
@pytest.mark.parametrize("method", ["create_conversation", "delete_conversation"])
def test_a_keyed_write_that_gives_up_names_its_key(
    api, server: FakeServer, sleeps, failure, method
):
    """It may have been done: called again with this key, it is done once."""
    call = api(max_retries=0)
    args = (call("create_conversation", "u").conversation_id,)
    server.script(failure())
    with pytest.raises(AiriaAPIError) as caught:
        call(method, *args, idempotency_key="job-7")
    assert caught.value.idempotency_key == "job-7"


def test_the_key_made_for_a_call_is_named_too(api, server: FakeServer, sleeps):
    server.script(*(httpx.ConnectError("refused") for _ in range(3)))
    with pytest.raises(APIConnectionError) as caught:
        api()("create_conversation", "u")
    assert caught.value.idempotency_key == server.last.headers["Idempotency-Key"]
    again = api()("create_conversation", "u", idempotency_key=caught.value.idempotency_key)
    assert list(server.conversations) == [again.conversation_id]


def test_an_error_of_a_request_without_a_key_names_none(call, cid, server: FakeServer):
    server.script(problem(503, "busy"))
    with pytest.raises(InternalServerError) as caught:
        call("share_conversation", cid, "bob")
    assert caught.value.idempotency_key is None


# -- uploads: retried only when the body can be sent again ----------------------


class Unseekable:
    """A stream with ``read`` only (a pipe): its bytes can be read once."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def read(self, size=-1):
        return self._data.read(size)


def test_a_seekable_file_object_is_sought_back_for_a_retry(call, cid, server: FakeServer, sleeps):
    data = io.BytesIO(b"SKIPbody")
    data.seek(4)
    server.script(problem(503, "busy"))
    attachment = call("upload_attachment", cid, data, file_name="b.bin")
    first, second = server.requests[-2:]
    assert parse_multipart(first)["file"][2] == parse_multipart(second)["file"][2] == b"body"
    assert first.content == second.content
    assert attachment.size == 4 and len(sleeps) == 1
    assert not data.closed  # the caller's file stays the caller's


def test_an_unseekable_file_object_is_not_retried(call, cid, server: FakeServer, sleeps):
    server.script(problem(503, "busy"))
    with pytest.raises(InternalServerError):
        call("upload_attachment", cid, Unseekable(b"once"), file_name="pipe.bin")
    assert "Idempotency-Key" in server.last.headers
    assert server.last.url.path.endswith("/agent-attachments")
    assert len(server.requests) == 2 and sleeps == []


def test_an_unseekable_file_object_is_not_retried_after_a_broken_connection(
    call, cid, server: FakeServer, sleeps
):
    server.script(httpx.ConnectError("reset"))
    with pytest.raises(APIConnectionError):
        call("upload_attachment", cid, Unseekable(b"once"), file_name="pipe.bin")
    assert len(server.requests) == 2 and sleeps == []


class RefuseFirst(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Fails the first attempt before reading any of its body, then hands on to the server."""

    def __init__(self, server: FakeServer):
        self.inner = httpx.MockTransport(server)
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.refused:
            self.refused += 1
            raise httpx.ConnectError("refused")
        return self.inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.refused:
            self.refused += 1
            raise httpx.ConnectError("refused")
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_unseekable_body_not_yet_read_can_be_retried(server: FakeServer, sleeps, kind):
    transport = RefuseFirst(server)
    stream = Unseekable(b"piped bytes")
    if kind == "sync":
        with AiriaClient(
            base_url=BASE_URL, api_key=API_KEY, http_client=httpx.Client(transport=transport)
        ) as client:
            cid = server_create(server)
            attachment = client.conversations.upload_attachment(cid, stream, file_name="p.bin")
    else:

        async def go():
            http = httpx.AsyncClient(transport=transport)
            async with AiriaAsyncClient(base_url=BASE_URL, api_key=API_KEY, http_client=http) as c:
                return await c.conversations.upload_attachment(cid, stream, file_name="p.bin")

        cid = server_create(server)
        attachment = asyncio.run(go())
    assert transport.refused == 1 and len(sleeps) == 1
    assert attachment.size == len(b"piped bytes")
    assert parse_multipart(server.last)["file"][2] == b"piped bytes"


def server_create(server: FakeServer) -> str:
    response = server._create({"userId": "owner"})
    return json.loads(response.content)["conversationId"]
