"""Cost against size: how GET, append, feed and message pages slow down as data grows.

    .venv/bin/python bench/scale.py                      # = make bench-scale
    .venv/bin/python bench/scale.py --sizes 10000        # skip the 1,000,000 database
    .venv/bin/python bench/scale.py --publish  # plot to docs/images/, table to bench/

Databases are built once with bulk inserts (executemany in big transactions) and
kept under bench/results/data/ (not committed); a file's name carries a hash of
the server's SQLite migrations and DATA_VERSION, so a schema change or a change
to what is built builds new ones. The schema
comes from the server's own migrations (SqliteStore.migrate); the rows are what
the server writes: a conversation and its Owner participant row (with its copy
of the conversation's times), as SqliteStore.create_conversation does, and for
messages the message row, its `message.created` event, the conversation's
counters and the participant's conv_updated_at, as add_message does; the
schema's triggers keep the feed counters. The builder stops if a table has a
column it does not know.

| database | contents |
|---|---|
| scale-10000 | 10,000 conversations, all of `feed-user` |
| scale-1000000 | 1,000,000 conversations: 10,000 of `feed-user` (every 100th),     |
|               | 100 each of 9,900 other users                                    |
| scale-messages | 1,000 conversations of 10 messages, 1 of 1,000, 1 of 100,000 |

Each server run gets a fresh copy of a database (writes would change it), is
pinned to the server CPU, and wrk to the other, as in run.py. Figures are
wrk's req/s, p50 and p99, each the median of `--rounds` runs (3): the points a
ratio compares run one right after the other in every round (both databases of
conversations are served at once), and every round of reads comes before the
first write. The interesting number is the ratio large/small.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench_run
import servers
import wrk
from servers import BENCH_DIR

DATA = bench_run.RESULTS / "data"
PLOT = BENCH_DIR.parent / "docs" / "images" / "bench-scale.png"
TABLE = BENCH_DIR / "scale-latest.md"
TENANT = "default"
FEED_USER = "feed-user"
FEED_CONVERSATIONS = 10_000
SMALL_MESSAGES, SMALL_CONVERSATIONS = 10, 1000
BIG_MESSAGES = 100_000
CAPPED_MESSAGES = 1_000
"""The server's default `AIRIA_CONVERSATION_MESSAGES_LIMIT`: a conversation's GET carries
its newest 1,000 messages at most, so one of 1,000 and one of 100,000 answer with as
many, and any difference in cost is the stored size's."""
DATA_VERSION = "2"
"""Part of a database file's name with the migrations' hash: a new version of what the
builder writes builds new files."""
MESSAGE_TEXT = "A benchmark message of about sixty characters, plain text."


# --------------------------------------------------------------------------- build


def _store_module(src: Path | None):
    if src is not None:
        sys.path.insert(0, str(src))
    from airia_server.storage import sqlite as store_module

    return store_module


def schema_hash(src: Path | None) -> str:
    mod = _store_module(src)
    text = DATA_VERSION + "".join(f"{v}{n}{sql}" for v, n, sql in mod.migrations())
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class Ids:
    """UUIDv7s (as airia_server.ids makes them) for synthetic creation times."""

    def __init__(self) -> None:
        self.counter = 0

    def at(self, epoch_us: int) -> str:
        ms = epoch_us // 1000
        self.counter = (self.counter + 1) & 0xFFF
        rand_b = random.getrandbits(62)
        value = (ms << 80) | (0x7 << 76) | (self.counter << 64) | (0b10 << 62) | rand_b
        return str(uuid.UUID(int=value))


def _format_us(epoch_us: int) -> str:
    from airia_server.timeutil import format_us

    return format_us(epoch_us)


