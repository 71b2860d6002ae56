"""The broker ACL is deliberately open (the test Mosquitto allows anonymous clients to publish on
any topic): the signature of the instrument's registered key is the only gate. Each attack below
is refused by the real ingest with its reason, lands in `quarantine`, and leaves the verified
tables (records, envelopes, agent_progress, live_state) of the victim exactly as its own agent
made them.

Not repeated here (tests/e2e/test_ingest_rejects.py has them): a tampered record, an unknown
agent, a revoked agent, A's own envelope re-published on B's topic, a broken chain, a byte-identical
replay of A's own envelope, malformed and oversized payloads.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import PROTOCOL_VERSION, topics
from protocols import envelope as env
from protocols.errors import Reason
from protocols.signing import generate, key_id, public_to_b64
from server.ingest.service import Ingest
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

S = 1000


def _sealed_as(victim: TestAgent, signer: Ed25519PrivateKey, claimed_key: str,
               records: list[dict[str, Any]], sent: int) -> bytes:
    """An envelope naming the victim (agent, unit, instrument) with `claimed_key` as its key id,
    signed with `signer`: self-consistent and canonical, so only the registry and the signature
    can tell."""
    return env.seal({"v": PROTOCOL_VERSION, "msg": "rec", "agent": victim.agent, "key": claimed_key,
                     "unit": victim.unit, "instrument": victim.instrument, "boot": victim.boot, "sent": sent,
                     "records": records}, signer)


def _victim_state(dsn: str, agent: str) -> list[tuple[Any, ...]]:
    """Everything verified about an agent: its progress, its records and envelopes, its live row."""
    prog = query(dsn, "SELECT agent_no, watermark, watermark_hash, max_seq, derived_seq FROM agent_progress"
                 " WHERE agent_id = %s", (agent,))
    recs = query(dsn, "SELECT r.seq, r.t, r.h, r.envelope_id FROM records r JOIN agent_progress p USING (agent_no)"
                 " WHERE p.agent_id = %s ORDER BY r.seq", (agent,))
    envs = query(dsn, "SELECT count(*) FROM envelopes e JOIN agent_progress p USING (agent_no)"
                 " WHERE p.agent_id = %s", (agent,))
    segs = query(dsn, "SELECT start_at, end_at, state, watched FROM usage_segments WHERE agent_id = %s"
                 " ORDER BY start_at", (agent,))
    return [*prog, *recs, *envs, *segs]


def test_signature_is_the_gate_with_the_broker_acl_open(pg_dsn: str, mqtt_broker: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    dsn = pg_dsn
    a = TestAgent(f"acla-{tag}", unit=f"ua-{tag}")          # the attacker's own, enrolled agent
    b = TestAgent(f"aclb-{tag}", unit=f"ub-{tag}")          # the victim, another unit's instrument
    register(dsn, a, org=f"org-a-{tag}")
    register(dsn, b, org=f"org-b-{tag}")
    s = settings_for(dsn, mqtt_broker, client_id=f"ing-{tag}")
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    # anonymous: no username, no password, no certificate - the broker lets it publish anywhere
    pub = Publisher(mqtt_broker, client_id=f"attacker-{tag}")
    now = int(time.time() * 1000)

    def watermark(agent: str) -> int:
        rows = query(dsn, "SELECT watermark FROM agent_progress WHERE agent_id = %s", (agent,))
        return int(rows[0][0]) if rows else 0

    def publish_until_stored(ag: TestAgent, payload: bytes, seq: int) -> None:
        deadline = time.monotonic() + 20
        while watermark(ag.agent) < seq:
            assert time.monotonic() < deadline, f"{ag.agent} seq {seq} never stored"
            pub.publish(ag.topic(), payload)
            time.sleep(0.3)

    try:
        assert ing.wait_connected()
        # the victim's genuine history: seq 1 (an hour old, sent then) and seq 2
        old_b = b.seal([b.state(now - 3600 * S, "idle")], sent=now - 3600 * S)
        publish_until_stored(b, old_b, 1)
        publish_until_stored(b, b.seal([b.heartbeat(now - 60 * S, "idle")]), 2)
        publish_until_stored(a, a.seal([a.state(now - 60 * S, "idle")]), 1)
        pub.publish(b.topic(topics.Kind.BIRTH), b.birth(now - 50 * S, acked=2))
        wait_for(lambda: query(dsn, "SELECT online FROM live_state WHERE instrument_id = %s",
                               (b.instrument,)) == [(True,)], 10, what="the victim online")
        before_b = _victim_state(dsn, b.agent)
        before_a = _victim_state(dsn, a.agent)

        # the records an attacker would like on B: B's next seq, chained correctly to B's last hash
        forged = TestAgent(b.agent, unit=b.unit, instrument=b.instrument, key=a.key, seq=b.seq, prev=b.prev,
                           mono=b.mono)
        rec3 = forged.state(now - 30 * S, "running", prev_state="idle")
        rogue = generate()
        attacks: dict[str, tuple[str, str, bytes]] = {
            # A's own key and agent id, in an envelope that consistently names B's unit and
            # instrument, on B's topic: signature valid, but A is registered for another instrument
            "a_key_on_b_instrument": (str(Reason.WRONG_TOPIC), b.topic(), env.envelope(
                key=a.key, agent=a.agent, unit=b.unit, instrument=b.instrument, boot=1, sent=now,
                records=[{**TestAgent(a.agent, unit=b.unit, instrument=b.instrument, key=a.key, seq=a.seq,
                                      prev=a.prev, mono=a.mono).heartbeat(now - 20 * S, "running")}])),
            # the envelope claims to be B (agent, unit, instrument), signed by A's key naming A's key id
            "a_key_claims_b": (str(Reason.UNKNOWN_KEY), b.topic(),
                               _sealed_as(b, a.key, key_id(a.key), [rec3], now)),
            # the envelope claims B and B's key id; the signature is by a key nobody enrolled
            "forged_b_key_id": (str(Reason.BAD_SIGNATURE), b.topic(),
                                _sealed_as(b, rogue, key_id(b.key), [rec3], now)),
            # a forged Will: "B died", signed by A, to take B offline on the live board
            "forged_death": (str(Reason.UNKNOWN_KEY), b.topic(topics.Kind.DEATH), env.seal(
                {"v": PROTOCOL_VERSION, "msg": "death", "agent": b.agent, "key": key_id(a.key), "unit": b.unit,
                 "instrument": b.instrument, "boot": b.boot, "conn": b.conn, "t": now, "clean": False}, a.key)),
            # B's own hour-old envelope, byte for byte, replayed by a third party
            "replay_b": (str(Reason.REPLAY), b.topic(), old_b),
        }
        for _, topic, payload in attacks.values():
            pub.publish(topic, payload)

        def reasons() -> list[str]:
            return sorted(r[0] for r in query(dsn, "SELECT reason FROM quarantine WHERE topic LIKE %s",
                                              (f"jishi/v1/ub-{tag}/%",)))

        # judged before the rotation below (which would turn B's old key id into `unknown_key`)
        first_want = sorted(r for r, _, _ in attacks.values())
        wait_for(lambda: reasons() == first_want, 20, what=f"quarantine rows {first_want}")

        # then B rotates its key: the new key is enrolled, the old one revoked (as server/web enrolment does)
        new_key = generate()
        query(dsn, "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s) RETURNING 1",
              (key_id(new_key), b.agent, public_to_b64(new_key)))
        query(dsn, "UPDATE agent_keys SET revoked_at = now() WHERE key_id = %s RETURNING 1", (key_id(b.key),))
        # whoever stole the old key keeps publishing with it: refused though the signature verifies
        stolen = TestAgent(b.agent, unit=b.unit, instrument=b.instrument, key=b.key, seq=b.seq, prev=b.prev,
                           mono=b.mono)
        attacks["revoked_key"] = (str(Reason.UNKNOWN_KEY), b.topic(),
                                  stolen.seal([stolen.state(now - 25 * S, "running", prev_state="idle")]))
        pub.publish(b.topic(), attacks["revoked_key"][2])

        want = sorted(r for r, _, _ in attacks.values())
        wait_for(lambda: reasons() == want, 20, what=f"quarantine rows {want}")

        # the genuine agent, now on its new key, is still accepted
        b.key = new_key
        publish_until_stored(b, b.seal([b.heartbeat(now - 10 * S, "idle")]), 3)

        rows = query(dsn, "SELECT reason, kind, agent_id, detail, payload_len FROM quarantine WHERE topic LIKE %s",
                     (f"jishi/v1/ub-{tag}/%",))
        assert any(r[0] == Reason.UNKNOWN_KEY and "is revoked" in r[3] for r in rows), rows
        assert any(r[0] == Reason.UNKNOWN_KEY and "is not a key of agent" in r[3] for r in rows), rows
        assert any(f"registered for {a.unit}/{a.instrument}" in r[3] for r in rows if r[0] == Reason.WRONG_TOPIC)
        assert {r[1] for r in rows} == {"rec", "death"}
        assert all(r[2] in (a.agent, b.agent) for r in rows), rows
        assert sorted(r[4] for r in rows) == sorted(len(p) for _, _, p in attacks.values())

        # verified tables: the victim's record 3 is the genuine one, not the forged "running"
        after_b = _victim_state(dsn, b.agent)
        assert after_b[:1] != before_b[:1]  # progress moved by the genuine record only
        assert watermark(b.agent) == 3
        states = query(dsn, "SELECT DISTINCT state FROM usage_segments WHERE agent_id = %s", (b.agent,))
        assert states == [("idle",)], "no forged running time on the victim"
        assert _victim_state(dsn, a.agent) == before_a, "the attacker's own agent gained nothing"
        assert query(dsn, "SELECT online FROM live_state WHERE instrument_id = %s", (b.instrument,)) == [(True,)]
        n = query(dsn, "SELECT count(*) FROM records r JOIN agent_progress p USING (agent_no)"
                  " WHERE p.agent_id = %s", (b.agent,))
        assert n == [(3,)]
    finally:
        pub.close()
        ing.stop()
