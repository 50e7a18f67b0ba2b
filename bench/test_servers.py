"""The CPU accounting of bench rows: `.venv/bin/python -m pytest bench/test_servers.py`."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers


def test_cpu_per_request_splits_the_machine_s_busy_time() -> None:
    tick = servers._TICK
    before = servers.CpuAccount(processes=0, children=0, busy=0)
    # One second of CPU each for the servers and for wrk, half a second for the rest.
    after = servers.CpuAccount(processes=tick, children=tick, busy=2 * tick + tick // 2)
    us = servers.cpu_per_request(before, after, requests=10_000)
    assert us == pytest.approx({"server": 100.0, "wrk": 100.0, "rest": 50.0}, rel=0.02)


def test_cpu_per_request_without_a_reading_or_requests_is_none() -> None:
    reading = servers.CpuAccount(0, 0, 0)
    assert servers.cpu_per_request(None, reading, 10) is None
    assert servers.cpu_per_request(reading, reading, 0) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc")
def test_cpu_account_reads_this_process() -> None:
    first = servers.cpu_account([os.getpid()])
    sum(i * i for i in range(2_000_000))  # some CPU time of our own
    second = servers.cpu_account([os.getpid()])
    assert first is not None and second is not None
    assert second.processes > first.processes
    # The machine was busy at least while we were (give or take a tick of rounding).
    assert second.busy - first.busy >= second.processes - first.processes - 1
