"""The write batch notes of durable rows: `.venv/bin/python -m pytest bench/test_run.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run

METRICS = """# HELP airia_db_writes_total Writes committed, over all batches.
# TYPE airia_db_writes_total counter
airia_db_writes_total {writes}
# TYPE airia_db_write_batch_duration_seconds histogram
airia_db_write_batch_duration_seconds_bucket{{le="0.0025"}} {a}
airia_db_write_batch_duration_seconds_bucket{{le="0.05"}} {b}
airia_db_write_batch_duration_seconds_bucket{{le="0.5"}} {c}
airia_db_write_batch_duration_seconds_bucket{{le="+Inf"}} {c}
airia_db_write_batch_duration_seconds_sum 1.5
airia_db_write_batch_duration_seconds_count {c}
"""


def test_batches_between_two_scrapes_are_per_bucket_not_cumulative() -> None:
    before = run.parse_write_batches(METRICS.format(writes=100, a=10, b=10, c=10))
    after = run.parse_write_batches(METRICS.format(writes=3300, a=105, b=108, c=110))
    assert before == {"writes": 100, "0.0025": 10, "0.05": 10, "0.5": 10, "+Inf": 10}
    batches = run.batches_between(before, after)
    assert batches == {"0.0025": 95, "0.05": 3, "0.5": 2, "+Inf": 0, "writes": 3200}
    assert run.batches_note(batches) == (
        "100 write batches (32.0 writes each); 2 over 50 ms, the slowest up to 500 ms"
    )


def test_no_batch_while_measuring_gives_no_note() -> None:
    reading = run.parse_write_batches(METRICS.format(writes=7, a=1, b=1, c=1))
    assert run.batches_between(reading, reading) is None
    assert run.batches_between(reading, None) is None


def test_a_server_without_the_histogram_reads_as_none() -> None:
    assert run.parse_write_batches("airia_db_writes_total 5\n") is None


def test_fast_batches_say_none_was_slow() -> None:
    note = run.batches_note({"0.0025": 40, "0.05": 0, "+Inf": 0, "writes": 80})
    assert note == "40 write batches (2.0 writes each); none over 50 ms, the slowest up to 2.5 ms"


def test_a_missed_ratio_never_reads_as_its_target():
    assert run.short_of(0.2454, 0.25) == "0.245"
    assert run.short_of(0.2496, 0.25) == "0.249"
    assert run.short_of(0.21, 0.25) == "0.21"
    assert run.short_of(1.5972, 1.6) == "1.597"
    m = run.Measurement("append", "append", "airia-sqlite", rps=8106, target_ratio=0.25)
    m.judge(33028)
    assert m.missed == ["0.245x hello < 0.25x"]
