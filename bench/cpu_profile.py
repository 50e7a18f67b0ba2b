"""Where the server's CPU goes under the load of one row of `bench/run.py`.

    .venv/bin/python bench/cpu_profile.py append              # 10 s per phase
    .venv/bin/python bench/cpu_profile.py get --seconds 5 --no-py-spy

It starts the row's server as `bench/run.py` does (pinned to one CPU, wrk on
the other), prepares the row's data, warms it up, and loads it with the row's
own wrk script in two phases:

1. perf (when installed and allowed) samples the server's threads, and /proc
   gives each thread's CPU: per thread, the time in each library and, in the
   kernel, in each system call, in µs per request.
2. py-spy (when installed: `.venv/bin/pip install py-spy`) samples the Python
   frames that hold the GIL: by their own time, and with what they call.

py-spy stops the process to read each sample, which slows the server and
over-counts lines that make system calls; perf does neither. The req/s shown is
wrk's while sampling, not the row's figure (`bench/run.py` gives that).

Writes bench/results/profile-<row>-<time>.md, with the raw samples beside it.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
import wrk

RESULTS = run.RESULTS
SETTLE_S = 1.5
"""Seconds of load before sampling starts, and after it ends (wrk runs that much longer)."""

_SYSCALL = re.compile(r"^(?:__x64_sys|__ia32_sys|__do_sys|ksys)_(\w+)$")
_SYSCALL_ENTRY = ("do_syscall_64", "entry_SYSCALL")
_FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")


# ------------------------------------------------------------------ threads, from /proc


def thread_times(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of `pid`: its OS name and the CPU it has used (clock ticks)."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = (
                (task / "comm").read_text().strip(),
                run.servers.stat_jiffies(task / "stat"),
            )
        except OSError:  # the thread ended
            continue
    return times


def thread_label(pid: int, tid: int, name: str) -> str:
    """The event loop is the process's first thread; the others go by their names."""
    return f"{name} (event loop)" if tid == pid else name


# ----------------------------------------------------------------------------- perf


@dataclass
class Sample:
    tid: int
    frames: list[tuple[str, str]] = field(default_factory=list)
    """(symbol, library), innermost first."""


def parse_perf_script(text: str) -> list[Sample]:
    """`perf script -F tid,ip,sym,dso` with call chains: a line with the thread id,
    then one indented line per frame ("address symbol (library)"), then a blank."""
    samples: list[Sample] = []
    current: Sample | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
        elif not line.startswith("\t"):  # a sample's first line: its thread id
            current = Sample(int(line.split()[0]))
            samples.append(current)
        else:
            match = _FRAME.match(line)
            if match and current is not None:
                symbol = re.sub(r"\+0x[0-9a-f]+$", "", match.group(1))
                current.frames.append((symbol, match.group(2)))
    return samples


def where(sample: Sample) -> str:
    """What a sample was doing: a library, or in the kernel, the system call."""
    if not sample.frames:
        return "?"
    symbol, library = sample.frames[0]
    if "kernel" not in library:
        return Path(library).name if library.startswith("/") else library
    kernel = [symbol for symbol, library in sample.frames if "kernel" in library]
    for symbol in kernel:
        match = _SYSCALL.match(symbol)
        if match:
            return f"kernel: {match.group(1)}"
    if any(symbol.startswith(_SYSCALL_ENTRY) for symbol in kernel):
        # The call's own frame was inlined: name it by the C library's wrapper.
        caller = next((s for s, library in sample.frames if "kernel" not in library), "?")
        return f"kernel: {_wrapper_name(caller)}"
    return "kernel: outside system calls (interrupts, the scheduler)"


def _wrapper_name(symbol: str) -> str:
    """`__GI___libc_write` -> `write`, `pthread_cond_signal@@GLIBC_2.3.2` ->
    `pthread_cond_signal`."""
    name = symbol.split("@")[0].removeprefix("__GI_").lstrip("_").removeprefix("libc_")
    return _WRAPPED.get(name, name) or symbol


_WRAPPED = {
    "pread": "pread64",
    "pwrite": "pwrite64",
    "pthread_cond_signal": "futex",
    "sem_post": "futex",
    "lll_lock_wake": "futex",
    "lll_lock_wait": "futex",
    "futex_abstimed_wait_common": "futex",
}
"""The system call behind a C library function whose name differs."""


