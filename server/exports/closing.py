"""Closed evaluation periods (issue 13, item 5): what the evaluators saw, frozen and signed.

Closing a period computes, once, the region's report, every unit's report (figures, reconciliation,
grades, subsidies) and every unit's evidence manifest (with the SHA-256 of each agent's envelope
file) as parts, and signs with the server's Ed25519 key one small canonical JSON payload holding
the running and external hours per instrument, the audit log's head and each part's SHA-256
(server.evaluation.snapshot; migration 022 keeps the rows immutable). A unit's closed report reads
its own part only, checked against the signed hash. From then on the reports of that period (API, pages,
workbooks) are read from the snapshot; records that arrive later (an agent's spool) change nothing
in it and are shown beside it as an amendment: the hours per instrument that the database now has
beyond the snapshot's. Reopening is an operator action, audited with who and why; closing again
makes a new version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.derive import Params
from server import clock
from server.db import audit
from server.evaluation import report as report_mod
from server.evaluation import rubric, snapshot
from server.evaluation.indicators import compute
from server.evaluation.period import Period, local_iso
from server.evaluation.privacy import Pseudonymizer
from server.evaluation.report import Column, Kind, Report, Table
from server.exports.evidence import build_manifest
from server.store.conn import Conn

AMENDMENT_NOTE = (
    "结账后到达的记录（如终端断网后补传）不改变已结账的评价结果，仅在此单列；"
    "如需计入，由平台运营方重新开放评价期并重新结账"
)


class PeriodStateError(ValueError):
    """Closing a closed period, or reopening one that is not closed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def audit_head(conn: Conn) -> dict[str, Any]:
    """The audit log's hash-chain head (server/db/audit.py) as the snapshot publishes it: a later
    deletion or change of audit rows up to it fails `server.db.audit.verify(published=...)`."""
    head = audit.audit_head(conn)
    return {"audit_last_id": head[0] if head else 0, "audit_row_hash": head[1].hex() if head else ""}


class SnapshotAltered(ValueError):
    """A stored part whose bytes no longer match the SHA-256 the signed payload gives."""


@dataclass
class Snapshot:
    id: int
    period: str
    version: int
    closed_at: datetime
    closed_by: str
    payload_sha256: str
    signature: str
    public_key: str
    reopened_at: datetime | None
    reopened_by: str | None
    reopen_reason: str | None
    payload_bytes: bytes = b""
    _payload: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def payload(self) -> dict[str, Any]:
        if self._payload is None:
            self._payload = json.loads(self.payload_bytes)
        return self._payload

    def part(self, conn: Conn, name: str) -> dict[str, Any]:
        """One large part (region report, a unit's report or manifest), checked against the SHA-256
        the signed payload names for it."""
        digest = self.payload.get("parts", {}).get(name)
        if digest is None:
            raise LookupError(f"the snapshot of {self.period} has no part {name!r}")
        row = conn.execute(
            "SELECT body FROM period_snapshot_parts WHERE snapshot_id = %s AND part = %s", (self.id, name)
        ).fetchone()
        body = bytes(row[0]) if row else b""
        if snapshot.sha256_hex(body) != digest:
            raise SnapshotAltered(f"snapshot part {name!r} of {self.period} does not match its signed SHA-256")
        part: dict[str, Any] = json.loads(body)
        return part

    def export(self, conn: Conn) -> dict[str, Any]:
        """The file `jishi period verify` checks offline: the signed payload and every part."""
        parts = {
            name: bytes(body)
            for name, body in conn.execute(
                "SELECT part, body FROM period_snapshot_parts WHERE snapshot_id = %s ORDER BY part", (self.id,)
            )
        }
        return snapshot.export(self.payload_bytes, self.signature, self.public_key, parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "version": self.version,
            "closed_at": local_iso(self.closed_at),
            "closed_by": self.closed_by,
            "payload_sha256": self.payload_sha256,
            "public_key": self.public_key,
            "reopened_at": local_iso(self.reopened_at) if self.reopened_at else None,
            "reopened_by": self.reopened_by,
            "reopen_reason": self.reopen_reason,
        }


