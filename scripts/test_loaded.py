#!/usr/bin/env python3
"""Run the fast test suite several times in a row while CPU hogs keep every core busy.

``make test-loaded`` (or ``python scripts/test_loaded.py --runs 3 --hogs 2``): starts ``--hogs``
processes that spin (``while True: pass``), runs ``pytest`` ``--runs`` times, prints each run's
time and result, stops the hogs, and exits non-zero if any run failed. The suite must pass
under load: no test may depend on a wall-clock margin that a busy machine breaks.
Extra arguments after ``--`` go to pytest (e.g. ``-- -x tests/test_task_jobs.py``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_hogs(count: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL, start_new_session=True)
        for _ in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="times the suite runs (default 3)")
    parser.add_argument(
        "--hogs", type=int, default=os.cpu_count() or 2, help="CPU hog processes (default: one per core)"
    )
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)

    hogs = start_hogs(args.hogs)
    print(f"{len(hogs)} CPU hog processes started (one per core: {os.cpu_count()})", flush=True)
    results: list[tuple[int, float, int]] = []
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            code = subprocess.call(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args], cwd=ROOT
            )
            took = time.monotonic() - started
            results.append((run, took, code))
            print(f"run {run}/{args.runs}: {'passed' if code == 0 else f'FAILED (exit {code})'} in {took / 60:.1f} min",
                  flush=True)  # fmt: skip
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print("\n| run | result | minutes |\n|---|---|---|")
    for run, took, code in results:
        print(f"| {run} | {'passed' if code == 0 else 'failed'} | {took / 60:.1f} |")
    return 0 if results and all(code == 0 for _, _, code in results) else 1


if __name__ == "__main__":
    sys.exit(main())
