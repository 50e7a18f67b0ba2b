"""WebSocket delivery latency and idle-socket memory of airia-server.

    .venv/bin/python bench/realtime.py                 # = make bench-realtime
    .venv/bin/python bench/realtime.py --messages 50   # shorter
    .venv/bin/python bench/run.py --realtime           # as part of make bench

Delivery: N sockets (1, 100, 1,000) subscribe to one conversation; the harness
posts messages one at a time (POST /v1/Conversations/{id}/messages) and times,
for every socket, perf_counter() from just before the POST to the receipt of
that message's `message.created` frame. perf_counter is CLOCK_MONOTONIC, shared
by every process on the machine, so client processes can time it. The next
message is posted once every socket has its copy: each figure is one event's
fan-out, without queueing behind the previous one. The sockets are opened by
client processes (uvloop + the `websockets` library, 500 sockets per process
at most) pinned to the client CPU; the server runs alone on the server CPU.
Client-side receive work is part of the figure: the last socket's frame waits
for the client to read the others on the same core. That is why the clients
run on uvloop, as the server does: on asyncio's own loop, reading 10,000
sockets took the client core longer than the server took to write them.

Memory: a fresh server, RSS (VmRSS, /proc/<pid>/status) after a warm-up, then
with 1,000 or 10,000 idle sockets open (after they settle); the difference per
socket. Then one event at a time to all 10,000, timed as above. The clients
offer permessage-deflate, as browsers and the websockets library do by default;
the report says whether the server took it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import queue
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers

PER_PROCESS = 500
"""Sockets per client process at most."""
STOP = "rt stop"


# ---------------------------------------------------------------------- client side


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _RawSocket(asyncio.Protocol):
    """A WebSocket client reduced to what the measurement needs: the handshake, then
    unmasked server frames split off the stream, pings answered. Thousands of sockets
    on one client core: the `websockets` library's ~40 us per received frame would be
    the figure being measured, not the server's fan-out."""

    def __init__(self, request: bytes, on_text, on_closed) -> None:
        self.request = request
        self.on_text = on_text
        self.on_closed = on_closed
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        if not self.upgraded.done():
            head, sep, buf = buf.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(head.split(b"\r\n")[0].decode()))
                return
            self.upgraded.set_result(None)
        while len(buf) >= 2:
            opcode, size, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, at = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + size:
                break
            payload, buf = buf[at : at + size], buf[at + size :]
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x9:  # ping: pong with the payload, masked as clients must
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + mask + masked)
            elif opcode == 0x8:
                self.transport.close()
        self.buffer = buf

    def connection_lost(self, exc) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
        self.on_closed()


def _raw_client(url: str, count: int, out: mp.Queue) -> None:
    import base64
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}"

    async def main() -> None:
        received: dict[int, list[float]] = {}
        sockets: list[_RawSocket] = []
        errors: list[str] = []
        sem = asyncio.Semaphore(64)
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()
        state = {"n": 0, "stopped": 0}

        def on_text(payload: bytes) -> None:
            now = time.perf_counter()
            at = payload.find(b'"message":"rt ')
            if at < 0 or b'"message.created"' not in payload:
                return
            word = payload[at + 14 : payload.index(b'"', at + 14)]
            if word == b"stop":
                state["stopped"] += 1
                if state["stopped"] == state["n"]:
                    closed.set()
                return
            i = int(word)
            times = received.setdefault(i, [])
            times.append(now)
            if len(times) == state["n"]:
                out.put(("got", i, received.pop(i)))

        async def open_one() -> None:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            async with sem:
                try:
                    _, proto = await loop.create_connection(
                        lambda: _RawSocket(request, on_text, lambda: None),
                        parts.hostname,
                        parts.port,
                    )
                    await asyncio.wait_for(proto.upgraded, 60)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return
                sockets.append(proto)

        await asyncio.gather(*(open_one() for _ in range(count)))
        state["n"] = len(sockets)
        out.put(("ready", len(sockets), errors[:5], len(errors), False))
        if sockets:
            await closed.wait()
        for proto in sockets:
            proto.transport.close()

    # uvloop, as the server runs: asyncio's own loop spends longer per received frame
    # than the server spends writing it, and the client core would be the figure.
    uvloop.run(main())


