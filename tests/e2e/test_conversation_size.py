"""A conversation's GET shows its newest messages only, up to a configured number."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .support import running_server

pytestmark = pytest.mark.e2e


def test_get_shows_the_newest_messages_oldest_first_up_to_the_limit(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, AIRIA_CONVERSATION_MESSAGES_LIMIT="3") as server,
        httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=10) as http,
    ):
        cid = http.post("/v1/Conversations", json={"userId": "u"}).json()["conversationId"]
        for i in range(5):
            assert (
                http.post(
                    f"/v1/Conversations/{cid}/messages", json={"message": f"m{i}"}
                ).status_code
                == 201
            )
        got = http.get(f"/v1/Conversations/{cid}").json()
        shown = got["messages"]
        assert [m["message"] for m in shown] == ["m2", "m3", "m4"]
        assert got["messageCount"] == 5  # all of them, though three are shown
        # All of them stay reachable, page by page, and the feed counts all five.
        page = http.get(f"/v1/Conversations/{cid}/messages", params={"limit": 10}).json()
        assert [m["message"] for m in page["items"]] == [f"m{i}" for i in range(5)]
        feed = http.get("/v1/Conversations/feed", params={"userId": "u"}).json()
        assert feed["items"][0]["messageCount"] == 5
