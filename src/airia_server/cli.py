"""`airia-server`: serve, migrate, manage API keys, mint development tokens."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from pydantic import ValidationError

from airia_server.config import ConfigFileError, Settings, describe, load_settings
from airia_server.domain.auth import DEFAULT_TENANT, create_api_key, mint_token
from airia_server.logs import configure_logging
from airia_server.storage import open_store
from airia_server.timeutil import utcnow_iso


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airia-server", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        help="a TOML file of settings (AIRIA_CONFIG_FILE); "
        "environment variables override it, flags override both",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("config", help="print the effective configuration, secrets masked")

    serve = sub.add_parser("serve", help="run the HTTP and WebSocket service")
    serve.add_argument("--host", help="address to listen on (AIRIA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (AIRIA_PORT, default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")

    sub.add_parser("migrate", help="apply pending database migrations and exit")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key; the key alone is the last line")
    create.add_argument("--tenant", default=DEFAULT_TENANT)
    create.add_argument("--name", help="a label to recognise the key by")
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant")
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")

    tokens = sub.add_parser("tokens", help="bearer tokens for development")
    tokens_sub = tokens.add_subparsers(dest="tokens", required=True)
    mint = tokens_sub.add_parser("mint", help="sign a JWT with AIRIA_JWT_SECRET")
    mint.add_argument("--sub", required=True, help="the user id")
    mint.add_argument("--tenant", default=DEFAULT_TENANT)
    mint.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    export = sub.add_parser("export", help="write every conversation and API key as JSON Lines")
    export.add_argument("--tenant", help="only this tenant (default: every tenant)")
    export.add_argument("--output", "-o", default="-", help="a file, or - for stdout (default)")
    load = sub.add_parser("import", help="load an export into AIRIA_DATABASE_URL (idempotent)")
    load.add_argument("file", help="an export file, or - for stdin")
    return parser


async def _with_store(settings: Settings, action):
    store = open_store(settings)
    await store.start()
    try:
        return await action(store)
    finally:
        await store.close()


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from airia_server import server

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    # Migrate once here, so many workers do not race to do it.
    asyncio.run(open_store(settings).migrate())
    public = settings.public_url or f"http://{settings.host}:{settings.port}"
    print(
        f"Airia Conversations on {public}  (docs: {public}/docs, database: "
        f"{settings.database_url})\nAPI key: run `airia-server keys create --tenant default`"
        " in another shell, or set AIRIA_BOOTSTRAP_API_KEY before starting.",
        file=sys.stderr,
        flush=True,
    )
    if args.config is not None:
        os.environ["AIRIA_CONFIG_FILE"] = str(args.config)  # for worker processes
    server.serve(settings, args.workers, overrides)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (OSError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"airia-server: cannot use the database (AIRIA_DATABASE_URL): {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    flags = {"host": getattr(args, "host", None), "port": getattr(args, "port", None)}
    try:
        settings = load_settings(args.config, **flags)
    except ConfigFileError as exc:
        print(f"airia-server: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for error in exc.errors():
            name = "AIRIA_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"airia-server: invalid setting {name}: {error['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)

    if args.command == "config":
        for name, value in describe(settings):
            print(f"{name}={value}")
        return 0
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        applied = asyncio.run(open_store(settings).migrate())
        print(f"applied migrations: {applied}" if applied else "database is up to date")
        return 0
    if args.command == "keys":
        return asyncio.run(_with_store(settings, lambda store: _keys(store, args)))
    if args.command in ("export", "import"):
        from airia_server.transfer import run_transfer

        return run_transfer(settings, args)
    if args.command == "tokens":
        try:
            print(mint_token(settings, args.sub, args.tenant, args.ttl))
        except ValueError as exc:
            print(f"airia-server: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2


async def _keys(store, args: argparse.Namespace) -> int:
    if args.keys == "create":
        record, key = await create_api_key(store, args.tenant, args.name)
        print(
            f"Created API key {record.id} for tenant '{record.tenant_id}'. "
            "It is shown only once; store it now:"
        )
        print(key)
        return 0
    if args.keys == "list":
        records = await store.list_api_keys(args.tenant)
        print(f"{'ID':36}  {'TENANT':16}  {'PREFIX':10}  {'CREATED':27}  {'REVOKED':27}  NAME")
        for r in records:
            print(
                f"{r.id:36}  {r.tenant_id:16}  {r.prefix:10}  {r.created_at:27}  "
                f"{r.revoked_at or '-':27}  {r.name or ''}"
            )
        return 0
    if args.keys == "revoke":
        if await store.revoke_api_key(args.key_id, utcnow_iso()):
            print(f"revoked {args.key_id}")
            return 0
        print(f"airia-server: no active key with id {args.key_id}", file=sys.stderr)
        return 1
    return 2
