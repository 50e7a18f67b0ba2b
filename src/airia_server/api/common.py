"""Small helpers every route module shares: JSON responses and query parameters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airia_server.api.schemas import MAX_USER_ID, encode
from airia_server.errors import ValidationFailed
from airia_server.text import parse_int


class JsonResponse(Response):
    """Encoded JSON with its two headers, built directly (Starlette's `init_headers`
    generalises over media types and header mappings on every response)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


def json_response(payload: Any, status: int = 200) -> Response:
    return JsonResponse(encode(payload), status)


def query_params(request: Request) -> dict[str, str]:
    """Query parameters by lower-cased name: names are case-insensitive, as on the
    reference platform. Parsed as Starlette's `request.query_params` parses them (a
    name given twice keeps its last value), without its multi-dict: 4.6 µs against
    14 for three parameters, on every feed and message page."""
    raw: bytes = request.scope["query_string"]
    if not raw:
        return {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return {key.lower(): value for key, value in pairs}


def int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name.lower())
    if raw is None or raw == "":
        return default
    value = parse_int(raw)
    if value is None or not low <= value <= high:
        raise ValidationFailed(
            f"Invalid value for '{name}': must be an integer from {low} to {high}",
            errors=[{"field": name, "message": f"must be an integer from {low} to {high}"}],
        )
    return value


def user_param(params: dict[str, str]) -> str | None:
    """The `userId` query parameter, held to the limit of a `userId` in a body."""
    raw = params.get("userid") or None
    if raw is not None and len(raw) > MAX_USER_ID:
        raise ValidationFailed(
            f"Invalid value for 'userId': at most {MAX_USER_ID} characters",
            errors=[{"field": "userId", "message": f"at most {MAX_USER_ID} characters"}],
        )
    return raw


def choice(params: dict[str, str], name: str, choices: dict[str, str], default: str) -> str:
    raw = params.get(name.lower())
    if raw is None or raw == "":
        return default
    try:
        return choices[raw.lower()]
    except KeyError:
        allowed = ", ".join(sorted(set(choices.values())))
        raise ValidationFailed(
            f"Invalid value for '{name}': must be one of {allowed}",
            errors=[{"field": name, "message": f"must be one of {allowed}"}],
        ) from None


Endpoint = Callable[[Request], Awaitable[Response]]


def resource(path: str, **handlers: Endpoint) -> Route:
    """One route for a path with a handler per method (`GET=...`, `PUT=...`), so a
    wrong method is a 405 that lists every method the path has."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in by_method:
        by_method.setdefault("HEAD", by_method["GET"])

    async def dispatch(request: Request) -> Response:
        return await by_method[request.method](request)

    dispatch.__name__ = "_".join(h.__name__ for h in handlers.values())
    route = Route(path, dispatch, methods=list(by_method))
    route.handlers = by_method  # type: ignore[attr-defined]  # called directly by SegmentRouter
    return route
