"""Replaying stored events to a socket: pages sized by bytes, and the live stream's rules."""

from __future__ import annotations

import asyncio
import json

import pytest

from airia_server.api import realtime
from airia_server.domain.tickets import TicketClaims
from airia_server.storage.base import EventRecord

CID = "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"


class Socket:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        assert self.closed is None, "sent after closing"
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


class Log:
    """A conversation's stored events, each `size` characters of message, or given."""

    def __init__(self, count: int = 0, size: int = 10, events: list[EventRecord] | None = None):
        self.events = events or [message(i + 1, "x" * size) for i in range(count)]
        self.asked: list[int] = []
        self.role_now: str | None = None
        """The user's role in the conversation now (None: not a participant)."""

    async def get_conversation_for(self, tenant_id: str, conversation_id: str, user_id: str):
        return object(), self.role_now

    async def events_after(self, conversation_id: str, after: int, limit: int):
        self.asked.append(limit)
        return [e for e in self.events if e.sequence > after][:limit]


def message(sequence: int, text: str) -> EventRecord:
    return EventRecord(
        conversation_id=CID,
        sequence=sequence,
        type="message.created",
        created_at="2026-11-27T00:00:00.000000Z",
        data={"message": text},
    )


def connection(user_id: str | None = None) -> realtime._Connection:
    claims = TicketClaims(1, "default", CID, user_id, 4_000_000_000)
    return realtime._Connection(claims, CID, "Collaborator", "owner")


def replay(log: Log, conn: realtime._Connection, before: int | None = None) -> Socket:
    socket = Socket()
    asyncio.run(realtime._replay(socket, log, conn, before))
    return socket


def test_small_events_come_in_pages_of_up_to_500() -> None:
    log, conn = Log(count=1_300), connection()
    socket = replay(log, conn)
    assert [e["sequence"] for e in socket.sent] == list(range(1, 1_301))
    assert conn.last == 1_300
    assert log.asked == [realtime._REPLAY_FIRST_PAGE, 500, 500, 500]


def test_large_events_come_in_pages_of_about_a_mebibyte() -> None:
    """A client that stops reading holds one page: 20 pages of 400 KB events would pin
    hundreds of MB per socket."""
    log, conn = Log(count=60, size=400_000), connection()
    socket = replay(log, conn)
    assert [e["sequence"] for e in socket.sent] == list(range(1, 61))
    assert log.asked[0] == realtime._REPLAY_FIRST_PAGE
    assert set(log.asked[1:]) == {2}  # 1 MiB of 400 KB events


def test_a_replay_stops_before_the_live_event_that_revealed_the_gap() -> None:
    log, conn = Log(count=10), connection()
    conn.last = 3
    socket = replay(log, conn, before=7)
    assert [e["sequence"] for e in socket.sent] == [4, 5, 6]
    assert conn.last == 6


@pytest.mark.parametrize(
    ("kind", "code"), [("participant.removed", 1008), ("conversation.deleted", 1000)]
)
def test_a_replayed_event_closes_the_socket_as_a_live_one_would(kind: str, code: int) -> None:
    """Events missed while the fan-out was down come back through the replay: a removal
    found there must close the socket, not leave it open to read what follows."""
    events = [message(1, "before"), message(2, "x"), message(3, "after")]
    events[1].type = kind
    events[1].data = {"userId": "bob", "role": "Collaborator"}
    socket = Socket()
    with pytest.raises(realtime._Closed):
        asyncio.run(realtime._replay(socket, Log(events=events), connection("bob"), None))
    assert [e["sequence"] for e in socket.sent] == [1, 2]
    assert socket.closed is not None and socket.closed[0] == code


def test_a_replayed_role_change_applies() -> None:
    events = [message(1, "x")]
    events[0].type = "participant.updated"
    events[0].data = {"userId": "bob", "role": "Viewer"}
    conn = connection("bob")
    replay(Log(events=events), conn)
    assert conn.role == "Viewer"


def test_a_replayed_removal_of_a_user_added_again_since_leaves_the_socket_open() -> None:
    """Resuming from before a removal: the removal is history, the user is back."""
    events = [message(1, "x"), message(2, "x"), message(3, "after")]
    events[0].type, events[0].data = "participant.removed", {"userId": "bob"}
    events[1].type, events[1].data = "participant.added", {"userId": "bob", "role": "Viewer"}
    log, conn = Log(events=events), connection("bob")
    log.role_now = "Viewer"
    socket = replay(log, conn)
    assert [e["sequence"] for e in socket.sent] == [1, 2, 3]
    assert socket.closed is None and conn.role == "Viewer"


def test_a_deletion_whose_gap_the_log_cannot_fill_follows_the_last_event_sent() -> None:
    """A socket replaying from after=0 while its conversation is deleted: the log goes
    with the conversation, and the live `conversation.deleted` (301) would leave a gap
    after the 20 events sent. It is sent as 21, then the socket closes with 1000."""
    from types import SimpleNamespace

    from airia_server.realtime.hub import LiveEvent, Subscription

    sub = Subscription(CID, 10)
    gone = EventRecord(
        conversation_id=CID,
        sequence=301,
        type="conversation.deleted",
        created_at="2026-11-27T00:00:00.000000Z",
        data={"conversationId": CID},
    )
    sub.push(LiveEvent(gone))
    conn = connection()
    conn.last = 20
    socket = Socket()
    asyncio.run(realtime._stream(socket, SimpleNamespace(store=Log()), sub, conn))
    assert [(e["type"], e["sequence"]) for e in socket.sent] == [("conversation.deleted", 21)]
    assert socket.closed is not None and socket.closed[0] == 1000


def test_a_subscription_overflows_on_bytes_as_on_events() -> None:
    """A thousand events of large messages would hold hundreds of MB for a client that
    stopped reading; past MAX_QUEUED_BYTES it is dropped (4000) as past the count."""
    from airia_server.realtime.hub import MAX_QUEUED_BYTES, LiveEvent, Subscription

    overflows: list[bool] = []
    sub = Subscription(CID, 1000)
    sub.on_overflow = lambda: overflows.append(True)
    big = LiveEvent(message(1, "x" * 400_000))
    assert big.size > 800_000
    pushed = 0
    while not sub.overflowed:
        sub.push(big)
        pushed += 1
    assert pushed * big.size > MAX_QUEUED_BYTES >= (pushed - 1) * big.size
    assert overflows == [True] and sub.queued_bytes == 0
    alone = Subscription(CID, 1000)
    huge = LiveEvent(message(1, "x" * (MAX_QUEUED_BYTES // 2 + 1)))
    alone.push(huge)  # one event always fits, however large
    assert not alone.overflowed and alone.queued_bytes == huge.size
    alone.release()
    assert alone.queued_bytes == 0 and alone.direct is None and alone.on_overflow is None
