"""Moving a deployment from the embedded SQLite to PostgreSQL with `export` and `import`.

A real server on SQLite is populated over HTTP (three tenants, messages, a truncation,
shares and role changes, read positions, updates, a deletion), then stopped; its database is
exported, imported twice into a fresh PostgreSQL database, and a real server on PostgreSQL
must answer every read exactly as the SQLite one did: conversations, message pages,
participants, feeds with unread counts, the stored event log replayed over a WebSocket, and
an API key created on the SQLite side.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect

import backends

from .support import (
    BOOTSTRAP_KEY,
    JWT_SECRET,
    clean_env,
    free_port,
    mint_jwt,
    run_cli,
    stop_process,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
TIMEOUT = 10.0


@contextmanager
def running_server(database_url: str, root: Path, name: str) -> Iterator[str]:
    """A real `airia-server serve` over `database_url`; its base URL. Always stopped."""
    port = free_port()
    env = server_env(database_url)
    stderr_path = root / f"{name}.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airia_server", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base_url, stderr_path)
        yield base_url
    finally:
        stop_process(proc)


def server_env(database_url: str) -> dict[str, str]:
    return clean_env(
        AIRIA_DATABASE_URL=database_url,
        AIRIA_BOOTSTRAP_API_KEY=BOOTSTRAP_KEY,
        AIRIA_JWT_SECRET=JWT_SECRET,
        AIRIA_LOG_FORMAT="text",
        AIRIA_HOST="127.0.0.1",
    )


def ok(response: httpx.Response) -> Any:
    assert 200 <= response.status_code < 300, (response.request.url, response.text)
    return response.json() if response.content else None


def without_urls(value: Any) -> Any:
    """`websocketUrl` carries a fresh ticket and the server's port: never comparable."""
    if isinstance(value, dict):
        return {k: without_urls(v) for k, v in value.items() if k != "websocketUrl"}
    if isinstance(value, list):
        return [without_urls(v) for v in value]
    return value


# --- populating the source ------------------------------------------------------------------


def populate(http: httpx.Client, tenants: dict[str, str]) -> dict[str, list[str]]:
    """Conversations of every tenant, exercising every kind of stored state; their ids."""
    created: dict[str, list[str]] = {}
    for tenant, key in tenants.items():
        headers = {"X-API-KEY": key}
        owner, helper, reader = (f"{n}_{uuid.uuid4().hex[:8]}" for n in ("own", "hlp", "rdr"))
        ids = []
        for i in range(3):
            conversation = ok(
                http.post(
                    COLLECTION,
                    headers=headers,
                    json={"userId": owner, "title": f"{tenant} talk {i}"},
                )
            )
            cid = conversation["conversationId"]
            ids.append(cid)
            messages = []
            for j in range(7):
                body: dict[str, Any] = {"message": f"{tenant}/{i}/{j} é✓", "userId": owner}
                if j % 2:
                    body = {"message": f"answer {j}", "role": "assistant"}
                if j == 3:
                    body["images"] = ["https://example.com/a.png"]
                messages.append(
                    ok(http.post(f"{COLLECTION}/{cid}/messages", headers=headers, json=body))
                )
            if i == 1:  # a truncation: positions are never reused afterwards
                ok(
                    http.delete(
                        f"{COLLECTION}/{cid}/messages/{messages[5]['messageId']}/truncate",
                        headers=headers,
                    )
                )
                ok(
                    http.post(
                        f"{COLLECTION}/{cid}/messages",
                        headers=headers,
                        json={"message": "after the cut", "userId": owner},
                    )
                )
            ok(
                http.post(
                    f"{COLLECTION}/{cid}/share",
                    headers=headers,
                    json={"userId": helper, "role": "Viewer"},
                )
            )
            ok(
                http.put(
                    f"{COLLECTION}/{cid}/participants/{helper}/role",
                    headers=headers,
                    json={"role": "Collaborator"},
                )
            )
            ok(
                http.post(
                    f"{COLLECTION}/{cid}/share",
                    headers=headers,
                    json={"userId": reader, "role": "Viewer"},
                )
            )
            if i == 2:
                ok(http.delete(f"{COLLECTION}/{cid}/participants/{reader}", headers=headers))
            ok(
                http.put(
                    f"{COLLECTION}/{cid}",
                    headers=headers,
                    json={
                        "title": f"{tenant} renamed {i}",
                        "isBookmarked": i == 0,
                        "dataSourceFiles": {"docs": [f"f{i}.pdf"]},
                        "lastExecutionStatus": "Completed",
                    },
                )
            )
            # Read positions: the helper read everything so far, the owner only of the first.
            ok(
                http.patch(
                    f"{COLLECTION}/{cid}/mark-as-read", headers=headers, json={"userId": helper}
                )
            )
            if i == 0:
                ok(
                    http.patch(
                        f"{COLLECTION}/{cid}/mark-as-read", headers=headers, json={"userId": owner}
                    )
                )
            ok(
                http.post(
                    f"{COLLECTION}/{cid}/messages",
                    headers=headers,
                    json={"message": "unread by everyone", "userId": helper},
                )
            )
        # A deleted conversation leaves nothing behind to move.
        gone = ok(http.post(COLLECTION, headers=headers, json={"userId": owner, "title": "gone"}))
        ok(
            http.post(
                f"{COLLECTION}/{gone['conversationId']}/messages",
                headers=headers,
                json={"message": "soon gone", "userId": owner},
            )
        )
        assert (
            http.delete(f"{COLLECTION}/{gone['conversationId']}", headers=headers).status_code
            == 204
        )
        created[tenant] = ids
        created[f"{tenant}:users"] = [owner, helper, reader]
    return created


