"""A conversation's GET shows its newest messages only, up to a configured number and size."""

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


def test_get_shows_the_newest_messages_that_fit_its_size(tmp_path: Path) -> None:
    """Long messages: the newest whose text adds up to AIRIA_CONVERSATION_MESSAGES_MAX_BYTES
    (here 2,500 characters: two of 1,000), and always the newest, even alone over it."""
    with (
        running_server(tmp_path, AIRIA_CONVERSATION_MESSAGES_MAX_BYTES="2500") as server,
        httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=10) as http,
    ):
        cid = http.post("/v1/Conversations", json={"userId": "u"}).json()["conversationId"]
        messages = f"/v1/Conversations/{cid}/messages"
        for text in ("a" * 1000, "b" * 1000, "c" * 1000):
            assert http.post(messages, json={"message": text}).status_code == 201
        got = http.get(f"/v1/Conversations/{cid}").json()
        assert [m["message"][0] for m in got["messages"]] == ["b", "c"]
        assert got["messageCount"] == 3
        assert http.post(messages, json={"message": "d" * 3000}).status_code == 201
        got = http.get(f"/v1/Conversations/{cid}").json()
        assert [m["message"][0] for m in got["messages"]] == ["d"]
