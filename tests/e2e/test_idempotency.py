"""`Idempotency-Key`: a retry gets the first response, never a second resource.

Same key and body: the same response, marked `Idempotent-Replayed: true`; another
body: 422; creates, message appends, both upload forms, PUTs and DELETEs; a connection
cut after the server committed and before the client read the answer; concurrent
retries; keys per tenant. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect

import backends
import sqlite_files
from airia_server.domain.auth import BOOTSTRAP_KEY_ID

from .support import (
    LiveServer,
    assert_problem,
    mint_jwt,
    start_server,
    stop_process,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
TIMEOUT = 10.0


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp(f"idem_{request.param}")
    drop = None
    if request.param == "sqlite":
        database_url = f"sqlite:///{root / 'a.db'}"
    else:
        backends.require(backends.postgres_problem())
        database_url = drop = backends.create_database_sync()
    live = start_server(root, database_url=database_url)
    try:
        yield live
    finally:
        stop_process(live.process)
        if drop:
            backends.drop_database_sync(drop)


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def same_answer(replayed: dict, first: dict) -> bool:
    """A replayed create's answer is the first one, its `websocketUrl` signed anew (the
    ticket expires long before the key): the same, but for the ticket's expiry."""

    def ticketless(answer: dict) -> dict:
        return {**answer, "websocketUrl": answer["websocketUrl"].partition("?ticket=")[0]}

    return ticketless(replayed) == ticketless(first)


def keyed(server: LiveServer, key: str, api_key: str | None = None) -> dict[str, str]:
    return {**server.headers(api_key), "Idempotency-Key": key}


def fresh_user() -> str:
    return f"idem_{uuid.uuid4().hex[:12]}"


def shared_conversation(
    http: httpx.Client, server: LiveServer, owner: str, collaborator: str
) -> str:
    """A conversation of `owner`'s, shared with `collaborator` as Collaborator (by the API
    key): its id."""
    cid = http.post(COLLECTION, json={"userId": owner}, headers=server.headers()).json()[
        "conversationId"
    ]
    shared = http.post(
        f"{COLLECTION}/{cid}/share",
        json={"userId": collaborator, "role": "Collaborator"},
        headers=server.headers(),
    )
    assert shared.status_code == 200, shared.text
    return cid


def feed_ids(http: httpx.Client, server: LiveServer, user: str, api_key: str | None = None):
    response = http.get(
        f"{COLLECTION}/feed", params={"userId": user}, headers=server.headers(api_key)
    )
    assert response.status_code == 200, response.text
    return [item["conversationId"] for item in response.json()["items"]]


def test_create_replays_the_first_response(http: httpx.Client, server: LiveServer) -> None:
    user, key = fresh_user(), str(uuid.uuid4())
    body = {"userId": user, "title": "once"}
    first = http.post(COLLECTION, json=body, headers=keyed(server, key))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = http.post(COLLECTION, json=body, headers=keyed(server, key))
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["conversationId"] == first.json()["conversationId"]
    assert same_answer(again.json(), first.json())
    assert feed_ids(http, server, user) == [first.json()["conversationId"]]
    # Without a key, the same body creates another.
    assert http.post(COLLECTION, json=body, headers=server.headers()).status_code == 201
    assert len(feed_ids(http, server, user)) == 2


def test_the_same_key_with_another_request_is_422(http: httpx.Client, server: LiveServer) -> None:
    user, key = fresh_user(), str(uuid.uuid4())
    first = http.post(COLLECTION, json={"userId": user}, headers=keyed(server, key))
    assert first.status_code == 201
    other = http.post(COLLECTION, json={"userId": user, "title": "x"}, headers=keyed(server, key))
    body = assert_problem(other, 422)
    assert body["errors"][0]["field"] == "Idempotency-Key"
    # Another path with the same key and body is another request too.
    cid = first.json()["conversationId"]
    message = {"message": "hi"}
    assert (
        http.post(
            f"{COLLECTION}/{cid}/messages", json=message, headers=keyed(server, key)
        ).status_code
        == 422
    )
    # The first request is still replayed as it was.
    replay = http.post(COLLECTION, json={"userId": user}, headers=keyed(server, key))
    assert replay.json()["conversationId"] == cid
    assert feed_ids(http, server, user) == [cid]


def test_a_failed_request_releases_its_key(http: httpx.Client, server: LiveServer) -> None:
    user, key = fresh_user(), str(uuid.uuid4())
    bad = http.post(COLLECTION, json={"userId": ""}, headers=keyed(server, key))
    assert_problem(bad, 422)
    good = http.post(COLLECTION, json={"userId": user}, headers=keyed(server, key))
    assert good.status_code == 201, good.text
    assert "idempotent-replayed" not in good.headers


def test_invalid_keys_are_400(http: httpx.Client, server: LiveServer) -> None:
    for key in ("k" * 256, "tab\there", "caf\u00e9".encode()):  # printable ASCII only
        headers = {**server.headers(), "Idempotency-Key": key}
        response = http.post(COLLECTION, json={"userId": "x"}, headers=headers)
        assert_problem(response, 400)


