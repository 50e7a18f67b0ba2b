"""Suite-wide: report which real backends ran, loudly when one was skipped."""

from __future__ import annotations

import pytest

import backends


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"postgres: {backends.postgres_problem() or backends.POSTGRES_ADMIN_URL}",
        f"redis: {backends.redis_problem() or backends.REDIS_URL}",
        f"services required: {backends.REQUIRED}",
    ]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    problems = [p for p in (backends.postgres_problem(), backends.redis_problem()) if p]
    if problems:
        terminalreporter.section("BACKENDS SKIPPED", sep="!", red=True, bold=True)
        for problem in problems:
            terminalreporter.line(f"{problem}: its test variants were SKIPPED", red=True)