CONV_SQL = (
    "INSERT INTO conversations (id, tenant_id, user_id, title, deployment_id, "
    "data_source_files, is_bookmarked, last_execution_status, last_execution_id, "
    "message_count, last_sequence, created_at, updated_at, message_seq) "
    "VALUES (?, ?, ?, ?, 'default', '{}', 0, NULL, NULL, ?, ?, ?, ?, ?)"
)
PART_SQL = (
    "INSERT INTO conversation_participants (conversation_id, user_id, id, tenant_id, "
    "role, shared_at, shared_by_user_id, conv_updated_at, conv_created_at) "
    "VALUES (?, ?, ?, ?, 'Owner', ?, ?, ?, ?)"
)
# Every column the builder fills, per table; any other column means the server's schema
# has changed and the builder must learn what the server writes there (it stops).
KNOWN_COLUMNS = {
    "conversations": {
        "id", "tenant_id", "user_id", "title", "deployment_id", "data_source_files",
        "is_bookmarked", "last_execution_status", "last_execution_id", "message_count",
        "last_sequence", "created_at", "updated_at", "message_seq",
    },
    "conversation_participants": {
        "conversation_id", "user_id", "id", "tenant_id", "role", "shared_at",
        "shared_by_user_id", "conv_updated_at", "conv_created_at",
    },
    "messages": {
        "id", "conversation_id", "position", "user_id", "role", "message", "images",
        "image_attachment_ids", "created_at", "updated_at",
    },
    # `id` is the rowid (arrival order), which SQLite assigns.
    "conversation_events": {"id", "conversation_id", "sequence", "type", "data", "created_at"},
}  # fmt: skip


def check_schema(conn: sqlite3.Connection) -> None:
    for table, known in KNOWN_COLUMNS.items():
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if columns != known:
            raise RuntimeError(
                f"the server's {table} table has changed (new: {sorted(columns - known)},"
                f" gone: {sorted(known - columns)}); update bench/scale.py to write what"
                " the server writes"
            )


MSG_SQL = (
    "INSERT INTO messages (id, conversation_id, position, user_id, role, message, images, "
    "image_attachment_ids, created_at, updated_at) VALUES (?, ?, ?, ?, 'user', ?, NULL, NULL, ?, ?)"
)
EVENT_SQL = (
    "INSERT INTO conversation_events (conversation_id, sequence, type, data, created_at) "
    "VALUES (?, ?, 'message.created', ?, ?)"
)


