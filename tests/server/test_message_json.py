"""A conversation's GET carries its newest messages as JSON that SQLite builds
(`WIRE_MESSAGE_JSON`); it must be, byte for byte, what `messages_json` encodes from
the same rows, as PostgreSQL's answer is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sqlite_files
from airia_server.storage.rows import WIRE_MESSAGE_COLUMNS, messages_json
from airia_server.storage.sqlite import SqliteStore

TEXTS = [
    "plain",
    'a "quote" and a \\ backslash',
    "new\nline\ttab\rreturn",
    "control \x01\x1f\x7f",
    "unicode é 中文 😀",
    "\u2028\u2029",
    "</script>",
    "",
    None,
]


async def test_sqlite_builds_the_same_bytes_as_the_encoder(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    await store.start()
    try:
        with sqlite_files.connect(store.path) as conn:
            for i, text in enumerate(TEXTS, start=1):
                conn.execute(
                    "INSERT INTO messages (conversation_id, position, id, user_id, role, "
                    "message, images, image_attachment_ids, created_at, updated_at) "
                    "VALUES ('c1', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        i,
                        f"m{i}",
                        None if i % 2 else f"user {i}",
                        "assistant" if i % 3 == 0 else "user",
                        text,
                        '["https://example.com/a.png","b"]' if i == 2 else None,
                        '["att-1"]' if i == 3 else None,
                        f"2026-11-26T12:00:0{i}.000000Z",
                        f"2026-11-26T12:00:0{i}.500000Z",
                    ),
                )
            rows = conn.execute(
                f"SELECT {WIRE_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = 'c1' "
                "ORDER BY position DESC LIMIT 5"
            ).fetchall()

        built = await store.recent_messages_json("c1", 5)

        assert built == messages_json(rows)
        decoded = json.loads(built)
        assert [m["id"] for m in decoded] == ["m5", "m6", "m7", "m8", "m9"]
        assert decoded[-1]["message"] is None and decoded[0]["message"] == TEXTS[4]
        everything = json.loads(await store.recent_messages_json("c1", 100))
        assert everything[1]["images"] == ["https://example.com/a.png", "b"]
        assert everything[2]["imageAttachmentIds"] == ["att-1"]
        assert await store.recent_messages_json("nothing here", 5) == b"[]"
    finally:
        await store.close()


async def test_without_json_functions_the_rows_are_encoded_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airia_server.storage import sqlite_messages

    store = SqliteStore(tmp_path / "m.db")
    await store.start()
    try:
        with sqlite_files.connect(store.path) as conn:
            conn.execute(
                "INSERT INTO messages (conversation_id, position, id, role, message, images, "
                "created_at, updated_at) VALUES ('c1', 1, 'm1', 'user', 'hi', '[\"x\"]', 't', 't')"
            )
            conn.execute(
                "INSERT INTO messages (conversation_id, position, id, role, message, "
                "created_at, updated_at) VALUES ('c1', 2, 'm2', 'user', 'there', 't', 't')"
            )
        expected = await store.recent_messages_json("c1", 5)
        newest = await store.recent_messages_json("c1", 5, 5)
        # As an SQLite built without its JSON functions would answer.
        monkeypatch.setattr(
            sqlite_messages,
            "_RECENT_MESSAGES_JSON",
            sqlite_messages._RECENT_MESSAGES_JSON.replace("json_object(", "no_such_function(", 1),
        )
        assert await store.recent_messages_json("c1", 5) == expected
        assert await store.recent_messages_json("c1", 5, 5) == newest
        assert json.loads(expected)[0]["images"] == ["x"]
        assert [m["id"] for m in json.loads(newest)] == ["m2"]
    finally:
        await store.close()
