"""Moving a deployment from the embedded SQLite to PostgreSQL with `export` and `import`.

A real server on SQLite (blobs in a directory) is populated over HTTP (three tenants,
messages, a truncation, shares and role changes, read positions, updates, external
identities, multipart uploads, one referenced from a message, a deletion), then stopped; its
database is exported, imported twice into a fresh PostgreSQL database (blobs in the
database), and a real server on PostgreSQL must answer every read exactly as the SQLite one
did: conversations, message pages, participants, feeds with unread counts, identities and
the look-up by triple, attachment lists, the stored event log replayed over a WebSocket, an
API key created on the SQLite side, and every attachment downloaded byte for byte through
the PostgreSQL server's own signed link.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect

import backends
import sqlite_files

from .support import (
    BOOTSTRAP_KEY,
    JWT_SECRET,
    clean_env,
    mint_jwt,
    run_cli,
    running_server,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
LOOKUP = f"{COLLECTION}/external-identities/lookup"
TIMEOUT = 10.0
KINDS = (
    "api_key",
    "tenant_setting",
    "conversation",
    "participant",
    "message",
    "read_position",
    "event",
    "external_identity",
    "attachment",
    "blob",
)


def server_env(database_url: str, root: Path) -> dict[str, str]:
    """The settings of the CLI over `database_url`, as `running_server(root, ...)` gives a
    server; a filesystem blob store (the default on SQLite) lives in `root`/blobs, never in
    the working directory."""
    return clean_env(
        AIRIA_DATABASE_URL=database_url,
        AIRIA_BLOB_DIR=str(root / "blobs"),
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


def upload(http: httpx.Client, headers: dict[str, str], cid: str, name: str, data: bytes) -> dict:
    content_type = "image/png" if name.endswith(".png") else "application/octet-stream"
    return ok(
        http.post(
            f"{COLLECTION}/{cid}/agent-attachments",
            headers=headers,
            files={"file": (name, data, content_type)},
        )
    )


def populate(http: httpx.Client, tenants: dict[str, str]) -> dict[str, Any]:
    """Conversations of every tenant, exercising every kind of stored state: their ids (per
    tenant), users, identity triples, and every uploaded file's bytes by attachment id."""
    created: dict[str, Any] = {"files": {}, "gone_blobs": set()}
    shared = b"the same content in every tenant, twice in each\n" * 200
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
            # External identities: a Slack thread on every conversation, a Teams one on the first.
            wanted = [("Slack", f"C{tenant.upper()}01", f"17000000{i}.{uuid.uuid4().hex[:6]}")]
            if i == 0:
                wanted.append(("Teams", f"19:{tenant}@thread.tacv2", f"root-{i}"))
            for system, channel, thread in wanted:
                triple = {
                    "externalSystem": system,
                    "externalChannelId": channel,
                    "externalThreadId": thread,
                }
                made = http.post(
                    f"{COLLECTION}/{cid}/external-identities", headers=headers, json=triple
                )
                assert made.status_code == 201, made.text
                created.setdefault(f"{tenant}:triples", []).append(triple)
            # Attachments (multipart): a text file each; the content shared by every tenant on
            # the first and last (stored once per tenant); on the middle one an empty file and
            # a random 1.3 MB image (several blob-store chunks), referenced by a message.
            files = [(f"notes {i} é✓.txt", f"{tenant} notes {i}\n".encode() * 50)]
            if i in (0, 2):
                files.append((f"shared-{i}.bin", shared))
            if i == 1:
                files += [("empty.txt", b""), ("photo.png", os.urandom(1_300_000 + len(tenant)))]
            for name, data in files:
                attachment = upload(http, headers, cid, name, data)
                assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
                created["files"][attachment["blobId"]] = (tenant, data)
            if i == 1:
                ok(
                    http.post(
                        f"{COLLECTION}/{cid}/messages",
                        headers=headers,
                        json={
                            "message": "look at this",
                            "userId": owner,
                            "imageAttachmentIds": [attachment["blobId"]],
                        },
                    )
                )
        # A deleted conversation leaves nothing behind to move: not even its files' blobs.
        gone = ok(http.post(COLLECTION, headers=headers, json={"userId": owner, "title": "gone"}))
        ok(
            http.post(
                f"{COLLECTION}/{gone['conversationId']}/messages",
                headers=headers,
                json={"message": "soon gone", "userId": owner},
            )
        )
        gone_file = upload(
            http, headers, gone["conversationId"], "gone.bin", f"gone {uuid.uuid4()}".encode()
        )
        created["gone_blobs"].add((tenant, gone_file["sha256"]))
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
        for triple in created[f"{tenant}:triples"]:
            key = "lookup:" + tenant + ":" + "/".join(triple.values())
            seen[key] = ok(http.get(LOOKUP, headers=headers, params=triple))
        for cid in created[tenant]:
            seen[cid] = ok(http.get(f"{COLLECTION}/{cid}", headers=headers))
            seen[f"identities:{cid}"] = ok(
                http.get(f"{COLLECTION}/{cid}/external-identities", headers=headers)
            )
            # `url` is signed by (and points at) one server: compared by downloading it.
            seen[f"attachments:{cid}"] = [
                {k: v for k, v in attachment.items() if k != "url"}
                for attachment in ok(http.get(f"{COLLECTION}/{cid}/attachments", headers=headers))
            ]
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