_COLUMNS = (
    "s.id, s.period, s.version, s.closed_at, s.closed_by, s.payload_sha256, s.signature, s.public_key,"
    " s.reopened_at, s.reopened_by, s.reopen_reason"
)


def current(conn: Conn, period: str, *, with_payload: bool = True) -> Snapshot | None:
    """The snapshot in force for the period (label), if it is closed."""
    row = conn.execute(
        f"SELECT {_COLUMNS}, CASE WHEN %s THEN p.payload END FROM period_snapshots s"
        " JOIN period_snapshot_payloads p ON p.snapshot_id = s.id WHERE s.period = %s AND s.reopened_at IS NULL",
        (with_payload, period),
    ).fetchone()
    if row is None:
        return None
    snap = Snapshot(*row[:11])
    snap.payload_bytes = bytes(row[11] or b"")
    return snap


def history(conn: Conn, period: str) -> list[Snapshot]:
    """Every closing of the period, oldest first (without payloads)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM period_snapshots s WHERE s.period = %s ORDER BY s.version", (period,)
    ).fetchall()
    return [Snapshot(*r) for r in rows]


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return local_iso(v)
    if isinstance(v, date):
        return v.isoformat()
    raise TypeError(f"not JSON: {type(v).__name__}")


def _report_doc(rep: Report) -> dict[str, Any]:
    """A report as stored: its JSON form plus the kinds of the summary values (the tables carry
    theirs), enough to write the same workbook again."""
    return {"doc": rep.as_dict(), "summary_kinds": {k: kind for k, _, _, kind in rep.summary}}


def _canonical(obj: Any) -> bytes:
    """One normalisation of every value to JSON types (Decimal, dates), then the canonical bytes."""
    return snapshot.canonical(orjson.loads(orjson.dumps(obj, default=_plain, option=orjson.OPT_NON_STR_KEYS)))


def build_payload(
    conn: Conn,
    period: Period,
    rb: rubric.Rubric,
    pseudonyms: Pseudonymizer,
    derive: Params,
    *,
    version: int,
    closed_at: datetime,
    closed_by: str,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The signed payload (parts named by SHA-256) and the parts' canonical bytes. `derive`: the
    process's derivation parameters, stated in a manifest only for agents whose rows record none."""
    result = report_mod.evaluate_region(conn, period, rb, pseudonyms)
    parts: dict[str, bytes] = {"region": _canonical(_report_doc(report_mod.region_report(result, now=closed_at)))}
    for uid in sorted(result.evaluation.units):
        rep = report_mod.unit_report(conn, period, uid, rb, pseudonyms, now=closed_at)
        parts[f"unit/{uid}"] = _canonical(_report_doc(rep))
        manifest, files = build_manifest(conn, period, uid, pseudonyms, derive)
        manifest["files"] = {name: snapshot.sha256_hex(data) for name, data in sorted(files.items())}
        del files
        parts[f"manifest/{uid}"] = _canonical(manifest)
    hours = {
        f.id: {"unit_id": f.unit_id, "name": f.name, "running": f.running.as_dict(), "external": f.external.as_dict()}
        for f in result.evaluation.instruments.values()
    }
    doc = {
        "format": snapshot.FORMAT,
        "period": period.label,
        "period_start": period.start.isoformat(),
        "period_end_exclusive": period.end.isoformat(),
        "timezone": "Asia/Shanghai",
        "version": version,
        "closed_at": local_iso(closed_at),
        "closed_by": closed_by,
        "audit": audit_head(conn),
        "units": sorted(result.evaluation.units),
        "instrument_hours": hours,
        "parts": {name: snapshot.sha256_hex(body) for name, body in sorted(parts.items())},
    }
    return doc, parts


