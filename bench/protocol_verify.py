"""How fast the server side of the protocol opens and verifies envelopes, per record.

    .venv/bin/python bench/protocol_verify.py [--records 500] [--envelopes 200]

Prints records/s for open_envelope (canonical check, strict models, hashes, chain) with the
signature check, for the agent-side sealing, and the envelope size per record.
"""

from __future__ import annotations

import argparse
import time

from protocols.chain import GENESIS, record_hash
from protocols.envelope import envelope
from protocols.signing import generate
from protocols.validate import open_envelope

T0 = 1_767_225_600_000


def make_records(n: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    prev = GENESIS
    for i in range(n):
        rec: dict[str, object] = {
            "type": "heartbeat", "agent": "bench-agent", "boot": 1, "seq": i + 1, "t": T0 + i * 300_000,
            "mono": i * 300_000, "prev": prev, "state": "running" if i % 3 else "idle", "period_ms": 300_000,
            "evidence": {"power": {"n": 300, "min_mw": 1_190_000, "max_mw": 1_310_000, "mean_mw": 1_251_000}},
        }
        prev = record_hash(rec)
        out.append(rec)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=500, help="records per envelope")
    parser.add_argument("--envelopes", type=int, default=200)
    args = parser.parse_args()
    key = generate()
    pub = key.public_key()
    records = make_records(args.records)

    start = time.perf_counter()
    wires = [
        envelope(key=key, agent="bench-agent", unit="U", instrument="I", boot=1, sent=T0 + i, records=records)
        for i in range(args.envelopes)
    ]
    seal_s = time.perf_counter() - start

    start = time.perf_counter()
    for wire in wires:
        open_envelope(wire, key_for=lambda agent, kid: pub)
    open_s = time.perf_counter() - start

    total = args.records * args.envelopes
    print(f"envelope: {args.records} records, {len(wires[0]):,} bytes ({len(wires[0]) / args.records:.0f} B/record)")
    print(f"seal (agent):           {total / seal_s:>10,.0f} records/s")
    print(f"open + verify (server): {total / open_s:>10,.0f} records/s  (one core)")


if __name__ == "__main__":
    main()
