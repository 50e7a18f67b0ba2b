"""The ASGI application: routes, error handlers, and the lifespan that owns the resources."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator

from starlette.datastructures import Headers, State
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from airia_server.api import (
    attachments,
    console,
    conversations,
    identities,
    messages,
    participants,
    realtime,
    system,
)
from airia_server.api.deps import Services
from airia_server.api.middleware import RequestContextMiddleware, correlation_id_from
from airia_server.api.problems import PROBLEM_JSON, problem_body
from airia_server.api.routing import SegmentRouter
from airia_server.config import Settings, load_settings, mask_url
from airia_server.domain import maintenance
from airia_server.domain.attachments import AttachmentService
from airia_server.domain.auth import Authenticator
from airia_server.domain.conversations import ConversationService
from airia_server.domain.identities import IdentityService
from airia_server.domain.messages import MessageService
from airia_server.domain.participants import ParticipantService
from airia_server.domain.ratelimit import RateLimiter
from airia_server.domain.tickets import TICKET_KEY_NAME, TicketSigner, UrlSigner
from airia_server.logs import access_log
from airia_server.metrics import Metrics
from airia_server.realtime.hub import LocalHub
from airia_server.storage import open_blob_store, open_store

log = logging.getLogger("airia_server")

GC_THRESHOLDS = (50_000, 50, 100)


def _http_base_url(settings: Settings) -> str | None:
    """`http(s)://host[:port][/path]` for the links the server hands out (`websocketUrl`,
    attachment URLs), or None: take it from the request's Host."""
    if settings.public_url:  # http(s)://host[:port][/path], as the settings check
        return settings.public_url.rstrip("/")
    if settings.host in ("0.0.0.0", "::", ""):
        return None  # listening everywhere: the request's Host header names us best
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def _ws_base_url(settings: Settings) -> str | None:
    base = _http_base_url(settings)
    if base is None:
        return None
    scheme, rest = base.split("://", 1)
    return ("wss://" if scheme == "https" else "ws://") + rest


def open_hub(settings: Settings) -> LocalHub:
    if settings.redis_url:
        from airia_server.realtime.redis_hub import RedisHub

        return RedisHub(settings.redis_url, settings.ws_queue_size, settings.redis_prefix)
    return LocalHub(settings.ws_queue_size)


def create_app(settings: Settings | None = None) -> AiriaApp:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: AiriaApp) -> AsyncIterator[None]:
        store = open_store(settings, serving=True)
        await store.start()
        hub = open_hub(settings)
        await hub.start()
        if settings.secret_key is not None:
            key = settings.secret_key.get_secret_value().encode()
        else:
            key = await store.server_secret(TICKET_KEY_NAME, os.urandom(32))
        blobs = open_blob_store(settings, store)
        limiter = RateLimiter(
            settings.rate_limit_per_key,
            settings.rate_limit_per_user,
            settings.redis_url,
            settings.redis_prefix,
        )
        attachment_service = AttachmentService(
            store,
            blobs,
            UrlSigner(key, settings.attachment_url_ttl_seconds),
            settings.blob_sweep_grace_seconds,
        )
        conversation_service = ConversationService(store, hub, settings.default_deployment_id)
        conversation_service.after_delete = attachment_service.sweep
        app.services = app.state.services = Services(
            settings=settings,
            store=store,
            hub=hub,
            auth=Authenticator(settings, store),
            tickets=TicketSigner(key, settings.ws_ticket_ttl_seconds),
            conversations=conversation_service,
            messages=MessageService(store, hub, attachment_service),
            participants=ParticipantService(store, hub),
            identities=IdentityService(store),
            attachments=attachment_service,
            blobs=blobs,
            limiter=limiter,
            ws_base_url=_ws_base_url(settings),
            http_base_url=_http_base_url(settings),
        )
        sweeper = asyncio.create_task(
            maintenance.run_forever(
                store,
                attachment_service,
                hub,
                settings.retention_days,
                min(
                    settings.maintenance_interval_seconds,
                    max(settings.blob_sweep_grace_seconds, 1.0),
                ),
            )
        )
        key_watch = asyncio.create_task(
            realtime.close_revoked_keys(
                hub,
                app.services.auth,
                min(realtime.KEY_CHECK_SECONDS, settings.ws_heartbeat_seconds),
            )
        )
        # Full collections of everything start-up allocated stalled every request in
        # flight for ~20 ms a few times a second: freeze what exists now, and collect
        # the young generation less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("ready: database %s", mask_url(settings.database_url))
        try:
            yield
        finally:
            sweeper.cancel()
            key_watch.cancel()
            await limiter.close()
            await hub.close()
            await store.close()
            access_log.flush()

    router = _Router(
        routes=[
            *system.routes,
            *conversations.routes,
            *messages.routes,
            *participants.routes,
            *identities.routes,
            *attachments.routes,
            *realtime.routes,
            *console.routes,
        ],
        # A slash too many is a 404 problem, not a redirect a client may not follow.
        redirect_slashes=False,
        lifespan=lifespan,
    )
    app = AiriaApp(router, settings.max_header_bytes)
    if settings.cors_origin_list:
        app.enable_cors(settings.cors_origin_list)
    return app


