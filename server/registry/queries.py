"""Named queries of the registry, and the one data layer that writes it: the API, the pages and
the spreadsheet imports all change the registry through these functions. None commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from server import clock
from server.registry import schema
from server.store.conn import Conn

# Columns an import may set on an instrument (001 core + 010 national-platform fields).
INSTRUMENT_COLUMNS = tuple(n for n in schema.INSTRUMENT.names() if n not in ("id", "unit_id"))

SERVICE_COLUMNS = (
    "unit_id",
    "instrument_id",
    "record_no",
    "start_at",
    "end_at",
    "service_hours",
    "sample_count",
    "amount",
    "content",
    "way",
    "user_type",
    "direction",
    "applicant_user_id",
    "applicant_name",
    "applicant_org_id",
    "applicant_org_name",
    "satisfaction",
    "contract_no",
    "ip_terms",
    "confidentiality",
    "liability",
    "dispute_resolution",
)


@dataclass(frozen=True)
class InstrumentRef:
    id: str
    unit_id: str
    internal_no: str


def unit_instruments(conn: Conn, unit_id: str | None) -> dict[str, InstrumentRef]:
    """Instruments by id: of one unit, or of every unit (None)."""
    rows = conn.execute(
        "SELECT id, unit_id, internal_no FROM instruments WHERE %(u)s::text IS NULL OR unit_id = %(u)s",
        {"u": unit_id},
    )
    return {r[0]: InstrumentRef(r[0], r[1], r[2]) for r in rows}


def upsert_instrument(conn: Conn, unit_id: str, rec: dict[str, Any]) -> None:
    """Insert or update by id; only the columns present in `rec` are written on update, so a
    ledger without a column never blanks what the registry already knows."""
    cols = [c for c in INSTRUMENT_COLUMNS if c in rec]
    names = ["id", "unit_id", *cols]
    stmt = sql.SQL(
        "INSERT INTO instruments ({cols}) VALUES ({vals}) ON CONFLICT (id) DO UPDATE SET {sets}, updated_at = now()"
        " WHERE instruments.unit_id = EXCLUDED.unit_id"
    ).format(
        cols=sql.SQL(", ").join(map(sql.Identifier, names)),
        vals=sql.SQL(", ").join(sql.Placeholder() * len(names)),
        sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in cols),
    )
    conn.execute(stmt, [rec["id"], unit_id, *(rec[c] for c in cols)])


def upsert_service_record(conn: Conn, rec: dict[str, Any], batch_id: int | None) -> None:
    """Insert or replace by (unit, record_no): a corrected sheet imported again updates the record."""
    names = [*SERVICE_COLUMNS, "import_batch_id"]
    stmt = sql.SQL(
        "INSERT INTO service_records ({cols}) VALUES ({vals}) ON CONFLICT (unit_id, record_no) DO UPDATE SET {sets}"
    ).format(
        cols=sql.SQL(", ").join(map(sql.Identifier, names)),
        vals=sql.SQL(", ").join(sql.Placeholder() * len(names)),
        sets=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in names if c not in ("unit_id", "record_no")
        ),
    )
    conn.execute(stmt, [*(rec.get(c) for c in SERVICE_COLUMNS), batch_id])


def lookup_people(conn: Conn, units: list[str] | None = None) -> Any:
    """A function (applicant name, organisation name) -> (platform user id, organisation id), each
    None unless the match is unique: a service record is linked to the people it names when it can
    be done without guessing. `units`: only people those units may see (a unit manager's import
    never links another unit's person)."""
    orgs: dict[str, list[str]] = {}
    for oid, name in conn.execute("SELECT id, name FROM organisations"):
        orgs.setdefault(name.strip(), []).append(oid)
    users: dict[str, list[tuple[str, str]]] = {}
    for uid, name, org, *_ in conn.execute(PEOPLE.encode(), {"s": units}):
        users.setdefault(name.strip(), []).append((uid, org))

    def find(person: str, org_name: str) -> tuple[str | None, str | None]:
        org_ids = orgs.get(org_name.strip(), [])
        org_id = org_ids[0] if len(org_ids) == 1 else None
        candidates = [u for u, o in users.get(person.strip(), []) if org_id is None or o == org_id]
        user_id = candidates[0] if len(candidates) == 1 else None
        return user_id, org_id

    return find


# -- exemptions, prices, cases (imports of migration 014) ----------------------------------------


EXEMPTION_COLUMNS = ("instrument_id", "reason", "requested_on", "approved_by", "approval_ref", "approved_on",
                     "filed_on", "valid_from", "valid_to", "revoked_on")
_SAME_EXEMPTION = (
    " WHERE instrument_id = %(instrument_id)s AND approval_ref = %(approval_ref)s"
    " AND (approval_ref <> '' OR reason = %(reason)s)"
)


def _exemption_key(rec: dict[str, Any]) -> dict[str, Any]:
    return {"instrument_id": rec["instrument_id"], "approval_ref": rec.get("approval_ref") or "",
            "reason": rec.get("reason") or ""}


def find_exemption(conn: Conn, rec: dict[str, Any]) -> dict[str, Any] | None:
    """The exemption `upsert_exemption` would update (its columns), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {', '.join(EXEMPTION_COLUMNS)} FROM instrument_exemptions{_SAME_EXEMPTION} ORDER BY id LIMIT 1",
            _exemption_key(rec),
        ).fetchone()


def delete_exemption(conn: Conn, rec: dict[str, Any]) -> int:
    return conn.execute("DELETE FROM instrument_exemptions" + _SAME_EXEMPTION, _exemption_key(rec)).rowcount


def upsert_exemption(conn: Conn, rec: dict[str, Any], batch_id: int | None) -> None:
    """Insert or update the same exemption: same instrument and approval document, or for a request
    (no document) the same instrument and reason."""
    cols = ("reason", "requested_on", "approved_by", "approval_ref", "approved_on", "filed_on", "valid_from",
            "valid_to", "revoked_on")  # fmt: skip
    values = {c: rec.get(c) for c in cols} | {"instrument_id": rec["instrument_id"], "batch": batch_id}
    for c in ("approved_by", "approval_ref"):
        values[c] = values[c] or ""
    row = conn.execute(
        "SELECT id FROM instrument_exemptions WHERE instrument_id = %(instrument_id)s"
        " AND approval_ref = %(approval_ref)s AND (approval_ref <> '' OR reason = %(reason)s)"
        " ORDER BY id LIMIT 1",
        values,
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO instrument_exemptions (instrument_id, reason, requested_on, approved_by, approval_ref,"
            " approved_on, filed_on, valid_from, valid_to, revoked_on, import_batch_id) VALUES (%(instrument_id)s,"
            " %(reason)s, %(requested_on)s, %(approved_by)s, %(approval_ref)s, %(approved_on)s, %(filed_on)s,"
            " %(valid_from)s, %(valid_to)s, %(revoked_on)s, %(batch)s)",
            values,
        )
    else:
        conn.execute(
            "UPDATE instrument_exemptions SET reason = %(reason)s, requested_on = %(requested_on)s,"
            " approved_by = %(approved_by)s, approval_ref = %(approval_ref)s, approved_on = %(approved_on)s,"
            " filed_on = %(filed_on)s, valid_from = %(valid_from)s, valid_to = %(valid_to)s,"
            " revoked_on = %(revoked_on)s, import_batch_id = %(batch)s WHERE id = %(id)s",
            values | {"id": row[0]},
        )


def upsert_price(conn: Conn, rec: dict[str, Any], batch_id: int | None) -> None:
    """Insert or replace one price list row by (instrument, item, valid from)."""
    conn.execute(
        "INSERT INTO price_list (instrument_id, item, basis, internal_price, external_price, valid_from, valid_to,"
        " published_on, note, import_batch_id) VALUES (%(instrument_id)s, %(item)s, %(basis)s, %(internal_price)s,"
        " %(external_price)s, %(valid_from)s, %(valid_to)s, %(published_on)s, %(note)s, %(batch)s)"
        " ON CONFLICT (instrument_id, item, valid_from) DO UPDATE SET basis = EXCLUDED.basis,"
        " internal_price = EXCLUDED.internal_price, external_price = EXCLUDED.external_price,"
        " valid_to = EXCLUDED.valid_to, published_on = EXCLUDED.published_on, note = EXCLUDED.note,"
        " import_batch_id = EXCLUDED.import_batch_id",
        {"valid_to": None, "published_on": None, "note": ""} | rec | {"batch": batch_id},
    )


def upsert_case(conn: Conn, rec: dict[str, Any], batch_id: int | None) -> None:
    """Insert or update a service case by (unit, date, title)."""
    values = rec | {"batch": batch_id}
    row = conn.execute(
        "SELECT id FROM service_cases WHERE unit_id = %(unit_id)s AND occurred_on = %(occurred_on)s"
        " AND title = %(title)s ORDER BY id LIMIT 1",
        values,
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO service_cases (unit_id, instrument_id, occurred_on, title, kind, beneficiary, evidence,"
            " description, import_batch_id) VALUES (%(unit_id)s, %(instrument_id)s, %(occurred_on)s, %(title)s,"
            " %(kind)s, %(beneficiary)s, %(evidence)s, %(description)s, %(batch)s)",
            values,
        )
    else:
        conn.execute(
            "UPDATE service_cases SET instrument_id = %(instrument_id)s, kind = %(kind)s,"
            " beneficiary = %(beneficiary)s, evidence = %(evidence)s, description = %(description)s,"
            " import_batch_id = %(batch)s WHERE id = %(id)s",
            values | {"id": row[0]},
        )


# -- people ---------------------------------------------------------------------------------------


def organisations(conn: Conn) -> dict[str, str]:
    """Organisation id -> name."""
    return {r[0]: r[1] for r in conn.execute("SELECT id, name FROM organisations")}


def unit_org(conn: Conn, unit_id: str) -> str:
    row = conn.execute("SELECT org_id FROM units WHERE id = %s", (unit_id,)).fetchone()
    return str(row[0]) if row else ""


def platform_users(conn: Conn) -> dict[str, tuple[str, str]]:
    """Platform user id -> (name, organisation id)."""
    return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, name, org_id FROM platform_users")}


def upsert_organisation(conn: Conn, org_id: str, name: str, kind: str | None) -> None:
    """Create the organisation, or set its kind when the sheet states one (the name stays)."""
    conn.execute(
        "INSERT INTO organisations (id, name, kind) VALUES (%s, %s, COALESCE(%s, 'other'))"
        " ON CONFLICT (id) DO UPDATE SET kind = COALESCE(%s, organisations.kind)",
        (org_id, name, kind, kind),
    )


def upsert_platform_user(conn: Conn, user_id: str, name: str, org_id: str, owner_unit_id: str | None) -> None:
    """Create a person owned by `owner_unit_id` (None: the operator), or change an existing one's
    name and organisation (the ownership stays: imports check who may change whom)."""
    conn.execute(
        "INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, org_id = EXCLUDED.org_id",
        (user_id, name, org_id, owner_unit_id),
    )


def set_affiliation(conn: Conn, unit_id: str, org_id: str, affiliated: bool) -> int:
    """Affiliate (or end the affiliation of) an organisation; the number of rows changed."""
    if affiliated:
        return conn.execute(
            "INSERT INTO unit_affiliations (unit_id, org_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (unit_id, org_id)
        ).rowcount
    return conn.execute("DELETE FROM unit_affiliations WHERE unit_id = %s AND org_id = %s", (unit_id, org_id)).rowcount


def affiliations(conn: Conn, unit_id: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT org_id FROM unit_affiliations WHERE unit_id = %s", (unit_id,))}


def upsert_identity(conn: Conn, unit_id: str, method: str, identifier: str, user_id: str) -> None:
    conn.execute(
        "INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (unit_id, method, identifier) DO UPDATE SET user_id = EXCLUDED.user_id",
        (unit_id, method, identifier, user_id),
    )


def delete_identity(conn: Conn, unit_id: str, method: str, identifier: str) -> int:
    return conn.execute(
        "DELETE FROM identity_map WHERE unit_id = %s AND method = %s AND identifier = %s", (unit_id, method, identifier)
    ).rowcount


# People a unit may see: of its own or affiliated organisations, mapped in its identity map,
# named in its service records, or registered by it. %(s)s: the caller's units (NULL: all).
PEOPLE = """
SELECT DISTINCT p.id, p.name, p.org_id, o.name AS org_name, p.owner_unit_id
FROM platform_users p JOIN organisations o ON o.id = p.org_id
WHERE %(s)s::text[] IS NULL
   OR p.org_id IN (SELECT org_id FROM units WHERE id = ANY(%(s)s::text[])
                   UNION SELECT org_id FROM unit_affiliations WHERE unit_id = ANY(%(s)s::text[]))
   OR p.owner_unit_id = ANY(%(s)s::text[])
   OR p.id IN (SELECT user_id FROM identity_map WHERE unit_id = ANY(%(s)s::text[]))
   OR p.id IN (SELECT applicant_user_id FROM service_records WHERE unit_id = ANY(%(s)s::text[])
               AND applicant_user_id IS NOT NULL)
"""


def person_visible(conn: Conn, user_id: str, units: list[str] | None) -> bool:
    """The person is one of `PEOPLE` for these units (None: anyone who exists)."""
    found = conn.execute(("SELECT 1 FROM (" + PEOPLE + ") x WHERE x.id = %(id)s").encode(), {"s": units, "id": user_id})
    return found.fetchone() is not None


def person_of_unit(conn: Conn, user_id: str, unit_id: str) -> bool:
    """The unit may map identities to this person and change their name: it registered them, or
    (people registered before ownership was recorded) its identity map already names them."""
    return (
        conn.execute(
            "SELECT 1 FROM platform_users p WHERE p.id = %(p)s AND (p.owner_unit_id = %(u)s"
            " OR (p.owner_unit_id IS NULL AND EXISTS (SELECT 1 FROM identity_map m"
            "     WHERE m.user_id = p.id AND m.unit_id = %(u)s)))",
            {"p": user_id, "u": unit_id},
        ).fetchone()
        is not None
    )


def people_of_unit(conn: Conn, unit_id: str) -> set[str]:
    """The ids of every person `person_of_unit` accepts, at once (for imports)."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT p.id FROM platform_users p WHERE p.owner_unit_id = %(u)s OR (p.owner_unit_id IS NULL AND"
            " EXISTS (SELECT 1 FROM identity_map m WHERE m.user_id = p.id AND m.unit_id = %(u)s))",
            {"u": unit_id},
        )
    }


