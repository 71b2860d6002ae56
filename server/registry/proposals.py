"""Changes that move the figures are proposals (issue 13).

A unit manager's change of a figure the unit is graded on — an instrument's rated hours, value,
category, accepted / registered / retired dates, opening and sharing mode (schema fields marked
`proposal`), a person's organisation, an affiliation — is stored here instead of in the registry.
The evaluation reads the registry only, so nothing moves until the operator (or, per deployment
setting, an evaluator) accepts; accepting writes the change through the registry's data layer
(audited there), declining leaves the registry as it was. A newer proposal for the same field
supersedes the open one. None of these functions commits.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from psycopg.rows import dict_row

from server import clock
from server.registry import queries, schema
from server.store.conn import Conn

Target = Literal["instruments", "platform_users", "unit_affiliations", "instrument_exemptions"]
_EXEMPTION_DATES = ("requested_on", "approved_on", "filed_on", "valid_from", "valid_to", "revoked_on")
TARGETS: dict[str, schema.Table] = {"instruments": schema.INSTRUMENT, "platform_users": schema.PERSON}

COLS = ("id, unit_id, target, row_key, field, before, after, status, proposed_by, proposed_at, decided_by,"
        " decided_at, note")


def _json(v: Any) -> Any:
    """A registry value as JSON (decimals as text, so no digit is lost)."""
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, date):
        return v.isoformat()
    return v


def _value(table: schema.Table | None, field: str, v: Any) -> Any:
    """The JSON value back as the column's type."""
    if v is None or table is None:
        return v
    kind = table.field(field).kind
    if kind in ("money", "hours"):
        return Decimal(v)
    if kind == "date":
        return date.fromisoformat(v)
    return v


def may_decide(role: str, evaluators_decide: bool) -> bool:
    """The operator decides; an evaluator too when the deployment says so; never the unit."""
    return role == "operator" or (role == "evaluator" and evaluators_decide)


def label(proposal: dict[str, Any]) -> tuple[str, str]:
    """What a proposal changes, in Chinese and English."""
    table = TARGETS.get(proposal["target"])
    if table is not None:
        f = table.field(proposal["field"])
        return f.zh, f.en
    if proposal["target"] == "instrument_exemptions":
        return "不开放审批", "Exemption from opening"
    return ("关联单位", "Affiliation") if proposal["target"] == "unit_affiliations" else (proposal["field"],) * 2


