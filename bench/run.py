"""Load-test airia-server against a plain Starlette hello, in one run.

    .venv/bin/python bench/run.py            # 2 s warm-up + 10 s per operation
    .venv/bin/python bench/run.py --quick    # 3 s per operation
    .venv/bin/python bench/run.py --only get create

Every figure comes from the same invocation: shared machines are noisy, so the
service is judged by its ratio to a hello floor measured in the same minute, not
against a number from another day. The floor is measured before and after the
service (the higher one counts; a wide spread flags a noisy machine). Servers
are pinned to one CPU, wrk to another.

Scenarios are a list (SCENARIOS below); each names the server it runs against,
prepares its data, measures, and states its targets. To add one (message
append, feed, PostgreSQL variants...), subclass Scenario or WrkScenario and
append it. A scenario that is not an HTTP load (e.g. WebSocket delivery latency)
implements `measure` itself and returns a Measurement.

Exit status: 0 when every measurement ran cleanly, even if a target was
MISSED; 1 when anything went wrong (a non-2xx answer, a socket error, a server
error in the log, a server that crashed); 2 when wrk is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers
import wrk
from servers import BENCH_DIR, REPO_DIR, Server

LUA = BENCH_DIR / "lua"
RESULTS = BENCH_DIR / "results"
HELLO = "hello"


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What scenarios share: options, the running server, and data handed on."""

    duration_s: float
    warmup_s: float
    wrk_options: wrk.WrkOptions
    server_cpu: int | None
    workdir: Path
    server_src: Path | None
    api_key: str
    server: Server | None = None
    floor: Server | None = None
    """A hello server up for the whole run, measured right before each row with a
    hello target (`local_floor`); idle, on the same CPU, while the row runs."""
    data: dict = field(default_factory=dict)
    """Hand-over between scenarios, e.g. the create rate and the ids it made."""

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.api_key}


