"""Data lifecycle: retention per tenant on a schedule, and erasing a user."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import sqlite_files

from .support import LiveServer, run_cli, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A SQLite server whose maintenance runs every second, with no blob grace."""
    with running_server(
        tmp_path, AIRIA_JWT_SECRET=None, AIRIA_BLOB_SWEEP_GRACE_SECONDS="0"
    ) as server:
        yield server


def age(db_path: Path, conversation_id: str, days: int) -> None:
    """Pretend the conversation was last touched `days` ago."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - days * 86400))
    with sqlite_files.connect(db_path) as conn:
        conn.execute(
            "UPDATE conversations SET updated_at = ? WHERE id = ?", (stamp, conversation_id)
        )


def create(http: httpx.Client, server: LiveServer, user: str) -> str:
    response = http.post("/v1/Conversations", json={"userId": user}, headers=server.headers())
    assert response.status_code == 201, response.text
    return response.json()["conversationId"]


def wait_gone(http: httpx.Client, server: LiveServer, conversation_id: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = http.get(
            f"/v1/Conversations/{conversation_id}", headers=server.headers()
        ).status_code
        if status == 404:
            return
        time.sleep(0.2)
    pytest.fail(f"{conversation_id} was not deleted by retention")


def test_retention_deletes_only_what_its_tenant_keeps_no_longer(own_server: LiveServer) -> None:
    server = own_server
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        old, recent = create(http, server, "alice"), create(http, server, "alice")
        upload = http.post(
            f"/v1/Conversations/{old}/agent-attachments",
            files={"file": ("old.txt", b"old bytes", "text/plain")},
            headers=server.headers(),
        )
        assert upload.status_code == 200
        age(server.db_path, old, days=40)
        age(server.db_path, recent, days=10)
        result = run_cli(server.env, "retention", "set", "--tenant", "default", "--days", "30")
        assert result.returncode == 0, result.stderr
        one = run_cli(server.env, "retention", "set", "--tenant", "nobody", "--days", "1")
        assert one.stdout == "tenant 'nobody' keeps conversations 1 day after their last change\n"

        wait_gone(http, server, old)
        assert http.get(f"/v1/Conversations/{recent}", headers=server.headers()).status_code == 200
        # Its file went with it.
        assert httpx.get(upload.json()["url"]).status_code == 404

        shown = run_cli(server.env, "retention", "show").stdout
        assert "default: 30" in shown


def test_a_tenant_that_keeps_for_ever_loses_nothing(own_server: LiveServer) -> None:
    server = own_server
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        cid = create(http, server, "carol")
        age(server.db_path, cid, days=4000)
        assert (
            run_cli(server.env, "retention", "set", "--tenant", "default", "--forever").returncode
            == 0
        )
        time.sleep(2.5)  # two maintenance rounds: nothing to see, so nothing to poll
        assert http.get(f"/v1/Conversations/{cid}", headers=server.headers()).status_code == 200


def test_erase_user_reports_what_it_removed(own_server: LiveServer) -> None:
    server = own_server
    headers = server.headers()
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        owned = [create(http, server, "dave") for _ in range(3)]
        for cid in owned:
            for text in ("one", "two"):
                assert (
                    http.post(
                        f"/v1/Conversations/{cid}/messages", json={"message": text}, headers=headers
                    ).status_code
                    == 201
                )
        assert (
            http.post(
                f"/v1/Conversations/{owned[0]}/agent-attachments/base64",
                json={"base64Content": "aGk=", "fileName": "hi.txt"},
                headers=headers,
            ).status_code
            == 200
        )
        others = create(http, server, "erin")
        assert (
            http.post(
                f"/v1/Conversations/{others}/share",
                json={"userId": "dave", "role": "Viewer"},
                headers=headers,
            ).status_code
            == 200
        )

        result = run_cli(
            server.env, "erase-user", "--tenant", "default", "--user", "dave", "--json"
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.splitlines()[-1])
        assert report == {
            "tenant_id": "default",
            "user_id": "dave",
            "conversations_deleted": 3,
            "messages_deleted": 6,
            "attachments_deleted": 1,
            "participations_removed": 1,
        }
        for cid in owned:
            assert http.get(f"/v1/Conversations/{cid}", headers=headers).status_code == 404
        people = http.get(f"/v1/Conversations/{others}/participants", headers=headers).json()
        assert [p["userId"] for p in people] == ["erin"]
        feed = http.get("/v1/Conversations/feed", params={"userId": "dave"}, headers=headers)
        assert feed.json()["totalCount"] == 0


async def test_erase_user_deletes_what_they_alone_own_and_closes_their_sockets(
    server: LiveServer,
) -> None:
    """Owning is the role: a conversation the user created and handed over stays, one
    handed to them goes with them unless another Owner remains; from the rest they are
    removed as an Owner would remove them, so their open sockets close (on SQLite
    without Redis too: the next event reveals the stored removal)."""
    import uuid

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from .support import mint_jwt

    tag = uuid.uuid4().hex[:8]
    alice, carol, dave = f"alice-{tag}", f"carol-{tag}", f"dave-{tag}"
    keyed = server.headers()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:

        async def call(method: str, path: str, body: dict | None = None) -> dict:
            response = await http.request(method, path, json=body, headers=keyed)
            assert 200 <= response.status_code < 300, (method, path, response.text)
            return response.json() if response.content else {}

        async def new(owner: str) -> str:
            return (await call("POST", "/v1/Conversations", {"userId": owner}))["conversationId"]

        async def share(cid: str, user: str, role: str) -> None:
            await call("POST", f"/v1/Conversations/{cid}/share", {"userId": user, "role": role})

        handed_over = await new(alice)  # created by alice, now carol's alone
        await share(handed_over, carol, "Owner")
        await call("DELETE", f"/v1/Conversations/{handed_over}/participants/{alice}")
        handed_to_her = await new(dave)  # created by dave, now alice's alone
        await share(handed_to_her, alice, "Owner")
        await call(
            "PUT", f"/v1/Conversations/{handed_to_her}/participants/{dave}/role", {"role": "Viewer"}
        )
        co_owned = await new(alice)  # alice and carol own it: it stays, carol's
        await share(co_owned, carol, "Owner")
        watched = await new(carol)  # alice only reads it, and has it open
        await share(watched, alice, "Collaborator")
        as_alice = server.bearer(mint_jwt(alice))
        url = await http.get(f"/v1/Conversations/{watched}/websocket-url", headers=as_alice)
        async with connect(url.json()["websocketUrl"], open_timeout=10) as socket:
            result = server.cli("erase-user", "--tenant", "default", "--user", alice, "--json")
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout.splitlines()[-1])
            assert report["conversations_deleted"] == 1
            assert report["participations_removed"] == 2  # co_owned and watched

            await call("POST", f"/v1/Conversations/{watched}/messages", {"message": "secret"})
            event = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert (event["type"], event["data"]["userId"]) == ("participant.removed", alice)
            with pytest.raises(ConnectionClosed):
                extra = await asyncio.wait_for(socket.recv(), 10)
                pytest.fail(f"the erased user's socket got {extra}")
            assert socket.close_code == 1008

        async def status(cid: str) -> int:
            return (await http.get(f"/v1/Conversations/{cid}", headers=keyed)).status_code

        assert await status(handed_over) == 200
        assert await status(handed_to_her) == 404
        assert await status(co_owned) == 200
        for cid, left in (
            (handed_over, {carol: "Owner"}),
            (co_owned, {carol: "Owner"}),
            (watched, {carol: "Owner"}),
        ):
            people = await call("GET", f"/v1/Conversations/{cid}/participants")
            assert {p["userId"]: p["role"] for p in people} == left
        feed = await http.get("/v1/Conversations/feed", params={"userId": alice}, headers=keyed)
        assert feed.json()["totalCount"] == 0
