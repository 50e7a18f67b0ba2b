"""`airia-server`: serve, migrate, manage API keys, mint development tokens."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import socket
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SERVER_MODULES = (
    "asyncpg",
    "jwt",
    "msgspec",
    "pydantic_settings",
    "python_multipart",
    "redis",
    "starlette",
    "swagger_ui",
    "uvicorn",
)
"""What the `server` extras install (`pip install .` alone installs the SDK)."""


def _missing_module() -> str | None:
    for name in SERVER_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


if (_missing := _missing_module()) is not None:
    raise SystemExit(
        f"airia-server: the server's dependencies are not installed ({_missing} is "
        "missing): install this project with its server extra, from its checkout: "
        "pip install '.[server]' (or: pip install '<path to the checkout>[server]')"
    )

import asyncpg  # noqa: E402
import msgspec  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from airia_server.config import (  # noqa: E402
    MAX_RETENTION_DAYS,
    ConfigFileError,
    Settings,
    describe,
    load_settings,
    mask_url,
)
from airia_server.domain.auth import DEFAULT_TENANT, create_api_key, mint_token  # noqa: E402
from airia_server.domain.tickets import TICKET_KEY_NAME  # noqa: E402
from airia_server.logs import configure_logging  # noqa: E402
from airia_server.storage import open_store  # noqa: E402
from airia_server.storage.base import SchemaNotCurrent  # noqa: E402
from airia_server.storage.outages import Outage, outage_of  # noqa: E402
from airia_server.timeutil import utcnow_iso  # noqa: E402

log = logging.getLogger("airia_server")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


_CONFIG_HELP = (
    "a TOML file of settings (AIRIA_CONFIG_FILE); environment variables override it, "
    "flags override both"
)


class _Commands(argparse._SubParsersAction):
    """Subcommands that also take `--config`, so it may come after the command
    (`airia-server serve --config f.toml`) as well as before it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)
        parser.register("action", "parsers", _Commands)
        parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=_CONFIG_HELP)
        return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airia-server", description=__doc__)
    parser.register("action", "parsers", _Commands)
    parser.add_argument("--config", type=Path, help=_CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("config", help="print the effective configuration, secrets masked")

    serve = sub.add_parser("serve", help="run the HTTP and WebSocket service")
    serve.add_argument("--host", help="address to listen on (AIRIA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (AIRIA_PORT, default 8000)")
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        default=1,
        help="worker processes on this host (default 1; with more, set AIRIA_REDIS_URL so "
        "that events reach every worker's sockets)",
    )

    sub.add_parser("migrate", help="apply pending database migrations and exit")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key; the key alone is the last line")
    create.add_argument("--tenant", default=DEFAULT_TENANT)
    create.add_argument("--name", help="a label to recognise the key by")
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant")
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")

    retention = sub.add_parser("retention", help="how long each tenant keeps conversations")
    retention_sub = retention.add_subparsers(dest="retention", required=True)
    retention_set = retention_sub.add_parser(
        "set", help="delete a tenant's conversations untouched for N days"
    )
    retention_set.add_argument("--tenant", required=True)
    days = retention_set.add_mutually_exclusive_group(required=True)
    days.add_argument("--days", type=int, help="keep conversations this many days")
    days.add_argument("--forever", action="store_true", help="keep them for ever")
    retention_sub.add_parser("show", help="list the per-tenant policies")

    erase = sub.add_parser(
        "erase-user", help="delete a user's conversations and their part in others' (erasure)"
    )
    erase.add_argument("--tenant", required=True)
    erase.add_argument("--user", required=True)
    erase.add_argument("--json", action="store_true", help="print the report as JSON")

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


async def _with_store(settings: Settings, action, *, migrate: bool = True):
    """Run `action` on a started store; a command that only reads passes `migrate`
    False, and stops (`SchemaNotCurrent`) on a schema it would have had to migrate."""
    store = open_store(settings)
    await store.start(migrate=migrate)
    try:
        return await action(store)
    finally:
        await store.close()


