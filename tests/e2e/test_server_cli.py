"""`airia-server` as an operator runs it: migrate, API keys, development tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

import backends
import sqlite_files
from airia_server.storage import LATEST_MIGRATION

from .support import JWT_SECRET, clean_env, run_cli, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(AIRIA_DATABASE_URL=f"sqlite:///{tmp_path / 'db' / 'cli.db'}")


def db_path(env: dict[str, str]) -> Path:
    return Path(env["AIRIA_DATABASE_URL"].removeprefix("sqlite:///"))


def ok(env: dict[str, str], *args: str) -> list[str]:
    result = run_cli(env, *args)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout.splitlines()


def test_migrate_applies_then_is_up_to_date(env: dict[str, str]) -> None:
    first = ok(env, "migrate")
    assert any("applied migrations" in line for line in first), first
    assert db_path(env).exists()
    second = ok(env, "migrate")
    assert second == ["database is up to date"]

    with sqlite_files.connect(db_path(env)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert {"conversations", "api_keys", "schema_migrations"} <= tables
    assert versions == sorted(set(versions)) and versions[0] == 1


def test_keys_create_prints_the_key_last(env: dict[str, str]) -> None:
    lines = ok(env, "keys", "create", "--tenant", "acme", "--name", "ci")
    key = lines[-1]
    assert key.startswith("ak_")
    assert len(key) >= 43
    assert key.strip() == key and " " not in key
    assert any("acme" in line for line in lines[:-1])


def test_keys_are_unique(env: dict[str, str]) -> None:
    keys = {ok(env, "keys", "create", "--tenant", "acme")[-1] for _ in range(3)}
    assert len(keys) == 3


def test_keys_list_never_prints_the_key(env: dict[str, str]) -> None:
    key = ok(env, "keys", "create", "--tenant", "acme", "--name", "listed")[-1]
    other = ok(env, "keys", "create", "--tenant", "zenith")[-1]

    listing = "\n".join(ok(env, "keys", "list"))
    assert key not in listing and other not in listing
    assert key[len("ak_") + 8 :] not in listing  # not even the secret part
    assert "listed" in listing and "acme" in listing and "zenith" in listing

    only_acme = "\n".join(ok(env, "keys", "list", "--tenant", "acme"))
    assert "acme" in only_acme and "zenith" not in only_acme


def test_the_database_does_not_hold_the_key(env: dict[str, str]) -> None:
    key = ok(env, "keys", "create", "--tenant", "acme")[-1]
    secret_part = key[len("ak_") :]

    with sqlite_files.connect(db_path(env)) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    assert rows
    for row in rows:
        for value in row:
            assert not (isinstance(value, str) and secret_part in value), row
    raw = b"".join(p.read_bytes() for p in db_path(env).parent.iterdir() if p.is_file())
    assert key.encode() not in raw
    assert secret_part.encode() not in raw


def test_keys_revoke(env: dict[str, str]) -> None:
    ok(env, "keys", "create", "--tenant", "acme", "--name", "doomed")
    row = next(line for line in ok(env, "keys", "list") if "doomed" in line)
    key_id = row.split()[0]
    assert row.split()[4] == "-"  # not revoked yet

    assert ok(env, "keys", "revoke", key_id) == [f"revoked {key_id}"]
    row = next(line for line in ok(env, "keys", "list") if "doomed" in line)
    assert row.split()[4] != "-"

    again = run_cli(env, "keys", "revoke", key_id)
    assert again.returncode == 1
    assert key_id in again.stderr
    missing = run_cli(env, "keys", "revoke", "no-such-id")
    assert missing.returncode == 1


def test_tokens_mint_without_secret_fails_clearly(env: dict[str, str]) -> None:
    result = run_cli(env, "tokens", "mint", "--sub", "user_123", "--tenant", "acme")
    assert result.returncode != 0
    assert "AIRIA_JWT_SECRET" in result.stderr
    assert result.stdout == ""


def test_tokens_mint_signs_a_verifiable_token(env: dict[str, str]) -> None:
    env = {**env, "AIRIA_JWT_SECRET": JWT_SECRET}
    token = ok(env, "tokens", "mint", "--sub", "user_123", "--tenant", "acme")[-1]
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "user_123"
    assert claims["tenant"] == "acme"
    assert claims["exp"] > claims["iat"]


def test_invalid_setting_is_reported_by_name(env: dict[str, str]) -> None:
    result = run_cli({**env, "AIRIA_DATABASE_URL": "mysql://nope"}, "migrate")
    assert result.returncode == 2
    assert "AIRIA_DATABASE_URL" in result.stderr


def test_unreachable_database_is_one_clear_line(env: dict[str, str]) -> None:
    result = run_cli(
        {**env, "AIRIA_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "migrate"
    )
    assert result.returncode == 1
    assert "AIRIA_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_refuses_a_short_secret(env: dict[str, str]) -> None:
    bad = {**env, "AIRIA_ENVIRONMENT": "production", "AIRIA_JWT_SECRET": "changeme"}
    result = run_cli(bad, "migrate")
    assert result.returncode == 2
    assert "AIRIA_JWT_SECRET" in result.stderr


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_serve_refuses_fewer_than_one_worker(env: dict[str, str], value: str) -> None:
    result = run_cli(env, "serve", "--port", "1", "--workers", value)
    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert not db_path(env).exists(), "nothing was started"


def test_a_check_across_settings_names_them_not_an_empty_one(env: dict[str, str]) -> None:
    bad = {**env, "AIRIA_DATABASE_POOL_MIN": "20", "AIRIA_DATABASE_POOL_MAX": "5"}
    result = run_cli(bad, "migrate")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "airia-server: invalid settings: AIRIA_DATABASE_POOL_MIN (20) is above "
        "AIRIA_DATABASE_POOL_MAX (5)"
    )


def test_an_unusable_blob_directory_stops_serve_with_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli({**env, "AIRIA_BLOB_DIR": str(blocker / "blobs")}, "serve", "--port", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("airia-server: invalid setting AIRIA_BLOB_DIR: cannot create")
    assert "Traceback" not in result.stderr


def test_an_export_to_a_path_it_cannot_write_is_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    ok(env, "migrate")
    result = run_cli(env, "export", "-o", str(tmp_path / "no-such-dir" / "x.jsonl"))
    assert result.returncode == 2
    assert "cannot write" in result.stderr and "AIRIA_DATABASE_URL" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "create", "--tenant", " "],
        ["tokens", "mint", "--sub", ""],
        ["tokens", "mint", "--sub", "u1", "--ttl", "-100"],
    ],
    ids=["blank-tenant", "empty-sub", "negative-ttl"],
)
def test_cli_arguments_that_make_useless_credentials_are_refused(
    env: dict[str, str], args: list[str]
) -> None:
    result = run_cli({**env, "AIRIA_JWT_SECRET": JWT_SECRET}, *args)
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and result.stderr.startswith("airia-server: ")


@pytest.mark.parametrize("module", ["asyncpg", "starlette", "swagger_ui"])
def test_without_the_server_extras_it_says_what_to_install(module: str) -> None:
    """`pip install .` brings the SDK and both commands; `airia-server` then lacks the
    server's dependencies. It says so, where it crashed with a ModuleNotFoundError."""
    import subprocess
    import sys

    script = (
        f"import sys; sys.modules[{module!r}] = None; "
        "from airia_server.cli import main; sys.exit(main(['--help']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pip install '.[server]'" in result.stderr


def test_with_json_logs_every_line_serve_writes_is_json(tmp_path: Path) -> None:
    """A log shipper reads stderr line by line as JSON: the start banner, the key hint
    and the workers' warning are log lines too, not text printed beside them."""
    with running_server(tmp_path, workers=2, AIRIA_LOG_FORMAT="json") as server:
        with server.client() as http:
            assert http.get("/healthz").status_code == 200
    lines = server.stderr_text().splitlines()
    assert lines, "serve wrote nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    messages = [json.loads(line)["message"] for line in lines]
    assert any(m.startswith("Airia Conversations on http://127.0.0.1:") for m in messages)
    assert any("AIRIA_BOOTSTRAP_API_KEY is accepted" in m for m in messages), messages
    assert any("2 workers without AIRIA_REDIS_URL" in m for m in messages), messages


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("AIRIA_BLOB_DIR", ""),
        ("AIRIA_CORS_ORIGINS", "https://app.example.com/path"),
        ("AIRIA_CORS_ORIGINS", "https://user@app.example.com"),
    ],
)
def test_a_setting_that_could_never_work_stops_the_start(
    env: dict[str, str], setting: str, value: str
) -> None:
    result = run_cli({**env, setting: value}, "config")
    assert result.returncode == 2
    assert result.stderr.startswith(f"airia-server: invalid setting {setting}: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


READ_ONLY_COMMANDS = (["export", "-o", "out.jsonl"], ["keys", "list"], ["retention", "show"])


@pytest.fixture(params=["sqlite", "postgres"])
def any_env(request: pytest.FixtureRequest, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env`, or the same over a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield env
        return
    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    try:
        yield {**env, "AIRIA_DATABASE_URL": url}
    finally:
        backends.alter_database_sync(url, "ALTER DATABASE {name} RESET ALL")
        backends.drop_database_sync(url)


def schema_versions(env: dict[str, str]) -> list[int]:
    url = env["AIRIA_DATABASE_URL"]
    if url.startswith("sqlite"):
        with sqlite_files.connect(db_path(env)) as conn:
            return [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    return backends.fetch_sync(url, "SELECT version FROM schema_migrations ORDER BY version")


def forget_latest_migration(env: dict[str, str]) -> None:
    """An older schema, as the previous version left it (to these commands' eyes)."""
    sql = f"DELETE FROM schema_migrations WHERE version = {LATEST_MIGRATION['sqlite']}"
    url = env["AIRIA_DATABASE_URL"]
    if url.startswith("sqlite"):
        with sqlite_files.connect(db_path(env)) as conn:
            conn.execute(sql)
    else:
        backends.fetch_sync(url, sql)


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_command_that_only_reads_never_migrates(
    any_env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    """On an older schema, or none, it stops with one line saying to migrate, where it
    migrated (writing to a database it was only to read: an export's source, a
    standby). The exit status is a database error's."""
    args = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in args]
    ok(any_env, "migrate")
    forget_latest_migration(any_env)
    before = schema_versions(any_env)
    result = run_cli(any_env, *args)
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip().splitlines() == [
        f"airia-server: the database's schema is at version {before[-1]}, older than this "
        f"version's ({before[-1] + 1}): run `airia-server migrate` first"
    ]
    assert schema_versions(any_env) == before, "nothing migrated"
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_command_that_only_reads_stops_on_a_database_without_schema(
    any_env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    args = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in args]
    result = run_cli(any_env, *args)
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip().splitlines() == [
        "airia-server: the database has no schema yet (none of this server's tables) "
        f"({LATEST_MIGRATION['sqlite']}): run `airia-server migrate` first"
    ]
    assert not db_path(any_env).exists(), "no SQLite file is created"


def test_a_read_only_database_with_a_current_schema_is_read_and_served(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A standby, or a primary set read-only during a failover: every command that only
    reads works, and an instance (re)starting there comes up and serves reads, where
    each exited 1 on the migration's CREATE TABLE IF NOT EXISTS."""
    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    try:
        with running_server(tmp_path / "primary", database_url=url) as server:
            with server.client() as http:
                made = http.post(
                    "/v1/Conversations", json={"userId": "u1"}, headers=server.headers()
                )
                assert made.status_code == 201, made.text
        backends.alter_database_sync(
            url, "ALTER DATABASE {name} SET default_transaction_read_only = on"
        )
        pg = {**env, "AIRIA_DATABASE_URL": url}
        for args in READ_ONLY_COMMANDS:
            args = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in args]
            ok(pg, *args)
        assert ok(pg, "migrate") == ["database is up to date"]
        with running_server(tmp_path / "standby", database_url=url) as server:
            with server.client() as http:
                cid = made.json()["conversationId"]
                read = http.get(f"/v1/Conversations/{cid}", headers=server.headers())
                assert read.status_code == 200, read.text
                assert http.get("/readyz").json()["checks"]["database"].startswith("read-only")
    finally:
        backends.alter_database_sync(url, "ALTER DATABASE {name} RESET ALL")
        backends.drop_database_sync(url)


def test_a_read_only_database_never_served_says_what_serve_needs(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Its first start must store the WebSocket ticket key, which a read-only database
    refuses: one line naming the two ways out, not a traceback from each worker."""
    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    try:
        pg = {**env, "AIRIA_DATABASE_URL": url}
        ok(pg, "migrate")
        backends.alter_database_sync(
            url, "ALTER DATABASE {name} SET default_transaction_read_only = on"
        )
        result = run_cli(pg, "serve", "--port", "1")
        assert result.returncode == 1
        assert result.stderr.startswith("airia-server: the database is read-only"), result.stderr
        assert "AIRIA_SECRET_KEY" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        backends.alter_database_sync(url, "ALTER DATABASE {name} RESET ALL")
        backends.drop_database_sync(url)


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("env", "no-such-host.invalid", "AIRIA_HOST"),  # does not resolve
        ("flag", "192.0.2.1", "--host"),  # TEST-NET-1: no address of this machine
    ],
)
def test_a_host_it_cannot_listen_on_is_one_line_before_it_starts(
    env: dict[str, str], setting: str, value: str, named: str
) -> None:
    """It migrated, said it was ready, and then uvicorn logged an error and exited 3."""
    if setting == "env":
        result = run_cli({**env, "AIRIA_HOST": value}, "serve", "--port", "0")
    else:
        result = run_cli(env, "serve", "--host", value, "--port", "0")
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on {named}={value}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "ready" not in result.stderr
    assert not db_path(env).exists()  # stopped before migrating
