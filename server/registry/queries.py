"""Named queries of the registry: instruments, service records, people. None commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]

# Columns an import may set on an instrument (001 core + 010 national-platform fields).
INSTRUMENT_COLUMNS = (
    "name",
    "name_en",
    "internal_no",
    "classification_code",
    "location",
    "original_value",
    "category",
    "accepted_on",
    "registered_on",
    "retired_on",
    "rated_hours",
    "is_open",
    "source",
    "running_status",
    "sharing_mode",
    "model",
    "manufacturer",
    "country",
    "booked_on",
    "funding_source",
    "fee_standard",
    "service_content",
    "main_functions",
    "specs",
    "booking_url",
    "contact_name",
    "contact_phone",
    "contact_email",
)

SERVICE_COLUMNS = (
    "unit_id",
    "instrument_id",
    "record_no",
    "start_at",
    "end_at",
    "service_hours",
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


def lookup_people(conn: Conn) -> Any:
    """A function (applicant name, organisation name) -> (platform user id, organisation id), each
    None unless the match is unique: a service record is linked to the people it names when it can
    be done without guessing."""
    orgs: dict[str, list[str]] = {}
    for oid, name in conn.execute("SELECT id, name FROM organisations"):
        orgs.setdefault(name.strip(), []).append(oid)
    users: dict[str, list[tuple[str, str]]] = {}
    for uid, name, org in conn.execute("SELECT id, name, org_id FROM platform_users"):
        users.setdefault(name.strip(), []).append((uid, org))

    def find(person: str, org_name: str) -> tuple[str | None, str | None]:
        org_ids = orgs.get(org_name.strip(), [])
        org_id = org_ids[0] if len(org_ids) == 1 else None
        candidates = [u for u, o in users.get(person.strip(), []) if org_id is None or o == org_id]
        user_id = candidates[0] if len(candidates) == 1 else None
        return user_id, org_id

    return find
