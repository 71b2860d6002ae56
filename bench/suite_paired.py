"""Paired wall times of test files: an OLD tree (a git ref, extracted) and this checkout, run back
to back, alternating, so that both see the same load on a shared machine.

    .venv/bin/python bench/suite_paired.py --old <ref> [--old <ref2>] [--rounds 2] tests/web/test_roles.py ...

Each round runs pytest on the given files in the old tree, then in this one (the order flips every
round); it prints per-file seconds (from each run's JUnit XML: setup + call + teardown of the
file's tests), the whole run's wall time (start-up and session teardown included) and the load
average before each run.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    ap.add_argument("--old", required=True, action="append",
                    help="git ref of an old tree; repeat it to compare several (each run in turn with this one)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="copy each run's JUnit XML (per-test times) into this directory")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="suite-paired-") as tmp:
        trees: list[tuple[str, Path]] = []
        for i, ref in enumerate(args.old):
            (Path(tmp) / f"old{i}").mkdir()
            trees.append((ref if len(args.old) > 1 else "old", extract(ref, Path(tmp) / f"old{i}")))
        trees.append(("new", ROOT))
        names = [name for name, _ in trees]
        totals: dict[str, dict[str, float]] = {name: defaultdict(float) for name in names}
        walls: dict[str, float] = dict.fromkeys(names, 0.0)
        for r in range(args.rounds):
            order = trees if r % 2 == 0 else trees[::-1]
            for name, tree in order:
                load = os.getloadavg()
                xml = Path(tmp) / f"{name}-{r}.xml"
                wall, per_file, last = run(tree, args.files, xml)
                if args.keep is not None and xml.exists():
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(xml, args.keep / xml.name)
                walls[name] += wall
                for f, seconds in per_file.items():
                    totals[name][f] += seconds
                print(f"round {r + 1} {name}: wall {wall:6.1f} s, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}:"
                      f" {last}", flush=True)
        heads = "".join(f" {name[:10] + ' s':>12}" for name in names)
        print(f"\n{'file':60}{heads}   (mean of {args.rounds} round(s))")
        for f in sorted(set().union(*(totals[name] for name in names))):
            print(f"{f:60}" + "".join(f" {totals[name][f] / args.rounds:12.1f}" for name in names))
        print(f"{'whole run (wall, start-up and teardown included)':60}"
              + "".join(f" {walls[name] / args.rounds:12.1f}" for name in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
