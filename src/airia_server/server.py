"""Running the application under uvicorn, with a shutdown that tells sockets to go."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from airia_server.app import AiriaApp, create_app
from airia_server.config import Settings

GRACEFUL_SHUTDOWN_SECONDS = 10


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


_SLOW_HEAD_BODY = (
    b'{"type":"about:blank","title":"Request Timeout","status":408,'
    b'"detail":"The request headers did not arrive in time",'
    b'"message":"Request headers too slow"}'
)
_SLOW_HEAD = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
    b"connection: close\r\ncontent-length: "
    + str(len(_SLOW_HEAD_BODY)).encode()
    + b"\r\n\r\n"
    + _SLOW_HEAD_BODY
)


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with a deadline for each request's head (request line and
    headers): a client that trickles them in (slowloris) gets 408 and is disconnected
    instead of holding a connection for ever. Bodies have their own timeout (bodies.py).

    A class at module level, so worker processes can import it; `timeout` is set from
    the settings before serving (and read from the environment in workers)."""

    timeout = float(os.environ.get("AIRIA_HEADER_READ_TIMEOUT_SECONDS") or 10.0)
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        # Only between requests or inside a head: never while a response is going out.
        if (self.cycle is None or self.cycle.response_complete) and not (
            self.transport.is_closing()
        ):
            self.transport.write(_SLOW_HEAD)
            self.transport.close()


def _options(settings: Settings) -> dict[str, Any]:
    return dict(
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http=HeadTimeoutProtocol,
        ws="websockets-sansio",
        ws_ping_interval=settings.ws_heartbeat_seconds,
        # Compression costs ~35 KiB of zlib state per socket and CPU on every fan-out,
        # for events that are a few hundred bytes: off unless asked for.
        ws_per_message_deflate=settings.ws_compression,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )


def serve(settings: Settings, workers: int = 1, overrides: dict[str, Any] | None = None) -> None:
    HeadTimeoutProtocol.timeout = settings.header_read_timeout_seconds
    os.environ["AIRIA_HEADER_READ_TIMEOUT_SECONDS"] = str(settings.header_read_timeout_seconds)
    options = _options(settings)
    if workers > 1:
        # Each worker process builds its own app from the environment.
        for name, value in (overrides or {}).items():
            os.environ[f"AIRIA_{name.upper()}"] = str(value)
        uvicorn.run("airia_server.app:create_app", factory=True, workers=workers, **options)
        return
    app = create_app(settings)
    GracefulServer(uvicorn.Config(app, **options), app).run()
