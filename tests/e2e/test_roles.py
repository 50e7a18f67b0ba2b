"""Who may do what, as one table: every operation by every kind of caller, against the real server.

Callers: the Owner (creator, bearer), a Collaborator and a Viewer it shared with (bearer), a
stranger of the same tenant (bearer), a user of another tenant (bearer, tenant claim "other",
with the very same `sub` as the Owner, so only the tenant tells them apart), an API key of the
tenant, and an API key of another tenant.

Expected: "ok" (2xx), 403 (visible but not allowed) or 404 (not visible at all).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .support import LiveServer, mint_jwt

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
OK = "ok"
TIMEOUT = 5.0

CALLERS = [
    "owner",
    "collaborator",
    "viewer",
    "stranger",
    "other_tenant_user",
    "api_key",
    "other_tenant_key",
]


@dataclass
class Case:
    """One fresh conversation, shared with a second Owner, a Collaborator, a Viewer and a target."""

    http: httpx.AsyncClient
    cid: str
    title: str
    message_id: str
    users: dict[str, str]
    """caller name -> user id (bearer callers only); plus "owner2" and "target"."""
    headers: dict[str, dict[str, str]]
    """caller name -> request headers; plus "owner2"."""


@pytest.fixture(scope="module")
def other_tenant_key(live_server: LiveServer) -> str:
    return live_server.create_api_key("other", name="roles e2e")


@pytest.fixture
async def ahttp(server: LiveServer):
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        yield client


def new_user(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:10]}"


async def share(http: httpx.AsyncClient, headers, cid: str, user: str, role: str) -> None:
    response = await http.post(
        f"{COLLECTION}/{cid}/share", json={"userId": user, "role": role}, headers=headers
    )
    assert response.status_code == 200, response.text


@pytest.fixture
async def case(server: LiveServer, ahttp: httpx.AsyncClient, other_tenant_key: str) -> Case:
    users = {
        name: new_user(name)
        for name in ("owner", "owner2", "collaborator", "viewer", "stranger", "target")
    }
    users["other_tenant_user"] = users["owner"]  # same sub, other tenant
    headers = {
        name: server.bearer(mint_jwt(users[name]))
        for name in ("owner", "owner2", "collaborator", "viewer", "stranger")
    }
    headers["other_tenant_user"] = server.bearer(mint_jwt(users["owner"], tenant="other"))
    headers["api_key"] = server.headers()
    headers["other_tenant_key"] = server.headers(other_tenant_key)

    title = f"roles-{uuid.uuid4().hex}"
    created = await ahttp.post(
        COLLECTION, json={"userId": users["owner"], "title": title}, headers=headers["owner"]
    )
    assert created.status_code in (200, 201), created.text
    cid = created.json()["conversationId"]
    for name, role in (
        ("owner2", "Owner"),
        ("collaborator", "Collaborator"),
        ("viewer", "Viewer"),
        ("target", "Viewer"),
    ):
        await share(ahttp, headers["owner"], cid, users[name], role)
    added = await ahttp.post(
        f"{COLLECTION}/{cid}/messages", json={"message": "first"}, headers=headers["owner"]
    )
    assert added.status_code in (200, 201), added.text
    return Case(ahttp, cid, title, added.json()["messageId"], users, headers)


# --- the operations ---------------------------------------------------------------------------

Operation = Callable[[Case, str], Awaitable[int]]


async def op_get(c: Case, who: str) -> int:
    return (await c.http.get(f"{COLLECTION}/{c.cid}", headers=c.headers[who])).status_code


async def op_put(c: Case, who: str) -> int:
    response = await c.http.put(
        f"{COLLECTION}/{c.cid}", json={"title": "renamed"}, headers=c.headers[who]
    )
    return response.status_code


async def op_delete(c: Case, who: str) -> int:
    return (await c.http.delete(f"{COLLECTION}/{c.cid}", headers=c.headers[who])).status_code


async def op_feed(c: Case, who: str) -> int:
    """200 when the conversation is listed in the caller's feed, 404 when it is not."""
    response = await c.http.get(
        f"{COLLECTION}/feed", params={"filter": c.title, "PageSize": 100}, headers=c.headers[who]
    )
    assert response.status_code == 200, response.text
    listed = [item for item in response.json()["items"] if item["conversationId"] == c.cid]
    assert len(listed) <= 1
    return 200 if listed else 404


async def op_add_message(c: Case, who: str) -> int:
    response = await c.http.post(
        f"{COLLECTION}/{c.cid}/messages", json={"message": "hello"}, headers=c.headers[who]
    )
    return response.status_code


