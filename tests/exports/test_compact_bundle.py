"""The compact evidence bundle (version 2, SPEC.md §14): a record stream authenticated by a few
signed heads. `jishi verify` must accept an honest bundle and refuse each tampering with a reason
that says what is wrong, even when the tamperer also fixed the manifest's SHA-256 (the manifest is
not signed; only the agents' signatures and the chain prove anything). No database: the bundle is
written from envelopes sealed here (sim/evidence.py) through the server's compaction."""

from __future__ import annotations

import hashlib
import json
import lzma
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocols.bundle import decode_stream, head_of
from protocols.canonical import dumps_sorted
from protocols.chain import GENESIS, record_hash
from protocols.envelope import envelope
from protocols.signing import Signer, key_id, private_from_b64
from server.exports.verify import VerifyResult, verify_bundle
from sim.evidence import SimAgent, seal, write_v2

ROOT = Path(__file__).resolve().parents[2]
KEYS = json.loads((ROOT / "protocols" / "test-vectors" / "v1.json").read_text())["keys"]
AGENT_PRIVATE, OTHER_PRIVATE = KEYS["agent"]["private"], KEYS["other"]["private"]
T0 = 1_740_931_200_000  # 2025-03-03 00:00 Asia/Shanghai
HB = 300_000
PERIOD = ("2025-03", "2025-03-01T00:00:00+08:00", "2025-04-01T00:00:00+08:00")


def _records(agent: str, days: int = 3) -> list[dict[str, Any]]:
    """An agent's chained records: a boot, then every 5 min a heartbeat, a 2 h run each day."""
    out: list[dict[str, Any]] = []
    prev = GENESIS

    def add(t: int, **fields: Any) -> None:
        nonlocal prev
        rec = {"agent": agent, "boot": 1, "seq": len(out) + 1, "t": t, "mono": t - T0, "prev": prev, **fields}
        out.append(rec)
        prev = record_hash(rec)

    add(T0, type="lifecycle", event="boot", detail={"reason": "start", "version": "0.1.0"})
    add(T0 + 1000, type="state", state="idle", prev_state="unknown", rule="power.running", evidence={})
    state = "idle"
    for k in range(1, days * 288):
        t = T0 + k * HB
        if k % 288 in (120, 144):
            new = "running" if state == "idle" else "idle"
            add(t - 1000, type="state", state=new, prev_state=state, rule="power.running",
                evidence={"power": {"mw": 900_000 if new == "running" else 100_000}})
            state = new
        add(t, type="heartbeat", state=state, period_ms=HB, evidence={"power": {"mw_avg": 100_000 + k % 7, "n": 300}})
    return out


def _agent(agent: str, instrument: str, key: Signer, per_envelope: int = 1) -> SimAgent:
    recs = _records(agent)
    return SimAgent(agent, instrument, key, seal(agent, "u1", instrument, key, recs, per_envelope), recs[-1]["seq"])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compact") / "bundle.zip"
    a = _agent("agent-a", "inst-a", private_from_b64(AGENT_PRIVATE))
    b = _agent("agent-b", "inst-b", private_from_b64(OTHER_PRIVATE), per_envelope=50)
    write_v2(path, "u1", *PERIOD, [a, b])
    return path


def _rewrite(src: Path, dst: Path, name: str, change: Callable[[bytes], bytes]) -> Path:
    """A copy of the bundle with one file changed and the manifest's SHA-256 fixed to match."""
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files[name] = change(files[name])
    manifest = json.loads(files["manifest.json"])
    manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return dst


def _lines(change: Callable[[list[bytes]], list[bytes]]) -> Callable[[bytes], bytes]:
    def run(blob: bytes) -> bytes:
        lines = lzma.decompress(blob).splitlines(keepends=True)
        return lzma.compress(b"".join(change(lines)))
    return run


def _problems(res: VerifyResult, agent: str = "agent-a") -> str:
    assert not res.ok
    return "\n".join(res.problems + next(a.problems for a in res.agents if a.agent_id == agent))


