"""The in-process event hub: fans each conversation's events out to its sockets.

Each subscriber has a bounded buffer. Publishing never blocks and never waits
for a slow socket: when a subscriber's buffer is full it is marked overflowed
and its socket is closed with a code that tells the client to resume from the
last sequence it saw (the stored log fills the gap on reconnect).
"""

from __future__ import annotations

import asyncio
from collections import deque

import msgspec

from airia_server.storage.base import EventRecord

_encode = msgspec.json.encode


class WireEvent(msgspec.Struct, rename="camel"):
    type: str
    sequence: int | None
    conversation_id: str
    created_at: str
    data: dict


class LiveEvent:
    """An event encoded once, shared by every subscriber it goes to."""

    __slots__ = ("role", "sequence", "text", "type", "user_id")

    def __init__(self, event: EventRecord) -> None:
        self.sequence = event.sequence
        self.type = event.type
        self.text = encode_event(event)
        # Participant events change what a socket's user may do; keep what it needs.
        self.user_id = event.data.get("userId") if self.type.startswith("participant.") else None
        self.role = event.data.get("role") if self.user_id is not None else None


def encode_event(event: EventRecord) -> str:
    wire = WireEvent(
        type=event.type,
        sequence=event.sequence,
        conversation_id=event.conversation_id,
        created_at=event.created_at,
        data=event.data,
    )
    return _encode(wire).decode()


class Subscription:
    __slots__ = ("_items", "_wakeup", "closed", "conversation_id", "maxsize", "overflowed")

    def __init__(self, conversation_id: str, maxsize: int) -> None:
        self.conversation_id = conversation_id
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False
        self._items: deque[LiveEvent] = deque()
        self._wakeup = asyncio.Event()

    def push(self, event: LiveEvent) -> None:
        if self.overflowed:
            return
        if len(self._items) >= self.maxsize:
            self.overflowed = True
            self._items.clear()
        else:
            self._items.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """The socket went away: wake the sender so it stops."""
        self.closed = True
        self._wakeup.set()

    async def next_batch(self) -> list[LiveEvent]:
        """Everything buffered, waiting for at least one event; empty once closed or overflowed."""
        while not self._items and not self.overflowed and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.closed:
            return []
        items = list(self._items)
        self._items.clear()
        return items


class LocalHub:
    """Subscribers of this process only: the embedded default."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}
        self.delivered = 0
        self.dropped = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def subscribe(self, conversation_id: str) -> Subscription:
        sub = Subscription(conversation_id, self.queue_size)
        self._subscribers.setdefault(conversation_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.conversation_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.conversation_id]

    @property
    def socket_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def publish(self, event: EventRecord) -> None:
        subs = self._subscribers.get(event.conversation_id)
        if not subs:
            return
        live = LiveEvent(event)
        for sub in tuple(subs):
            sub.push(live)
            if sub.overflowed:
                self.dropped += 1
            else:
                self.delivered += 1
