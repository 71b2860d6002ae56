"""Lookups that both find a record and enforce the caller's reach over it.

A unit manager asking for another unit's record gets the same 404 as for a missing one: the
answer must not reveal what other units hold.
"""

from __future__ import annotations

from typing import Any

from server.evaluation import privacy
from server.store.conn import Conn
from server.web.auth import Principal, require_role
from server.web.db import one
from server.web.errors import ApiError, not_found


def unit(conn: Conn, p: Principal, unit_id: str) -> dict[str, Any]:
    row = one(conn, "SELECT id, org_id, name, region, created_at FROM units WHERE id = %s", (unit_id,))
    if row is None or not p.can_read_unit(unit_id):
        raise not_found("what.unit", unit_id)
    return row


def instrument(conn: Conn, p: Principal, instrument_id: str, *, write: bool = False) -> dict[str, Any]:
    """The instrument row (all columns); 404 outside the caller's unit, 403 for evaluators writing."""
    row = one(conn, "SELECT * FROM instruments WHERE id = %s", (instrument_id,))
    if row is None or not p.can_read_unit(row["unit_id"]):
        raise not_found("what.instrument", instrument_id)
    if write:
        require_role(p, "operator", "unit_manager")
    return row


def writable_unit(p: Principal, unit_id: str) -> None:
    require_role(p, "operator", "unit_manager")
    if not p.can_write_unit(unit_id):
        raise ApiError(403, "other_unit", "err.other_unit", unit=p.unit_id)


def pseudonymizer(conn: Conn) -> privacy.Pseudonymizer:
    """The evaluation's pseudonymizer, so that pages and exports show the same pseudonyms."""
    return privacy.load(conn)