@dataclass
class Measurement:
    name: str
    label: str
    server: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p75_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    duration_s: float = 0.0
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    target_ratio: float | None = None
    p99_factor: float | None = None
    ratio_to_hello: float | None = None
    local_floor: float | None = None
    """The hello floor measured right before this row (req/s): its ratio's divisor."""
    baseline: str | None = None
    """Another operation of the same run this one is compared with (PostgreSQL vs SQLite)."""
    target_vs_baseline: float | None = None
    ratio_to_baseline: float | None = None
    old_target: str | None = None
    """The target this operation had before (shown next to the current one)."""
    cpu: dict[str, float] | None = None
    """Shares of the server's CPU used by the server ("own") and by others while measuring."""
    wrk_cpu: dict[str, float] | None = None
    """The same for wrk's CPU."""
    cpu_us: dict[str, float] | None = None
    """Microseconds of CPU per request while measuring, over the whole machine: the
    server's processes ("server"), wrk, and the rest (the kernel's own threads and
    network work not charged to a process, anything else running)."""
    shared_cpus: int | None = None
    """For a row whose servers share all the machine's CPUs with wrk (two workers): how
    many. Its note then says what those CPUs allow at the baseline's cost per request."""
    rest_label: str = "the rest"
    """What `cpu_us["rest"]` is, in that note."""
    write_batches: dict[str, int] | None = None
    """The server's group commits while measuring (durable rows): batches per bucket of
    `airia_db_write_batch_duration_seconds` (upper bound in seconds, "+Inf"), and
    "writes", the writes they held."""
    missed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def p99_over_p50(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms else math.inf

    @property
    def has_target(self) -> bool:
        return has_target(self)

    def judge_baseline(self, others: dict[str, Measurement]) -> None:
        if self.baseline is None:
            return
        base = others.get(self.baseline)
        if base is None or base.errors or not base.rps:
            if self.target_vs_baseline is not None:
                self.notes.append(f"not compared: no clean {self.baseline} figure in this run")
            return
        self.ratio_to_baseline = self.rps / base.rps
        if self.shared_cpus and self.cpu_us and base.cpu_us:
            alone, here = base.cpu_us["server"], self.cpu_us
            ceiling = self.shared_cpus * 1e6 / (alone + here["wrk"] + here["rest"])
            self.notes.append(
                f"CPU per request: the servers {here['server']:.0f} µs (one alone, in"
                f" {self.baseline}: {alone:.0f} µs), wrk {here['wrk']:.0f} µs,"
                f" {self.rest_label} {here['rest']:.0f} µs. At one server's cost, with"
                f" what the others took here, {self.shared_cpus} CPUs serve at most"
                f" {ceiling:,.0f} req/s: {ceiling / base.rps:.2f}x {self.baseline}"
            )
        if self.target_vs_baseline is not None and self.ratio_to_baseline < self.target_vs_baseline:
            self.missed.append(
                f"{short_of(self.ratio_to_baseline, self.target_vs_baseline)}x {self.baseline}"
                f" < {self.target_vs_baseline}x"
            )

    def judge(self, hello_rps: float | None) -> None:
        """Against the floor measured right before the row when there is one, else
        the run's (the higher of its two)."""
        hello_rps = self.local_floor or hello_rps
        if hello_rps:
            self.ratio_to_hello = self.rps / hello_rps
        if self.target_ratio is not None:
            if self.ratio_to_hello is None:
                self.notes.append("throughput not judged: no hello floor in this run")
            elif self.ratio_to_hello < self.target_ratio:
                ratio = short_of(self.ratio_to_hello, self.target_ratio)
                self.missed.append(f"{ratio}x hello < {self.target_ratio}x")
        if self.p99_factor is not None and self.p99_over_p50 > self.p99_factor:
            self.missed.append(f"p99 {self.p99_over_p50:.1f}x p50 > {self.p99_factor}x")


def short_of(ratio: float, target: float) -> str:
    """A ratio below its target, to two decimals, or three where two would round it up
    to the target ("0.245", not "0.25 < 0.25")."""
    text = f"{ratio:.2f}"
    return text if float(text) < target else f"{math.floor(ratio * 1000) / 1000:.3f}"


# ------------------------------------------------------------------------- scenarios

LOCAL_FLOOR_S = 5.0


def local_floor(ctx: Context) -> float | None:
    """The hello floor right before a row, on the same CPUs: this machine's speed
    drifts over minutes (a run's first and last floors have been 20% apart), and a
    row measured in a slow minute should be judged against that minute's floor."""
    if ctx.floor is None:
        return None
    url = ctx.floor.base_url + "/"
    if ctx.warmup_s > 0:
        wrk.run(url, 1, ctx.wrk_options)
    result = wrk.run(url, min(LOCAL_FLOOR_S, ctx.duration_s), ctx.wrk_options)
    if result.non_2xx or result.total_socket_errors or not result.requests:
        return None
    return result.rps


class Scenario:
    name = ""
    label = ""
    server = "airia-sqlite"
    target_ratio: float | None = None
    """Minimum req/s as a fraction of the hello floor's."""
    p99_factor: float | None = None
    """Maximum p99 as a multiple of p50."""
    baseline: str | None = None
    target_vs_baseline: float | None = None
    old_target: str | None = None
    consumes_data = False
    """Its measurement uses its data up (each delete needs a conversation of its own):
    a second load (`bench/cpu_profile.py`) needs `prepare` again."""

    def prepare(self, ctx: Context) -> None:
        """Create whatever data the measurement needs (not timed)."""

    def measure(self, ctx: Context) -> Measurement:
        raise NotImplementedError

    def new_measurement(self) -> Measurement:
        return Measurement(
            self.name,
            self.label,
            self.server,
            target_ratio=self.target_ratio,
            p99_factor=self.p99_factor,
            baseline=self.baseline,
            target_vs_baseline=self.target_vs_baseline,
            old_target=self.old_target,
        )


class WrkScenario(Scenario):
    """Warm up, then measure, with wrk; any non-2xx answer or socket error is an error."""

    path = "/"
    expected_status = 200
    """When >= 400, every answer must be non-2xx instead (an error-path benchmark)."""
    timeout_s: int | None = None
    """wrk's per-request timeout when not the default (slow operations: a timed-out
    request is a socket error, which fails the run instead of measuring it)."""

    durable = False
    """Its requests write through the group commit: the row reports the server's write
    batches while measuring (from `/metrics`), so that a p99 set by the disk's fsync
    shows as such."""

    def options(self, ctx: Context) -> wrk.WrkOptions:
        if self.timeout_s is None:
            return ctx.wrk_options
        return dataclasses.replace(ctx.wrk_options, timeout_s=self.timeout_s)

    def script(self, ctx: Context, phase: str) -> Path | None:
        """The Lua script for `phase` ("warmup" or "measure"); None for a plain GET."""
        return None

    def server_pids(self, ctx: Context) -> list[int]:
        """The processes that serve the requests, for `Measurement.cpu_us`."""
        return [ctx.server.proc.pid] if ctx.server and ctx.server.proc else []

    def check(self, ctx: Context, result: wrk.WrkResult, m: Measurement) -> None:
        """Scenario-specific checks of a measured run; append to m.errors."""

    def run_wrk(self, ctx: Context, seconds: float, phase: str) -> wrk.WrkResult:
        assert ctx.server is not None
        return wrk.run(
            ctx.server.base_url + self.path,
            seconds,
            self.options(ctx),
            script=self.script(ctx, phase),
            headers=ctx.headers if self.server != HELLO else None,
        )

    def measure(self, ctx: Context) -> Measurement:
        m = self.new_measurement()
        if ctx.warmup_s > 0:
            self.run_wrk(ctx, ctx.warmup_s, "warmup")
        pid = ctx.server.proc.pid if ctx.server and ctx.server.proc else None
        before = servers.cpu_sample(ctx.server_cpu, pid)
        wrk_before = servers.cpu_sample(ctx.wrk_options.cpu, None)
        pids = self.server_pids(ctx)
        account = servers.cpu_account(pids)
        batches_before = write_batches(ctx) if self.durable else None
        result = self.run_wrk(ctx, ctx.duration_s, "measure")
        if batches_before is not None:
            m.write_batches = batches_between(batches_before, write_batches(ctx))
            if m.write_batches:
                m.notes.append(batches_note(m.write_batches))
        m.cpu_us = servers.cpu_per_request(account, servers.cpu_account(pids), result.requests)
        m.cpu = servers.cpu_shares(before, servers.cpu_sample(ctx.server_cpu, pid))
        m.wrk_cpu = servers.cpu_shares(wrk_before, servers.cpu_sample(ctx.wrk_options.cpu, None))
        for name in (
            "rps",
            "p50_ms",
            "p75_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "requests",
            "duration_s",
            "non_2xx",
        ):
            setattr(m, name, getattr(result, name))
        m.socket_errors = result.socket_errors
        if self.expected_status < 400 and result.non_2xx:
            m.errors.append(f"{result.non_2xx} non-2xx answers of {result.requests}")
        if self.expected_status >= 400 and result.non_2xx != result.requests:
            m.errors.append(
                f"expected {self.expected_status} for all, but {result.requests - result.non_2xx}"
                f" of {result.requests} answers were 2xx/3xx"
            )
        if result.total_socket_errors:
            m.errors.append(f"socket errors: {result.socket_errors}")
        if result.requests == 0:
            m.errors.append("no request completed")
        self.check(ctx, result, m)
        return m


class Hello(WrkScenario):
    """The floor: a plain Starlette JSON hello on the same uvicorn options."""

    name = HELLO
    label = "hello (Starlette floor)"
    server = HELLO


class HelloAgain(Hello):
    """The floor again at the end: the two bracket the service's runs. The ratios use
    the higher one (the stricter floor), and a large spread flags a noisy machine."""

    name = "hello-end"
    label = "hello again (end of run)"


BATCH_HISTOGRAM = 'airia_db_write_batch_duration_seconds_bucket{le="'
SLOW_BATCH_S = 0.05
"""A batch slower than this waited on the disk (an fsync, a WAL restart): its statements
take a few milliseconds."""


def write_batches(ctx: Context) -> dict[str, int] | None:
    """The server's write batch histogram as it stands (`parse_write_batches`); None
    when the server does not serve it."""
    assert ctx.server is not None
    try:
        return parse_write_batches(httpx.get(ctx.server.base_url + "/metrics", timeout=10).text)
    except httpx.HTTPError:
        return None


def parse_write_batches(text: str) -> dict[str, int] | None:
    """From Prometheus text: the write batch histogram's cumulative count per bound
    ("+Inf" last), and "writes", the writes committed; None without the histogram."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(BATCH_HISTOGRAM):
            bound, _, value = line[len(BATCH_HISTOGRAM) :].partition('"} ')
            found[bound] = int(float(value))
        elif line.startswith("airia_db_writes_total "):
            found["writes"] = int(float(line.split()[1]))
    return found if "+Inf" in found else None


def batches_between(before: dict[str, int], after: dict[str, int] | None) -> dict[str, int] | None:
    """Batches per bucket (not cumulative) between two readings of `write_batches`."""
    if after is None:
        return None
    out: dict[str, int] = {}
    below = 0
    for bound, count in after.items():
        if bound == "writes":
            continue
        total = count - before.get(bound, 0)
        out[bound] = total - below
        below = total
    out["writes"] = after.get("writes", 0) - before.get("writes", 0)
    return out if below else None


def batches_note(batches: dict[str, int]) -> str:
    """What `batches_between` found, in words: "1,602 write batches (32.1 writes each);
    14 over 50 ms, the slowest up to 500 ms" (a bucket's bound, not a measured time)."""
    buckets = [(b, n) for b, n in batches.items() if b != "writes"]
    total = sum(n for _, n in buckets)
    slowest = next(b for b, n in reversed(buckets) if n)
    slow = sum(n for b, n in buckets if b == "+Inf" or float(b) > SLOW_BATCH_S)
    slow_count = f"{slow:,}" if slow else "none"
    bound = "over 10 s" if slowest == "+Inf" else f"up to {float(slowest) * 1000:g} ms"
    return (
        f"{total:,} write batches ({batches['writes'] / total:.1f} writes each); "
        f"{slow_count} over {SLOW_BATCH_S * 1000:.0f} ms, the slowest {bound}"
    )


def create_conversations(
    ctx: Context, count: int, concurrency: int = 16, user_id: str | None = None
) -> list[str]:
    """Create `count` conversations through the API (many at once); return their ids.

    They belong to users bench-0 … bench-49 in turn, or all to `user_id`."""
    assert ctx.server is not None
    base = ctx.server.base_url

    async def main() -> list[str]:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=base, headers=ctx.headers, limits=limits) as c:
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> str:
                async with sem:
                    r = await c.post(
                        "/v1/Conversations",
                        json={"userId": user_id or f"bench-{i % 50}", "title": f"t{i}"},
                    )
                    r.raise_for_status()
                    return r.json()["conversationId"]

            return list(await asyncio.gather(*(one(i) for i in range(count))))

    return asyncio.run(main())