def client_main(url: str, count: int, cpu: int | None, out: mp.Queue, deflate: bool) -> None:
    """Open `count` sockets on `url` (offering permessage-deflate when `deflate`);
    report ready; for every "rt <i>" message, once all sockets have it, report
    (i, receipt times); exit on "rt stop". Without deflate the sockets are _RawSocket."""
    deflate_offer = deflate
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    _raise_nofile()
    if not deflate:
        _raw_client(url, count, out)
        return
    from websockets.asyncio.client import connect

    async def main() -> None:
        received: dict[int, list[float]] = {}
        sockets = []
        sem = asyncio.Semaphore(64)
        errors: list[str] = []
        deflate = None
        offer = deflate_offer

        async def open_one() -> None:
            nonlocal deflate
            async with sem:
                try:
                    ws = await connect(
                        url,
                        ping_interval=None,
                        open_timeout=60,
                        max_queue=None,
                        compression="deflate" if offer else None,
                    )
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return
                if deflate is None:
                    ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                    deflate = "permessage-deflate" in ext
                sockets.append(ws)

        await asyncio.gather(*(open_one() for _ in range(count)))
        out.put(("ready", len(sockets), errors[:5], len(errors), deflate))
        if not sockets:
            return
        done = asyncio.Event()
        n = len(sockets)

        async def reader(ws) -> None:
            try:
                async for raw in ws:
                    now = time.perf_counter()
                    if '"message.created"' not in raw:
                        continue
                    text = json.loads(raw)["data"]["message"]
                    if text == STOP:
                        break
                    i = int(text.split()[1])
                    times = received.setdefault(i, [])
                    times.append(now)
                    if len(times) == n:
                        out.put(("got", i, received.pop(i)))
            except Exception as exc:
                out.put(("error", f"{type(exc).__name__}: {exc}"[:200]))
            finally:
                done.set()

        await asyncio.gather(*(reader(ws) for ws in sockets))
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    uvloop.run(main())


# -------------------------------------------------------------------- coordinator


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Subscribers:
    """Client processes holding `count` sockets on one conversation."""

    def __init__(self, url: str, count: int, cpu: int | None, deflate: bool = True) -> None:
        self.ctx = mp.get_context("spawn")
        self.out = self.ctx.Queue()
        shares = [PER_PROCESS] * (count // PER_PROCESS)
        if count % PER_PROCESS:
            shares.append(count % PER_PROCESS)
        self.procs = [
            self.ctx.Process(target=client_main, args=(url, n, cpu, self.out, deflate), daemon=True)
            for n in shares
        ]
        self.count = count
        self.errors: list[str] = []
        self.deflate: bool | None = None
        self.pending: list[tuple] = []

    def open(self, timeout_s: float = 180.0) -> int:
        for p in self.procs:
            p.start()
        opened, deadline = 0, time.monotonic() + timeout_s
        for _ in self.procs:
            msg = self._get(deadline)
            _, n, errors, n_errors, deflate = msg
            opened += n
            if n_errors:
                self.errors.append(f"{n_errors} sockets failed to open, e.g. {errors}")
            self.deflate = deflate if self.deflate is None else self.deflate
        return opened

    def _get(self, deadline: float) -> tuple:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("client processes did not answer in time")
            try:
                msg = self.out.get(timeout=left)
            except queue.Empty as exc:
                raise TimeoutError("client processes did not answer in time") from exc
            if msg[0] == "error":
                self.errors.append(msg[1])
                continue
            return msg

    def wait_for(self, i: int, timeout_s: float = 30.0) -> list[float]:
        """Every socket's receipt time of message i."""
        times: list[float] = []
        got, deadline = 0, time.monotonic() + timeout_s
        while got < len(self.procs):
            msg = self._get(deadline)
            if msg[0] == "got" and msg[1] == i:
                times += msg[2]
                got += 1
        return times

    def close(self) -> None:
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


class Coordinator:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"X-API-KEY": api_key}, timeout=30)

    def conversation(self) -> tuple[str, str]:
        r = self.http.post("/v1/Conversations", json={"userId": "rt-user", "title": "realtime"})
        r.raise_for_status()
        body = r.json()
        return body["conversationId"], body["websocketUrl"]

    def post(self, cid: str, text: str) -> float:
        """POST a message; the time just before it was sent."""
        t0 = time.perf_counter()
        r = self.http.post(f"/v1/Conversations/{cid}/messages", json={"message": text})
        if r.status_code != 201:
            raise RuntimeError(f"message POST answered {r.status_code}: {r.text[:200]}")
        return t0

    def deliver(self, cid: str, subs: Subscribers, messages: int, first: int = 0) -> dict:
        latencies: list[float] = []
        posts: list[float] = []
        for i in range(first, first + messages):
            t0 = self.post(cid, f"rt {i}")
            posts.append(time.perf_counter() - t0)
            latencies += [t - t0 for t in subs.wait_for(i)]
            time.sleep(0.005)
        return {
            "messages": messages,
            "samples": len(latencies),
            "p50_ms": pct(latencies, 50) * 1000,
            "p99_ms": pct(latencies, 99) * 1000,
            "max_ms": max(latencies) * 1000,
            "post_p50_ms": pct(posts, 50) * 1000,
        }

    def stop(self, cid: str, subs: Subscribers) -> None:
        self.post(cid, STOP)
        subs.close()


