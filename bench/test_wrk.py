"""Parsing wrk's report: `.venv/bin/python -m pytest bench/test_wrk.py`."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wrk

REPORT = """Running 10s test @ http://127.0.0.1:8000/v1/Conversations
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms   10.20ms    1.02s    98.00%
    Req/Sec     6.10k   500.00     7.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    2.50ms
     99%    1.50s
  61000 requests in 10.01s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   6094.00
Transfer/sec:      2.00MB
BENCH created=61000 unparsed=0
"""


def test_parse_full_report():
    r = wrk.parse(REPORT)
    assert r.requests == 61000
    assert r.duration_s == pytest.approx(10.01)
    assert r.rps == pytest.approx(6094.0)
    assert r.p50_ms == pytest.approx(0.85)
    assert r.p75_ms == pytest.approx(1.2)
    assert r.p99_ms == pytest.approx(1500.0)
    assert r.max_ms == pytest.approx(1020.0)
    assert r.non_2xx == 7
    assert r.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 3}
    assert r.total_socket_errors == 5
    assert r.script_output == {"created": "61000", "unparsed": "0"}


def test_clean_report_has_no_errors():
    clean = "\n".join(
        line for line in REPORT.splitlines() if "Socket" not in line and "Non-2xx" not in line
    )
    r = wrk.parse(clean)
    assert r.non_2xx == 0 and r.socket_errors == {}


def test_unreadable_report_raises():
    with pytest.raises(wrk.WrkError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused")


@pytest.mark.parametrize(
    ("value", "unit", "ms"), [("12", "us", 0.012), ("3.5", "ms", 3.5), ("2", "s", 2000.0)]
)
def test_units(value, unit, ms):
    assert wrk.to_ms(value, unit) == pytest.approx(ms)
