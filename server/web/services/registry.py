"""Registry reads that the API routes and the registry pages share: who a unit may see, the
listings the spreadsheet import fills (the CLI's `jishi registry list`), and the import kinds."""

from __future__ import annotations

from typing import Any

from server.registry.queries import LISTINGS
from server.store.conn import Conn
from server.web.db import rows

# per listing: the JSON keys, in the order of the CLI query's columns
KEYS: dict[str, tuple[str, ...]] = {
    "exemptions": ("instrument_id", "instrument_name", "reason", "approved_by", "approval_ref", "approved_on",
                   "valid_from", "valid_to", "revoked_on"),
    "cases": ("occurred_on", "instrument_id", "title", "kind", "beneficiary", "evidence"),
    "imports": ("id", "kind", "file_name", "status", "rows_total", "rows_accepted", "rows_rejected", "created_at"),
}


def listing(conn: Conn, what: str, unit_id: str) -> list[dict[str, Any]]:
    _, query = LISTINGS[what]
    keys = KEYS[what]
    out = []
    for r in rows(conn, query, {"unit": unit_id, "on": None}):
        out.append(dict(zip(keys, r.values(), strict=True)))
    return out


def headers(what: str) -> tuple[str, ...]:
    """The Chinese column headers of the CLI listing."""
    return LISTINGS[what][0]


def kinds() -> list[dict[str, str]]:
    """The kinds the importer offers right now (its `KINDS` registry when it has one)."""
    from typing import get_args

    from server.registry import importer

    registry = getattr(importer, "KINDS", None)
    if isinstance(registry, dict) and registry:
        return [{"key": str(k), "label": str(getattr(v, "label", k)), "description": str(getattr(v, "description", ""))}
                for k, v in registry.items()]
    return [{"key": str(k), "label": str(k), "description": ""} for k in get_args(importer.Kind)]