def start_server(ctx, name: str) -> servers.Server:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if hard == resource.RLIM_INFINITY else hard
    srv = servers.airia_server(
        ctx.workdir, ctx.server_cpu, ctx.api_key, name=name, src=ctx.server_src, nofile=nofile
    )
    return srv.start()


def run(
    ctx,
    messages: int = 200,
    sizes: tuple[int, ...] = (1, 100, 1000),
    idle: tuple[int, ...] = (1000, 10_000),
    fanout_messages: int = 20,
) -> dict:
    """Measure; returns {"delivery": [...], "memory": [...], "errors": [...], "markdown"}."""
    client_cpu = ctx.wrk_options.cpu
    old_affinity = os.sched_getaffinity(0)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    _raise_nofile()
    delivery: list[dict] = []
    memory: list[dict] = []
    errors: list[str] = []
    try:
        srv = start_server(ctx, "airia-realtime")
        try:
            co = Coordinator(srv.base_url, ctx.api_key)
            for n in sizes:
                cid, url = co.conversation()
                subs = Subscribers(url, n, client_cpu)
                row: dict = {"sockets": n}
                try:
                    opened = subs.open()
                    if opened != n:
                        raise RuntimeError(f"opened {opened} of {n} sockets: {subs.errors}")
                    co.deliver(cid, subs, min(10, messages), first=10_000)  # warm-up
                    cpu_before = servers.cpu_sample(ctx.server_cpu, srv.proc.pid)
                    cli_before = servers.cpu_sample(client_cpu, None)
                    row |= co.deliver(cid, subs, messages)
                    row["cpu"] = servers.cpu_shares(
                        cpu_before, servers.cpu_sample(ctx.server_cpu, srv.proc.pid)
                    )
                    row["client_cpu_busy"] = _busy(cli_before, client_cpu)
                    row["deflate"] = subs.deflate
                    co.stop(cid, subs)
                except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    subs.close()
                row["errors"] = subs.errors
                errors += [f"delivery to {n}: {e}" for e in subs.errors]
                if "error" in row:
                    errors.append(f"delivery to {n}: {row['error']}")
                delivery.append(row)
                print(f"   delivery to {n}: {_short(row)}", file=sys.stderr)
        finally:
            srv.stop()
            _log_errors(srv, errors)

        for n, offer in [(n, True) for n in idle] + [(n, False) for n in idle]:
            srv = start_server(ctx, f"airia-realtime-{n}-{'deflate' if offer else 'plain'}")
            row = {"sockets": n, "offered_deflate": offer}
            try:
                co = Coordinator(srv.base_url, ctx.api_key)
                cid, url = co.conversation()
                # Warm-up: every code path a socket takes, so imports and caches are loaded.
                warm = Subscribers(url, 20, client_cpu)
                warm.open()
                co.deliver(cid, warm, 5, first=20_000)
                co.stop(cid, warm)
                for _ in range(20):
                    co.http.get(f"/v1/Conversations/{cid}")
                time.sleep(1.0)
                row["rss_before_kib"] = servers.rss_kib(srv.proc.pid)
                subs = Subscribers(url, n, client_cpu, deflate=offer)
                t = time.perf_counter()
                opened = subs.open(timeout_s=600)
                row["open_s"] = time.perf_counter() - t
                row["opened"] = opened
                time.sleep(3.0)
                row["rss_after_kib"] = servers.rss_kib(srv.proc.pid)
                row["kib_per_socket"] = (row["rss_after_kib"] - row["rss_before_kib"]) / max(
                    opened, 1
                )
                row["deflate"] = subs.deflate
                if opened != n:
                    row["error"] = f"opened {opened} of {n} sockets: {subs.errors[:3]}"
                elif n >= 10_000 and fanout_messages:
                    co.deliver(cid, subs, 2, first=30_000)  # warm-up
                    row["delivery"] = co.deliver(cid, subs, fanout_messages)
                co.stop(cid, subs)
                row["errors"] = subs.errors
            except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                srv.stop()
                _log_errors(srv, errors)
            if "error" in row:
                errors.append(f"memory with {n}: {row['error']}")
            memory.append(row)
            print(f"   idle {n} (deflate offered: {offer}): {_short(row)}", file=sys.stderr)
    finally:
        os.sched_setaffinity(0, old_affinity)
    result = {"delivery": delivery, "memory": memory, "errors": errors}
    result["markdown"] = markdown(result)
    return result


