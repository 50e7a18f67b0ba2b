"""SegmentRouter: the same answers as Starlette's router, without trying each route."""

from __future__ import annotations

import asyncio

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router, WebSocketRoute

from airia_server.api.common import query_params, resource
from airia_server.api.routing import SegmentRouter


async def _named(request: Request) -> Response:
    return PlainTextResponse(f"{request.scope['route'].path} {dict(request.path_params)}")


async def _feed(request: Request) -> Response:
    return PlainTextResponse("feed")


async def _socket(ws) -> None:  # never called here
    raise AssertionError


def _router() -> SegmentRouter:
    routes = [
        resource("/v1/Conversations", POST=_named),
        resource("/v1/Conversations/feed", GET=_feed),
        resource("/v1/Conversations/{conversation_id}", GET=_named, DELETE=_named),
        Route("/v1/Conversations/{conversation_id}/messages", _named, methods=["GET"]),
        Route(
            "/v1/Conversations/{conversation_id}/participants/{user_id}", _named, methods=["DELETE"]
        ),
        Route("/files/{rest:path}", _named),
        WebSocketRoute("/v1/Conversations/{conversation_id}/ws", _socket),
    ]
    return SegmentRouter(routes, Router(routes, redirect_slashes=False))


def _call(
    router: SegmentRouter, method: str, path: str, root_path: str = "", raw_path: bytes = b""
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "root_path": root_path,
        "raw_path": raw_path or (root_path + path).encode(),
        "query_string": b"",
        "headers": [],
        "app": object(),
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(router(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_literal_segment_wins_over_a_parameter():
    assert _call(_router(), "GET", "/v1/Conversations/feed") == (200, b"feed")


def test_parameters_are_whole_segments():
    status, body = _call(_router(), "DELETE", "/v1/Conversations/abc/participants/u%201")
    assert status == 200
    assert body == (
        b"/v1/Conversations/{conversation_id}/participants/{user_id} "
        b"{'conversation_id': 'abc', 'user_id': 'u%201'}"
    )


@pytest.mark.parametrize("slash", [b"%2F", b"%2f"])
def test_an_encoded_slash_stays_inside_its_segment(slash: bytes):
    """The server decodes `path` whole ("team/zed" would be two segments): a path with
    an encoded '/' is routed by its segments as sent, each decoded on its own."""
    raw = b"/v1/Conversations/abc/participants/team" + slash + b"zed%20x"
    status, body = _call(
        _router(), "DELETE", "/v1/Conversations/abc/participants/team/zed x", raw_path=raw
    )
    assert status == 200
    assert body.endswith(b"{'conversation_id': 'abc', 'user_id': 'team/zed x'}")


def test_head_is_answered_by_get():
    assert _call(_router(), "HEAD", "/v1/Conversations/abc")[0] == 200


def test_a_wrong_method_is_405_listing_every_method_of_the_path():
    with pytest.raises(HTTPException) as caught:
        _call(_router(), "PUT", "/v1/Conversations/abc")
    assert caught.value.status_code == 405
    assert caught.value.headers == {"Allow": "DELETE, GET, HEAD"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/Conversations/",  # an empty segment names nothing
        "/v1/Conversations//messages",
        "/v1/Conversations/abc/messages/",
        "/v1/conversations/abc",  # paths are case-sensitive, as in Starlette
        "/nothing",
    ],
)
def test_unknown_paths_go_to_starlette_which_answers_404(path):
    with pytest.raises(HTTPException) as caught:
        _call(_router(), "GET", path)
    assert caught.value.status_code == 404


def test_routes_the_table_cannot_hold_still_work_through_starlette():
    status, body = _call(_router(), "GET", "/files/a/b.txt")
    assert status == 200 and b"'rest': 'a/b.txt'" in body


def test_the_root_path_is_not_part_of_the_route():
    status, body = _call(_router(), "GET", "/v1/Conversations/abc", root_path="/api")
    assert status == 200 and b"'conversation_id': 'abc'" in body


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"PageSize=5&pagesize=7",  # the last of one name, whatever its case
        b"filter=&userId",  # blank values are kept
        b"filter=%E2%9C%93+x&userId=a%2Bb",
        b"a=1;b=2",
        b"&&PageNumber=2&",
        b"filter=%ZZ",
        b"filter=\xe9t\xe9",  # raw bytes past ASCII, read as latin-1
    ],
)
def test_query_params_are_starlettes_by_lower_cased_name(raw: bytes) -> None:
    request = Request({"type": "http", "query_string": raw, "headers": []})
    expected = {key.lower(): value for key, value in request.query_params.items()}
    assert query_params(request) == expected
