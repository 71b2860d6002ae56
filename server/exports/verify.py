"""Offline verifier of an evidence bundle (server/exports/evidence.py): no database, no server.

Imports only the standard library and `protocols` (the contract every party shares, including the
bundle's entry format in protocols/bundle.py), so an evaluator can run `jishi verify BUNDLE` on
their own PC with the core package installed. It re-checks what the
bundle can prove and recomputes the hours with the same derivation the server runs
(protocols/derive.py):

1. every file's SHA-256 against the manifest;
2. every envelope: canonical form, schema, its records' chain (protocols.validate) and its
   Ed25519 signature with the agent's key named in the manifest;
3. each agent's records taken once per seq (the first stored envelope holding it gives the receive
   time, as the server does), linked across envelopes by the hash chain; a hole is accepted only as
   an unproven gap (never counted as watched), a dropped range only if the agent declared it in a
   signed spool_overflow record;
4. derivation with the parameters the manifest states for the agent (those ingest used), then per
   instrument the running and external hours inside the period (live / spool / unverified),
   compared with the hours the manifest states.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from protocols.bundle import entries, iso_to_ms
from protocols.chain import record_hash
from protocols.derive import Gap, Params, Rec, derive
from protocols.errors import ProtocolError
from protocols.signing import public_from_b64
from protocols.validate import check_signature, open_envelope

TOLERANCE_H = 1e-6  # hours; the derivation is exact to the millisecond
CLASSES = ("live", "spool", "unverified")


@dataclass
class AgentResult:
    agent_id: str
    instrument_id: str
    envelopes: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    unit: str = ""
    period: str = ""
    problems: list[str] = field(default_factory=list)
    agents: list[AgentResult] = field(default_factory=list)
    # instrument -> group -> class -> (expected, recomputed)
    hours: dict[str, dict[str, dict[str, tuple[float, float]]]] = field(default_factory=dict)

    @property
    def mismatches(self) -> list[str]:
        out = []
        for inst, groups in sorted(self.hours.items()):
            for group, classes in groups.items():
                for cls, (exp, got) in classes.items():
                    if abs(exp - got) > TOLERANCE_H:
                        out.append(f"{inst} {group} {cls}: manifest {exp:.6f} h, recomputed {got:.6f} h")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems and not any(a.problems for a in self.agents) and not self.mismatches

    def text(self) -> str:
        lines = [f"evidence bundle of unit {self.unit}, period {self.period}"]
        lines += [f"PROBLEM {p}" for p in self.problems]
        for a in self.agents:
            state = "ok" if not a.problems else "FAILED"
            lines.append(
                f"agent {a.agent_id} ({a.instrument_id}): {a.envelopes} envelopes, {a.records} records, {state}"
            )
            lines += [f"  PROBLEM {p}" for p in a.problems]
        for inst, groups in sorted(self.hours.items()):
            r = {g: {c: v[1] for c, v in cl.items()} for g, cl in groups.items()}
            lines.append(
                f"instrument {inst}: running live {r['running']['live']:.4f} spool {r['running']['spool']:.4f} "
                f"unverified {r['running']['unverified']:.4f} h; external live {r['external']['live']:.4f} "
                f"spool {r['external']['spool']:.4f} unverified {r['external']['unverified']:.4f} h"
            )
        lines += [f"MISMATCH {m}" for m in self.mismatches]
        lines.append(
            "VERIFIED: every figure recomputed from signed records equals the report" if self.ok else "NOT VERIFIED"
        )
        return "\n".join(lines)


def _agent_records(entry: dict[str, Any], data: bytes, res: AgentResult) -> tuple[list[Rec], list[Gap]]:
    keys = {k["key_id"]: public_from_b64(k["public_key"]) for k in entry["keys"]}
    watermark = int(entry["watermark"])
    recs: dict[int, tuple[Rec, dict[str, Any]]] = {}
    declared: list[Gap] = []
    for eid, us, raw in entries(data):
        res.envelopes += 1
        try:
            opened = open_envelope(raw)
            key = keys.get(opened.body["key"])
            if key is None:
                raise ProtocolError(opened_reason(), f"key {opened.body['key']} is not the agent's")
            check_signature(opened.body, key)
            if opened.body["agent"] != entry["agent_id"]:
                raise ProtocolError(opened_reason(), f"envelope of agent {opened.body['agent']}")
        except ProtocolError as e:
            res.problems.append(f"envelope {eid}: {e}")
            continue
        for rec in opened.body["records"]:
            seq = rec["seq"]
            if seq > watermark or seq in recs:
                continue
            recs[seq] = (Rec.from_record(rec, us // 1000), rec)
            if rec["type"] == "spool_overflow":
                declared += [Gap(d["first"], d["last"], "overflow") for d in rec["dropped"]]
    res.records = len(recs)
    # chain across envelopes: every record links to its predecessor when that one is present
    prev_seq, prev_hash = 0, None
    for seq in sorted(recs):
        rec = recs[seq][1]
        if prev_hash is not None and seq == prev_seq + 1 and rec["prev"] != prev_hash:
            res.problems.append(f"seq {seq} does not link to seq {prev_seq}")
        if seq != prev_seq + 1 and prev_seq:
            over = next((g for g in declared if g.first == prev_seq + 1 and g.last == seq - 1), None)
            if over is None:
                res.problems.append(f"seqs {prev_seq + 1}..{seq - 1} are missing (counted as not watched)")
        prev_seq, prev_hash = seq, record_hash(rec)
    for g in entry.get("gaps", []):
        if g["kind"] == "overflow" and not any(d.first == g["first"] and d.last == g["last"] for d in declared):
            res.problems.append(
                f"gap {g['first']}..{g['last']} declared 'overflow' by the server but by no "
                "signed spool_overflow record"
            )
    # holes the server declared lost stay holes; derive treats any uncovered hole as lost
    return [recs[s][0] for s in sorted(recs)], declared


def _params(d: dict[str, Any]) -> Params:
    """The derivation parameters a manifest states; one it does not state keeps its default."""
    return Params(**{f.name: int(d[f.name]) for f in fields(Params) if f.name in d})


def opened_reason() -> Any:
    from protocols.errors import Reason

    return Reason.UNKNOWN_KEY


def verify_bundle(path: Path) -> VerifyResult:
    res = VerifyResult()
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        res.problems.append(f"cannot open {path}: {e}")
        return res
    with zf:
        manifest = json.loads(zf.read("manifest.json"))
        if manifest.get("format") != "jishi-evidence" or manifest.get("version") != 1:
            res.problems.append("not a jishi evidence bundle of version 1")
            return res
        res.unit, res.period = manifest["unit"]["id"], manifest["period"]["label"]
        files = {name: zf.read(name) for name in manifest["files"]}
        for name, digest in manifest["files"].items():
            if hashlib.sha256(files[name]).hexdigest() != digest:
                res.problems.append(f"{name}: SHA-256 differs from the manifest")
    default = _params(manifest["derive"])
    t0, t1 = iso_to_ms(manifest["period"]["start"]), iso_to_ms(manifest["period"]["end"])
    who = {(i["method"], i["identifier"]): i["who"] for i in manifest["identities"]}
    got: dict[str, dict[str, dict[str, float]]] = {}
    for entry in manifest["agents"]:
        ares = AgentResult(entry["agent_id"], entry["instrument_id"])
        res.agents.append(ares)
        sums = got.setdefault(entry["instrument_id"], {g: dict.fromkeys(CLASSES, 0.0) for g in ("running", "external")})
        if not entry.get("file"):
            continue
        records, gaps = _agent_records(entry, files[entry["file"]], ares)
        params = _params(entry["derive"]) if entry.get("derive") else default
        derived = derive(records, params, None, gaps)
        identity = {s.session_id: (s.method, s.identifier) for s in derived.sessions}
        for s in derived.segments:
            if s.state != "running" or s.end <= t0 or s.start >= t1:
                continue
            hours = (min(s.end, t1) - max(s.start, t0)) / 3_600_000
            cls = s.arrival if s.watched else "unverified"
            sums["running"][cls] += hours
            if s.session is not None and who.get(identity.get(s.session, ("", ""))) == "external":
                sums["external"][cls] += hours
    for inst in sorted(set(got) | set(manifest["expected_hours"])):
        exp = manifest["expected_hours"].get(inst, {})
        mine = got.get(inst, {})
        res.hours[inst] = {
            g: {c: (float(exp.get(g, {}).get(c, 0.0)), float(mine.get(g, {}).get(c, 0.0))) for c in CLASSES}
            for g in ("running", "external")
        }
    return res
