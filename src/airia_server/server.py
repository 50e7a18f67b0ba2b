"""Running the application under uvicorn, with a shutdown that tells sockets to go."""

from __future__ import annotations

import os
from typing import Any

import uvicorn

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


def _options(settings: Settings) -> dict[str, Any]:
    return dict(
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_ping_interval=settings.ws_heartbeat_seconds,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )


def serve(settings: Settings, workers: int = 1, overrides: dict[str, Any] | None = None) -> None:
    options = _options(settings)
    if workers > 1:
        # Each worker process builds its own app from the environment.
        for name, value in (overrides or {}).items():
            os.environ[f"AIRIA_{name.upper()}"] = str(value)
        uvicorn.run("airia_server.app:create_app", factory=True, workers=workers, **options)
        return
    app = create_app(settings)
    GracefulServer(uvicorn.Config(app, **options), app).run()
