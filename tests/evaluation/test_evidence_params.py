"""An evidence bundle states the derivation parameters ingest used (stored with the data,
migration 025), not the exporting process's settings: `jishi evidence` run with other settings
still writes a bundle that `jishi verify` accepts with the report's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

from server.exports.verify import verify_bundle
from tests.evaluation.test_scenario_e2e import ingested  # noqa: F401  (the module's ingested year)
from tests.server.helpers import settings_for

ROOT = Path(__file__).resolve().parents[2]


def test_bundle_from_a_process_with_other_settings_verifies(ingested: str, tmp_path: Path) -> None:  # noqa: F811
    used = settings_for(ingested).derive.params()
    with psycopg.connect(ingested) as conn:
        stored = [r[0] for r in conn.execute("SELECT derive_params FROM agent_progress ORDER BY agent_no")]
    assert stored and all(p["tolerance_permille"] == used.tolerance_permille for p in stored)

    bundle = tmp_path / "U1-2025.zip"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "JISHI_DERIVE__TOLERANCE": "10", "JISHI_DERIVE__LIVE_WINDOW_S": "7200"}
    env.pop("JISHI_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "server.admin", "--dsn", ingested, "evidence", "--unit", "U1", "--year", "2025",
         "--out", str(bundle)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    assert manifest["derive"]["tolerance_permille"] == used.tolerance_permille
    assert manifest["derive"]["live_window_ms"] == used.live_window_ms
    assert {a["derive"]["tolerance_permille"] for a in manifest["agents"]} == {used.tolerance_permille}
    result = verify_bundle(bundle)
    assert result.ok, result.text()
    got = {inst: {c: v[1] for c, v in groups["running"].items()} for inst, groups in result.hours.items()}
    assert got["I1"] == pytest.approx({"live": 10.5, "spool": 4.0, "unverified": 3.0})

    # the same bundle stating the exporting process's parameters does not verify: they matter
    other = dict(manifest, derive={**manifest["derive"], "tolerance_permille": 10_000, "live_window_ms": 7_200_000})
    other["agents"] = [{**a, "derive": other["derive"]} for a in manifest["agents"]]
    wrong = tmp_path / "exporter-params.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(wrong, "w") as dst:
        for item in src.infolist():
            data = json.dumps(other).encode() if item.filename == "manifest.json" else src.read(item.filename)
            dst.writestr(item, data)
    assert not verify_bundle(wrong).ok