def _busy(before, cpu) -> float | None:
    after = servers.cpu_sample(cpu, None)
    if before is None or after is None or after.cpu_total <= before.cpu_total:
        return None
    return (after.cpu_busy - before.cpu_busy) / (after.cpu_total - before.cpu_total)


def _short(row: dict) -> str:
    keep = ("p50_ms", "p99_ms", "kib_per_socket", "open_s", "error")
    return ", ".join(
        f"{k}={row[k]:.1f}" if isinstance(row[k], float) else f"{k}={row[k]}"
        for k in keep
        if k in row
    )


def _log_errors(srv: servers.Server, errors: list[str]) -> None:
    summary = servers.summarize_log(srv.log_path)
    bad = summary.levels.get("error", 0) + summary.levels.get("critical", 0)
    if bad:
        errors.append(f"{srv.name}: {bad} error lines in {srv.log_path}: {summary.notable[:2]}")


DELIVERY_TARGET_MS = {1000: 100.0, 10_000: 250.0}
MEMORY_TARGET_KIB = 50.0


def _sockets(row: dict) -> str:
    """A memory row's sockets: the compression they ran with, and whose clients: those that
    offer permessage-deflate are the `websockets` library's, the others the minimal
    frame reader (`_RawSocket`), which reads 10,000 sockets faster on the client's
    core, so the two rows' delivery times differ by the clients' own work. The
    server declines the offer unless configured to take it."""
    used = {True: "permessage-deflate", False: "none", None: "?"}[row.get("deflate")]
    offered = row.get("offered_deflate")
    if offered is None:
        return used
    clients = "websockets clients, deflate offered" if offered else "minimal frame reader"
    return f"{used}; {clients}"


