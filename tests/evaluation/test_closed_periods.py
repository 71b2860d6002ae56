"""Closed evaluation periods (issue 13, item 5), on the hand-built scenario (tests/evaluation/scenario.py).

I1 runs 21.5 h in 2025 (14.5 verified). After closing, a late spooled record adds a 2 h verified
run of nobody known on 2025-10-01: the closed report keeps 21.5 h, the amendment shows +2.0 h on I1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from protocols.derive import Params
from server import admin, clock
from server.evaluation import privacy, rubric, snapshot
from server.evaluation.period import Period
from server.exports import closing
from server.exports.workbook import write_xlsx
from tests.evaluation import scenario

Y2025 = Period.year(2025)
KEY = privacy.Pseudonymizer(b"k" * 32)


@pytest.fixture
def db(scenario_db: str) -> str:
    return scenario_db


def _late_run(dsn: str) -> None:
    """A record that arrives after the closing: spooled by A1, 2 h running on 2025-10-01."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
            " start_seq) VALUES ('A1', 'I1', %s, %s, 'running', true, 'spool', 999)",
            (scenario.t("2025-10-01 09:00"), scenario.t("2025-10-01 11:00")),
        )


def _i1(rep: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in rep["instruments"] if f["id"] == "I1")
    return found


def test_late_record_leaves_the_snapshot_and_shows_as_amendment(db: str, tmp_path: Path) -> None:
    key, _ = snapshot.generate_key(tmp_path / "snapshot.key")
    with psycopg.connect(db) as conn, clock.frozen_at(scenario.t("2026-02-01 09:00")):
        closing.close(conn, Y2025, rubric.load(None), KEY, Params(), key, "test-operator")
    with psycopg.connect(db) as conn:
        snap = closing.current(conn, "2025")
        assert snap is not None and snap.version == 1
        assert snap.closed_at == scenario.t("2026-02-01 09:00")  # the rules' clock, not the wall clock
        assert snap.payload["closed_at"] == "2026-02-01T09:00:00+08:00"
        closed = closing.unit_view(conn, snap, "U1").as_dict()
    assert _i1(closed)["running_hours"]["total"] == pytest.approx(21.5)
    assert closed["tables"]["amendment"]["rows"] == []
    assert closed["closed"]["version"] == 1 and closed["closed"]["amended"] is False

    _late_run(db)
    with psycopg.connect(db) as conn:
        snap = closing.current(conn, "2025")
        assert snap is not None
        rep = closing.unit_view(conn, snap, "U1")
        region = closing.region_view(conn, snap).as_dict()
    after = rep.as_dict()
    # the snapshot's figures, grades and summary did not move
    assert after["instruments"] == closed["instruments"]
    assert after["score_sheet"] == closed["score_sheet"]
    assert {k: v for k, v in after["summary"].items() if k != "amended_instruments"} == {
        k: v for k, v in closed["summary"].items() if k != "amended_instruments"
    }
    # ...and the late hours are beside it, per instrument
    (row,) = after["tables"]["amendment"]["rows"]
    assert row["instrument_id"] == "I1"
    assert (row["running_closed"], row["running_now"], row["running_added"], row["running_added_verified"]) == (
        pytest.approx((21.5, 23.5, 2.0, 2.0))
    )
    assert row["external_added"] == pytest.approx(0.0)
    assert after["closed"]["amended"] is True
    assert [r["instrument_id"] for r in region["tables"]["amendment"]["rows"]] == ["I1"]
    assert region["tables"]["scores"]["rows"][0]["unit_id"] == "U1"
    # the workbook is written from the snapshot too, amendment sheet included
    write_xlsx(rep, tmp_path / "u1.xlsx")
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / "u1.xlsx")
    assert "结账后补充记录（不计入结账结果）" in wb.sheetnames
    assert "服务记录核对（差异）" in wb.sheetnames


