"""The ingest pipeline against a real TimescaleDB, messages handed in directly (no broker):
verification, every rejection reason, dedupe, chain, holes, gaps, derivation, live state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from protocols import topics
from protocols.errors import Reason
from server.ingest.verify import Incoming
from server.ingest.worker import Outcome, Pipeline
from server.store.archive import envelope_bytes, pack_old
from tests.server.helpers import T0, TestAgent, query, register, settings_for

S = 1000
Conn = psycopg.Connection[Any]


@pytest.fixture
def db(fresh_db: str) -> Iterator[tuple[str, Conn]]:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        yield fresh_db, conn


def run(conn: Conn, dsn: str, msgs: list[Incoming], **ingest: Any) -> Outcome:
    return Pipeline(settings_for(dsn, **ingest), "t").process(conn, msgs)


def reasons(out: Outcome) -> list[str]:
    return [r.reason for r in out.rejections]


def progress(dsn: str, agent: str) -> tuple[Any, ...]:
    return query(dsn, "SELECT watermark, max_seq, derived_seq, pending FROM agent_progress WHERE agent_id = %s",
                 (agent,))[0]


def stored_seqs(dsn: str, agent: str) -> list[int]:
    return [r[0] for r in query(dsn, "SELECT r.seq FROM records r JOIN agent_progress p USING (agent_no)"
                                " WHERE p.agent_id = %s ORDER BY seq", (agent,))]


def test_in_order_envelopes_are_stored_acked_and_derived(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    e1 = a.seal([a.lifecycle(T0, "boot"), a.state(T0 + 10 * S, "running")])
    e2 = a.seal([a.heartbeat(T0 + 300 * S, "running"), a.state(T0 + 400 * S, "idle")])
    out = run(conn, dsn, [a.msg(e1, T0 + 10 * S), a.msg(e2, T0 + 400 * S)])
    assert out.rejections == [] and out.records == 4 and out.envelopes == 2
    assert [x.acked for x in out.acks] == [4]
    assert progress(dsn, "a1")[:3] == (4, 4, 4)
    segs = query(dsn, "SELECT extract(epoch FROM start_at)::bigint * 1000, extract(epoch FROM end_at)::bigint * 1000,"
                 " state, watched, arrival FROM usage_segments ORDER BY start_at")
    assert segs == [(T0, T0 + 10 * S, "unknown", True, "live"), (T0 + 10 * S, T0 + 400 * S, "running", True, "live")]
    live = query(dsn, "SELECT instrument_id, state, last_seq, online FROM live_state")
    assert live == [("i-a1", "idle", 4, True)]
    # the raw envelope is kept byte for byte
    env_id = query(dsn, "SELECT envelope_id FROM records WHERE seq = 3")[0][0]
    assert envelope_bytes(conn, 1, env_id) == e2


def test_duplicates_are_stored_once_and_reacked(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    recs = [a.state(T0, "idle"), a.heartbeat(T0 + 300 * S, "idle"), a.heartbeat(T0 + 600 * S, "idle")]
    e_all = a.seal(recs)
    e_12 = a.seal(recs[:2])
    out = run(conn, dsn, [a.msg(e_12, T0), a.msg(e_all, T0), a.msg(e_all, T0)])
    assert out.rejections == [] and out.records == 3 and out.duplicates == 2 + 3
    out2 = run(conn, dsn, [a.msg(e_12, T0 + 700 * S)])
    assert out2.records == 0 and out2.duplicates == 2 and [x.acked for x in out2.acks] == [3]
    assert stored_seqs(dsn, "a1") == [1, 2, 3]
    assert query(dsn, "SELECT count(*) FROM envelopes")[0][0] == 2


def test_reordered_envelopes_wait_for_the_hole(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    e1 = a.seal([a.state(T0, "running")])
    e2 = a.seal([a.heartbeat(T0 + 100 * S, "running")])
    e3 = a.seal([a.heartbeat(T0 + 200 * S, "running"), a.state(T0 + 250 * S, "idle")])
    run(conn, dsn, [a.msg(e1, T0)])
    out = run(conn, dsn, [a.msg(e3, T0 + 250 * S)])
    assert out.records == 2 and [x.acked for x in out.acks] == [1]
    wm, mx, derived, pending = progress(dsn, "a1")
    assert (wm, mx, derived) == (1, 4, 1) and [p[:2] for p in pending] == [[3, 4]]
    assert query(dsn, "SELECT count(*) FROM usage_segments")[0][0] == 0
    out = run(conn, dsn, [a.msg(e2, T0 + 260 * S)])
    assert [x.acked for x in out.acks] == [4]
    assert progress(dsn, "a1")[:4] == (4, 4, 4, [])
    segs = query(dsn, "SELECT state, watched, arrival FROM usage_segments ORDER BY start_at")
    assert segs == [("running", True, "spool"), ("running", True, "live")]  # seq 2 came 160 s late


def test_chain_broken_is_refused_with_the_stored_record(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    run(conn, dsn, [a.msg(a.seal([a.state(T0, "idle")]))])
    a.prev = "f" * 64  # the agent lost track of its chain
    bad = a.seal([a.heartbeat(T0 + 100 * S, "idle")])
    out = run(conn, dsn, [a.msg(bad)])
    assert reasons(out) == [Reason.CHAIN_BROKEN] and out.records == 0
    assert stored_seqs(dsn, "a1") == [1]


def test_chain_checked_when_a_hole_fills_from_below(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    r1 = a.state(T0, "idle")
    r2 = a.heartbeat(T0 + 100 * S, "idle")
    r3 = a.heartbeat(T0 + 200 * S, "idle")
    run(conn, dsn, [a.msg(a.seal([r1])), a.msg(a.seal([r3]))])
    forged = dict(r2, evidence={"x": {"y": 1}})  # not the record r3 links to
    b = TestAgent("a1", key=a.key)
    out = run(conn, dsn, [a.msg(b.seal([forged]))])
    assert reasons(out) == [Reason.CHAIN_BROKEN]
    out = run(conn, dsn, [a.msg(a.seal([r2]))])
    assert out.rejections == [] and progress(dsn, "a1")[0] == 3


def test_seq_conflict(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    r1 = a.state(T0, "idle")
    run(conn, dsn, [a.msg(a.seal([r1]))])
    other = TestAgent("a1", key=a.key)
    out = run(conn, dsn, [a.msg(other.seal([other.state(T0, "running")]))])
    assert reasons(out) == [Reason.SEQ_CONFLICT]
    other2 = TestAgent("a1", key=a.key)
    out = run(conn, dsn, [a.msg(other2.seal([other2.state(T0 + 5, "idle")]))])  # another time, same seq
    assert reasons(out) == [Reason.SEQ_CONFLICT]
    assert stored_seqs(dsn, "a1") == [1]


def test_replayed_old_envelope(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    now = int(datetime.now(UTC).timestamp() * 1000)
    old = a.seal([a.state(now - 3600 * S, "idle")], sent=now - 3600 * S)
    run(conn, dsn, [a.msg(old), a.msg(a.seal([a.heartbeat(now - 3000 * S, "idle")]))])
    out = run(conn, dsn, [a.msg(old)])
    assert reasons(out) == [Reason.REPLAY]
    # the broker's own redelivery of a message (dup flag) is never a replay
    redelivered = a.msg(old)
    out = run(conn, dsn, [Incoming(redelivered.topic, redelivered.payload, redelivered.received, dup=True)])
    assert out.rejections == [] and out.duplicates == 1
    # a recent duplicate (a re-send after a lost ack) is only a duplicate
    fresh = a.seal([a.heartbeat(now, "idle")])
    run(conn, dsn, [a.msg(fresh)])
    run(conn, dsn, [a.msg(a.seal([a.heartbeat(now + 1, "idle")]))])
    out = run(conn, dsn, [a.msg(fresh)])
    assert out.rejections == [] and out.duplicates == 1


def test_every_rejection_reason(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    b = TestAgent("b1", unit="u2")
    r = TestAgent("r1")
    register(dsn, a)
    register(dsn, b)
    register(dsn, r)
    conn.execute("UPDATE agents SET revoked_at = now() WHERE id = 'r1'")
    stranger = TestAgent("zz")
    good = a.seal([a.state(T0, "idle")])
    forged = bytearray(good)
    i = forged.index(b'"idle"')
    forged[i:i + 6] = b'"off" '[:6]
    forged_ok = good.replace(b'"state":"idle"', b'"state":"fault"')
    msgs = {
        Reason.BAD_SIGNATURE: a.msg(forged_ok),
        Reason.UNKNOWN_AGENT: stranger.msg(stranger.seal([stranger.state(T0, "idle")])),
        Reason.REVOKED_AGENT: r.msg(r.seal([r.state(T0, "idle")])),
        Reason.WRONG_TOPIC: b.msg(a.seal([a.state(T0 + 1, "idle")]), topic=b.topic()),
        Reason.MALFORMED: a.msg(b"\xff not json"),
        Reason.NOT_CANONICAL: a.msg(good.replace(b'{"agent"', b'{ "agent"', 1)),
        Reason.OVERSIZED: a.msg(b"{" + b" " * (300 * 1024) + b"}"),
        Reason.UNKNOWN_TYPE: a.msg(a.seal([a.record(T0 + 2, "telepathy")])),
        Reason.SCHEMA: a.msg(a.seal([a.record(T0 + 3, "state", state="dancing", prev_state="idle", rule="",
                                              evidence={})])),
        Reason.UNSUPPORTED_VERSION: a.msg(good.replace(b'"v":1', b'"v":2')),
    }
    out = run(conn, dsn, list(msgs.values()))
    assert sorted(reasons(out)) == sorted(str(k) for k in msgs)
    rows = query(dsn, "SELECT reason, payload_len, length(payload), agent_id FROM quarantine ORDER BY id")
    assert sorted(r[0] for r in rows) == sorted(str(k) for k in msgs)
    big = next(r for r in rows if r[0] == "oversized")
    assert big[1] == 300 * 1024 + 2 and big[2] == 64 * 1024
    assert query(dsn, "SELECT count(*) FROM records")[0][0] == 0
    # a good neighbour in the same batch is stored
    a2 = TestAgent("a2")
    register(dsn, a2)
    out = run(conn, dsn, [a.msg(b"junk"), a2.msg(a2.seal([a2.state(T0, "idle")])), a.msg(forged_ok)])
    assert out.records == 1 and sorted(reasons(out)) == ["bad_signature", "malformed"]


def test_revoked_key_and_foreign_key(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    b = TestAgent("b1")
    register(dsn, a)
    register(dsn, b)
    # b signs with its own (valid) key but claims to be a1
    imp = TestAgent("a1", key=b.key)
    out = run(conn, dsn, [a.msg(imp.seal([imp.state(T0, "idle")]))])
    assert reasons(out) == [Reason.UNKNOWN_KEY]
    conn.execute("UPDATE agent_keys SET revoked_at = now() WHERE agent_id = 'a1'")
    out = run(conn, dsn, [a.msg(a.seal([a.state(T0, "idle")]))])
    assert reasons(out) == [Reason.UNKNOWN_KEY]


def test_birth_below_spool_declares_gap_and_derivation_continues(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    r1 = a.state(T0, "running")
    a.heartbeat(T0 + 100 * S, "running")  # seq 2, 3 never arrive
    a.heartbeat(T0 + 200 * S, "running")
    r4 = a.heartbeat(T0 + 300 * S, "running")
    r5 = a.heartbeat(T0 + 400 * S, "running")
    # received when made (T0 is in the future: received now, they would be 'future' records)
    out = run(conn, dsn, [a.msg(a.seal([r1]), T0), a.msg(a.seal([r4, r5]), T0 + 400 * S)])
    assert [x.acked for x in out.acks] == [1]
    out = run(conn, dsn, [a.msg(a.birth(T0 + 401 * S, spool_first=4), kind=topics.Kind.BIRTH)])
    assert out.rejections == [] and [x.acked for x in out.acks] == [5] and out.gaps == ["lost"]
    assert query(dsn, "SELECT first_seq, last_seq, kind FROM gaps") == [(2, 3, "lost")]
    cov = query(dsn, "SELECT extract(epoch FROM start_at - %s) , extract(epoch FROM end_at - %s), status"
                " FROM coverage ORDER BY start_at", (datetime.fromtimestamp(T0 / 1000, UTC),) * 2)
    assert [(float(x), float(y), z) for x, y, z in cov] == [(0.0, 300.0, "gap"), (300.0, 400.0, "watching")]


def test_spool_overflow_declares_a_transparent_hole(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    r1 = a.state(T0, "running")
    s2 = a.record(T0 + 10 * S, "sample", signal="p", unit="mW", start=T0, step_ms=1000, values=[1])
    s3 = a.record(T0 + 20 * S, "sample", signal="p", unit="mW", start=T0, step_ms=1000, values=[1])
    r4 = a.heartbeat(T0 + 100 * S, "running")
    r5 = a.record(T0 + 101 * S, "spool_overflow", dropped=[{"first": 2, "last": 3,
                                                              "last_hash": __import__("protocols.chain",
                                                              fromlist=["x"]).record_hash(s3)}])
    assert s2["seq"] == 2
    out = run(conn, dsn, [a.msg(a.seal([r1]), T0), a.msg(a.seal([r4, r5]), T0 + 101 * S)])  # received when made
    assert out.rejections == [] and [x.acked for x in out.acks] == [5]
    assert query(dsn, "SELECT first_seq, last_seq, kind FROM gaps") == [(2, 3, "overflow")]
    assert query(dsn, "SELECT status FROM coverage") == [("watching",)]


def test_pack_keeps_bytes_and_rederive_matches(db: tuple[str, Conn]) -> None:
    from server.derive.rebuild import rebuild_agent

    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    envs = [a.seal([a.state(T0, "running"), a.session_start(T0 + 5 * S, "s1", "alice")])]
    for k in range(1, 20):
        envs.append(a.seal([a.heartbeat(T0 + k * 300 * S, "running" if k < 10 else "idle")]))
    run(conn, dsn, [a.msg(e, T0 + 1) for e in envs])
    before = query(dsn, "SELECT start_at, end_at, state, watched, arrival, session_id FROM usage_segments"
                   " ORDER BY start_at")
    with conn.transaction():
        agents, moved = pack_old(conn, datetime.fromtimestamp(T0 / 1000 + 86400, UTC))
    assert (agents, moved) == (1, 20)
    assert query(dsn, "SELECT count(*) FROM envelopes")[0][0] == 0
    ids = [r[0] for r in query(dsn, "SELECT envelope_id FROM records ORDER BY seq")]
    with conn.transaction():
        assert [envelope_bytes(conn, 1, i) for i in sorted(set(ids))] == envs
        rebuild_agent(conn, "a1", settings_for(dsn).derive.params())
    after = query(dsn, "SELECT start_at, end_at, state, watched, arrival, session_id FROM usage_segments"
                  " ORDER BY start_at")
    assert after == before


def test_big_envelopes_are_kept_lz4_compressed_and_byte_exact(db: tuple[str, Conn]) -> None:
    """Migration 039: a many-record envelope is stored lz4-compressed (less TOAST and WAL per
    record) and read back, hot and packed, byte for byte."""
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    envs = [a.seal([a.heartbeat(T0 + (k * 200 + i) * 300 * S, "running") for i in range(200)]) for k in range(2)]
    out = run(conn, dsn, [a.msg(e, T0 + 400 * 300 * S) for e in envs])
    assert out.rejections == [] and out.records == 400
    stored = query(dsn, "SELECT pg_column_compression(raw), octet_length(raw), pg_column_size(raw) FROM envelopes"
                   " ORDER BY first_seq")
    assert [(c, n) for c, n, _ in stored] == [("lz4", len(e)) for e in envs]
    assert all(size < n / 2 for _, n, size in stored)
    ids = sorted({r[0] for r in query(dsn, "SELECT envelope_id FROM records")})
    with conn.transaction():
        assert [envelope_bytes(conn, 1, i) for i in ids] == envs
        assert pack_old(conn, datetime.fromtimestamp(T0 / 1000 + 400 * 300 + 86400, UTC)) == (1, 2)
        assert [envelope_bytes(conn, 1, i) for i in ids] == envs


def test_signed_slice_is_the_signed_bytes() -> None:
    import orjson

    from protocols.envelope import signed_bytes
    from server.ingest.verify import signed_slice

    a = TestAgent("slice")
    for rec in ([a.state(T0, "idle")], [a.record(T0 + 1, "state", state="idle", prev_state="idle", rule="x",
                                                 evidence={"sig": {"sig": "\",\"sig\":\""}})]):
        raw = a.seal(rec)
        body = orjson.loads(raw)
        assert signed_slice(raw, body["sig"]) == signed_bytes(body)
    for raw in (a.birth(T0), a.death(T0)):
        body = orjson.loads(raw)
        assert signed_slice(raw, body["sig"]) == signed_bytes(body)


def test_pack_codecs_round_trip() -> None:
    from server.store.archive import RawEnvelope, pack, unpack

    a = TestAgent("codec")
    envs = []
    for k in range(30):
        recs = [a.heartbeat(T0 + (2 * k) * S, "idle"), a.heartbeat(T0 + (2 * k + 1) * S, "idle")]
        envs.append(a.seal(recs))
    # a re-send overlapping earlier records, an envelope whose predecessor is not in the pack,
    # and an evidence key called prev holding the same hash text
    envs.append(a.seal(a.made[3:7]))
    b = TestAgent("codec2", seq=100, prev="a" * 64)
    envs.append(b.seal([b.record(T0, "state", state="idle", prev_state="idle", rule="",
                                 evidence={"prev": {"prev": "a" * 64}})]))
    entries = [RawEnvelope(i + 1, datetime.fromtimestamp(1_800_000_000 + i, UTC), e) for i, e in enumerate(envs)]
    back = unpack(2, pack(entries))
    assert [e.raw for e in back] == envs and [e.id for e in back] == [e.id for e in entries]
    assert [e.received_at for e in back] == [e.received_at for e in entries]


def test_packer_thread_job_moves_old_envelopes(db: tuple[str, Conn]) -> None:
    import threading

    from server.ingest.worker import Packer

    dsn, conn = db
    a = TestAgent("pk")
    register(dsn, a)
    run(conn, dsn, [a.msg(a.seal([a.state(T0, "idle")])), a.msg(a.seal([a.heartbeat(T0 + 300 * S, "idle")]))])
    s = settings_for(dsn, pack_after_s=0)
    packer = Packer(s, threading.Event())
    assert packer.run_once() == (1, 2)
    assert packer.run_once() == (0, 0)
    assert query(dsn, "SELECT count(*), sum(n) FROM envelope_packs") == [(1, 2)]


def test_birth_in_the_same_batch_declares_only_what_is_missing(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    a = TestAgent("a1")
    register(dsn, a)
    r1 = a.state(T0, "idle")
    a.heartbeat(T0 + 100 * S, "idle")  # seq 2: gone from the agent's spool
    r3 = a.heartbeat(T0 + 200 * S, "idle")  # seq 3: still in the spool, not sent yet
    r4 = a.heartbeat(T0 + 300 * S, "idle")
    birth = a.msg(a.birth(T0 + 301 * S, spool_first=3), kind=topics.Kind.BIRTH)
    out = run(conn, dsn, [a.msg(a.seal([r1])), a.msg(a.seal([r4])), birth])
    assert out.rejections == [] and [x.acked for x in out.acks] == [2]
    assert query(dsn, "SELECT first_seq, last_seq, kind FROM gaps") == [(2, 2, "lost")]
    out = run(conn, dsn, [a.msg(a.seal([r3]))])
    assert [x.acked for x in out.acks] == [4] and progress(dsn, "a1")[:3] == (4, 4, 4)


def _two_agents_with_a_batch_each(dsn: str, conn: Conn, first: str) -> tuple[Pipeline, Incoming, Incoming]:
    """Agents `first` and "free", each with a stored state; a pipeline and each one's next batch."""
    a, b = TestAgent(first), TestAgent("free")
    register(dsn, a)
    register(dsn, b)
    run(conn, dsn, [a.msg(a.seal([a.state(T0, "idle")])), b.msg(b.seal([b.state(T0, "idle")]))])
    pipe = Pipeline(settings_for(dsn), "t")
    return pipe, a.msg(a.seal([a.heartbeat(T0 + 60 * S, "idle")])), b.msg(b.seal([b.heartbeat(T0 + 60 * S, "idle")]))


