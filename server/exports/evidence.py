"""Evidence bundle of a unit's period: the agents' signed records, the signatures that close them,
the agents' public keys and a manifest, so that anyone can recompute every instrument's running and
external hours without the database (`jishi verify BUNDLE`, server/exports/verify.py).

A zip file (version 2, compact; protocols/SPEC.md §14):
- manifest.json: unit, period, derivation parameters, per agent its keys, stored-records
  watermark, declared gaps, record stream and heads files and the derivation parameters its hours were derived with
  (stored by ingest, migration 025; the exporting process's own settings only for agents derived
  before that, and at the top level when the agents disagree); the identities the agents saw with their class
  (internal / external) for the unit and a pseudonym (never a name, art. 17); the expected hours
  per instrument as the database derived them; the SHA-256 of every other file;
- records/<agent>.xz: every stored record of the agent from seq 1 (derivation needs the whole
  history to know the state at the period's start) with its receive time, `prev` elided where the
  line before gives it (protocols/bundle.py);
- heads/<agent>.json: the signed envelopes, without their records, that close each local day and
  each run before a hole (server/exports/compact.py): every record chains to one of them.

Version 1 held every kept envelope in full (5-12 x larger); full envelopes of an instrument's
days stay available on request for disputes (`jishi envelopes`, GET .../envelopes.bin).

What the bundle cannot prove, and the manifest says: receive times (live vs spool) are the
server's word; identity classes come from the registry. Signatures, the hash chain, the
derivation and the sums are checked by the verifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from protocols.bundle import pack_entry
from protocols.derive import Params
from server import clock
from server.db import queries as ingest_queries
from server.evaluation.indicators import params, segment_hours
from server.evaluation.period import Period, local_iso
from server.evaluation.privacy import Pseudonymizer
from server.evaluation.sql import IDENTITY_CLASS
from server.exports.compact import compact_agent
from server.store.archive import envelopes_for
from server.store.conn import Conn
from server.store.times import TZ, dt_to_us

FORMAT = "jishi-evidence"
VERSION = 2
MAX_DISPUTE_DAYS = 31

# Per agent of the instrument, the seq range of its stored records whose time is in [t0, t1).
_SEQS_OF_DAYS = """
SELECT r.agent_no, min(r.seq), max(r.seq) FROM records r
JOIN agent_progress p ON p.agent_no = r.agent_no JOIN agents a ON a.id = p.agent_id
WHERE a.instrument_id = %s AND r.t >= %s AND r.t < %s GROUP BY r.agent_no ORDER BY r.agent_no
"""


def seqs_of_days(conn: Conn, instrument_id: str, t0: datetime, t1: datetime) -> list[tuple[int, int, int]]:
    """(agent_no, first seq, last seq) of the instrument's records in [t0, t1)."""
    return [(int(a), int(lo), int(hi)) for a, lo, hi in conn.execute(_SEQS_OF_DAYS, (instrument_id, t0, t1))]


def full_envelopes(conn: Conn, instrument_id: str, first: date, last: date) -> Iterator[bytes]:
    """For a dispute: every kept envelope, in full and byte for byte as received, holding a record of
    the instrument's local days first..last (at most MAX_DISPUTE_DAYS), as the entries of
    protocols/bundle.py (id, received µs, length, bytes) per agent in storing order. The compact
    bundle proves the same records; these show every envelope and re-send as the server kept it."""
    if last < first or (last - first).days >= MAX_DISPUTE_DAYS:
        raise ValueError(f"a day range of 1..{MAX_DISPUTE_DAYS} days is needed")
    t0 = datetime.combine(first, time(0), TZ)
    t1 = datetime.combine(last + timedelta(days=1), time(0), TZ)
    for agent_no, lo, hi in seqs_of_days(conn, instrument_id, t0, t1):
        for env in envelopes_for(conn, agent_no, lo, hi):
            yield pack_entry(env.id, dt_to_us(env.received_at), env.raw)