class _Router(Router):
    """Starlette's router, whose answer to a WebSocket upgrade on a path that has no
    socket is a 404 problem like an HTTP request's (Starlette's is an empty 403)."""

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            raise HTTPException(404)  # the middleware refuses the upgrade with it
        await super().not_found(scope, receive, send)


class _Cors(CORSMiddleware):
    """Starlette's CORS, whose preflight answers (made before any other layer sees the
    request) carry an `X-Correlation-ID` like every answer, and refuse as problem+json
    rather than plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        cid = correlation_id_from(request_headers.get("x-correlation-id", "").encode() or None)
        if response.status_code >= 400:
            refused = bytes(response.body).decode()  # "Disallowed CORS origin, method"
            body = problem_body(
                response.status_code, "CORS preflight refused", refused, None, correlation_id=cid
            )
            headers = {
                k: v
                for k, v in response.headers.items()
                if k not in ("content-type", "content-length")
            }
            response = Response(
                body, response.status_code, headers=headers, media_type=PROBLEM_JSON
            )
        response.headers["X-Correlation-ID"] = cid
        return response


class AiriaApp:
    """The ASGI application: the router behind one middleware that sets the request's
    context and turns every error into problem+json.

    Starlette's application class would add two more layers of middleware per
    request (server errors, exception handlers) that this middleware already
    covers; on a service measured against a bare hello, each layer shows.
    """

    def __init__(self, router: Router, max_header_bytes: int = 16 * 1024) -> None:
        self.router = router
        self.state = State()
        self.services: Services | None = None  # set by the lifespan; read on every request
        self.metrics = Metrics()
        self._stack = RequestContextMiddleware(
            SegmentRouter(router.routes, router),
            max_header_bytes=max_header_bytes,
            metrics=self.metrics,
        )

    def enable_cors(self, origins: list[str]) -> None:
        """Answer browsers from exactly these origins (never `*`, never credentials)."""
        self._stack = _Cors(
            self._stack,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-KEY",
                "X-Correlation-ID",
                "Content-Type",
                "Idempotency-Key",
                "Range",
            ],
            expose_headers=[
                "X-Correlation-ID",
                "Retry-After",
                "Idempotent-Replayed",
                "Content-Range",
            ],
            max_age=600,
        )

    async def close_sockets(self, timeout: float = 3.0) -> None:
        """On shutdown: close every WebSocket with 1001 (going away) before the server
        drops the connections, so clients know to reconnect, elsewhere if need be."""
        services = getattr(self.state, "services", None)
        if services is not None:
            await services.hub.close_all(timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # what `request.app` reads
        if scope["type"] == "lifespan":
            await self.router(scope, receive, send)
        else:
            await self._stack(scope, receive, send)
