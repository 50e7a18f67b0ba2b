"""The real-time channel: `websocketUrl` opens here.

The ticket in the URL is checked before `accept()`. The socket subscribes
first, then replays stored events after `?after=N`, then streams live ones,
skipping any it already sent and filling any gap from the stored log, so a
client sees each sequence exactly once and in order.

Clients may send `{"type": "typing", "isTyping": true}` and
`{"type": "presence", "action": "joined"}`; they are broadcast like the HTTP
equivalents, with the same role rules.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from airia_server.api.deps import Services, services
from airia_server.domain import access
from airia_server.domain.tickets import InvalidTicket, TicketClaims
from airia_server.ids import parse_id
from airia_server.realtime.hub import LiveEvent, Subscription, encode_event
from airia_server.storage.base import ConversationRecord, EventRecord
from airia_server.timeutil import utcnow_iso

log = logging.getLogger("airia_server.realtime")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_RESUME = 4000
"""The server dropped this subscriber because it fell behind: reconnect with
`after=<last sequence received>` and nothing is lost."""

_REPLAY_PAGE = 500
_MAX_CLIENT_FRAME = 4096


class _ClientSignal(msgspec.Struct, kw_only=True, rename="camel"):
    type: str
    is_typing: bool | None = None
    action: str | None = None
    user_id: str | None = None


_decode_signal = msgspec.json.Decoder(_ClientSignal).decode


class _Connection:
    """What one open socket knows about its caller."""

    __slots__ = ("claims", "conversation_id", "last", "role")

    def __init__(self, claims: TicketClaims, conversation_id: str, role: str) -> None:
        self.claims = claims
        self.conversation_id = conversation_id
        self.role = role
        self.last = 0
        """The last sequence sent to this client."""


async def conversation_socket(websocket: WebSocket) -> None:
    svc = services(websocket)
    conversation_id = parse_id(websocket.path_params["conversation_id"])
    ticket = websocket.query_params.get("ticket", "")
    after_raw = websocket.query_params.get("after")
    try:
        if conversation_id is None:
            raise InvalidTicket("unknown conversation")
        claims = svc.tickets.verify(ticket, conversation_id)
        after = int(after_raw) if after_raw not in (None, "") else None
        if after is not None and not 0 <= after < 2**62:
            raise ValueError(after)
    except (InvalidTicket, ValueError) as exc:
        log.info("websocket refused: %s", exc)
        await websocket.close(code=CLOSE_POLICY)
        return

    owner = f"{claims.tenant_id}:{claims.user_id}" if claims.user_id else ""
    if owner and svc.hub.sockets_of(owner) >= svc.settings.ws_max_sockets_per_user:
        log.info("websocket refused: %s has too many open sockets", claims.user_id)
        await websocket.close(code=CLOSE_POLICY)
        return
    # Subscribe before reading the current sequence, so nothing falls between.
    sub = await svc.hub.subscribe(conversation_id, owner)
    try:
        found = await _visible(svc, claims, conversation_id)
        if found is None:
            await websocket.close(code=CLOSE_POLICY)
            return
        record, role = found
        await websocket.accept()
        conn = _Connection(claims, conversation_id, role)
        reader = asyncio.create_task(_read_client(websocket, svc, sub, conn))
        start = after if after is not None else record.last_sequence
        sender = asyncio.create_task(_stream(websocket, svc, sub, conn, start))
        sub.on_overflow = sender.cancel
        frames = websocket.scope.get("extensions", {}).get("airia.frames")
        if frames is not None:
            sub.direct = _direct_writer(sub, conn, frames)
            frames.going_away = sub.leave
        try:
            await sender
        except asyncio.CancelledError:
            if not sub.overflowed:
                raise
            # The client stopped reading: the sender was stuck writing to it.
            await _close_quietly(websocket, CLOSE_RESUME, f"resume after={conn.last}")
        finally:
            reader.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        svc.hub.unsubscribe(sub)


async def _visible(
    svc: Services, claims: TicketClaims, conversation_id: str
) -> tuple[ConversationRecord, str] | None:
    """The conversation and the ticket holder's role, if they may still watch it."""
    if claims.user_id is None:  # minted for an API key: every right in its tenant
        record = await svc.store.get_conversation(claims.tenant_id, conversation_id)
        return (record, "Owner") if record is not None else None
    found = await svc.store.get_conversation_for(claims.tenant_id, conversation_id, claims.user_id)
    if found is None or found[1] is None:
        return None
    return found[0], found[1]


