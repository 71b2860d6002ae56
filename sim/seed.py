"""Write the simulated region into a migrated Jishi database: the registry as a platform operator
would have entered it, the agents' enrolled public keys, demo logins, and the units' own
(self-reported) service records, which the evaluation reconciles with the measured hours.

Everything goes through plain SQL on the tables of server/db/migrations, with the principal declared (`audit_as`) so
the audit log names the seeding. Idempotent: rows that exist are left as they are.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from sim.catalog import REGISTRY, Registry
from sim.model import HOUR, TZ, InstrumentSpec, Org, Person, Truth, UnitSpec, local

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Login:
    login: str
    role: str  # operator | unit_manager | evaluator
    unit_id: str | None
    display_name: str


DEMO_LOGINS = (
    Login("operator", "operator", None, "平台运营 Platform operator"),
    Login("imu.manager", "unit_manager", "imu", "内蒙古大学 联络员"),
    Login("btri.manager", "unit_manager", "btri", "包头稀土研究院 联络员"),
    Login("evaluator", "evaluator", None, "评估专家 Evaluator"),
)


def _actor(conn: Conn, who: str) -> None:
    conn.execute("SELECT audit_as(%s, true)", (who,))


def registry(conn: Conn, units: Sequence[UnitSpec], orgs: Iterable[Org], people: Iterable[Person],
             instruments: Iterable[InstrumentSpec], reg: Mapping[str, Registry] = REGISTRY) -> None:
    """Organisations, units and affiliations, instruments with national platform fields and price
    lists, platform users and the identity map (check-in accounts and OS logins)."""
    _actor(conn, "sim-seed")
    cur = conn.cursor()
    cur.executemany("INSERT INTO organisations (id, name, kind) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(o.id, o.name, o.kind) for o in orgs])
    for u in units:
        cur.execute("INSERT INTO units (id, org_id, name, region) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (u.id, u.org.id, u.name, u.region))
        cur.executemany("INSERT INTO unit_affiliations (unit_id, org_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        [(u.id, a.id) for a in u.affiliated])
    for spec in instruments:
        r = reg.get(spec.id) or reg[spec.id.rsplit("-", 1)[0]]
        contact = {"imu": ("刘老师", "0471-4991234", "fxcs@imu.edu.cn"),
                   "btri": ("高老师", "0472-5179876", "fxzx@brire.com")}.get(spec.unit_id, ("", "", ""))
        cur.execute(
            """INSERT INTO instruments (id, unit_id, name, name_en, internal_no, classification_code, location,
                   original_value, category, accepted_on, registered_on, rated_hours, is_open, source, running_status,
                   sharing_mode, model, manufacturer, country, booked_on, funding_source, fee_standard,
                   service_content, main_functions, specs, booking_url, contact_name, contact_phone, contact_email)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO NOTHING""",
            (spec.id, spec.unit_id, spec.name, spec.name_en, r.internal_no, spec.classification_code, spec.location,
             spec.original_value, spec.category, r.accepted_on, r.registered_on, spec.rated_hours,
             r.sharing_mode != "不共享", r.source, "正常", r.sharing_mode, spec.model, spec.manufacturer, spec.country,
             r.booked_on, r.funding_source, f"校内 {r.internal_price} 元/小时; 校外 {r.external_price} 元/小时",
             r.service_content or f"{spec.name}测试服务", r.main_functions or spec.name_en, r.specs,
             f"https://jishi.example.cn/catalog/{spec.id}", *contact),
        )
        cur.execute(
            "INSERT INTO price_list (instrument_id, item, basis, internal_price, external_price, valid_from,"
            " published_on) VALUES (%s, '机时', 'per_hour', %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (spec.id, r.internal_price, r.external_price, date(2024, 1, 1), date(2023, 12, 15)),
        )
    people = list(people)
    cur.executemany("INSERT INTO platform_users (id, name, org_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(p.id, p.name, p.org_id) for p in people if p.mapped])
    cur.executemany(
        "INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        [(p.unit_id, method, p.login, p.id) for p in people if p.mapped for method in ("checkin", "os")],
    )


def logins(conn: Conn, password: str, accounts: Sequence[Login] = DEMO_LOGINS) -> None:
    """Web accounts with `password`, hashed the way server/web/auth.py stores passwords."""
    from server.web.auth import hash_password

    _actor(conn, "sim-seed")
    digest = hash_password(password)
    for a in accounts:
        conn.execute("INSERT INTO web_accounts (login, display_name, role, unit_id, password_hash)"
                     " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (login) DO NOTHING",
                     (a.login, a.display_name, a.role, a.unit_id, digest))


def enrol(conn: Conn, agents: Iterable[tuple[str, str, str, str]]) -> None:
    """(agent id, instrument id, key id, public key base64url): what enrolment would store."""
    _actor(conn, "sim-seed")
    for agent_id, instrument_id, kid, public in agents:
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (agent_id, instrument_id))
        conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)"
                     " ON CONFLICT DO NOTHING", (kid, agent_id, public))


def service_records(conn: Conn, truths: Iterable[Truth], people: Iterable[Person], orgs: Iterable[Org],
                    reg: Mapping[str, Registry] = REGISTRY, seed: int = 0, until: int | None = None) -> int:
    """The units' self-reported service records: one per external session with runs (the national
    platform's layout, hour precision, hours to 0.1), 5 % never reported, 4 % claiming more hours
    than were worked (what reconciliation is for), and a few internal ones. Returns rows written."""
    _actor(conn, "sim-seed")
    who = {p.id: p for p in people}
    org_name = {o.id: o.name for o in orgs}
    n = 0
    for tr in truths:
        rng = random.Random(f"{seed}:{tr.instrument}:services")
        r = reg.get(tr.instrument) or reg[tr.instrument.rsplit("-", 1)[0]]
        by_session: dict[int, list[tuple[int, int]]] = {}
        for s in tr.sessions:
            runs = [(x.start, x.end) for x in tr.runs if x.user == s.user and s.check_in <= x.start < s.left]
            if runs:
                by_session[s.check_in] = runs
        for k, s in enumerate(tr.sessions):
            got = by_session.get(s.check_in)
            if not got or (until is not None and s.left > until):
                continue
            p = who.get(s.user)
            if p is None or not p.mapped:
                continue
            if not s.external and rng.random() > 0.08:
                continue
            if s.external and rng.random() < 0.05:
                continue
            hours = sum(b - a for a, b in got) / HOUR
            claimed = hours * (1.6 if rng.random() < 0.04 else 1.0)
            start = local(got[0][0]).replace(minute=0, second=0, microsecond=0)
            end_l = local(got[-1][1])
            end = end_l.replace(minute=0, second=0, microsecond=0)
            if end <= start or end < end_l:
                end = datetime.fromtimestamp(end.timestamp() + 3600, TZ)
            price = r.external_price if s.external else r.internal_price
            amount = (Decimal(str(round(claimed, 1))) * price).quantize(Decimal("0.01"))
            conn.execute(
                """INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,
                       amount, content, way, user_type, direction, applicant_user_id, applicant_name,
                       applicant_org_id, applicant_org_name, satisfaction, contract_no)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, '占用', %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (unit_id, record_no) DO NOTHING""",
                (tr.unit, tr.instrument, f"SR-{tr.instrument}-{k:05d}", start, end,
                 Decimal(str(round(claimed, 1))), amount, "样品测试", 130 if s.external else 120,
                 rng.choice((135, 135, 136, 137)), p.id, p.name, p.org_id, org_name.get(p.org_id, ""),
                 rng.choice((4, 5, 5)), f"HT-{local(got[0][0]).year}-{k:04d}" if s.external else ""),
            )
            n += 1
    return n


def service_cases(conn: Conn) -> None:
    _actor(conn, "sim-seed")
    rows = [
        ("imu", "imu-lcms", date(2025, 6, 18), "乳制品中功能性寡糖的高分辨质谱鉴定", "企业成果",
         "内蒙古伊利实业集团股份有限公司", "合同 HT-2025-0117; 企业新品备案"),
        ("imu", "imu-xrd", date(2025, 10, 9), "风电叶片复合材料老化机理研究 (致谢本仪器)", "论文",
         "内蒙古科技大学", "doi:10.1016/j.compositesb.2025.000000"),
        ("btri", "btri-gdms", date(2025, 4, 22), "高纯氧化镝 6N 级杂质全分析方法", "标准",
         "中国北方稀土(集团)高科技股份有限公司", "团体标准 T/XT 012-2025"),
        ("btri", "btri-sem", date(2025, 11, 3), "稀土永磁晶界扩散工艺表征支撑企业量产", "企业成果",
         "包头稀途新材料科技有限公司", "合同 HT-2025-0342"),
    ]
    known = {r[0] for r in conn.execute("SELECT id FROM instruments")}
    for unit, inst, on, title, kind, who, evidence in rows:
        exists = conn.execute("SELECT 1 FROM service_cases WHERE unit_id = %s AND title = %s", (unit, title)).fetchone()
        if not exists and inst in known:
            conn.execute("INSERT INTO service_cases (unit_id, instrument_id, occurred_on, title, kind, beneficiary,"
                         " evidence) VALUES (%s, %s, %s, %s, %s, %s, %s)", (unit, inst, on, title, kind, who, evidence))