def test_agents_busy_in_another_worker_are_deferred(db: tuple[str, Conn]) -> None:
    dsn, conn = db
    pipe, ma, mb = _two_agents_with_a_batch_each(dsn, conn, "busy")
    with psycopg.connect(dsn) as other:
        other.execute("SELECT 1 FROM agent_progress WHERE agent_id = 'busy' FOR UPDATE")
        out = pipe.process(conn, [ma, mb], skip_locked=True)
        assert [m for m, _ in out.deferred] == [ma] and out.records == 1
    out = pipe.process(conn, [m for m, _ in out.deferred], [o for _, o in out.deferred], skip_locked=True)
    assert out.deferred == [] and out.records == 1
    assert stored_seqs(dsn, "busy") == [1, 2] and stored_seqs(dsn, "free") == [1, 2]


def test_an_agent_another_worker_has_saved_but_not_committed_is_deferred_not_waited_for(
        db: tuple[str, Conn]) -> None:
    """The other worker has written the agent's progress (as every batch does before its commit):
    this worker skips the agent at once instead of waiting for that commit (lock_timeout turns a
    wait into an error)."""
    dsn, conn = db
    pipe, ma, mb = _two_agents_with_a_batch_each(dsn, conn, "saved")
    with psycopg.connect(dsn) as other:
        other.execute("UPDATE agent_progress SET resend_attempts = resend_attempts WHERE agent_id = 'saved'")
        conn.execute("SET lock_timeout = '200ms'")
        try:
            out = pipe.process(conn, [ma, mb], skip_locked=True)
        finally:
            conn.execute("RESET lock_timeout")
        assert [m for m, _ in out.deferred] == [ma] and out.records == 1
    out = pipe.process(conn, [m for m, _ in out.deferred], [o for _, o in out.deferred], skip_locked=True)
    assert out.deferred == [] and out.records == 1
    assert stored_seqs(dsn, "saved") == [1, 2] and stored_seqs(dsn, "free") == [1, 2]