def propose(conn: Conn, unit_id: str, target: Target, row_key: str, field: str, before: Any, after: Any,
            actor: str) -> int | None:
    """Record a proposal (superseding the open one for the same field); None when `after` is what
    the registry already holds (the open proposal, if any, is withdrawn)."""
    conn.execute(
        "UPDATE registry_proposals SET status = 'superseded' WHERE status = 'pending' AND target = %s"
        " AND row_key = %s AND field = %s",
        (target, row_key, field),
    )
    if before == after or json.loads(_dump(before)) == json.loads(_dump(after)):  # 1250000 == 1250000.00
        return None
    row = conn.execute(
        "INSERT INTO registry_proposals (unit_id, target, row_key, field, before, after, proposed_by, proposed_at)"
        " VALUES (%s, %s, %s, %s, to_jsonb(%s::json), to_jsonb(%s::json), %s, %s) RETURNING id",
        (unit_id, target, row_key, field, _dump(before), _dump(after), actor, clock.now()),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _dump(v: Any) -> str:
    return json.dumps(_json(v), ensure_ascii=False, default=str)  # dates inside an exemption: ISO text


def shown(v: Any) -> str:
    """A proposal's before / after as people read it."""
    if v is None:
        return "—"
    if isinstance(v, dict):  # an exemption
        valid = f"{v.get('valid_from') or '…'}–{v.get('valid_to') or '…'}"
        return f"{v.get('approved_by') or ''} {v.get('approval_ref') or ''} {v.get('approved_on') or ''}（{valid}）"
    if isinstance(v, bool):
        return "是" if v else "否"
    return str(v)


def split(table: schema.Table, changes: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                          dict[str, Any]]:
    """A unit manager's changes: those written at once, and those that only become proposals."""
    fields = table.proposal_fields()
    direct = {k: v for k, v in changes.items() if k not in fields}
    proposed = {k: v for k, v in changes.items() if k in fields and v != current.get(k)}  # typed: 1 == 1.0
    return direct, proposed


def listing(conn: Conn, units: list[str] | None, status: str | None = "pending",
            proposal_id: int | None = None) -> list[dict[str, Any]]:
    """Proposals of the given units (None: all), newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {COLS} FROM registry_proposals WHERE (%(u)s::text[] IS NULL OR unit_id = ANY(%(u)s::text[]))"
            " AND (%(s)s::text IS NULL OR status = %(s)s) AND (%(i)s::bigint IS NULL OR id = %(i)s)"
            " ORDER BY id DESC LIMIT 1000",
            {"u": units, "s": status, "i": proposal_id},
        ).fetchall()


def pending_for(conn: Conn, target: str, row_key: str) -> dict[str, Any]:
    """Open proposals of one row: field -> proposed value (as JSON)."""
    return {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT field, after FROM registry_proposals WHERE status = 'pending' AND target = %s AND row_key = %s",
            (target, row_key),
        )
    }


def decide(conn: Conn, proposal: dict[str, Any], accept: bool, actor: str, note: str = "") -> None:
    """Accept (write the change to the registry) or decline an open proposal."""
    if accept:
        apply(conn, proposal)
    conn.execute(
        "UPDATE registry_proposals SET status = %s, decided_by = %s, decided_at = %s, note = %s WHERE id = %s",
        ("accepted" if accept else "declined", actor, clock.now(), note, proposal["id"]),
    )


def apply(conn: Conn, proposal: dict[str, Any]) -> None:
    """Write a proposal's `after` to the registry (also used to compute figures as proposed, in a
    transaction that is rolled back)."""
    target, key, field, after = proposal["target"], proposal["row_key"], proposal["field"], proposal["after"]
    if target == "instruments":
        queries.update_instrument(conn, key, {field: _value(schema.INSTRUMENT, field, after)})
    elif target == "platform_users":
        queries.update_row(conn, schema.PERSON, "id", key, {field: _value(schema.PERSON, field, after)})
    elif target == "unit_affiliations":
        queries.set_affiliation(conn, proposal["unit_id"], key, bool(after))
    elif target == "instrument_exemptions":
        if after is None:  # reverting a new exemption: it goes
            queries.delete_exemption(conn, _exemption(proposal["before"]))
        else:
            queries.upsert_exemption(conn, _exemption(after), None)
    else:
        raise ValueError(f"unknown proposal target {target}")


def revert(conn: Conn, proposal: dict[str, Any]) -> None:
    """Write a proposal's `before` back (figures as they were before an accepted change)."""
    apply(conn, {**proposal, "after": proposal["before"], "before": proposal["after"]})


def _exemption(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: date.fromisoformat(v) if k in _EXEMPTION_DATES and v else v for k, v in rec.items()}


def exemption(conn: Conn, unit_id: str, rec: dict[str, Any], operator: bool, actor: str,
              batch_id: int | None = None) -> int | None:
    """Record an exemption: at once when it is a request (nothing approved, it moves no figure) or
    the operator's; as a proposal when a unit manager records or changes an approval (art. 13: an
    approved exemption takes the instrument out of the open rate). The proposal's id, or None."""
    current = queries.find_exemption(conn, rec)
    approval = bool(rec.get("approved_on")) or bool(current and current["approved_on"])
    if operator or not approval:
        queries.upsert_exemption(conn, rec, batch_id)
        return None
    after = {c: rec.get(c) for c in queries.EXEMPTION_COLUMNS}
    field = rec.get("approval_ref") or rec.get("reason") or "exemption"
    return propose(conn, unit_id, "instrument_exemptions", rec["instrument_id"], field, current, after, actor)