async def op_list_messages(c: Case, who: str) -> int:
    return (await c.http.get(f"{COLLECTION}/{c.cid}/messages", headers=c.headers[who])).status_code


async def op_truncate(c: Case, who: str) -> int:
    response = await c.http.delete(
        f"{COLLECTION}/{c.cid}/messages/{c.message_id}/truncate", headers=c.headers[who]
    )
    return response.status_code


async def op_mark_as_read(c: Case, who: str) -> int:
    return (
        await c.http.patch(f"{COLLECTION}/{c.cid}/mark-as-read", headers=c.headers[who])
    ).status_code


async def op_share(c: Case, who: str) -> int:
    response = await c.http.post(
        f"{COLLECTION}/{c.cid}/share",
        json={"userId": new_user("newcomer"), "role": "Viewer"},
        headers=c.headers[who],
    )
    return response.status_code


async def op_participants(c: Case, who: str) -> int:
    return (
        await c.http.get(f"{COLLECTION}/{c.cid}/participants", headers=c.headers[who])
    ).status_code


async def op_change_role(c: Case, who: str) -> int:
    response = await c.http.put(
        f"{COLLECTION}/{c.cid}/participants/{c.users['target']}/role",
        json={"role": "Collaborator"},
        headers=c.headers[who],
    )
    return response.status_code


async def op_remove_other(c: Case, who: str) -> int:
    response = await c.http.delete(
        f"{COLLECTION}/{c.cid}/participants/{c.users['target']}", headers=c.headers[who]
    )
    return response.status_code


async def op_leave_self(c: Case, who: str) -> int:
    # An API key is no user: it "leaves" for the target it acts for.
    user = c.users.get(who, c.users["target"])
    response = await c.http.delete(
        f"{COLLECTION}/{c.cid}/participants/{user}", headers=c.headers[who]
    )
    return response.status_code


async def op_typing(c: Case, who: str) -> int:
    response = await c.http.post(
        f"{COLLECTION}/{c.cid}/typing", json={"isTyping": True}, headers=c.headers[who]
    )
    return response.status_code


async def op_presence(c: Case, who: str) -> int:
    response = await c.http.post(
        f"{COLLECTION}/{c.cid}/presence", json={"action": "joined"}, headers=c.headers[who]
    )
    return response.status_code


async def op_websocket_url(c: Case, who: str) -> int:
    response = await c.http.get(f"{COLLECTION}/{c.cid}/websocket-url", headers=c.headers[who])
    if response.status_code == 200:
        body = response.json()
        assert body["websocketUrl"].startswith("ws://")
        assert f"/v1/Conversations/{c.cid}/ws?" in body["websocketUrl"]
        assert body["expiresAt"].endswith("Z")
    return response.status_code


async def op_open_websocket(c: Case, who: str) -> int:
    """The status of getting a URL when that fails; else 200 if the socket opens."""
    response = await c.http.get(f"{COLLECTION}/{c.cid}/websocket-url", headers=c.headers[who])
    if response.status_code != 200:
        return response.status_code
    try:
        async with connect(
            response.json()["websocketUrl"], open_timeout=TIMEOUT, close_timeout=TIMEOUT
        ):
            return 200
    except InvalidStatus as exc:
        return exc.response.status_code


OPERATIONS: dict[str, Operation] = {
    "get": op_get,
    "put": op_put,
    "delete": op_delete,
    "feed": op_feed,
    "add_message": op_add_message,
    "list_messages": op_list_messages,
    "truncate": op_truncate,
    "mark_as_read": op_mark_as_read,
    "share": op_share,
    "participants": op_participants,
    "change_role": op_change_role,
    "remove_other": op_remove_other,
    "leave_self": op_leave_self,
    "typing": op_typing,
    "presence": op_presence,
    "websocket_url": op_websocket_url,
    "open_websocket": op_open_websocket,
}

READS = {"get", "feed", "list_messages", "mark_as_read", "participants", "leave_self"}
READS |= {"websocket_url", "open_websocket"}
COLLABORATOR_WRITES = {"add_message", "typing", "presence"}
OWNER_ONLY = {"put", "delete", "truncate", "share", "change_role", "remove_other"}
assert READS | COLLABORATOR_WRITES | OWNER_ONLY == OPERATIONS.keys()


def expected(operation: str, caller: str) -> str | int:
    if caller in ("owner", "api_key"):
        return OK
    if caller == "collaborator":
        return OK if operation in READS | COLLABORATOR_WRITES else 403
    if caller == "viewer":
        return OK if operation in READS else 403
    return 404  # a stranger, or anyone of another tenant


TABLE = [(op, caller, expected(op, caller)) for op in OPERATIONS for caller in CALLERS]


