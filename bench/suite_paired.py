"""Paired wall times of test files: an OLD tree (a git ref, extracted) and this checkout, run back
to back, alternating, so that both see the same load on a shared machine.

    .venv/bin/python bench/suite_paired.py --old <ref> [--rounds 2] tests/web/test_roles.py ...

Each round runs pytest on the given files in the old tree, then in this one (the order flips every
round); it prints per-file seconds (from each run's JUnit XML: setup + call + teardown of the
file's tests), the whole run's wall time (start-up and session teardown included) and the load
average before each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extract(ref: str, into: Path) -> Path:
    """`ref` of this repository as a plain tree in `into` (with the SSO provider's node_modules)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    modules = ROOT / "sim" / "oidc" / "node_modules"
    if modules.exists() and not (into / "sim" / "oidc" / "node_modules").exists():
        (into / "sim" / "oidc" / "node_modules").symlink_to(modules.resolve(), target_is_directory=True)
    return into


def run(tree: Path, files: list[str], xml: Path) -> tuple[float, dict[str, float], str]:
    """Wall seconds, seconds per file, and pytest's last line."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                           *files], cwd=tree, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    per_file: dict[str, float] = defaultdict(float)
    if xml.exists():
        for case in ET.parse(xml).iter("testcase"):
            per_file[(case.get("classname") or "?").replace(".", "/") + ".py"] += float(case.get("time") or 0)
    lines = proc.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return wall, per_file, "; ".join([*failed, lines[-1]]) if lines else proc.stderr[-300:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="git ref of the old tree")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="suite-paired-") as tmp:
        (Path(tmp) / "old").mkdir()
        old = extract(args.old, Path(tmp) / "old")
        totals: dict[str, dict[str, float]] = {"old": defaultdict(float), "new": defaultdict(float)}
        walls: dict[str, float] = {"old": 0.0, "new": 0.0}
        for r in range(args.rounds):
            order = [("old", old), ("new", ROOT)] if r % 2 == 0 else [("new", ROOT), ("old", old)]
            for name, tree in order:
                load = os.getloadavg()
                wall, per_file, last = run(tree, args.files, Path(tmp) / f"{name}-{r}.xml")
                walls[name] += wall
                for f, seconds in per_file.items():
                    totals[name][f] += seconds
                print(f"round {r + 1} {name}: wall {wall:6.1f} s, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}:"
                      f" {last}", flush=True)
        print(f"\n{'file':60} {'old s':>8} {'new s':>8}   (mean of {args.rounds} round(s))")
        for f in sorted(set(totals["old"]) | set(totals["new"])):
            print(f"{f:60} {totals['old'][f] / args.rounds:8.1f} {totals['new'][f] / args.rounds:8.1f}")
        print(f"{'whole run (wall, start-up and teardown included)':60} {walls['old'] / args.rounds:8.1f}"
              f" {walls['new'] / args.rounds:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
