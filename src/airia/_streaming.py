"""``EventStream`` and ``AsyncEventStream``: the only code that does real-time I/O.

Decisions (what a close code means, how long to wait, which frames to
deliver) live in ``_realtime.BaseEventStream``; these two classes only
connect, receive, send and wait, each in its own way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ._base_client import USER_AGENT
from ._exceptions import APIConnectionError
from ._realtime import CONNECT_ERRORS, BaseEventStream, signal_user_id
from .types.api.conversations import ConversationEvent

if TYPE_CHECKING:
    from .resources.realtime import AsyncRealtime, Realtime

# Frames hold whole messages; the server's limit is the one that matters.
_MAX_FRAME = 64 * 1024 * 1024


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    # No close frame received means the connection dropped (1006).
    return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (1006, "")


_CLOSE_TIMEOUT = 1.0
"""Seconds a close waits for the server's answer. Stopping in the middle of a replay,
the library has stopped reading (its queue of frames is full), so the server's close
frame waits behind events it will never read: waiting longer only delays the caller
(it was 10 s)."""


PING_INTERVAL = 10.0
PING_TIMEOUT = 10.0
"""The client pings the server this often, and takes a connection whose pong has not
come back in this long as dead: a connection dropped without a close (a NAT that
forgot it, a cable pulled) is noticed within 20 s and resumed, where the library's
defaults (20 s and 20 s) took 40."""

_library_log = logging.getLogger("airia.websockets")
"""What the websockets library logs about our connections (a keepalive that timed out
logs an ERROR with a traceback). The stream says itself what happened and what it
does (reconnecting, under `airia`), so these go nowhere unless an application adds a
handler to this logger: not to a program's stderr through Python's last resort, nor
twice through the `airia` logger's handler."""
_library_log.addHandler(logging.NullHandler())
_library_log.propagate = False


def _connect_options(timeout: float) -> dict[str, Any]:
    return {
        "open_timeout": timeout,
        "close_timeout": _CLOSE_TIMEOUT,
        "ping_interval": PING_INTERVAL,
        "ping_timeout": PING_TIMEOUT,
        "user_agent_header": USER_AGENT,
        "max_size": _MAX_FRAME,
        "logger": _library_log,
    }


def _typing_frame(is_typing: bool, user_id: str | None) -> str:
    return _signal({"type": "typing", "isTyping": is_typing}, user_id)


def _presence_frame(action: str, user_id: str | None) -> str:
    return _signal({"type": "presence", "action": action}, user_id)


def _signal(frame: dict[str, Any], user_id: str | None) -> str:
    if user_id is not None:
        frame["userId"] = signal_user_id(user_id)
    return json.dumps(frame)