async def _stream(
    websocket: WebSocket, svc: Services, sub: Subscription, conn: _Connection, last: int
) -> None:
    store = svc.store
    conn.last = last = await _replay(websocket, store, sub.conversation_id, last, None)
    while True:
        batch = await sub.next_batch()
        last = conn.last  # events may have been written directly while this waited
        if sub.overflowed:
            await websocket.close(code=CLOSE_RESUME, reason=f"resume after={last}")
            return
        if sub.closed:  # the client went away
            return
        if sub.leaving:
            await _close_quietly(websocket, CLOSE_GOING_AWAY, "server shutting down")
            return
        if sub.needs_resync:
            sub.needs_resync = False
            conn.last = last = await _replay(websocket, store, sub.conversation_id, last, None)
        for event in batch:
            if event.sequence is None:
                await websocket.send_text(event.text)
                continue
            if event.sequence <= last:
                continue
            if event.sequence > last + 1:
                conn.last = last = await _replay(
                    websocket, store, sub.conversation_id, last, event.sequence
                )
            await websocket.send_text(event.text)
            conn.last = last = event.sequence
            if event.type == "conversation.deleted":
                await websocket.close(code=CLOSE_NORMAL, reason="conversation deleted")
                return
            if event.type.startswith("participant.") and event.user_id == conn.claims.user_id:
                if event.type == "participant.removed":
                    await websocket.close(code=CLOSE_POLICY, reason="access removed")
                    return
                conn.role = event.role or conn.role


def _direct_writer(sub: Subscription, conn: _Connection, frames: Any):
    """What the hub calls to hand this socket an event while its sender is idle: the
    frame is written at once when it is simply the next one in sequence (or carries
    none) and needs no decision of the sender's; anything else goes to the sender."""

    def write(event: LiveEvent) -> bool:
        sequence = event.sequence
        if event.steers or (sequence is not None and sequence != conn.last + 1):
            return False
        if sub.closed or sub.leaving or sub.needs_resync or sub.overflowed:
            return False
        if not frames.write_frame(event.frame):
            return False
        if sequence is not None:
            conn.last = sequence
        return True

    return write


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close, but do not wait forever on a client that reads nothing."""
    try:
        await asyncio.wait_for(websocket.close(code=code, reason=reason), 10.0)
    except (TimeoutError, RuntimeError, WebSocketDisconnect):
        pass


async def _replay(websocket, store, conversation_id: str, last: int, before: int | None) -> int:
    """Send stored events after `last` (and before `before`); the new last sequence."""
    while True:
        events = await store.events_after(conversation_id, last, _REPLAY_PAGE)
        for event in events:
            if before is not None and event.sequence >= before:
                return last
            await websocket.send_text(encode_event(event))
            last = event.sequence
        if len(events) < _REPLAY_PAGE:
            return last


async def _read_client(
    websocket: WebSocket, svc: Services, sub: Subscription, conn: _Connection
) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is not None:
                await _on_client_frame(websocket, svc, conn, text)
    except Exception:  # the socket is gone either way
        log.debug("websocket reader stopped", exc_info=True)
    sub.close()


async def _on_client_frame(websocket: WebSocket, svc: Services, conn: _Connection, text: str):
    error = None
    try:
        if len(text) > _MAX_CLIENT_FRAME:
            raise ValueError("frame too large")
        signal = _decode_signal(text)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        error = f"invalid frame: {type(exc).__name__}"
    else:
        data: dict[str, Any]
        if signal.type == "typing" and signal.is_typing is not None:
            data = {"isTyping": signal.is_typing}
        elif signal.type == "presence" and signal.action in ("joined", "left"):
            data = {"action": signal.action}
        else:
            error = "send {type: typing, isTyping} or {type: presence, action: joined|left}"
        if error is None and not access.role_allows(conn.role, access.WRITE):
            error = f"a {conn.role} cannot send {signal.type}"
        if error is None:
            user = conn.claims.user_id if conn.claims.user_id is not None else signal.user_id
            await svc.hub.publish(
                EventRecord(
                    conversation_id=conn.conversation_id,
                    sequence=None,
                    type=signal.type,
                    created_at=utcnow_iso(),
                    data={"userId": user, **data},
                )
            )
    if error is not None:
        await websocket.send_text(msgspec.json.encode({"type": "error", "message": error}).decode())


routes = [WebSocketRoute("/v1/Conversations/{conversation_id}/ws", conversation_socket)]