def build(path: Path, kind: str, src: Path | None, batch: int = 50_000) -> float:
    """Build database `kind` ("10000", "1000000" or "messages") at `path`; seconds taken."""
    import msgspec

    mod = _store_module(src)
    started = time.monotonic()
    tmp = path.with_suffix(".building")
    for leftover in path.parent.glob(tmp.name + "*"):
        leftover.unlink()
    mod.SqliteStore(tmp)._migrate()  # the server's own schema, exactly
    conn = sqlite3.connect(tmp, isolation_level=None)
    check_schema(conn)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB
    ids = Ids()
    encode = msgspec.json.encode
    t0 = (time.time_ns() // 1000) - 365 * 86400 * 1_000_000  # a year ago

    def conversations(count: int, owner_of, messages: int = 0, start_us: int = t0, step=1000):
        """Rows of `count` conversations; yields (conv, part, [msgs], [events])."""
        for i in range(count):
            created = start_us + i * step
            cid = ids.at(created)
            user = owner_of(i)
            ts = _format_us(created)
            msgs, events = [], []
            last_ts = ts
            for pos in range(1, messages + 1):
                mt_us = created + pos * 10
                mt = _format_us(mt_us)
                mid = ids.at(mt_us)
                text = f"{MESSAGE_TEXT} #{pos}"
                msgs.append((mid, cid, pos, user, text, mt, mt))
                snapshot = {
                    "id": mid,
                    "conversationId": cid,
                    "message": text,
                    "role": "user",
                    "images": None,
                    "imageAttachmentIds": None,
                    "createdAt": mt,
                    "updatedAt": mt,
                    "userId": user,
                }
                events.append((cid, pos, encode(snapshot).decode(), mt))
                last_ts = mt
            conv = (
                cid,
                TENANT,
                user,
                f"Conversation {i}",
                messages,
                messages,
                ts,
                last_ts,
                messages,
            )
            # conv_updated_at / conv_created_at: the feed's copy of the conversation's times.
            part = (cid, user, ids.at(created), TENANT, ts, user, last_ts, ts)
            yield conv, part, msgs, events

    def insert(rows) -> None:
        buf: dict[str, list] = {"c": [], "p": [], "m": [], "e": []}

        def flush() -> None:
            conn.execute("BEGIN")
            conn.executemany(CONV_SQL, buf["c"])
            conn.executemany(PART_SQL, buf["p"])
            conn.executemany(MSG_SQL, buf["m"])
            conn.executemany(EVENT_SQL, buf["e"])
            conn.execute("COMMIT")
            for v in buf.values():
                v.clear()

        for conv, part, msgs, events in rows:
            buf["c"].append(conv)
            buf["p"].append(part)
            buf["m"] += msgs
            buf["e"] += events
            if len(buf["c"]) + len(buf["m"]) >= batch:
                flush()
        flush()

    if kind == "messages":
        insert(conversations(SMALL_CONVERSATIONS, lambda i: "msg-user", SMALL_MESSAGES))
        insert(conversations(1, lambda i: "msg-user", CAPPED_MESSAGES, start_us=t0 + 5 * 10**8))
        insert(conversations(1, lambda i: "msg-user", BIG_MESSAGES, start_us=t0 + 10**9))
    else:
        n = int(kind)
        others = n - FEED_CONVERSATIONS

        # Interleave the feed user's conversations with everyone else's over time.
        def owner(i: int) -> str:
            if others <= 0 or i % (n // FEED_CONVERSATIONS) == 0:
                return FEED_USER
            return f"user-{i % 10_000}"

        insert(conversations(n, owner, step=max(1, 30 * 86400 * 1_000_000 // n)))
        count = conn.execute(
            "SELECT count(*) FROM conversation_participants WHERE user_id = ?", (FEED_USER,)
        ).fetchone()[0]
        if count != FEED_CONVERSATIONS:
            raise RuntimeError(f"{FEED_USER} got {count} conversations, not {FEED_CONVERSATIONS}")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(tmp, path)
    for suffix in ("-wal", "-shm"):
        leftover = Path(str(tmp) + suffix)
        if leftover.exists():
            leftover.unlink()
    return time.monotonic() - started


def database(kind: str, src: Path | None) -> tuple[Path, float | None]:
    """The pristine database of `kind`, built when missing; (path, build seconds or None)."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"scale-{kind}-{schema_hash(src)}.db"
    if path.exists():
        return path, None
    print(f"   building {path.name} …", file=sys.stderr)
    took = build(path, kind, src)
    print(
        f"   built {path.name} in {took:.0f} s ({path.stat().st_size >> 20} MiB)", file=sys.stderr
    )
    return path, took


# --------------------------------------------------------------------------- measure


@dataclass
class Point:
    group: str
    """What varies: "conversations", "messages", "feed page", "message page"."""
    operation: str
    size: str
    size_value: float
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    connections: int = 0
    cpu_others: float | None = None
    errors: list[str] = field(default_factory=list)
    baseline: str | None = None
    """The operation whose first point this one is compared with (default: its own)."""
    rounds_rps: list[float] = field(default_factory=list)
    """req/s of each round; `rps`, `p50_ms` and `p99_ms` are the rounds' medians."""


Measure = tuple[servers.Server, Point, dict]
"""A point to measure: the server, the point to fill in, and Runner.wrk's options."""


def median_point(samples: list[Point]) -> Point:
    """One point from its rounds: the medians of the rounds that had no error."""
    clean = [p for p in samples if not p.errors] or samples
    others = [p.cpu_others for p in samples if p.cpu_others is not None]
    return replace(
        samples[0],
        rps=statistics.median(p.rps for p in clean),
        p50_ms=statistics.median(p.p50_ms for p in clean),
        p99_ms=statistics.median(p.p99_ms for p in clean),
        requests=sum(p.requests for p in samples),
        cpu_others=max(others) if others else None,
        errors=[e for p in samples for e in p.errors],
        rounds_rps=[p.rps for p in samples],
    )


class Runner:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.api_key = "bench-" + secrets.token_hex(24)
        self.server_cpu = args.server_cpu if args.pinned else None
        self.wrk_cpu = args.wrk_cpu if args.pinned else None
        self.headers = {"X-API-KEY": self.api_key}

    def server(self, pristine: Path, name: str) -> servers.Server:
        copy = self.workdir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(copy) + suffix).unlink(missing_ok=True)
        shutil.copyfile(pristine, copy)
        # Write the copy out now, or the kernel flushes it (a gigabyte for the largest)
        # while the server is being measured.
        with open(copy, "rb+") as f:
            os.fsync(f.fileno())
        srv = servers.airia_server(
            self.workdir,
            self.server_cpu,
            self.api_key,
            name=name,
            src=self.args.src,
            database_url=f"sqlite:///{copy}",
        )
        return srv.start(timeout_s=120)

    def wrk(
        self,
        srv: servers.Server,
        point: Point,
        *,
        path: str = "/",
        script: Path | None = None,
        post: bool = False,
        connections: int | None = None,
        timeout_s: int = 10,
    ) -> Point:
        opts = wrk.WrkOptions(
            threads=1,
            connections=connections or self.args.connections,
            cpu=self.wrk_cpu,
            timeout_s=timeout_s,
        )
        point.connections = opts.connections
        headers = {**self.headers, **({"Content-Type": "application/json"} if post else {})}
        try:
            if self.args.warmup > 0:
                wrk.run(srv.base_url + path, self.args.warmup, opts, script=script, headers=headers)
            before = servers.cpu_sample(self.server_cpu, srv.proc.pid)
            r = wrk.run(
                srv.base_url + path, self.args.duration, opts, script=script, headers=headers
            )
            shares = servers.cpu_shares(before, servers.cpu_sample(self.server_cpu, srv.proc.pid))
            point.cpu_others = shares["others"] if shares else None
            point.rps, point.p50_ms, point.p99_ms, point.requests = (
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.requests,
            )
            if r.non_2xx:
                point.errors.append(f"{r.non_2xx} non-2xx of {r.requests}")
            if r.total_socket_errors:
                point.errors.append(f"socket errors {r.socket_errors}")
        except wrk.WrkError as exc:
            point.errors.append(str(exc)[:300])
        print(
            f"   {point.operation} @ {point.size}: {point.rps:,.1f} req/s p50 {point.p50_ms:.2f} ms"
            + (f" ERRORS {point.errors}" if point.errors else ""),
            file=sys.stderr,
        )
        return point

    def ids_script(self, name: str, ids: list[str], lua: str, **params) -> Path:
        ids_file = self.workdir / f"{name}.ids"
        ids_file.write_text("\n".join(ids) + "\n")
        return wrk.render_script(
            [bench_run.LUA / "common.lua", bench_run.LUA / lua],
            self.workdir / f"{name}.lua",
            ids_file=str(ids_file),
            threads=1,
            **params,
        )

    def rounds(self, measures: list[Measure]) -> list[Point]:
        """Measure every point `--rounds` times, all of them in turn within a round, and
        keep each point's median. The points a ratio compares are measured next to
        each other (a few seconds apart) in every round: the machine's speed drifts
        over minutes, and one 5 s run per point read the same code anywhere from
        0.71x to 1.01x."""
        samples: list[list[Point]] = [[] for _ in measures]
        # Every round of the reads comes before the first write: appends give the
        # conversations more messages to return and count as unread, and move them up
        # the feed.
        reads = [i for i, (_, _, options) in enumerate(measures) if not options.get("post")]
        writes = [i for i, (_, _, options) in enumerate(measures) if options.get("post")]
        for kind, chosen in (("reads", reads), ("writes", writes)):
            for number in range(self.args.rounds if chosen else 0):
                print(f"   {kind}: round {number + 1} of {self.args.rounds}", file=sys.stderr)
                for i in chosen:
                    srv, point, options = measures[i]
                    samples[i].append(self.wrk(srv, replace(point, errors=[]), **options))
        return [median_point(taken) for taken in samples]

    def conversations(self, kinds: dict[str, Path]) -> list[Point]:
        """GET, append and feed pages on every database of conversations, the same
        operation on each size one after the other."""
        started: dict[str, servers.Server] = {}
        by_size: list[list[Measure]] = []
        try:
            for kind, pristine in kinds.items():
                started[kind] = self.server(pristine, f"scale-{kind}")
                by_size.append(self.conversation_measures(kind, pristine, started[kind]))
            # Size by size for each operation: [GET 10,000, GET 1,000,000, feed page 1 ...]
            measures = [m for same_step in itertools.zip_longest(*by_size) for m in same_step if m]
            points = self.rounds(measures)
        finally:
            for srv in started.values():
                srv.stop()
        for srv in started.values():
            self.check_log(srv, [p for p, m in zip(points, measures, strict=True) if m[0] is srv])
        return points

    def conversation_measures(
        self, kind: str, pristine: Path, srv: servers.Server
    ) -> list[Measure]:
        n = int(kind)
        label = f"{n:,}"
        # GET and append go to 1,000 random conversations of the feed user, who has
        # 10,000 in every database: only the database's size differs between sizes.
        # Appends to conversations of as many different owners (in a database that has
        # other users) also move each owner's feed index entry, a page of its own: a
        # point of their own, compared with the same first point.
        conn = sqlite3.connect(pristine)
        pick = "SELECT id FROM conversations WHERE user_id {} ? ORDER BY random() LIMIT 1000"
        sample = [row[0] for row in conn.execute(pick.format("="), (FEED_USER,))]
        spread = [row[0] for row in conn.execute(pick.format("!="), (FEED_USER,))]
        owners = conn.execute(
            "SELECT count(DISTINCT user_id) FROM conversations "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(spread),),
        ).fetchone()[0]
        conn.close()
        get = self.ids_script(f"get-{kind}", sample, "get_by_id.lua")
        measures: list[Measure] = [
            (srv, Point("conversations", "GET by id", label, n), {"script": get})
        ]
        feed = "/v1/Conversations/feed?userId=feed-user&PageSize=20&PageNumber="
        last = FEED_CONVERSATIONS // 20
        # Pages by number in the back half are read from the end of the index, so the
        # middle page is the one that skips the most rows.
        for number in (1, last // 2, last):
            point = Point("feed page", f"feed, {label} in db", f"page {number}", number)
            measures.append((srv, point, {"path": feed + str(number)}))
        # The same last page reached as a client paging through would: by the cursor
        # the page before it hands out (the feed's keyset extension).
        with httpx.Client(base_url=srv.base_url, headers=self.headers, timeout=60) as c:
            cursor = c.get(feed + str(last - 1)).json()["nextCursor"]
        measures.append(
            (
                srv,
                Point("feed page", f"feed, {label} in db", f"page {last}, by cursor", last + 0.5),
                {"path": f"/v1/Conversations/feed?userId=feed-user&PageSize=20&cursor={cursor}"},
            )
        )
        append = self.ids_script(
            f"append-{kind}", sample, "post_messages.lua", body=bench_run.MESSAGE_BODY
        )
        measures.append(
            (
                srv,
                Point("conversations", "append message", label, n),
                {"script": append, "post": True},
            )
        )
        if spread:
            append = self.ids_script(
                f"append-spread-{kind}", spread, "post_messages.lua", body=bench_run.MESSAGE_BODY
            )
            point = Point(
                "conversations",
                f"append message, {owners:,} owners",
                label,
                n,
                baseline="append message",
            )
            measures.append((srv, point, {"script": append, "post": True}))
        return measures

    def messages(self, pristine: Path) -> list[Point]:
        conn = sqlite3.connect(pristine)
        small = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM conversations WHERE message_count = ?", (SMALL_MESSAGES,)
            )
        ]
        big, capped = (
            conn.execute(
                "SELECT id FROM conversations WHERE message_count = ?", (count,)
            ).fetchone()[0]
            for count in (BIG_MESSAGES, CAPPED_MESSAGES)
        )
        conn.close()
        points: list[Point] = []
        srv = self.server(pristine, "scale-messages")
        try:
            base = f"/v1/Conversations/{big}/messages?limit=50"
            # Follow nextCursor from the first page to the last.
            with httpx.Client(base_url=srv.base_url, headers=self.headers, timeout=60) as c:
                cursor, pages = None, 0
                while True:
                    r = c.get(base + (f"&cursor={cursor}" if cursor else ""))
                    r.raise_for_status()
                    pages += 1
                    nxt = r.json()["nextCursor"]
                    if nxt is None:
                        break
                    cursor = nxt
            size = f"{BIG_MESSAGES:,} messages"
            feed = "/v1/Conversations/feed?userId=msg-user&PageSize=20&PageNumber="
            get_small = self.ids_script("get-small", small, "get_by_id.lua")
            append_small = self.ids_script(
                "append-small", small, "post_messages.lua", body=bench_run.MESSAGE_BODY
            )
            append_big = self.ids_script(
                "append-big", [big], "post_messages.lua", body=bench_run.MESSAGE_BODY
            )
            measures: list[Measure] = [
                (
                    srv,
                    Point("message page", "messages, newest page (order=desc)", size, 1),
                    {"path": base + "&order=desc"},
                ),
                (srv, Point("message page", "messages, first page (asc)", size, 1), {"path": base}),
                (
                    srv,
                    Point(
                        "message page", f"messages, last page (cursor, page {pages})", size, pages
                    ),
                    {"path": base + f"&cursor={cursor}"},
                ),
                # A feed page's unread counts, with nothing marked read: page 2 holds
                # conversations of 10 messages, page 1 also the ones of 100,000 and of
                # 1,000 (the newest two).
                (
                    srv,
                    Point(
                        "messages", "feed page (unread counts)", f"{SMALL_MESSAGES}", SMALL_MESSAGES
                    ),
                    {"path": f"{feed}2"},
                ),
                (
                    srv,
                    Point(
                        "messages", "feed page (unread counts)", f"{BIG_MESSAGES:,}", BIG_MESSAGES
                    ),
                    {"path": f"{feed}1"},
                ),
                (
                    srv,
                    Point(
                        "messages",
                        "GET by id (its messages, 1,000 at most)",
                        f"{SMALL_MESSAGES}",
                        SMALL_MESSAGES,
                    ),
                    {"script": get_small},
                ),
                (
                    srv,
                    Point(
                        "messages",
                        "GET by id (its messages, 1,000 at most)",
                        f"{BIG_MESSAGES:,}",
                        BIG_MESSAGES,
                    ),
                    {"path": f"/v1/Conversations/{big}", "connections": 1, "timeout_s": 60},
                ),
                # The same answer (the newest 1,000 messages) from a conversation of
                # 1,000 and from one of 100,000: the stored size's own cost.
                (
                    srv,
                    Point(
                        "messages",
                        "GET by id (newest 1,000 returned)",
                        f"{CAPPED_MESSAGES:,}",
                        CAPPED_MESSAGES,
                    ),
                    {"path": f"/v1/Conversations/{capped}"},
                ),
                (
                    srv,
                    Point(
                        "messages",
                        "GET by id (newest 1,000 returned)",
                        f"{BIG_MESSAGES:,}",
                        BIG_MESSAGES,
                    ),
                    {"path": f"/v1/Conversations/{big}"},
                ),
                (
                    srv,
                    Point("messages", "append message", f"{SMALL_MESSAGES}", SMALL_MESSAGES),
                    {"script": append_small, "post": True},
                ),
                (
                    srv,
                    Point("messages", "append message", f"{BIG_MESSAGES:,}", BIG_MESSAGES),
                    {"script": append_big, "post": True},
                ),
            ]
            points = self.rounds(measures)
        finally:
            srv.stop()
            self.check_log(srv, points)
        return points

    def check_log(self, srv: servers.Server, points: list[Point]) -> None:
        summary = servers.summarize_log(srv.log_path)
        bad = summary.levels.get("error", 0) + summary.levels.get("critical", 0)
        if bad and points:
            points[-1].errors.append(f"{bad} error lines in {srv.log_path}: {summary.notable[:2]}")


# ---------------------------------------------------------------------------- report


def fmt(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:,.2f} ms"


def rounds_range(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else "—"


def markdown(points: list[Point]) -> str:
    rows = [
        "| operation | size | req/s | rounds | p50 | p99 | vs smallest | wrk -c |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    first: dict[str, float] = {}
    for p in points:
        key = f"{p.group}/{p.baseline or p.operation}" if p.group != "message page" else p.group
        base = first.setdefault(key, p.rps)
        ratio = f"{p.rps / base:.2f}x" if base and not p.errors else "—"
        rows.append(
            f"| {p.operation} | {p.size} | {p.rps:,.1f} | {rounds_range(p.rounds_rps)} | "
            f"{fmt(p.p50_ms)} | {fmt(p.p99_ms)} | "
            f"{ratio} | {p.connections} |" + (f" ERROR: {'; '.join(p.errors)}" if p.errors else "")
        )
    return "\n".join(rows)


def plot(points: list[Point], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("scale: matplotlib is not installed; no plot", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, group, xlabel in (
        (axes[0], "conversations", "conversations in the database"),
        (axes[1], "messages", "messages in the conversation"),
    ):
        ops: dict[str, list[Point]] = {}
        for p in points:
            if p.group == group and not p.errors:
                ops.setdefault(p.operation, []).append(p)
        for op, ps in ops.items():
            ax.plot([p.size_value for p in ps], [p.rps for p in ps], marker="o", label=op)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("req/s (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    pages = [p for p in points if p.group in ("feed page", "message page") and not p.errors]
    ax = axes[2]
    labels = [f"{p.operation}\n{p.size}" for p in pages]
    ax.barh(range(len(pages)), [p.rps for p in pages])
    for i, p in enumerate(pages):
        ax.text(p.rps, i, f" {p.rps:,.0f}", va="center", fontsize=7)
    ax.set_yticks(range(len(pages)), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("req/s (log)")
    ax.set_title("first, middle and last page")
    ax.invert_yaxis()
    axes[0].set_title("cost against conversations")
    axes[1].set_title("cost against messages in one conversation")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["10000", "1000000"], help="conversation counts")
    p.add_argument("--no-messages", action="store_true", help="skip the messages database")
    p.add_argument("--duration", type=float, default=5, help="seconds measured per point")
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument(
        "--rounds", type=int, default=3, help="runs per point, interleaved; medians are kept"
    )
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--wrk-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--build-only", action="store_true", help="build the databases and stop")
    p.add_argument(
        "--publish", action="store_true", help="copy the plot to docs/images/, the table to bench/"
    )
    p.add_argument("--src", type=Path, help="import airia_server from DIR (see run.py)")
    args = p.parse_args(argv)
    args.pinned = not args.no_pin and (os.cpu_count() or 1) > 1 and shutil.which("taskset")
    if wrk.missing("scale"):
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = bench_run.loadavg()
    kinds = list(args.sizes) + ([] if args.no_messages else ["messages"])
    dbs, builds = {}, {}
    for kind in kinds:
        dbs[kind], took = database(kind, args.src)
        if took is not None:
            builds[kind] = round(took, 1)
    if args.build_only:
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="airia-scale-"))
    points: list[Point] = []
    try:
        runner = Runner(args, workdir)
        print(f"== conversations: {', '.join(args.sizes)}", file=sys.stderr)
        points += runner.conversations({kind: dbs[kind] for kind in args.sizes})
        if "messages" in dbs:
            print("== messages", file=sys.stderr)
            points += runner.messages(dbs["messages"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    order = {"conversations": 0, "messages": 1, "feed page": 2, "message page": 3}
    points.sort(key=lambda p: (order[p.group], p.operation, p.size_value))
    busy = [f"{p.operation} @ {p.size}" for p in points if (p.cpu_others or 0) > 0.05]
    head = (
        f"Scale benchmark on {started} ({os.cpu_count()} CPUs, "
        f"server on CPU {args.server_cpu if args.pinned else '-'}, "
        f"wrk on CPU {args.wrk_cpu if args.pinned else '-'}, {args.warmup:g}s warm-up + "
        f"{args.duration:g}s per point, {args.rounds} interleaved rounds, medians); "
        f"load average {load_start} at start, "
        f"{bench_run.loadavg()} at end."
    )
    text = head + "\n\n" + markdown(points) + "\n"
    if busy:
        text += (
            "\nOther work took over 5% of the server CPU during: "
            + ", ".join(busy)
            + "; those figures are unreliable.\n"
        )
    if builds:
        text += f"\nBuilt this run (seconds): {builds}.\n"
    print(text)
    bench_run.RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    png = plot(points, bench_run.RESULTS / f"scale-{stamp}.png")
    payload = {
        "started": started,
        "loadavg_start": load_start,
        "databases": {k: str(v) for k, v in dbs.items()},
        "builds_s": builds,
        "points": [asdict(p) for p in points],
    }
    (bench_run.RESULTS / f"scale-{stamp}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (bench_run.RESULTS / "scale-latest.md").write_text(text)
    if png is not None:
        shutil.copyfile(png, bench_run.RESULTS / "scale-latest.png")
    if args.publish:
        TABLE.write_text(text)
        if png is not None:
            shutil.copyfile(png, PLOT)
    return 1 if any(p.errors for p in points) else 0


if __name__ == "__main__":
    sys.exit(main())
