"""Run the test suite while a CPU burner loads every core: no test may assume an idle machine.

    .venv/bin/python bench/suite_under_load.py [--runs 2] [--workers 2] [-- extra pytest args]

Starts `stress-ng --cpu N` (Debian package stress-ng; installed here if missing when root), runs
pytest `--runs` times, and prints each run's outcome and duration next to the load average seen,
so a result can be recorded in bench/RESULTS.md. Exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _stress_ng() -> str:
    found = shutil.which("stress-ng")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "stress-ng"], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("stress-ng")
    if not found:
        sys.exit("stress-ng is not installed (apt-get install stress-ng)")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="CPU burner processes")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)
    burner = subprocess.Popen([_stress_ng(), "--cpu", str(args.workers), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = 0
    try:
        for run in range(1, args.runs + 1):
            t0 = time.monotonic()
            proc = subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "-q", "-p", "no:cacheprovider",
                                   *args.pytest_args], cwd=ROOT, capture_output=True, text=True)
            took = time.monotonic() - t0
            summary = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
            failures = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
            load = os.getloadavg()
            print(f"run {run}: exit {proc.returncode}, {took:.0f} s, load average {load[0]:.1f} {load[1]:.1f} "
                  f"{load[2]:.1f}; {summary[-1] if summary else 'no summary'}", flush=True)
            for line in failures:
                print("   ", line, flush=True)
            failed += proc.returncode != 0
    finally:
        burner.terminate()
        burner.wait(30)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
