"""Health, the OpenAPI document and the interactive docs page."""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from airia_server.api.deps import services
from airia_server.api.openapi import openapi_document
from airia_server.errors import Unauthorized
from airia_server.storage import LATEST_MIGRATION, Store
from airia_server.storage.outages import DatabaseUnavailable, Outage, outage_of

T = TypeVar("T")


def _swagger_ui_static() -> Path:
    """Swagger UI's files, as the `swagger-ui-py` package ships them (5.x, which reads
    OpenAPI 3.1: the 4.x of `swagger-ui-bundle` showed "Unable to render this
    definition"). Found without importing the package, whose code (a web framework
    adapter) the server does not use."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


_DOCS_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Airia Conversations API</title>
<link rel="icon" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>"""

# The key a user types into "Authorize" stays in the page (never in this origin's
# localStorage, which the console shares).
_DOCS_INIT = b"""SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#ui", persistAuthorization: false
});
"""

_DOCS_HEADERS = {
    # Swagger UI needs inline styles; scripts and everything else come from here.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Ready to serve: the database answers and takes writes, its schema is current,
    and the event fan-out (Redis, where configured) is connected. 503 with the failing
    checks."""
    svc = services(request)
    checks = await _database_checks(svc.store)
    if svc.settings.redis_url:
        checks["redis"] = (
            "ok"
            if svc.hub.healthy
            else "unreachable or not answering: events stay on this instance"
        )
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def _within(check: Awaitable[T], seconds: float) -> T:
    """`check`'s result, or TimeoutError after `seconds`, whatever the check does once
    cancelled. `asyncio.wait_for` waits for a cancelled task to finish, and asyncpg's
    query on a database that stopped answering (a network partition, a frozen host)
    finishes its cancellation only when the database answers again: `/readyz` then
    hung as long as the outage (90 s in a test), and a probe learnt nothing."""
    task = asyncio.ensure_future(check)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()  # its end is its own business
        task.add_done_callback(_consume)
        raise TimeoutError(f"no answer within {seconds:g} s")
    return task.result()


def _consume(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" in the log


async def _database_checks(store: Store) -> dict[str, str]:
    """`database` and, when it answers, `migrations`. A database that answers but
    refuses writes (a standby) is not ready; one without this server's tables (dropped
    and recreated empty) answers, and fails `migrations`."""
    checks: dict[str, str] = {}
    try:
        await _within(store.ping(), 2.0)
        checks["database"] = "ok"
    except DatabaseUnavailable as exc:
        checks["database"] = str(exc)
        if exc.outage is Outage.AWAY:
            return checks
    except Exception as exc:  # any failure to reach the database is "not ready"
        return {"database": f"unreachable: {type(exc).__name__}"}
    latest = LATEST_MIGRATION[store.backend]
    try:
        version = await _within(store.schema_version(), 2.0)
    except Exception as exc:
        if outage_of(exc) is not Outage.NO_SCHEMA:
            return {"database": f"unreachable: {type(exc).__name__}"}
        version = None
    if version is None:
        checks["migrations"] = "no schema: the database has none of this server's tables"
    elif version < latest:
        checks["migrations"] = f"schema {version} is behind this server's {latest}"
    else:
        checks["migrations"] = "ok"
    return checks


async def metrics(request: Request) -> Response:
    """Prometheus text format; behind `AIRIA_METRICS_TOKEN` when it is set."""
    app = request.app
    svc = getattr(app.state, "services", None)
    token = svc.settings.metrics_token if svc is not None else None
    if token is not None:
        given = request.headers.get("authorization", "")
        scheme, _, credential = given.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), expected
        ):
            error = Unauthorized(
                "Metrics need the metrics token",
                "Send Authorization: Bearer <AIRIA_METRICS_TOKEN>",
            )
            error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'  # no API key here
            raise error
    return Response(
        app.metrics.render(svc),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(services(request).settings.feed_max_page_size))


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE, headers=_DOCS_HEADERS)


async def docs_init(request: Request) -> Response:
    return Response(_DOCS_INIT, media_type="text/javascript", headers=_DOCS_HEADERS)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Route("/docs/init.js", docs_init, methods=["GET"]),
    Mount("/docs/assets", StaticFiles(directory=_swagger_ui_static())),
]