# -- generic row writes (column names come from the schema, never from a client) -------------------


def insert_row(conn: Conn, table: schema.Table, values: dict[str, Any], returning: str = "") -> dict[str, Any] | None:
    """INSERT the given columns of a schema table; the row (as `returning` names it) or None."""
    stmt = sql.SQL("INSERT INTO {t} ({cols}) VALUES ({vals})").format(
        t=sql.Identifier(table.name),
        cols=sql.SQL(", ").join(map(sql.Identifier, values)),
        vals=sql.SQL(", ").join(sql.Placeholder(c) for c in values),
    )
    if returning:
        stmt = stmt + sql.SQL(" RETURNING " + returning)  # a constant of the caller
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(stmt, values).fetchone()
    conn.execute(stmt, values)
    return None


def update_row(conn: Conn, table: schema.Table, key: str, key_value: object, changes: dict[str, Any]) -> None:
    """UPDATE only the given columns of one row."""
    if not changes:
        return
    stmt = sql.SQL("UPDATE {t} SET {sets} WHERE {k} = {kv}").format(
        t=sql.Identifier(table.name),
        sets=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in changes),
        k=sql.Identifier(key),
        kv=sql.Placeholder("_key"),
    )
    conn.execute(stmt, {**changes, "_key": key_value})


