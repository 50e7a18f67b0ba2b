"""Messages over HTTP against the real server: append, list, page, truncate, read positions."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .support import LiveServer, assert_problem, mint_jwt

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
MESSAGE_FIELDS = {
    "id",
    "conversationId",
    "message",
    "role",
    "images",
    "createdAt",
    "updatedAt",
    "userId",
}
UNKNOWN_UUID = "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"


def create(http: httpx.Client, headers: dict[str, str], user_id: str, **body) -> dict:
    response = http.post(COLLECTION, json={"userId": user_id, **body}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def add(http: httpx.Client, headers: dict[str, str], cid: str, **body) -> dict:
    response = http.post(f"{COLLECTION}/{cid}/messages", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def get_conversation(http: httpx.Client, headers: dict[str, str], cid: str) -> dict:
    response = http.get(f"{COLLECTION}/{cid}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def feed_item(http: httpx.Client, headers: dict[str, str], cid: str, title: str, **params) -> dict:
    """The feed item of conversation `cid`, found by its unique title."""
    response = http.get(
        f"{COLLECTION}/feed", params={"filter": title, "PageSize": 100, **params}, headers=headers
    )
    assert response.status_code == 200, response.text
    found = [item for item in response.json()["items"] if item["conversationId"] == cid]
    assert len(found) == 1, response.json()
    return found[0]


def unique_title() -> str:
    return f"msgs-{uuid.uuid4().hex}"


# --- appending and reading back -------------------------------------------------------


def test_messages_of_every_role_are_listed_oldest_first(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    cid = create(http, server.headers(), user_id)["conversationId"]
    sent = [
        ({"message": "hello"}, "user"),
        ({"message": "hi, how can I help?", "role": "assistant"}, "assistant"),
        ({"message": "be brief", "role": "system"}, "system"),
        ({"message": "explicit user", "role": "user", "userId": "someone_else"}, "user"),
        ({"images": ["https://example.com/a.png", "data:image/png;base64,AAAA"]}, "user"),
        ({"message": "with a picture", "images": ["https://example.com/b.png"]}, "user"),
    ]
    responses = []
    for body, _ in sent:
        response = http.post(f"{COLLECTION}/{cid}/messages", json=body, headers=server.headers())
        assert response.status_code in (200, 201), response.text
        created = response.json()
        assert created["conversationId"] == cid
        assert isinstance(created["messageId"], str) and created["messageId"]
        assert created["createdAt"].endswith("Z")
        responses.append(created)

    messages = get_conversation(http, server.headers(), cid)["messages"]
    assert [m["id"] for m in messages] == [r["messageId"] for r in responses]
    assert len({m["id"] for m in messages}) == len(sent)
    for message, (body, role), created in zip(messages, sent, responses, strict=True):
        assert MESSAGE_FIELDS <= message.keys(), message
        assert message["conversationId"] == cid
        assert message["role"] == role
        assert message["message"] == body.get("message")
        if "images" in body:
            assert message["images"] == body["images"]
        else:
            assert message["images"] in (None, [])
        assert message["createdAt"] == created["createdAt"]
        assert message["createdAt"].endswith("Z") and message["updatedAt"].endswith("Z")
    assert [m["createdAt"] for m in messages] == sorted(m["createdAt"] for m in messages)
    # A user message without userId, sent with an API key, is by the conversation's owner.
    assert messages[0]["userId"] == user_id
    assert messages[3]["userId"] == "someone_else"
    assert messages[4]["images"] == sent[4][0]["images"]
    assert messages[5]["images"] == ["https://example.com/b.png"]


def test_bearer_message_is_by_the_bearer(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    as_user = server.bearer(mint_jwt(user_id))
    cid = create(http, as_user, user_id)["conversationId"]
    add(http, as_user, cid, message="mine")
    add(http, as_user, cid, message="answer", role="assistant")
    messages = get_conversation(http, as_user, cid)["messages"]
    assert messages[0]["userId"] == user_id
    # A bearer token cannot speak for someone else.
    response = http.post(
        f"{COLLECTION}/{cid}/messages", json={"message": "x", "userId": "mallory"}, headers=as_user
    )
    assert_problem(response, 403)


def test_message_of_exactly_the_limit_is_accepted(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    cid = create(http, server.headers(), user_id)["conversationId"]
    add(http, server.headers(), cid, message="x" * 100_000)
    assert get_conversation(http, server.headers(), cid)["messages"][0]["message"] == "x" * 100_000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"role": "user"}, "message"),
        ({"message": None}, "message"),
        ({"images": []}, "message"),
        ({"message": None, "images": None}, "message"),
        ({"message": "hi", "role": "robot"}, "role"),
        ({"message": "hi", "role": "User"}, "role"),
        ({"message": "x" * 100_001}, "message"),
        ({"message": 5}, "message"),
        ({"message": "hi", "images": "https://example.com/a.png"}, "images"),
        ({"message": "hi", "imageAttachmentIds": ["att_1"]}, "imageAttachmentIds"),
        ({"imageAttachmentIds": [UNKNOWN_UUID]}, "imageAttachmentIds"),
    ],
    ids=[
        "empty",
        "role-only",
        "message-null",
        "images-empty",
        "both-null",
        "role-robot",
        "role-capitalised",
        "too-long",
        "message-int",
        "images-string",
        "attachment-id",
        "attachment-id-only",
    ],
)
def test_bad_message_is_422_and_nothing_is_stored(
    server: LiveServer, http: httpx.Client, user_id: str, body: dict, field: str
) -> None:
    cid = create(http, server.headers(), user_id)["conversationId"]
    response = http.post(f"{COLLECTION}/{cid}/messages", json=body, headers=server.headers())
    problem = assert_problem(response, 422)
    text = problem["detail"] + problem["message"] + str(problem.get("errors", ""))
    assert field in text, problem
    assert get_conversation(http, server.headers(), cid)["messages"] == []


def test_an_empty_text_is_a_message_taken_as_sent(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    """Text is taken as sent, empty or blank (an agent may answer nothing); only a
    message with neither text nor images is refused (above)."""
    cid = create(http, server.headers(), user_id)["conversationId"]
    for text in ("", "   "):
        body = {"message": text, "role": "assistant"}
        sent = http.post(f"{COLLECTION}/{cid}/messages", json=body, headers=server.headers())
        assert sent.status_code == 201, sent.text
    stored = get_conversation(http, server.headers(), cid)["messages"]
    assert [(m["message"], m["role"]) for m in stored] == [("", "assistant"), ("   ", "assistant")]


def test_message_to_unknown_conversation_is_404(server: LiveServer, http: httpx.Client) -> None:
    for cid in (UNKNOWN_UUID, "your_conversation_id"):
        response = http.post(
            f"{COLLECTION}/{cid}/messages", json={"message": "hi"}, headers=server.headers()
        )
        assert_problem(response, 404)


# --- the feed's counts ----------------------------------------------------------------------


def test_feed_message_count_follows_appends_and_truncation(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    title = unique_title()
    cid = create(http, server.headers(), user_id, title=title)["conversationId"]
    assert feed_item(http, server.headers(), cid, title)["messageCount"] == 0
    ids = [add(http, server.headers(), cid, message=f"m{i}")["messageId"] for i in range(7)]
    assert feed_item(http, server.headers(), cid, title)["messageCount"] == 7
    assert feed_item(http, server.headers(), cid, title, userId=user_id)["messageCount"] == 7

    response = http.delete(
        f"{COLLECTION}/{cid}/messages/{ids[4]}/truncate", headers=server.headers()
    )
    assert response.status_code == 200, response.text
    assert feed_item(http, server.headers(), cid, title)["messageCount"] == 4
    add(http, server.headers(), cid, message="after truncation")
    assert feed_item(http, server.headers(), cid, title)["messageCount"] == 5


# --- pages ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_conversation(live_server: LiveServer) -> tuple[str, list[str]]:
    """A conversation with 137 messages, and their ids in the order they were sent."""
    with live_server.client() as http:
        cid = create(http, live_server.headers(), f"user_{uuid.uuid4().hex[:12]}")["conversationId"]
        ids = [
            add(http, live_server.headers(), cid, message=f"n{i}")["messageId"] for i in range(137)
        ]
    return cid, ids


def walk(
    http: httpx.Client, headers: dict[str, str], cid: str, limit: int, order: str
) -> list[list[dict]]:
    pages: list[list[dict]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": limit, "order": order}
        if cursor is not None:
            params["cursor"] = cursor
        response = http.get(f"{COLLECTION}/{cid}/messages", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str) and cursor
        assert len(pages) <= 200, "the pages never end"


@pytest.mark.parametrize("limit", [1, 10, 50, 136, 137, 200])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_walk_every_message_once(
    server: LiveServer,
    http: httpx.Client,
    long_conversation: tuple[str, list[str]],
    limit: int,
    order: str,
) -> None:
    cid, ids = long_conversation
    pages = walk(http, server.headers(), cid, limit, order)
    expected = ids if order == "asc" else ids[::-1]
    seen = [m["id"] for page in pages for m in page]
    assert seen == expected
    assert len(pages) == -(-137 // limit)
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit
    for page in pages:
        for message in page:
            assert MESSAGE_FIELDS <= message.keys()
            assert message["conversationId"] == cid


def test_default_page_is_50_oldest_first_and_desc_gives_newest(
    server: LiveServer, http: httpx.Client, long_conversation: tuple[str, list[str]]
) -> None:
    cid, ids = long_conversation
    first = http.get(f"{COLLECTION}/{cid}/messages", headers=server.headers()).json()
    assert [m["id"] for m in first["items"]] == ids[:50]
    assert first["nextCursor"] is not None
    newest = http.get(
        f"{COLLECTION}/{cid}/messages",
        params={"order": "desc", "limit": 3},
        headers=server.headers(),
    ).json()
    assert [m["id"] for m in newest["items"]] == ids[:-4:-1]
    assert [m["message"] for m in newest["items"]] == ["n136", "n135", "n134"]


def test_empty_conversation_has_one_empty_page(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    cid = create(http, server.headers(), user_id)["conversationId"]
    for order in ("asc", "desc"):
        response = http.get(
            f"{COLLECTION}/{cid}/messages", params={"order": order}, headers=server.headers()
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "nextCursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "-5"}, "cursor"),
        ({"cursor": "1" * 40}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "²"}, "cursor"),  # str.isdigit says yes; int() says no
        ({"cursor": "\u0661"}, "cursor"),  # an Arabic-Indic 1, which int() reads
        ({"limit": "1_0"}, "limit"),
        ({"limit": "+5"}, "limit"),
    ],
    ids=[
        "cursor-text",
        "cursor-negative",
        "cursor-huge",
        "limit-0",
        "limit-201",
        "limit-neg",
        "limit-text",
        "order",
        "cursor-superscript",
        "cursor-arabic-indic",
        "limit-underscore",
        "limit-plus",
    ],
)
def test_bad_page_parameters_are_422(
    server: LiveServer,
    http: httpx.Client,
    long_conversation: tuple[str, list[str]],
    params: dict,
    field: str,
) -> None:
    cid, _ = long_conversation
    response = http.get(f"{COLLECTION}/{cid}/messages", params=params, headers=server.headers())
    problem = assert_problem(response, 422)
    assert field in problem["detail"] + problem["message"] + str(problem.get("errors", "")), problem


def test_pages_of_unknown_conversation_are_404(server: LiveServer, http: httpx.Client) -> None:
    response = http.get(f"{COLLECTION}/{UNKNOWN_UUID}/messages", headers=server.headers())
    assert_problem(response, 404)


# --- truncation -----------------------------------------------------------------------------


def test_truncate_deletes_the_message_and_every_later_one(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    cid = create(http, server.headers(), user_id)["conversationId"]
    ids = [add(http, server.headers(), cid, message=f"t{i}")["messageId"] for i in range(6)]

    response = http.delete(
        f"{COLLECTION}/{cid}/messages/{ids[2]}/truncate", headers=server.headers()
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "conversationId": cid,
        "fromMessageId": ids[2],
        "deletedCount": 4,
        "remainingCount": 2,
    }
    messages = get_conversation(http, server.headers(), cid)["messages"]
    assert [m["id"] for m in messages] == ids[:2]
    page = http.get(f"{COLLECTION}/{cid}/messages", headers=server.headers()).json()
    assert [m["id"] for m in page["items"]] == ids[:2]

    # The deleted message is gone: truncating from it again is 404.
    again = http.delete(f"{COLLECTION}/{cid}/messages/{ids[3]}/truncate", headers=server.headers())
    assert_problem(again, 404)

    # New messages come after the survivors; truncating from the first empties it.
    new_id = add(http, server.headers(), cid, message="after")["messageId"]
    assert [m["id"] for m in get_conversation(http, server.headers(), cid)["messages"]] == [
        *ids[:2],
        new_id,
    ]
    response = http.delete(
        f"{COLLECTION}/{cid}/messages/{ids[0]}/truncate", headers=server.headers()
    )
    assert response.status_code == 200, response.text
    assert (response.json()["deletedCount"], response.json()["remainingCount"]) == (3, 0)
    assert get_conversation(http, server.headers(), cid)["messages"] == []


def test_truncate_of_the_last_message_deletes_only_it(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    cid = create(http, server.headers(), user_id)["conversationId"]
    ids = [add(http, server.headers(), cid, message=f"t{i}")["messageId"] for i in range(3)]
    response = http.delete(
        f"{COLLECTION}/{cid}/messages/{ids[-1]}/truncate", headers=server.headers()
    )
    assert response.status_code == 200, response.text
    assert (response.json()["deletedCount"], response.json()["remainingCount"]) == (1, 2)


def test_truncate_of_unknown_message_is_404(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    cid = create(http, server.headers(), user_id)["conversationId"]
    other = create(http, server.headers(), user_id)["conversationId"]
    ids = [add(http, server.headers(), cid, message=f"t{i}")["messageId"] for i in range(2)]
    foreign = add(http, server.headers(), other, message="elsewhere")["messageId"]
    for message_id in (UNKNOWN_UUID, "not-a-message", foreign):
        response = http.delete(
            f"{COLLECTION}/{cid}/messages/{message_id}/truncate", headers=server.headers()
        )
        assert_problem(response, 404)
    # nothing was deleted, here or in the other conversation
    assert [m["id"] for m in get_conversation(http, server.headers(), cid)["messages"]] == ids
    assert len(get_conversation(http, server.headers(), other)["messages"]) == 1


# --- read positions -------------------------------------------------------------------------


def test_unread_counts_follow_each_readers_position(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    """unreadCount is every message after the feed user's read position, their own included."""
    reader = f"reader_{uuid.uuid4().hex[:8]}"
    as_owner = server.bearer(mint_jwt(user_id))
    as_reader = server.bearer(mint_jwt(reader))
    title = unique_title()
    cid = create(http, as_owner, user_id, title=title)["conversationId"]
    shared = http.post(
        f"{COLLECTION}/{cid}/share",
        json={"userId": reader, "role": "Collaborator"},
        headers=as_owner,
    )
    assert shared.status_code == 200, shared.text

    def unread(headers: dict[str, str]) -> int:
        return feed_item(http, headers, cid, title)["unreadCount"]

    assert (unread(as_owner), unread(as_reader)) == (0, 0)
    ids = [add(http, as_owner, cid, message=f"u{i}")["messageId"] for i in range(3)]
    assert (unread(as_owner), unread(as_reader)) == (3, 3)

    response = http.patch(f"{COLLECTION}/{cid}/mark-as-read", headers=as_reader)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["conversationId"], body["userId"], body["lastReadMessageId"]) == (
        cid,
        reader,
        ids[-1],
    )
    assert body["readAt"].endswith("Z")
    assert (unread(as_owner), unread(as_reader)) == (3, 0)

    add(http, as_owner, cid, message="new from the owner")
    assert (unread(as_owner), unread(as_reader)) == (4, 1)

    # The reader's own message counts too: it is after their read position.
    add(http, as_reader, cid, message="reply from the reader")
    assert (unread(as_owner), unread(as_reader)) == (5, 2)

    assert http.patch(f"{COLLECTION}/{cid}/mark-as-read", headers=as_owner).status_code == 200
    assert (unread(as_owner), unread(as_reader)) == (0, 2)
    add(http, as_owner, cid, message="the owner writes again")
    assert (unread(as_owner), unread(as_reader)) == (1, 3)


