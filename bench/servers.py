"""Starting and stopping the servers under test, pinned to one CPU."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

# The service's own options (see airia_server.cli._serve), so the floor is comparable.
UVICORN_OPTIONS = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


@dataclass
class Server:
    """One server process; its stdout and stderr go to `log_path`."""

    name: str
    cmd: list[str]
    port: int
    log_path: Path
    health_path: str = "/healthz"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    _log_file: object = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> Server:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO_DIR,
            env={**os.environ, **self.env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} during start:\n"
                    + self.log_path.read_text(errors="replace")[-4000:]
                )
            try:
                if httpx.get(self.base_url + self.health_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.health_path} in {timeout_s}s")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def hello_server(workdir: Path, cpu: int | None, name: str = "hello") -> Server:
    port = free_port()
    cmd = [
        *pin(cpu),
        sys.executable,
        "-m",
        "uvicorn",
        "hello_app:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_OPTIONS,
    ]
    return Server(name, cmd, port, workdir / f"{name}.log", health_path="/")


def airia_server(
    workdir: Path,
    cpu: int | None,
    api_key: str,
    name: str = "airia",
    src: Path | None = None,
    *,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    nofile: int | None = None,
    workers: int = 1,
) -> Server:
    """airia-server (one worker, unless `workers` says more) on a fresh SQLite
    database under `workdir` (or on `database_url`), with `env` added to its
    environment.

    The access log stays on (INFO, JSON lines to a file) because that is how it runs
    for real; writing it is part of the cost being measured. `nofile` raises its
    open-file limit with prlimit (for thousands of WebSockets). `workers` > 1 runs
    `serve --workers N` (see `pin_workers`).
    """
    port = free_port()
    env = {
        "AIRIA_DATABASE_URL": database_url or f"sqlite:///{workdir / (name + '.db')}",
        "AIRIA_BOOTSTRAP_API_KEY": api_key,
        "AIRIA_LOG_FORMAT": "json",
        "AIRIA_LOG_LEVEL": "INFO",
        **(env or {}),
    }
    if src is not None:  # PYTHONPATH wins over the editable install's .pth entry
        env["PYTHONPATH"] = str(src)
    limit = []
    if nofile is not None and shutil.which("prlimit"):
        limit = ["prlimit", f"--nofile={nofile}:{nofile}"]
    cmd = [
        *limit,
        *pin(cpu),
        sys.executable,
        "-m",
        "airia_server",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    return Server(name, cmd, port, workdir / f"{name}.log", env=env)


def worker_pids(server: Server, count: int, timeout_s: float = 20.0) -> list[int]:
    """The pids of `serve --workers`'s worker processes, once `count` of them run."""
    assert server.proc is not None
    deadline = time.monotonic() + timeout_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if parent == server.proc.pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
        if len(found) >= count:
            return sorted(found)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: {len(found)} of {count} workers started")
        time.sleep(0.1)


def pin_workers(server: Server, cpus: list[int]) -> list[int]:
    """Pin the i-th worker of `serve --workers` to cpus[i]; their pids."""
    pids = worker_pids(server, len(cpus))
    for pid, cpu in zip(pids, cpus, strict=False):
        os.sched_setaffinity(pid, {cpu})
    return pids


# ------------------------------------------------------------------ PostgreSQL, Redis