class GetById(WrkScenario):
    """GET /v1/Conversations/{id} over N pre-created conversations, in turn."""

    name = "get"
    label = "GET /v1/Conversations/{id}"
    target_ratio = 0.40
    p99_factor = 4.0
    old_target = "0.25x, p99 ≤ 5x"
    pool = 1000

    def prepare(self, ctx: Context) -> None:
        ids = create_conversations(ctx, self.pool)
        self.ids_file = ctx.workdir / "get.ids"
        self.ids_file.write_text("\n".join(ids) + "\n")

    def script(self, ctx: Context, phase: str) -> Path:
        return wrk.render_script(
            [LUA / "common.lua", LUA / "get_by_id.lua"],
            ctx.workdir / "get_by_id.lua",
            ids_file=str(self.ids_file),
            threads=ctx.wrk_options.threads,
        )


CREATE_BODY = json.dumps({"userId": "bench-user", "title": "Benchmark conversation"})


def collect_script(ctx: Context) -> Path:
    """The create script; every id it gets back lands in workdir/created-<thread>.ids."""
    return wrk.render_script(
        [LUA / "common.lua", LUA / "create_collect.lua"],
        ctx.workdir / "create_collect.lua",
        body=CREATE_BODY,
        out_prefix=str(ctx.workdir / "created-"),
        threads=ctx.wrk_options.threads,
    )


def created_ids(ctx: Context) -> list[str]:
    ids: list[str] = []
    for path in sorted(ctx.workdir.glob("created-*.ids")):
        ids += [line for line in path.read_text().splitlines() if line]
    return ids


class Create(WrkScenario):
    """POST /v1/Conversations: the 201 means committed and fsynced (group commit)."""

    name = "create"
    durable = True
    label = "POST /v1/Conversations (durable)"
    path = "/v1/Conversations"
    expected_status = 201
    target_ratio = 0.25
    p99_factor = 4.0
    old_target = "0.15x, p99 ≤ 5x"

    def run_wrk(self, ctx: Context, seconds: float, phase: str) -> wrk.WrkResult:
        return wrk.run(
            ctx.server.base_url + self.path,
            seconds,
            ctx.wrk_options,
            script=collect_script(ctx),
            headers={**ctx.headers, "Content-Type": "application/json"},
        )

    def check(self, ctx: Context, result: wrk.WrkResult, m: Measurement) -> None:
        unparsed = int(result.script_output.get("unparsed", "0"))
        if unparsed:
            m.errors.append(f"{unparsed} 201 answers without a conversationId")
        if not m.errors:
            ctx.data["create_rps"] = result.rps