def close(
    conn: Conn, period: Period, rb: rubric.Rubric, pseudonyms: Pseudonymizer, derive: Params,
    key: Ed25519PrivateKey, actor: str,
) -> Snapshot:
    """Close the period: compute, sign and store the snapshot (in the caller's transaction)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"jishi-close:{period.label}",))
    if current(conn, period.label, with_payload=False) is not None:
        raise PeriodStateError("already_closed", f"period {period.label} is closed already")
    row = conn.execute(
        "SELECT COALESCE(max(version), 0) + 1 FROM period_snapshots WHERE period = %s", (period.label,)
    ).fetchone()
    version = int(row[0]) if row else 1
    closed_at = clock.now()
    doc, parts = build_payload(conn, period, rb, pseudonyms, derive, version=version, closed_at=closed_at,
                               closed_by=actor)
    payload = _canonical(doc)
    signature, public_key = snapshot.sign(key, payload)
    sha = snapshot.sha256_hex(payload)
    new = conn.execute(
        "INSERT INTO period_snapshots (period, version, closed_at, closed_by, payload_sha256, signature, public_key)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (period.label, version, closed_at, actor, sha, signature, public_key),
    ).fetchone()
    assert new is not None
    conn.execute("INSERT INTO period_snapshot_payloads (snapshot_id, payload) VALUES (%s, %s)", (new[0], payload))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO period_snapshot_parts (snapshot_id, part, sha256, body) VALUES (%s, %s, %s, %s)",
            [(new[0], name, snapshot.sha256_hex(body), body) for name, body in parts.items()],
        )
    snap = current(conn, period.label)
    assert snap is not None
    return snap


def reopen(conn: Conn, period: str, actor: str, reason: str) -> Snapshot:
    """Take the period's snapshot out of force (it stays stored and verifiable); audited."""
    if not reason.strip():
        raise PeriodStateError("reason_required", "reopening needs a reason")
    row = conn.execute(
        "UPDATE period_snapshots SET reopened_at = %s, reopened_by = %s, reopen_reason = %s"
        " WHERE period = %s AND reopened_at IS NULL RETURNING id",
        (clock.now(), actor, reason.strip(), period),
    ).fetchone()
    if row is None:
        raise PeriodStateError("not_closed", f"period {period} is not closed")
    return next(s for s in history(conn, period) if s.id == row[0])


# -- reading a closed period -----------------------------------------------------------------------