PG_DSN = os.environ.get("AIRIA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
"""The PostgreSQL server the bench creates its throw-away databases on."""
REDIS_URL = os.environ.get("AIRIA_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def psql(sql: str, dsn: str = PG_DSN) -> str:
    proc = subprocess.run(
        ["psql", f"{dsn}/postgres", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def pg_create_database(name: str) -> str:
    """Create database `name` (dropping a leftover of that name); its URL."""
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    return f"{PG_DSN}/{name}"


def pg_drop_database(name: str) -> None:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class LogSummary:
    lines: int = 0
    levels: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    notable: list[str] = field(default_factory=list)
    """Warning and error lines, and access lines with status >= 500 (first few)."""
    slowest_ms: float = 0.0
    slowest_line: str = ""


def summarize_log(path: Path, keep: int = 10) -> LogSummary:
    """Count JSON log lines by level and access-log status; keep the odd ones."""
    summary = LogSummary()
    for line in path.read_text(errors="replace").splitlines():
        summary.lines += 1
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the banner and anything uvicorn prints before logging is set up
        level = entry.get("level", "?")
        summary.levels[level] += 1
        status = entry.get("status")
        if entry.get("logger") == "airia_server.access":
            summary.statuses[status] += 1
            try:
                took = float(entry["message"].rsplit(" ", 1)[-1].removesuffix("ms"))
            except (KeyError, ValueError):
                took = 0.0
            if took > summary.slowest_ms:
                summary.slowest_ms, summary.slowest_line = took, entry["message"]
        odd = level in ("warning", "error", "critical") or (
            isinstance(status, int) and status >= 500
        )
        if odd and len(summary.notable) < keep:
            summary.notable.append(line[:500])
    return summary


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class CpuSample:
    """Jiffies: busy and total on one CPU (steal counts as busy), and a process's own."""

    cpu_busy: int
    cpu_total: int
    proc: int


def children_jiffies() -> int:
    """CPU time of the waited-for child processes (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * _TICK)


def _cpu_jiffies(name: str) -> tuple[int, int] | None:
    """Busy and total jiffies of the line `name` of /proc/stat ("cpu": all CPUs,
    "cpu0": one); steal counts as busy."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
            return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)
    return None


def stat_jiffies(stat: Path) -> int:
    """utime + stime from a /proc stat file: a process's (`/proc/<pid>/stat`, all its
    threads) or one thread's (`/proc/<pid>/task/<tid>/stat`)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class CpuAccount:
    """Jiffies over the whole machine, split: some processes', the finished
    children's (wrk, once it has exited), and everything busy on every CPU."""

    processes: int
    children: int
    busy: int


def cpu_account(pids: list[int]) -> CpuAccount | None:
    """A reading of /proc for `cpu_per_request` (Linux only; None elsewhere)."""
    try:
        machine = _cpu_jiffies("cpu")
        if machine is None:
            return None
        own = sum(stat_jiffies(Path(f"/proc/{pid}/stat")) for pid in pids)
    except (OSError, ValueError, IndexError):
        return None
    return CpuAccount(own, children_jiffies(), machine[0])


def cpu_per_request(
    before: CpuAccount | None, after: CpuAccount | None, requests: int
) -> dict[str, float] | None:
    """Microseconds of CPU per request: the processes', wrk's, and the rest (the
    kernel's own threads and network work not charged to a process, anything else)."""
    if before is None or after is None or requests <= 0:
        return None
    us = 1e6 / _TICK / requests
    own = after.processes - before.processes
    wrk = after.children - before.children
    rest = max(0, after.busy - before.busy - own - wrk)
    return {"server": own * us, "wrk": wrk * us, "rest": rest * us}


def cpu_sample(cpu: int | None, pid: int | None) -> CpuSample | None:
    """A reading of /proc (Linux only; None elsewhere or when unpinned).

    With `pid` None, `proc` is the CPU time of the finished children instead.
    """
    if cpu is None:
        return None
    try:
        jiffies = _cpu_jiffies(f"cpu{cpu}")
        if jiffies is None:
            return None
        own = children_jiffies() if pid is None else stat_jiffies(Path(f"/proc/{pid}/stat"))
    except (OSError, ValueError, IndexError):
        return None
    return CpuSample(jiffies[0], jiffies[1], own)


def cpu_shares(before: CpuSample | None, after: CpuSample | None) -> dict[str, float] | None:
    """Fractions of one CPU used by our process and by everything else.

    "others" well above zero means something else ran on that CPU during the
    measurement (other processes, the hypervisor's steal time).
    """
    if before is None or after is None or after.cpu_total <= before.cpu_total:
        return None
    total = after.cpu_total - before.cpu_total
    own = after.proc - before.proc
    busy = after.cpu_busy - before.cpu_busy
    return {"own": own / total, "others": max(0.0, (busy - own) / total)}