class Delete(WrkScenario):
    """DELETE /v1/Conversations/{id}, every request a distinct, existing conversation.

    How the ids are guaranteed: deleting an id twice answers 404 (an error path,
    and wrk would count it as non-2xx), so each id must be used once. The create
    scenario's Lua script saves every id it was given; here we make sure the pool
    holds at least 2x the create rate x (warm-up + duration) ids, i.e. we allow
    delete to run twice as fast as create, topping the pool up with an unmeasured
    wrk create run when short. Warm-up and measurement walk disjoint slices. Should
    a thread still run out, its Lua script stops it and reports "exhausted", and
    the run fails instead of printing a rate that is too low.
    """

    name = "delete"
    durable = True
    consumes_data = True
    label = "DELETE /v1/Conversations/{id}"
    expected_status = 204
    target_ratio = 0.25
    p99_factor = 4.0
    old_target = "none"
    headroom = 2.0
    max_pool = 500_000

    def prepare(self, ctx: Context) -> None:
        rate = ctx.data.get("create_rps")
        if rate is None:  # create did not run (--only delete) or failed: learn the rate now
            probe = Create().run_wrk(ctx, 3, "fill")
            if probe.non_2xx or probe.total_socket_errors or not probe.requests:
                raise RuntimeError(
                    f"cannot create conversations to delete: {probe.non_2xx}"
                    f" non-2xx of {probe.requests}"
                )
            rate = probe.rps
        total_s = ctx.warmup_s + ctx.duration_s
        needed = min(self.max_pool, math.ceil(rate * self.headroom * total_s))
        for _ in range(3):  # the fill may run slower than the measured create did
            have = len(created_ids(ctx))
            if have >= needed:
                break
            seconds = math.ceil((needed - have) / max(rate, 1.0) * 1.2) + 1
            fill = Create().run_wrk(ctx, seconds, "fill")
            if fill.non_2xx or fill.total_socket_errors:
                raise RuntimeError(
                    f"filling the delete pool failed: {fill.non_2xx} non-2xx of "
                    f"{fill.requests}, socket errors {fill.socket_errors}"
                )
            rate = fill.rps
        ids = created_ids(ctx)
        # Warm-up gets its share of the pool, the measurement the rest.
        split = math.floor(len(ids) * ctx.warmup_s / total_s) if ctx.warmup_s else 0
        self.files = {
            "warmup": ctx.workdir / "delete-warmup.ids",
            "measure": ctx.workdir / "delete-measure.ids",
        }
        self.files["warmup"].write_text("\n".join(ids[:split]) + "\n")
        self.files["measure"].write_text("\n".join(ids[split:]) + "\n")
        self.pool_sizes = {"warmup": split, "measure": len(ids) - split}
        # The ids are consumed now; a second delete run must not reuse them.
        for path in ctx.workdir.glob("created-*.ids"):
            path.unlink()

    def script(self, ctx: Context, phase: str) -> Path:
        return wrk.render_script(
            [LUA / "common.lua", LUA / "delete_each_once.lua"],
            ctx.workdir / f"delete-{phase}.lua",
            ids_file=str(self.files[phase]),
            threads=ctx.wrk_options.threads,
        )

    def run_wrk(self, ctx: Context, seconds: float, phase: str) -> wrk.WrkResult:
        result = super().run_wrk(ctx, seconds, phase)
        if result.script_output.get("exhausted", "0") != "0":
            raise RuntimeError(
                f"delete {phase}: the pool of {self.pool_sizes[phase]} ids ran out"
                f" ({result.requests} requests); raise Delete.headroom"
            )
        return result

    def check(self, ctx: Context, result: wrk.WrkResult, m: Measurement) -> None:
        m.notes.append(f"pool {self.pool_sizes['measure']} ids, used {result.requests}")


def post_messages(ctx: Context, ids: list[str], per_conversation: int, concurrency: int = 16):
    """Append `per_conversation` messages to each conversation through the API."""
    assert ctx.server is not None

    async def main() -> None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=ctx.server.base_url, headers=ctx.headers, limits=limits, timeout=30
        ) as c:
            sem = asyncio.Semaphore(concurrency)

            async def one(cid: str, k: int) -> None:
                async with sem:
                    r = await c.post(
                        f"/v1/Conversations/{cid}/messages",
                        json={"message": f"Benchmark message number {k} of this conversation."},
                    )
                    r.raise_for_status()

            # One conversation's messages in order (they are numbered), conversations at once.
            async def conversation(cid: str) -> None:
                for k in range(per_conversation):
                    await one(cid, k)

            await asyncio.gather(*(conversation(cid) for cid in ids))

    asyncio.run(main())


class GetWithMessages(GetById):
    """GET /v1/Conversations/{id} of conversations holding 50 messages each (the body
    carries all 50, about 17 KB)."""

    name = "get-50"
    label = "GET /v1/Conversations/{id}, 50 messages"
    target_ratio = 0.20
    p99_factor = 4.0
    old_target = None
    pool = 20
    messages = 50

    def prepare(self, ctx: Context) -> None:
        ids = create_conversations(ctx, self.pool)
        post_messages(ctx, ids, self.messages)
        self.ids_file = ctx.workdir / f"{self.name}.ids"
        self.ids_file.write_text("\n".join(ids) + "\n")

    def script(self, ctx: Context, phase: str) -> Path:
        return wrk.render_script(
            [LUA / "common.lua", LUA / "get_by_id.lua"],
            ctx.workdir / f"{self.name}.lua",
            ids_file=str(self.ids_file),
            threads=ctx.wrk_options.threads,
        )


MESSAGE_BODY = json.dumps({"message": "A benchmark message of about sixty characters, plain text."})