def test_mark_as_read_with_an_api_key_names_the_reader(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    title = unique_title()
    cid = create(http, server.headers(), user_id, title=title)["conversationId"]
    add(http, server.headers(), cid, message="one")
    add(http, server.headers(), cid, message="two")
    assert feed_item(http, server.headers(), cid, title, userId=user_id)["unreadCount"] == 2

    response = http.patch(
        f"{COLLECTION}/{cid}/mark-as-read", params={"userId": user_id}, headers=server.headers()
    )
    assert response.status_code == 200, response.text
    assert response.json()["userId"] == user_id
    assert feed_item(http, server.headers(), cid, title, userId=user_id)["unreadCount"] == 0
    add(http, server.headers(), cid, message="three")
    assert feed_item(http, server.headers(), cid, title, userId=user_id)["unreadCount"] == 1


def test_mark_as_read_of_an_empty_conversation(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    title = unique_title()
    as_owner = server.bearer(mint_jwt(user_id))
    cid = create(http, as_owner, user_id, title=title)["conversationId"]
    response = http.patch(f"{COLLECTION}/{cid}/mark-as-read", headers=as_owner)
    assert response.status_code == 200, response.text
    assert response.json()["lastReadMessageId"] is None
    add(http, as_owner, cid, message="first")
    assert feed_item(http, as_owner, cid, title)["unreadCount"] == 1


def test_read_position_survives_truncation_of_read_messages(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    """Truncating the message a user had read up to leaves nothing unread for them."""
    title = unique_title()
    as_owner = server.bearer(mint_jwt(user_id))
    cid = create(http, as_owner, user_id, title=title)["conversationId"]
    ids = [add(http, as_owner, cid, message=f"r{i}")["messageId"] for i in range(4)]
    assert http.patch(f"{COLLECTION}/{cid}/mark-as-read", headers=as_owner).status_code == 200
    response = http.delete(f"{COLLECTION}/{cid}/messages/{ids[2]}/truncate", headers=as_owner)
    assert response.status_code == 200, response.text
    assert feed_item(http, as_owner, cid, title)["unreadCount"] == 0
    add(http, as_owner, cid, message="new")
    assert feed_item(http, as_owner, cid, title)["unreadCount"] == 1