def perf_table(samples: list[Sample], names: dict[int, str]) -> Counter[tuple[str, str]]:
    """Samples per (thread, where)."""
    return Counter((names.get(s.tid, str(s.tid)), where(s)) for s in samples)


# --------------------------------------------------------------------------- py-spy


def _function(frame: str) -> str:
    """py-spy's "name (path/file.py:line)" without the line, and with the path cut
    to the package: samples of one function add up."""
    name, _, place = frame.partition(" (")
    place = re.sub(r":\d+\)?$", "", place.rstrip(")"))
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in place:
            place = place.split(marker, 1)[1]
            break
    return f"{name} ({place})" if place else name


def parse_py_spy_raw(text: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's `--format raw` ("frame;frame;...;frame count", outermost first):
    samples per function by its own time, per function with its callees, and in all."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        functions = [_function(frame) for frame in stack.split(";")]
        own[functions[-1]] += n
        for function in set(functions):
            inclusive[function] += n
    return own, inclusive, total


# ---------------------------------------------------------------------------- a run


class Load:
    """wrk against the row in a thread, running `seconds` + 2 x SETTLE_S."""

    def __init__(self, scenario: run.WrkScenario, ctx: run.Context, seconds: float) -> None:
        self.result: wrk.WrkResult | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, args=(scenario, ctx, seconds + 2 * SETTLE_S), daemon=True
        )

    def _run(self, scenario: run.WrkScenario, ctx: run.Context, seconds: float) -> None:
        try:
            self.result = scenario.run_wrk(ctx, seconds, "measure")
        except Exception as exc:  # reported by wait()
            self.error = exc

    def __enter__(self) -> Load:
        self._thread.start()
        time.sleep(SETTLE_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()

    def finish(self) -> float:
        """Wait for wrk; its req/s (every answer must have been a 2xx)."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        if self.result.non_2xx or self.result.total_socket_errors:
            raise RuntimeError(
                f"wrk: {self.result.non_2xx} non-2xx answers, "
                f"{self.result.total_socket_errors} socket errors"
            )
        return self.result.rps


def with_perf(pid: int, seconds: float, out: Path, load: Load) -> list[str]:
    """Phase 1: thread CPU from /proc, and perf's samples if it can."""
    started, before = time.monotonic(), thread_times(pid)
    perf = shutil.which("perf")
    data = out.with_suffix(".perf.data")
    if perf:
        cmd = [perf, "record", "-e", "cpu-clock", "-F", "1999", "-g", "-p", str(pid)]
        cmd += ["-o", str(data), "--", "sleep", str(seconds)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            perf = None
            print(f"profile: perf record failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    else:
        time.sleep(seconds)
    after, seconds = thread_times(pid), time.monotonic() - started
    rps = load.finish()
    ticks = os.sysconf("SC_CLK_TCK")
    names = {tid: thread_label(pid, tid, name) for tid, (name, _) in after.items()}
    lines = [
        f"## CPU per request, by thread ({rps:,.0f} req/s while sampled)",
        "",
        "| thread | share of a CPU | µs per request |",
        "|---|---:|---:|",
    ]
    spent = {
        tid: (after[tid][1] - before.get(tid, (name, 0))[1]) / ticks
        for tid, (name, _) in after.items()
    }
    for tid, seconds_used in sorted(spent.items(), key=lambda kv: -kv[1]):
        if seconds_used > 0:
            share = seconds_used / seconds
            lines.append(f"| {names[tid]} | {share:.0%} | {share * 1e6 / rps:.1f} |")
    per_request_us = sum(spent.values()) * 1e6 / (seconds * rps)
    lines.append(f"| all | {sum(spent.values()) / seconds:.0%} | {per_request_us:.1f} |")
    if not perf:
        return [*lines, "", "perf: not run (not installed, or not allowed here)."]
    script = subprocess.run(
        [perf, "script", "-i", str(data), "-F", "tid,ip,sym,dso"],
        capture_output=True,
        text=True,
    ).stdout
    samples = parse_perf_script(script)
    table = perf_table(samples, names)
    total = sum(table.values()) or 1
    per_sample_us = per_request_us / total  # perf samples a thread only while it runs
    lines += [
        "",
        f"## perf: where each thread spends it ({total:,} samples)",
        "",
        "| thread | where | share | µs per request |",
        "|---|---|---:|---:|",
    ]
    for (thread, place), n in table.most_common(25):
        lines.append(f"| {thread} | {place} | {n / total:.1%} | {n * per_sample_us:.1f} |")
    return lines


def with_py_spy(pid: int, seconds: float, rate: int, out: Path, load: Load) -> list[str]:
    """Phase 2: the Python frames that hold the GIL."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        load.finish()
        return ["py-spy: not installed (`.venv/bin/pip install py-spy`)."]
    raw = out.with_suffix(".py-spy.txt")
    cmd = [py_spy, "record", "-p", str(pid), "-d", str(round(seconds)), "-r", str(rate)]
    cmd += ["-f", "raw", "--gil", "-o", str(raw)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rps = load.finish()
    if proc.returncode != 0 or not raw.exists():
        return [f"py-spy: failed: {(proc.stderr or proc.stdout).strip()[-300:]}"]
    own, inclusive, total = parse_py_spy_raw(raw.read_text())
    lines = [
        f"## py-spy: Python holding the GIL ({total:,} samples at {rate} Hz,"
        f" {rps:,.0f} req/s while sampled)",
        "",
        "| own time | with callees | function |",
        "|---:|---:|---|",
    ]
    for function, n in own.most_common(25):
        lines.append(f"| {n / total:.1%} | {inclusive[function] / total:.1%} | `{function}` |")
    lines += ["", "With callees, the 25 largest under the main loop:", ""]
    lines += ["| with callees | function |", "|---:|---|"]
    # Below the frames every sample passes through (the server's main loop).
    for function, n in [(f, n) for f, n in inclusive.most_common() if n < 0.95 * total][:25]:
        lines.append(f"| {n / total:.1%} | `{function}` |")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # Rows loaded by WrkScenario's own measure: one server process, one wrk.
    names = [
        s.name
        for s in run.SCENARIOS
        if isinstance(s, run.WrkScenario) and type(s).measure is run.WrkScenario.measure
    ]
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("row", choices=names, help="a row of bench/run.py")
    p.add_argument("--seconds", type=float, default=10, help="seconds sampled per phase")
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--wrk-cpu", type=int, default=1)
    p.add_argument("--no-perf", action="store_true")
    p.add_argument("--no-py-spy", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk.missing("profile"):
        return 2
    scenario = next(s for s in run.SCENARIOS if s.name == args.row)
    workdir = Path(tempfile.mkdtemp(prefix="airia-profile-"))
    ctx = run.Context(
        duration_s=args.seconds + 2 * SETTLE_S,  # what the row's data is sized for
        warmup_s=args.warmup,
        wrk_options=wrk.WrkOptions(threads=1, connections=args.connections, cpu=args.wrk_cpu),
        server_cpu=args.server_cpu,
        workdir=workdir,
        server_src=None,
        api_key="bench-" + secrets.token_hex(24),
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"profile-{args.row}-{stamp}.md"
    server = run.SERVERS[scenario.server](ctx)
    ctx.server = server.start()
    try:
        scenario.prepare(ctx)
        pids = scenario.server_pids(ctx)
        if len(pids) != 1:
            raise SystemExit(f"profile: {args.row} runs {len(pids)} server processes; pick one")
        pid = pids[0]
        if args.warmup > 0:
            scenario.run_wrk(ctx, args.warmup, "warmup")
        lines = [
            f"# Profile: {scenario.label} (`{args.row}`)",
            "",
            f"Commit `{run.git_commit()}` ({run.server_source(None)}),"
            f" {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: the server on"
            f" CPU {args.server_cpu}, wrk (-c{args.connections}) on CPU {args.wrk_cpu};"
            f" {args.warmup:g} s warm-up, then {args.seconds:g} s sampled per phase.",
            "",
        ]
        if not args.no_perf:
            with Load(scenario, ctx, args.seconds) as load:
                lines += with_perf(pid, args.seconds, out, load)
            lines.append("")
        if not args.no_py_spy:
            if scenario.consumes_data and not args.no_perf:
                scenario.prepare(ctx)
            with Load(scenario, ctx, args.seconds) as load:
                lines += with_py_spy(pid, args.seconds, args.rate, out, load)
    finally:
        server.stop()
        if "pg_database" in ctx.data:
            run.servers.pg_drop_database(ctx.data["pg_database"])
        shutil.rmtree(workdir, ignore_errors=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
