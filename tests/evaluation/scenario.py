"""The hand-built evaluation scenario: one unit, five instruments, a year of use in 2025.

Every expected figure is worked out by hand in `tests/evaluation/test_scenario.py`. Times are
Asia/Shanghai local time.

`build` writes the derived rows (usage_segments / user_sessions / coverage) straight into the
database; `build_registry` + test_scenario_e2e.py drive the same year through the real ingest
path (signed records -> server.ingest.worker.Pipeline -> protocols.derive -> the same tables).

Unit U1 (org O1 内蒙古大学), affiliated O2 (附属医院). Users: alice (O1) and bob (O2) are internal;
carol (O3, an enterprise) and dave (O4, an institute) are external; os:guest is mapped to nobody.

I1 透射电子显微镜 通用 3,000,000 CNY, agent A1, registered 2020, open.
I2 核磁共振波谱仪 专用 1,200,000 CNY, agent A2, accepted 2025-07-01, registered 2025-09-15 (late).
I3 液相色谱仪 通用 250,000 CNY: out of scope, no agent, a manual logbook entry.
I4 X射线衍射仪 通用 500,000 CNY, rated override 1,000 h, no agent, never registered.
I5 质谱仪 专用 800,000 CNY, exempted from opening (approved).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from server.store.times import TZ


def t(text: str) -> datetime:
    """'2025-03-10 09:00' in Asia/Shanghai."""
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


ORGS = [
    ("O1", "内蒙古大学", "university"),
    ("O2", "内蒙古大学附属医院", "hospital"),
    ("O3", "草原乳业有限公司", "enterprise"),
    ("O4", "包头稀土研究院", "institute"),
]
USERS = [
    ("alice", "Alice Wang", "O1"),
    ("bob", "Bob Li", "O2"),
    ("carol", "Carol Zhao", "O3"),
    ("dave", "Dave Sun", "O4"),
]
IDENTITIES = [
    ("os", "alice", "alice"),
    ("os", "bob", "bob"),
    ("card", "hmac-sha256:c0ffee", "carol"),
    ("os", "dave", "dave"),
]

INSTRUMENTS: list[dict[str, Any]] = [
    dict(
        id="I1",
        name="透射电子显微镜",
        category="通用",
        original_value=Decimal("3000000"),
        accepted_on=date(2020, 5, 1),
        registered_on=date(2020, 6, 1),
        classification_code="03040100",
        specs="加速电压 200 kV; 点分辨率 0.19 nm",
        location="呼和浩特",
    ),
    dict(
        id="I2",
        name="核磁共振波谱仪",
        category="专用",
        original_value=Decimal("1200000"),
        accepted_on=date(2025, 7, 1),
        registered_on=date(2025, 9, 15),
        classification_code="03030700",
    ),
    dict(
        id="I3",
        name="液相色谱仪",
        category="通用",
        original_value=Decimal("250000"),
        accepted_on=date(2018, 1, 1),
        registered_on=date(2018, 2, 1),
        classification_code="03030200",
    ),
    dict(
        id="I4",
        name="X射线衍射仪",
        category="通用",
        original_value=Decimal("500000"),
        accepted_on=date(2019, 3, 1),
        registered_on=None,
        rated_hours=Decimal("1000"),
        classification_code="03040700",
    ),
    dict(
        id="I5",
        name="质谱仪",
        category="专用",
        original_value=Decimal("800000"),
        accepted_on=date(2021, 1, 1),
        registered_on=None,
        classification_code="03030100",
    ),
]

# (agent, instrument, start, end, state, watched, arrival, session)
SEGMENTS: list[tuple[str, str, str, str, str, bool, str, str | None]] = [
    # A1 / I1: a run across the year boundary, 22:00-02:00, carol (external).
    ("A1", "I1", "2024-12-31 20:00", "2024-12-31 22:00", "idle", True, "live", None),
    ("A1", "I1", "2024-12-31 22:00", "2025-01-01 02:00", "running", True, "live", "s1"),
    ("A1", "I1", "2025-01-01 02:00", "2025-03-10 09:00", "idle", True, "live", None),
    ("A1", "I1", "2025-03-10 09:00", "2025-03-10 12:00", "running", True, "live", "s2"),  # alice
    ("A1", "I1", "2025-03-10 12:00", "2025-03-10 14:00", "idle", True, "live", None),
    ("A1", "I1", "2025-03-10 14:00", "2025-03-10 18:00", "running", True, "spool", "s3"),  # carol
    ("A1", "I1", "2025-03-10 18:00", "2025-05-06 09:00", "idle", True, "live", None),
    ("A1", "I1", "2025-05-06 09:00", "2025-05-06 10:30", "running", True, "live", "s4"),  # bob
    ("A1", "I1", "2025-05-06 10:30", "2025-06-01 00:00", "idle", True, "live", None),
    # The agent offline week 2025-06-01 .. 06-08: nothing provable.
    ("A1", "I1", "2025-06-01 00:00", "2025-06-03 10:00", "unknown", False, "live", None),
    ("A1", "I1", "2025-06-03 10:00", "2025-06-03 13:00", "running", False, "spool", "s5"),  # dave
    ("A1", "I1", "2025-06-03 13:00", "2025-06-08 00:00", "unknown", False, "live", None),
    ("A1", "I1", "2025-06-08 00:00", "2025-08-01 10:00", "idle", True, "live", None),
    ("A1", "I1", "2025-08-01 10:00", "2025-08-01 11:00", "running", True, "live", None),  # nobody logged in
    ("A1", "I1", "2025-08-01 11:00", "2025-09-09 08:00", "off", True, "live", None),
    ("A1", "I1", "2025-09-09 08:00", "2025-09-09 10:00", "running", True, "live", "s6"),  # os:guest
    ("A1", "I1", "2025-09-09 10:00", "2025-12-31 23:00", "idle", True, "live", None),
    ("A1", "I1", "2025-12-31 23:00", "2026-01-01 01:00", "running", True, "live", "s7"),  # dave
    # A2 / I2 from its acceptance on.
    ("A2", "I2", "2025-07-01 00:00", "2025-07-15 09:00", "idle", True, "live", None),
    ("A2", "I2", "2025-07-15 09:00", "2025-07-15 13:00", "running", True, "live", "s8"),  # carol
    ("A2", "I2", "2025-07-15 13:00", "2025-07-20 09:00", "idle", True, "live", None),
    ("A2", "I2", "2025-07-20 09:00", "2025-07-20 11:00", "running", True, "live", "s9"),  # alice
    ("A2", "I2", "2025-07-20 11:00", "2025-07-21 00:00", "off", True, "live", None),
]

# (agent, instrument, session, method, identifier, start, end)
SESSIONS = [
    ("A1", "I1", "s1", "card", "hmac-sha256:c0ffee", "2024-12-31 21:50", "2025-01-01 02:05"),
    ("A1", "I1", "s2", "os", "alice", "2025-03-10 08:55", "2025-03-10 12:05"),
    ("A1", "I1", "s3", "card", "hmac-sha256:c0ffee", "2025-03-10 13:55", "2025-03-10 18:05"),
    ("A1", "I1", "s4", "os", "bob", "2025-05-06 08:55", "2025-05-06 10:35"),
    ("A1", "I1", "s5", "os", "dave", "2025-06-03 09:55", "2025-06-03 13:05"),
    ("A1", "I1", "s6", "os", "guest", "2025-09-09 07:55", "2025-09-09 10:05"),
    ("A1", "I1", "s7", "os", "dave", "2025-12-31 22:55", "2026-01-01 01:05"),
    ("A2", "I2", "s8", "card", "hmac-sha256:c0ffee", "2025-07-15 08:55", "2025-07-15 13:05"),
    ("A2", "I2", "s9", "os", "alice", "2025-07-20 08:55", "2025-07-20 11:05"),
]

COVERAGE = [
    ("A1", "I1", "2024-12-31 20:00", "2025-06-01 00:00", "watching"),
    ("A1", "I1", "2025-06-01 00:00", "2025-06-08 00:00", "offline"),
    ("A1", "I1", "2025-06-08 00:00", "2026-01-01 01:00", "watching"),
    ("A2", "I2", "2025-07-01 00:00", "2025-07-21 00:00", "watching"),
]

# (record_no, instrument, start, end, claimed hours, amount, user type, applicant user, applicant org)
SERVICE_RECORDS = [
    ("R1", "I1", "2025-03-10 14:00", "2025-03-10 18:00", "4.0", "2000.00", 130, "carol", "O3"),
    ("R2", "I1", "2025-05-20 09:00", "2025-05-20 17:00", "8.0", "4000.00", 130, "dave", "O4"),
    ("R3", "I2", "2025-07-15 09:00", "2025-07-15 12:00", "3.0", "1500.50", 130, "carol", "O3"),
    ("R4", "I1", "2025-06-03 09:00", "2025-06-03 14:00", "5.0", "1000.00", 130, "dave", "O4"),
    ("R5", "I1", "2025-03-10 09:00", "2025-03-10 12:00", "3.0", "300.00", 120, "alice", "O1"),
    ("R6", "I1", "2024-12-31 21:00", "2024-12-31 23:00", "2.0", "999.00", 130, "carol", "O3"),
]


def build(dsn: str) -> None:
    build_registry(dsn)
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        for i, (agent, inst_id, a, b, state, watched, arrival, session) in enumerate(SEGMENTS):
            cur.execute(
                "INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
                " session_id, start_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (agent, inst_id, t(a), t(b), state, watched, arrival, session, i + 1),
            )
        for i, (agent, inst_id, sid, method, ident, a, b) in enumerate(SESSIONS):
            cur.execute(
                "INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at,"
                " end_at, start_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (agent, inst_id, sid, method, ident, t(a), t(b), i + 1),
            )
        for agent, inst_id, a, b, status in COVERAGE:
            cur.execute(
                "INSERT INTO coverage (agent_id, instrument_id, start_at, end_at, status) VALUES (%s, %s, %s, %s, %s)",
                (agent, inst_id, t(a), t(b), status),
            )


def build_registry(dsn: str) -> None:
    """Organisations, unit, users, identities, instruments, agents, exemption, manual entries,
    service records and the service case: everything but what agents measure."""
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        cur.executemany("INSERT INTO organisations (id, name, kind) VALUES (%s, %s, %s)", ORGS)
        cur.execute("INSERT INTO units (id, org_id, name, region) VALUES ('U1', 'O1', '内蒙古大学', '呼和浩特')")
        cur.execute("INSERT INTO unit_affiliations (unit_id, org_id) VALUES ('U1', 'O2')")
        cur.executemany("INSERT INTO platform_users (id, name, org_id) VALUES (%s, %s, %s)", USERS)
        cur.executemany(
            "INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES ('U1', %s, %s, %s)", IDENTITIES
        )
        for inst in INSTRUMENTS:
            cols = ["unit_id", *inst]
            cur.execute(
                f"INSERT INTO instruments ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                ["U1", *inst.values()],
            )
        cur.execute("INSERT INTO agents (id, instrument_id) VALUES ('A1', 'I1'), ('A2', 'I2')")
        cur.execute(
            "INSERT INTO instrument_exemptions (instrument_id, reason, approved_by, approval_ref, approved_on)"
            " VALUES ('I5', '涉密科研任务专用', '自治区教育厅', '内教科〔2024〕12号', '2024-06-01')"
        )
        # I1's logbook: 2025-06-07 20:00 .. 06-08 04:00, external; only the 4 h before the agent
        # came back (06-08 00:00) count. I3's: 3 h external, but I3 is out of scope.
        cur.execute(
            "INSERT INTO manual_usage (instrument_id, start_at, end_at, user_type, note) VALUES"
            " ('I1', %s, %s, 130, '纸质登记'), ('I3', %s, %s, 130, '纸质登记')",
            (t("2025-06-07 20:00"), t("2025-06-08 04:00"), t("2025-04-01 09:00"), t("2025-04-01 12:00")),
        )
        for no, inst_id, a, b, hours, amount, user_type, user, org in SERVICE_RECORDS:
            cur.execute(
                "INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,"
                " amount, way, user_type, applicant_user_id, applicant_name, applicant_org_id, content)"
                " VALUES ('U1', %s, %s, %s, %s, %s, %s, '占用', %s, %s, %s, %s, '样品测试')",
                (inst_id, no, t(a), t(b), Decimal(hours), Decimal(amount), user_type, user, user.title(), org),
            )
        cur.execute(
            "INSERT INTO service_cases (unit_id, instrument_id, occurred_on, title, kind, beneficiary, evidence)"
            " VALUES ('U1', 'I1', '2025-10-01', '乳制品微结构表征支撑企业新品开发', '企业成果', '草原乳业有限公司',"
            " '合同 2025-017')"
        )
