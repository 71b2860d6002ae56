"""Fixed test vectors: keys, records, canonical bytes, hashes, signatures, and messages that must fail.

Ed25519 signatures are deterministic, so the vectors are stable byte for byte.

    python -m protocols.vectors           # regenerate protocols/test-vectors/v1.json
    python -m protocols.vectors --check   # exit 1 if the file differs
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.canonical import canonical, dumps_sorted
from protocols.chain import GENESIS, record_hash
from protocols.envelope import MAX_ENVELOPE_BYTES, birth, death, seal, signed_bytes
from protocols.signing import key_id, private_to_b64, public_to_b64, sign

VECTOR_FILE = Path(__file__).parent / "test-vectors" / "v1.json"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def fixed_key(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"jishi test vector {label}".encode()).digest())


AGENT_KEY = fixed_key("agent")
OTHER_KEY = fixed_key("other")
AGENT, UNIT, INSTRUMENT = "agent-0001", "IMU", "ms-01"


def _records() -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = [
        {"type": "lifecycle", "event": "boot", "detail": {"version": "0.1.0", "reason": "start"}},
        {
            "type": "state",
            "state": "running",
            "prev_state": "idle",
            "rule": "power.running or process.active",
            "evidence": {
                "power": {"state": "running", "mw": 1_250_000},
                "process": {"state": "active", "name": "Xcalibur.exe"},
                # §5.2: the run began 12 s before the agent decided (debounce), 5 s of it warm-up
                "state": {"since": T0 + 60_000 - 12_000, "edge": T0 + 60_000 - 7_000,
                          "raw_since": T0 + 60_000 - 7_000, "warmup_ms": 5_000},
            },
        },
        {
            "type": "session_start",
            "session": "s-1",
            "method": "card",
            "user": "hmac-sha256:" + hashlib.sha256(b"card 0042").hexdigest(),
        },
        {
            "type": "heartbeat",
            "state": "running",
            "period_ms": 300_000,
            "evidence": {"power": {"n": 300, "min_mw": 1_190_000, "max_mw": 1_310_000, "mean_mw": 1_251_000}},
        },
        {
            "type": "sample",
            "signal": "power",
            "unit": "mW",
            "start": T0 + 300_000,
            "step_ms": 1000,
            "values": [1_250_000, 1_249_500, None, 1_251_000],
        },
        {"type": "session_end", "session": "s-1", "reason": "checkout"},
        {
            "type": "state",
            "state": "idle",
            "prev_state": "running",
            "rule": "power.standby",
            "evidence": {"power": {"state": "standby", "mw": 310_000}, "text": {"note": '质谱仪 待机 "quoted"\n'},
                         # §5.2: the run ended 70 s before the decision (post-run hold + confirmation)
                         "state": {"since": T0 + 360_000 - 70_000, "edge": T0 + 360_000 - 70_000,
                                   "raw_since": T0 + 360_000 - 10_000, "warmup_ms": 0}},
        },
    ]
    out: list[dict[str, Any]] = []
    prev = GENESIS
    for i, body in enumerate(bodies):
        rec = {
            "agent": AGENT,
            "boot": 1,
            "seq": i + 1,
            "t": T0 + i * 60_000,
            "mono": 5_000 + i * 60_000,
            "prev": prev,
            **body,
        }
        prev = record_hash(rec)
        out.append(rec)
    return out


def _envelope(records: list[dict[str, Any]], key: Ed25519PrivateKey = AGENT_KEY, **over: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": 1,
        "msg": "rec",
        "agent": AGENT,
        "key": key_id(AGENT_KEY),
        "unit": UNIT,
        "instrument": INSTRUMENT,
        "boot": 1,
        "sent": T0 + 3_600_000,
        "records": records,
    }
    env.update(over)
    return env


def _sealed(env: dict[str, Any], key: Ed25519PrivateKey = AGENT_KEY) -> bytes:
    return seal(env, key)


def _sealed_unchecked(env: dict[str, Any]) -> bytes:
    """Seal without the encoder's own checks, to make messages a careless agent could send."""
    env = {**env, "sig": sign(AGENT_KEY, dumps_sorted(env))}
    return dumps_sorted(env)


def _rechain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prev = records[0]["prev"]
    out = []
    for rec in records:
        rec = {**rec, "prev": prev}
        prev = record_hash(rec)
        out.append(rec)
    return out


