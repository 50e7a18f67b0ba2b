"""The real-time channel: `websocketUrl` opens here.

The ticket in the URL is checked before `accept()`. The socket subscribes
first, then replays stored events after `?after=N`, then streams live ones,
skipping any it already sent and filling any gap from the stored log, so a
client sees each sequence exactly once and in order. Replayed events steer the
socket as live ones do (a removal closes it, a role changes); after the fan-out
was down, the socket also re-reads what the log cannot say (a deletion, a role).

A socket opened with an API key's ticket lasts as long as the key:
`close_revoked_keys` (started with the app) closes those of revoked keys.

Clients may send `{"type": "typing", "isTyping": true}` and
`{"type": "presence", "action": "joined"}`; they are broadcast like the HTTP
equivalents, with the same role rules, held to the role as it stands (read for
each frame, not as the socket last heard it) and to the API key still standing.

A refused socket (a bad ticket, too many sockets) is answered before the upgrade
with a 403 problem, raised to the middleware like any route's error; the socket
URL asked for as plain HTTP is 426 (`socket_without_upgrade`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

from airia_server.api.bodies import nested_too_deeply
from airia_server.api.deps import Services, services
from airia_server.api.schemas import UserId
from airia_server.domain import access
from airia_server.domain.auth import Authenticator, user_key
from airia_server.domain.tickets import InvalidTicket, TicketClaims
from airia_server.errors import Forbidden, UpgradeRequired, ValidationFailed
from airia_server.ids import parse_id
from airia_server.realtime.hub import LiveEvent, LocalHub, Subscription, encode_event
from airia_server.storage.base import ConversationRecord, EventRecord, Store
from airia_server.text import is_ascii_digits
from airia_server.timeutil import utcnow_iso

log = logging.getLogger("airia_server.realtime")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_RESUME = 4000
"""The server dropped this subscriber because it fell behind: reconnect with
`after=<last sequence received>` and nothing is lost."""

_REPLAY_PAGE = 500
_REPLAY_FIRST_PAGE = 20
_REPLAY_BUDGET = 1 << 20
_MAX_CLIENT_FRAME = 4096
_PAST_ANY_SEQUENCE = 10**18
"""What a resume `after` of more than 18 significant digits stands for: past any
stored sequence."""
FRAMES_PER_SECOND = 10
FRAME_BURST = 20
"""A client's typing and presence frames: each costs a read of the database (its role)
and goes to every socket of the conversation, so one socket may send 10 a second, in
bursts of 20; the rest are answered with an error frame and not sent on."""


class _ClientSignal(msgspec.Struct, kw_only=True, rename="camel"):
    type: str
    is_typing: bool | None = None
    action: str | None = None
    user_id: UserId | None = None
    """For an API key's socket: the user it speaks for, as in HTTP bodies (at most 255
    characters, no NUL)."""


_decode_signal = msgspec.json.Decoder(_ClientSignal).decode


class _Connection:
    """What one open socket knows about its caller."""

    __slots__ = ("allowance", "checked", "claims", "conversation_id", "last", "owner_id", "role")

    def __init__(
        self, claims: TicketClaims, conversation_id: str, role: str, owner_id: str
    ) -> None:
        self.claims = claims
        self.conversation_id = conversation_id
        self.role = role
        self.owner_id = owner_id
        """The conversation's owner: whom an API key's typing is by, unless it names
        a user (as a message by an API key is the owner's)."""
        self.last = 0
        """The last sequence sent to this client."""
        self.allowance = float(FRAME_BURST)
        self.checked = time.monotonic()

    def may_send(self) -> bool:
        """One more client frame within `FRAMES_PER_SECOND` (a token bucket)."""
        now = time.monotonic()
        self.allowance = min(FRAME_BURST, self.allowance + (now - self.checked) * FRAMES_PER_SECOND)
        self.checked = now
        if self.allowance < 1:
            return False
        self.allowance -= 1
        return True


def _refused() -> Forbidden:
    """The refusal of a socket's ticket, the same whatever was wrong with it (the
    middleware sends it as the upgrade's answer: 403 problem+json)."""
    return Forbidden(
        "WebSocket refused",
        "The ticket is missing, invalid or expired, is for another conversation, or its "
        "conversation or access to it is gone: get a fresh websocketUrl",
    )


def _bad_after() -> ValidationFailed:
    """A resume point that is not a sequence: the ticket is good, so the client is
    told what to fix rather than to fetch a fresh URL (422, as for a query value of
    any HTTP route)."""
    return ValidationFailed(
        "Invalid value for 'after'",
        "after is the sequence of the last event received, in ASCII digits (after=42)",
        errors=[{"field": "after", "message": "not a sequence number"}],
    )


class _Closed(Exception):
    """The socket was closed while events were being sent to it."""


async def conversation_socket(websocket: WebSocket) -> None:
    svc = services(websocket)
    conversation_id = parse_id(websocket.path_params["conversation_id"])
    ticket = websocket.query_params.get("ticket", "")
    after_raw = websocket.query_params.get("after")
    try:
        if conversation_id is None:
            raise InvalidTicket("unknown conversation")
        claims = svc.tickets.verify(ticket, conversation_id)
        if claims.key_id is not None and not await svc.auth.key_active(claims.key_id):
            raise InvalidTicket("the ticket's API key was revoked")
    except InvalidTicket as exc:
        log.info("websocket refused: %s", exc)
        raise _refused() from None
    after = None
    if after_raw not in (None, ""):
        if not is_ascii_digits(after_raw):
            log.info("websocket refused: after=%r is not a sequence", after_raw[:20])
            raise _bad_after()
        # Past 18 digits (leading zeros aside) no sequence can be reached (they are
        # 64-bit): such a number is past the end like any other, not converted whole.
        digits = after_raw.lstrip("0") or "0"
        after = int(digits) if len(digits) <= 18 else _PAST_ANY_SEQUENCE

    owner = user_key(claims.tenant_id, claims.user_id) if claims.user_id else ""
    if owner and svc.hub.sockets_of(owner) >= svc.settings.ws_max_sockets_per_user:
        log.info("websocket refused: %s has too many open sockets", claims.user_id)
        raise Forbidden(
            "Too many open sockets",
            f"This user has {svc.settings.ws_max_sockets_per_user} sockets open on this "
            "server, its limit (AIRIA_WS_MAX_SOCKETS_PER_USER): close one first",
        )
    # Subscribe before reading the current sequence, so nothing falls between.
    sub = await svc.hub.subscribe(conversation_id, owner, claims.key_id)
    try:
        record, role = await _visible(svc.store, claims, conversation_id)
        if record is None or role is None:
            raise _refused()
        await websocket.accept()
        conn = _Connection(claims, conversation_id, role, record.user_id)
        if after is not None and after > record.last_sequence:
            # Past the last event stored: the client holds another history (a database
            # restored from an older backup, say). Resuming would skip everything up
            # to `after`; the client is told where this history ends instead.
            await _close_quietly(websocket, CLOSE_RESUME, f"resume after={record.last_sequence}")
            return
        reader = asyncio.create_task(_read_client(websocket, svc, sub, conn))
        conn.last = after if after is not None else record.last_sequence
        sender = asyncio.create_task(_stream(websocket, svc, sub, conn))
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
    except (WebSocketDisconnect, ClientDisconnected):  # gone, before or after accept
        pass
    finally:
        svc.hub.unsubscribe(sub)
        # What ties the socket's objects in loops (the hub's callbacks into it, the
        # protocol's into the hub): undone, so that the socket and whatever it still
        # had queued go at once, not at the next full collection, which this server
        # runs rarely (app.GC_THRESHOLDS).
        sub.release()
        frames = websocket.scope.get("extensions", {}).pop("airia.frames", None)
        if frames is not None:
            frames.going_away = None


async def _visible(
    store: Store, claims: TicketClaims, conversation_id: str
) -> tuple[ConversationRecord | None, str | None]:
    """The conversation (None if it is gone) and the ticket holder's role in it (None
    if they may no longer watch it)."""
    if claims.user_id is None:  # minted for an API key: every right in its tenant
        record = await store.get_conversation(claims.tenant_id, conversation_id)
        return record, "Owner" if record is not None else None
    found = await store.get_conversation_for(claims.tenant_id, conversation_id, claims.user_id)
    if found is None:
        return None, None
    return found[0], found[1]


async def _stream(
    websocket: WebSocket, svc: Services, sub: Subscription, conn: _Connection
) -> None:
    try:
        await _replay(websocket, svc.store, conn, None)
        while True:
            batch = await sub.next_batch()
            if sub.overflowed:
                await websocket.close(code=CLOSE_RESUME, reason=f"resume after={conn.last}")
                return
            if sub.closed:  # the client went away
                return
            if sub.revoked:
                await _close_quietly(websocket, CLOSE_POLICY, "API key revoked")
                return
            if sub.leaving:
                await _close_quietly(websocket, CLOSE_GOING_AWAY, "server shutting down")
                return
            if sub.needs_resync:
                sub.needs_resync = False
                await _resync(websocket, svc, conn)
            for event in batch:
                if event.sequence is None:
                    await websocket.send_text(event.text)
                    continue
                if event.sequence <= conn.last:
                    continue
                text = event.text
                if event.sequence > conn.last + 1:
                    await _replay(websocket, svc.store, conn, event.sequence)
                    if event.type == "conversation.deleted" and event.sequence > conn.last + 1:
                        # The log went with the conversation before the gap could be
                        # read: the end is told right after what the client has.
                        text = _renumbered(text, conn.last + 1)
                await websocket.send_text(text)
                conn.last = event.sequence
                await _steer(websocket, conn, event.type, event.user_id, event.role)
    except _Closed:
        return


def _renumbered(text: str, sequence: int) -> str:
    wire = msgspec.json.decode(text)
    wire["sequence"] = sequence
    return msgspec.json.encode(wire).decode()


async def _steer(
    websocket: WebSocket, conn: _Connection, kind: str, user_id: str | None, role: str | None
) -> None:
    """After an event has gone out (live or replayed): close the socket if the
    conversation is gone or its user was removed, note a new role; raises `_Closed`."""
    if kind == "conversation.deleted":
        await websocket.close(code=CLOSE_NORMAL, reason="conversation deleted")
        raise _Closed
    if kind.startswith("participant.") and user_id is not None and user_id == conn.claims.user_id:
        if kind == "participant.removed":
            await websocket.close(code=CLOSE_POLICY, reason="access removed")
            raise _Closed
        conn.role = role or conn.role


async def _resync(websocket: WebSocket, svc: Services, conn: _Connection) -> None:
    """Live events may have been missed (the fan-out was down): send what the stored log
    has, then check what the log cannot say. A deleted conversation's log is deleted
    with it, so its `conversation.deleted` is sent here, after the last event the
    client had; and a user's role is read again. Raises `_Closed`."""
    await _replay(websocket, svc.store, conn, None)
    record, role = await _visible(svc.store, conn.claims, conn.conversation_id)
    if record is None:
        gone = EventRecord(
            conversation_id=conn.conversation_id,
            sequence=conn.last + 1,
            type="conversation.deleted",
            created_at=utcnow_iso(),
            data={"conversationId": conn.conversation_id},
        )
        await websocket.send_text(encode_event(gone))
        conn.last = conn.last + 1
        await _steer(websocket, conn, gone.type, None, None)
    if role is None:
        await websocket.close(code=CLOSE_POLICY, reason="access removed")
        raise _Closed
    conn.role = role


def _direct_writer(sub: Subscription, conn: _Connection, frames: Any):
    """What the hub calls to hand this socket an event while its sender is idle: the
    frame is written at once when it is simply the next one in sequence (or carries
    none) and needs no decision of the sender's; anything else goes to the sender."""

    def write(event: LiveEvent) -> bool:
        sequence = event.sequence
        if event.steers or (sequence is not None and sequence != conn.last + 1):
            return False
        if sub.closed or sub.leaving or sub.needs_resync or sub.overflowed or sub.revoked:
            return False
        if not frames.write_frame(event.frame):
            return False
        if sequence is not None:
            conn.last = sequence
        return True

    return write


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close, but do not wait forever on a client that reads nothing: after 10 s the
    connection is dropped, and with it everything buffered for the client."""
    try:
        await asyncio.wait_for(websocket.close(code=code, reason=reason), 10.0)
    except asyncio.TimeoutError:  # not yet the built-in TimeoutError before 3.11
        frames = websocket.scope.get("extensions", {}).get("airia.frames")
        if frames is not None:
            frames.drop()
    except (RuntimeError, WebSocketDisconnect, ClientDisconnected):
        pass


async def _replay(websocket, store, conn: _Connection, before: int | None) -> None:
    """Send stored events after `conn.last` (and before `before`), steering as the live
    stream does. Pages hold about `_REPLAY_BUDGET` bytes of events (at most
    `_REPLAY_PAGE`): a page is held until the client has read it, and a long history
    of large messages would otherwise pin hundreds of MB for a client that stops
    reading. Raises `_Closed`."""
    size = _REPLAY_FIRST_PAGE
    while True:
        events = await store.events_after(conn.conversation_id, conn.last, size)
        sent = 0
        for event in events:
            if before is not None and event.sequence >= before:
                return
            text = encode_event(event)
            await websocket.send_text(text)
            sent += len(text)
            conn.last = event.sequence
            user_id = event.data.get("userId") if event.type.startswith("participant.") else None
            if event.type == "participant.removed" and user_id == conn.claims.user_id:
                # History: the user may have been added again since. What counts is
                # whether they may watch now (a live removal is current by nature).
                _, role = await _visible(store, conn.claims, conn.conversation_id)
                if role is not None:
                    conn.role = role
                    continue
            await _steer(websocket, conn, event.type, user_id, event.data.get("role"))
        if len(events) < size:
            return
        size = max(1, min(_REPLAY_PAGE, _REPLAY_BUDGET * len(events) // max(sent, 1)))


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
            elif message.get("bytes") is not None:
                await _send_error(websocket, "send text frames of JSON, not binary ones")
    except Exception:  # the socket is gone either way
        log.debug("websocket reader stopped", exc_info=True)
    sub.close()


async def _on_client_frame(websocket: WebSocket, svc: Services, conn: _Connection, text: str):
    if not conn.may_send():
        await _send_error(
            websocket,
            f"too many frames: at most {FRAMES_PER_SECOND} a second; this one was not sent",
        )
        return
    error = None
    try:
        if len(text) > _MAX_CLIENT_FRAME:
            raise ValueError("frame too large")
        if nested_too_deeply(text):
            raise ValueError("frame nested too deeply")
        signal = _decode_signal(text)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # and ValidationError
        error = f"invalid frame: {exc}"
    else:
        data: dict[str, Any]
        if signal.user_id is not None and "\x00" in signal.user_id:
            error = "invalid frame: userId cannot hold NUL characters (\\u0000)"
        elif signal.type == "typing":  # isTyping absent or null is true, as over HTTP
            data = {"isTyping": signal.is_typing is not False}
        elif signal.type == "presence" and signal.action in ("joined", "left"):
            data = {"action": signal.action}
        else:
            error = "send {type: typing, isTyping} or {type: presence, action: joined|left}"
        if error is None:
            error = await _refusal(svc, conn, signal.type)
        if error is None:
            user = conn.claims.user_id or signal.user_id or conn.owner_id
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
        await _send_error(websocket, error)


async def _refusal(svc: Services, conn: _Connection, kind: str) -> str | None:
    """Why the socket's user may not send `kind` now, or None if they may.

    A socket learns of a role change when the change's event reaches it: a moment
    after the change was answered, later on another instance. A user's role is read
    again here, so that once a demotion or removal has been answered, their typing
    and presence are refused, as their HTTP requests are. An API key's ticket has
    every right while the key stands, which is checked here too (its sockets are
    closed within `KEY_CHECK_SECONDS` of a revocation)."""
    role: str | None = conn.role
    try:
        if conn.claims.user_id is not None:
            _, role = await _visible(svc.store, conn.claims, conn.conversation_id)
            if role is None:
                return f"you no longer take part in this conversation: {kind} was not sent"
        elif conn.claims.key_id is not None and not await svc.auth.key_active(conn.claims.key_id):
            return f"the API key was revoked: {kind} was not sent"
    except Exception:  # the database is away: refuse this frame, not the socket
        log.warning("could not check a socket's right to send %s", kind, exc_info=True)
        return f"{kind} was not sent: try again"
    if not access.role_allows(role, access.WRITE):
        return f"a {role} cannot send {kind}"
    return None


async def _send_error(websocket: WebSocket, message: str) -> None:
    await websocket.send_text(msgspec.json.encode({"type": "error", "message": message}).decode())


KEY_CHECK_SECONDS = 10.0
"""How often (at most; at every heartbeat when that is shorter) an instance checks
that the API keys behind its open sockets still stand."""


async def close_revoked_keys(hub: LocalHub, auth: Authenticator, interval: float) -> None:
    """Forever: every `interval` seconds, close the sockets opened with a ticket of an
    API key revoked since (revocation is a database write, seen by every instance)."""
    while True:
        await asyncio.sleep(interval)
        for key_id in hub.key_ids():
            try:
                active = await auth.key_active(key_id)
            except Exception:  # the database is away: try again next time
                log.warning("could not check API key %s", key_id, exc_info=True)
                continue
            if not active:
                closed = hub.revoke_key(key_id)
                log.info("API key %s was revoked: closing its %d sockets", key_id, closed)


async def socket_without_upgrade(request: Request) -> Response:
    """The socket URL asked for as plain HTTP: most often a proxy that dropped the
    `Upgrade` header on the way. Nothing is looked up, so the answer is the same for
    every conversation id."""
    raise UpgradeRequired(
        "WebSocket upgrade required",
        "This URL is a WebSocket: open it with a WebSocket client (GET with "
        "'Connection: Upgrade' and 'Upgrade: websocket'). A proxy in between must pass "
        "those headers on.",
    )


_SOCKET_PATH = "/v1/Conversations/{conversation_id}/ws"
routes = [
    WebSocketRoute(_SOCKET_PATH, conversation_socket),
    Route(_SOCKET_PATH, socket_without_upgrade, methods=["GET"]),
]