def downloads(http: httpx.Client, tenants: dict[str, str], created: dict) -> dict[str, bytes]:
    """Every attachment's bytes, through the signed link this server lists it with."""
    got = {}
    with httpx.Client(timeout=TIMEOUT) as anonymous:  # a link needs no credentials
        for tenant, key in tenants.items():
            for cid in created[tenant]:
                listed = ok(http.get(f"{COLLECTION}/{cid}/attachments", headers={"X-API-KEY": key}))
                for attachment in listed:
                    assert urlsplit(attachment["url"]).netloc == urlsplit(str(http.base_url)).netloc
                    response = anonymous.get(attachment["url"])
                    assert response.status_code == 200, (attachment, response.text)
                    assert response.headers["etag"] == f'"{attachment["sha256"]}"'
                    got[attachment["blobId"]] = response.content
    return got


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
    source_env = server_env(sqlite_url, tmp_path)
    tenant_keys = {"default": BOOTSTRAP_KEY}
    for tenant in ("acme", "beta"):
        made = run_cli(source_env, "keys", "create", "--tenant", tenant, "--name", f"{tenant} bot")
        assert made.returncode == 0, made.stderr
        tenant_keys[tenant] = made.stdout.strip().splitlines()[-1]
    revoked = run_cli(source_env, "keys", "create", "--tenant", "acme", "--name", "old")
    revoked_key = revoked.stdout.strip().splitlines()[-1]
    revoked_id = revoked.stdout.split()[3]
    assert run_cli(source_env, "keys", "revoke", revoked_id).returncode == 0

    with running_server(tmp_path, database_url=sqlite_url, name="sqlite") as server:
        with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as http:
            created = populate(http, tenant_keys)
            before = snapshot(http, tenant_keys, created)
            downloaded = downloads(http, tenant_keys, created)
            assert downloaded == {k: data for k, (_, data) in created["files"].items()}
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
                    events_before[cid] = await replay(
                        http, server.base_url, key, cid, event_counts[cid]
                    )

    # Retention policies move too (version 3): without them, a tenant kept for ever
    # would fall back to AIRIA_RETENTION_DAYS on the target.
    for args in (["--days", "30"], ["--forever"]):
        tenant = "acme" if args[0] == "--days" else "beta"
        policy = run_cli(source_env, "retention", "set", "--tenant", tenant, *args)
        assert policy.returncode == 0, policy.stderr

    # The export of the stopped source: header first, end last, nothing but hashes of keys.
    export_path = tmp_path / "airia.jsonl"
    exported = run_cli(source_env, "export", "--output", str(export_path))
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == "", "nothing extra on stderr when it is not a terminal"
    lines = read_export(export_path)
    assert lines[0]["kind"] == "header"
    assert (lines[0]["format"], lines[0]["version"]) == ("airia-export", 3)
    assert lines[0]["exportedAt"].endswith("Z")
    assert lines[-1]["kind"] == "end"
    text = export_path.read_text()
    for key in [*tenant_keys.values(), revoked_key]:
        assert key not in text, "no plaintext key is ever exported"
    kinds = [line["kind"] for line in lines[1:-1]]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert lines[-1]["counts"] == {k: counts.get(k, 0) for k in KINDS}
    assert counts["conversation"] == 9 and counts["api_key"] == 3
    policies = {
        line["tenantId"]: line["retentionDays"]
        for line in lines
        if line["kind"] == "tenant_setting"
    }
    assert policies == {"acme": 30, "beta": None}
    assert (counts["external_identity"], counts["attachment"]) == (12, 21)
    # One blob per tenant and content that an exported attachment references, with its bytes;
    # idempotency keys never (none of these kinds is one).
    assert set(counts) <= set(KINDS)
    blob_lines = [line for line in lines if line["kind"] == "blob"]
    assert kinds[-len(blob_lines) :] == ["blob"] * len(blob_lines), "blobs after attachments"
    files = created["files"]
    wanted_blobs = {(t, hashlib.sha256(data).hexdigest()) for t, data in files.values()}
    assert len(wanted_blobs) == 18
    assert {(b["tenantId"], b["sha256"]) for b in blob_lines} == wanted_blobs
    assert len(blob_lines) == len(wanted_blobs)
    assert not wanted_blobs & created["gone_blobs"]
    contents = {(t, sha_of(data)): data for t, data in files.values()}
    for blob in blob_lines:
        data = base64.b64decode(blob["content"], validate=True)
        assert data == contents[(blob["tenantId"], blob["sha256"])]
        assert blob["size"] == len(data)
        assert blob["createdAt"] <= blob["lastUsedAt"]
    conversations = {line["id"]: line for line in lines if line["kind"] == "conversation"}
    assert set(conversations) == {cid for t in tenant_keys for cid in created[t]}
    truncated = conversations[created["default"][1]]
    # 7 after the cut (8 made, 2 cut, 1 more), then the message referencing the image.
    assert (truncated["messageCount"], truncated["messageSeq"]) == (8, 10), truncated
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
    assert {x["tenantId"] for x in acme if "tenantId" in x} == {"acme"}
    assert {x["kind"] for x in acme if "tenantId" in x} == {
        "api_key",
        "tenant_setting",
        "conversation",
        "participant",
        "external_identity",
        "attachment",
        "blob",
    }
    assert {x["conversationId"] for x in acme if "conversationId" in x} == acme_ids
    assert {x["sha256"] for x in acme if x["kind"] == "blob"} == {
        sha for t, sha in wanted_blobs if t == "acme"
    }
    assert acme[-1]["counts"]["blob"] == 6

    # Import twice into PostgreSQL: the second adds nothing and changes nothing.
    target_env = server_env(postgres_url, tmp_path / "target")
    first = run_cli(target_env, "import", str(export_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"imported {export_path} into {postgres_url}:\n")
    added_first = summary_rows(first.stdout)
    assert added_first["conversation"] == (9, 9)
    assert added_first["external_identity"] == (12, 12)
    assert added_first["attachment"] == (21, 21)
    assert added_first["blob"] == (18, 18)
    assert all(read == added for read, added in added_first.values())
    shown = run_cli(target_env, "retention", "show")
    assert "acme: 30" in shown.stdout and "beta: for ever" in shown.stdout, shown.stdout
    second = run_cli(target_env, "import", str(export_path))
    assert second.returncode == 0, second.stderr
    assert all(added == 0 for _, added in summary_rows(second.stdout).values())
    assert {k: v[0] for k, v in summary_rows(second.stdout).items()} == lines[-1]["counts"]
    reexported = run_cli(target_env, "export")
    assert reexported.returncode == 0, reexported.stderr
    assert [json.loads(x) for x in reexported.stdout.splitlines()][1:] == lines[1:], (
        "PostgreSQL holds exactly what SQLite held, blob bytes included"
    )
    assert not (tmp_path / "target" / "blobs").exists(), "on PostgreSQL, blobs are in the database"

    with running_server(tmp_path / "target", database_url=postgres_url, name="postgres") as server:
        with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as http:
            after = snapshot(http, tenant_keys, created)
            assert after.keys() == before.keys()
            for name in before:
                assert after[name] == before[name], name
            assert any(name.startswith("lookup:") for name in after)
            # Every file, byte for byte, through the PostgreSQL server's own fresh links.
            assert downloads(http, tenant_keys, created) == downloaded
            for tenant, key in tenant_keys.items():
                for cid in created[tenant]:
                    events = await replay(http, server.base_url, key, cid, event_counts[cid])
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
            assert len(conversation["messages"]) == 9
            # Moved attachments are what new messages reference, and moved content is reused.
            photo_id, (_, photo) = next(
                (k, v) for k, v in created["files"].items() if v[0] == "acme" and len(v[1]) > 10**6
            )
            ok(
                http.post(
                    f"{COLLECTION}/{cid}/messages",
                    headers=acme_headers,
                    json={"message": "again", "imageAttachmentIds": [photo_id]},
                )
            )
            again = upload(http, acme_headers, cid, "again.png", photo)
            assert again["sha256"] == sha_of(photo) and again["blobId"] != photo_id
            with httpx.Client(timeout=TIMEOUT) as anonymous:
                assert anonymous.get(again["url"]).content == photo
            # A bearer user of a moved conversation sees it as before.
            owner = created["acme:users"][0]
            as_owner = {"Authorization": f"Bearer {mint_jwt(owner, 'acme')}"}
            assert ok(http.get(f"{COLLECTION}/{cid}", headers=as_owner))["conversationId"] == cid


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        ('{"kind":"header","format":"airia-export","version":4}\n', "version 4"),
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
    result = run_cli(server_env(f"sqlite:///{target}", tmp_path), "import", str(path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("airia-server: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert says in result.stderr
    assert result.stdout == ""
    assert not target.exists(), "a refused file does not touch the database"


def test_import_of_a_truncated_file_says_so_and_can_be_rerun(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    env = server_env(source, tmp_path)
    made = run_cli(env, "keys", "create", "--tenant", "t1")
    assert made.returncode == 0, made.stderr
    exported = run_cli(env, "export")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert len(lines) == 3  # header, the key, end
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:2]) + "\n")
    target_env = server_env(f"sqlite:///{tmp_path / 'target.db'}", tmp_path / "target")
    partial = run_cli(target_env, "import", str(cut))
    assert partial.returncode == 1
    assert "truncated" in partial.stderr
    whole = tmp_path / "whole.jsonl"
    whole.write_text(exported.stdout)
    again = run_cli(target_env, "import", str(whole))
    assert again.returncode == 0, again.stderr
    assert summary_rows(again.stdout)["api_key"] == (1, 0)


def test_an_import_cut_mid_line_keeps_a_whole_prefix_and_counts_right(tmp_path: Path) -> None:
    """A file cut at any byte (or damaged there) imports every line before the cut, and
    no more: parents before children, so no message, participant or event without its
    conversation; exit 1, saying where. The summary's 'added' counts the rows the file
    put in, not the rows the feed counters' triggers touched as well."""

    source = f"sqlite:///{tmp_path / 'source.db'}"
    with running_server(tmp_path / "source", database_url=source) as server:
        with server.client() as http:
            for i in range(30):
                made = http.post(COLLECTION, json={"userId": f"u{i % 3}"}, headers=server.headers())
                cid = made.json()["conversationId"]
                for j in range(20):
                    sent = http.post(
                        f"{COLLECTION}/{cid}/messages",
                        json={"message": f"m{j}"},
                        headers=server.headers(),
                    )
                    assert sent.status_code == 201, sent.text
    exported = run_cli(server_env(source, tmp_path), "export")
    assert exported.returncode == 0, exported.stderr
    data = exported.stdout.encode()
    cut_at = len(data) * 2 // 3
    while data[cut_at - 1 : cut_at] == b"\n":
        cut_at -= 1  # inside a line
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[:cut_at])
    target = tmp_path / "target.db"
    target_env = server_env(f"sqlite:///{target}", tmp_path / "target")
    partial = run_cli(target_env, "import", str(cut))
    assert partial.returncode == 1, (partial.stdout, partial.stderr)
    cut_line = data[:cut_at].count(b"\n") + 1  # lines number from 1
    assert f"{cut}:{cut_line}:" in partial.stderr
    assert "every line before it is imported" in partial.stderr
    rows = summary_rows(partial.stdout)
    assert all(added == read for read, added in rows.values()), rows
    with sqlite_files.connect(target) as conn:
        for table in ("messages", "conversation_participants", "conversation_events"):
            orphans = conn.execute(
                f"SELECT count(*) FROM {table} WHERE conversation_id NOT IN "
                "(SELECT id FROM conversations)"
            ).fetchone()[0]
            assert orphans == 0, table
        stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert stored == rows["message"][0] > 0
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(data)
    again = run_cli(target_env, "import", str(whole))
    assert again.returncode == 0, again.stderr
    assert summary_rows(again.stdout)["message"] == (600, 600 - stored)


@pytest.mark.parametrize(
    ("field", "value"), [("role", "banana"), ("createdAt", "yesterday")], ids=["role", "time"]
)
def test_an_import_stops_at_a_line_with_a_value_the_server_never_writes(
    tmp_path: Path, field: str, value: str
) -> None:
    """Such a line was stored and served back as it was; it is damage, like a line cut
    short: the lines before it are imported, and the exit code is 1."""

    source = f"sqlite:///{tmp_path / 'source.db'}"
    with running_server(tmp_path / "source", database_url=source) as server:
        with server.client() as http:
            made = http.post(COLLECTION, json={"userId": "u"}, headers=server.headers())
            cid = made.json()["conversationId"]
            for text in ("first", "second"):
                sent = http.post(
                    f"{COLLECTION}/{cid}/messages", json={"message": text}, headers=server.headers()
                )
                assert sent.status_code == 201, sent.text
    exported = run_cli(server_env(source, tmp_path), "export")
    lines = exported.stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    (bad,) = [n for n, row in enumerate(rows) if row.get("message") == "second"]
    damaged = json.loads(lines[bad])
    damaged[field] = value
    lines[bad] = json.dumps(damaged)
    path = tmp_path / "damaged.jsonl"
    path.write_text("\n".join(lines) + "\n")
    target = tmp_path / "target.db"
    result = run_cli(server_env(f"sqlite:///{target}", tmp_path / "target"), "import", str(path))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"{path}:{bad + 1}:" in result.stderr and field in result.stderr
    with sqlite_files.connect(target) as conn:
        stored = [row[0] for row in conn.execute("SELECT message FROM messages")]
    assert stored == ["first"]


@pytest.mark.parametrize("days", ["0", "-3", "1000001", "99999999999999999999"])
def test_a_retention_policy_out_of_range_is_refused(
    tmp_path: Path, target_url: str, days: str
) -> None:
    """From 1 to 1,000,000 days, or --forever. A number beyond what the column holds was
    a traceback (SQLite) and stored nothing; the answer is now a usage error."""
    env = server_env(target_url, tmp_path)
    result = run_cli(env, "retention", "set", "--tenant", "t1", "--days", days)
    assert (result.returncode, result.stdout) == (2, "")
    assert "--days must be from 1 to 1,000,000" in result.stderr
    assert "Traceback" not in result.stderr
    assert "t1" not in run_cli(env, "retention", "show").stdout
    most = run_cli(env, "retention", "set", "--tenant", "t1", "--days", "1000000")
    assert most.returncode == 0, most.stderr


def blob_line(tenant: str, sha256: str, size: int, content: bytes) -> str:
    return json.dumps(
        {
            "kind": "blob",
            "tenantId": tenant,
            "sha256": sha256,
            "size": size,
            "createdAt": "2025-01-02T03:04:05.000000Z",
            "lastUsedAt": "2025-01-02T03:04:05.000000Z",
            "content": base64.b64encode(content).decode(),
        }
    )


def test_import_refuses_a_blob_whose_bytes_do_not_match_its_hash(tmp_path: Path) -> None:
    real = b"the real bytes of a file"
    sha = sha_of(real)
    header = json.dumps(
        {
            "kind": "header",
            "format": "airia-export",
            "version": 2,
            "exportedAt": "2025-01-02T03:04:05.000000Z",
        }
    )
    end = json.dumps({"kind": "end", "counts": {"blob": 1}})
    target_env = server_env(f"sqlite:///{tmp_path / 'target.db'}", tmp_path)
    blob_dir = tmp_path / "blobs"
    for name, line in [
        ("tampered", blob_line("t1", sha, len(real), b"the fake bytes of a file")),
        ("short", blob_line("t1", sha, len(real), real[:-1])),
        ("not a hash", blob_line("t1", "../" * 10 + "etc", len(real), real)),
    ]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(f"{header}\n{line}\n{end}\n")
        refused = run_cli(target_env, "import", str(path))
        assert refused.returncode == 2, (name, refused.stdout, refused.stderr)
        assert refused.stderr.startswith(f"airia-server: {path}:2: blob "), refused.stderr
        assert "does not match its sha256" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert not [p for p in blob_dir.rglob("*") if p.is_file()], "nothing stored"

    good = tmp_path / "good.jsonl"
    good.write_text(f"{header}\n{blob_line('t1', sha, len(real), real)}\n{end}\n")
    first = run_cli(target_env, "import", str(good))
    assert first.returncode == 0, first.stderr
    assert summary_rows(first.stdout)["blob"] == (1, 1)
    stored = [p for p in blob_dir.rglob(sha) if p.is_file()]
    assert len(stored) == 1 and stored[0].read_bytes() == real
    again = run_cli(target_env, "import", str(good))
    assert again.returncode == 0, again.stderr
    assert summary_rows(again.stdout)["blob"] == (1, 0)


def test_a_version_1_export_still_imports(tmp_path: Path) -> None:
    """Files written before identities, attachments and blobs were exported."""
    path = tmp_path / "v1.jsonl"
    key = {
        "kind": "api_key",
        "id": "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e",
        "tenantId": "t1",
        "name": "old",
        "prefix": "ak_old",
        "keyHash": "0" * 64,
        "createdAt": "2025-01-02T03:04:05.000000Z",
        "revokedAt": None,
    }
    version_1_kinds = ("api_key", "conversation", "participant", "message", "read_position")
    counts = dict.fromkeys((*version_1_kinds, "event"), 0) | {"api_key": 1}
    path.write_text(
        json.dumps({"kind": "header", "format": "airia-export", "version": 1, "exportedAt": "x"})
        + "\n"
        + json.dumps(key)
        + "\n"
        + json.dumps({"kind": "end", "counts": counts})
        + "\n"
    )
    result = run_cli(server_env(f"sqlite:///{tmp_path / 't.db'}", tmp_path), "import", str(path))
    assert result.returncode == 0, result.stderr
    rows = summary_rows(result.stdout)
    assert rows["api_key"] == (1, 1)
    assert rows["blob"] == (0, 0)


def test_export_stops_at_a_blob_the_blob_store_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    headers = {"X-API-KEY": BOOTSTRAP_KEY}
    with running_server(tmp_path, database_url=url, name="source") as server:
        with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as http:
            cid = ok(http.post(COLLECTION, headers=headers, json={"userId": "u1"}))[
                "conversationId"
            ]
            kept = upload(http, headers, cid, "kept.bin", b"kept bytes")
            lost = upload(http, headers, cid, "lost.bin", b"lost bytes")
    env = server_env(url, tmp_path)
    whole = run_cli(env, "export")
    assert whole.returncode == 0, whole.stderr
    exported = [json.loads(x) for x in whole.stdout.splitlines()]
    assert sorted(x["sha256"] for x in exported if x["kind"] == "blob") == sorted(
        [kept["sha256"], lost["sha256"]]
    )
    for path in (tmp_path / "blobs").rglob(lost["sha256"]):
        path.unlink()
    output = tmp_path / "out.jsonl"
    failed = run_cli(env, "export", "--output", str(output))
    assert failed.returncode == 2, (failed.stdout, failed.stderr)
    assert failed.stderr.startswith("airia-server: export failed: blob ")
    assert lost["sha256"] in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert not output.exists() and not Path(f"{output}.partial").exists()


STAMP = "2025-01-02T03:04:05.000000Z"
CONTENT = b"seventeen bytes!\n"


def hand_made_export(tenant: str = "t1") -> list[dict]:
    """A conversation with a message and an attachment, and the attachment's blob, as an
    export writes them (blobs last)."""
    cid = str(uuid.uuid4())
    return [
        {"kind": "header", "format": "airia-export", "version": 3, "exportedAt": STAMP},
        {
            "kind": "conversation",
            "id": cid,
            "tenantId": tenant,
            "userId": "u1",
            "title": None,
            "deploymentId": "d",
            "dataSourceFiles": {},
            "isBookmarked": False,
            "lastExecutionStatus": None,
            "lastExecutionId": None,
            "messageCount": 1,
            "messageSeq": 1,
            "lastSequence": 0,
            "createdAt": STAMP,
            "updatedAt": STAMP,
        },
        {
            "kind": "message",
            "conversationId": cid,
            "position": 1,
            "id": str(uuid.uuid4()),
            "userId": "u1",
            "role": "user",
            "message": "hi",
            "images": None,
            "imageAttachmentIds": None,
            "createdAt": STAMP,
            "updatedAt": STAMP,
        },
        {
            "kind": "attachment",
            "conversationId": cid,
            "id": str(uuid.uuid4()),
            "tenantId": tenant,
            "sha256": sha_of(CONTENT),
            "fileName": "a.txt",
            "contentType": "text/plain",
            "size": len(CONTENT),
            "source": "user",
            "createdAt": STAMP,
        },
        json.loads(blob_line(tenant, sha_of(CONTENT), len(CONTENT), CONTENT)),
    ]


def _with_end(rows: list[dict]) -> str:
    counts = dict.fromkeys(KINDS, 0)
    for row in rows[1:]:
        counts[row["kind"]] += 1
    lines = [json.dumps(row) for row in rows]
    return "\n".join([*lines, json.dumps({"kind": "end", "counts": counts})]) + "\n"


@pytest.fixture(params=["sqlite", "postgres"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'target.db'}"
        return
    yield request.getfixturevalue("postgres_url")


def stored(url: str, table: str) -> int:
    sql = f"SELECT count(*) FROM {table}"
    if url.startswith("sqlite"):
        with sqlite_files.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchone()[0]
    return backends.fetch_sync(url, sql)[0]


def _attachment_size(rows: list[dict], size: int) -> int:
    rows[3]["size"] = size
    return 4  # its line


def _message_of_no_conversation(rows: list[dict]) -> int:
    rows[2]["conversationId"] = str(uuid.uuid4())
    return 3


def _attachment_of_another_tenant(rows: list[dict]) -> int:
    rows[3]["tenantId"] = "t2"
    return 4


def _attachment_without_its_blob(rows: list[dict]) -> int:
    del rows[4]
    return 4


BIGINT_MAX = 2**63 - 1


def _counter(rows: list[dict], name: str, value: int) -> int:
    rows[1][name] = value
    return 2


def _retention(rows: list[dict], days: int) -> int:
    rows.insert(1, {"kind": "tenant_setting", "tenantId": "t1", "retentionDays": days})
    return 2


def _message_position(rows: list[dict], position: int) -> int:
    rows[2]["position"] = position
    return 3


def _event(rows: list[dict], sequence: int) -> int:
    """An event after the message, the conversation's lastSequence 1."""
    rows[1]["lastSequence"] = 1
    event = {"conversationId": rows[1]["id"], "sequence": sequence, "type": "message.created"}
    rows.insert(3, {"kind": "event", **event, "data": {}, "createdAt": STAMP})
    return 4


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda rows: _attachment_size(rows, 100), "its size (100) is not its blob's (17"),
        (lambda rows: _attachment_size(rows, -5), ">= 0"),
        (_message_of_no_conversation, "neither in the file before it nor in the database"),
        (_attachment_of_another_tenant, "is of tenant 't1'"),
        (_attachment_without_its_blob, "neither in the file nor in the database"),
        (lambda rows: _message_position(rows, 9), "above its conversation"),
        (lambda rows: _event(rows, 9), "above its conversation"),
        (lambda rows: _message_position(rows, BIGINT_MAX + 1), "position"),
        (lambda rows: _event(rows, BIGINT_MAX + 1), "sequence"),
        (lambda rows: _counter(rows, "messageSeq", BIGINT_MAX), "messageSeq"),
        (lambda rows: _counter(rows, "lastSequence", BIGINT_MAX), "lastSequence"),
        (lambda rows: _counter(rows, "messageCount", BIGINT_MAX), "messageCount"),
        (lambda rows: _counter(rows, "lastSequence", -1), "lastSequence"),
        (lambda rows: _retention(rows, 10**12), "retentionDays"),
    ],
    ids=[
        "size-differs",
        "size-negative",
        "orphan-message",
        "other-tenant",
        "no-blob",
        "message-above-seq",
        "event-above-sequence",
        "position-overflows",
        "sequence-overflows",
        "message-seq-full",
        "last-sequence-full",
        "message-count-full",
        "last-sequence-negative",
        "retention-overflows",
    ],
)
def test_an_import_stops_at_a_line_whose_references_or_sizes_would_break_the_server(
    tmp_path: Path, target_url: str, damage, says: str
) -> None:
    """Each was imported (exit 0) and stored: an attachment whose Content-Length was not
    its blob's size (or negative), a message without its conversation, a message or event
    above its conversation's counter or a counter with no room left (the server's next
    write was a 500). A number beyond a bigint was a traceback on SQLite, and so was a
    retention in days beyond what a policy can name. It is damage,
    like a line that does not decode: the import stops there, naming the line (exit 1),
    and stores nothing of it."""
    rows = hand_made_export()
    line = damage(rows)
    path = tmp_path / "damaged.jsonl"
    path.write_text(_with_end(rows))
    result = run_cli(server_env(target_url, tmp_path), "import", str(path))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"airia-server: {path}:{line}: " in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr
    assert stored(target_url, "attachments") == 0
    assert stored(target_url, "conversations") == (0 if line == 2 else 1)  # the lines before it
    assert stored(target_url, "messages") == (0 if line <= 3 else 1)
    assert stored(target_url, "conversation_events") == 0


