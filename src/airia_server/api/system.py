"""Health, the OpenAPI document and the interactive docs page."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from airia_server.api.deps import services
from airia_server.api.openapi import openapi_document

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


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(services(request).settings.feed_max_page_size))


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Mount("/docs/assets", StaticFiles(directory=Path(swagger_ui_bundle.swagger_ui_path))),
]