async def owner_view(c: Case) -> tuple:
    """What the Owner sees of the conversation, to check a refused request changed nothing."""
    got = await c.http.get(f"{COLLECTION}/{c.cid}", headers=c.headers["owner2"])
    assert got.status_code == 200, got.text
    conversation = got.json()
    listed = await c.http.get(f"{COLLECTION}/{c.cid}/participants", headers=c.headers["owner2"])
    assert listed.status_code == 200, listed.text
    roles = sorted((p["userId"], p["role"]) for p in listed.json())
    return conversation["title"], [m["id"] for m in conversation["messages"]], roles


@pytest.mark.parametrize(
    ("operation", "caller", "want"), TABLE, ids=[f"{op}-{caller}" for op, caller, _ in TABLE]
)
async def test_role_table(case: Case, operation: str, caller: str, want: str | int) -> None:
    before = await owner_view(case) if want != OK else None
    status = await OPERATIONS[operation](case, caller)
    if want == OK:
        assert 200 <= status < 300, f"{operation} by {caller}: {status}, expected 2xx"
    else:
        assert status == want, f"{operation} by {caller}: {status}, expected {want}"
        assert await owner_view(case) == before, "a refused request changed the conversation"


# --- the last Owner -----------------------------------------------------------------------------


async def participants(http: httpx.AsyncClient, headers, cid: str) -> dict[str, str]:
    response = await http.get(f"{COLLECTION}/{cid}/participants", headers=headers)
    assert response.status_code == 200, response.text
    return {p["userId"]: p["role"] for p in response.json()}


