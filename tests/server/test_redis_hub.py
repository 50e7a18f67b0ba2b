"""The Redis fan-out (`RedisHub`) against the real Redis: events published together
travel together, in order, and reach the sockets of every instance."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as redis

import backends
from airia_server.realtime.redis_hub import RedisHub
from airia_server.storage.base import EventRecord


def event(conversation_id: str, sequence: int) -> EventRecord:
    return EventRecord(
        conversation_id=conversation_id,
        sequence=sequence,
        type="message.created",
        created_at="2026-11-26T00:00:00.000000Z",
        data={"n": sequence},
    )


@pytest.fixture
async def hubs() -> AsyncIterator[tuple[RedisHub, RedisHub, str]]:
    """Two instances' hubs on one fresh prefix, and that prefix."""
    backends.require(backends.redis_problem())
    prefix = f"test-hub-{uuid.uuid4().hex[:12]}"
    pair = (
        RedisHub(backends.REDIS_URL, prefix=prefix),
        RedisHub(backends.REDIS_URL, prefix=prefix),
    )
    for hub in pair:
        await hub.start()
        assert hub.healthy
    try:
        yield pair[0], pair[1], prefix
    finally:
        for hub in pair:
            await hub.close()


async def received(sub, count: int) -> list[int]:
    got: list[int] = []
    while len(got) < count:
        batch = await asyncio.wait_for(sub.next_batch(), 5)
        got += [live.sequence for live in batch]
    return got


async def test_events_published_together_share_messages_and_keep_their_order(hubs) -> None:
    here, there, prefix = hubs
    watcher = redis.from_url(backends.REDIS_URL)
    pubsub = watcher.pubsub()
    await pubsub.subscribe(f"{prefix}:events")
    try:
        local = await here.subscribe("c1")
        remote = await there.subscribe("c1")
        await asyncio.gather(*(here.publish(event("c1", n)) for n in range(1, 101)))

        assert await received(local, 100) == list(range(1, 101))
        assert await received(remote, 100) == list(range(1, 101))
        messages = 0
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            messages += message["type"] == "message"
        assert 1 <= messages < 100  # in batches: fewer messages than events
    finally:
        await pubsub.aclose()
        await watcher.aclose()


async def test_a_single_event_from_an_older_instance_is_delivered(hubs) -> None:
    """Older versions publish one event per message; this one still hears them."""
    here, _, prefix = hubs
    sub = await here.subscribe("c2")
    sender = redis.from_url(backends.REDIS_URL)
    try:
        await sender.publish(f"{prefix}:events", msgspec.msgpack.encode(event("c2", 7)))
    finally:
        await sender.aclose()
    assert await received(sub, 1) == [7]
