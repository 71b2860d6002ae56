"""The hand-built scenario of test_scenario.py, driven through the real ingest path.

Agents A1 (I1) and A2 (I2) make signed, hash-chained records of the year (daily heartbeats that
state a 24 h period, the runs and logins of tests/evaluation/scenario.py); each record travels in
its own envelope, received a second after it was made ("live") or hours later ("spool"); the
ingest pipeline (server.ingest.worker.Pipeline, no broker: messages handed in) verifies, stores and
derives them with protocols/derive.py. The evaluation then reads what ingest wrote.

The agent offline week: after a heartbeat announcing a 1 h period on 05-31 23:00 the agent is
silent until 06-03 09:55 (s5 starts), switches to running at 10:00, reports idle at 13:00 (3 h
later than its 1 h period allows: those 3 h of running are not watched) and is silent again until
06-08 00:00. So the figures are those of test_scenario.py, except that in R4's window
(06-03 09:00-14:00) the agent provably watched 09:55-10:00 and 13:00-13:05: 4 h 50 min unwatched
instead of 5 h (the verdict, 2.0 h unverifiable, is the same).

Then the unit's evidence bundle is written and `jishi verify` recomputes every instrument's
running and external hours from the signed envelopes alone and must find the report's figures.
"""

from __future__ import annotations

import lzma
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from protocols.bundle import decode_stream, entries
from protocols.signing import key_id, public_to_b64
from protocols.validate import open_envelope
from server import admin
from server.db.queries import hours_by_instrument
from server.evaluation import privacy, reconciliation
from server.evaluation.indicators import compute, params, segment_hours
from server.evaluation.period import Period
from server.exports.verify import verify_bundle
from server.ingest.verify import Incoming
from server.ingest.worker import Pipeline
from server.store.times import TZ
from tests.evaluation import scenario
from tests.server.helpers import TestAgent, settings_for

Y2025 = Period.year(2025)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CAROL_CARD = "hmac-sha256:c0ffee"


def ms(text: str) -> int:
    return int(scenario.t(text).timestamp() * 1000)


# (local time, order, kind, args, arrival: None = live, else the local time it was received)
Event = tuple[str, int, str, dict[str, Any], str | None]


