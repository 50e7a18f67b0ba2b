"""`make bench` several times, judged by each row's median over the runs.

    .venv/bin/python bench/rounds.py                 # three runs of bench/run.py
    .venv/bin/python bench/rounds.py --runs 5 -- --only get two-workers
    .venv/bin/python bench/rounds.py --from bench/results/A.json bench/results/B.json ...

One run's ratios are each measured against a floor of the same minute, but on a
shared machine one row's ten seconds can still land in a slow minute that its
floor did not see, and a run of thirteen rows seldom passes all of them at once
when several sit near their targets. Here every run is a whole `bench/run.py`
(its own floors, its own ratios, its JSON in bench/results/), and each row is
judged by the median over the runs of what that run measured: its ratio to the
hello beside it, its ratio to its baseline row, its p99 over p50. The table shows
every run's figure next to the median, so a row that passed on one lucky run
reads as such. With `--from`, the runs are results already written.

Writes bench/results/rounds-<time>.md and rounds-latest.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import RESULTS, has_target, short_of, target_text

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    """One operation across runs: what each run measured of it, in run order."""

    name: str
    label: str
    target_ratio: float | None = None
    p99_factor: float | None = None
    baseline: str | None = None
    target_vs_baseline: float | None = None
    to_hello: list[float] = field(default_factory=list)
    to_baseline: list[float] = field(default_factory=list)
    p99_over_p50: list[float] = field(default_factory=list)
    runs_with_errors: int = 0
    server: str = ""
    old_target: str | None = None

    @property
    def has_target(self) -> bool:
        return has_target(self)

    @property
    def missed(self) -> list[str]:
        """What the medians fall short of."""
        short = []
        if self.target_ratio is not None and self.to_hello:
            median = statistics.median(self.to_hello)
            if median < self.target_ratio:
                short.append(f"{short_of(median, self.target_ratio)}x hello < {self.target_ratio}x")
        if self.p99_factor is not None and self.p99_over_p50:
            median = statistics.median(self.p99_over_p50)
            if median > self.p99_factor:
                short.append(f"p99 {median:.1f}x p50 > {self.p99_factor:g}x")
        if self.target_vs_baseline is not None and self.to_baseline:
            median = statistics.median(self.to_baseline)
            if median < self.target_vs_baseline:
                short.append(
                    f"{short_of(median, self.target_vs_baseline)}x {self.baseline}"
                    f" < {self.target_vs_baseline}x"
                )
        return short

    @property
    def judged(self) -> bool:
        """Some target of the row has a figure to be judged by."""
        return bool(
            (self.target_ratio is not None and self.to_hello)
            or (self.p99_factor is not None and self.p99_over_p50)
            or (self.target_vs_baseline is not None and self.to_baseline)
        )


def collect(runs: list[dict]) -> list[Row]:
    """The rows of every run, in the order of their first appearance. A row that had
    errors in a run has no figure from that run."""
    rows: dict[str, Row] = {}
    for run in runs:
        for result in run["results"]:
            row = rows.setdefault(
                result["name"],
                Row(
                    name=result["name"],
                    label=result["label"],
                    server=result["server"],
                    old_target=result.get("old_target"),
                    target_ratio=result.get("target_ratio"),
                    p99_factor=result.get("p99_factor"),
                    baseline=result.get("baseline"),
                    target_vs_baseline=result.get("target_vs_baseline"),
                ),
            )
            if result.get("errors"):
                row.runs_with_errors += 1
                continue
            if result.get("ratio_to_hello") is not None:
                row.to_hello.append(result["ratio_to_hello"])
            if result.get("ratio_to_baseline") is not None:
                row.to_baseline.append(result["ratio_to_baseline"])
            if result.get("p50_ms"):
                row.p99_over_p50.append(result["p99_ms"] / result["p50_ms"])
    return list(rows.values())


def _figures(values: list[float], unit: str) -> str:
    if not values:
        return "—"
    each = ", ".join(f"{v:.2f}" for v in values)
    return f"**{statistics.median(values):.2f}{unit}** ({each})"


def markdown(rows: list[Row], runs: list[dict]) -> str:
    lines = [
        "| operation | ratio to hello: median (each run) | to baseline: median (each run)"
        " | p99/p50: median (each run) | target | pass? |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.judged:
            verdict = "no figure" if row.has_target else "—"
        else:
            verdict = "MISSED: " + "; ".join(row.missed) if row.missed else "yes"
        if row.runs_with_errors:
            verdict += f" ({row.runs_with_errors} run(s) with errors left out)"
        baseline_unit = f"x {row.baseline}" if row.baseline else "x"
        lines.append(
            f"| {row.label} | {_figures(row.to_hello, 'x')} | "
            f"{_figures(row.to_baseline, baseline_unit)} | {_figures(row.p99_over_p50, '')} | "
            f"{target_text(row) if row.has_target else '—'} | {verdict} |"
        )
    floors = [
        "/".join(f"{r['rps']:,.0f}" for r in run["results"] if r["server"] == "hello")
        for run in runs
    ]
    header = (
        f"{len(runs)} runs of bench/run.py, commits "
        f"{', '.join(sorted({run['environment']['git_commit'] for run in runs}))};"
        f" started {', '.join(run['started'] for run in runs)}. Hello floors (start/end)"
        f" per run: {'; '.join(floors)} req/s."
    )
    missed = [row for row in rows if row.judged and row.missed]
    footer = (
        "MISSED on the medians: " + "; ".join(f"{r.name} ({', '.join(r.missed)})" for r in missed)
        if missed
        else "Every judged row met its targets on the medians."
    )
    return f"{header}\n\n" + "\n".join(lines) + f"\n\n{footer}\n"


def run_bench(extra: list[str]) -> Path:
    """One bench/run.py; the JSON it wrote."""
    before = set(RESULTS.glob("2*.json"))
    subprocess.run([sys.executable, str(HERE / "run.py"), *extra], check=False)
    written = sorted(set(RESULTS.glob("2*.json")) - before)
    if not written:
        raise SystemExit("bench/run.py wrote no result")
    return written[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of bench/run.py (default 3)")
    parser.add_argument(
        "--from", dest="given", nargs="+", type=Path, help="judge these result files instead"
    )
    parser.add_argument("extra", nargs="*", help="after --: options for bench/run.py")
    args = parser.parse_args(argv)
    if args.given:
        paths = args.given
    else:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        paths = []
        for i in range(args.runs):
            print(f"== run {i + 1} of {args.runs}", file=sys.stderr)
            paths.append(run_bench(args.extra))
    runs = sorted((json.loads(path.read_text()) for path in paths), key=lambda r: r["started"])
    text = markdown(collect(runs), runs)
    text += "\nRuns: " + ", ".join(str(path) for path in paths) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name in (f"rounds-{stamp}.md", "rounds-latest.md"):
        (RESULTS / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