def test_snapshot_signature_verifies_and_a_tampered_one_fails(db: str, tmp_path: Path) -> None:
    key, _ = snapshot.generate_key(tmp_path / "snapshot.key")
    public = snapshot.public_key_b64(key)
    with psycopg.connect(db) as conn:
        closing.close(conn, Y2025, rubric.load(None), KEY, Params(), key, "test-operator")
    with psycopg.connect(db) as conn:
        snap = closing.current(conn, "2025")
        assert snap is not None
        doc = snap.export(conn)
    good = snapshot.verify(doc, public)
    assert good.ok, good.problems
    assert good.payload is not None and good.payload["audit"]["audit_last_id"] > 0
    assert len(bytes.fromhex(good.payload["audit"]["audit_row_hash"])) == 32  # the chain's head is published
    assert good.sha256 == snap.payload_sha256
    assert set(good.payload["parts"]) == {"region", "unit/U1", "manifest/U1"}
    manifest = json.loads(doc["parts"]["manifest/U1"])
    assert [a["agent_id"] for a in manifest["agents"]] == ["A1", "A2"] and "files" in manifest
    assert json.loads(doc["parts"]["unit/U1"])["doc"]["summary"]["grade"]["value"]

    # a figure changed in the signed payload
    payload = json.loads(doc["payload"])
    payload["instrument_hours"]["I1"]["running"]["total"] = 99.0
    tampered = {**doc, "payload": snapshot.canonical(payload).decode()}
    assert not snapshot.verify(tampered, public).ok
    # a figure changed in a part: its SHA-256 no longer matches the signed one
    part = doc["parts"]["unit/U1"].replace('"grade"', '"grade "', 1)
    bad_part = snapshot.verify({**doc, "parts": {**doc["parts"], "unit/U1": part}}, public)
    assert not bad_part.ok and any("unit/U1" in p for p in bad_part.problems)
    # a part left out, or one slipped in
    assert not snapshot.verify({**doc, "parts": {"region": doc["parts"]["region"]}}, public).ok
    assert not snapshot.verify({**doc, "parts": {**doc["parts"], "unit/X": "{}"}}, public).ok
    # re-signed with another key: consistent in itself, refused against the deployment's key
    other = snapshot.generate_key(tmp_path / "other.key")[0]
    sig, pk = snapshot.sign(other, tampered["payload"].encode())
    forged = {**tampered, "signature": sig, "public_key": pk}
    assert snapshot.verify(forged).ok
    assert not snapshot.verify(forged, public).ok


def test_a_part_altered_in_the_database_is_refused_when_read(db: str, tmp_path: Path) -> None:
    """Even a superuser who drops the guard and edits a unit's stored report cannot make the
    closed report show it: each part is checked against the signed SHA-256 when read."""
    key, _ = snapshot.generate_key(tmp_path / "snapshot.key")
    with psycopg.connect(db) as conn:
        closing.close(conn, Y2025, rubric.load(None), KEY, Params(), key, "test-operator")
    with psycopg.connect(db) as conn:
        conn.execute("ALTER TABLE period_snapshot_parts DISABLE TRIGGER period_snapshot_parts_guard")
        conn.execute("UPDATE period_snapshot_parts SET body = convert_to(replace(convert_from(body, 'UTF8'),"
                     " '合格', '优秀'), 'UTF8') WHERE part = 'unit/U1'")  # fmt: skip
    with psycopg.connect(db) as conn:
        snap = closing.current(conn, "2025")
        assert snap is not None
        with pytest.raises(ValueError, match="does not match its signed SHA-256"):
            closing.unit_view(conn, snap, "U1")
        assert not snapshot.verify(snap.export(conn), snapshot.public_key_b64(key)).ok