class AppendMessage(WrkScenario):
    """POST /v1/Conversations/{id}/messages over 200 conversations in turn: the 201
    means the message and its event are committed and fsynced."""

    name = "append"
    durable = True
    label = "POST …/{id}/messages (durable)"
    expected_status = 201
    target_ratio = 0.25
    p99_factor = 4.0
    pool = 200

    def prepare(self, ctx: Context) -> None:
        ids = create_conversations(ctx, self.pool)
        self.ids_file = ctx.workdir / f"{self.name}.ids"
        self.ids_file.write_text("\n".join(ids) + "\n")

    def script(self, ctx: Context, phase: str) -> Path:
        return wrk.render_script(
            [LUA / "common.lua", LUA / "post_messages.lua"],
            ctx.workdir / f"{self.name}.lua",
            ids_file=str(self.ids_file),
            threads=ctx.wrk_options.threads,
            body=MESSAGE_BODY,
        )

    def run_wrk(self, ctx: Context, seconds: float, phase: str) -> wrk.WrkResult:
        return wrk.run(
            ctx.server.base_url,
            seconds,
            ctx.wrk_options,
            script=self.script(ctx, phase),
            headers={**ctx.headers, "Content-Type": "application/json"},
        )


def create_many_for(ctx: Context, user_id: str, count: int) -> int:
    """Give `user_id` exactly `count` conversations (through the API, with wrk: much
    faster than a Python client); returns how many the feed then reports."""
    assert ctx.server is not None

    def total() -> int:
        r = httpx.get(
            ctx.server.base_url + "/v1/Conversations/feed",
            params={"userId": user_id, "PageSize": 1},
            headers=ctx.headers,
            timeout=30,
        )
        r.raise_for_status()
        return r.json()["totalCount"]

    have = total()
    for _ in range(4):
        if have >= count:
            break
        missing = count - have
        if missing <= 200:  # the rest (wrk does not send the first request() it gets)
            create_conversations(ctx, missing, user_id=user_id)
            have = total()
            continue
        rate = ctx.data.get("create_rps") or 2000.0
        seconds = math.ceil(missing / rate * 1.5) + 1
        body = json.dumps({"userId": user_id, "title": "Feed benchmark conversation"})
        script = wrk.render_script(
            [LUA / "common.lua", LUA / "create_n.lua"],
            ctx.workdir / "create_n.lua",
            body=body,
            limit=missing,  # one wrk thread
            threads=1,
        )
        opts = wrk.WrkOptions(threads=1, connections=32, cpu=ctx.wrk_options.cpu, timeout_s=10)
        result = wrk.run(
            ctx.server.base_url,
            seconds,
            opts,
            script=script,
            headers={**ctx.headers, "Content-Type": "application/json"},
        )
        if result.non_2xx or result.total_socket_errors:
            raise RuntimeError(
                f"creating {missing} conversations for {user_id}: {result.non_2xx} non-2xx,"
                f" socket errors {result.socket_errors}"
            )
        have = total()
    if have != count:
        raise RuntimeError(f"{user_id} has {have} conversations, wanted {count}")
    return have


class Feed(WrkScenario):
    """GET /v1/Conversations/feed, the first page of 20, for a user with 10,000
    conversations (created beforehand through the API)."""

    name = "feed"
    label = "GET …/feed, page 1 of 20, user with 10,000"
    target_ratio = 0.20
    p99_factor = 4.0
    timeout_s = 60
    user = "feed-user"
    conversations = 10_000
    page = 1

    @property
    def path(self) -> str:  # type: ignore[override]
        return f"/v1/Conversations/feed?userId={self.user}&PageSize=20&PageNumber={self.page}"

    def prepare(self, ctx: Context) -> None:
        create_many_for(ctx, self.user, self.conversations)


# ------------------------------------------------------------ PostgreSQL variants

PG = "airia-pg"
PG_TWO = "airia-pg-two"


class PgGet(GetById):
    name = "pg-get"
    label = "PostgreSQL: GET /v1/Conversations/{id}"
    server = PG
    old_target = None
    baseline = "get"
    target_vs_baseline = 0.6


class PgCreate(Create):
    name = "pg-create"
    label = "PostgreSQL: POST /v1/Conversations"
    server = PG
    old_target = None
    baseline = "create"
    target_vs_baseline = 0.6

    def check(self, ctx: Context, result: wrk.WrkResult, m: Measurement) -> None:
        unparsed = int(result.script_output.get("unparsed", "0"))
        if unparsed:
            m.errors.append(f"{unparsed} 201 answers without a conversationId")


class PgAppend(AppendMessage):
    name = "pg-append"
    label = "PostgreSQL: POST …/{id}/messages"
    server = PG
    baseline = "append"
    target_vs_baseline = 0.6


