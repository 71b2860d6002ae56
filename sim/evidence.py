"""Evidence bundles of simulated agents without a database, for tests and benchmarks.

The server writes bundles from stored envelopes (server/exports/evidence.py); this writes the same
files from envelopes sealed here, through the same compaction (server/exports/compact.py), so the
verifier's refusals and the format's size can be measured in seconds. Version 1 (every envelope in
full) is written too, as the baseline of bench/evidence_size.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.bundle import pack_entry
from protocols.derive import Params
from protocols.envelope import envelope
from protocols.signing import Signer, key_id, public_to_b64
from server.exports.compact import compact_agent
from server.exports.verify import verify_bundle


@dataclass
class SimAgent:
    agent_id: str
    instrument_id: str
    key: Signer
    envelopes: list[tuple[int, int, bytes]]  # (envelope id, received µs, bytes) in storing order
    watermark: int


def seal(agent: str, unit: str, instrument: str, key: Signer, records: Sequence[dict[str, Any]],
         per_envelope: int = 1, lag_ms: int = 200, first_id: int = 1) -> list[tuple[int, int, bytes]]:
    """Envelopes of `per_envelope` records, each received `lag_ms` after its last record (live)."""
    out: list[tuple[int, int, bytes]] = []
    for i in range(0, len(records), per_envelope):
        batch = records[i:i + per_envelope]
        sent = batch[-1]["t"] + lag_ms // 2
        raw = envelope(key=key, agent=agent, unit=unit, instrument=instrument,
                       boot=max(r["boot"] for r in batch), sent=sent, records=batch)
        out.append((first_id + len(out), (batch[-1]["t"] + lag_ms + (i * 7919) % 97) * 1000, raw))
    return out


def _manifest(unit: str, label: str, t0: str, t1: str, agents: list[SimAgent]) -> dict[str, Any]:
    params = dataclasses.asdict(Params())
    return {
        "format": "jishi-evidence", "unit": {"id": unit, "name": unit},
        "period": {"label": label, "start": t0, "end": t1, "timezone": "Asia/Shanghai"},
        "derive": params, "identities": [], "expected_hours": {},
        "agents": [{"agent_id": a.agent_id, "instrument_id": a.instrument_id, "watermark": a.watermark, "gaps": [],
                    "derive": params, "envelopes": len(a.envelopes),
                    "keys": [{"key_id": key_id(a.key), "public_key": public_to_b64(a.key), "revoked_at": None}]}
                   for a in agents],
    }


def _write(path: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
    manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1))
        for name, data in files.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".xz") else None)


def write_v2(path: Path, unit: str, label: str, t0: str, t1: str, agents: list[SimAgent],
             expected: bool = True) -> dict[str, Any]:
    """A compact bundle; with `expected`, the manifest's hours are the recomputed ones (so it verifies)."""
    manifest = _manifest(unit, label, t0, t1, agents)
    manifest["version"] = 2
    files: dict[str, bytes] = {}
    for a, entry in zip(agents, manifest["agents"], strict=True):
        part = compact_agent(a.envelopes, a.watermark)
        entry.update(records=f"records/{a.agent_id}.xz", heads=f"heads/{a.agent_id}.json",
                     records_count=part.n_records, heads_count=len(part.heads))
        files[entry["records"]] = part.records
        files[entry["heads"]] = json.dumps(part.heads, separators=(",", ":")).encode()
    _write(path, manifest, files)
    if expected:
        got = verify_bundle(path).hours
        manifest["expected_hours"] = {inst: {g: {c: round(v[1], 6) for c, v in cl.items()} for g, cl in gr.items()}
                                      for inst, gr in got.items()}
        _write(path, manifest, files)
    return manifest


def write_v1(path: Path, unit: str, label: str, t0: str, t1: str, agents: list[SimAgent]) -> dict[str, Any]:
    """The bundle as version 1 wrote it: every envelope in full (the baseline)."""
    manifest = _manifest(unit, label, t0, t1, agents)
    manifest["version"] = 1
    files: dict[str, bytes] = {}
    for a, entry in zip(agents, manifest["agents"], strict=True):
        entry["file"] = f"envelopes/{a.agent_id}.bin"
        files[entry["file"]] = b"".join(pack_entry(eid, us, raw) for eid, us, raw in a.envelopes)
    _write(path, manifest, files)
    return manifest
