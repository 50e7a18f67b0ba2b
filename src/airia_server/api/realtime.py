"""The real-time channel: `websocketUrl` opens here.

The ticket in the URL is checked before `accept()`. The socket subscribes
first, then replays stored events after `?after=N`, then streams live ones,
skipping any it already sent and filling any gap from the stored log, so a
client sees each sequence exactly once and in order.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from airia_server.api.deps import services
from airia_server.domain.tickets import InvalidTicket
from airia_server.ids import parse_id
from airia_server.realtime.hub import Subscription, encode_event

log = logging.getLogger("airia_server.realtime")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_RESUME = 4000
"""The server dropped this subscriber because it fell behind: reconnect with
`after=<last sequence received>` and nothing is lost."""

_REPLAY_PAGE = 500


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
        if after is not None and after < 0:
            raise ValueError(after)
    except (InvalidTicket, ValueError) as exc:
        log.info("websocket refused: %s", exc)
        await websocket.close(code=CLOSE_POLICY)
        return

    # Subscribe before reading the current sequence, so nothing falls between.
    sub = svc.hub.subscribe(conversation_id)
    try:
        record = await svc.store.get_conversation(claims.tenant_id, conversation_id)
        if record is None or (claims.user_id is not None and record.user_id != claims.user_id):
            await websocket.close(code=CLOSE_POLICY)
            return
        await websocket.accept()
        reader = asyncio.create_task(_read_until_closed(websocket, sub))
        try:
            await _stream(websocket, sub, after if after is not None else record.last_sequence)
        finally:
            reader.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        svc.hub.unsubscribe(sub)


async def _stream(websocket: WebSocket, sub: Subscription, last: int) -> None:
    store = services(websocket).store
    last = await _replay(websocket, store, sub.conversation_id, last, None)
    while True:
        batch = await sub.next_batch()
        if sub.overflowed:
            await websocket.close(code=CLOSE_RESUME, reason=f"resume after={last}")
            return
        if not batch:  # the client went away
            return
        for event in batch:
            if event.sequence is None:
                await websocket.send_text(event.text)
                continue
            if event.sequence <= last:
                continue
            if event.sequence > last + 1:
                last = await _replay(websocket, store, sub.conversation_id, last, event.sequence)
            await websocket.send_text(event.text)
            last = event.sequence
            if event.type == "conversation.deleted":
                await websocket.close(code=CLOSE_NORMAL, reason="conversation deleted")
                return


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


async def _read_until_closed(websocket: WebSocket, sub: Subscription) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except Exception:  # the socket is gone either way
        pass
    sub.close()


routes = [WebSocketRoute("/v1/Conversations/{conversation_id}/ws", conversation_socket)]
