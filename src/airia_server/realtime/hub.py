"""The in-process event hub: fans each conversation's events out to its sockets.

Each subscriber has a bounded buffer. Publishing never blocks and never waits
for a slow socket: when a subscriber's buffer is full it is marked overflowed
and its socket is closed with a code that tells the client to resume from the
last sequence it saw (the stored log fills the gap on reconnect).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

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
    """An event encoded once, shared by every subscriber it goes to: as text, and as
    the WebSocket frame that carries it (for sockets written to directly)."""

    __slots__ = ("frame", "role", "sequence", "size", "steers", "text", "type", "user_id")

    def __init__(self, event: EventRecord) -> None:
        self.sequence = event.sequence
        self.type = event.type
        self.text = encode_event(event)
        self.frame = text_frame(self.text.encode())
        self.size = len(self.text) + len(self.frame)
        """About what it holds in memory, as text and as a frame."""
        # Events after which a socket may have to close or change what it may do:
        # always through the socket's own sender.
        self.steers = self.type == "conversation.deleted" or self.type.startswith("participant.")
        # Participant events change what a socket's user may do; keep what it needs.
        self.user_id = event.data.get("userId") if self.type.startswith("participant.") else None
        self.role = event.data.get("role") if self.user_id is not None else None


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends it
    when no extension (compression) is in use."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 65536:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return head + payload


def encode_event(event: EventRecord) -> str:
    wire = WireEvent(
        type=event.type,
        sequence=event.sequence,
        conversation_id=event.conversation_id,
        created_at=event.created_at,
        data=event.data,
    )
    return _encode(wire).decode()


MAX_QUEUED_BYTES = 4 * 1024 * 1024
"""Most a socket may have queued (besides AIRIA_WS_QUEUE_SIZE events) before it is
dropped with 4000 and resumes from the stored log."""


class Subscription:
    __slots__ = (
        "_items",
        "_wakeup",
        "closed",
        "conversation_id",
        "direct",
        "key_id",
        "leaving",
        "maxsize",
        "needs_resync",
        "on_overflow",
        "overflowed",
        "owner",
        "queued_bytes",
        "revoked",
        "waiting",
    )

    def __init__(
        self, conversation_id: str, maxsize: int, owner: str = "", key_id: str | None = None
    ) -> None:
        self.conversation_id = conversation_id
        self.owner = owner
        self.key_id = key_id
        """The API key whose ticket opened the socket, if one did."""
        self.revoked = False
        """That key was revoked: the socket closes."""
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False
        self.needs_resync = False
        self.leaving = False
        """The server is shutting down: close with 1001 so the client reconnects elsewhere."""
        self.on_overflow: Callable[[], None] | None = None
        """Called once when the buffer overflows: the socket's sender may be stuck
        writing to a client that does not read, so waking it is not enough."""
        self._items: deque[LiveEvent] = deque()
        self.queued_bytes = 0
        self._wakeup = asyncio.Event()
        self.waiting = False
        """The socket's sender is idle, waiting for events."""
        self.direct: Callable[[LiveEvent], bool] | None = None
        """Set by the socket: writes an event's frame straight to the connection if it
        can (True), or declines (False) and the event is queued for the sender.

        Waking a sender task per socket, and its trip through the ASGI layers, was
        most of the cost of one event going to thousands of sockets; an idle sender
        has nothing in flight, so writing its next frame here keeps the order."""

    def push(self, event: LiveEvent) -> None:
        if self.overflowed:
            return
        too_many = len(self._items) >= self.maxsize
        # In bytes too: a thousand events of large messages would hold hundreds of MB
        # for one client that stopped reading. (One event always fits.)
        too_large = self._items and self.queued_bytes + event.size > MAX_QUEUED_BYTES
        if too_many or too_large:
            self.overflowed = True
            self._items.clear()
            self.queued_bytes = 0
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self._items.append(event)
            self.queued_bytes += event.size
        self._wakeup.set()

    def close(self) -> None:
        """The socket went away: wake the sender so it stops."""
        self.closed = True
        self._wakeup.set()

    def leave(self) -> bool:
        """The server is shutting down: wake the sender to close with 1001 (after what
        it has queued). False if it was asked already."""
        if self.leaving:
            return False
        self.leaving = True
        self._wakeup.set()
        return True

    def resync(self) -> None:
        """Live events may have been missed (the fan-out was down): reread the stored log."""
        self.needs_resync = True
        self._wakeup.set()

    def release(self) -> None:
        """The socket is gone: drop what is queued and the callbacks into it."""
        self._items.clear()
        self.queued_bytes = 0
        self.direct = None
        self.on_overflow = None

    def revoke(self) -> None:
        """The API key behind the socket was revoked: wake the sender to close."""
        self.revoked = True
        self._wakeup.set()

    async def next_batch(self) -> list[LiveEvent]:
        """Everything buffered, waiting until there is something, or the subscription is
        closed, overflowed or needs a resync (then possibly empty: check the flags)."""
        while not (
            self._items
            or self.overflowed
            or self.closed
            or self.needs_resync
            or self.leaving
            or self.revoked
        ):
            self._wakeup.clear()
            self.waiting = True
            try:
                await self._wakeup.wait()
            finally:
                self.waiting = False
        if self.closed:
            return []
        items = list(self._items)
        self._items.clear()
        self.queued_bytes = 0
        return items


