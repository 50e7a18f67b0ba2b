"""The Prometheus text of `/metrics`: histograms, and the write batches' durations."""

from __future__ import annotations

from types import SimpleNamespace

from airia_server.metrics import BUCKETS, Metrics, histogram_series
from airia_server.storage.base import WriterStats


def _services(stats: WriterStats) -> SimpleNamespace:
    hub = SimpleNamespace(socket_count=0, delivered=0, dropped=0, healthy=True)
    return SimpleNamespace(
        hub=hub,
        settings=SimpleNamespace(redis_url=None),
        store=SimpleNamespace(writer_stats=stats),
    )


def test_a_batch_is_counted_in_the_first_bucket_whose_bound_it_does_not_pass() -> None:
    stats = WriterStats()
    stats.record(3, 0.0004)
    stats.record(1, BUCKETS[1])  # a bound is inclusive: le="0.001"
    stats.record(5, 0.03)
    stats.record(2, 30.0)  # past the last bound: +Inf only

    assert (stats.batches, stats.ops) == (4, 11)
    assert abs(stats.commit_seconds - 30.0314) < 1e-9
    expected = [0] * (len(BUCKETS) + 1)
    expected[0] = expected[1] = expected[BUCKETS.index(0.05)] = expected[-1] = 1
    assert stats.durations == expected


def test_the_write_batch_histogram_is_cumulative_and_ends_at_its_count() -> None:
    stats = WriterStats()
    for seconds in (0.0002, 0.002, 0.002, 0.3, 12.0):
        stats.record(1, seconds)

    lines = Metrics().render(_services(stats)).splitlines()
    name = "airia_db_write_batch_duration_seconds"
    assert f"# TYPE {name} histogram" in lines
    buckets = {
        line.split('le="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(f"{name}_bucket")
    }
    assert list(buckets) == [str(b) for b in BUCKETS] + ["+Inf"]
    assert buckets["0.0005"] == 1
    assert buckets["0.0025"] == 3
    assert buckets["0.25"] == 3
    assert buckets["0.5"] == 4
    assert buckets["10.0"] == 4
    assert buckets["+Inf"] == 5
    assert f"{name}_count 5" in lines
    assert f"{name}_sum 12.304200" in lines
    # The counters it sits beside agree with it.
    assert "airia_db_write_batches_total 5" in lines


def test_histogram_series_without_labels_has_no_empty_braces() -> None:
    lines = histogram_series("x_seconds", "", [1] + [0] * len(BUCKETS), 0.5)
    assert lines[0] == 'x_seconds_bucket{le="0.0005"} 1'
    assert lines[-2:] == ["x_seconds_sum 0.500000", "x_seconds_count 1"]
    labelled = histogram_series("x_seconds", 'route="/a"', [0] * len(BUCKETS) + [2], 9.0)
    assert labelled[0] == 'x_seconds_bucket{route="/a",le="0.0005"} 0'
    assert labelled[-3:] == [
        'x_seconds_bucket{route="/a",le="+Inf"} 2',
        'x_seconds_sum{route="/a"} 9.000000',
        'x_seconds_count{route="/a"} 2',
    ]
