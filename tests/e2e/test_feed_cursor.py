"""Feed paging by cursor (an extension): `nextCursor` continues where a page ended,
gives what PageNumber gives, stays in its own sort, and refuses what it did not issue."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .support import LiveServer

pytestmark = pytest.mark.e2e

FEED = "/v1/Conversations/feed"


def _walk_by_page(http: httpx.Client, headers: dict, params: dict) -> list[str]:
    seen: list[str] = []
    for number in range(1, 100):
        body = http.get(FEED, params={**params, "PageNumber": number}, headers=headers).json()
        if not body["items"]:
            return seen
        seen += [item["conversationId"] for item in body["items"]]
    raise AssertionError("the feed did not end")


def _walk_by_cursor(http: httpx.Client, headers: dict, params: dict) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get(FEED, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item["conversationId"] for item in body["items"]]
        cursor = body.get("nextCursor")
        if cursor is None:
            return seen
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("sort_by", ["updatedAt", "createdAt"])
@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_cursor_pages_give_what_page_numbers_give(
    server: LiveServer, http: httpx.Client, sort_by: str, direction: str
) -> None:
    user = f"cursor_{uuid.uuid4().hex[:8]}"
    headers = server.headers()
    created = []
    for i in range(23):
        response = http.post(
            "/v1/Conversations", json={"userId": user, "title": f"c{i}"}, headers=headers
        )
        created.append(response.json()["conversationId"])
    # A message moves one conversation to the front when sorting by updatedAt.
    http.post(f"/v1/Conversations/{created[3]}/messages", json={"message": "bump"}, headers=headers)
    params = {"userId": user, "PageSize": 5, "SortBy": sort_by, "SortDirection": direction}

    by_page = _walk_by_page(http, headers, params)
    by_cursor = _walk_by_cursor(http, headers, params)

    assert sorted(by_page) == sorted(created)
    assert by_cursor == by_page


def test_a_page_that_is_not_full_has_no_next_cursor_field(
    server: LiveServer, http: httpx.Client
) -> None:
    user = f"cursor_{uuid.uuid4().hex[:8]}"
    http.post("/v1/Conversations", json={"userId": user}, headers=server.headers())
    body = http.get(FEED, params={"userId": user, "PageSize": 5}, headers=server.headers()).json()
    assert len(body["items"]) == 1 and "nextCursor" not in body


def test_the_last_page_has_no_next_cursor_even_when_full(
    server: LiveServer, http: httpx.Client
) -> None:
    """api.md: absent on the last page. Six conversations in pages of 3 or 6: a full last
    page, by number or by cursor, says there is no next one."""
    user = f"cursor_{uuid.uuid4().hex[:8]}"
    headers = server.headers()
    for _ in range(6):
        http.post("/v1/Conversations", json={"userId": user}, headers=headers)

    def page(**params) -> dict:
        response = http.get(FEED, params={"userId": user, **params}, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    assert "nextCursor" not in page(PageSize=6)
    assert "nextCursor" not in page(PageSize=3, PageNumber=2)
    first = page(PageSize=3)
    assert len(first["items"]) == 3 and first["nextCursor"]
    second = page(PageSize=3, cursor=first["nextCursor"])
    assert len(second["items"]) == 3 and "nextCursor" not in second
    assert not {i["conversationId"] for i in first["items"]} & {
        i["conversationId"] for i in second["items"]
    }
    middle = page(PageSize=2, cursor=page(PageSize=2)["nextCursor"])
    assert len(middle["items"]) == 2 and middle["nextCursor"]


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "", "eyJhIjoxfQ", "W10", "x" * 600],
)
def test_cursors_the_server_did_not_issue_are_422(
    server: LiveServer, http: httpx.Client, cursor: str
) -> None:
    response = http.get(FEED, params={"cursor": cursor}, headers=server.headers())
    if cursor == "":  # empty means none
        assert response.status_code == 200
        return
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "cursor" in response.json()["message"]


def test_a_cursor_belongs_to_its_sort(server: LiveServer, http: httpx.Client) -> None:
    user = f"cursor_{uuid.uuid4().hex[:8]}"
    headers = server.headers()
    for _ in range(3):
        http.post("/v1/Conversations", json={"userId": user}, headers=headers)
    first = http.get(FEED, params={"userId": user, "PageSize": 2}, headers=headers).json()
    cursor = first.get("nextCursor")
    assert cursor
    for other in ({"SortBy": "createdAt"}, {"SortDirection": "asc"}, {"SortBy": "title"}):
        response = http.get(
            FEED, params={"userId": user, "PageSize": 2, "cursor": cursor, **other}, headers=headers
        )
        assert response.status_code == 422, (other, response.text)
    # Sorting by title pages by number only.
    by_title = http.get(
        FEED, params={"userId": user, "PageSize": 2, "SortBy": "title"}, headers=headers
    ).json()
    assert "nextCursor" not in by_title
