"""Running the application under uvicorn: the HTTP protocol's deadlines and the limit
on a request head while it arrives, the WebSocket protocol's limits on what a client
sends (and reading paused while it reads nothing), and a shutdown that tells sockets to
go and answers what its drain cut off."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import multiprocessing.reduction
import os
import signal
import socket
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.supervisors import Multiprocess
from websockets.exceptions import SecurityError
from websockets.frames import Frame
from websockets.protocol import State

from airia_server.api.middleware import CORRELATION_HEADER, STATUS, new_correlation_id
from airia_server.api.problems import PROBLEM_JSON, problem_body
from airia_server.app import AiriaApp, create_app
from airia_server.config import Settings, load_settings
from airia_server.logs import configure_logging, correlation_id_var

GRACEFUL_SHUTDOWN_SECONDS = 10
"""How long requests in flight have on shutdown: those still running are then cut off
(503 if their response has not begun)."""
CANCEL_AFTER_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + 2
"""When uvicorn cancels what still runs: only a request that goes on once its
connection is closed (one that reads no more of it) is still there by then."""
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

logger = logging.getLogger("uvicorn.error")


class GracefulServer(uvicorn.Server):
    """On SIGTERM or SIGINT: stop accepting connections, close every WebSocket with
    1001 (going away), let the requests in flight finish (up to
    GRACEFUL_SHUTDOWN_SECONDS), then exit."""

    def __init__(self, config: uvicorn.Config, app: AiriaApp) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: Any = None) -> None:
        for listener in self.servers:
            listener.close()
        await self._app.close_sockets()
        await super().shutdown(sockets)


def _closing_problem(
    status: int,
    message: str,
    detail: str,
    instance: str | None = None,
    *,
    correlation_id: str | None = None,
    headers: str = "",
) -> bytes:
    """A whole HTTP response, written by the protocol itself (no request reached the
    application, or it is being cut off): a problem+json body like every other
    error's, with a correlation id of its own unless the request's is given (in the
    body, the header and the log line), and the connection closed after it."""
    cid = correlation_id or new_correlation_id()
    body = problem_body(status, message, detail, instance, correlation_id=cid)
    token = correlation_id_var.set(cid)  # for the log line
    try:
        logger.info("%d %s: connection closed", status, message)
    finally:
        correlation_id_var.reset(token)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: {PROBLEM_JSON}\r\n"
        f"x-correlation-id: {cid}\r\n{headers}connection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# The protocol's own answers (status, message, detail), built when sent.
_SLOW_HEAD = (408, "Request headers too slow", "The request headers did not arrive in time")
_SLOW_BODY = (408, "Request body too slow", "No part of the request body arrived in time")
_BIG_HEAD = (
    431,
    "Request headers too large",
    "The request head (its request line and header fields) is over the server's limit",
)
_SHUTTING_DOWN = (
    503,
    "Server shutting down",
    "The server stopped before it answered; a write may have been done all the same. "
    "Send it again with the same Idempotency-Key, so that it is done once",
)
_UNPARSABLE = (
    400,
    "Invalid HTTP request",
    "The request is not valid HTTP/1.1 (its request line, a header, or its framing)",
)


class _HeadWithBody:
    """The transport as one response's cycle sees it: the head (status line and
    headers) is held back and leaves in the same write as the body's first bytes.

    uvicorn writes a response's head and body separately: two system calls and, with
    TCP_NODELAY, two packets for every small JSON answer. Held here, they are one;
    nothing waits, because the body follows the head within the same handler. A
    response that ends with no body write (HEAD, 204) has its head flushed when it
    completes or when the connection is closed.
    """

    __slots__ = ("_head", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            self._head = data
            return
        if self._head is not None:
            data = self._head + data
            self._head = None
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Sweeper:
    """One timer per event loop that closes the connections past their deadline.

    Arming a timer per request (on every request head, body and completion) cost
    more than routing the request; a deadline is a float set on the connection
    instead, and this sweep checks them all a few times a second."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.protocols: set[TimeoutProtocol] = set()
        self.cut_off_at = 0.0
        """Set on shutdown: when the requests still in flight are cut off; 0: never."""
        loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for protocol in [p for p in self.protocols if 0.0 < p._deadline <= now]:
            protocol._too_slow()
        if 0.0 < self.cut_off_at <= now:
            self.cut_off_at = -1.0
            cut = sum(protocol._cut_off() for protocol in list(self.protocols))
            if cut:
                logger.warning(
                    "Shutting down: %d request(s) still running after %d s cut off "
                    "(503 where no response had begun)",
                    cut,
                    GRACEFUL_SHUTDOWN_SECONDS,
                )
        self.loop.call_later(self.interval, self._sweep)


class TimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with deadlines for slow clients: a request head that has
    not fully arrived `head_timeout` seconds after the connection opened (or the request
    began), or a body that stalls for `body_timeout` seconds, is answered 408 and the
    connection closed, instead of being held for ever (slowloris).

    Done here, with a deadline per connection checked by one sweep per loop, rather
    than around every read in the application. A class at module level, so worker
    processes can import it; the timeouts are set from the settings before serving
    (and read from the environment in workers)."""

    head_timeout = float(os.environ.get("AIRIA_HEADER_READ_TIMEOUT_SECONDS") or 10.0)
    body_timeout = float(os.environ.get("AIRIA_BODY_READ_TIMEOUT_SECONDS") or 30.0)
    max_header_bytes = int(os.environ.get("AIRIA_MAX_HEADER_BYTES") or 16 * 1024)
    _sweeper: _Sweeper | None = None
    _deadline = 0.0  # loop time after which the request is too slow; 0: none
    _answer = _SLOW_HEAD
    _head_bytes = 0  # bytes received of a request head still incomplete; -1: none is

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sweeper = TimeoutProtocol._sweeper
        if sweeper is None or sweeper.loop is not self.loop:
            # Deadlines are met to within a quarter of the shorter timeout.
            interval = min(1.0, max(0.05, min(self.head_timeout, self.body_timeout) / 4))
            sweeper = TimeoutProtocol._sweeper = _Sweeper(self.loop, interval)
        sweeper.protocols.add(self)
        self._arm(self.head_timeout, _SLOW_HEAD)

    def data_received(self, data: bytes) -> None:
        """Counts what arrives of a request head: the header size limit is checked by the
        application on the head's fields (`RequestContextMiddleware`), once they have
        all come, but the parser keeps every header line until then, and a head of
        endless small lines would take memory without limit (40 MiB of them within the
        head deadline cost 600 MiB). A head still incomplete past twice the limit, plus
        8 KiB for its request line, is answered 431 and the connection closed."""
        if self._head_bytes >= 0:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes > 2 * self.max_header_bytes + 8192:
            self._head_bytes = -1
            self._forget()
            if not self.transport.is_closing():
                self.transport.write(_closing_problem(*_BIG_HEAD))
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.head_timeout, _SLOW_HEAD)

    def on_headers_complete(self) -> None:
        self._head_bytes = -1
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]
        # Until the message completes (often in this same read), the body must keep coming.
        self._arm(self.body_timeout, _SLOW_BODY)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._deadline = self.loop.time() + self.body_timeout

    def on_message_complete(self) -> None:
        self._deadline = 0.0
        self._head_bytes = 0  # what comes next is the next request's head
        super().on_message_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and type(cycle.transport) is _HeadWithBody:
            cycle.transport.flush()
        super().on_response_complete()

    def shutdown(self) -> None:
        """uvicorn's (closes the connection if idle, else after the response), and the
        cut-off armed for the requests still in flight. uvicorn's own, at its graceful
        timeout, cancels their tasks: the client gets a plain-text 500 and the log two
        ERROR tracebacks for what is only a server going away."""
        super().shutdown()
        sweeper = TimeoutProtocol._sweeper
        if sweeper is not None and sweeper.cut_off_at == 0.0:
            sweeper.cut_off_at = self.loop.time() + GRACEFUL_SHUTDOWN_SECONDS

    def _cut_off(self) -> bool:
        """Shutting down, the drain is over: a request still in flight is answered 503
        (with Retry-After) if its response has not begun, and its connection closed.
        Its application task sees the client gone and ends. True if there was one."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return False
        if not cycle.response_started:
            scope: Any = cycle.scope
            scope[STATUS] = 503
            cid = scope.get(CORRELATION_HEADER, (b"", b""))[1].decode() or None
            self.transport.write(
                _closing_problem(
                    *_SHUTTING_DOWN,
                    scope["path"],
                    correlation_id=cid,
                    headers="retry-after: 1\r\n",
                )
            )
        self.transport.close()
        return True

    def eof_received(self) -> bool | None:
        """The client has closed its side. HTTP/1.1 allows half-closing once a request
        is sent: if it has come whole and is not answered yet, the connection stays
        open for the answer (it was dropped, the client got nothing, though a write
        it asked for was committed) and is closed after it. Otherwise, as uvicorn
        does, the connection is closed and the request (if any) sees the client gone."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.more_body:
            return None
        cycle.keep_alive = False
        return True

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that do not parse as HTTP, as problem+json (uvicorn
        writes plain text); it has logged `msg` already."""
        self._forget()
        if not self.transport.is_closing():
            self.transport.write(_closing_problem(*_UNPARSABLE))
            self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        self._forget()  # the connection now belongs to the WebSocket protocol
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def _forget(self) -> None:
        self._deadline = 0.0
        sweeper = TimeoutProtocol._sweeper
        if sweeper is not None:
            sweeper.protocols.discard(self)

    def _arm(self, delay: float, answer: tuple[int, str, str]) -> None:
        self._deadline = self.loop.time() + delay
        self._answer = answer

    def _too_slow(self) -> None:
        self._deadline = 0.0
        # Never once a response has begun: then the connection is the application's.
        if self.cycle is not None and self.cycle.response_started:
            return
        if not self.transport.is_closing():
            # A request whose head has arrived (its body is slow) has a path.
            instance = self.scope["path"] if self.cycle is not None else None
            self.transport.write(_closing_problem(*self._answer, instance))
            self.transport.close()