def markdown(result: dict) -> str:
    rows = [
        "| WebSocket delivery | messages | p50 | p99 | max | POST p50 | target | pass? |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]

    def line(label: str, r: dict, n: int) -> str:
        target = DELIVERY_TARGET_MS.get(n)
        if "p99_ms" not in r:
            return f"| {label} | — | — | — | — | — | — | ERROR |"
        verdict = "—" if target is None else ("yes" if r["p99_ms"] < target else "MISSED")
        return (
            f"| {label} | {r['messages']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
            f"{r['max_ms']:.1f} ms | {r['post_p50_ms']:.1f} ms | "
            f"{f'p99 < {target:g} ms' if target else 'report only'} | {verdict} |"
        )

    for r in result["delivery"]:
        rows.append(line(f"POST → {r['sockets']:,} socket(s)", r, r["sockets"]))
    for r in result["memory"]:
        if "delivery" in r:
            rows.append(
                line(
                    f"POST → {r['sockets']:,} sockets ({_sockets(r)})",
                    r["delivery"],
                    r["sockets"],
                )
            )
    rows += [
        "",
        "| idle sockets | compression; clients | opened | RSS before | RSS after | per socket"
        " | target | pass? |",
        "|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in result["memory"]:
        how = _sockets(r)
        if "kib_per_socket" not in r:
            rows.append(f"| {r['sockets']:,} | {how} | — | — | — | — | < 50 KiB | ERROR |")
            continue
        verdict = "yes" if r["kib_per_socket"] < MEMORY_TARGET_KIB else "MISSED"
        rows.append(
            f"| {r['sockets']:,} | {how} | {r['opened']:,} in {r['open_s']:.0f} s | "
            f"{r['rss_before_kib'] / 1024:.0f} MiB | {r['rss_after_kib'] / 1024:.0f} MiB | "
            f"{r['kib_per_socket']:.1f} KiB | < {MEMORY_TARGET_KIB:g} KiB | {verdict} |"
        )
    notes = []
    deflate = {r.get("deflate") for r in result["delivery"]} - {None}
    if deflate:
        notes.append(
            "Delivery rows for 1 to 1,000 sockets: the clients offered permessage-deflate (as"
            " browsers do) and the server "
            + ("took it" if True in deflate else "declined it")
            + "."
        )
    busy = [
        f"{r['sockets']} ({r['cpu']['others']:.0%} of the server CPU)"
        for r in result["delivery"]
        if r.get("cpu") and r["cpu"]["others"] > 0.05
    ]
    if busy:
        notes.append(
            "Other work took over 5% of the server CPU during delivery to "
            + ", ".join(busy)
            + ": those figures are unreliable."
        )
    for e in result["errors"]:
        notes.append(f"ERROR: {e}")
    return "\n".join(rows + (["", *notes] if notes else []))


def main(argv: list[str] | None = None) -> int:
    import run as bench_run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200, help="messages per delivery figure")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000])
    p.add_argument("--idle", type=int, nargs="+", default=[1000, 10_000])
    p.add_argument("--fanout-messages", type=int, default=20, help="messages to the 10,000")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--src", type=Path, help="import airia_server from DIR (see run.py)")
    args = p.parse_args(argv)
    pinned = not args.no_pin and (os.cpu_count() or 1) > 1
    workdir = Path(tempfile.mkdtemp(prefix="airia-rt-"))
    ctx = bench_run.Context(
        duration_s=0,
        warmup_s=0,
        wrk_options=bench_run.wrk.WrkOptions(cpu=args.client_cpu if pinned else None),
        server_cpu=args.server_cpu if pinned else None,
        workdir=workdir,
        server_src=args.src.resolve() if args.src else None,
        api_key="bench-" + secrets.token_hex(24),
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = bench_run.loadavg()
    try:
        result = run(
            ctx,
            messages=args.messages,
            sizes=tuple(args.sizes),
            idle=tuple(args.idle),
            fanout_messages=args.fanout_messages,
        )
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    head = (
        f"Real-time benchmark on {started} ({os.cpu_count()} CPUs, server on CPU "
        f"{ctx.server_cpu}, clients on CPU {ctx.wrk_options.cpu}); load average "
        f"{load_start} at start, {bench_run.loadavg()} at end."
    )
    text = head + "\n\n" + result["markdown"] + "\n"
    print(text)
    bench_run.RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    payload = {"started": started, "loadavg_start": load_start, **result}
    (bench_run.RESULTS / f"realtime-{stamp}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (bench_run.RESULTS / "realtime-latest.md").write_text(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
