"""Health, the OpenAPI document and the interactive docs page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import swagger_ui_bundle
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from airia_server.api.deps import services
from airia_server.api.openapi import openapi_document
from airia_server.storage import LATEST_MIGRATION

_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Airia Conversations API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", persistAuthorization: true});</script>
</body></html>"""


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Ready to serve: the database answers, its schema is current, and the event
    fan-out (Redis, where configured) is connected. 503 with the failing checks."""
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.store.ping(), 2.0)
        version = await svc.store.schema_version()
        checks["database"] = "ok"
        checks["migrations"] = (
            "ok"
            if version >= LATEST_MIGRATION[svc.store.backend]
            else (f"schema {version} is behind this server's {LATEST_MIGRATION[svc.store.backend]}")
        )
    except Exception as exc:  # any failure to reach the database is "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if svc.settings.redis_url:
        checks["redis"] = "ok" if svc.hub.healthy else "unreachable: events stay on this instance"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    app = request.app
    return Response(
        app.metrics.render(getattr(app.state, "services", None)),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(services(request).settings.feed_max_page_size))


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Mount("/docs/assets", StaticFiles(directory=Path(swagger_ui_bundle.swagger_ui_path))),
]