DROP_AFTER_SECONDS = 5.0
"""How long a socket closed for not answering pings has to take its close frame."""

WS_MAX_MESSAGE_BYTES = 16 * 1024
"""The largest message a client may send. Its messages are typing and presence signals
of a few dozen bytes (the application refuses any over 4096 characters); websockets
counts every fragment of a message against this, so a message that never ends is
closed with 1009 after 16 KiB, instead of being parsed and held without end, and a
5 MiB frame is refused from its header, before its payload is read."""

WS_MAX_FRAGMENTS = 64
"""The frames one message may come in. Empty or one-byte continuation frames add
next to nothing to a message's size, but each costs a parse and a place in the list
of fragments: a message in more of them is closed with 1009 too."""

_LONG_TARGET = (414, "URI too long", "The request target is over the server's limit")


class FrameWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering the application a way to write a
    ready-made frame straight to the connection (`scope["extensions"]["airia.frames"]`).

    The hub uses it to send one event to thousands of idle sockets without waking a
    task per socket. It writes only while the connection is open, uncompressed and
    not pushing back (below the transport's high-water mark); otherwise the caller
    falls back to the ASGI path, which waits for the client like any other send."""

    going_away: Callable[[], bool] | None = None
    """Set by the application: asks its side of the socket to close with 1001 (going
    away) after what it has queued; False if it was asked already."""

    def shutdown(self) -> None:
        """Called on every connection when the server shuts down. uvicorn's closes the
        socket at once with 1012; a socket of ours is asked to leave instead, as
        `GracefulServer` asks them all first, and uvicorn waits (up to its graceful
        timeout) for the application to close it with 1001. That way `serve
        --workers`, whose workers run uvicorn's own server, closes sockets as one
        process does. Asked a second time, or not ours: uvicorn's close."""
        if self.going_away is not None and not self.close_sent and self.going_away():
            return
        super().shutdown()

    def handle_connect(self, event: Any) -> None:
        # websockets answers a request that is no valid upgrade (no Sec-WebSocket-Key,
        # another version, not GET) in plain text; here it is a problem, with the same
        # status and the headers that say what to send instead. Checking costs one more
        # look at the request's headers; a valid one is accepted by uvicorn as before.
        checked = self.conn.accept(event)
        if checked.status_code != 101:
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            reason = str(self.conn.handshake_exc or checked.reason_phrase)
            reason = reason.encode("ascii", "backslashreplace").decode()[:300]
            kept = "".join(
                f"{name}: {checked.headers[name]}\r\n"
                for name in ("Allow", "Upgrade", "Sec-WebSocket-Version")
                if name in checked.headers
            )
            if not self.transport.is_closing():
                status = checked.status_code
                detail = f"Not a valid WebSocket upgrade: {reason}"
                self.transport.write(
                    _closing_problem(status, "Invalid WebSocket upgrade", detail, headers=kept)
                )
                self.transport.close()
            return
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"]["airia.frames"] = self

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # An upgrade refused with a response of the application's (a problem): done.
            # uvicorn leaves the handshake unfinished and logs an ERROR for each.
            self.handshake_complete = True

    def keepalive_timeout(self) -> None:
        """No pong in time: uvicorn sends 1011 and closes, and a close waits for what is
        buffered to be read. A client that reads nothing would keep the connection
        (and all that is buffered for it) for ever: it is dropped after a grace."""
        super().keepalive_timeout()
        self.loop.call_later(DROP_AFTER_SECONDS, self.drop)

    def drop(self) -> None:
        """Cut the connection now, whatever is still buffered for the client (one that
        stopped reading): the server keeps nothing for it any longer."""
        if not self.transport.is_closing() or self.transport.get_write_buffer_size():
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated:
            self._refuse_handshake()
        elif not self.writable.is_set():
            # The client does not read what it is sent (pongs, say, to a flood of pings):
            # it is not read from either until it does, so that what is buffered for it
            # stays under the transport's high-water mark, whatever it sends.
            self.transport.pause_reading()

    def _refuse_handshake(self) -> None:
        """The upgrade request did not parse as websockets reads it (a header line over
        8 KiB, more than 128 headers, or worse). websockets queues its answer and waits
        to be asked for it, which uvicorn never does: the client would get nothing and
        the connection would stay open for good. It gets problem+json, and the close."""
        exc = self.conn.handshake_exc
        if type(exc).__name__ == "InvalidMessage" and exc.__cause__ is not None:
            exc = exc.__cause__  # websockets 16 wraps what the parser raised
        # websockets 17 tells a long request line from long or many header lines; 16 (the
        # last for Python 3.10) raises SecurityError for all three.
        if type(exc).__name__ == "RequestLineTooLong":
            answer = _LONG_TARGET
        elif isinstance(exc, SecurityError):
            answer = _BIG_HEAD
        else:
            answer = _UNPARSABLE
        self.handshake_complete = self.close_sent = True  # nothing more to send
        if not self.transport.is_closing():
            self.transport.write(_closing_problem(*answer))
            self.transport.close()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.read_paused:  # else the application resumes reading when it has read
            self.transport.resume_reading()

    async def receive(self) -> Any:
        message = await super().receive()
        if not self.writable.is_set():  # uvicorn's receive resumed reading: not yet
            self.transport.pause_reading()
        return message

    def handle_cont(self, event: Frame) -> None:
        if len(self.frames) >= WS_MAX_FRAGMENTS:
            if not self.transport.is_closing():
                self.conn.fail(1009, f"more than {WS_MAX_FRAGMENTS} fragments")
                self.frames = []
                self.handle_parser_exception()
            return
        super().handle_cont(event)

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, but a text message that is not UTF-8 is the client's error, logged
        as such (uvicorn logs it at ERROR, with a traceback, for anyone to repeat)."""
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                logger.info("WebSocket closed with 1007: a text message is not UTF-8")
                self.frames = []
                self.conn.fail(1007, f"invalid UTF-8 at position {exc.start}")
                self.handle_parser_exception()
                return
            self.frames = []
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        super().send_receive_event_to_app()

    def write_frame(self, frame: bytes) -> bool:
        if (
            self.close_sent
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.conn.extensions
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True


def _options(settings: Settings) -> dict[str, Any]:
    return dict(
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http=TimeoutProtocol,
        ws=FrameWebSocketProtocol,
        ws_ping_interval=settings.ws_heartbeat_seconds,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        # Compression costs ~35 KiB of zlib state per socket and CPU on every fan-out,
        # for events that are a few hundred bytes: off unless asked for.
        ws_per_message_deflate=settings.ws_compression,
        timeout_graceful_shutdown=CANCEL_AFTER_SECONDS,
        server_header=False,
    )


def serve(settings: Settings, workers: int = 1, overrides: dict[str, Any] | None = None) -> None:
    TimeoutProtocol.head_timeout = settings.header_read_timeout_seconds
    TimeoutProtocol.body_timeout = settings.body_read_timeout_seconds
    TimeoutProtocol.max_header_bytes = settings.max_header_bytes
    os.environ["AIRIA_HEADER_READ_TIMEOUT_SECONDS"] = str(settings.header_read_timeout_seconds)
    os.environ["AIRIA_BODY_READ_TIMEOUT_SECONDS"] = str(settings.body_read_timeout_seconds)
    os.environ["AIRIA_MAX_HEADER_BYTES"] = str(settings.max_header_bytes)
    options = _options(settings)
    if workers > 1:
        # Each worker process builds its own app from the environment.
        for name, value in (overrides or {}).items():
            os.environ[f"AIRIA_{name.upper()}"] = str(value)
        config = uvicorn.Config(
            "airia_server.server:worker_app", factory=True, workers=workers, **options
        )
        try:
            Multiprocess(config, sockets=[bind_for_workers(config)]).run()
        except KeyboardInterrupt:
            pass
        return
    app = create_app(settings)
    GracefulServer(uvicorn.Config(app, **options), app).run()


def worker_app() -> AiriaApp:
    """The app of one `serve --workers` process. Each worker is a new interpreter, so
    it reads the settings from the environment and sets up logging (the access log
    too) as `airia-server` did in the parent."""
    _exit_with_parent()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def _exit_with_parent() -> None:
    """Have Linux send this worker SIGTERM (a graceful stop) when the supervising
    process dies, however it dies: a supervisor killed outright (SIGKILL, the OOM
    killer) would otherwise leave its workers serving the port on their own, with
    nothing to stop them. Elsewhere, a no-op."""
    parent = multiprocessing.parent_process()
    if sys.platform != "linux" or parent is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("cannot ask to be stopped with the parent: errno %d", ctypes.get_errno())
        return
    if os.getppid() != parent.pid:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


# ------------------------------------------------------------------ one port, N workers


class SharedPort(socket.socket):
    """The port `serve --workers` listens on, as the supervising process holds it:
    bound, never listening, and never handed to a worker as it is. Each worker that
    unpickles it gets a listening socket of its own on the same address instead
    (SO_REUSEPORT, `_listen_beside`), and the kernel spreads new connections over
    the workers' sockets by a hash of each connection's addresses.

    uvicorn's own way, one socket shared by all, lets the worker that wakes first
    accept every connection waiting: a burst of connections (a proxy's keep-alive
    pool, a load generator) could all land on one worker, which then served them
    alone for as long as they stayed open while the others idled."""


def _bound_in_group(cls: type[socket.socket], family: int, address: Any) -> socket.socket:
    """A TCP socket of `cls` bound to `address` with SO_REUSEPORT: every socket so
    bound to one address, by one user, joins the same group."""
    sock = cls(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _listen_beside(family: int, address: Any) -> socket.socket:
    """In a worker: a socket in the same SO_REUSEPORT group as the parent's."""
    return _bound_in_group(socket.socket, family, address)


def _reduce_shared_port(sock: SharedPort) -> tuple[Any, tuple[int, Any]]:
    return _listen_beside, (sock.family, sock.getsockname())


# Workers are spawned processes: their sockets travel pickled (uvicorn's Multiprocess).
multiprocessing.reduction.register(SharedPort, _reduce_shared_port)


def bind_for_workers(config: uvicorn.Config) -> socket.socket:
    """The socket `serve --workers` hands its workers: a SharedPort where the kernel
    balances SO_REUSEPORT groups (Linux), else uvicorn's one shared socket.

    A port already in use fails here, with uvicorn's message and exit status, as
    it does without workers: the address is first bound without SO_REUSEPORT, so
    another server on it (even an earlier `serve --workers` of the same user, whose
    group would otherwise take this one in) is found rather than joined."""
    if sys.platform != "linux" or not hasattr(socket, "SO_REUSEPORT"):
        return config.bind_socket()
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    address = (config.host, config.port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            if not config.port:  # one free port, the same for every worker
                address = probe.getsockname()
        sock = _bound_in_group(SharedPort, family, address)
    except OSError as exc:
        logger.error(exc)
        sys.exit(STARTUP_FAILURE)
    host = f"[{config.host}]" if family == socket.AF_INET6 else config.host
    logger.info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit); %d workers, each with "
        "a listening socket of its own (SO_REUSEPORT)",
        host,
        sock.getsockname()[1],
        config.workers,
    )
    return sock
