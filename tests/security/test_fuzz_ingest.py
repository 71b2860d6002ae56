"""Fuzzing the ingest path through the real broker into a real ingest (subscriber, open thread,
database worker, PostgreSQL): random and mutated messages - bit flips, truncations, splices,
huge payloads, deeply nested JSON, other text encodings, random unicode, and *re-signed* mutations
(fields replaced by random values, then signed with the agent's real key, so they pass the
signature and reach the book-keeping and derivation).

Invariants, counted message by message:
- ingest receives every message sent (its `messages_total` grows by exactly the number sent);
- every message is quarantined with a known reason, or else it is one the pure checks accept
  (canonical, valid schema, registered key, valid signature, matching topic): stored or a duplicate;
- no worker thread dies, nothing is logged as a crash, and the verified records of the fuzzed agent
  still form one unbroken chain.

Bounded in time: examples stop being generated after BUDGET_S.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from protocols import topics
from protocols.chain import record_hash
from protocols.envelope import seal
from protocols.errors import Reason
from protocols.signing import key_id, public_to_b64
from server.db.queries import AgentRow, KeyRow
from server.ingest.service import Ingest
from server.ingest.verify import ControlIn, EnvelopeIn, Incoming, KeyCache, Opening, authenticate, open_any
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

S = 1000
BUDGET_S = 30.0
MAX_BYTES = 65_536  # ingest.quarantine_max_bytes (default)
KNOWN_REASONS = {str(r) for r in Reason} | {"store_error"}

_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


def _mutate_bytes(data: bytes, draw: st.DrawFn) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "dup"]))
        if not buf:
            break
        i = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[i:]
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[i:i + draw(st.integers(1, 32))]
        else:
            j = draw(st.integers(i, len(buf)))
            buf[j:j] = buf[i:j][:4096]
    return bytes(buf)


def _resigned(base: bytes, draw: st.DrawFn, agent: TestAgent) -> bytes:
    """Replace one field (top level or in a record) by a random value, then sign it properly."""
    body = orjson.loads(base)
    target = body
    if "records" in body and draw(st.booleans()):
        target = body["records"][draw(st.integers(0, len(body["records"]) - 1))]
    keys = sorted(target)
    k = draw(st.sampled_from([*keys, "extra"]))
    target[k] = draw(_json | st.sampled_from(["running", "idle", "off", "unknown", "heartbeat", "state"]))
    if target is not body and draw(st.booleans()):
        # keep the chain consistent after the change, so only the change itself is judged
        recs = body["records"]
        for j in range(1, len(recs)):
            if isinstance(recs[j - 1], dict) and isinstance(recs[j], dict):
                try:
                    recs[j]["prev"] = record_hash(recs[j - 1])
                except (TypeError, ValueError):
                    pass
    body.pop("sig", None)
    try:
        return seal(body, agent.key)
    except (TypeError, ValueError):
        return json.dumps(body, ensure_ascii=False).encode()


@st.composite
def _message(draw: st.DrawFn, agent: TestAgent, bases: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    topic, base = draw(st.sampled_from(bases))
    kind = draw(st.sampled_from(["mutate", "mutate", "resign", "resign", "resign", "random", "json", "deep",
                                 "huge", "encoding", "unicode", "topic", "asis"]))
    if kind == "mutate":
        return topic, _mutate_bytes(base, draw)
    if kind == "resign":
        return topic, _resigned(base, draw, agent)
    if kind == "random":
        return topic, draw(st.binary(max_size=512))
    if kind == "json":
        return topic, json.dumps(draw(_json), ensure_ascii=False).encode()
    if kind == "deep":
        n = draw(st.integers(100, 100_000))  # < the broker's 1 MiB max_packet_size
        return topic, draw(st.sampled_from([b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n,
                                            b'{"v":1,"records":' + b"[" * n + b"]" * n + b"}"]))
    if kind == "huge":
        size = draw(st.integers(200_000, 900_000))
        return topic, draw(st.sampled_from([b"x" * size, base[:-1] + b',"z":"' + b"z" * size + b'"}',
                                            b'{"records":[' + b"{}," * (size // 3) + b"{}]}"]))
    if kind == "encoding":
        text = base.decode()
        enc = draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "gb18030", "latin-1"]))
        return topic, (text.replace('"idle"', '"空闲é"') if enc != "latin-1" else text).encode(enc, "replace")
    if kind == "unicode":
        s = draw(st.text(min_size=1, max_size=30))
        body = orjson.loads(base)
        body[draw(st.sampled_from(["agent", "unit", "instrument", "key", "sig", "msg"]))] = s
        return topic, json.dumps(body, ensure_ascii=False).encode()
    if kind == "topic":
        # a valid, signed message on another kind's topic or on a random instrument of the same unit
        inst = draw(st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z"))
        k = draw(st.sampled_from(list(topics.Kind)[:3]))
        return topics.topic(agent.unit, draw(st.sampled_from([agent.instrument, inst])), k), base
    return topic, base


def _accepted_by_pure_checks(topic: str, payload: bytes, agent: TestAgent) -> bool:
    """What the registry/signature/topic checks would say, with the fuzzed agent's registry rows."""
    o = open_any(Incoming(topic, payload, time.time()))
    if not isinstance(o, Opening):
        return False
    agents = {agent.agent: AgentRow(agent.agent, agent.instrument, agent.unit, False)}
    keys = {key_id(agent.key): KeyRow(key_id(agent.key), agent.agent, public_to_b64(agent.key), False)}
    return isinstance(authenticate(o, agents, keys, KeyCache()), EnvelopeIn | ControlIn)