def snapshot(http: httpx.Client, tenants: dict[str, str], created: dict[str, list[str]]) -> dict:
    """Everything the API shows of the created data, without per-server URLs."""
    seen: dict[str, Any] = {}
    for tenant, key in tenants.items():
        headers = {"X-API-KEY": key}
        seen[f"feed:{tenant}"] = ok(
            http.get(f"{COLLECTION}/feed", headers=headers, params={"PageSize": 100})
        )
        for user in created[f"{tenant}:users"]:
            seen[f"feed:{tenant}:{user}"] = ok(
                http.get(
                    f"{COLLECTION}/feed",
                    headers=headers,
                    params={"PageSize": 100, "userId": user, "SortBy": "createdAt"},
                )
            )
        for cid in created[tenant]:
            seen[cid] = ok(http.get(f"{COLLECTION}/{cid}", headers=headers))
            seen[f"participants:{cid}"] = ok(
                http.get(f"{COLLECTION}/{cid}/participants", headers=headers)
            )
            for order in ("asc", "desc"):
                pages, cursor = [], None
                while True:
                    params: dict[str, Any] = {"limit": 3, "order": order}
                    if cursor:
                        params["cursor"] = cursor
                    page = ok(
                        http.get(f"{COLLECTION}/{cid}/messages", headers=headers, params=params)
                    )
                    pages.append(page)
                    cursor = page["nextCursor"]
                    if not cursor:
                        break
                    assert len(pages) < 20
                seen[f"messages:{order}:{cid}"] = pages
    return without_urls(seen)


