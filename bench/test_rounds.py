"""Judging rows by their medians over runs: `.venv/bin/python -m pytest bench/test_rounds.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rounds


def result(name: str, rps: float, **fields) -> dict:
    return {
        "name": name,
        "label": name.upper(),
        "server": "hello" if name.startswith("hello") else "airia",
        "rps": rps,
        "p50_ms": 2.0,
        "p99_ms": 4.0,
        "errors": [],
        **fields,
    }


def run(get: float, two: float, *, get_p99: float = 4.0, errors: bool = False) -> dict:
    return {
        "started": "2026-11-28T07:00:00+0000",
        "environment": {"git_commit": "abc1234"},
        "results": [
            result("hello", 10_000),
            result(
                "get",
                get * 10_000,
                target_ratio=0.4,
                p99_factor=4.0,
                ratio_to_hello=get,
                p99_ms=get_p99,
                errors=["wrk: socket errors"] if errors else [],
            ),
            result(
                "two-workers",
                two * get * 10_000,
                baseline="get",
                target_vs_baseline=1.6,
                ratio_to_baseline=two,
            ),
            result("hello-end", 9_000),
        ],
    }


def test_a_row_is_judged_by_its_median_not_its_best_or_worst_run() -> None:
    rows = {r.name: r for r in rounds.collect([run(0.38, 1.7), run(0.45, 1.5), run(0.41, 1.4)])}
    assert rows["get"].to_hello == [0.38, 0.45, 0.41]
    assert rows["get"].missed == []
    assert rows["two-workers"].missed == ["1.50x get < 1.6x"]
    text = rounds.markdown(list(rows.values()), [run(0.38, 1.7)] * 3)
    assert "| GET | **0.41x** (0.38, 0.45, 0.41) |" in text
    assert "MISSED on the medians: two-workers (1.50x get < 1.6x)" in text
    assert "10,000/9,000" in text


def test_the_p99_bound_is_judged_on_the_median_too() -> None:
    rows = {r.name: r for r in rounds.collect([run(0.5, 2, get_p99=9), run(0.5, 2, get_p99=10)])}
    assert rows["get"].missed == ["p99 4.8x p50 > 4x"]


def test_a_run_with_errors_gives_no_figure_for_that_row() -> None:
    rows = {r.name: r for r in rounds.collect([run(0.1, 2, errors=True), run(0.5, 2)])}
    assert rows["get"].to_hello == [0.5]
    assert rows["get"].runs_with_errors == 1
    assert rows["get"].missed == []
    text = rounds.markdown(list(rows.values()), [run(0.5, 2)] * 2)
    assert "1 run(s) with errors left out" in text
    assert "Every judged row met its targets on the medians." in text


def test_a_floor_has_no_target_and_is_not_judged() -> None:
    rows = {r.name: r for r in rounds.collect([run(0.5, 2)])}
    assert not rows["hello"].judged
    assert "| HELLO |" in rounds.markdown(list(rows.values()), [run(0.5, 2)])