async def _ticket_key(store: Any) -> None:
    """The ticket key the application reads at start (`app.lifespan`), made if missing."""
    await store.server_secret(TICKET_KEY_NAME, os.urandom(32))


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from airia_server import server

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    problem = blob_dir_problem(settings)
    if problem is not None:
        print(f"airia-server: invalid setting AIRIA_BLOB_DIR: {problem}", file=sys.stderr)
        return 2
    problem = host_problem(settings.host)
    if problem is not None:
        named = "--host" if args.host is not None else "AIRIA_HOST"
        print(f"airia-server: cannot listen on {named}={settings.host}: {problem}", file=sys.stderr)
        return 2
    # Migrate once here, so many workers do not race to do it.
    asyncio.run(open_store(settings).migrate())
    if settings.secret_key is None:
        # The ticket key is kept in the database, made by the first start: on a
        # database that refuses writes (a standby) that start cannot make it. Said
        # here in one line, not by every worker's startup traceback.
        try:
            asyncio.run(_with_store(settings, _ticket_key))
        except Exception as exc:
            if outage_of(exc) is not Outage.READ_ONLY:
                raise
            print(
                "airia-server: the database is read-only and holds no WebSocket ticket key "
                "yet: start once on a writable database, or set AIRIA_SECRET_KEY (the same "
                "on every instance)",
                file=sys.stderr,
            )
            return 1
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"  # IPv6
    public = settings.public_url or f"http://{host}:{settings.port}"
    if settings.bootstrap_api_key:  # set, and not to nothing
        keys = "API key: AIRIA_BOOTSTRAP_API_KEY is accepted (tenant default)."
    else:
        keys = (
            "API key: run `airia-server keys create --tenant default` in another shell, "
            "or set AIRIA_BOOTSTRAP_API_KEY before starting."
        )
    # Log lines, so that with AIRIA_LOG_FORMAT=json every line on stderr is JSON.
    log.info(
        "Airia Conversations on %s  (docs: %s/docs, database: %s)",
        public,
        public,
        mask_url(settings.database_url),
    )
    log.info("%s", keys)
    if args.workers > 1 and not settings.redis_url:
        log.warning(
            "%d workers without AIRIA_REDIS_URL: a WebSocket receives only the events of "
            "writes made by its own worker",
            args.workers,
        )
    if args.config is not None:
        os.environ["AIRIA_CONFIG_FILE"] = str(args.config)  # for worker processes
    server.serve(settings, args.workers, overrides)
    return 0


def host_problem(host: str) -> str | None:
    """Why the server could not listen on `host`, found before it migrates and says it
    is ready (a name that does not resolve, an address not of this machine); None if
    it can. The port is uvicorn's to take, and to report taken."""
    try:
        found = socket.getaddrinfo(
            host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        return str(getattr(exc, "strerror", None) or exc)
    error: OSError | None = None
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address)
            return None
        except OSError as exc:
            error = exc
    return str(error.strerror if error is not None and error.strerror else error)


def blob_dir_problem(settings: Settings) -> str | None:
    """Why the filesystem blob store's directory cannot hold attachments, or None (also
    when attachments live in the database)."""
    if settings.blob_store == "database" or (
        settings.blob_store == "auto" and settings.is_postgres
    ):
        return None
    try:
        settings.blob_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {settings.blob_dir}: {exc.strerror}"
    if not os.access(settings.blob_dir, os.W_OK | os.X_OK):
        return f"{settings.blob_dir} is not writable"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (OSError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"airia-server: cannot use the database (AIRIA_DATABASE_URL): {exc}", file=sys.stderr)
        return 1
    except SchemaNotCurrent as exc:
        print(f"airia-server: {exc}", file=sys.stderr)
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
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                name = "AIRIA_" + "_".join(str(p) for p in error["loc"]).upper()
                print(f"airia-server: invalid setting {name}: {message}", file=sys.stderr)
            else:  # a check across settings: its message names them
                print(f"airia-server: invalid settings: {message}", file=sys.stderr)
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
        migrate = args.keys != "list"
        return asyncio.run(_with_store(settings, lambda store: _keys(store, args), migrate=migrate))
    if args.command == "retention":
        return asyncio.run(
            _with_store(
                settings,
                lambda store: _retention(store, settings, args),
                migrate=args.retention != "show",
            )
        )
    if args.command == "erase-user":
        return asyncio.run(_with_store(settings, lambda store: _erase(store, settings, args)))
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
        if not args.tenant.strip():
            print("airia-server: --tenant must name a tenant", file=sys.stderr)
            return 2
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


async def _retention(store, settings: Settings, args: argparse.Namespace) -> int:
    if args.retention == "set":
        if args.days is not None and not 1 <= args.days <= MAX_RETENTION_DAYS:
            print(
                f"airia-server: --days must be from 1 to {MAX_RETENTION_DAYS:,} (or use --forever)",
                file=sys.stderr,
            )
            return 2
        await store.set_retention(args.tenant, None if args.forever else args.days)
        days = f"{args.days} day" + ("" if args.days == 1 else "s")
        kept = "for ever" if args.forever else f"{days} after their last change"
        print(f"tenant '{args.tenant}' keeps conversations {kept}")
        return 0
    policies = await store.retention_policies()
    default = settings.retention_days or "for ever"
    print(f"default (AIRIA_RETENTION_DAYS): {default}")
    for tenant, days in sorted(policies.items()):
        print(f"{tenant}: {days if days else 'for ever'}")
    return 0


async def _erase(store, settings: Settings, args: argparse.Namespace) -> int:
    from airia_server.app import open_hub
    from airia_server.domain.lifecycle import erase_user

    hub = open_hub(settings)  # so open sockets hear their conversation go
    await hub.start()
    try:
        report = await erase_user(store, hub, args.tenant, args.user)
    finally:
        await hub.close()
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(
            f"erased user '{report.user_id}' of tenant '{report.tenant_id}': "
            f"{report.conversations_deleted} conversations, {report.messages_deleted} "
            f"messages, {report.attachments_deleted} attachments deleted; removed from "
            f"{report.participations_removed} shared conversations"
        )
    return 0
