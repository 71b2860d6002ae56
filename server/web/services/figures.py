"""A unit's figures both ways: as the registry holds them (accepted) and as they would be with the
unit's open proposals; and, for each accepted change, what it did to each indicator (issue 13).

Computed by applying (or reverting) the changes inside a transaction that is always rolled back,
so the one evaluation code path computes every variant and nothing is ever written. The caller
passes the function that computes the unit's indicators on a connection. `tables` turns both into
sections of the unit report (the page and the workbook draw every table of the report)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.evaluation.privacy import Pseudonymizer
from server.evaluation.report import Column, Table
from server.registry import proposals
from server.store.conn import Conn

Indicators = Callable[[Conn], dict[str, Any]]

# the indicators a change is shown against, with their Chinese labels (report.py's wording)
LABELS = {
    "rated_hours": "额定机时",
    "open_rate": "开放率",
    "utilization.verified": "利用率（仅核验数据）",
    "utilization.including_unverified": "利用率（含未核验数据）",
    "sharing.verified": "共享率（仅核验数据）",
    "sharing.including_unverified": "共享率（含未核验数据）",
    "external_hours.verified": "对外服务机时（核验）",
    "evaluated": "参评仪器数",
    "in_scope": "纳入范围仪器数",
    "exempted": "豁免仪器数",
}


def numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric indicators, nested ones flattened ("utilization.verified")."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= numbers(v, f"{prefix}{k}.")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[prefix + k] = float(v)
    return out


def both_ways(conn: Conn, indicators: Indicators, unit_id: str) -> dict[str, Any]:
    """The unit's indicators as accepted and as proposed, with the open proposals."""
    accepted = indicators(conn)
    pending = proposals.listing(conn, [unit_id], "pending")
    proposed = accepted
    if pending:
        with conn.transaction(force_rollback=True):
            for p in reversed(pending):  # oldest first
                proposals.apply(conn, p)
            proposed = indicators(conn)
    return {"as_accepted": accepted, "as_proposed": proposed, "pending": pending}


def accepted_effects(conn: Conn, indicators: Indicators, unit_id: str) -> list[dict[str, Any]]:
    """Every accepted change of the unit (who, when, before -> after) with its effect on each
    numeric indicator: the figures now minus the figures with only that change undone."""
    changes = proposals.listing(conn, [unit_id], "accepted")
    if not changes:
        return []
    now = numbers(indicators(conn))
    out = []
    for c in changes:
        with conn.transaction(force_rollback=True):
            proposals.revert(conn, c)
            without = numbers(indicators(conn))
        effect = {k: round(now[k] - without.get(k, 0.0), 6) for k in now if now[k] != without.get(k)}
        out.append({**c, "effect": effect})
    return out


def _row(pseudo: Pseudonymizer, c: dict[str, Any]) -> dict[str, Any]:
    key = pseudo.user(c["row_key"]) if c["target"] == "platform_users" else c["row_key"]
    return {"what": proposals.label(c)[0], "key": key, "before": proposals.shown(c["before"]),
            "after": proposals.shown(c["after"]), "by": c["proposed_by"], "at": c["proposed_at"],
            "decided_by": c["decided_by"] or "", "decided_at": c["decided_at"]}


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def _effect_text(effect: dict[str, float]) -> str:
    return "；".join(f"{LABELS[k]} {v:+.4g}" for k, v in effect.items() if k in LABELS) or "无"


_CHANGE_COLS = [Column("what", "项目"), Column("key", "对象"), Column("before", "原值"), Column("after", "新值"),
                Column("by", "提出人"), Column("at", "提出时间", "datetime")]


def tables(pseudo: Pseudonymizer, both: dict[str, Any], changes: list[dict[str, Any]]) -> list[Table]:
    """Report sections: the accepted changes with their effects, and the figures both ways while
    proposals are open. None when the unit has neither (the report stays as it was)."""
    out = []
    if changes:
        t = Table("registry_changes", "登记信息变更（已接受）",
                  [*_CHANGE_COLS, Column("decided_by", "接受人"), Column("decided_at", "接受时间", "datetime"),
                   Column("effect", "对指标的影响")],
                  notes=["单位提出、经平台运营方（或评价方）接受后生效的变更；影响为仅撤销该项变更时指标的差值。"])
        t.rows = [_row(pseudo, c) | {"effect": _effect_text(c["effect"])} for c in changes]
        out.append(t)
    if both["pending"]:
        acc, pro = numbers(both["as_accepted"]), numbers(both["as_proposed"])
        t = Table("figures_proposed", "指标：已接受与含待审变更",
                  [Column("indicator", "指标"), Column("accepted", "按已接受登记信息"),
                   Column("proposed", "含待审变更")],
                  notes=["待审变更在接受前不计入评价；下表列出待审变更及其若被接受时的指标。"])
        t.rows = [{"indicator": label, "accepted": _num(acc.get(k)), "proposed": _num(pro.get(k))}
                  for k, label in LABELS.items()]
        p = Table("proposals_pending", "待审变更", _CHANGE_COLS)
        p.rows = [_row(pseudo, c) for c in both["pending"]]
        out += [t, p]
    return out

