"""A unit's figures both ways: as the registry holds them (accepted) and as they would be with the
unit's open proposals; and, for each accepted change, what it did to each indicator.

Computed by applying (or reverting) the changes inside a transaction that is always rolled back,
so the one evaluation code path computes every variant and nothing is ever written."""

from __future__ import annotations

from typing import Any

from server.evaluation.period import Period
from server.registry import proposals
from server.web import evaluation
from server.web.db import Conn
from server.web.settings import WebSettings


def _indicators(conn: Conn, settings: WebSettings, period: Period, unit_id: str) -> dict[str, Any]:
    out: dict[str, Any] = evaluation.unit_report(conn, settings, period, unit_id).as_dict()["unit"]["indicators"]
    return out


def _numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric indicators, nested ones flattened ("utilization.verified")."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _numbers(v, f"{prefix}{k}.")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[prefix + k] = float(v)
    return out


def both_ways(conn: Conn, settings: WebSettings, period: Period, unit_id: str) -> dict[str, Any]:
    """The unit's indicators as accepted and as proposed, with the open proposals."""
    accepted = _indicators(conn, settings, period, unit_id)
    pending = proposals.listing(conn, [unit_id], "pending")
    proposed = accepted
    if pending:
        with conn.transaction(force_rollback=True):
            for p in reversed(pending):
                proposals.apply(conn, p)
            proposed = _indicators(conn, settings, period, unit_id)
    return {"as_accepted": accepted, "as_proposed": proposed, "pending": pending}


def accepted_effects(conn: Conn, settings: WebSettings, period: Period, unit_id: str) -> list[dict[str, Any]]:
    """Every accepted change of the unit (who, when, before -> after) with its effect on each
    numeric indicator: the figures now minus the figures with only that change undone."""
    changes = proposals.listing(conn, [unit_id], "accepted")
    if not changes:
        return []
    now = _numbers(_indicators(conn, settings, period, unit_id))
    out = []
    for c in changes:
        with conn.transaction(force_rollback=True):
            proposals.revert(conn, c)
            without = _numbers(_indicators(conn, settings, period, unit_id))
        effect = {k: round(now[k] - without.get(k, 0.0), 6) for k in now if now[k] != without.get(k)}
        out.append({**c, "effect": effect})
    return out