class PgTwoInstances(GetById):
    """GET by id against two server processes over the same PostgreSQL database (and
    Redis), one pinned to each CPU, each loaded by its own wrk (half the connections),
    unpinned: on two cores the load generators, PostgreSQL and the servers all share
    them. The figure is the sum of the two; it is compared with pg-get (one instance,
    a whole CPU to itself, wrk on the other)."""

    name = "pg-two"
    label = "PostgreSQL: GET by id, two instances (sum)"
    server = PG_TWO
    target_ratio = None
    p99_factor = None
    old_target = None
    baseline = "pg-get"
    target_vs_baseline = 1.6

    def measure(self, ctx: Context) -> Measurement:
        assert ctx.server is not None
        first = ctx.server
        second = SERVERS[PG](ctx, name="airia-pg-2", cpu=1 - (ctx.server_cpu or 0))
        second.start()
        m = self.new_measurement()
        try:
            opts = wrk.WrkOptions(
                threads=1,
                connections=max(1, ctx.wrk_options.connections // 2),
                cpu=None,
                timeout_s=ctx.wrk_options.timeout_s,
            )
            script = self.script(ctx, "measure")

            def both(seconds: float) -> list[wrk.WrkResult]:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(2) as pool:
                    futures = [
                        pool.submit(
                            wrk.run,
                            srv.base_url + self.path,
                            seconds,
                            opts,
                            script=script,
                            headers=ctx.headers,
                        )
                        for srv in (first, second)
                    ]
                    return [f.result() for f in futures]

            if ctx.warmup_s > 0:
                both(ctx.warmup_s)
            before = servers.cpu_sample(ctx.server_cpu, first.proc.pid)
            pids = [first.proc.pid, second.proc.pid]
            account = servers.cpu_account(pids)
            results = both(ctx.duration_s)
            m.cpu = servers.cpu_shares(before, servers.cpu_sample(ctx.server_cpu, first.proc.pid))
            m.rps = sum(r.rps for r in results)
            m.requests = sum(r.requests for r in results)
            m.cpu_us = servers.cpu_per_request(account, servers.cpu_account(pids), m.requests)
            m.shared_cpus = 2
            m.rest_label = "PostgreSQL and the rest"
            m.duration_s = max(r.duration_s for r in results)
            for name in ("p50_ms", "p75_ms", "p90_ms", "p99_ms", "max_ms"):
                setattr(m, name, max(getattr(r, name) for r in results))
            m.non_2xx = sum(r.non_2xx for r in results)
            for r in results:
                for k, v in r.socket_errors.items():
                    m.socket_errors[k] = m.socket_errors.get(k, 0) + v
            if m.non_2xx:
                m.errors.append(f"{m.non_2xx} non-2xx answers of {m.requests}")
            if any(m.socket_errors.values()):
                m.errors.append(f"socket errors: {m.socket_errors}")
            m.notes.append(
                "two instances: "
                + " + ".join(f"{r.rps:,.0f}" for r in results)
                + " req/s; latency columns are the worse of the two; wrk unpinned, "
                "sharing both CPUs with the servers and PostgreSQL"
            )
        finally:
            second.stop()
            summary = servers.summarize_log(second.log_path)
            bad = summary.levels.get("error", 0) + summary.levels.get("critical", 0)
            if bad:
                m.errors.append(f"second instance: {bad} error lines in {second.log_path}")
        return m


# ------------------------------------------------------------------ two workers

SQLITE_TWO = "airia-sqlite-workers"


class TwoWorkers(GetById):
    """GET by id against `airia-server serve --workers 2` on SQLite (the embedded
    default, on one host), with one worker pinned to each CPU and wrk unpinned: the
    load generator shares both CPUs with the workers. Compared with `get` (one
    worker with a CPU to itself, wrk on the other)."""

    name = "two-workers"
    label = "GET by id, two workers (SQLite)"
    server = SQLITE_TWO
    target_ratio = None
    p99_factor = None
    old_target = None
    baseline = "get"
    target_vs_baseline = 1.6
    threads = 2
    pids: list[int] = []

    def prepare(self, ctx: Context) -> None:
        assert ctx.server is not None
        cpus = [0, 1] if ctx.server_cpu is not None else []
        if cpus:
            self.pids = servers.pin_workers(ctx.server, cpus)
        else:
            self.pids = servers.worker_pids(ctx.server, 2)
        super().prepare(ctx)

    def server_pids(self, ctx: Context) -> list[int]:
        return self.pids

    def options(self, ctx: Context) -> wrk.WrkOptions:
        return dataclasses.replace(ctx.wrk_options, threads=self.threads, cpu=None)

    def script(self, ctx: Context, phase: str) -> Path:
        return wrk.render_script(
            [LUA / "common.lua", LUA / "get_by_id.lua"],
            ctx.workdir / "two_workers.lua",
            ids_file=str(self.ids_file),
            threads=self.threads,
        )

    def measure(self, ctx: Context) -> Measurement:
        m = super().measure(ctx)
        # The pinned-CPU shares describe one process on one CPU; not this row.
        m.cpu = m.wrk_cpu = None
        m.shared_cpus = 2
        m.notes.append(
            "two workers, one pinned to each CPU; wrk (2 threads, unpinned) shares both"
            if ctx.server_cpu is not None
            else "two workers and wrk, unpinned"
        )
        return m


# A row compared with another runs right after it (two workers after `get`, two
# instances after `pg-get`): this machine's speed drifts over minutes, and the
# ratio should not measure the drift.
SCENARIOS: list[Scenario] = [
    Hello(),
    GetById(),
    TwoWorkers(),
    GetWithMessages(),
    AppendMessage(),
    Feed(),
    Create(),
    Delete(),
    PgGet(),
    PgTwoInstances(),
    PgCreate(),
    PgAppend(),
    HelloAgain(),
]


def pg_server(ctx: Context, name: str = PG, cpu: int | None = -1) -> Server:
    """airia-server on this run's PostgreSQL database (created on first use) and Redis."""
    if "pg_database" not in ctx.data:
        db = f"airia_bench_{secrets.token_hex(4)}"
        ctx.data["pg_url"] = servers.pg_create_database(db)
        ctx.data["pg_database"] = db
    return servers.airia_server(
        ctx.workdir,
        ctx.server_cpu if cpu == -1 else (cpu if ctx.server_cpu is not None else None),
        ctx.api_key,
        name=name,
        src=ctx.server_src,
        database_url=ctx.data["pg_url"],
        env={
            "AIRIA_REDIS_URL": servers.REDIS_URL,
            "AIRIA_REDIS_PREFIX": "bench-" + ctx.data["pg_database"],
        },
    )


SERVERS = {
    HELLO: lambda ctx: servers.hello_server(ctx.workdir, ctx.server_cpu),
    "airia-sqlite": lambda ctx: servers.airia_server(
        ctx.workdir, ctx.server_cpu, ctx.api_key, name="airia-sqlite", src=ctx.server_src
    ),
    PG: pg_server,
    PG_TWO: lambda ctx: pg_server(ctx, name="airia-pg-1"),
    SQLITE_TWO: lambda ctx: servers.airia_server(
        ctx.workdir,
        None,
        ctx.api_key,
        name=SQLITE_TWO,
        src=ctx.server_src,
        workers=2,
        # As deployed: events cross workers through Redis (docs/deployment.md).
        env={"AIRIA_REDIS_URL": servers.REDIS_URL, "AIRIA_REDIS_PREFIX": "bench-" + SQLITE_TWO},
    ),
}


# -------------------------------------------------------------------------- report


def fmt_ms(value: float) -> str:
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def has_target(m: Any) -> bool:
    """A row (a Measurement, or a row of bench/rounds.py) has something to be judged by."""
    targets = (m.target_ratio, m.p99_factor, m.target_vs_baseline)
    return any(target is not None for target in targets)


def target_text(m: Any) -> str:
    """The targets of a row: a Measurement, or a row of bench/rounds.py."""
    if m.server == HELLO:
        return "floor"
    parts = []
    if m.target_ratio is not None:
        parts.append(f"≥ {m.target_ratio}x hello")
    if m.p99_factor is not None:
        parts.append(f"p99 ≤ {m.p99_factor:g}x p50")
    if m.target_vs_baseline is not None:
        parts.append(f"≥ {m.target_vs_baseline}x {m.baseline}")
    text = ", ".join(parts) or "report only"
    return text + (f" (was {m.old_target})" if m.old_target else "")


def pass_text(m: Measurement) -> str:
    if m.errors:
        return "ERROR"
    if not m.has_target:
        return "—"
    return "MISSED: " + "; ".join(m.missed) if m.missed else "yes"


def markdown(results: list[Measurement]) -> str:
    rows = [
        "| operation | req/s | p50 | p99 | p99/p50 | hello beside | ratio to hello"
        " | compared with | target | pass? |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for m in results:
        ratio = f"{m.ratio_to_hello:.2f}x" if m.ratio_to_hello is not None else "—"
        beside = f"{m.local_floor:,.0f}" if m.local_floor else "—"
        versus = (
            f"{m.ratio_to_baseline:.2f}x {m.baseline}" if m.ratio_to_baseline is not None else "—"
        )
        rows.append(
            f"| {m.label} | {m.rps:,.0f} | {fmt_ms(m.p50_ms)} | {fmt_ms(m.p99_ms)} | "
            f"{m.p99_over_p50:.1f} | {beside} | {ratio} | {versus} | {target_text(m)} |"
            f" {pass_text(m)} |"
        )
    return "\n".join(rows)


def loadavg() -> str:
    """1-minute load average: other work on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.2f}"


def fs_type(path: Path) -> str:
    """The filesystem under `path` (fsync on tmpfs is free, which flatters writes)."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def git_commit() -> str:
    """This checkout's commit, short; "?" outside git."""
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_DIR
    )
    return proc.stdout.strip() or "?"


def server_source(src: Path | None) -> str:
    """Where the measured server's code came from: `--src`, or this checkout's working
    tree, and whether its src/ differs from the commit."""
    if src is not None:
        return str(src)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=REPO_DIR
    ).stdout.strip()
    return "working tree, src/ modified" if dirty else "working tree"


