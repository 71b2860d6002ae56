"""Bookings as the API and the booking pages both find them: a published instrument, a booking by
its code (the public's only handle on it)."""

from __future__ import annotations

from typing import Any

from server.bookings import queries
from server.store.conn import Conn
from server.web.errors import not_found
from server.web.services import catalog


def published(conn: Conn, instrument_id: str, settings: Any) -> dict[str, Any]:
    inst = catalog.detail(conn, instrument_id, settings.live_stale_s)
    if inst is None:
        raise not_found("what.instrument", instrument_id)
    return inst



def by_code(conn: Conn, code: str) -> dict[str, Any]:
    b = queries.booking_by_code(conn, code.upper()) if len(code) <= 16 else None
    if b is None:
        raise not_found("what.booking", code)
    return b