def test_snapshot_rows_are_immutable_and_reopening_is_audited(db: str, tmp_path: Path) -> None:
    key, _ = snapshot.generate_key(tmp_path / "snapshot.key")
    with psycopg.connect(db) as conn:
        closing.close(conn, Y2025, rubric.load(None), KEY, Params(), key, "test-operator")
    with psycopg.connect(db) as conn:
        with pytest.raises(closing.PeriodStateError, match="closed already"):
            closing.close(conn, Y2025, rubric.load(None), KEY, Params(), key, "test-operator")
    for sql in (
        "UPDATE period_snapshot_payloads SET payload = 'x'",
        "DELETE FROM period_snapshot_payloads",
        "UPDATE period_snapshot_parts SET body = 'x'",
        "DELETE FROM period_snapshot_parts",
        "UPDATE period_snapshots SET payload_sha256 = repeat('0', 64)",
        "UPDATE period_snapshots SET closed_by = 'someone else'",
        "DELETE FROM period_snapshots",
        "TRUNCATE period_snapshot_payloads",
    ):
        with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql)

    _late_run(db)
    with psycopg.connect(db) as conn:
        conn.execute("SELECT audit_as('op:ops', true)")
        with pytest.raises(closing.PeriodStateError):
            closing.reopen(conn, "2025", "op:ops", "  ")
        old = closing.reopen(conn, "2025", "op:ops", "补传数据到达，重新结账")
        assert old.reopened_by == "op:ops" and closing.current(conn, "2025") is None
        with pytest.raises(closing.PeriodStateError, match="not closed"):
            closing.reopen(conn, "2025", "op:ops", "again")
    with psycopg.connect(db) as conn:
        # a reopened snapshot cannot be put back in force or reopened again
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE period_snapshots SET reopened_at = NULL, reopened_by = NULL, reopen_reason = NULL")
    with psycopg.connect(db) as conn:
        audit = conn.execute(
            "SELECT action, actor, after->>'reopen_reason' FROM audit_log WHERE table_name = 'period_snapshots'"
            " ORDER BY id"
        ).fetchall()
        assert audit[0][0] == "INSERT"
        assert audit[-1] == ("UPDATE", "op:ops", "补传数据到达，重新结账")
        new = closing.close(conn, Y2025, rubric.load(None), KEY, Params(), key, "test-operator")
        assert new.version == 2
        assert new.payload["instrument_hours"]["I1"]["running"]["total"] == pytest.approx(23.5)
        assert closing.unit_view(conn, new, "U1").as_dict()["tables"]["amendment"]["rows"] == []
        assert [s.version for s in closing.history(conn, "2025")] == [1, 2]


def test_cli_keygen_close_show_verify_reopen(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "k" / "snapshot.key"
    assert admin.main(["period", "keygen", "--key-file", str(key_file)]) == 0
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    first = key_file.read_bytes()
    assert admin.main(["period", "keygen", "--key-file", str(key_file)]) == 0
    assert key_file.read_bytes() == first  # never overwritten
    public = snapshot.public_key_b64(snapshot.load_key(key_file))
    assert admin.main(["--dsn", db, "period", "close", "--year", "2025", "--key-file", str(key_file)]) == 0
    assert admin.main(["--dsn", db, "period", "close", "--year", "2025", "--key-file", str(key_file)]) == 2
    out = tmp_path / "2025.snapshot.json"
    assert admin.main(["--dsn", db, "period", "show", "--year", "2025", "--out", str(out)]) == 0
    assert admin.main(["period", "verify", str(out), "--public-key", public]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    doc["payload"] = doc["payload"].replace('"closed_by":"cli:', '"closed_by":"xli:')
    out.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    assert admin.main(["period", "verify", str(out), "--public-key", public]) == 1
    assert admin.main(["--dsn", db, "period", "reopen", "--year", "2025", "--reason", "复核"]) == 0
    capsys.readouterr()
    assert admin.main(["--dsn", db, "period", "show", "--year", "2025"]) == 0
    assert "is not closed" in capsys.readouterr().out


def test_cli_report_and_evaluate_read_the_snapshot(db: str, tmp_path: Path) -> None:
    key_file = tmp_path / "snapshot.key"
    assert admin.main(["period", "keygen", "--key-file", str(key_file)]) == 0
    assert admin.main(["--dsn", db, "period", "close", "--year", "2025", "--key-file", str(key_file)]) == 0
    _late_run(db)
    assert admin.main(["--dsn", db, "report", "--year", "2025", "--unit", "U1", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "U1-2025.json").read_text(encoding="utf-8"))
    assert _i1(rep)["running_hours"]["total"] == pytest.approx(21.5)
    assert [r["instrument_id"] for r in rep["tables"]["amendment"]["rows"]] == ["I1"]
    assert admin.main(["--dsn", db, "evaluate", "--year", "2025", "--out", str(tmp_path)]) == 0
    region = json.loads((tmp_path / "evaluation-2025.json").read_text(encoding="utf-8"))
    assert region["closed"]["version"] == 1
    assert region["tables"]["amendment"]["rows"][0]["running_added"] == pytest.approx(2.0)
