"""The web console: a static page at /console and its assets, same origin as the API.

Plain files (no build step, nothing fetched from elsewhere) under
`airia_server/console/`; the page talks to this server with relative URLs, so it
works behind a proxy that serves the server under a path. Its one address is
`/console` (`/console/` redirects there, relatively): relative to it, its assets are
`console/assets/...` and the API `v1/...`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"

# Everything the page loads is its own; sockets go to this server (ws:/wss: because
# `websocketUrl` may carry AIRIA_PUBLIC_URL's host); attachment links are followed
# as navigations, which connect-src does not govern.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; form-action 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def console_page(request: Request) -> Response:
    return FileResponse(
        CONSOLE_DIR / "index.html", media_type="text/html", headers=_SECURITY_HEADERS
    )


async def console_slash(request: Request) -> Response:
    # Relative, so that it stays under whatever path a proxy serves the server at.
    return RedirectResponse("../console", status_code=308)


class _Assets:
    """The page's scripts and styles, with its security headers on every answer. The
    page itself is not among them: only /console serves it."""

    def __init__(self, directory: Path) -> None:
        self.files = StaticFiles(directory=directory)
        self.headers = [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not scope["path"].endswith((".js", ".css")):
            raise HTTPException(404)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.files(scope, receive, send_with_headers)


routes = [
    Route("/console", console_page, methods=["GET", "HEAD"]),
    Route("/console/", console_slash, methods=["GET", "HEAD"]),
    Mount("/console/assets", _Assets(CONSOLE_DIR)),
]