def test_message_append_is_idempotent(http: httpx.Client, server: LiveServer) -> None:
    cid = http.post(COLLECTION, json={"userId": fresh_user()}, headers=server.headers()).json()[
        "conversationId"
    ]
    key = str(uuid.uuid4())
    path = f"{COLLECTION}/{cid}/messages"
    first = http.post(path, json={"message": "once"}, headers=keyed(server, key))
    again = http.post(path, json={"message": "once"}, headers=keyed(server, key))
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["messageId"] == first.json()["messageId"]
    assert_problem(http.post(path, json={"message": "twice"}, headers=keyed(server, key)), 422)
    messages = http.get(path, headers=server.headers()).json()["items"]
    assert [m["id"] for m in messages] == [first.json()["messageId"]]


def test_base64_upload_is_idempotent(http: httpx.Client, server: LiveServer) -> None:
    cid = http.post(COLLECTION, json={"userId": fresh_user()}, headers=server.headers()).json()[
        "conversationId"
    ]
    b64 = {
        "base64Content": base64.b64encode(b"idempotent bytes").decode(),
        "fileName": "a.txt",
        "contentType": "text/plain",
    }
    key = str(uuid.uuid4())
    path = f"{COLLECTION}/{cid}/agent-attachments/base64"
    first = http.post(path, json=b64, headers=keyed(server, key))
    again = http.post(path, json=b64, headers=keyed(server, key))
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.headers.get("idempotent-replayed") == "true", "base64 upload not replayed"
    assert again.json()["blobId"] == first.json()["blobId"]
    listed = http.get(f"{COLLECTION}/{cid}/attachments", headers=server.headers()).json()
    assert [a["blobId"] for a in listed] == [first.json()["blobId"]]


