"""The feed's route over what the store answers, including answers a race produces."""

from __future__ import annotations

import asyncio
import json

from airia_server.app import create_app
from airia_server.config import Settings
from airia_server.storage.base import FeedPage

from .asgi import http_scope


def test_an_empty_page_under_a_stale_total_is_an_empty_last_page(tmp_path) -> None:
    """The total and the page are two reads: a conversation deleted between them leaves
    the page empty while the total says more follow. That was a 500 (items[-1])."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", bootstrap_api_key="key")
    app = create_app(settings)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main() -> tuple[int, dict]:
        async with app.router.lifespan_context(app):

            async def raced(principal, query) -> FeedPage:
                return FeedPage(items=[], total_count=1)

            app.services.conversations.feed = raced
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)

            await app(
                http_scope("GET", "/v1/Conversations/feed", b"PageSize=1&userId=u"), receive, send
            )
            body = b"".join(m.get("body", b"") for m in sent[1:])
            return sent[0]["status"], json.loads(body)

    status, body = asyncio.run(main())
    assert status == 200, body
    assert body == {"items": [], "totalCount": 1}