def delete_row(conn: Conn, table: schema.Table, key: str, value: object) -> int:
    stmt = sql.SQL("DELETE FROM {t} WHERE {k} = %s").format(t=sql.Identifier(table.name), k=sql.Identifier(key))
    return conn.execute(stmt, (value,)).rowcount


def exists(conn: Conn, table: schema.Table, key: str, value: object) -> bool:
    stmt = sql.SQL("SELECT 1 FROM {t} WHERE {k} = %s").format(t=sql.Identifier(table.name), k=sql.Identifier(key))
    return conn.execute(stmt, (value,)).fetchone() is not None


def instrument_values(conn: Conn, instrument_id: str) -> dict[str, Any]:
    """The registry columns of one instrument (empty when there is none)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM instruments WHERE id = %s", (instrument_id,)).fetchone()
    return row or {}


def update_instrument(conn: Conn, instrument_id: str, changes: dict[str, Any]) -> None:
    if changes:
        update_row(conn, schema.INSTRUMENT, "id", instrument_id, {**changes, "updated_at": clock.now()})


# -- listings (jishi registry list) ---------------------------------------------------------------

# The instrument listing's columns; headers are the schema's labels.
_EXPORT_INSTRUMENT = ("id", "internal_no", "name", "original_value", "category", "accepted_on", "registered_on",
                      "sharing_mode", "is_open")

# name -> (Chinese column headers, query with %(unit)s and %(on)s (a date or NULL))
LISTINGS: dict[str, tuple[tuple[str, ...], str]] = {
    "instruments": (
        tuple(schema.INSTRUMENT.field(c).zh for c in _EXPORT_INSTRUMENT),
        f"SELECT {', '.join(_EXPORT_INSTRUMENT)} FROM instruments WHERE unit_id = %(unit)s ORDER BY id",
    ),
    "prices": (
        ("仪器编号", "仪器名称", "收费项目", "计价单位", "校内价格（元）", "校外价格（元）", "执行日期", "截止日期"),
        "SELECT p.instrument_id, i.name, p.item, p.basis, p.internal_price, p.external_price, p.valid_from,"
        " p.valid_to FROM price_list p JOIN instruments i ON i.id = p.instrument_id WHERE i.unit_id = %(unit)s"
        " AND (%(on)s::date IS NULL OR (p.valid_from <= %(on)s::date"
        "      AND (p.valid_to IS NULL OR p.valid_to >= %(on)s::date)"
        "      AND NOT EXISTS (SELECT 1 FROM price_list n WHERE n.instrument_id = p.instrument_id"
        "                      AND n.item = p.item AND n.valid_from > p.valid_from AND n.valid_from <= %(on)s::date)))"
        " ORDER BY p.instrument_id, p.item, p.valid_from",
    ),
    "exemptions": (
        ("仪器编号", "仪器名称", "理由", "审批部门", "批准文号", "批准日期", "有效期起", "有效期至", "撤销日期"),
        "SELECT e.instrument_id, i.name, e.reason, e.approved_by, e.approval_ref, e.approved_on, e.valid_from,"
        " e.valid_to, e.revoked_on FROM instrument_exemptions e JOIN instruments i ON i.id = e.instrument_id"
        " WHERE i.unit_id = %(unit)s ORDER BY e.instrument_id, e.id",
    ),
    "cases": (
        ("日期", "仪器编号", "案例名称", "成果类型", "服务对象", "佐证材料"),
        "SELECT occurred_on, instrument_id, title, kind, beneficiary, evidence FROM service_cases"
        " WHERE unit_id = %(unit)s ORDER BY occurred_on, id",
    ),
    "users": (
        ("用户编号", "姓名", "单位编号", "所在单位", "单位类型", "内部/外部"),
        "SELECT p.id, p.name, o.id, o.name, o.kind,"
        " CASE WHEN o.id = u.org_id OR a.org_id IS NOT NULL THEN '内部' ELSE '外部' END"
        " FROM units u CROSS JOIN platform_users p JOIN organisations o ON o.id = p.org_id"
        " LEFT JOIN unit_affiliations a ON a.unit_id = u.id AND a.org_id = o.id"
        " WHERE u.id = %(unit)s AND (o.id = u.org_id OR a.org_id IS NOT NULL"
        "   OR EXISTS (SELECT 1 FROM identity_map m WHERE m.unit_id = u.id AND m.user_id = p.id)"
        "   OR EXISTS (SELECT 1 FROM service_records r WHERE r.unit_id = u.id AND r.applicant_user_id = p.id))"
        " ORDER BY p.id",
    ),
    "identities": (
        ("识别方式", "标识", "用户编号", "姓名", "所在单位"),
        "SELECT m.method, m.identifier, m.user_id, p.name, o.name FROM identity_map m"
        " JOIN platform_users p ON p.id = m.user_id JOIN organisations o ON o.id = p.org_id"
        " WHERE m.unit_id = %(unit)s ORDER BY m.method, m.identifier",
    ),
    "imports": (
        ("批次", "类型", "文件", "结果", "行数", "接受", "拒绝", "时间"),
        "SELECT id, kind, file_name, status, rows_total, rows_accepted, rows_rejected, created_at"
        " FROM import_batches WHERE unit_id = %(unit)s ORDER BY id DESC LIMIT 50",
    ),
}


def listing(conn: Conn, what: str, unit_id: str, on: Any = None) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """One of LISTINGS for a unit: headers and rows (prices in force on `on` when given)."""
    headers, query = LISTINGS[what]
    return headers, list(conn.execute(query, {"unit": unit_id, "on": on}))


# -- first run: what is still missing before the first evaluation (issue 18) ------------------------

SETUP_GAPS: dict[str, str] = {
    # instruments in service with no agent holding a usable key: no verified hours can come from them
    "instruments_without_agent": """
        SELECT i.id, i.name, i.unit_id FROM instruments i
        WHERE i.retired_on IS NULL AND NOT EXISTS (
            SELECT 1 FROM agents a JOIN agent_keys k ON k.agent_id = a.id
            WHERE a.instrument_id = i.id AND a.revoked_at IS NULL AND k.revoked_at IS NULL)
        ORDER BY i.unit_id, i.id""",
    # units nobody manages: nobody there sees the board, corrects the registry or answers proposals
    "units_without_manager": """
        SELECT u.id, u.name, u.org_id AS unit_id FROM units u
        WHERE NOT EXISTS (SELECT 1 FROM web_accounts w WHERE w.unit_id = u.id AND w.role = 'unit_manager'
                          AND w.disabled_at IS NULL)
        ORDER BY u.id""",
    # people whose organisation is unclassified: internal or external use cannot be told apart
    "people_without_organisation": """
        SELECT p.id, p.name, p.owner_unit_id AS unit_id FROM platform_users p
        JOIN organisations o ON o.id = p.org_id
        WHERE o.kind = 'other' ORDER BY p.id""",
    # instruments in service without a price valid today: the fee checks have nothing to compare
    "instruments_without_price": """
        SELECT i.id, i.name, i.unit_id FROM instruments i
        WHERE i.retired_on IS NULL AND NOT EXISTS (
            SELECT 1 FROM price_list p WHERE p.instrument_id = i.id AND p.valid_from <= %(today)s
            AND (p.valid_to IS NULL OR p.valid_to >= %(today)s))
        ORDER BY i.unit_id, i.id""",
}


def setup_gaps(conn: Conn, limit: int = 200) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """Each first-run gap (SETUP_GAPS): how many rows, and the first `limit` of them."""
    out: dict[str, tuple[int, list[dict[str, Any]]]] = {}
    cur = conn.cursor(row_factory=dict_row)
    for key, query in SETUP_GAPS.items():
        found = cur.execute(query.encode(), {"today": clock.today()}).fetchall()
        out[key] = (len(found), found[:limit])
    return out


def setup_counts(conn: Conn) -> dict[str, int]:
    """How many organisations, units, instruments, people and enrolled agents there are."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM organisations), (SELECT count(*) FROM units),"
        " (SELECT count(*) FROM instruments), (SELECT count(*) FROM platform_users),"
        " (SELECT count(DISTINCT agent_id) FROM agent_keys WHERE revoked_at IS NULL)").fetchone()
    assert row is not None
    return dict(zip(("organisations", "units", "instruments", "people", "agents"), row, strict=True))
