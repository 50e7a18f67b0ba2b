"""Optional request fields sent as `null` mean what their absence means (API.md, Transport:
"Optional request fields may be absent or `null`"), including those with a default."""

from __future__ import annotations

import base64

import httpx
import pytest

from .support import LiveServer, assert_problem

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"


def created(http: httpx.Client, server: LiveServer, user_id: str) -> str:
    response = http.post(COLLECTION, json={"userId": user_id}, headers=server.headers())
    assert response.status_code == 201, response.text
    return response.json()["conversationId"]


@pytest.mark.parametrize("body", [{}, {"role": None}], ids=["absent", "null"])
def test_a_message_without_a_role_is_the_users(
    server: LiveServer, http: httpx.Client, user_id: str, body: dict
) -> None:
    cid = created(http, server, user_id)
    response = http.post(
        f"{COLLECTION}/{cid}/messages", json={"message": "hi", **body}, headers=server.headers()
    )
    assert response.status_code == 201, response.text
    stored = http.get(f"{COLLECTION}/{cid}", headers=server.headers()).json()["messages"]
    assert [(m["message"], m["role"]) for m in stored] == [("hi", "user")]


@pytest.mark.parametrize("body", [{}, {"role": None}], ids=["absent", "null"])
def test_a_share_without_a_role_makes_a_viewer(
    server: LiveServer, http: httpx.Client, user_id: str, body: dict
) -> None:
    cid = created(http, server, user_id)
    response = http.post(
        f"{COLLECTION}/{cid}/share",
        json={"userId": f"{user_id}-guest", **body},
        headers=server.headers(),
    )
    assert response.status_code == 200, response.text
    listed = http.get(f"{COLLECTION}/{cid}/participants", headers=server.headers()).json()
    roles = {p["userId"]: p["role"] for p in listed}
    assert roles[f"{user_id}-guest"] == "Viewer"


@pytest.mark.parametrize("body", [{}, {"isTyping": None}], ids=["absent", "null"])
def test_typing_without_is_typing_is_typing(
    server: LiveServer, http: httpx.Client, user_id: str, body: dict
) -> None:
    cid = created(http, server, user_id)
    response = http.post(f"{COLLECTION}/{cid}/typing", json=body, headers=server.headers())
    assert response.status_code == 200, response.text
    assert response.json()["isTyping"] is True


@pytest.mark.parametrize("body", [{}, {"source": None}], ids=["absent", "null"])
def test_a_base64_upload_without_a_source_is_the_agents(
    server: LiveServer, http: httpx.Client, user_id: str, body: dict
) -> None:
    cid = created(http, server, user_id)
    payload = {"base64Content": base64.b64encode(b"bytes").decode(), "fileName": "a.txt", **body}
    response = http.post(
        f"{COLLECTION}/{cid}/agent-attachments/base64", json=payload, headers=server.headers()
    )
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "agent"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("messages", {"message": "hi", "role": "robot"}),
        ("share", {"userId": "someone", "role": "owner"}),
        ("typing", {"isTyping": "yes"}),
    ],
)
def test_a_wrong_value_is_still_422(
    server: LiveServer, http: httpx.Client, user_id: str, path: str, body: dict
) -> None:
    cid = created(http, server, user_id)
    response = http.post(f"{COLLECTION}/{cid}/{path}", json=body, headers=server.headers())
    assert_problem(response, 422)


def test_the_socket_url_over_plain_http_says_to_upgrade(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    """What a proxy that drops `Upgrade` produces: 426 naming the fix, not "no route"; and
    the same for a conversation that does not exist, so it tells nothing about ids."""
    cid = created(http, server, user_id)
    socket_path = f"{COLLECTION}/{cid}/ws"
    for path in (socket_path, f"{COLLECTION}/0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e/ws"):
        response = http.get(path, params={"ticket": "anything"})
        assert_problem(response, 426)
        assert response.headers["upgrade"] == "websocket"
        assert "WebSocket" in response.json()["detail"]
