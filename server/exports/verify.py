"""Offline verifier of an evidence bundle (server/exports/evidence.py): no database, no server.

Imports only the standard library and `protocols` (the contract every party shares, including the
bundle's file formats in protocols/bundle.py), so an evaluator can run `jishi verify BUNDLE` on
their own PC with the core package installed. It re-checks what the bundle can prove and
recomputes the hours with the same derivation the server runs (protocols/derive.py). For a
version 2 (compact) bundle, the algorithm of protocols/SPEC.md §14.3:

1. every file's SHA-256 against the manifest; no key id listed for two agents;
2. each agent's record stream: decompressed whole (a truncated file is refused), seqs strictly
   ascending, elided `prev`s filled from the line before (which must be seq - 1), explicit ones
   checked against it when it is seq - 1; every record valid for its type (schema) and the agent's;
   a hole is accepted only as declared by a signed spool_overflow record;
3. each head: its envelope rebuilt from the head and the stream's records first..last, opened
   (canonical, schema, chain) and its Ed25519 signature checked with the agent's own key named in
   the manifest; its unit and instrument those of the manifest;
4. coverage: every record links, through the chain, to a record at or before the last record of a
   valid head in the same run (a run ends at a hole): a record no valid signature covers is refused;
5. derivation with the parameters the manifest states for the agent (those ingest used), then per
   instrument the running and external hours inside the period (live / spool / unverified),
   compared with the hours the manifest states.

Version 1 bundles (every envelope in full) are still verified as before.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from protocols.bundle import (
    HEAD_MEMBERS,
    StreamError,
    StreamRecord,
    decode_stream,
    entries,
    head_body,
    iso_to_ms,
)
from protocols.canonical import MAX_SAFE_INT, dumps_sorted
from protocols.chain import record_hash
from protocols.derive import Gap, Params, Rec, derive
from protocols.envelope import MAX_ENVELOPE_BYTES, MAX_RECORD_BYTES, MAX_RECORDS
from protocols.errors import ProtocolError, Reason
from protocols.records import MAX_T, MIN_T, Record
from protocols.signing import public_from_b64, verify
from protocols.validate import check_signature, open_envelope

TOLERANCE_H = 1e-6  # hours; the derivation is exact to the millisecond
CLASSES = ("live", "spool", "unverified")


@dataclass
class AgentResult:
    agent_id: str
    instrument_id: str
    envelopes: int = 0
    records: int = 0
    heads: int = 0
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
            held = f"{a.heads} signed heads" if a.heads else f"{a.envelopes} envelopes"
            lines.append(f"agent {a.agent_id} ({a.instrument_id}): {held}, {a.records} records, {state}")
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


_RECORDS = TypeAdapter(list[Record])


def _ranges(seqs: list[int]) -> str:
    """1 2 3 7 -> '1..3, 7' (what a problem names)."""
    out: list[str] = []
    for s in seqs:
        if out and s == int(out[-1].split("..")[-1]) + 1:
            out[-1] = f"{out[-1].split('..')[0]}..{s}"
        else:
            out.append(str(s))
    return ", ".join(out[:10]) + (f" and {len(out) - 10} more ranges" if len(out) > 10 else "")


def _agent_stream(entry: dict[str, Any], stream: bytes, heads_raw: bytes, owners: dict[str, tuple[str, str]],
                  unit: str, res: AgentResult) -> tuple[list[Rec], list[Gap]]:
    """Steps 2-4 of §14.3 for one agent: its records (for the derivation) and declared holes."""
    agent = entry["agent_id"]
    keys = {k["key_id"]: public_from_b64(k["public_key"]) for k in entry["keys"]}
    try:
        lines = decode_stream(stream)
    except StreamError as e:
        res.problems.append(f"{entry['records']}: {e}")
        return [], []
    try:
        heads = json.loads(heads_raw)
        if not isinstance(heads, list) or not all(isinstance(h, dict) and set(h) == set(HEAD_MEMBERS)
                                                  for h in heads):
            raise ValueError("not a list of heads")
    except ValueError as e:
        res.problems.append(f"{entry['heads']}: unreadable ({e})")
        heads = []
    res.records, res.heads = len(lines), len(heads)
    watermark = int(entry["watermark"])
    # step 2: order, links, holes, schema
    declared: list[Gap] = []
    index: dict[int, int] = {}
    run_of: list[int] = []
    run = -1
    prev: StreamRecord | None = None
    for i, line in enumerate(lines):
        rec, seq = line.record, line.record["seq"]
        if prev is not None and seq <= prev.record["seq"]:
            res.problems.append(f"seq {seq} after seq {prev.record['seq']}: records out of order")
            return [], []
        if seq > watermark:
            res.problems.append(f"seq {seq} is above the stored watermark {watermark}")
            return [], []
        if rec.get("agent") != agent:
            res.problems.append(f"seq {seq} is a record of agent {rec.get('agent')!r}")
        linked = prev is not None and seq == prev.record["seq"] + 1 and rec.get("prev") == prev.hash
        if prev is not None and seq == prev.record["seq"] + 1 and not linked:
            res.problems.append(f"seq {seq} does not link to seq {seq - 1} (prev is not its hash)")
        if prev is not None and seq != prev.record["seq"] + 1:
            first, last = prev.record["seq"] + 1, seq - 1
            over = next((g for g in declared if g.first == first and g.last == last), None)
            if over is None:
                res.problems.append(f"seqs {first}..{last} are missing (counted as not watched)")
        if not linked:
            run += 1
        run_of.append(run)
        index[seq] = i
        if rec.get("type") == "spool_overflow" and isinstance(rec.get("dropped"), list):
            declared += [Gap(d["first"], d["last"], "overflow") for d in rec["dropped"] if isinstance(d, dict)]
        prev = line
    if prev is not None and prev.record["seq"] < watermark and not any(
            g["first"] <= prev.record["seq"] + 1 and g["last"] >= watermark for g in entry.get("gaps", [])):
        res.problems.append(f"seqs {prev.record['seq'] + 1}..{watermark} are missing "
                            "(the stream ends before the watermark)")
    try:
        _RECORDS.validate_python([ln.record for ln in lines], strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        at = err["loc"][0] if err["loc"] and isinstance(err["loc"][0], int) else 0
        res.problems.append(f"seq {lines[at].record['seq']}: schema: {err['msg']}")
        return [], []
    for g in entry.get("gaps", []):
        if g["kind"] == "overflow" and not any(d.first == g["first"] and d.last == g["last"] for d in declared):
            res.problems.append(
                f"gap {g['first']}..{g['last']} declared 'overflow' by the server but by no "
                "signed spool_overflow record"
            )
    # step 3: heads
    covered: dict[int, int] = {}  # run -> highest line index a valid head covers
    for h in heads:
        first, last = h["first"], h["last"]
        name = f"head {first}..{last}"
        if not (isinstance(first, int) and isinstance(last, int)) or first not in index or last not in index \
                or index[last] - index[first] != last - first:
            res.problems.append(f"{name}: its records are not all in the stream")
            continue
        owner = owners.get(h["key"])
        if h["key"] not in keys:
            who = f"agent {owner[0]}'s (instrument {owner[1]})" if owner else "no agent's in this bundle"
            res.problems.append(f"{name}: signed with key {h['key']}, which is {who}, not {agent}'s")
            continue
        if h["unit"] != unit or h["instrument"] != entry["instrument_id"]:
            res.problems.append(f"{name}: signed for {h['unit']}/{h['instrument']}, "
                                f"not {unit}/{entry['instrument_id']}")
            continue
        wrong = _head_problem(agent, h, lines[index[first]:index[last] + 1], keys[h["key"]],
                              run_of[index[first]] == run_of[index[last]])
        if wrong:
            res.problems.append(f"{name}: {wrong}")
            continue
        r = run_of[index[last]]
        covered[r] = max(covered.get(r, -1), index[last])
    # step 4: coverage
    loose = [ln.record["seq"] for i, ln in enumerate(lines) if i > covered.get(run_of[i], -1)]
    if loose:
        res.problems.append(f"seqs {_ranges(loose)}: no valid signed head covers them")
    return [Rec.from_record(ln.record, ln.received_us // 1000) for ln in lines], declared


def _head_problem(agent: str, h: dict[str, Any], lines: list[StreamRecord], key: Any, one_run: bool) -> str | None:
    """§6.2 for a rebuilt envelope whose records passed step 2 (schema, agent, canonical form,
    order, links): what is left is the header, the limits, the chain inside it and the signature.
    Checked directly rather than by re-opening it, which would validate every record a second time."""
    records = [ln.record for ln in lines]
    boot, sent = h["boot"], h["sent"]
    if not (type(boot) is int and 1 <= boot <= MAX_SAFE_INT and type(sent) is int and MIN_T <= sent <= MAX_T
            and isinstance(h["sig"], str)):
        return "schema: boot, sent or sig is not as §6.1 says"
    if len(records) > MAX_RECORDS or any(r["boot"] > boot for r in records) or any(r["agent"] != agent
                                                                                  for r in records):
        return "schema: more than 2,000 records, a record from a later boot, or another agent's record"
    if not one_run:
        return "chain_broken: its records do not link"
    body = head_body(agent, h, records)
    signed = dumps_sorted(body)
    if len(signed) + 100 > MAX_ENVELOPE_BYTES or any(len(dumps_sorted(r)) > MAX_RECORD_BYTES for r in records):
        return "oversized: the envelope or one of its records is over the limits of §11"
    if not verify(key, signed, h["sig"]):
        return ("bad_signature: the signature does not verify with the agent's key (a record it chains to "
                "was changed, dropped or reordered, or the head was forged)")
    return None


def _params(d: dict[str, Any]) -> Params:
    """The derivation parameters a manifest states; one it does not state keeps its default."""
    return Params(**{f.name: int(d[f.name]) for f in fields(Params) if f.name in d})


def opened_reason() -> Any:

    return Reason.UNKNOWN_KEY


def verify_bundle(path: Path) -> VerifyResult:
    res = VerifyResult()
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        res.problems.append(f"cannot open {path}: {e}")
        return res
    with zf:
        try:
            manifest = json.loads(zf.read("manifest.json"))
        except (KeyError, ValueError, zipfile.BadZipFile, OSError, EOFError) as e:
            res.problems.append(f"manifest.json cannot be read: {e}")
            return res
        version = manifest.get("version")
        if manifest.get("format") != "jishi-evidence" or version not in (1, 2):
            res.problems.append("not a jishi evidence bundle of version 1 or 2")
            return res
        res.unit, res.period = manifest["unit"]["id"], manifest["period"]["label"]
        files: dict[str, bytes] = {}
        for name, digest in manifest["files"].items():
            try:
                files[name] = zf.read(name)
            except (KeyError, zipfile.BadZipFile, OSError, EOFError) as e:
                res.problems.append(f"{name}: cannot be read from the bundle ({e})")
                files[name] = b""
                continue
            if hashlib.sha256(files[name]).hexdigest() != digest:
                res.problems.append(f"{name}: SHA-256 differs from the manifest")
    default = _params(manifest["derive"])
    t0, t1 = iso_to_ms(manifest["period"]["start"]), iso_to_ms(manifest["period"]["end"])
    who = {(i["method"], i["identifier"]): i["who"] for i in manifest["identities"]}
    owners: dict[str, tuple[str, str]] = {}
    for entry in manifest["agents"]:
        for k in entry["keys"]:
            other = owners.setdefault(k["key_id"], (entry["agent_id"], entry["instrument_id"]))
            if other[0] != entry["agent_id"]:
                res.problems.append(f"key {k['key_id']} is listed for two agents, {other[0]} and {entry['agent_id']}")
    got: dict[str, dict[str, dict[str, float]]] = {}
    for entry in manifest["agents"]:
        ares = AgentResult(entry["agent_id"], entry["instrument_id"])
        res.agents.append(ares)
        sums = got.setdefault(entry["instrument_id"], {g: dict.fromkeys(CLASSES, 0.0) for g in ("running", "external")})
        if version == 1:
            if not entry.get("file"):
                continue
            records, gaps = _agent_records(entry, files[entry["file"]], ares)
        else:
            if not entry.get("records"):
                continue
            records, gaps = _agent_stream(entry, files.get(entry["records"], b""), files.get(entry["heads"], b"[]"),
                                          owners, res.unit, ares)
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