def _thaw(value: Any, kind: str) -> Any:
    """A stored JSON value back to the type its column kind writes (money, dates)."""
    if value is None or not isinstance(value, str):
        return value
    if kind == "money":
        return Decimal(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "datetime":
        return datetime.fromisoformat(value)
    return value


class ClosedReport(Report):
    """A report read from a snapshot: its JSON is the stored one (plus the closing and the
    amendment); its tables and summary are thawed for the workbook."""

    def __init__(self, stored: dict[str, Any], snap: Snapshot, amendment: Table) -> None:
        doc: dict[str, Any] = stored["doc"]
        kinds: dict[str, Kind] = stored["summary_kinds"]
        period = Period(date.fromisoformat(doc["period_start"]), date.fromisoformat(doc["period_end_exclusive"]))
        closed = _closed_summary(snap, amendment)
        summary: list[tuple[str, str, Any, Kind]] = [
            (k, v["label"], _thaw(v["value"], kinds.get(k, "text")), kinds.get(k, "text"))
            for k, v in doc["summary"].items()
        ] + closed
        tables = [
            Table(
                key,
                t["title"],
                [Column(c["key"], c["label"], c["kind"]) for c in t["columns"]],
                [{c["key"]: _thaw(r.get(c["key"]), c["kind"]) for c in t["columns"]} for r in t["rows"]],
                list(t["notes"]),
            )
            for key, t in doc["tables"].items()
        ]
        super().__init__(
            f"{doc['title']}（已结账）",
            period,
            datetime.fromisoformat(doc["generated_at"]),
            summary,
            [*tables, amendment],
            {},
        )
        self._doc = doc
        self._closed = {**snap.as_dict(), "amended": bool(amendment.rows)}
        self._extra = closed
        self._amendment = amendment

    def as_dict(self) -> dict[str, Any]:
        out = dict(self._doc)
        out["title"] = self.title
        out["summary"] = {**self._doc["summary"], **{k: {"label": label, "value": v} for k, label, v, _ in self._extra}}
        out["tables"] = {**self._doc["tables"], "amendment": self._amendment.as_dict()}
        out["closed"] = self._closed
        return out


def _closed_summary(snap: Snapshot, amendment: Table) -> list[tuple[str, str, Any, Kind]]:
    return [
        (
            "closed",
            "评价期已结账",
            f"第 {snap.version} 版，{local_iso(snap.closed_at)} 由 {snap.closed_by} 结账；以下为结账时的数据",
            "text",
        ),
        ("snapshot_sha256", "结账快照 SHA-256（服务器签名）", snap.payload_sha256, "text"),
        ("amended_instruments", "结账后有补充记录的仪器数", len(amendment.rows), "int"),
    ]


def amendment_table(conn: Conn, snap: Snapshot, unit_ids: list[str] | None) -> Table:
    """Hours per instrument that the database now holds beyond the snapshot's (late records)."""
    period = Period.parse(snap.period)
    t = Table(
        "amendment",
        "结账后补充记录（不计入结账结果）",
        [
            Column("unit_id", "单位编号"),
            Column("instrument_id", "仪器编号"),
            Column("name", "仪器名称"),
            Column("running_closed", "结账时运行机时（含未核验）", "hours"),
            Column("running_now", "当前运行机时（含未核验）", "hours"),
            Column("running_added_verified", "结账后补充的运行机时（核验）", "hours"),
            Column("running_added", "结账后补充的运行机时（含未核验）", "hours"),
            Column("external_added_verified", "结账后补充的对外服务机时（核验）", "hours"),
            Column("external_added", "结账后补充的对外服务机时（含未核验）", "hours"),
        ],
        notes=[AMENDMENT_NOTE],
    )
    stored: dict[str, Any] = snap.payload["instrument_hours"]
    ev = compute(conn, period, unit_ids)
    zero = {"verified": 0.0, "total": 0.0}
    for f in sorted(ev.instruments.values(), key=lambda f: (f.unit_id, f.id)):
        if unit_ids is not None and f.unit_id not in unit_ids:
            continue
        was = stored.get(f.id, {"running": zero, "external": zero})
        run_v = round(f.running.verified - was["running"]["verified"], 4)
        run_t = round(f.running.total - was["running"]["total"], 4)
        ext_v = round(f.external.verified - was["external"]["verified"], 4)
        ext_t = round(f.external.total - was["external"]["total"], 4)
        if run_v == run_t == ext_v == ext_t == 0:
            continue
        t.rows.append(
            {
                "unit_id": f.unit_id,
                "instrument_id": f.id,
                "name": f.name,
                "running_closed": was["running"]["total"],
                "running_now": round(f.running.total, 4),
                "running_added_verified": run_v,
                "running_added": run_t,
                "external_added_verified": ext_v,
                "external_added": ext_t,
            }
        )
    return t


def unit_view(conn: Conn, snap: Snapshot, unit_id: str) -> Report:
    """A unit's report of a closed period: the snapshot's, with the amendment beside it."""
    if unit_id not in snap.payload["units"]:
        raise LookupError(f"unit {unit_id!r} is not in the snapshot of {snap.period}")
    return ClosedReport(snap.part(conn, f"unit/{unit_id}"), snap, amendment_table(conn, snap, [unit_id]))


def region_view(conn: Conn, snap: Snapshot) -> Report:
    """The region's report of a closed period (scores, grades, subsidies as closed), with the amendment."""
    return ClosedReport(snap.part(conn, "region"), snap, amendment_table(conn, snap, None))
