"""Prometheus metrics, kept in plain dicts: observing a request costs a microsecond.

Request counts and latency histograms per route template and status; the
rest (sockets, events, write batches, pool use) is read from the components
when `/metrics` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        # per (method, route): bucket counts (+Inf last), sum of seconds
        self.latency: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        series = self.latency.get((method, route))
        if series is None:
            series = self.latency[(method, route)] = [0.0] * (len(BUCKETS) + 2)
        series[bisect_left(BUCKETS, seconds)] += 1
        series[-1] += seconds

    def render(self, services: Any) -> str:
        out: list[str] = []
        out += [
            "# HELP airia_http_requests_total HTTP requests answered, by route and status.",
            "# TYPE airia_http_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            out.append(
                f'airia_http_requests_total{{method="{method}",route="{_esc(route)}",'
                f'status="{status}"}} {count}'
            )
        out += [
            "# HELP airia_http_request_duration_seconds Time to answer, by route.",
            "# TYPE airia_http_request_duration_seconds histogram",
        ]
        for (method, route), series in sorted(self.latency.items()):
            out += histogram_series(
                "airia_http_request_duration_seconds",
                f'method="{method}",route="{_esc(route)}"',
                series[:-1],
                series[-1],
            )
        if services is not None:
            out += _components(services)
        return "\n".join(out) + "\n"


def histogram_series(name: str, labels: str, counts: Sequence[float], total: float) -> list[str]:
    """One histogram's samples: its cumulative buckets (`counts` holds one per bound
    of BUCKETS, then +Inf, each not cumulative), its sum and its count."""
    out = []
    prefix = f"{labels}," if labels else ""
    running = 0
    for bound, count in zip((*BUCKETS, "+Inf"), counts, strict=True):
        running += int(count)
        out.append(f'{name}_bucket{{{prefix}le="{bound}"}} {running}')
    braces = f"{{{labels}}}" if labels else ""
    out.append(f"{name}_sum{braces} {total:.6f}")
    out.append(f"{name}_count{braces} {running}")
    return out


def _gauge(name: str, help_text: str, value: float, kind: str = "gauge") -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]


def _components(services: Any) -> list[str]:
    hub = services.hub
    out = _gauge("airia_websocket_connections", "Open WebSocket connections.", hub.socket_count)
    out += _gauge(
        "airia_events_delivered_total", "Events queued to sockets.", hub.delivered, "counter"
    )
    out += _gauge(
        "airia_events_dropped_total",
        "Events not delivered because a socket fell behind (closed with 4000).",
        hub.dropped,
        "counter",
    )
    if services.settings.redis_url:
        out += _gauge("airia_redis_up", "1 when the Redis fan-out is connected.", int(hub.healthy))
    stats = getattr(services.store, "writer_stats", None)
    if stats is not None:
        out += _gauge(
            "airia_db_write_batches_total",
            "Commits of write batches (SQLite: every write; PostgreSQL: creates and appends).",
            stats.batches,
            "counter",
        )
        out += _gauge(
            "airia_db_writes_total", "Writes committed, over all batches.", stats.ops, "counter"
        )
        out += _gauge(
            "airia_db_commit_seconds_total",
            "Time spent running and committing write batches.",
            round(stats.commit_seconds, 6),
            "counter",
        )
        name = "airia_db_write_batch_duration_seconds"
        out += [
            f"# HELP {name} Time from the writer taking up a write batch to its durable "
            "commit (SQLite: a WAL restart when due, BEGIN, the statements, and COMMIT with "
            "the WAL's fsync).",
            f"# TYPE {name} histogram",
        ]
        out += histogram_series(name, "", stats.durations, stats.commit_seconds)
    pool = getattr(services.store, "_pool", None)
    if pool is not None:
        out += _gauge("airia_db_pool_connections", "PostgreSQL connections open.", pool.get_size())
        out += _gauge(
            "airia_db_pool_idle_connections", "PostgreSQL connections idle.", pool.get_idle_size()
        )
    batch_pool = getattr(services.store, "_batch_pool", None)
    if batch_pool is not None:
        out += _gauge(
            "airia_db_batch_pool_connections",
            "PostgreSQL connections open for the batched statements.",
            batch_pool.get_size(),
        )
        out += _gauge(
            "airia_db_batch_pool_idle_connections",
            "PostgreSQL connections for the batched statements, idle.",
            batch_pool.get_idle_size(),
        )
    return out


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
