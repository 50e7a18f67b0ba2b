"""Data lifecycle: retention per tenant on a schedule, and erasing a user."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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
    with sqlite3.connect(db_path) as conn:
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
