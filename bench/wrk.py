"""Running wrk and reading its report.

wrk prints a human report; with `--latency` it includes the percentile table we
need. Lua scripts may add lines of their own starting with `BENCH ` (from their
`done()` callback); those are collected as key=value pairs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something we cannot read."""


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed; on Debian/Ubuntu: sudo apt-get install wrk")
    return path


def missing(program: str) -> bool:
    """True when wrk is not installed, having said so on stderr as `program` (the
    bench scripts then exit with status 2)."""
    try:
        wrk_binary()
    except WrkError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return True
    return False


def to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    script_output: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def total_socket_errors(self) -> int:
        return sum(self.socket_errors.values())


def parse(output: str) -> WrkResult:
    """Read wrk's `--latency` report (units us/ms/s/m/h are normalised to ms)."""

    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise WrkError(f"cannot find /{pattern}/ in wrk output:\n{output}")
        return match

    percentiles = {}
    for pct in ("50", "75", "90", "99"):
        m = need(rf"^\s+{pct}%\s+{_TIME}\s*$")
        percentiles[pct] = to_ms(m.group(1), m.group(2))
    lat = need(rf"^\s+Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}")
    total = need(r"^\s+(\d+) requests in ([0-9.]+)(us|ms|s|m|h)")
    rps = need(r"^Requests/sec:\s+([0-9.]+)")

    socket_errors: dict[str, int] = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        kinds = ("connect", "read", "write", "timeout")
        socket_errors = dict(zip(kinds, map(int, m.groups()), strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(m.group(1)) if m else 0

    script_output: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("BENCH "):
            for pair in line[len("BENCH ") :].split():
                key, _, value = pair.partition("=")
                script_output[key] = value

    return WrkResult(
        requests=int(total.group(1)),
        duration_s=to_ms(total.group(2), total.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p75_ms=percentiles["75"],
        p90_ms=percentiles["90"],
        p99_ms=percentiles["99"],
        max_ms=to_ms(lat.group(5), lat.group(6)),
        non_2xx=non_2xx,
        socket_errors=socket_errors,
        script_output=script_output,
        raw=output,
    )


@dataclass
class WrkOptions:
    threads: int = 1
    connections: int = 32
    cpu: int | None = None
    """Pin wrk to this CPU with taskset (None: not pinned)."""
    timeout_s: int = 5


def run(
    url: str,
    duration_s: float,
    options: WrkOptions,
    script: Path | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    cmd: list[str] = []
    if options.cpu is not None:
        cmd += ["taskset", "-c", str(options.cpu)]
    cmd += [
        wrk_binary(),
        f"-t{options.threads}",
        f"-c{options.connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={options.timeout_s}s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()}\n{proc.stdout}")
    if proc.stderr.strip():
        # Lua errors in callbacks are printed on stderr but do not fail wrk.
        raise WrkError(f"wrk reported on stderr: {proc.stderr.strip()}")
    return parse(proc.stdout)


def lua_string(value: str) -> str:
    """A Lua string literal (long brackets would not handle every input; escape instead)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_script(templates: list[Path], out: Path, **params: str | int | float) -> Path:
    """Concatenate the Lua `templates` into `out`, after `params` set as Lua globals."""
    lines = ["-- generated by bench/run.py from " + ", ".join(t.name for t in templates)]
    for name, value in params.items():
        literal = lua_string(value) if isinstance(value, str) else repr(value)
        lines.append(f"{name} = {literal}")
    parts = ["\n".join(lines)] + [t.read_text() for t in templates]
    out.write_text("\n\n".join(parts))
    return out
