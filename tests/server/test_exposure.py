"""What a caller can learn of the server's traffic, other tenants' included."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from pydantic import ValidationError

from airia_server.app import create_app
from airia_server.config import Settings

from .asgi import http_scope


def _serve(tmp_path, requests: list[tuple[str, list[tuple[bytes, bytes]]]], **settings):
    """The answers (status, headers, body) to GETs of `path` with extra headers."""
    app = create_app(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", bootstrap_api_key="key", **settings
        )
    )

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main() -> list[tuple[int, dict[bytes, bytes], bytes]]:
        answers = []
        async with app.router.lifespan_context(app):
            for path, headers in requests:
                sent: list[dict] = []

                async def send(message: dict, sent: list[dict] = sent) -> None:
                    sent.append(message)

                scope = http_scope("GET", path)
                scope["headers"] = [(b"host", b"testserver"), *headers]
                await app(scope, receive, send)
                body = b"".join(m.get("body", b"") for m in sent[1:])
                answers.append((sent[0]["status"], dict(sent[0]["headers"]), body))
        return answers

    return asyncio.run(main())


def test_correlation_ids_do_not_count_the_requests_between(tmp_path) -> None:
    """They were a counter behind a fixed prefix: two ids of one caller told how many
    requests, anyone's, the server had answered in between."""
    answers = _serve(tmp_path, [("/healthz", [])] * 20)
    ids = [headers[b"x-correlation-id"].decode() for _, headers, _ in answers]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert len({i[:16] for i in ids}) == 1, ids  # the process's part
    steps = {int(b[16:], 16) - int(a[16:], 16) for a, b in itertools.pairwise(ids)}
    assert len(steps) > 1, ids  # the request's part: no counter


def test_metrics_are_open_unless_a_token_is_set(tmp_path) -> None:
    [(status, _, body)] = _serve(tmp_path, [("/metrics", [])])
    assert status == 200 and b"airia_http_requests_total" in body


def test_metrics_behind_a_token_answer_only_that_token(tmp_path) -> None:
    """Their counts are every tenant's traffic: AIRIA_METRICS_TOKEN keeps them to the
    scraper that holds it (an API key is not it)."""
    token = "m" * 40
    answers = _serve(
        tmp_path / "t",
        [
            ("/metrics", []),
            ("/metrics", [(b"x-api-key", b"key")]),
            ("/metrics", [(b"authorization", b"Bearer " + b"n" * 40)]),
            ("/metrics", [(b"authorization", b"Basic " + token.encode())]),
            ("/metrics", [(b"authorization", b"Bearer " + token.encode())]),
            ("/metrics", [(b"authorization", b"bearer  " + token.encode())]),
        ],
        metrics_token=token,
    )
    for status, headers, body in answers[:4]:
        assert status == 401, body
        assert headers[b"content-type"] == b"application/problem+json"
        assert headers[b"www-authenticate"] == b'Bearer realm="metrics"'  # not X-API-KEY
        assert "AIRIA_METRICS_TOKEN" in json.loads(body)["detail"]
    for status, _, body in answers[4:]:
        assert status == 200 and b"airia_http_requests_total" in body, body


def test_an_empty_metrics_token_is_no_token(tmp_path) -> None:
    """An empty variable (a compose file's unset one) left /metrics closed to all but
    an empty `Bearer`; it is unset, as the docs say."""
    answers = _serve(
        tmp_path,
        [("/metrics", []), ("/metrics", [(b"authorization", b"Bearer")])],
        metrics_token=" ",
    )
    assert [status for status, _, _ in answers] == [200, 200]


@pytest.mark.parametrize("token", ["with space" * 4, "tab\t" * 8, "é" * 32])
def test_a_metrics_token_no_header_can_carry_is_refused(token: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(metrics_token=token)
    assert info.value.errors()[0]["loc"] == ("metrics_token",)