def build_manifest(
    conn: Conn, period: Period, unit_id: str, pseudonyms: Pseudonymizer, derive: Params
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest (without file hashes) and the files of the bundle. `derive`: this process's
    settings, stated only for agents whose stored rows do not record the parameters ingest used."""
    unit = conn.execute("SELECT id, name FROM units WHERE id = %s", (unit_id,)).fetchone()
    if unit is None:
        raise LookupError(f"unit {unit_id!r} does not exist")
    own = dataclasses.asdict(derive)
    files: dict[str, bytes] = {}
    agents = []
    rows = conn.execute(
        "SELECT a.id, a.instrument_id, p.agent_no, p.watermark FROM agents a"
        " JOIN instruments i ON i.id = a.instrument_id LEFT JOIN agent_progress p ON p.agent_id = a.id"
        " WHERE i.unit_id = %s ORDER BY a.id",
        (unit_id,),
    ).fetchall()
    used = ingest_queries.derive_params_of(conn, [r[2] for r in rows if r[2] is not None])
    for agent_id, instrument_id, agent_no, watermark in rows:
        keys = [
            {"key_id": k, "public_key": pk, "revoked_at": local_iso(rev)}
            for k, pk, rev in conn.execute(
                "SELECT key_id, public_key, revoked_at FROM agent_keys WHERE agent_id = %s ORDER BY key_id",
                (agent_id,),
            )
        ]
        entry: dict[str, Any] = {
            "agent_id": agent_id,
            "instrument_id": instrument_id,
            "keys": keys,
            "watermark": watermark or 0,
            "gaps": [],
            "records": None,
            "heads": None,
            "envelopes": 0,
            "records_count": 0,
            "heads_count": 0,
            "derive": used.get(agent_no, own) if agent_no is not None else own,
        }
        if agent_no is not None and watermark:
            part = compact_agent(((e.id, dt_to_us(e.received_at), e.raw)
                                  for e in envelopes_for(conn, agent_no, 1, watermark)), watermark)
            entry["records"], entry["heads"] = f"records/{agent_id}.xz", f"heads/{agent_id}.json"
            files[entry["records"]] = part.records
            files[entry["heads"]] = json.dumps(part.heads, separators=(",", ":")).encode()
            entry["envelopes"], entry["records_count"], entry["heads_count"] = (
                part.n_envelopes, part.n_records, len(part.heads))
            entry["gaps"] = [
                {"first": first, "last": last, "kind": kind, "last_hash": last_hash}
                for _, first, last, kind, last_hash in ingest_queries.gaps_of(conn, [agent_no])
            ]
        agents.append(entry)
    identities = [
        {"method": method, "identifier": identifier, "who": who, "user": pseudonyms.user(user_id)}
        for _, method, identifier, user_id, who in conn.execute(
            f"SELECT * FROM ({IDENTITY_CLASS}) c WHERE c.unit_id = %s ORDER BY method, identifier", (unit_id,)
        )
    ]
    expected: dict[str, dict[str, dict[str, float]]] = {}
    for _, instrument_id, _n, *_ in rows:
        expected.setdefault(instrument_id, _empty())
    for instrument_id, cls, who, hours in segment_hours(conn, params(period, [unit_id])):
        e = expected.setdefault(instrument_id, _empty())
        e["running"][cls] += hours
        if who == "external":
            e["external"][cls] += hours
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "unit": {"id": unit[0], "name": unit[1]},
        "period": {
            "label": period.label,
            "start": period.t0.isoformat(),
            "end": period.t1.isoformat(),
            "timezone": "Asia/Shanghai",
        },
        "generated_at": local_iso(clock.now()),
        "derive": _common([a["derive"] for a in agents if a["records"]]) or own,
        "agents": agents,
        "identities": identities,
        "expected_hours": {
            k: {g: {c: round(v, 6) for c, v in d.items()} for g, d in e.items()} for k, e in sorted(expected.items())
        },
        "notes": [
            "Hours are running machine-hours from the agents' signed records only; manual logbook entries "
            "are not in the bundle.",
            "received_at (live vs spool) is the server's statement; identity classes come from the registry.",
        ],
    }
    return manifest, files


def _common(params: list[dict[str, int]]) -> dict[str, int] | None:
    """The parameters every agent was derived with, if they agree (the verifier's default)."""
    return params[0] if params and all(p == params[0] for p in params) else None


def _empty() -> dict[str, dict[str, float]]:
    return {
        "running": {"live": 0.0, "spool": 0.0, "unverified": 0.0},
        "external": {"live": 0.0, "spool": 0.0, "unverified": 0.0},
    }


def write_bundle(conn: Conn, period: Period, unit_id: str, path: Path, pseudonyms: Pseudonymizer,
                 derive: Params) -> str:
    manifest, files = build_manifest(conn, period, unit_id, pseudonyms, derive)
    manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1))
        for name, data in files.items():
            # the record streams are xz already: stored as they are
            zf.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".xz") else None)
    n_rec = sum(a["records_count"] for a in manifest["agents"])
    n_heads = sum(a["heads_count"] for a in manifest["agents"])
    return (f"{len(manifest['agents'])} agents, {n_rec} records, {n_heads} signed heads, "
            f"{len(manifest['expected_hours'])} instruments")