def _invalid() -> list[tuple[str, str, bytes, str]]:
    """(name, expected reason, wire bytes, why)."""
    recs = _records()
    good = _sealed(_envelope(recs))
    cases: list[tuple[str, str, bytes, str]] = []

    def add(name: str, reason: str, why: str, make: Callable[[], bytes]) -> None:
        cases.append((name, reason, make(), why))

    add(
        "tampered_record",
        "bad_signature",
        "a running state's power reading was changed after signing",
        lambda: good.replace(b'"mw":1250000', b'"mw":1950000'),
    )
    add(
        "wrong_key",
        "bad_signature",
        "signed by another key while naming the agent's key id",
        lambda: _sealed(_envelope(recs), OTHER_KEY),
    )
    add(
        "reordered_records",
        "seq_out_of_order",
        "records 2 and 3 swapped (signed by the agent itself)",
        lambda: _sealed(_envelope([recs[0], recs[2], recs[1], *recs[3:]])),
    )
    add(
        "dropped_record",
        "seq_gap",
        "record 3 removed from the middle of an envelope",
        lambda: _sealed(_envelope([*recs[:2], *recs[3:]])),
    )
    add(
        "broken_link",
        "chain_broken",
        "record 4 names a predecessor hash that is not record 3's",
        lambda: _sealed(_envelope([*recs[:3], {**recs[3], "prev": "f" * 64}, *_rechain(recs[4:])])),
    )
    add(
        "unknown_record_type",
        "unknown_type",
        "a record type v1 does not define",
        lambda: _sealed(_envelope([{**recs[0], "type": "teleport"}])),
    )
    add(
        "unknown_field",
        "schema",
        "an extra member in a record",
        lambda: _sealed(_envelope([{**recs[0], "hours": 1500}])),
    )
    add(
        "float_value",
        "schema",
        "a float where a scaled integer is required (signed by the agent itself)",
        lambda: _sealed_unchecked(_envelope([{**recs[0], "mono": 5000.5}])),
    )
    add("string_for_int", "schema", '"5" is not 5: no coercion', lambda: _sealed(_envelope([{**recs[0], "seq": "1"}])))
    add(
        "record_of_other_agent",
        "wrong_agent",
        "a record of another agent inside this agent's envelope",
        lambda: _sealed(_envelope([{**recs[0], "agent": "agent-0002"}])),
    )
    add(
        "card_number_in_clear",
        "schema",
        "a card user sent without the keyed hash",
        lambda: _sealed(_envelope(_rechain([recs[0], recs[1], {**recs[2], "user": "0042"}]))),
    )
    add("unsupported_version", "unsupported_version", "v=2 on a v1 topic", lambda: _sealed(_envelope(recs, v=2)))
    add("malformed_json", "malformed", "truncated JSON", lambda: good[: len(good) // 2])
    add("not_utf8", "malformed", "bytes that are not UTF-8", lambda: b'{"v":1,"x":"\xff\xfe"}')
    add("top_level_array", "malformed", "an array, not an object", lambda: b"[1,2,3]")
    add(
        "white_space",
        "not_canonical",
        "pretty-printed: not the canonical bytes",
        lambda: json.dumps(json.loads(good), indent=1).encode(),
    )
    add(
        "duplicate_key",
        "not_canonical",
        "a member given twice (parsers disagree on which wins)",
        lambda: good.replace(
            b'{"agent":"agent-0001","boot":1,"instrument"',
            b'{"agent":"agent-0001","agent":"agent-0001","boot":1,"instrument"',
            1,
        ),
    )
    add(
        "oversized",
        "oversized",
        f"larger than {MAX_ENVELOPE_BYTES} bytes: wire_b64 followed by `pad` spaces",
        lambda: good,
    )
    add("empty_envelope", "schema", "no records", lambda: _sealed(_envelope([])))
    return cases


def build() -> dict[str, Any]:
    recs = _records()
    env = _envelope(recs)
    wire = _sealed(env)
    return {
        "about": "Jishi protocol v1 test vectors; see protocols/SPEC.md. Bytes are UTF-8 strings unless named *_b64 "
        "(standard base64). Keys are unpadded base64url of the raw 32 bytes.",
        "keys": {
            name: {"private": private_to_b64(k), "public": public_to_b64(k), "key_id": key_id(k)}
            for name, k in (("agent", AGENT_KEY), ("other", OTHER_KEY))
        },
        "records": [
            {"record": rec, "canonical": canonical(rec).decode("utf-8"), "sha256": record_hash(rec)} for rec in recs
        ],
        "envelope": {
            "signed_bytes": signed_bytes(env).decode("utf-8"),
            "wire": wire.decode("utf-8"),
            "sig": json.loads(wire)["sig"],
        },
        "birth": birth(
            key=AGENT_KEY,
            agent=AGENT,
            unit=UNIT,
            instrument=INSTRUMENT,
            boot=1,
            conn=1,
            t=T0,
            next_seq=8,
            spool_first=1,
            acked=0,
            sw="0.1.0",
        ).decode("utf-8"),
        "death": death(
            key=AGENT_KEY, agent=AGENT, unit=UNIT, instrument=INSTRUMENT, boot=1, conn=1, t=T0, clean=False
        ).decode("utf-8"),
        "invalid": [
            {
                "name": name,
                "reason": reason,
                "why": why,
                "wire_b64": base64.b64encode(data).decode("ascii"),
                **({"pad": MAX_ENVELOPE_BYTES} if name == "oversized" else {}),
            }
            for name, reason, data, why in _invalid()
        ],
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not VECTOR_FILE.exists() or VECTOR_FILE.read_text(encoding="utf-8") != text:
            print(f"{VECTOR_FILE} is stale; run: python -m protocols.vectors", file=sys.stderr)
            return 1
        return 0
    VECTOR_FILE.parent.mkdir(exist_ok=True)
    VECTOR_FILE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