async def test_the_last_owner_can_be_neither_removed_nor_demoted(
    server: LiveServer, ahttp: httpx.AsyncClient
) -> None:
    owner, other = new_user("owner"), new_user("collab")
    as_owner = server.bearer(mint_jwt(owner))
    created = await ahttp.post(COLLECTION, json={"userId": owner}, headers=as_owner)
    assert created.status_code in (200, 201), created.text
    cid = created.json()["conversationId"]
    await share(ahttp, as_owner, cid, other, "Collaborator")

    attempts = [
        ("DELETE", f"{COLLECTION}/{cid}/participants/{owner}", None, as_owner),
        ("DELETE", f"{COLLECTION}/{cid}/participants/{owner}", None, server.headers()),
        ("PUT", f"{COLLECTION}/{cid}/participants/{owner}/role", {"role": "Viewer"}, as_owner),
        (
            "PUT",
            f"{COLLECTION}/{cid}/participants/{owner}/role",
            {"role": "Collaborator"},
            server.headers(),
        ),
        ("POST", f"{COLLECTION}/{cid}/share", {"userId": owner, "role": "Viewer"}, as_owner),
    ]
    for method, url, body, headers in attempts:
        response = await ahttp.request(method, url, json=body, headers=headers)
        assert response.status_code == 409, (method, url, body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await participants(ahttp, as_owner, cid) == {owner: "Owner", other: "Collaborator"}

    # With a second Owner, the first may step down, and then leave.
    response = await ahttp.put(
        f"{COLLECTION}/{cid}/participants/{other}/role", json={"role": "Owner"}, headers=as_owner
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "Owner"
    response = await ahttp.put(
        f"{COLLECTION}/{cid}/participants/{owner}/role", json={"role": "Viewer"}, headers=as_owner
    )
    assert response.status_code == 200, response.text
    # Now the other one is the last Owner.
    as_other = server.bearer(mint_jwt(other))
    response = await ahttp.delete(f"{COLLECTION}/{cid}/participants/{other}", headers=as_other)
    assert response.status_code == 409, response.text
    response = await ahttp.delete(f"{COLLECTION}/{cid}/participants/{owner}", headers=as_owner)
    assert response.status_code == 200, response.text
    assert await participants(ahttp, as_other, cid) == {other: "Owner"}
    assert (await ahttp.get(f"{COLLECTION}/{cid}", headers=as_owner)).status_code == 404


async def test_change_role_of_a_non_participant_is_404(
    server: LiveServer, ahttp: httpx.AsyncClient
) -> None:
    owner = new_user("owner")
    as_owner = server.bearer(mint_jwt(owner))
    created = await ahttp.post(COLLECTION, json={"userId": owner}, headers=as_owner)
    cid = created.json()["conversationId"]
    nobody = new_user("nobody")
    response = await ahttp.put(
        f"{COLLECTION}/{cid}/participants/{nobody}/role", json={"role": "Viewer"}, headers=as_owner
    )
    assert response.status_code == 404, response.text
    response = await ahttp.delete(f"{COLLECTION}/{cid}/participants/{nobody}", headers=as_owner)
    assert response.status_code == 404, response.text
    assert await participants(ahttp, as_owner, cid) == {owner: "Owner"}


# --- sharing and the feed -----------------------------------------------------------------------


async def feed_ids(http: httpx.AsyncClient, headers, title: str) -> list[str]:
    response = await http.get(
        f"{COLLECTION}/feed", params={"filter": title, "PageSize": 100}, headers=headers
    )
    assert response.status_code == 200, response.text
    return [item["conversationId"] for item in response.json()["items"]]


@pytest.mark.parametrize("role", ["Owner", "Collaborator", "Viewer"])
async def test_shared_conversation_is_in_the_sharees_feed_until_unshared(
    server: LiveServer, ahttp: httpx.AsyncClient, role: str
) -> None:
    owner, sharee = new_user("owner"), new_user("sharee")
    as_owner, as_sharee = server.bearer(mint_jwt(owner)), server.bearer(mint_jwt(sharee))
    title = f"shared-{uuid.uuid4().hex}"
    created = await ahttp.post(COLLECTION, json={"userId": owner, "title": title}, headers=as_owner)
    assert created.status_code in (200, 201), created.text
    cid = created.json()["conversationId"]
    assert await feed_ids(ahttp, as_sharee, title) == []
    assert await feed_ids(ahttp, server.headers(), title) == [cid]

    response = await ahttp.post(
        f"{COLLECTION}/{cid}/share", json={"userId": sharee, "role": role}, headers=as_owner
    )
    assert response.status_code == 200, response.text
    shared = response.json()
    assert (shared["conversationId"], shared["userId"], shared["role"]) == (cid, sharee, role)
    assert shared["sharedByUserId"] == owner
    assert shared["sharedAt"].endswith("Z")

    assert await feed_ids(ahttp, as_sharee, title) == [cid]
    feed_for = await ahttp.get(
        f"{COLLECTION}/feed", params={"filter": title, "userId": sharee}, headers=server.headers()
    )
    assert [i["conversationId"] for i in feed_for.json()["items"]] == [cid]
    assert (await ahttp.get(f"{COLLECTION}/{cid}", headers=as_sharee)).status_code == 200
    assert await participants(ahttp, as_owner, cid) == {owner: "Owner", sharee: role}

    response = await ahttp.delete(f"{COLLECTION}/{cid}/participants/{sharee}", headers=as_owner)
    assert response.status_code == 200, response.text
    assert response.json()["userId"] == sharee
    assert await feed_ids(ahttp, as_sharee, title) == []
    assert (await ahttp.get(f"{COLLECTION}/{cid}", headers=as_sharee)).status_code == 404
    feed_for = await ahttp.get(
        f"{COLLECTION}/feed", params={"filter": title, "userId": sharee}, headers=server.headers()
    )
    assert feed_for.json()["items"] == []
    assert await feed_ids(ahttp, as_owner, title) == [cid]


# --- user ids with a '/' --------------------------------------------------------------------------


async def test_a_user_id_with_a_slash_is_one_path_segment(
    server: LiveServer, ahttp: httpx.AsyncClient
) -> None:
    """User ids are opaque ("team/zed" is one): sent encoded in a path (`team%2Fzed`, as
    clients send them), such a participant can be given a role and removed, and such a
    bearer user can leave."""
    owner, member, leaver = new_user("owner"), f"team/{new_user('zed')}", f"org/{new_user('al')}"
    created = await ahttp.post(COLLECTION, json={"userId": owner}, headers=server.headers())
    assert created.status_code == 201, created.text
    cid = created.json()["conversationId"]
    await share(ahttp, server.headers(), cid, member, "Viewer")
    await share(ahttp, server.headers(), cid, leaver, "Viewer")

    encoded = member.replace("/", "%2F")
    response = await ahttp.put(
        f"{COLLECTION}/{cid}/participants/{encoded}/role",
        json={"role": "Collaborator"},
        headers=server.headers(),
    )
    assert response.status_code == 200, response.text
    assert (response.json()["userId"], response.json()["role"]) == (member, "Collaborator")
    response = await ahttp.delete(
        f"{COLLECTION}/{cid}/participants/{encoded}", headers=server.headers()
    )
    assert response.status_code == 200, response.text
    assert response.json()["userId"] == member

    as_leaver = server.bearer(mint_jwt(leaver))
    response = await ahttp.delete(
        f"{COLLECTION}/{cid}/participants/{leaver.replace('/', '%2f')}", headers=as_leaver
    )
    assert response.status_code == 200, response.text
    assert await participants(ahttp, server.headers(), cid) == {owner: "Owner"}
