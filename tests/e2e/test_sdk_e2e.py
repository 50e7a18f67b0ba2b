"""Our SDK, sync and async, against the real server, as a user would drive it."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from airia import (
    AiriaAPIError,
    AiriaAsyncClient,
    AiriaClient,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
)

from .support import LiveServer, mint_jwt

pytestmark = pytest.mark.e2e

ODD_IDS = [
    "your_conversation_id",
    "",
    "../x",
    "..",
    "a/b",
    "?q=1",
    "#frag",
    "x" * 300,
    "été-日本-🙂",
    "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e",
]
ODD_ID_NAMES = [
    "placeholder",
    "empty",
    "dotdot-slash",
    "dotdot",
    "slash",
    "query",
    "fragment",
    "300-chars",
    "unicode",
    "random-uuid",
]


@pytest.fixture
def client(server: LiveServer) -> Iterator[AiriaClient]:
    with AiriaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(server: LiveServer) -> AsyncIterator[AiriaAsyncClient]:
    async with AiriaAsyncClient(
        base_url=server.base_url, api_key=server.api_key, max_retries=0
    ) as c:
        yield c


def _aware(value: datetime | None) -> datetime:
    assert value is not None
    assert value.tzinfo is not None and value.utcoffset().total_seconds() == 0
    return value


# --- sync round trip ----------------------------------------------------------------


def test_create_get_update_delete(client: AiriaClient, user_id: str) -> None:
    created = client.conversations.create_conversation(
        user_id=user_id,
        title="Round trip",
        deployment_id="deployment_456",
        data_source_files={"documents": ["doc1.pdf", "doc2.txt"]},
        is_bookmarked=True,
    )
    uuid.UUID(created.conversation_id)
    assert uuid.UUID(created.conversation_id).version == 7
    assert created.user_id == user_id
    assert created.deployment_id == "deployment_456"
    assert created.websocket_url.startswith("ws://")
    assert created.is_bookmarked is True
    assert created.data_source_files == {"documents": ["doc1.pdf", "doc2.txt"]}
    before = datetime.now(timezone.utc)
    assert _aware(created.created_at) <= before

    got = client.conversations.get_conversation(created.conversation_id)
    assert got.conversation_id == created.conversation_id
    assert got.title == "Round trip"
    assert got.messages == []
    assert got.data_source_files == {"documents": ["doc1.pdf", "doc2.txt"]}
    assert got.is_bookmarked is True
    assert got.deployment_id == "deployment_456"
    assert got.websocket_url and got.websocket_url.startswith("ws://")
    assert _aware(got.created_at) == _aware(created.created_at)

    updated = client.conversations.update_conversation(
        created.conversation_id,
        title="Renamed",
        is_bookmarked=False,
        last_execution_status="Completed",
        last_execution_id="exec-1",
    )
    assert updated.title == "Renamed"
    assert updated.is_bookmarked is False
    assert updated.last_execution_status == "Completed"
    assert updated.last_execution_id == "exec-1"
    assert updated.data_source_files == {"documents": ["doc1.pdf", "doc2.txt"]}
    assert _aware(updated.updated_at) >= _aware(got.updated_at)

    again = client.conversations.get_conversation(created.conversation_id)
    assert (again.title, again.is_bookmarked, again.last_execution_status) == (
        "Renamed",
        False,
        "Completed",
    )

    assert client.conversations.delete_conversation(created.conversation_id) is None
    with pytest.raises(NotFoundError) as info:
        client.conversations.get_conversation(created.conversation_id)
    assert info.value.status_code == 404
    assert info.value.message == "Conversation not found"
    with pytest.raises(NotFoundError):
        client.conversations.delete_conversation(created.conversation_id)


def test_create_minimal_gets_defaults(client: AiriaClient, user_id: str) -> None:
    created = client.conversations.create_conversation(user_id=user_id)
    assert created.title is None
    assert created.deployment_id  # the server's default deployment, never null
    assert created.is_bookmarked is False
    got = client.conversations.get_conversation(created.conversation_id)
    assert got.data_source_files == {}
    assert got.messages == []


def test_accepts_guid_user_ids(client: AiriaClient) -> None:
    guid = str(uuid.uuid4())
    created = client.conversations.create_conversation(user_id=guid, deployment_id=guid)
    assert client.conversations.get_conversation(created.conversation_id).user_id == guid


def test_get_accepts_uppercase_uuid(client: AiriaClient, user_id: str) -> None:
    created = client.conversations.create_conversation(user_id=user_id)
    got = client.conversations.get_conversation(created.conversation_id.upper())
    assert got.conversation_id == created.conversation_id


def test_flat_aliases_work(client: AiriaClient, user_id: str) -> None:
    created = client.create_conversation(user_id=user_id)
    assert client.get_conversation(created.conversation_id).user_id == user_id
    client.delete_conversation(created.conversation_id)
    with pytest.raises(AiriaAPIError) as info:
        client.delete_conversation(conversation_id=created.conversation_id)
    assert info.value.status_code == 404


@pytest.mark.parametrize("conversation_id", ODD_IDS, ids=ODD_ID_NAMES)
def test_unknown_ids_of_any_shape_are_404(client: AiriaClient, conversation_id: str) -> None:
    for call in (
        client.conversations.get_conversation,
        client.conversations.delete_conversation,
        lambda cid: client.conversations.update_conversation(cid, title="t"),
    ):
        with pytest.raises(AiriaAPIError) as info:
            call(conversation_id)
        assert info.value.status_code == 404, (conversation_id, str(info.value))
        assert info.value.message


def test_update_blank_title_is_a_422(client: AiriaClient, user_id: str) -> None:
    created = client.conversations.create_conversation(user_id=user_id)
    with pytest.raises(AiriaAPIError) as info:
        client.conversations.update_conversation(created.conversation_id, title="  ")
    assert info.value.status_code == 422


def test_wrong_key_is_authentication_error(server: LiveServer) -> None:
    with AiriaClient(base_url=server.base_url, api_key="ak_wrong", max_retries=0) as c:
        with pytest.raises(AuthenticationError) as info:
            c.conversations.get_conversations_feed()
    assert info.value.status_code == 401


def test_bearer_client(server: LiveServer, user_id: str) -> None:
    token = mint_jwt(user_id)
    with AiriaClient.with_bearer_token(token, base_url=server.base_url, max_retries=0) as c:
        created = c.conversations.create_conversation(user_id=user_id, title="mine")
        assert c.conversations.get_conversation(created.conversation_id).title == "mine"
        with pytest.raises(PermissionDeniedError):
            c.conversations.create_conversation(user_id=user_id + "_other")
        feed = c.conversations.get_conversations_feed()
        assert [item.conversation_id for item in feed.items] == [created.conversation_id]
        c.conversations.delete_conversation(created.conversation_id)


# --- feed ---------------------------------------------------------------------------


@pytest.fixture
def five_conversations(client: AiriaClient, user_id: str) -> list[str]:
    titles = ["delta", "alpha", "echo", "charlie", "bravo"]
    return [
        client.conversations.create_conversation(
            user_id=user_id, title=f"{t} notes"
        ).conversation_id
        for t in titles
    ]


def test_feed_paginates_with_total_count(
    client: AiriaClient, user_id: str, five_conversations: list[str]
) -> None:
    seen: list[str] = []
    for page_number in (1, 2, 3):
        page = client.conversations.get_conversations_feed(
            page_number=page_number,
            page_size=2,
            user_id=user_id,
            sort_by="createdAt",
            sort_direction="asc",
        )
        assert page.total_count == 5
        assert len(page.items) == (2 if page_number < 3 else 1)
        seen += [item.conversation_id for item in page.items]
    assert seen == five_conversations
    beyond = client.conversations.get_conversations_feed(
        page_number=4, page_size=2, user_id=user_id
    )
    assert beyond.items == [] and beyond.total_count == 5


def test_feed_sorts_by_title_both_ways(
    client: AiriaClient, user_id: str, five_conversations: list[str]
) -> None:
    expected = [f"{t} notes" for t in ("alpha", "bravo", "charlie", "delta", "echo")]
    asc = client.conversations.get_conversations_feed(
        sort_by="title", sort_direction="asc", user_id=user_id
    )
    assert [item.title for item in asc.items] == expected
    desc = client.conversations.get_conversations_feed(
        sort_by="title", sort_direction="desc", user_id=user_id
    )
    assert [item.title for item in desc.items] == expected[::-1]


def test_feed_defaults_to_most_recently_updated_first(
    client: AiriaClient, user_id: str, five_conversations: list[str]
) -> None:
    client.conversations.update_conversation(five_conversations[0], title="delta notes v2")
    feed = client.conversations.get_conversations_feed(user_id=user_id)
    assert feed.items[0].conversation_id == five_conversations[0]
    assert [i.conversation_id for i in feed.items[1:]] == five_conversations[:0:-1]


def test_feed_filters_by_title_text(
    client: AiriaClient, user_id: str, five_conversations: list[str]
) -> None:
    feed = client.conversations.get_conversations_feed(filter="char", user_id=user_id)
    assert [item.title for item in feed.items] == ["charlie notes"]
    assert feed.total_count == 1
    none = client.conversations.get_conversations_feed(filter="%", user_id=user_id)
    assert none.total_count == 0  # LIKE wildcards are matched literally


def test_feed_user_id_narrows_an_api_key_feed(
    client: AiriaClient, user_id: str, five_conversations: list[str]
) -> None:
    other = f"{user_id}_other"
    client.conversations.create_conversation(user_id=other)
    mine = client.conversations.get_conversations_feed(user_id=user_id, page_size=100)
    assert {i.conversation_id for i in mine.items} == set(five_conversations)
    assert all(i.user_id == user_id for i in mine.items)
    theirs = client.conversations.get_conversations_feed(user_id=other)
    assert theirs.total_count == 1
    everyone = client.conversations.get_conversations_feed(page_size=100)
    assert everyone.total_count >= 6


def test_feed_items_carry_the_dto_fields(
    client: AiriaClient, user_id: str, five_conversations: list[str]
) -> None:
    item = client.conversations.get_conversations_feed(user_id=user_id, page_size=1).items[0]
    assert item.user_id == user_id
    assert item.message_count == 0
    assert item.deployment_id
    assert item.is_bookmarked is False
    _aware(item.created_at)
    _aware(item.updated_at)


def test_deleted_conversations_leave_the_feed(
    client: AiriaClient, user_id: str, five_conversations: list[str]
) -> None:
    client.conversations.delete_conversation(five_conversations[2])
    feed = client.conversations.get_conversations_feed(user_id=user_id)
    assert feed.total_count == 4
    assert five_conversations[2] not in {i.conversation_id for i in feed.items}


# --- correlation ids ----------------------------------------------------------------


def test_correlation_id_is_echoed(server: LiveServer, http: httpx.Client) -> None:
    response = http.get(
        "/v1/Conversations/feed", headers={**server.headers(), "X-Correlation-ID": "abc-123.x:y"}
    )
    assert response.status_code == 200
    assert response.headers["x-correlation-id"] == "abc-123.x:y"


def test_correlation_id_is_generated_when_absent(server: LiveServer, http: httpx.Client) -> None:
    first = http.get("/v1/Conversations/feed", headers=server.headers())
    second = http.get("/v1/Conversations/feed", headers=server.headers())
    assert first.headers["x-correlation-id"]
    assert first.headers["x-correlation-id"] != second.headers["x-correlation-id"]


def test_unsafe_correlation_id_is_replaced(server: LiveServer, http: httpx.Client) -> None:
    response = http.get(
        "/v1/Conversations/feed",
        headers={**server.headers(), "X-Correlation-ID": "evil id\tforged=1"},
    )
    echoed = response.headers["x-correlation-id"]
    assert echoed and echoed != "evil id\tforged=1"
    assert " " not in echoed


def test_correlation_id_on_errors_matches_the_sdk_error(server: LiveServer) -> None:
    with AiriaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0) as c:
        with pytest.raises(NotFoundError) as info:
            c.conversations.get_conversation("nope", correlation_id="sdk-trace-1")
    assert info.value.correlation_id == "sdk-trace-1"
    assert info.value.body["correlationId"] == "sdk-trace-1"


# --- async --------------------------------------------------------------------------


async def test_async_round_trip(aclient: AiriaAsyncClient, user_id: str) -> None:
    created = await aclient.conversations.create_conversation(
        user_id=user_id, title="async", data_source_files={"d": ["a.txt"]}
    )
    got = await aclient.conversations.get_conversation(created.conversation_id)
    assert (got.title, got.data_source_files) == ("async", {"d": ["a.txt"]})
    updated = await aclient.conversations.update_conversation(
        created.conversation_id, title="async 2"
    )
    assert updated.title == "async 2"
    feed = await aclient.conversations.get_conversations_feed(user_id=user_id)
    assert [i.conversation_id for i in feed.items] == [created.conversation_id]
    await aclient.conversations.delete_conversation(created.conversation_id)
    with pytest.raises(NotFoundError):
        await aclient.conversations.get_conversation(created.conversation_id)


async def test_async_concurrent_creates_all_land(aclient: AiriaAsyncClient, user_id: str) -> None:
    created = await asyncio.gather(
        *(
            aclient.conversations.create_conversation(user_id=user_id, title=f"c{i}")
            for i in range(50)
        )
    )
    ids = {c.conversation_id for c in created}
    assert len(ids) == 50
    feed = await aclient.conversations.get_conversations_feed(user_id=user_id, page_size=100)
    assert feed.total_count == 50
    assert {i.conversation_id for i in feed.items} == ids


@pytest.mark.parametrize("conversation_id", ODD_IDS, ids=ODD_ID_NAMES)
async def test_async_unknown_ids_are_404(aclient: AiriaAsyncClient, conversation_id: str) -> None:
    with pytest.raises(AiriaAPIError) as info:
        await aclient.conversations.get_conversation(conversation_id)
    assert info.value.status_code == 404


# --- events -------------------------------------------------------------------------


async def eventually(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail("not within 10 s")


async def test_events_after_past_the_end_go_on_from_the_last_stored_event(
    aclient: AiriaAsyncClient, user_id: str
) -> None:
    cid = (await aclient.conversations.create_conversation(user_id=user_id)).conversation_id
    await aclient.conversations.add_message(cid, "one")
    async with aclient.conversations.events(cid, after=100) as stream:
        first = asyncio.create_task(stream.__anext__())
        await eventually(lambda: stream.last_sequence == 1)  # told by the 4000's reason
        await aclient.conversations.add_message(cid, "two")
        event = await asyncio.wait_for(first, 10)
        assert (event.type, event.sequence, event.data.message) == ("message.created", 2, "two")


async def test_an_api_keys_stream_signals_as_the_user_it_names(
    aclient: AiriaAsyncClient, user_id: str
) -> None:
    cid = (await aclient.conversations.create_conversation(user_id=user_id)).conversation_id
    await aclient.conversations.add_message(cid, "one")
    async with aclient.conversations.events(cid, after=0) as stream:
        assert (await asyncio.wait_for(stream.__anext__(), 10)).sequence == 1
        await stream.send_typing(True, user_id="assistant_bot")
        await stream.send_presence("joined")
        typing, presence = [await asyncio.wait_for(stream.__anext__(), 10) for _ in range(2)]
    assert (typing.type, typing.data.user_id, typing.data.is_typing) == (
        "typing",
        "assistant_bot",
        True,
    )
    assert (presence.type, presence.data.user_id) == ("presence", user_id)  # the owner's


def test_events_written_between_entering_and_iterating_are_delivered(
    client: AiriaClient, user_id: str
) -> None:
    cid = client.conversations.create_conversation(user_id=user_id).conversation_id
    client.conversations.add_message(cid, "before")
    with client.conversations.events(cid) as stream:
        assert stream.last_sequence == 1  # where the stream starts: after "before"
        client.conversations.add_message(cid, "between")
        event = next(stream)
        assert (event.sequence, event.data.message) == (2, "between")


async def test_a_gets_last_sequence_continues_from_what_it_showed(
    aclient: AiriaAsyncClient, user_id: str
) -> None:
    cid = (await aclient.conversations.create_conversation(user_id=user_id)).conversation_id
    await aclient.conversations.add_message(cid, "shown")
    shown = await aclient.conversations.get_conversation(cid)
    assert (shown.last_sequence, [m.message for m in shown.messages]) == (1, ["shown"])
    await aclient.conversations.add_message(cid, "after the GET")
    assert (await aclient.conversations.websocket_url(cid)).last_sequence == 2
    async with aclient.conversations.events(cid, after=shown.last_sequence) as stream:
        event = await asyncio.wait_for(stream.__anext__(), 10)
        assert (event.sequence, event.data.message) == (2, "after the GET")


# The connections left open by each loop's end are dropped with it, as Python warns.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_async_client_works_across_event_loops(server: LiveServer, user_id: str) -> None:
    """One client, an `asyncio.run` per operation (as a script or a test suite with a
    loop per test does): its pooled connections were bound to the first loop, and
    the second call raised `RuntimeError: Event loop is closed`."""
    client = AiriaAsyncClient(base_url=server.base_url, api_key=server.api_key)
    created = asyncio.run(client.conversations.create_conversation(user_id=user_id))
    fetched = asyncio.run(client.conversations.get_conversation(created.conversation_id))
    assert fetched.conversation_id == created.conversation_id
    asyncio.run(client.conversations.delete_conversation(created.conversation_id))
    asyncio.run(client.close())
    gc.collect()  # the ended loops' connections, warned about here rather than later