class EventStream(BaseEventStream):
    """Events of one conversation as they happen; iterate it, ``close()`` it to stop.

    Starts when entered (``with``), or else at the first iteration: from then
    on no stored event is missed. Reconnects by itself (with a fresh ticket,
    resuming after the last sequence delivered) and delivers each stored event
    once, in order. Ends after ``conversation.deleted``. ``close()`` may be
    called from another thread, or a signal handler, to end a blocked iteration.

    Example:
        ```python
        with client.conversations.events("your_conversation_id") as events:
            for event in events:
                print(event.sequence, event.type, event.data)
        ```
    """

    def __init__(
        self,
        conversations: Realtime,
        conversation_id: str,
        *,
        after: int | None,
        reconnect: bool,
        max_reconnect_attempts: int | None,
    ) -> None:
        client = conversations._client
        super().__init__(
            conversation_id,
            after=after,
            reconnect=reconnect,
            max_reconnect_attempts=max_reconnect_attempts,
            logger=client.logger,
            log_requests=client.log_requests,
        )
        self._conversations = conversations
        self._timeout = client.timeout
        self._ws: ClientConnection | None = None
        # websockets >= 17.1 wants sync connections entered as context managers.
        self._connection = contextlib.ExitStack()
        self._stopped = threading.Event()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> ConversationEvent:
        while not (self._finished or self._stopped.is_set()):
            ws = self._ws
            if ws is None:
                self._open()
                continue
            try:
                text = ws.recv()
            except ConnectionClosed as exc:
                self._ws = None
                if not self._stopped.is_set():
                    self._wait(self._on_close(*_close_of(exc)))
                continue
            event = self._accept(text)
            if event is not None:
                return event
        self._drop()
        raise StopIteration

    def _open(self) -> None:
        try:
            minted = self._conversations.websocket_url(self.conversation_id)
            url = self._socket_url(minted.websocket_url, minted.last_sequence)
            ws = self._connection.enter_context(connect(url, **_connect_options(self._timeout)))
        except CONNECT_ERRORS as exc:
            self._wait(self._on_connect_error(exc))
            return
        self._ws = ws
        self._on_open(url)
        if self._stopped.is_set():  # close() ran while we were connecting
            self._drop()

    def _wait(self, delay: float) -> None:
        if delay > 0:
            self._stopped.wait(delay)

    def _drop(self) -> None:
        self._ws = None
        self._connection.close()

    def send_typing(self, is_typing: bool = True, *, user_id: str | None = None) -> None:
        """Tell the others you are (or stopped) typing, over the open channel.

        ``user_id`` names whom the signal is by on an API key's socket (an agent
        speaking for a user); without it, it is the conversation's owner. A bearer
        token's socket always signals as its own user. ValueError for a
        ``user_id`` the server would refuse (empty, over 255 characters, a NUL).

        Example:
            ```python
            events.send_typing(True, user_id="assistant_bot")
            ```
        """
        self._send(_typing_frame(is_typing, user_id))

    def send_presence(self, action: str, *, user_id: str | None = None) -> None:
        """Announce ``joined`` or ``left`` over the open channel (``user_id`` as for
        ``send_typing``).

        Example:
            ```python
            events.send_presence("joined")
            ```
        """
        self._send(_presence_frame(action, user_id))

    def _send(self, frame: str) -> None:
        ws = self._ws
        if ws is None:
            raise APIConnectionError(
                "The real-time channel is not open; enter or iterate the stream first"
            )
        try:
            ws.send(frame)
        except ConnectionClosed as exc:
            raise APIConnectionError(f"The real-time channel closed: {exc}") from exc

    def close(self) -> None:
        """Stop watching: close the socket and end the iteration."""
        self._stopped.set()
        self._drop()

    def __enter__(self) -> EventStream:
        # Open now, not at the first next(): what is written between entering and
        # iterating would otherwise be missed.
        if self._ws is None and not self._finished:
            self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncEventStream(BaseEventStream):
    """Async twin of ``EventStream``: ``async for`` it, ``await close()`` it.

    Example:
        ```python
        async with client.conversations.events("your_conversation_id") as events:
            async for event in events:
                print(event.sequence, event.type)
        ```
    """

    def __init__(
        self,
        conversations: AsyncRealtime,
        conversation_id: str,
        *,
        after: int | None,
        reconnect: bool,
        max_reconnect_attempts: int | None,
    ) -> None:
        client = conversations._client
        super().__init__(
            conversation_id,
            after=after,
            reconnect=reconnect,
            max_reconnect_attempts=max_reconnect_attempts,
            logger=client.logger,
            log_requests=client.log_requests,
        )
        self._conversations = conversations
        self._timeout = client.timeout
        self._ws: AsyncConnection | None = None
        self._stopped = asyncio.Event()

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> ConversationEvent:
        while not (self._finished or self._stopped.is_set()):
            ws = self._ws
            if ws is None:
                await self._open()
                continue
            try:
                text = await ws.recv()
            except ConnectionClosed as exc:
                self._ws = None
                if not self._stopped.is_set():
                    await self._wait(self._on_close(*_close_of(exc)))
                continue
            event = self._accept(text)
            if event is not None:
                return event
        await self._drop()
        raise StopAsyncIteration

    async def _open(self) -> None:
        try:
            minted = await self._conversations.websocket_url(self.conversation_id)
            url = self._socket_url(minted.websocket_url, minted.last_sequence)
            ws = await async_connect(url, **_connect_options(self._timeout))
        except CONNECT_ERRORS as exc:
            await self._wait(self._on_connect_error(exc))
            return
        self._ws = ws
        self._on_open(url)
        if self._stopped.is_set():
            await self._drop()

    async def _wait(self, delay: float) -> None:
        if delay > 0:
            try:
                await asyncio.wait_for(self._stopped.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def send_typing(self, is_typing: bool = True, *, user_id: str | None = None) -> None:
        """Tell the others you are (or stopped) typing (see ``EventStream.send_typing``).

        Example:
            ```python
            await events.send_typing(True, user_id="assistant_bot")
            ```
        """
        await self._send(_typing_frame(is_typing, user_id))

    async def send_presence(self, action: str, *, user_id: str | None = None) -> None:
        """Announce ``joined`` or ``left`` (see ``EventStream.send_presence``).

        Example:
            ```python
            await events.send_presence("joined")
            ```
        """
        await self._send(_presence_frame(action, user_id))

    async def _send(self, frame: str) -> None:
        ws = self._ws
        if ws is None:
            raise APIConnectionError(
                "The real-time channel is not open; enter or iterate the stream first"
            )
        try:
            await ws.send(frame)
        except ConnectionClosed as exc:
            raise APIConnectionError(f"The real-time channel closed: {exc}") from exc

    async def close(self) -> None:
        """Stop watching: close the socket and end the iteration."""
        self._stopped.set()
        await self._drop()

    async def __aenter__(self) -> AsyncEventStream:
        # Open now, as EventStream.__enter__ does.
        if self._ws is None and not self._finished:
            await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