def run_events(start: str, end: str, sessions: list[tuple[str, str, str, str, str, str | None]]) -> list[Event]:
    """A session (id, method, user, running from, running to, received late at) as five records:
    login 5 min before, running, idle, logout 5 min after."""
    ev: list[Event] = []
    for sid, method, user, a, b, late in sessions:
        login = (scenario.t(a) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")
        logout = (scenario.t(b) + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")
        ev += [
            (login, 1, "session_start", {"session": sid, "method": method, "user": user}, late),
            (a, 2, "state", {"state": "running"}, late),
            (b, 2, "state", {"state": "idle"}, late),
            (logout, 3, "session_end", {"session": sid}, late),
        ]
    day = scenario.t(start)
    while day <= scenario.t(end):
        ev.append((day.strftime("%Y-%m-%d %H:%M"), 0, "heartbeat", {"period_ms": DAY_MS}, None))
        day += timedelta(days=1)
    return ev


A1_EVENTS: list[Event] = [
    ("2024-12-31 20:00", 0, "lifecycle", {"event": "boot"}, None),
    ("2024-12-31 20:00", 1, "heartbeat", {"period_ms": DAY_MS}, None),
    ("2024-12-31 20:00", 2, "state", {"state": "idle"}, None),
    ("2025-08-01 10:00", 2, "state", {"state": "running"}, None),  # nobody logged in
    ("2025-08-01 11:00", 2, "state", {"state": "idle"}, None),
    # the offline week
    ("2025-05-31 22:59", 1, "heartbeat", {"period_ms": DAY_MS}, None),
    ("2025-05-31 23:00", 1, "heartbeat", {"period_ms": HOUR_MS}, None),
    ("2025-06-03 09:55", 1, "session_start", {"session": "s5", "method": "os", "user": "dave"}, "2025-06-08 00:01"),
    ("2025-06-03 10:00", 2, "state", {"state": "running"}, "2025-06-08 00:01"),
    ("2025-06-03 13:00", 2, "state", {"state": "idle"}, "2025-06-08 00:01"),
    ("2025-06-03 13:05", 3, "session_end", {"session": "s5"}, "2025-06-08 00:01"),
    *[
        e
        for e in run_events(
            "2025-01-01 00:00",
            "2026-01-01 00:00",
            [
                ("s1", "card", CAROL_CARD, "2024-12-31 22:00", "2025-01-01 02:00", None),
                ("s2", "os", "alice", "2025-03-10 09:00", "2025-03-10 12:00", None),
                ("s3", "card", CAROL_CARD, "2025-03-10 14:00", "2025-03-10 18:00", "2025-03-10 20:00"),
                ("s4", "os", "bob", "2025-05-06 09:00", "2025-05-06 10:30", None),
                ("s6", "os", "guest", "2025-09-09 08:00", "2025-09-09 10:00", None),
                ("s7", "os", "dave", "2025-12-31 23:00", "2026-01-01 01:00", None),
            ],
        )
        if not ("2025-06-01" <= e[0] < "2025-06-08")
    ],
]

A2_EVENTS: list[Event] = [
    ("2025-07-01 00:00", 0, "lifecycle", {"event": "boot"}, None),
    ("2025-07-01 00:00", 2, "state", {"state": "idle"}, None),
    *run_events(
        "2025-07-01 00:00",
        "2025-07-21 00:00",
        [
            ("s8", "card", CAROL_CARD, "2025-07-15 09:00", "2025-07-15 13:00", None),
            ("s9", "os", "alice", "2025-07-20 09:00", "2025-07-20 11:00", None),
        ],
    ),
]


def play(agent: TestAgent, events: list[Event]) -> list[Incoming]:
    """Records in time order (heartbeats carry the state in force), one envelope each."""
    state = "unknown"
    msgs = []
    for when, _, kind, kw, late in sorted(events, key=lambda e: (e[0], e[1])):
        t = ms(when)
        if kind == "state":
            rec = agent.state(t, kw["state"], state)
            state = kw["state"]
        elif kind == "heartbeat":
            rec = agent.heartbeat(t, state, kw["period_ms"])
        elif kind == "session_start":
            rec = agent.session_start(t, kw["session"], kw["user"], kw["method"])
        elif kind == "session_end":
            rec = agent.session_end(t, kw["session"])
        else:
            rec = agent.lifecycle(t, kw["event"])
        received = ms(late) if late else t + 1000
        msgs.append(agent.msg(agent.seal([rec], sent=received), received))
    return msgs


@pytest.fixture(scope="module")
def ingested(pg_server: Any, _migrated_template: str) -> Any:
    """One database for the module: registry, then the year through the ingest pipeline."""
    name = "jishi_eval_e2e"
    pg_server.drop_database(name)
    dsn = pg_server.create_database(name, template=_migrated_template)
    scenario.build_registry(dsn)
    agents = [TestAgent("A1", unit="U1", instrument="I1"), TestAgent("A2", unit="U1", instrument="I2")]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for a in agents:
            conn.execute(
                "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                (key_id(a.key), a.agent, public_to_b64(a.key)),
            )
        pipeline = Pipeline(settings_for(dsn), "eval-e2e")
        for agent, events in zip(agents, (A1_EVENTS, A2_EVENTS), strict=True):
            msgs = play(agent, events)
            for i in range(0, len(msgs), 200):
                out = pipeline.process(conn, msgs[i : i + 200])
                assert out.rejections == [], out.rejections
    yield dsn
    pg_server.drop_database(name)


def test_ingested_scenario_gives_the_hand_figures(ingested: str) -> None:
    with psycopg.connect(ingested) as conn:
        ev = compute(conn, Y2025)
    i1 = ev.instruments["I1"]
    assert (i1.running.live, i1.running.spool, i1.running.unverified) == pytest.approx((10.5, 4.0, 7.0))
    assert (i1.external.live, i1.external.spool, i1.external.unverified) == pytest.approx((3.0, 4.0, 7.0))
    assert (i1.internal.total, i1.unattributed.total) == pytest.approx((4.5, 3.0))
    i2 = ev.instruments["I2"]
    assert (i2.running.verified, i2.external.verified, i2.internal.verified) == pytest.approx((6.0, 4.0, 2.0))
    u = ev.units["U1"].figures
    assert u.open_rate == pytest.approx(2 / 3)
    assert u.utilization.verified == pytest.approx(20.5 / 2803.28767, rel=1e-6)
    assert u.utilization.including_unverified == pytest.approx(27.5 / 2803.28767, rel=1e-6)
    assert u.sharing.verified == pytest.approx(11 / 20.5)
    assert u.sharing.including_unverified == pytest.approx(18 / 27.5)


def test_ingested_reconciliation(ingested: str) -> None:
    with psycopg.connect(ingested) as conn:
        rc = reconciliation.reconcile(conn, compute(conn, Y2025, ["U1"]), privacy.Pseudonymizer(b"k" * 32), ["U1"])
    by_no = {r.record_no: r for r in rc.records}
    assert by_no["R2"].status == "overclaimed" and by_no["R2"].contradicted == pytest.approx(8.0)
    r4 = by_no["R4"]
    assert r4.status == "unverifiable" and r4.unverifiable == pytest.approx(2.0)
    assert r4.unwatched_hours == pytest.approx(5 - 10 / 60)
    assert by_no["R1"].status == by_no["R3"].status == by_no["R5"].status == "ok"
    assert rc.units["U1"].uncovered_verified == pytest.approx(4.0)


def test_segment_hours_agree_with_the_ingest_query(ingested: str) -> None:
    """The attribution rule exists twice (server/db/queries.hours_by_instrument for live views,
    server/evaluation for the evaluation): they must agree on verified running and external time."""
    with psycopg.connect(ingested) as conn:
        mine: dict[str, dict[str, float]] = {}
        for inst, cls, who, hours in segment_hours(conn, params(Y2025, None)):
            d = mine.setdefault(inst, {"running": 0.0, "external": 0.0, "unwatched": 0.0})
            if cls == "unverified":
                d["unwatched"] += hours
            else:
                d["running"] += hours
                d["external"] += hours if who == "external" else 0.0
        theirs = hours_by_instrument(conn, Y2025.t0, Y2025.t1)
    for inst, d in mine.items():
        h = theirs[inst]
        assert d["running"] == pytest.approx(h.running_s / 3600)
        assert d["external"] == pytest.approx(h.running_external_s / 3600)
        assert d["unwatched"] == pytest.approx(h.running_unwatched_s / 3600)


def test_evidence_bundle_verifies_offline(ingested: str, tmp_path: Path) -> None:
    bundle = tmp_path / "U1-2025.zip"
    assert admin.main(["--dsn", ingested, "evidence", "--unit", "U1", "--year", "2025", "--out", str(bundle)]) == 0
    result = verify_bundle(bundle)
    assert result.ok, result.text()
    got = {
        inst: {g: {c: v[1] for c, v in cl.items()} for g, cl in groups.items()} for inst, groups in result.hours.items()
    }
    assert got["I1"]["running"] == pytest.approx({"live": 10.5, "spool": 4.0, "unverified": 3.0})
    assert got["I1"]["external"] == pytest.approx({"live": 3.0, "spool": 4.0, "unverified": 3.0})
    assert got["I2"]["running"] == pytest.approx({"live": 6.0, "spool": 0.0, "unverified": 0.0})
    assert admin.main(["verify", str(bundle)]) == 0
    # names never travel: the manifest holds classes and pseudonyms only
    manifest = zipfile.ZipFile(bundle).read("manifest.json").decode()
    assert "Carol Zhao" not in manifest and "carol" not in manifest

    # the full envelopes of a day stay available for a dispute (`jishi envelopes`), byte for byte
    with zipfile.ZipFile(bundle) as zf:
        first = decode_stream(zf.read("records/A1.xz"))[0].record
    day = datetime.fromtimestamp(first["t"] / 1000, TZ).date().isoformat()
    out = tmp_path / "dispute.bin"
    assert admin.main(["--dsn", ingested, "envelopes", "--instrument", "I1", "--from", day, "--out", str(out)]) == 0
    bodies = [open_envelope(raw).body for _eid, _us, raw in entries(out.read_bytes())]
    assert bodies and first in bodies[0]["records"]
    assert {b["instrument"] for b in bodies} == {"I1"}

    # a tampered envelope: one byte of a signed record changed -> signature fails, figures differ
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "records/A1.xz":
                text = lzma.decompress(data)
                assert b'"state":"running"' in text
                data = lzma.compress(text.replace(b'"state":"running"', b'"state":"runninG"', 1))
            dst.writestr(item, data)
    bad = verify_bundle(tampered)
    assert not bad.ok
    assert any("SHA-256" in p for p in bad.problems)
    assert any(a.problems for a in bad.agents)
    assert admin.main(["verify", str(tampered)]) == 1


def test_verifier_imports_nothing_of_the_server() -> None:
    """An evaluator's PC has the core package only: the verifier must not need psycopg, the
    server's settings, openpyxl or any server module but itself."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import server.exports.verify\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool', 'openpyxl', "
        "'pydantic_settings', 'paho', 'fastapi', 'chinese_calendar')"
        " or (m.startswith('server.') and m not in ('server.exports', 'server.exports.verify'))]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stdout + proc.stderr
