"""Request routing: a table of path segments for the API's routes, Starlette for the rest.

Starlette's router tries each route's regular expression in turn and wraps every
endpoint in two more layers (exception handlers, a request/response adapter);
on a service measured against a bare hello, a GET to the tenth route paid for
ten regex matches before reaching its handler. Here a path is split once and
walked through a tree of its segments (a literal segment before a parameter),
and the handler for the method is called directly: the cost no longer depends
on how many routes come before.

Only plain HTTP `Route`s whose parameters are whole segments (`{name}`) go in
the table. Everything else (WebSocket routes, mounted static files, lifespan,
and every path the table does not know) goes to the Starlette router as before,
so its answers (404, 405 with `Allow`) stay what they were. Errors from handlers
propagate to the middleware, which turns them into problem+json.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote

from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from airia_server.api.middleware import CORRELATION_HEADER, STATUS, WRAPPED_SEND

Endpoint = Callable[[Request], Awaitable[Response]]

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class _Node:
    __slots__ = ("allow", "literals", "methods", "param", "param_name", "route")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name: str | None = None
        self.methods: dict[str, Endpoint] | None = None
        self.route: Route | None = None
        self.allow = ""


def handlers_of(route: Route) -> dict[str, Endpoint] | None:
    """The endpoint per method of a plain HTTP route; None when it cannot be called
    directly (a sync endpoint, or an ASGI app rather than a request handler)."""
    by_method: dict[str, Endpoint] | None = getattr(route, "handlers", None)
    if by_method is not None:
        return by_method
    endpoint = route.endpoint
    if route.app is endpoint or not _is_async(endpoint):
        return None
    return {method: endpoint for method in route.methods or ("GET", "HEAD")}


def _is_async(fn: Any) -> bool:
    while hasattr(fn, "__wrapped__") and not inspect.iscoroutinefunction(fn):
        fn = fn.__wrapped__
    return inspect.iscoroutinefunction(fn)


class SegmentRouter:
    """Routes HTTP requests by path segment; delegates everything else to `fallback`."""

    def __init__(self, routes: Iterable[BaseRoute], fallback: Router) -> None:
        self.fallback = fallback
        self._root = _Node()
        for route in routes:
            if type(route) is not Route:
                continue
            by_method = handlers_of(route)
            if by_method is None:
                continue
            self._add(route, by_method)

    def _add(self, route: Route, by_method: dict[str, Endpoint]) -> None:
        node = self._root
        for segment in route.path.split("/")[1:]:
            match = _PARAM.match(segment)
            if match is None:
                if "{" in segment:  # a converter or a partial-segment parameter
                    return
                node = node.literals.setdefault(segment, _Node())
                continue
            if node.param is None:
                node.param = _Node()
                node.param_name = match.group(1)
            elif node.param_name != match.group(1):
                return  # two names for one position: leave it to Starlette
            node = node.param
        if node.methods is not None:
            return  # the first route for a path wins, as in Starlette
        node.methods = dict(by_method)
        node.route = route
        node.allow = ", ".join(sorted(node.methods))

    def _find(self, path: str) -> tuple[_Node, dict[str, str]] | None:
        if not path.startswith("/"):
            return None
        segments = path.split("/")
        params: dict[str, str] = {}
        node = _walk(self._root, segments, 1, params)
        return (node, params) if node is not None else None

    def _find_encoded(self, raw_path: bytes) -> tuple[_Node, dict[str, str]] | None:
        """Route a path holding an encoded '/' by its segments as sent, each decoded on
        its own: a user id such as "team/zed" is one segment, `team%2Fzed`. (`path`
        has every '/' decoded, and would make it two.)"""
        segments = [unquote(s) for s in raw_path.decode("ascii", "replace").split("/")]
        if segments[0] != "":
            return None
        params: dict[str, str] = {}
        node = _walk(self._root, segments, 1, params)
        return (node, params) if node is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, scope.get(WRAPPED_SEND, send))
            return
        if scope.get("root_path"):
            found = self._find(get_route_path(scope))
        else:
            raw = scope.get("raw_path") or b""
            if b"%2F" in raw or b"%2f" in raw:
                found = self._find_encoded(raw)
            else:
                found = self._find(scope["path"])
        if found is None:
            await self.fallback(scope, receive, scope.get(WRAPPED_SEND, send))
            return
        node, params = found
        endpoint = node.methods.get(scope["method"])  # type: ignore[union-attr]
        scope["route"] = node.route
        scope["path_params"] = params
        if endpoint is None:
            raise HTTPException(405, headers={"Allow": node.allow})
        response = await endpoint(Request(scope, receive, send))
        header = scope.get(CORRELATION_HEADER)
        if header is not None:
            response.raw_headers.append(header)
        scope[STATUS] = response.status_code
        await response(scope, receive, send)


def _walk(node: _Node, segments: list[str], i: int, params: dict[str, str]) -> _Node | None:
    """The node the segments from `i` lead to, a literal tried before a parameter."""
    if i == len(segments):
        return node if node.methods is not None else None
    segment = segments[i]
    child = node.literals.get(segment)
    if child is not None:
        found = _walk(child, segments, i + 1, params)
        if found is not None:
            return found
    if node.param is not None and segment:
        params[node.param_name] = segment  # type: ignore[index]
        found = _walk(node.param, segments, i + 1, params)
        if found is not None:
            return found
        del params[node.param_name]  # type: ignore[arg-type]
    return None