def environment(args: argparse.Namespace, ctx: Context) -> dict:
    def out(cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=10)
            return (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    return {
        "git_commit": git_commit(),
        "server_source": server_source(ctx.server_src),
        "wrk": out(["wrk", "--version"]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "server_cpu": ctx.server_cpu,
        "wrk_cpu": ctx.wrk_options.cpu,
        "wrk_threads": ctx.wrk_options.threads,
        "wrk_connections": ctx.wrk_options.connections,
        "warmup_s": ctx.warmup_s,
        "duration_s": ctx.duration_s,
        "database_fs": fs_type(ctx.workdir),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds measured per operation")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each")
    p.add_argument("--quick", action="store_true", help="3 s per operation (for development)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument("--wrk-cpu", type=int, default=1, help="CPU wrk is pinned to")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[s.name for s in SCENARIOS],
        help="run only these scenarios (" + ", ".join(s.name for s in SCENARIOS) + ")",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="also measure WebSocket delivery latency and memory (bench/realtime.py)",
    )
    p.add_argument(
        "--realtime-messages", type=int, default=200, help="messages per latency measurement"
    )
    p.add_argument("--workdir", type=Path, help="where the database and logs go (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    p.add_argument(
        "--src",
        type=Path,
        metavar="DIR",
        help="import airia_server from DIR (holding airia_server/) instead of the\n"
        "installed tree, e.g. DIR/src after `git archive <commit> src | tar -x -C DIR`",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk.missing("bench"):
        return 2

    pinned = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1
    if not pinned and not args.no_pin:
        print("bench: fewer than 2 CPUs or no taskset; running unpinned", file=sys.stderr)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="airia-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        duration_s=args.duration,
        warmup_s=args.warmup,
        wrk_options=wrk.WrkOptions(
            threads=1, connections=args.connections, cpu=args.wrk_cpu if pinned else None
        ),
        server_cpu=args.server_cpu if pinned else None,
        workdir=workdir,
        server_src=args.src.resolve() if args.src else None,
        api_key="bench-" + secrets.token_hex(24),
    )
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = loadavg()
    results: list[Measurement] = []
    failures: list[str] = []
    realtime_result: dict | None = None
    logs: dict[str, dict] = {}

    # Consecutive scenarios on the same server share one process.
    groups: list[tuple[str, list[Scenario]]] = []
    for s in scenarios:
        if groups and groups[-1][0] == s.server:
            groups[-1][1].append(s)
        else:
            groups.append((s.server, [s]))

    try:
        if any(s.server == HELLO for s in scenarios):
            ctx.floor = servers.hello_server(workdir, ctx.server_cpu, name="hello-beside").start()
        for server_name, group in groups:
            server = SERVERS[server_name](ctx)
            print(f"== {server_name}: starting (log: {server.log_path})", file=sys.stderr)
            ctx.server = server.start()
            try:
                for s in group:
                    print(f"   {s.name}: preparing", file=sys.stderr)
                    try:
                        s.prepare(ctx)
                        floor = local_floor(ctx) if s.target_ratio is not None else None
                        print(f"   {s.name}: measuring {ctx.duration_s:g}s", file=sys.stderr)
                        m = s.measure(ctx)
                        m.local_floor = floor
                    except (RuntimeError, wrk.WrkError, httpx.HTTPError) as exc:
                        m = s.new_measurement()
                        m.errors.append(f"{type(exc).__name__}: {exc}")
                    if server.proc.poll() is not None:
                        m.errors.append(f"{server_name} exited with {server.proc.returncode}")
                    results.append(m)
                    status = "; ".join(m.errors) or f"{m.rps:,.0f} req/s"
                    print(f"   {s.name}: {status}", file=sys.stderr)
            finally:
                code = server.stop()
                ctx.server = None
            if server_name != HELLO:
                summary = servers.summarize_log(server.log_path)
                logs[server_name] = {
                    "lines": summary.lines,
                    "levels": dict(summary.levels),
                    "statuses": {str(k): v for k, v in summary.statuses.items()},
                    "slowest_ms": summary.slowest_ms,
                    "slowest": summary.slowest_line,
                    "notable": summary.notable,
                    "exit_code": code,
                }
                bad = summary.levels.get("error", 0) + summary.levels.get("critical", 0)
                if bad:
                    failures.append(f"{server_name}: {bad} error lines in {server.log_path}")
        if args.realtime:
            import realtime

            print("== realtime: WebSocket delivery and memory", file=sys.stderr)
            realtime_result = realtime.run(ctx, messages=args.realtime_messages)
            failures += [f"realtime: {e}" for e in realtime_result["errors"]]
    finally:
        if ctx.floor is not None:
            ctx.floor.stop()
        if "pg_database" in ctx.data:
            try:
                servers.pg_drop_database(ctx.data["pg_database"])
            except RuntimeError as exc:
                print(f"bench: {exc}", file=sys.stderr)
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    floors = [m.rps for m in results if m.server == HELLO and not m.errors]
    floor = max(floors) if floors else None
    spread = (max(floors) - min(floors)) / max(floors) if len(floors) > 1 else 0.0
    for m in results:
        if m.server != HELLO:
            m.judge(floor)
        elif not m.errors:
            m.ratio_to_hello = m.rps / floor
        failures += [f"{m.name}: {e}" for e in m.errors]
    by_name = {m.name: m for m in results}
    for m in results:
        m.judge_baseline(by_name)

    env = environment(args, ctx)
    env["loadavg_start"], env["loadavg_end"] = load_start, loadavg()
    env["hello_spread"] = spread
    table = markdown(results)
    report = [
        f"Benchmark of {env['git_commit']} ({env['server_source']}) on {started}"
        f" ({env['cpus']} CPUs, "
        f"server on CPU {env['server_cpu']}, wrk on CPU {env['wrk_cpu']}, "
        f"-c{env['wrk_connections']}, {env['warmup_s']:g}s warm-up + {env['duration_s']:g}s;"
        f" database on {env['database_fs']})",
        "",
        table,
    ]
    if len(floors) > 1:
        report.append(
            f"\nHello floor at start and end: {' and '.join(f'{f:,.0f}' for f in floors)}"
            f" req/s, spread {spread:.0%}"
            + (" — NOISY machine, compare ratios with care." if spread > 0.15 else ".")
            + " Each row with a hello target is judged against the floor measured right"
            " before it (hello beside); a row without one, against the higher of these."
        )
    report.append(f"\nLoad average at start {env['loadavg_start']}, at end {env['loadavg_end']}.")

    def shares(attr: str) -> str:
        return ", ".join(
            f"{m.name} {getattr(m, attr)['own']:.0%}/{getattr(m, attr)['others']:.0%}"
            for m in results
            if getattr(m, attr)
        )

    if any(m.cpu for m in results):
        report.append(
            "\nCPU use while measuring, ours/others': server CPU "
            f"{ctx.server_cpu}: {shares('cpu')}; wrk CPU {ctx.wrk_options.cpu}: "
            f"{shares('wrk_cpu')}."
        )
        busy = [
            m.name for m in results if any(c and c["others"] > 0.05 for c in (m.cpu, m.wrk_cpu))
        ]
        if busy:
            report.append(
                "Other work used over 5% of a benchmark CPU during: "
                f"{', '.join(busy)}; those figures are unreliable."
            )
    for m in results:
        for note in m.notes:
            report.append(f"\n- {m.name}: {note}")
    for name, log in logs.items():
        report.append(
            f"\n- {name} log: {log['lines']} lines, levels {log['levels']}, statuses "
            f"{log['statuses']}, slowest request {log['slowest']!r}"
        )
        for line in log["notable"]:
            report.append(f"  - {line}")
    if realtime_result is not None:
        report.append("\n" + realtime_result["markdown"])
    missed = [m for m in results if m.missed and not m.errors]
    if missed:
        report.append("\nMISSED: " + "; ".join(f"{m.name} ({', '.join(m.missed)})" for m in missed))
    if failures:
        report.append("\nERRORS:\n" + "\n".join(f"- {f}" for f in failures))
    text = "\n".join(report) + "\n"
    print(text)

    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    payload = {
        "started": started,
        "environment": env,
        "results": [
            {**asdict(m), "p99_over_p50": m.p99_over_p50, "passed": not m.missed and not m.errors}
            for m in results
        ],
        "server_logs": logs,
        "realtime": realtime_result,
        "errors": failures,
    }
    (RESULTS / f"{stamp}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(text)
    print(f"written: {RESULTS / (stamp + '.json')}, {RESULTS / 'latest.md'}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