def test_multipart_upload_is_idempotent(http: httpx.Client, server: LiveServer) -> None:
    cid = http.post(COLLECTION, json={"userId": fresh_user()}, headers=server.headers()).json()[
        "conversationId"
    ]
    # The retry sends the same bytes (same boundary), as the SDK does.
    key = str(uuid.uuid4())
    path = f"{COLLECTION}/{cid}/agent-attachments"
    boundary = "idem" + key.replace("-", "")
    headers = {**keyed(server, key), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    files = {"file": ("b.txt", b"other bytes", "text/plain")}
    first_mp = http.post(path, files=files, headers=headers)
    again_mp = http.post(path, files=files, headers=headers)
    assert first_mp.status_code == again_mp.status_code == 200, (first_mp.text, again_mp.text)
    assert again_mp.headers.get("idempotent-replayed") == "true", "multipart upload not replayed"
    assert again_mp.json()["blobId"] == first_mp.json()["blobId"]
    listed = http.get(f"{COLLECTION}/{cid}/attachments", headers=server.headers()).json()
    assert [a["blobId"] for a in listed] == [first_mp.json()["blobId"]]


def raw_post(server: LiveServer, path: str, body: bytes, key: str) -> socket.socket:
    """Send a whole keyed POST and return the socket, unread."""
    parts = urlsplit(server.base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-KEY: {server.api_key}\r\n"
            f"Idempotency-Key: {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    return sock


def retry_until_answered(http: httpx.Client, path: str, body: dict, headers) -> httpx.Response:
    """Retry as a client would, with the very same bytes: 409 (still running) means wait
    Retry-After and retry."""
    deadline = time.monotonic() + TIMEOUT
    headers = {**headers, "Content-Type": "application/json"}
    while True:
        response = http.post(path, content=dumps(body), headers=headers)
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        assert response.headers["retry-after"].isdigit()
        time.sleep(0.1)


def test_connection_cut_after_commit_then_retry_gets_the_same_conversation(
    http: httpx.Client, server: LiveServer
) -> None:
    user, key = fresh_user(), str(uuid.uuid4())
    body = {"userId": user, "title": "cut"}
    sock = raw_post(server, COLLECTION, dumps(body), key)
    try:
        # Wait until the server has committed, without reading its answer.
        deadline = time.monotonic() + TIMEOUT
        while not feed_ids(http, server, user):
            assert time.monotonic() < deadline, "the cut request was never committed"
            time.sleep(0.02)
    finally:
        sock.close()  # the client never read the 201
    retry = retry_until_answered(http, COLLECTION, body, keyed(server, key))
    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert feed_ids(http, server, user) == [retry.json()["conversationId"]]


def test_connection_cut_at_once_then_retry_creates_exactly_one(
    http: httpx.Client, server: LiveServer
) -> None:
    """Closed right after sending: whether or not the server ran it, one conversation."""
    for _ in range(5):
        user, key = fresh_user(), str(uuid.uuid4())
        body = {"userId": user}
        raw_post(server, COLLECTION, dumps(body), key).close()
        retry = retry_until_answered(http, COLLECTION, body, keyed(server, key))
        assert retry.status_code == 201, retry.text
        assert feed_ids(http, server, user) == [retry.json()["conversationId"]]
        # Another retry: replayed, still one.
        replay = retry_until_answered(http, COLLECTION, body, keyed(server, key))
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["conversationId"] == retry.json()["conversationId"]


async def test_concurrent_retries_create_exactly_one(server: LiveServer) -> None:
    user, key = fresh_user(), str(uuid.uuid4())
    body = {"userId": user}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        responses = await asyncio.gather(
            *(http.post(COLLECTION, json=body, headers=keyed(server, key)) for _ in range(8))
        )
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {201, 409}, [r.text for r in responses]
        created = {r.json()["conversationId"] for r in responses if r.status_code == 201}
        assert len(created) == 1, created
        for r in responses:
            if r.status_code == 409:
                assert_problem(r, 409)
                assert r.headers["retry-after"].isdigit()
        feed = await http.get(
            f"{COLLECTION}/feed", params={"userId": user}, headers=server.headers()
        )
        assert [i["conversationId"] for i in feed.json()["items"]] == list(created)


def test_keys_are_per_tenant(http: httpx.Client, server: LiveServer) -> None:
    other = server.create_api_key(f"idem-{uuid.uuid4().hex[:8]}")
    user, key = fresh_user(), str(uuid.uuid4())
    body = {"userId": user}
    mine = http.post(COLLECTION, json=body, headers=keyed(server, key))
    theirs = http.post(COLLECTION, json=body, headers=keyed(server, key, other))
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["conversationId"] != mine.json()["conversationId"]
    # Another body in the other tenant under the same key is its own business, too.
    assert (
        http.post(COLLECTION, json={"userId": "z"}, headers=keyed(server, "k2", other)).status_code
        == 201
    )
    # Each tenant replays its own.
    mine_again = http.post(COLLECTION, json=body, headers=keyed(server, key))
    assert same_answer(mine_again.json(), mine.json())
    theirs_again = http.post(COLLECTION, json=body, headers=keyed(server, key, other))
    assert same_answer(theirs_again.json(), theirs.json())
    # And within a tenant, a bearer user's key is not the API key's.
    as_user = {**server.bearer(mint_jwt(user)), "Idempotency-Key": key}
    by_user = http.post(COLLECTION, json=body, headers=as_user)
    assert by_user.status_code == 201, by_user.text
    assert "idempotent-replayed" not in by_user.headers
    assert by_user.json()["conversationId"] != mine.json()["conversationId"]


def test_a_replay_answers_what_was_done_even_after_access_ended(
    http: httpx.Client, server: LiveServer
) -> None:
    """The write a replay reports did happen: a retry after the caller was removed, or
    after the conversation was deleted, still gets the first answer, not a 404 that
    would say it had not. A new request under a new key is refused as usual."""
    owner, collaborator = fresh_user(), fresh_user()
    cid = shared_conversation(http, server, owner, collaborator)
    as_collaborator = {
        **server.bearer(mint_jwt(collaborator)),
        "Idempotency-Key": str(uuid.uuid4()),
    }
    url = f"{COLLECTION}/{cid}/messages"
    first = http.post(url, json={"message": "hi"}, headers=as_collaborator)
    assert first.status_code == 201, first.text

    removed = http.delete(
        f"{COLLECTION}/{cid}/participants/{collaborator}", headers=server.headers()
    )
    assert removed.status_code == 200, removed.text
    again = http.post(url, json={"message": "hi"}, headers=as_collaborator)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    fresh = {**as_collaborator, "Idempotency-Key": str(uuid.uuid4())}
    assert_problem(http.post(url, json={"message": "hi"}, headers=fresh), 404)

    assert http.delete(f"{COLLECTION}/{cid}", headers=server.headers()).status_code in (200, 204)
    again = http.post(url, json={"message": "hi"}, headers=as_collaborator)
    assert again.status_code == 201 and again.json() == first.json()


def test_keys_are_each_callers_own(http: httpx.Client, server: LiveServer) -> None:
    """Within one tenant too: another user's (or API key's) key neither replays, nor
    blocks, nor tells that it was used."""
    alice, bob, key = fresh_user(), fresh_user(), str(uuid.uuid4())
    as_alice = {**server.bearer(mint_jwt(alice)), "Idempotency-Key": key}
    as_bob = {**server.bearer(mint_jwt(bob)), "Idempotency-Key": key}
    first = http.post(COLLECTION, json={"userId": alice}, headers=as_alice)
    assert first.status_code == 201, first.text
    # Bob's request differs (his user): under a shared key it was 422, telling him the
    # key was taken; under his own it is simply his.
    bobs = http.post(COLLECTION, json={"userId": bob}, headers=as_bob)
    assert bobs.status_code == 201, bobs.text
    assert "idempotent-replayed" not in bobs.headers
    # Alice's message under a new key; bob, who cannot see her conversation, sends the
    # same under that key: 404, as without one (a shared key said 422, "key used").
    cid = first.json()["conversationId"]
    url, hello, other_key = f"{COLLECTION}/{cid}/messages", {"message": "hi"}, str(uuid.uuid4())
    sent = http.post(url, json=hello, headers={**as_alice, "Idempotency-Key": other_key})
    assert sent.status_code == 201, sent.text
    assert_problem(
        http.post(url, json=hello, headers={**as_bob, "Idempotency-Key": other_key}), 404
    )
    # Another API key of the tenant: its own request, not alice's or the first key's.
    other = server.create_api_key("default")
    body = {"userId": alice}
    by_key = http.post(COLLECTION, json=body, headers=keyed(server, key))
    by_other = http.post(COLLECTION, json=body, headers=keyed(server, key, other))
    assert by_key.status_code == by_other.status_code == 201
    assert "idempotent-replayed" not in by_other.headers
    assert by_other.json()["conversationId"] != by_key.json()["conversationId"]
    again = http.post(COLLECTION, json=body, headers=keyed(server, key, other))
    assert again.headers["idempotent-replayed"] == "true"
    assert same_answer(again.json(), by_other.json())


def dumps(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --- a server that died between the write and the key's finish --------------------------


def run_sql(server: LiveServer, sql: str, *params) -> None:
    """One statement on the server's own database (`?` placeholders), as a crash would
    have left it."""
    url = server.env["AIRIA_DATABASE_URL"]
    if url.startswith("sqlite:"):
        with sqlite_files.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql, params)
        return
    import asyncpg

    numbered = sql
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("?", f"${n}", 1)

    async def execute() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(numbered, *params)
        finally:
            await conn.close()

    asyncio.run(execute())


def unfinish(server: LiveServer, key: str, *, minutes_ago: int = 0, resource_id=None) -> None:
    """The key as a server killed after the write, before the finish, leaves it: claimed,
    never finished (`minutes_ago`: claimed that long ago)."""
    from airia_server.timeutil import format_us, now_us

    claimed = format_us(now_us() - minutes_ago * 60_000_000)
    run_sql(
        server,
        "UPDATE idempotency_keys SET status = NULL, response = NULL, created_at = ?, "
        "resource_id = coalesce(?, resource_id) WHERE key LIKE ?",
        claimed,
        resource_id,
        f"%:{key}",
    )


def created(http: httpx.Client, server: LiveServer, user: str, key: str) -> httpx.Response:
    return http.post(COLLECTION, json={"userId": user}, headers=keyed(server, key))


def test_a_retry_after_the_server_died_past_the_write_gets_that_write(
    http: httpx.Client, server: LiveServer
) -> None:
    """The write committed, the key was never finished: a retry answers with what was
    written, at once (not 409 for ten minutes, then a second copy), and so does one
    after the claim counts as abandoned."""
    user, key = fresh_user(), str(uuid.uuid4())
    first = created(http, server, user, key)
    assert first.status_code == 201, first.text
    cid = first.json()["conversationId"]
    for minutes_ago in (0, 11):
        unfinish(server, key, minutes_ago=minutes_ago)
        again = created(http, server, user, key)
        assert again.status_code == 201, (minutes_ago, again.text)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["conversationId"] == cid
        assert feed_ids(http, server, user) == [cid]

    # A message, and an upload, the same way.
    url = f"{COLLECTION}/{cid}/messages"
    sent = http.post(url, json={"message": "once"}, headers=keyed(server, key + "m"))
    assert sent.status_code == 201, sent.text
    upload_url = f"{COLLECTION}/{cid}/agent-attachments/base64"
    payload = {"base64Content": base64.b64encode(b"once").decode(), "fileName": "a.txt"}
    stored = http.post(upload_url, json=payload, headers=keyed(server, key + "u"))
    assert stored.status_code == 200, stored.text
    for minutes_ago in (0, 11):
        unfinish(server, key + "m", minutes_ago=minutes_ago)
        unfinish(server, key + "u", minutes_ago=minutes_ago)
        resent = http.post(url, json={"message": "once"}, headers=keyed(server, key + "m"))
        assert (resent.status_code, resent.json()["messageId"]) == (201, sent.json()["messageId"])
        restored = http.post(upload_url, json=payload, headers=keyed(server, key + "u"))
        assert (restored.status_code, restored.json()["blobId"]) == (
            200,
            stored.json()["blobId"],
        )
    messages = http.get(url, headers=server.headers()).json()["items"]
    assert [m["message"] for m in messages] == ["once"]
    listed = http.get(f"{COLLECTION}/{cid}/attachments", headers=server.headers()).json()
    assert [a["blobId"] for a in listed] == [stored.json()["blobId"]]


def test_a_retry_after_the_server_died_before_the_write_makes_it_under_the_keys_id(
    http: httpx.Client, server: LiveServer
) -> None:
    """Nothing was written: while the first may still be running, a retry waits (409);
    once the claim is abandoned, the retry does the work, under the id the key named
    from the start, so a write that was merely slow could never make a second copy."""
    user, key = fresh_user(), str(uuid.uuid4())
    first = created(http, server, user, key)
    assert first.status_code == 201, first.text
    named = str(uuid.uuid4())  # what the claim names, and no conversation has
    unfinish(server, key, resource_id=named)
    waiting = created(http, server, user, key)
    assert_problem(waiting, 409)
    assert waiting.headers["retry-after"] == "1"
    unfinish(server, key, minutes_ago=11)
    again = created(http, server, user, key)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json()["conversationId"] == named
    replay = created(http, server, user, key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["conversationId"] == named


def test_the_same_json_spelled_otherwise_is_the_same_request(
    http: httpx.Client, server: LiveServer
) -> None:
    """A retry compares the JSON it holds, not its bytes: spacing and key order may
    change (a client that rebuilt the request); a value may not."""
    user, key = fresh_user(), str(uuid.uuid4())
    headers = {**keyed(server, key), "Content-Type": "application/json"}
    compact = json.dumps({"userId": user, "title": "t"}, separators=(",", ":"))
    first = http.post(COLLECTION, content=compact, headers=headers)
    assert first.status_code == 201, first.text
    spaced = json.dumps({"title": "t", "userId": user}, indent=2)
    again = http.post(COLLECTION, content=spaced, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert same_answer(again.json(), first.json())
    other = http.post(
        COLLECTION, content=json.dumps({"userId": user, "title": "u"}), headers=headers
    )
    assert_problem(other, 422)


def test_a_retry_after_the_write_was_deleted_is_not_done_again(
    http: httpx.Client, server: LiveServer
) -> None:
    """The server died between the write and the key's finish, and what it wrote was
    deleted before the retry came: the retry is told so (410), at once and after the
    claim is abandoned, and the deleted conversation or truncated message does not
    come back."""
    from airia_server.timeutil import format_us, now_us

    user, key = fresh_user(), str(uuid.uuid4())
    first = created(http, server, user, key)
    cid = first.json()["conversationId"]
    keep = http.post(COLLECTION, json={"userId": user}, headers=server.headers()).json()
    url = f"{COLLECTION}/{keep['conversationId']}/messages"
    sent = http.post(url, json={"message": "gone"}, headers=keyed(server, key + "m"))
    assert sent.status_code == 201, sent.text
    unfinish(server, key)
    unfinish(server, key + "m")
    assert http.delete(f"{COLLECTION}/{cid}", headers=server.headers()).status_code in (200, 204)
    truncated = http.delete(f"{url}/{sent.json()['messageId']}/truncate", headers=server.headers())
    assert truncated.status_code == 200, truncated.text

    for minutes_ago in (0, 11):
        run_sql(
            server,
            "UPDATE idempotency_keys SET created_at = ? WHERE key LIKE ? OR key LIKE ?",
            format_us(now_us() - minutes_ago * 60_000_000),
            f"%:{key}",
            f"%:{key}m",
        )
        again = created(http, server, user, key)
        problem = assert_problem(again, 410)
        assert again.headers["idempotent-replayed"] == "true"
        assert problem["message"] == "Already done, and deleted since"
        resent = http.post(url, json={"message": "gone"}, headers=keyed(server, key + "m"))
        assert_problem(resent, 410)
    assert_problem(http.get(f"{COLLECTION}/{cid}", headers=server.headers()), 404)
    assert http.get(url, headers=server.headers()).json()["items"] == []
    assert feed_ids(http, server, user) == [keep["conversationId"]]


def test_keys_of_users_whose_ids_hold_a_colon_are_their_own(
    http: httpx.Client, server: LiveServer
) -> None:
    """User "a" with key "b:c" and user "a:b" with key "c" are two callers with two
    keys (they had been one stored key: the second was told the first's message was
    its own, and its message was never stored)."""
    stem = fresh_user()
    first_user, second_user = stem, f"{stem}:b"
    cid = shared_conversation(http, server, first_user, second_user)
    url = f"{COLLECTION}/{cid}/messages"
    by_first = {**server.bearer(mint_jwt(first_user)), "Idempotency-Key": "b:c"}
    by_second = {**server.bearer(mint_jwt(second_user)), "Idempotency-Key": "c"}
    one = http.post(url, json={"message": "hi"}, headers=by_first)
    two = http.post(url, json={"message": "hi"}, headers=by_second)
    assert one.status_code == two.status_code == 201, (one.text, two.text)
    assert "idempotent-replayed" not in two.headers
    assert one.json()["messageId"] != two.json()["messageId"]
    authors = [m["userId"] for m in http.get(url, headers=server.headers()).json()["items"]]
    assert authors == [first_user, second_user]


def test_one_conversation_however_its_path_is_spelled_is_one_request(
    http: httpx.Client, server: LiveServer
) -> None:
    """The id in upper case, or the collection with a trailing slash, reaches the same
    place: under one key, the same request (it was 422, "another request")."""
    user, key = fresh_user(), str(uuid.uuid4())
    first = http.post(COLLECTION, json={"userId": user}, headers=keyed(server, key))
    again = http.post(f"{COLLECTION}/", json={"userId": user}, headers=keyed(server, key))
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert same_answer(again.json(), first.json())
    cid = first.json()["conversationId"]
    lower = http.post(
        f"{COLLECTION}/{cid}/messages", json={"message": "x"}, headers=keyed(server, key + "m")
    )
    upper = http.post(
        f"{COLLECTION}/{cid.upper()}/messages",
        json={"message": "x"},
        headers=keyed(server, key + "m"),
    )
    assert upper.status_code == 201 and upper.headers["idempotent-replayed"] == "true"
    assert upper.json() == lower.json()


# --- keys an earlier version kept, read after an upgrade ---------------------------------


# How each earlier version kept a key: its spelling of the key, given the caller's kind,
# id (a user's, or the API key's) and the key sent; and what it hashed before the body.
def _bare(kind: str, caller: str, key: str) -> str:
    return key


def _per_caller(kind: str, caller: str, key: str) -> str:
    return f"{kind}:{caller}:{key}"


def _with_user(kind: str, user: str, path: str) -> tuple[str, ...]:
    return (kind, user, "POST", path)


def _plain(kind: str, user: str, path: str) -> tuple[str, ...]:
    return ("POST", path)


EARLIER_VERSIONS = {
    "d56e66b": (_bare, _with_user),  # keys per tenant, the user in the hash
    "c247448": (_per_caller, _plain),  # keys per caller, the body hashed as sent
    "42a319e": (_per_caller, _plain),  # the same, the body as canonical JSON
}


def canonical(body: bytes) -> bytes:
    return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()


def as_an_earlier_version_kept_it(
    server: LiveServer,
    version: str,
    key: str,
    path: str,
    body: bytes,
    *,
    kind: str = "api_key",
    caller: str = BOOTSTRAP_KEY_ID,
    user: str = "",
) -> None:
    """The key's row as `version` wrote it: the key spelled its way, and the request's
    hash taken its way, over the path as sent."""
    spell, head = EARLIER_VERSIONS[version]
    digest = hashlib.sha256()
    for part in head(kind, user, path):
        digest.update(part.encode() + b"\0")
    digest.update(canonical(body) if version == "42a319e" else body)
    run_sql(
        server,
        "UPDATE idempotency_keys SET key = ?, request_hash = ? WHERE key LIKE ?",
        spell(kind, caller, key),
        digest.hexdigest(),
        f"%:{key}",
    )


@pytest.mark.parametrize("version", list(EARLIER_VERSIONS))
def test_a_retry_of_a_request_an_earlier_version_answered_is_not_done_again(
    http: httpx.Client, server: LiveServer, version: str
) -> None:
    """An upgrade in the 24 hours a key lives: the retry reaches the new version, which
    finds the answer `version` kept under its spelling of the key, and replays it rather
    than making a second copy; from then on under this version's spelling. The bodies
    are spelled as no canonical form is (keys out of order), as clients send them."""
    user, key = fresh_user(), str(uuid.uuid4())
    body = dumps({"userId": user, "title": "once"})
    first = http.post(COLLECTION, content=body, headers=keyed(server, key))
    assert first.status_code == 201, first.text
    cid = first.json()["conversationId"]
    message_body = dumps({"message": "once", "images": None})
    messages = f"{COLLECTION}/{cid}/messages"
    sent = http.post(messages, content=message_body, headers=keyed(server, key + "m"))
    assert sent.status_code == 201, sent.text

    for given, path, raw in ((key, COLLECTION, body), (key + "m", messages, message_body)):
        assert raw != canonical(raw)
        as_an_earlier_version_kept_it(server, version, given, path, raw)

    for _ in range(2):  # found under the earlier spelling, then under this version's
        again = http.post(COLLECTION, content=body, headers=keyed(server, key))
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert same_answer(again.json(), first.json())
        resent = http.post(messages, content=message_body, headers=keyed(server, key + "m"))
        assert (resent.status_code, resent.headers["idempotent-replayed"]) == (201, "true")
        assert resent.json() == sent.json()
    assert feed_ids(http, server, user) == [cid]
    listed = http.get(messages, headers=server.headers()).json()["items"]
    assert [m["message"] for m in listed] == ["once"]


def test_a_bare_key_kept_before_keys_were_each_callers_answers_only_its_user(
    http: httpx.Client, server: LiveServer
) -> None:
    """Keys per tenant (d56e66b) had the user in the request's hash: after the upgrade,
    alice's retry finds her answer, while bob, in the same conversation with the same key
    and body, gets a message of his own; nor does an API key spelling bob's key today's
    way (`bearer:N:bob:K`) reach his answer through the bare-key reading."""
    alice, bob, key = fresh_user(), fresh_user(), str(uuid.uuid4())
    cid = shared_conversation(http, server, alice, bob)
    messages, body = f"{COLLECTION}/{cid}/messages", dumps({"message": "mine"})
    as_alice = {**server.bearer(server.mint_token(alice)), "Idempotency-Key": key}
    first = http.post(messages, content=body, headers=as_alice)
    assert first.status_code == 201, first.text
    as_an_earlier_version_kept_it(
        server, "d56e66b", key, messages, body, kind="bearer", caller=alice, user=alice
    )

    as_bob = {**server.bearer(server.mint_token(bob)), "Idempotency-Key": key}
    by_bob = http.post(messages, content=body, headers=as_bob)
    assert by_bob.status_code == 201 and "idempotent-replayed" not in by_bob.headers
    assert by_bob.json()["messageId"] != first.json()["messageId"]
    again = http.post(messages, content=body, headers=as_alice)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()

    spelled = f"bearer:{len(bob)}:{bob}:{key}"  # bob's key as this version keeps it
    crafted = http.post(messages, content=body, headers=keyed(server, spelled))
    assert crafted.status_code == 201 and "idempotent-replayed" not in crafted.headers
    assert crafted.json()["messageId"] != by_bob.json()["messageId"]


# -- PUTs and DELETEs: a retry after a lost answer gets that answer -------------------


def stored_event_types(http: httpx.Client, server: LiveServer, cid: str) -> list[str]:
    """The types of `cid`'s stored events, replayed with after=0 up to a live typing
    sentinel (which is not stored), so every stored one was read."""
    url = http.get(f"{COLLECTION}/{cid}/websocket-url", headers=server.headers()).json()[
        "websocketUrl"
    ]
    types = []
    with connect(url + "&after=0", open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        typing = http.post(
            f"{COLLECTION}/{cid}/typing", json={"userId": "sentinel"}, headers=server.headers()
        )
        assert typing.status_code == 200, typing.text
        while (kind := json.loads(ws.recv(TIMEOUT))["type"]) != "typing":
            types.append(kind)
    return types


def test_a_keyed_delete_replays_its_answer(http: httpx.Client, server: LiveServer) -> None:
    """A DELETE retried after its answer was lost gets that answer (204, or the body it
    had), not a 404 saying that the delete it did had not happened."""
    owner, collaborator = fresh_user(), fresh_user()
    cid = shared_conversation(http, server, owner, collaborator)
    base = f"{COLLECTION}/{cid}"
    message_id = http.post(
        f"{base}/messages", json={"message": "hi"}, headers=server.headers()
    ).json()["messageId"]
    identity = {"externalSystem": "Slack", "externalChannelId": "C1", "externalThreadId": cid}
    identity_id = http.post(
        f"{base}/external-identities", json=identity, headers=server.headers()
    ).json()["id"]
    for path in (
        f"{base}/messages/{message_id}/truncate",
        f"{base}/participants/{collaborator}",
        f"{base}/external-identities/{identity_id}",
        base,
    ):
        headers = keyed(server, str(uuid.uuid4()))
        first = http.delete(path, headers=headers)
        assert first.status_code in (200, 204), (path, first.text)
        again = http.delete(path, headers=headers)
        assert (again.status_code, again.content) == (first.status_code, first.content), path
        assert again.headers["idempotent-replayed"] == "true"
        if first.status_code == 204:
            assert "content-type" not in again.headers
        # Without the key, the same DELETE is another request: what it names is gone.
        assert_problem(http.delete(path, headers=server.headers()), 404)


def test_a_keyed_put_replays_its_answer_and_stores_no_second_event(
    http: httpx.Client, server: LiveServer
) -> None:
    owner, collaborator = fresh_user(), fresh_user()
    cid = shared_conversation(http, server, owner, collaborator)
    stored_before = stored_event_types(http, server, cid)
    for path, body in (
        (f"{COLLECTION}/{cid}", {"title": "renamed"}),
        (f"{COLLECTION}/{cid}/participants/{collaborator}/role", {"role": "Viewer"}),
    ):
        headers = keyed(server, str(uuid.uuid4()))
        first = http.put(path, json=body, headers=headers)
        assert first.status_code == 200, first.text
        again = http.put(path, json=body, headers=headers)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        fresh = ("websocketUrl",)  # a conversation's answer is made anew, with a new ticket
        assert {k: v for k, v in again.json().items() if k not in fresh} == {
            k: v for k, v in first.json().items() if k not in fresh
        }
        assert_problem(http.put(path, json={"title": "other"}, headers=headers), 422)
    stored = stored_event_types(http, server, cid)
    assert stored[len(stored_before) :] == ["conversation.updated", "participant.updated"]


def test_a_keyed_update_keeps_no_copy_of_the_messages(
    http: httpx.Client, server: LiveServer
) -> None:
    """An update answers with the conversation and its messages. Kept for its key's 24
    hours, that answer outlived a truncation, the conversation's delete and its user's
    erasure, and a replay handed the messages back. Only the status is kept: a replay
    answers with the conversation as it is now."""
    cid = http.post(COLLECTION, json={"userId": fresh_user()}, headers=server.headers()).json()[
        "conversationId"
    ]
    secret = f"SECRET-{uuid.uuid4().hex}"
    first = http.post(
        f"{COLLECTION}/{cid}/messages", json={"message": secret}, headers=server.headers()
    ).json()["messageId"]
    headers = keyed(server, str(uuid.uuid4()))
    updated = http.put(f"{COLLECTION}/{cid}", json={"title": "t2"}, headers=headers)
    assert [m["message"] for m in updated.json()["messages"]] == [secret]

    cut = http.delete(f"{COLLECTION}/{cid}/messages/{first}/truncate", headers=server.headers())
    assert cut.status_code == 200, cut.text
    again = http.put(f"{COLLECTION}/{cid}", json={"title": "t2"}, headers=headers)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["messages"] == [] and again.json()["title"] == "t2"

    assert http.delete(f"{COLLECTION}/{cid}", headers=server.headers()).status_code == 204
    assert_problem(http.put(f"{COLLECTION}/{cid}", json={"title": "t2"}, headers=headers), 404)
    url = server.env["AIRIA_DATABASE_URL"]
    if url.startswith("postgresql"):  # nothing of the text is kept with any key
        kept = backends.fetch_sync(
            url,
            "SELECT count(*) FROM idempotency_keys "
            f"WHERE position('{secret}' in convert_from(response, 'UTF8')) > 0",
        )[0]
    else:
        with sqlite_files.connect(server.db_path) as db:
            kept = db.execute(
                "SELECT count(*) FROM idempotency_keys WHERE instr(CAST(response AS TEXT), ?)",
                (secret,),
            ).fetchone()[0]
    assert kept == 0


def _kept(server: LiveServer, text: str) -> int:
    """Keys whose kept answer holds `text`."""
    url = server.env["AIRIA_DATABASE_URL"]
    if url.startswith("postgresql"):
        return backends.fetch_sync(
            url,
            "SELECT count(*) FROM idempotency_keys "
            f"WHERE position('{text}' in convert_from(response, 'UTF8')) > 0",
        )[0]
    with sqlite_files.connect(server.db_path) as db:
        return db.execute(
            "SELECT count(*) FROM idempotency_keys WHERE instr(CAST(response AS TEXT), ?)",
            (text,),
        ).fetchone()[0]


@pytest.mark.parametrize("how", ["delete", "erase-user"])
def test_a_deleted_conversation_takes_its_create_and_upload_answers_with_it(
    http: httpx.Client, server: LiveServer, how: str
) -> None:
    """A keyed create's answer holds the title and the files named, an upload's the
    file's name; kept for the key's 24 hours, a replay handed them back after the
    conversation was deleted or its user erased. Deleting the conversation now turns
    those answers into the 410 of a request done once and deleted since."""
    user, secret = fresh_user(), f"SECRET-{uuid.uuid4().hex}"
    body = {"userId": user, "title": secret, "dataSourceFiles": {"d": [f"{secret}.pdf"]}}
    create_key = keyed(server, str(uuid.uuid4()))
    created = http.post(COLLECTION, json=body, headers=create_key)
    assert created.status_code == 201, created.text
    cid = created.json()["conversationId"]
    upload = {"base64Content": "aGk=", "fileName": f"{secret}.txt", "contentType": "text/plain"}
    upload_key = keyed(server, str(uuid.uuid4()))
    path = f"{COLLECTION}/{cid}/agent-attachments/base64"
    assert http.post(path, json=upload, headers=upload_key).status_code == 200
    assert http.post(COLLECTION, json=body, headers=create_key).status_code == 201  # replayed
    assert _kept(server, secret) == 2

    if how == "delete":
        assert http.delete(f"{COLLECTION}/{cid}", headers=server.headers()).status_code == 204
    else:
        erased = server.cli("erase-user", "--tenant", "default", "--user", user, "--json")
        assert erased.returncode == 0, erased.stderr
    assert _kept(server, secret) == 0
    for url, sent, headers in ((COLLECTION, body, create_key), (path, upload, upload_key)):
        again = http.post(url, json=sent, headers=headers)
        assert assert_problem(again, 410)["title"] == "Gone", again.text
        assert secret not in again.text
    assert feed_ids(http, server, user) == []  # and nothing was made again


@pytest.mark.parametrize("change", ["removed", "made Viewer"])
def test_an_upload_replays_even_after_access_ended(
    http: httpx.Client, server: LiveServer, change: str
) -> None:
    """As every keyed write: an upload's retry after its caller was removed or demoted
    is answered as the upload was (the access check ran before the key's and answered
    404 or 403, as if it had not been done), its link as first signed: a fresh one
    would let them download past their access. A new upload is refused as before,
    before its body is read (a malformed one is not 422)."""
    owner, collaborator = fresh_user(), fresh_user()
    cid = shared_conversation(http, server, owner, collaborator)
    as_collaborator = server.bearer(mint_jwt(collaborator))
    b64 = {"base64Content": "aGk=", "fileName": "a.txt", "contentType": "text/plain"}
    b64_path = f"{COLLECTION}/{cid}/agent-attachments/base64"
    b64_key = {**as_collaborator, "Idempotency-Key": str(uuid.uuid4())}
    mp_path = f"{COLLECTION}/{cid}/agent-attachments"
    mp_key = {
        **as_collaborator,
        "Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "multipart/form-data; boundary=idemaccess",
    }
    files = {"file": ("b.txt", b"other bytes", "text/plain")}
    first_b64 = http.post(b64_path, json=b64, headers=b64_key)
    first_mp = http.post(mp_path, files=files, headers=mp_key)
    assert first_b64.status_code == first_mp.status_code == 200, (first_b64.text, first_mp.text)

    if change == "removed":
        gone = http.delete(
            f"{COLLECTION}/{cid}/participants/{collaborator}", headers=server.headers()
        )
        refusal = 404
    else:
        gone = http.put(
            f"{COLLECTION}/{cid}/participants/{collaborator}/role",
            json={"role": "Viewer"},
            headers=server.headers(),
        )
        refusal = 403
    assert gone.status_code == 200, gone.text
    again_b64 = http.post(b64_path, json=b64, headers=b64_key)
    again_mp = http.post(mp_path, files=files, headers=mp_key)
    for first, again in ((first_b64, again_b64), (first_mp, again_mp)):
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()  # the link too: not signed anew
    fresh = {**b64_key, "Idempotency-Key": str(uuid.uuid4())}
    assert_problem(http.post(b64_path, json=b64, headers=fresh), refusal)
    assert_problem(http.post(b64_path, json=b64, headers=as_collaborator), refusal)
    malformed = {**b64, "base64Content": "!!!"}
    assert_problem(http.post(b64_path, json=malformed, headers=fresh), refusal)
    listed = http.get(f"{COLLECTION}/{cid}/attachments", headers=server.headers()).json()
    assert len(listed) == 2, listed


def _ticket_expiry(websocket_url: str) -> int:
    payload = websocket_url.partition("ticket=")[2].partition(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))[4]


def test_a_replay_carries_links_signed_anew(http: httpx.Client, server: LiveServer) -> None:
    """A create's `websocketUrl` and an upload's `url` expire (an hour by default) while
    their key lives 24 hours: a replay kept them as first signed, and a retry after the
    hour got links that answered 403. They are signed again for each replay."""
    key = keyed(server, str(uuid.uuid4()))
    first = http.post(COLLECTION, json={"userId": fresh_user()}, headers=key)
    assert first.status_code == 201, first.text
    cid = first.json()["conversationId"]
    upload = {"base64Content": "aGk=", "fileName": "a.txt", "contentType": "text/plain"}
    upload_key = keyed(server, str(uuid.uuid4()))
    path = f"{COLLECTION}/{cid}/agent-attachments/base64"
    uploaded = http.post(path, json=upload, headers=upload_key)
    assert uploaded.status_code == 200, uploaded.text
    time.sleep(1.1)  # expiries are whole seconds

    again = http.post(COLLECTION, json={"userId": first.json()["userId"]}, headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    renewed = again.json().pop("websocketUrl")
    assert {**again.json(), "websocketUrl": None} == {**first.json(), "websocketUrl": None}
    assert _ticket_expiry(renewed) > _ticket_expiry(first.json()["websocketUrl"])
    with connect(renewed, open_timeout=TIMEOUT, close_timeout=2):
        pass
    uploaded_again = http.post(path, json=upload, headers=upload_key)
    assert uploaded_again.headers["idempotent-replayed"] == "true"
    url, first_url = uploaded_again.json()["url"], uploaded.json()["url"]
    assert int(httpx.URL(url).params["expires"]) > int(httpx.URL(first_url).params["expires"])
    assert {**uploaded_again.json(), "url": None} == {**uploaded.json(), "url": None}
    assert http.get(url).content == b"hi"
