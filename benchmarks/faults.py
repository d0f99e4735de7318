"""Run the fault tests (tests/test_faults_*.py) and write their figures into RESULTS.md.

Each test injects one fault while a client keeps sending feedback and asserts the promise;
with ``$SHOPAUG_FAULT_FIGURES`` set it also appends what it saw (events acknowledged, lost,
503/507 answers, other 5xx) to that file. This script collects those lines into the table of
the ``faults`` section. A test that was skipped (no throwaway PostgreSQL cluster, no
permission to mount a tmpfs) has no row; the pytest summary below the table says so.

    nice -n 10 python benchmarks/faults.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results_file import write_section

ROOT = Path(__file__).resolve().parents[1]
TESTS = (
    "tests/test_faults_sqlite.py",
    "tests/test_faults_postgres.py",
    "tests/test_faults_slow_store.py",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", default="faults")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "figures.jsonl"
        env = {**os.environ, "SHOPAUG_FAULT_FIGURES": str(figures)}
        command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *TESTS]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        rows = [json.loads(line) for line in figures.read_text().splitlines()] if (
            figures.exists()
        ) else []  # fmt: skip
    summary = [line for line in result.stdout.splitlines() if line.strip()][-3:]
    lines = [
        "## Faults: the store, the disk and a slow store misbehave while clients send feedback",
        "",
        "Each row is one test of tests/test_faults_*.py: the fault is injected while a client "
        "keeps posting feedback (each event with its own Idempotency-Key, retried until "
        "acknowledged), then removed. Refused = 503/507 answers with Retry-After (the promised "
        "answer); other 5xx must be 0; lost = acknowledged events the store does not hold.",
        "",
        "| fault | faults injected | events acknowledged | events lost | refused (503/507) "
        "| other 5xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['fault']} | {row['faults_injected']} | {row['acknowledged']} | "
            f"{row['lost']} | {row['refused']} | {row['other_5xx']} |"
        )
    totals = {key: sum(row[key] for row in rows) for key in
              ("faults_injected", "acknowledged", "lost", "refused", "other_5xx")}  # fmt: skip
    lines.append(
        f"| **total** | {totals['faults_injected']} | {totals['acknowledged']} | "
        f"{totals['lost']} | {totals['refused']} | {totals['other_5xx']} |"
    )
    lines += ["", "pytest: " + " / ".join(summary)]
    body = "\n".join(lines)
    print(body)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:], file=sys.stderr)
        sys.exit(f"the fault tests failed (exit {result.returncode}); RESULTS.md not written")
    if not args.no_write:
        write_section(args.section, "nice -n 10 python benchmarks/faults.py", body)


if __name__ == "__main__":
    main()