def test_big_batches_are_split_by_agent_small_ones_not() -> None:
    """split_by_agent: every message once, in its order, each agent's in one group (the same in
    every worker); a batch under split_min_records stays whole."""
    from server.ingest.verify import Refused, open_any
    from server.ingest.worker import split_by_agent

    agents = [TestAgent(f"a{k}") for k in range(8)]
    msgs = [a.msg(a.seal([a.heartbeat(T0 + (i * 3 + j) * 300 * S, "idle") for j in range(3)]))
            for i in range(3) for a in agents]
    msgs.append(agents[0].msg(b"{not json", topic=agents[0].topic(topics.Kind.REC)))
    opened = [open_any(m) for m in msgs]
    assert isinstance(opened[-1], Refused)
    assert split_by_agent(msgs, opened, 73, 4) == [(msgs, opened)]  # 72 records: under the bound
    parts = split_by_agent(msgs, opened, 72, 4)
    assert 1 < len(parts) <= 4
    assert sorted(id(m) for p, _ in parts for m in p) == sorted(map(id, msgs))
    for p, o in parts:
        assert [msgs.index(m) for m in p] == sorted(msgs.index(m) for m in p)
        assert [opened[msgs.index(m)] for m in p] == o
    where = {(m.topic, k) for k, (p, _) in enumerate(parts) for m in p if m is not msgs[-1]}
    assert len(where) == len(agents)  # each agent's messages in one group
    assert split_by_agent(msgs, opened, 72, 4) == parts and split_by_agent(msgs, opened, 1, 1) == [(msgs, opened)]


def test_batches_are_split_only_while_another_worker_holds_agents() -> None:
    """A lone worker stores a big batch as one transaction; once another worker's hold deferred
    some of its agents, it splits (split_groups) until Contention.WINDOW_S after the last deferral."""
    from server.ingest.worker import Contention

    c = Contention()
    assert c.groups(4, 0.0) == 1
    c.note(False, 1.0)
    assert c.groups(4, 1.0) == 1
    c.note(True, 2.0)
    assert c.groups(4, 2.0) == 4 and c.groups(4, 2.0 + Contention.WINDOW_S - 0.1) == 4
    c.note(False, 3.0)  # a batch without deferrals does not end the window
    assert c.groups(4, 3.0 + Contention.WINDOW_S - 1.1) == 4
    assert c.groups(4, 2.0 + Contention.WINDOW_S) == 1
