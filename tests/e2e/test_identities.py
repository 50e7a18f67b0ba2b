"""External identities against the real server: a chat system's channel and thread mapped to
one conversation.

Add, list, remove, look up by the triple; a triple maps to at most one conversation per tenant
(409 names the mapped one, to a caller who may see it), while another tenant may map the very
same triple; who may do what; input validation; and deleting the conversation takes its
identities with it.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from .support import LiveServer, assert_problem, mint_jwt

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
LOOKUP = f"{COLLECTION}/external-identities/lookup"
UNKNOWN_UUID = "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"
IDENTITY_FIELDS = {
    "id",
    "conversationId",
    "externalSystem",
    "externalChannelId",
    "externalThreadId",
    "createdAt",
}


@pytest.fixture(scope="module")
def other_tenant() -> str:
    return f"identities-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def other_tenant_key(live_server: LiveServer, other_tenant: str) -> str:
    return live_server.create_api_key(other_tenant, name="identities e2e")


def new_user(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:10]}"


def bearer(sub: str, tenant: str = "default") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_jwt(sub, tenant)}"}


def triple(system: str = "Slack") -> dict[str, str]:
    """A channel and thread no other test uses."""
    tag = uuid.uuid4().hex
    return {
        "externalSystem": system,
        "externalChannelId": f"C{tag[:10]}",
        "externalThreadId": f"{tag[10:20]}.{tag[20:26]}",
    }


def lookup_params(identity: dict[str, str]) -> dict[str, str]:
    return {
        key: identity[key] for key in ("externalSystem", "externalChannelId", "externalThreadId")
    }


def create(http: httpx.Client, headers: dict[str, str], user_id: str) -> str:
    response = http.post(COLLECTION, json={"userId": user_id}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()["conversationId"]


def add(http: httpx.Client, headers: dict[str, str], cid: str, body: dict) -> httpx.Response:
    return http.post(f"{COLLECTION}/{cid}/external-identities", json=body, headers=headers)


def add_ok(http: httpx.Client, headers: dict[str, str], cid: str, body: dict) -> dict:
    response = add(http, headers, cid, body)
    assert response.status_code == 201, response.text
    return response.json()


def listed(http: httpx.Client, headers: dict[str, str], cid: str) -> list[dict]:
    response = http.get(f"{COLLECTION}/{cid}/external-identities", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def share(http: httpx.Client, headers: dict[str, str], cid: str, user: str, role: str) -> None:
    response = http.post(
        f"{COLLECTION}/{cid}/share", json={"userId": user, "role": role}, headers=headers
    )
    assert response.status_code == 200, response.text


# --- add, list, look up, remove ---------------------------------------------------------


def test_add_returns_the_identity_and_it_is_listed_and_found(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    body = triple()
    created = add_ok(http, headers, cid, body)
    assert set(created) == IDENTITY_FIELDS
    assert created["conversationId"] == cid
    for key, value in body.items():
        assert created[key] == value
    assert uuid.UUID(created["id"])
    assert created["createdAt"]

    assert listed(http, headers, cid) == [created]

    found = http.get(LOOKUP, params=lookup_params(body), headers=headers)
    assert found.status_code == 200, found.text
    conversation = found.json()
    assert conversation["conversationId"] == cid
    assert conversation["userId"] == user_id
    assert conversation["messages"] == []
    assert conversation["websocketUrl"]


def test_lookup_returns_the_conversation_with_its_messages(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    for text in ("first", "second"):
        response = http.post(
            f"{COLLECTION}/{cid}/messages", json={"message": text}, headers=headers
        )
        assert response.status_code in (200, 201), response.text
    body = triple("Teams")
    add_ok(http, headers, cid, body)
    found = http.get(LOOKUP, params=lookup_params(body), headers=headers)
    assert found.status_code == 200, found.text
    assert [m["message"] for m in found.json()["messages"]] == ["first", "second"]
    direct = http.get(f"{COLLECTION}/{cid}", headers=headers).json()
    assert found.json()["messages"] == direct["messages"]


def test_a_conversation_may_have_several_identities(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    base = triple()
    bodies = [
        base,
        {**base, "externalThreadId": base["externalThreadId"] + "x"},
        {**base, "externalChannelId": base["externalChannelId"] + "x"},
        {**base, "externalSystem": "Discord"},
    ]
    created = [add_ok(http, headers, cid, body) for body in bodies]
    assert len({c["id"] for c in created}) == len(bodies)
    assert sorted(i["id"] for i in listed(http, headers, cid)) == sorted(c["id"] for c in created)
    for body in bodies:
        found = http.get(LOOKUP, params=lookup_params(body), headers=headers)
        assert found.status_code == 200, found.text
        assert found.json()["conversationId"] == cid


def test_remove_deletes_the_mapping_and_frees_the_triple(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    keep = add_ok(http, headers, cid, triple())
    body = triple()
    gone = add_ok(http, headers, cid, body)

    response = http.delete(f"{COLLECTION}/{cid}/external-identities/{gone['id']}", headers=headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert listed(http, headers, cid) == [keep]
    assert_problem(http.get(LOOKUP, params=lookup_params(body), headers=headers), 404)

    again = http.delete(f"{COLLECTION}/{cid}/external-identities/{gone['id']}", headers=headers)
    assert_problem(again, 404)

    other = create(http, headers, user_id)
    remapped = add_ok(http, headers, other, body)
    assert remapped["conversationId"] == other
    assert remapped["id"] != gone["id"]
    found = http.get(LOOKUP, params=lookup_params(body), headers=headers)
    assert found.status_code == 200
    assert found.json()["conversationId"] == other


@pytest.mark.parametrize("identity_id", [UNKNOWN_UUID, "not-a-uuid", "1"])
def test_removing_an_unknown_identity_is_404(
    server: LiveServer, http: httpx.Client, user_id: str, identity_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    add_ok(http, headers, cid, triple())
    response = http.delete(f"{COLLECTION}/{cid}/external-identities/{identity_id}", headers=headers)
    assert_problem(response, 404)
    assert len(listed(http, headers, cid)) == 1


def test_an_identity_is_removed_only_through_its_own_conversation(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    first = create(http, headers, user_id)
    second = create(http, headers, user_id)
    body = triple()
    identity = add_ok(http, headers, first, body)
    response = http.delete(
        f"{COLLECTION}/{second}/external-identities/{identity['id']}", headers=headers
    )
    assert_problem(response, 404)
    assert listed(http, headers, first) == [identity]


def test_lookup_of_an_unmapped_triple_is_404(server: LiveServer, http: httpx.Client) -> None:
    response = http.get(LOOKUP, params=lookup_params(triple()), headers=server.headers())
    assert_problem(response, 404)


def test_identities_of_an_unknown_conversation_are_404(
    server: LiveServer, http: httpx.Client
) -> None:
    headers = server.headers()
    for cid in (UNKNOWN_UUID, "nope"):
        assert_problem(http.get(f"{COLLECTION}/{cid}/external-identities", headers=headers), 404)
        assert_problem(add(http, headers, cid, triple()), 404)
        assert_problem(
            http.delete(f"{COLLECTION}/{cid}/external-identities/{UNKNOWN_UUID}", headers=headers),
            404,
        )


def test_identities_need_credentials(server: LiveServer, http: httpx.Client, user_id: str) -> None:
    cid = create(http, server.headers(), user_id)
    assert_problem(http.get(f"{COLLECTION}/{cid}/external-identities"), 401)
    assert_problem(add(http, {}, cid, triple()), 401)
    assert_problem(http.get(LOOKUP, params=lookup_params(triple())), 401)


# --- one conversation per triple, per tenant ----------------------------------------------


def test_the_same_triple_twice_is_409_naming_the_mapped_conversation(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    first = create(http, headers, user_id)
    second = create(http, headers, user_id)
    body = triple()
    identity = add_ok(http, headers, first, body)

    for cid in (first, second):
        problem = assert_problem(add(http, headers, cid, body), 409)
        assert problem["conversationId"] == first
        assert problem["identityId"] == identity["id"]

    assert listed(http, headers, first) == [identity]
    assert listed(http, headers, second) == []


def test_a_duplicate_by_another_user_of_the_tenant_is_409_too(
    server: LiveServer, http: httpx.Client
) -> None:
    alice, bob = new_user("alice"), new_user("bob")
    first = create(http, bearer(alice), alice)
    second = create(http, bearer(bob), bob)
    body = triple()
    identity = add_ok(http, bearer(alice), first, body)
    problem = assert_problem(add(http, bearer(bob), second, body), 409)
    # The thread is taken, but by a conversation bob cannot see: its ids stay out of
    # the answer, as the look-up answers bob 404 for it.
    assert "conversationId" not in problem and "identityId" not in problem
    assert first not in problem["detail"] and identity["id"] not in problem["detail"]
    response = http.get(
        f"{COLLECTION}/external-identities/lookup", params=body, headers=bearer(bob)
    )
    assert_problem(response, 404)
    # Once bob may see it, the conflict names it.
    response = http.post(
        f"{COLLECTION}/{first}/share",
        json={"userId": bob, "role": "Viewer"},
        headers=bearer(alice),
    )
    assert response.status_code == 200, response.text
    problem = assert_problem(add(http, bearer(bob), second, body), 409)
    assert (problem["conversationId"], problem["identityId"]) == (first, identity["id"])


def test_another_tenant_may_map_the_same_triple(
    server: LiveServer, http: httpx.Client, user_id: str, other_tenant_key: str
) -> None:
    ours = server.headers()
    theirs = server.headers(other_tenant_key)
    our_cid = create(http, ours, user_id)
    their_cid = create(http, theirs, user_id)
    body = triple()
    our_identity = add_ok(http, ours, our_cid, body)
    their_identity = add_ok(http, theirs, their_cid, body)
    assert their_identity["id"] != our_identity["id"]

    mine = http.get(LOOKUP, params=lookup_params(body), headers=ours)
    assert mine.status_code == 200 and mine.json()["conversationId"] == our_cid
    yours = http.get(LOOKUP, params=lookup_params(body), headers=theirs)
    assert yours.status_code == 200 and yours.json()["conversationId"] == their_cid

    # Removing one tenant's mapping leaves the other's.
    response = http.delete(
        f"{COLLECTION}/{their_cid}/external-identities/{their_identity['id']}", headers=theirs
    )
    assert response.status_code == 204
    assert_problem(http.get(LOOKUP, params=lookup_params(body), headers=theirs), 404)
    mine = http.get(LOOKUP, params=lookup_params(body), headers=ours)
    assert mine.status_code == 200 and mine.json()["conversationId"] == our_cid


def test_deleting_the_conversation_deletes_its_identities(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    body = triple()
    add_ok(http, headers, cid, body)
    response = http.delete(f"{COLLECTION}/{cid}", headers=headers)
    assert response.status_code in (200, 204), response.text

    assert_problem(http.get(LOOKUP, params=lookup_params(body), headers=headers), 404)
    assert_problem(http.get(f"{COLLECTION}/{cid}/external-identities", headers=headers), 404)
    successor = create(http, headers, user_id)
    remapped = add_ok(http, headers, successor, body)
    assert remapped["conversationId"] == successor
    found = http.get(LOOKUP, params=lookup_params(body), headers=headers)
    assert found.status_code == 200 and found.json()["conversationId"] == successor


# --- who may do what ------------------------------------------------------------------------


def test_roles_for_identities(
    server: LiveServer, http: httpx.Client, other_tenant: str, other_tenant_key: str
) -> None:
    owner, collaborator, viewer, stranger = (
        new_user(n) for n in ("owner", "collab", "viewer", "stranger")
    )
    cid = create(http, bearer(owner), owner)
    share(http, bearer(owner), cid, collaborator, "Collaborator")
    share(http, bearer(owner), cid, viewer, "Viewer")
    base = f"{COLLECTION}/{cid}/external-identities"

    # The Owner adds and removes.
    owned_body = triple()
    owned = add_ok(http, bearer(owner), cid, owned_body)

    # An API key of the tenant acts with every right.
    key_body = triple()
    by_key = add_ok(http, server.headers(), cid, key_body)

    # Collaborators and Viewers see the mappings, but may not change them.
    for user in (collaborator, viewer):
        assert sorted(i["id"] for i in listed(http, bearer(user), cid)) == sorted(
            [owned["id"], by_key["id"]]
        )
        found = http.get(LOOKUP, params=lookup_params(owned_body), headers=bearer(user))
        assert found.status_code == 200, found.text
        assert found.json()["conversationId"] == cid
    assert_problem(add(http, bearer(viewer), cid, triple()), 403)
    assert_problem(http.delete(f"{base}/{owned['id']}", headers=bearer(viewer)), 403)
    assert_problem(add(http, bearer(collaborator), cid, triple()), 403)
    assert_problem(http.delete(f"{base}/{owned['id']}", headers=bearer(collaborator)), 403)

    # Strangers, and anyone of another tenant (even with the owner's very `sub`): not there.
    outsiders = [
        bearer(stranger),
        bearer(owner, other_tenant),
        server.headers(other_tenant_key),
    ]
    for headers in outsiders:
        assert_problem(http.get(base, headers=headers), 404)
        assert_problem(add(http, headers, cid, triple()), 404)
        assert_problem(http.delete(f"{base}/{owned['id']}", headers=headers), 404)
        assert_problem(http.get(LOOKUP, params=lookup_params(owned_body), headers=headers), 404)

    # Nothing the others tried changed anything.
    assert sorted(i["id"] for i in listed(http, bearer(owner), cid)) == sorted(
        [owned["id"], by_key["id"]]
    )

    # The Owner removes the key's mapping, the key removes the Owner's.
    assert http.delete(f"{base}/{by_key['id']}", headers=bearer(owner)).status_code == 204
    assert http.delete(f"{base}/{owned['id']}", headers=server.headers()).status_code == 204
    assert listed(http, bearer(owner), cid) == []


def test_a_removed_participant_no_longer_finds_the_conversation(
    server: LiveServer, http: httpx.Client
) -> None:
    owner, viewer = new_user("owner"), new_user("viewer")
    cid = create(http, bearer(owner), owner)
    share(http, bearer(owner), cid, viewer, "Viewer")
    body = triple()
    add_ok(http, bearer(owner), cid, body)
    assert http.get(LOOKUP, params=lookup_params(body), headers=bearer(viewer)).status_code == 200
    response = http.delete(f"{COLLECTION}/{cid}/participants/{viewer}", headers=bearer(owner))
    assert response.status_code == 200, response.text
    assert_problem(http.get(LOOKUP, params=lookup_params(body), headers=bearer(viewer)), 404)
    assert_problem(http.get(f"{COLLECTION}/{cid}/external-identities", headers=bearer(viewer)), 404)


# --- validation -------------------------------------------------------------------------


VALID = {"externalSystem": "Slack", "externalChannelId": "C1", "externalThreadId": "T1"}


@pytest.mark.parametrize(
    "change",
    [
        {"externalSystem": "S"},
        {"externalSystem": "S" * 51},
        {"externalSystem": "1Slack"},
        {"externalSystem": "Sla-ck"},
        {"externalSystem": "Sla ck"},
        {"externalSystem": "Slack_"},
        {"externalSystem": "Slàck"},
        {"externalSystem": "Slack\n"},  # Python's `$` matches before a final newline
        {"externalSystem": ""},
        {"externalSystem": 7},
        {"externalSystem": None},
        {"externalChannelId": ""},
        {"externalChannelId": "c" * 256},
        {"externalChannelId": 12},
        {"externalThreadId": ""},
        {"externalThreadId": "t" * 256},
        {"externalThreadId": ["t"]},
    ],
    ids=lambda change: f"{next(iter(change))}={next(iter(change.values()))!r}"[:40],
)
def test_invalid_identities_are_422(
    server: LiveServer, http: httpx.Client, user_id: str, change: dict
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    assert_problem(add(http, headers, cid, {**VALID, **change}), 422)
    assert listed(http, headers, cid) == []


def test_the_system_pattern_is_named_as_documented(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    """The 422 names the rule a client must follow, not the server's way of checking
    it (its `(?!\\n)` guard), and the field, for a body and a look-up alike."""
    headers = server.headers()
    cid = create(http, headers, user_id)
    bad = {**VALID, "externalSystem": "1Slack"}
    for response in (
        add(http, headers, cid, bad),
        http.get(LOOKUP, params=bad, headers=headers),
    ):
        problem = assert_problem(response, 422)
        assert "^[A-Za-z][A-Za-z0-9]*$" in problem["message"], problem
        assert "(?!" not in response.text
        assert problem["errors"][0]["field"] == "externalSystem"


@pytest.mark.parametrize("missing", ["externalSystem", "externalChannelId", "externalThreadId"])
def test_a_missing_member_is_422(
    server: LiveServer, http: httpx.Client, user_id: str, missing: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    body = {k: v for k, v in triple().items() if k != missing}
    assert_problem(add(http, headers, cid, body), 422)
    assert listed(http, headers, cid) == []


def test_a_body_that_is_not_json_is_rejected(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    response = http.post(
        f"{COLLECTION}/{cid}/external-identities",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.text
    assert listed(http, headers, cid) == []


def test_the_edges_of_the_limits_are_accepted(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    tag = uuid.uuid4().hex
    bodies = [
        {"externalSystem": "Ab", "externalChannelId": tag, "externalThreadId": "x"},
        {
            "externalSystem": "Z" + "9" * 49,
            "externalChannelId": tag,
            "externalThreadId": "y",
        },
        {
            "externalSystem": "Slack",
            "externalChannelId": (tag * 8)[:255],
            "externalThreadId": ("t" + tag * 8)[:255],
        },
        {
            "externalSystem": "Slack",
            "externalChannelId": f"#général/{tag}?&=",
            "externalThreadId": "🧵 thread with spaces",
        },
    ]
    for body in bodies:
        created = add_ok(http, headers, cid, body)
        for key, value in body.items():
            assert created[key] == value
        found = http.get(LOOKUP, params=lookup_params(body), headers=headers)
        assert found.status_code == 200, (body, found.text)
        assert found.json()["conversationId"] == cid


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"externalSystem": "Slack", "externalChannelId": "C1"},
        {"externalSystem": "Slack", "externalThreadId": "T1"},
        {"externalChannelId": "C1", "externalThreadId": "T1"},
        {"externalSystem": "S", "externalChannelId": "C1", "externalThreadId": "T1"},
        {"externalSystem": "1abc", "externalChannelId": "C1", "externalThreadId": "T1"},
        {"externalSystem": "Slack\n", "externalChannelId": "C1", "externalThreadId": "T1"},
        {"externalSystem": "Slack", "externalChannelId": "", "externalThreadId": "T1"},
        {"externalSystem": "Slack", "externalChannelId": "C1", "externalThreadId": "t" * 256},
    ],
    ids=lambda p: ",".join(f"{k}={v[:6]}" for k, v in p.items()) or "none",
)
def test_invalid_lookups_are_422(server: LiveServer, http: httpx.Client, params: dict) -> None:
    assert_problem(http.get(LOOKUP, params=params, headers=server.headers()), 422)