async def replay(http: httpx.Client, base_url: str, key: str, cid: str, count: int) -> list[dict]:
    """The stored events of `cid` replayed with after=0: exactly `count` frames."""
    url = ok(http.get(f"{COLLECTION}/{cid}/websocket-url", headers={"X-API-KEY": key}))[
        "websocketUrl"
    ]
    assert urlsplit(url).netloc == urlsplit(base_url).netloc
    async with connect(url + "&after=0", open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        return [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(count)]


def read_export(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the move ---------------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    try:
        yield url
    finally:
        backends.drop_database_sync(url)


async def test_sqlite_export_imports_into_postgres_and_serves_the_same(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'source.db'}"
    source_env = server_env(sqlite_url)
    tenant_keys = {"default": BOOTSTRAP_KEY}
    for tenant in ("acme", "beta"):
        made = run_cli(source_env, "keys", "create", "--tenant", tenant, "--name", f"{tenant} bot")
        assert made.returncode == 0, made.stderr
        tenant_keys[tenant] = made.stdout.strip().splitlines()[-1]
    revoked = run_cli(source_env, "keys", "create", "--tenant", "acme", "--name", "old")
    revoked_key = revoked.stdout.strip().splitlines()[-1]
    revoked_id = revoked.stdout.split()[3]
    assert run_cli(source_env, "keys", "revoke", revoked_id).returncode == 0

    with running_server(sqlite_url, tmp_path, "sqlite") as base:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
            created = populate(http, tenant_keys)
            before = snapshot(http, tenant_keys, created)
            # Stop nothing yet: the event logs, replayed from the source.
            export_path = tmp_path / "live.jsonl"
            live = run_cli(source_env, "export", "--output", str(export_path))
            assert live.returncode == 0, live.stderr
            event_counts: dict[str, int] = {}
            for line in read_export(export_path):
                if line["kind"] == "event":
                    event_counts[line["conversationId"]] = (
                        event_counts.get(line["conversationId"], 0) + 1
                    )
            events_before = {}
            for tenant, key in tenant_keys.items():
                for cid in created[tenant]:
                    events_before[cid] = await replay(http, base, key, cid, event_counts[cid])

    # The export of the stopped source: header first, end last, nothing but hashes of keys.
    export_path = tmp_path / "airia.jsonl"
    exported = run_cli(source_env, "export", "--output", str(export_path))
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == "", "nothing extra on stderr when it is not a terminal"
    lines = read_export(export_path)
    assert lines[0]["kind"] == "header"
    assert (lines[0]["format"], lines[0]["version"]) == ("airia-export", 1)
    assert lines[0]["exportedAt"].endswith("Z")
    assert lines[-1]["kind"] == "end"
    text = export_path.read_text()
    for key in [*tenant_keys.values(), revoked_key]:
        assert key not in text, "no plaintext key is ever exported"
    kinds = [line["kind"] for line in lines[1:-1]]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert lines[-1]["counts"] == {
        k: counts.get(k, 0)
        for k in ("api_key", "conversation", "participant", "message", "read_position", "event")
    }
    assert counts["conversation"] == 9 and counts["api_key"] == 3
    conversations = {line["id"]: line for line in lines if line["kind"] == "conversation"}
    assert set(conversations) == {cid for t in tenant_keys for cid in created[t]}
    truncated = conversations[created["default"][1]]
    assert (truncated["messageCount"], truncated["messageSeq"]) == (7, 9), truncated
    assert text == export_path.read_text()  # stable
    stdout_export = run_cli(source_env, "export")
    assert stdout_export.returncode == 0
    assert [json.loads(x) for x in stdout_export.stdout.splitlines()][1:] == lines[1:]

    # Tenant filter: only that tenant's rows.
    only = run_cli(source_env, "export", "--tenant", "acme")
    acme = [json.loads(x) for x in only.stdout.splitlines()]
    assert acme[0]["tenant"] == "acme"
    acme_ids = {x["id"] for x in acme if x["kind"] == "conversation"}
    assert acme_ids == set(created["acme"])
    assert {x["tenantId"] for x in acme if x["kind"] in ("api_key", "conversation")} == {"acme"}
    assert {x["conversationId"] for x in acme if "conversationId" in x} == acme_ids

    # Import twice into PostgreSQL: the second adds nothing and changes nothing.
    target_env = server_env(postgres_url)
    first = run_cli(target_env, "import", str(export_path))
    assert first.returncode == 0, first.stderr
    added_first = summary_rows(first.stdout)
    assert added_first["conversation"] == (9, 9)
    assert all(read == added for read, added in added_first.values())
    second = run_cli(target_env, "import", str(export_path))
    assert second.returncode == 0, second.stderr
    assert all(added == 0 for _, added in summary_rows(second.stdout).values())
    assert {k: v[0] for k, v in summary_rows(second.stdout).items()} == lines[-1]["counts"]
    reexported = run_cli(target_env, "export")
    assert reexported.returncode == 0, reexported.stderr
    assert [json.loads(x) for x in reexported.stdout.splitlines()][1:] == lines[1:], (
        "PostgreSQL holds exactly what SQLite held"
    )

    with running_server(postgres_url, tmp_path, "postgres") as base:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
            after = snapshot(http, tenant_keys, created)
            assert after.keys() == before.keys()
            for name in before:
                assert after[name] == before[name], name
            for tenant, key in tenant_keys.items():
                for cid in created[tenant]:
                    events = await replay(http, base, key, cid, event_counts[cid])
                    assert events == events_before[cid], cid
                    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
            # Keys made on the SQLite side keep working; the revoked one stays revoked.
            acme_headers = {"X-API-KEY": tenant_keys["acme"]}
            feed = ok(http.get(f"{COLLECTION}/feed", headers=acme_headers))
            assert feed["totalCount"] == 3
            assert (
                http.get(f"{COLLECTION}/feed", headers={"X-API-KEY": revoked_key}).status_code
                == 401
            )
            # And the moved data keeps going: sequences and positions continue.
            cid = created["acme"][1]
            url = ok(http.get(f"{COLLECTION}/{cid}/websocket-url", headers=acme_headers))[
                "websocketUrl"
            ]
            async with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
                added = ok(
                    http.post(
                        f"{COLLECTION}/{cid}/messages",
                        headers=acme_headers,
                        json={"message": "moved"},
                    )
                )
                event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert event["sequence"] == event_counts[cid] + 1
            assert event["data"]["id"] == added["messageId"]
            conversation = ok(http.get(f"{COLLECTION}/{cid}", headers=acme_headers))
            assert conversation["messages"][-1]["message"] == "moved"
            assert len(conversation["messages"]) == 8
            # A bearer user of a moved conversation sees it as before.
            owner = created["acme:users"][0]
            as_owner = {"Authorization": f"Bearer {mint_jwt(owner, 'acme')}"}
            assert ok(http.get(f"{COLLECTION}/{cid}", headers=as_owner))["conversationId"] == cid


def summary_rows(stdout: str) -> dict[str, tuple[int, int]]:
    """kind -> (in file, added) from the import's summary table."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1].isdigit():
            rows[parts[0]] = (int(parts[1]), int(parts[2]))
    return rows


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"kind":"header","format":"something-else","version":1}\n', "format"),
        ('{"kind":"header","format":"airia-export","version":2}\n', "version 2"),
        ('{"kind":"conversation","id":"x"}\n', "not a header"),
        ("not json at all\n", "not JSON"),
        ("", "empty"),
    ],
)
def test_import_refuses_a_file_that_is_not_a_version_1_export(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    target = tmp_path / "target.db"
    result = run_cli(server_env(f"sqlite:///{target}"), "import", str(path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("airia-server: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert says in result.stderr
    assert result.stdout == ""
    assert not target.exists(), "a refused file does not touch the database"


def test_import_of_a_truncated_file_says_so_and_can_be_rerun(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    env = server_env(source)
    made = run_cli(env, "keys", "create", "--tenant", "t1")
    assert made.returncode == 0, made.stderr
    exported = run_cli(env, "export")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert len(lines) == 3  # header, the key, end
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:2]) + "\n")
    target_env = server_env(f"sqlite:///{tmp_path / 'target.db'}")
    partial = run_cli(target_env, "import", str(cut))
    assert partial.returncode == 1
    assert "truncated" in partial.stderr
    whole = tmp_path / "whole.jsonl"
    whole.write_text(exported.stdout)
    again = run_cli(target_env, "import", str(whole))
    assert again.returncode == 0, again.stderr
    assert summary_rows(again.stdout)["api_key"] == (1, 0)
