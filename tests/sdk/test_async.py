"""The async client mirrors the sync one, method for method."""

import inspect

import pytest

from airia import AiriaAsyncClient, AiriaClient, NotFoundError
from airia.resources.conversations import AsyncConversations, Conversations

from .conftest import FakeServer


def _public_methods(cls):
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


# Methods that are not coroutines on the async client: an async generator,
# and a stream you ``async for`` without awaiting the call.
_ASYNC_GENERATORS = {"iter_messages"}
_RETURN_ITERATORS = {"events"}


def test_every_sync_method_has_an_async_twin_with_same_signature():
    sync_methods = _public_methods(Conversations)
    async_methods = _public_methods(AsyncConversations)
    assert sync_methods.keys() == async_methods.keys()
    # conversations, messages, participants, real time, external identities, attachments
    assert len(sync_methods) == 5 + 5 + 4 + 4 + 4 + 4
    for name, method in sync_methods.items():
        twin = async_methods[name]
        if name in _ASYNC_GENERATORS:
            assert inspect.isasyncgenfunction(twin), name
            assert inspect.isgeneratorfunction(method), name
        elif name in _RETURN_ITERATORS:
            assert not inspect.iscoroutinefunction(twin), name
        else:
            assert inspect.iscoroutinefunction(twin), name
        assert not inspect.iscoroutinefunction(method), name
        sync_sig, async_sig = inspect.signature(method), inspect.signature(twin)
        if name in _ASYNC_GENERATORS | _RETURN_ITERATORS:  # Iterator vs AsyncIterator
            assert async_sig.parameters == sync_sig.parameters, name
        else:
            assert async_sig == sync_sig, name
        assert method.__doc__ and "Example" in method.__doc__, name
        assert twin.__doc__ and "Example" in twin.__doc__, name


def test_event_streams_mirror_each_other():
    from airia._streaming import AsyncEventStream, EventStream

    sync_methods = _public_methods(EventStream)
    async_methods = _public_methods(AsyncEventStream)
    assert sync_methods.keys() == async_methods.keys() == {"close", "send_presence", "send_typing"}
    for name, method in sync_methods.items():
        assert inspect.iscoroutinefunction(async_methods[name]), name
        assert inspect.signature(async_methods[name]) == inspect.signature(method), name


def test_client_constructors_match():
    for name in ("__init__", "with_bearer_token"):
        sync_sig = inspect.signature(getattr(AiriaClient, name))
        async_sig = inspect.signature(getattr(AiriaAsyncClient, name))
        assert list(sync_sig.parameters) == list(async_sig.parameters), name


@pytest.mark.parametrize(
    "name",
    [
        "create_conversation",
        "get_conversation",
        "delete_conversation",
        "update_conversation",
        "get_conversations_feed",
    ],
)
def test_flat_aliases_delegate(client, async_client, name):
    assert getattr(client, name) == getattr(client.conversations, name)
    assert getattr(async_client, name) == getattr(async_client.conversations, name)


async def test_async_round_trip(async_client, server: FakeServer):
    created = await async_client.create_conversation(user_id="user_123", title="A")
    got = await async_client.get_conversation(created.conversation_id)
    assert got.title == "A"
    updated = await async_client.update_conversation(created.conversation_id, title="B")
    assert updated.title == "B"
    feed = await async_client.get_conversations_feed()
    assert feed.total_count == 1
    await async_client.delete_conversation(created.conversation_id)
    with pytest.raises(NotFoundError):
        await async_client.get_conversation(created.conversation_id)


def test_sync_round_trip_through_aliases(client, server: FakeServer):
    created = client.create_conversation(user_id="user_123")
    assert client.get_conversation(created.conversation_id).user_id == "user_123"
    client.delete_conversation(conversation_id=created.conversation_id)
    assert server.conversations == {}


@pytest.fixture
def plain_http_server():
    """A real HTTP server on 127.0.0.1 answering every GET with a conversation, so that
    the clients below use pools of their own making (not an ``http_client`` passed in)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps(
                {
                    "conversationId": self.path.rsplit("/", 1)[-1],
                    "userId": "u",
                    "title": None,
                    "deploymentId": "d",
                    "websocketUrl": "ws://x/ws",
                    "messages": [],
                    "dataSourceFiles": {},
                    "isBookmarked": False,
                    "createdAt": "2026-11-26T06:01:34.123456Z",
                    "updatedAt": "2026-11-26T06:01:34.123456Z",
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_closed_client_works_on_with_a_fresh_pool(plain_http_server: str) -> None:
    """As the official package's requests session does; httpx alone raises RuntimeError."""
    client = AiriaClient(base_url=plain_http_server, api_key="k")
    assert client.conversations.get_conversation("c1").conversation_id == "c1"
    client.close()
    assert client.conversations.get_conversation("c2").conversation_id == "c2"
    client.close()


async def test_a_closed_async_client_works_on_with_a_fresh_pool(plain_http_server: str) -> None:
    client = AiriaAsyncClient(base_url=plain_http_server, api_key="k")
    assert (await client.conversations.get_conversation("c1")).conversation_id == "c1"
    await client.close()
    assert (await client.conversations.get_conversation("c2")).conversation_id == "c2"
    await client.close()