class LocalHub:
    """Subscribers of this process only: the embedded default."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}
        self._owners: dict[str, int] = {}
        self.delivered = 0
        self.dropped = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def healthy(self) -> bool:
        return True

    async def subscribe(
        self, conversation_id: str, owner: str = "", key_id: str | None = None
    ) -> Subscription:
        """Events of this conversation published from now on reach the subscription.
        `owner` names whose socket it is, for the per-user socket limit; `key_id` the
        API key it was opened with, if any."""
        sub = Subscription(conversation_id, self.queue_size, owner, key_id)
        self._owners[owner] = self._owners.get(owner, 0) + 1
        self._subscribers.setdefault(conversation_id, set()).add(sub)
        return sub

    def sockets_of(self, owner: str) -> int:
        return self._owners.get(owner, 0)

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.conversation_id)
        if subs is not None and sub in subs:
            remaining = self._owners.get(sub.owner, 1) - 1
            if remaining > 0:
                self._owners[sub.owner] = remaining
            else:
                self._owners.pop(sub.owner, None)
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.conversation_id]

    async def close_all(self, timeout: float) -> None:
        """Ask every socket to close with 1001 and wait (up to `timeout`) until they have."""
        for subs in self._subscribers.values():
            for sub in subs:
                sub.leave()
        deadline = asyncio.get_running_loop().time() + timeout
        while self._subscribers and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    def key_ids(self) -> set[str]:
        """The API keys some socket here was opened with."""
        return {
            sub.key_id
            for subs in self._subscribers.values()
            for sub in subs
            if sub.key_id is not None
        }

    def revoke_key(self, key_id: str) -> int:
        """Close every socket opened with this API key; how many there were."""
        found = [sub for subs in self._subscribers.values() for sub in subs if sub.key_id == key_id]
        for sub in found:
            sub.revoke()
        return len(found)

    def resync_all(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.resync()

    @property
    def socket_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def publish(self, event: EventRecord) -> None:
        """Deliver after commit to every subscriber of the event's conversation.

        Scheduled rather than done here, so the request that caused the event answers
        first even when thousands of sockets listen; callbacks run in the order they
        were scheduled, so events keep their order."""
        if event.conversation_id in self._subscribers:
            asyncio.get_running_loop().call_soon(self.deliver, event)

    def deliver(self, event: EventRecord) -> None:
        subs = self._subscribers.get(event.conversation_id)
        if not subs:
            return
        live = LiveEvent(event)
        for sub in tuple(subs):
            direct = sub.direct
            if direct is not None and sub.waiting and not sub._items and direct(live):
                self.delivered += 1
                continue
            sub.push(live)
            if sub.overflowed:
                self.dropped += 1
            else:
                self.delivered += 1