def test_an_import_checks_positions_against_the_counters_the_target_keeps(
    tmp_path: Path, target_url: str
) -> None:
    """A conversation the target has already keeps its row: a later file's messages are
    checked against the stored messageSeq, whether the file has the conversation's line
    (with higher counters, which the insert ignores) or not."""
    rows = hand_made_export()
    first = tmp_path / "first.jsonl"
    first.write_text(_with_end(rows))
    env = server_env(target_url, tmp_path)
    assert run_cli(env, "import", str(first)).returncode == 0
    later = {**rows[2], "id": str(uuid.uuid4()), "position": 2}
    for name, lines in [
        ("with-conversation", [rows[0], {**rows[1], "messageSeq": 2, "messageCount": 2}, later]),
        ("without-conversation", [rows[0], later]),
    ]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(_with_end(lines))
        result = run_cli(env, "import", str(path))
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert f"{path}:{len(lines)}: message at position 2: above" in result.stderr
        assert "messageSeq (1)" in result.stderr and "Traceback" not in result.stderr
    assert stored(target_url, "messages") == 1


def test_an_attachment_waits_for_its_blob_and_imports_with_it(
    tmp_path: Path, target_url: str
) -> None:
    path = tmp_path / "whole.jsonl"
    path.write_text(_with_end(hand_made_export()))
    env = server_env(target_url, tmp_path)
    for added in (1, 0):
        result = run_cli(env, "import", str(path))
        assert result.returncode == 0, result.stderr
        rows = summary_rows(result.stdout)
        assert rows["attachment"] == (1, added) and rows["blob"] == (1, added)
        assert rows["message"] == (1, added)
    assert stored(target_url, "attachments") == 1