def _fingerprint(topic: str, payload: bytes) -> tuple[str, str, int]:
    return topic, hashlib.sha256(payload[:MAX_BYTES]).hexdigest(), len(payload)


@pytest.mark.usefixtures("no_retained")
def test_fuzzed_messages_are_each_verified_or_quarantined(pg_dsn: str, mqtt_broker: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    tag = uuid.uuid4().hex[:6]
    dsn = pg_dsn
    f = TestAgent(f"fz-{tag}", unit=f"uf-{tag}")
    register(dsn, f, org=f"org-{tag}")
    now = int(time.time() * 1000)
    t0 = now - 2 * 3600 * S
    f.state(t0, "idle")
    for k in range(1, 60):
        f.heartbeat(t0 + k * 60 * S, "running" if 20 <= k < 40 else "idle", period_ms=60_000)
    bases = [(f.topic(), f.seal(f.made[i:i + 5])) for i in range(0, 60, 5)]
    bases += [(f.topic(topics.Kind.BIRTH), f.birth(now - 60 * S, next_seq=1)),
              (f.topic(topics.Kind.DEATH), f.death(now - 30 * S))]
    s = settings_for(dsn, mqtt_broker, client_id=f"ing-{tag}")
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    pub = Publisher(mqtt_broker, client_id=f"fuzz-{tag}")
    reg = ing.metrics.registry
    sent: list[tuple[str, bytes]] = []
    started = time.monotonic()

    def received() -> int:
        return int(sum(reg.get_sample_value("jishi_ingest_messages_total", {"kind": k}) or 0
                       for k in ("rec", "birth", "death")))

    try:
        assert ing.wait_connected()
        # subscription in place: the genuine birth is received
        def subscribed() -> bool:
            pub.publish(*bases[-2])
            return received() >= 1

        wait_for(subscribed, 20, every=0.3, what="ingest subscribed")
        time.sleep(1.0)  # let the last births land before counting them as sent
        sent.extend([bases[-2]] * received())

        @settings(max_examples=400, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(st.lists(_message(f, bases), min_size=1, max_size=25))
        def run(batch: list[tuple[str, bytes]]) -> None:
            if time.monotonic() - started > BUDGET_S:
                return
            before = received()
            assert all(len(p) < 1_000_000 for _, p in batch)  # the broker drops larger packets
            pub.publish_many(batch)
            sent.extend(batch)
            wait_for(lambda: received() >= before + len(batch), 20, what=f"{len(batch)} messages received")
            assert ing.worker.thread.is_alive()

        run()
        wait_for(lambda: received() == len(sent), 20, what="every message received")
        assert received() == len(sent)
        # all batches committed: the queue is empty and nothing is inside a batch
        wait_for(lambda: (reg.get_sample_value("jishi_ingest_queue_depth") or 0) == 0
                 and (reg.get_sample_value("jishi_ingest_workers_busy") or 0) == 0, 20, what="ingest idle")
        time.sleep(0.3)
        assert ing.worker.thread.is_alive()
    finally:
        pub.close()
        ing.stop()

    rows = query(dsn, "SELECT topic, reason, payload, payload_len FROM quarantine WHERE topic LIKE %s",
                 (f"jishi/v1/uf-{tag}/%",))
    # the stored payload is the first MAX_BYTES bytes, with the original length: a fingerprint
    quarantined = Counter((t, hashlib.sha256(bytes(p)).hexdigest(), n) for t, _, p, n in rows)
    assert {r[1] for r in rows} <= KNOWN_REASONS
    by_fp = Counter(_fingerprint(t, p) for t, p in sent)
    # every quarantine row is one of the messages sent, at most as often as it was sent
    assert not (quarantined - by_fp), "quarantine rows that match no message sent"
    # every message not quarantined passes the pure checks (then it was stored or a duplicate)
    leftover = by_fp - quarantined
    payload_of = {_fingerprint(t, p): (t, p) for t, p in sent}
    unexplained = [fp for fp in leftover if not _accepted_by_pure_checks(*payload_of[fp], f)]
    assert not unexplained, f"{len(unexplained)} messages neither quarantined nor valid"
    rejects = sum(reg.get_sample_value("jishi_ingest_rejects_total", {"reason": r}) or 0 for r in KNOWN_REASONS)
    assert rejects == len(rows)
    # the verified chain of the fuzzed agent is intact: contiguous seqs, stored once
    seqs = [r[0] for r in query(dsn, "SELECT r.seq FROM records r JOIN agent_progress p USING (agent_no)"
                                " WHERE p.agent_id = %s ORDER BY r.seq", (f.agent,))]
    assert len(seqs) == len(set(seqs))
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR and "Traceback" in (r.exc_text or "")]
    assert not crashes, crashes[0].getMessage()
    print(f"fuzz: {len(sent)} messages, {len(rows)} quarantined "
          f"({dict(Counter(r[1] for r in rows))}), {sum(leftover.values())} verified, "
          f"{len(seqs)} records stored, {time.monotonic() - started:.1f} s")