def test_honest_bundle_verifies_with_one_head_per_day(bundle: Path) -> None:
    res = verify_bundle(bundle)
    assert res.ok, res.text()
    a = next(x for x in res.agents if x.agent_id == "agent-a")
    assert a.records == 2 + (3 * 288 - 1) + 3 * 2 and a.heads == 3  # boot, heartbeats, runs; a head a day
    assert res.hours["inst-a"]["running"]["live"][1] == pytest.approx(3 * 2.0, abs=0.01)
    with zipfile.ZipFile(bundle) as zf:
        heads = json.loads(zf.read("heads/agent-a.json"))
        stream = decode_stream(zf.read("records/agent-a.xz"))
    # the heads close the days: their last records are the last of each local day
    assert [h["last"] for h in heads] == [r.record["seq"] for i, r in enumerate(stream)
                                          if i + 1 == len(stream) or
                                          (stream[i + 1].record["t"] + 8 * 3_600_000) // 86_400_000
                                          != (r.record["t"] + 8 * 3_600_000) // 86_400_000]
    assert sum(r.elided for r in stream) == len(stream) - 1  # every prev but the genesis one is elided
    assert "VERIFIED" in res.text()


def test_changed_record_is_refused(bundle: Path, tmp_path: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        lines[100] = lines[100].replace(b'"mw_avg":', b'"mw_avg":9', 1)
        return lines
    res = verify_bundle(_rewrite(bundle, tmp_path / "b.zip", "records/agent-a.xz", _lines(change)))
    text = _problems(res)
    with zipfile.ZipFile(bundle) as zf:
        heads = json.loads(zf.read("heads/agent-a.json"))
    # the changed record's hash is every later record's ancestor: no head after it verifies
    for h in heads:
        assert f"head {h['first']}..{h['last']}: bad_signature" in text
    assert "changed, dropped or reordered" in text
    assert f"seqs 1..{heads[-1]['last']}: no valid signed head covers them" in text


def test_dropped_record_is_refused(bundle: Path, tmp_path: Path) -> None:
    drop = _lines(lambda ls: ls[:50] + ls[51:])
    res = verify_bundle(_rewrite(bundle, tmp_path / "b.zip", "records/agent-a.xz", drop))
    assert "seq 52 links to the line before, which is seq 50" in _problems(res)


def test_dropped_record_with_its_successor_spelled_out_is_a_hole(bundle: Path, tmp_path: Path) -> None:
    """A tamperer who drops a record and writes its successor's prev in full gets a hole, never
    declared by a signed spool_overflow record: refused."""
    def change(lines: list[bytes]) -> list[bytes]:
        recs = [r.record for r in decode_stream(lzma.compress(b"".join(lines)))]
        lag = lines[51].partition(b" ")[0]
        lines[51] = lag + b" " + dumps_sorted(recs[51]) + b"\n"
        return lines[:50] + lines[51:]
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "b.zip", "records/agent-a.xz", _lines(change))))
    assert "seqs 51..51 are missing" in text


def test_reordered_records_are_refused(bundle: Path, tmp_path: Path) -> None:
    def swap(lines: list[bytes]) -> list[bytes]:
        lines[60], lines[61] = lines[61], lines[60]
        return lines
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "b.zip", "records/agent-a.xz", _lines(swap))))
    assert "a record was dropped or moved" in text

    def swap_explicit(lines: list[bytes]) -> list[bytes]:  # prevs written out, so only the order is wrong
        recs = [r.record for r in decode_stream(lzma.compress(b"".join(lines)))]
        out = [ln.partition(b" ")[0] + b" " + dumps_sorted(r) + b"\n" for ln, r in zip(lines, recs, strict=True)]
        out[60], out[61] = out[61], out[60]
        return out
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "c.zip", "records/agent-a.xz", _lines(swap_explicit))))
    assert "seq 61 after seq 62: records out of order" in text


def _heads(change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Callable[[bytes], bytes]:
    return lambda raw: json.dumps(change(json.loads(raw))).encode()


def test_forged_head_is_refused(bundle: Path, tmp_path: Path) -> None:
    def forge(heads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        heads[1]["sent"] += 1
        return heads
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "b.zip", "heads/agent-a.json", _heads(forge))))
    assert "bad_signature" in text and "the head was forged" in text

    def extend(heads: list[dict[str, Any]]) -> list[dict[str, Any]]:  # a head claiming more records
        heads[0]["last"] += 5
        return heads
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "c.zip", "heads/agent-a.json", _heads(extend))))
    assert "bad_signature" in text


def test_head_signed_with_another_instruments_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    """Agent B's key (enrolled for inst-b) signs a rewritten day of agent A: refused by key owner."""
    other = private_from_b64(OTHER_PRIVATE)
    with zipfile.ZipFile(bundle) as zf:
        recs = [r.record for r in decode_stream(zf.read("records/agent-a.xz"))]
        heads = json.loads(zf.read("heads/agent-a.json"))
    last = heads[-1]
    body = json.loads(envelope(key=other, agent="agent-a", unit="u1", instrument="inst-a", boot=1,
                               sent=last["sent"], records=recs[last["first"] - 1:last["last"]]))
    assert head_of(body)["key"] == key_id(other)
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "b.zip", "heads/agent-a.json",
                                            _heads(lambda hs: [*hs[:-1], head_of(body)]))))
    assert f"signed with key {key_id(other)}, which is agent agent-b's (instrument inst-b), not agent-a's" in text
    assert "no valid signed head covers them" in text


def test_truncated_files_are_refused(bundle: Path, tmp_path: Path) -> None:
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "b.zip", "records/agent-a.xz",
                                            lambda blob: blob[: len(blob) // 2])))
    assert "truncated or corrupt xz stream" in text
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[:-200])
    res = verify_bundle(cut)
    assert not res.ok and "cannot open" in res.problems[0]
    # a stream cut at a line boundary and re-compressed: the last head's records are missing
    text = _problems(verify_bundle(_rewrite(bundle, tmp_path / "c.zip", "records/agent-a.xz",
                                            _lines(lambda ls: ls[:-10]))))
    assert "its records are not all in the stream" in text and "the stream ends before the watermark" in text
