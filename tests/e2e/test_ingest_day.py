"""A scripted day of four instruments through the real broker into two ingest workers.

Duplicates, reordering across the two workers (shared subscription), a gap filled by re-send on
the server's request, a gap never filled, a death without a clean stop and a reboot: the stored
intervals, sessions, coverage and hours must be exactly what the script implies, to the second.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg

from protocols import topics
from server.db.queries import hours_by_instrument
from server.ingest.service import Ingest
from tests.server.helpers import Publisher, TestAgent, map_identity, query, register, settings_for, wait_for

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
D0 = int(DAY.timestamp() * 1000)


def at(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return D0 + (int(h) * 3600 + int(m) * 60) * 1000


def hb_times(start: str, end: str) -> list[int]:
    return list(range(at(start), at(end) + 1, 300_000))


def play(agent: TestAgent, events: list[tuple[int, int, str, dict[str, Any]]]) -> None:
    """Make records from (t, order, kind, args) sorted by time then order; heartbeats carry the
    state in force."""
    state = "unknown"
    for t, _, kind, kw in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == "state":
            agent.state(t, kw["state"], state)
            state = kw["state"]
        elif kind == "heartbeat":
            agent.heartbeat(t, state)
        elif kind == "session_start":
            agent.session_start(t, kw["session"], kw["user"], kw.get("method", "os"))
        elif kind == "session_end":
            agent.session_end(t, kw["session"], kw.get("reason", "checkout"))
        elif kind == "lifecycle":
            agent.lifecycle(t, kw["event"])


def envelopes(agent: TestAgent, records: list[dict[str, Any]], rng: random.Random) -> list[tuple[int, bytes]]:
    """(first seq, envelope) in random sizes 1..5."""
    out, i = [], 0
    while i < len(records):
        n = rng.randint(1, 5)
        out.append((records[i]["seq"], agent.seal(records[i:i + n])))
        i += n
    return out


def shuffled_with_dups(items: list[bytes], rng: random.Random) -> list[bytes]:
    """Local reordering (windows of 8) and ~15 % duplicates."""
    out = []
    for k in range(0, len(items), 8):
        window = items[k:k + 8]
        window += [w for w in window if rng.random() < 0.15]
        rng.shuffle(window)
        out += window
    return out


def test_scripted_day(pg_dsn: str, mqtt_broker: Any) -> None:
    rng = random.Random(4)
    tag = uuid.uuid4().hex[:6]
    dsn = pg_dsn
    a, b, c, d = (TestAgent(f"{x}-{tag}", unit=f"u-{tag}") for x in "abcd")
    for ag in (a, b, c, d):
        register(dsn, ag, org=f"org-{tag}", org_name="Unit University")
    map_identity(dsn, a.unit, "os", "alice", f"alice-{tag}", f"org-{tag}", "Unit University")
    map_identity(dsn, a.unit, "checkin", "bob", f"bob-{tag}", f"ext-{tag}", "Steppe Mining Ltd")

    # a: a normal day; alice internal 09:10-11:40 running, bob external 14:05-17:05 running
    play(a, [(at("08:00"), 0, "lifecycle", {"event": "boot"}), (at("08:00"), 1, "state", {"state": "idle"}),
             (at("09:00"), 1, "session_start", {"session": "s-a1", "user": "alice"}),
             (at("09:10"), 1, "state", {"state": "running"}), (at("11:40"), 1, "state", {"state": "idle"}),
             (at("12:00"), 1, "session_end", {"session": "s-a1"}),
             (at("14:00"), 1, "session_start", {"session": "s-a2", "user": "bob", "method": "checkin"}),
             (at("14:05"), 1, "state", {"state": "running"}), (at("17:05"), 1, "state", {"state": "idle"}),
             (at("17:30"), 1, "session_end", {"session": "s-a2"}),
             (at("20:00"), 9, "lifecycle", {"event": "stop"})]
         + [(t, 5, "heartbeat", {}) for t in hb_times("08:05", "20:00")])
    # b: running 06:00-10:00, heartbeats to 12:00; one envelope is held back until the server asks
    play(b, [(at("06:00"), 1, "state", {"state": "running"}), (at("10:00"), 1, "state", {"state": "idle"})]
         + [(t, 5, "heartbeat", {}) for t in hb_times("06:05", "12:00")])
    # c: running 06:00-10:00, heartbeats to 11:00; the heartbeats 08:05..08:30 never arrive
    play(c, [(at("06:00"), 1, "state", {"state": "running"}), (at("10:00"), 1, "state", {"state": "idle"})]
         + [(t, 5, "heartbeat", {}) for t in hb_times("06:05", "11:00")])
    # d: running from 10:00 with carol (unmapped); dies at 12:00 without a stop; reboots 12:30
    play(d, [(at("09:00"), 1, "state", {"state": "idle"}), (at("10:00"), 1, "state", {"state": "running"}),
             (at("10:00"), 2, "session_start", {"session": "s-d1", "user": "carol"})]
         + [(t, 5, "heartbeat", {}) for t in hb_times("09:05", "12:00")])
    d_death = d.death(at("09:00"), clean=False)
    d.reboot()
    play(d, [(at("12:30"), 0, "lifecycle", {"event": "boot"}), (at("12:31"), 1, "state", {"state": "running"}),
             (at("14:00"), 1, "state", {"state": "idle"})]
         + [(t, 5, "heartbeat", {}) for t in hb_times("12:35", "15:00")])

    b_env = envelopes(b, b.made, rng)
    held = next(e for e in b_env if b.made[e[0] - 1]["t"] >= at("08:00"))
    held_first = held[0]
    held_last = held_first + len(orjson.loads(held[1])["records"]) - 1
    c_lost = [r["seq"] for r in c.made if at("08:05") <= r["t"] <= at("08:30")]
    c_sent = [r for r in c.made if r["seq"] not in c_lost]
    c_env = envelopes(c, [r for r in c_sent if r["seq"] < c_lost[0]], rng) + \
        envelopes(c, [r for r in c_sent if r["seq"] > c_lost[-1]], rng)
    d_first_boot = [r for r in d.made if r["boot"] == 1]
    d_env1 = envelopes(d, d_first_boot, rng)
    d_env2 = envelopes(d, [r for r in d.made if r["boot"] == 2], rng)

    s1 = settings_for(dsn, mqtt_broker, client_id=f"ing1-{tag}", resend_after_s=1.0, gap_give_up_after_s=30.0)
    s1.mqtt.share_group = f"g-{tag}"
    s2 = s1.model_copy(deep=True)
    s2.mqtt.client_id = f"ing2-{tag}"
    w1, w2 = Ingest(s1).start(), Ingest(s2).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    try:
        assert w1.wait_connected() and w2.wait_connected()  # subscriptions in place
        items: list[tuple[str, bytes]] = []
        items += [(a.topic(), p) for p in shuffled_with_dups([e for _, e in envelopes(a, a.made, rng)], rng)]
        items += [(b.topic(), p) for p in shuffled_with_dups([e for f, e in b_env if f != held_first], rng)]
        items += [(c.topic(), p) for p in shuffled_with_dups([e for _, e in c_env], rng)]
        items += [(d.topic(), p) for p in shuffled_with_dups([e for _, e in d_env1], rng)]
        items.append((d.topic(topics.Kind.DEATH), d_death))
        items += [(d.topic(), p) for p in shuffled_with_dups([e for _, e in d_env2], rng)]
        # a re-batched re-send of a's first records (overlapping what was sent before)
        items.append((a.topic(), a.seal(a.made[:12])))
        pub.publish_many(items)

        done_cmds: set[bytes] = set()

        def answered() -> bool:
            """Answer b's resend commands as the agent would; done when the held range was asked for."""
            for top, payload in list(pub.received):
                if top == b.topic(topics.Kind.CMD) and payload not in done_cmds:
                    done_cmds.add(payload)
                    cmd = orjson.loads(payload)
                    if cmd["cmd"] == "resend" and cmd["agent"] == b.agent:
                        pub.publish(b.topic(), b.seal(b.made[cmd["first"] - 1:cmd["last"]]))
                        # the hole is the held envelope, or more if a neighbour was still in flight
                        if cmd["first"] <= held_first and cmd["last"] >= held_last:
                            return True
            return False

        wait_for(answered, 20, what="a resend command for b's held envelope")

        # c's hole is never filled: shorten the wait by ageing it (as if 30 s had passed)
        wait_for(lambda: query(dsn, "SELECT resend_attempts FROM agent_progress WHERE agent_id = %s",
                               (c.agent,))[0][0] >= 2, 20, what="two resend requests for c")
        query(dsn, "UPDATE agent_progress SET hole_since = hole_since - interval '1 minute' WHERE agent_id = %s"
              " RETURNING 1", (c.agent,))
        last = {a.agent: a.seq, b.agent: b.seq, c.agent: c.seq, d.agent: d.seq}

        def done() -> bool:
            rows = query(dsn, "SELECT agent_id, watermark, derived_seq FROM agent_progress WHERE agent_id = ANY(%s)",
                         (list(last),))
            return len(rows) == 4 and all(w == last[aid] and dv == w for aid, w, dv in rows)

        wait_for(done, 30, what="all watermarks at the last seq and derived")
        # acks: retained, the last one says the last seq
        wait_for(lambda: any(t == a.topic(topics.Kind.ACK) and orjson.loads(p)["acked"] == a.seq
                             for t, p in list(pub.received)), 10, what="a's final ack")
        # both workers took part (the broker spread the messages over the shared subscription)
        for w in (w1, w2):
            assert (w.metrics.registry.get_sample_value("jishi_ingest_records_stored_total") or 0) > 0
    finally:
        pub.close()
        w1.stop()
        w2.stop()

    # stored once
    dup = query(dsn, "SELECT count(*) - count(DISTINCT (agent_no, seq)) FROM records")[0][0]
    assert dup == 0
    n = query(dsn, "SELECT p.agent_id, count(*) FROM records r JOIN agent_progress p USING (agent_no)"
               " WHERE p.agent_id = ANY(%s) GROUP BY 1", ([a.agent, b.agent, c.agent, d.agent],))
    assert dict(n) == {a.agent: a.seq, b.agent: b.seq, c.agent: c.seq - len(c_lost), d.agent: d.seq}
    assert query(dsn, "SELECT first_seq, last_seq, kind FROM gaps g JOIN agent_progress p USING (agent_no)"
                 " WHERE p.agent_id = %s", (c.agent,)) == [(c_lost[0], c_lost[-1], "lost")]

    def cov(ag: TestAgent) -> list[tuple[str, str, str, str]]:
        rows = query(dsn, "SELECT start_at, end_at, status, reason FROM coverage WHERE agent_id = %s ORDER BY 1",
                     (ag.agent,))
        return [(f"{x:%H:%M}", f"{y:%H:%M}", s, r) for x, y, s, r in rows]

    assert cov(a) == [("08:00", "20:00", "watching", "")]
    assert cov(b) == [("06:00", "12:00", "watching", "")]
    assert cov(c) == [("06:00", "08:00", "watching", ""), ("08:00", "08:35", "gap", "records_lost"),
                      ("08:35", "11:00", "watching", "")]
    assert cov(d) == [("09:00", "12:00", "watching", ""), ("12:00", "12:30", "offline", "agent_restart"),
                      ("12:30", "15:00", "watching", "")]

    sessions = query(dsn, "SELECT agent_id, session_id, identifier, start_at, end_at, end_reason FROM user_sessions"
                     " WHERE agent_id = ANY(%s) ORDER BY start_at", ([a.agent, d.agent],))
    assert [(s[1], s[2], f"{s[3]:%H:%M}", f"{s[4]:%H:%M}", s[5]) for s in sessions] == [
        ("s-a1", "alice", "09:00", "12:00", "checkout"), ("s-d1", "carol", "10:00", "12:00", "agent_restart"),
        ("s-a2", "bob", "14:00", "17:30", "checkout")]

    with psycopg.connect(dsn) as conn:
        hours = hours_by_instrument(conn, DAY, DAY + timedelta(days=1),
                                    [x.instrument for x in (a, b, c, d)])
    h = {k[:1]: v for k, v in ((ag.agent, hours[ag.instrument]) for ag in (a, b, c, d))}
    assert (h["a"].running_s, h["a"].running_internal_s, h["a"].running_external_s, h["a"].watched_s) == (
        19800.0, 9000.0, 10800.0, 43200.0)
    assert (h["b"].running_s, h["b"].watched_s, h["b"].running_unwatched_s) == (14400.0, 21600.0, 0.0)
    assert (h["c"].running_s, h["c"].running_unwatched_s, h["c"].watched_s) == (12300.0, 2100.0, 15900.0)
    assert (h["d"].running_s, h["d"].running_unattributed_s, h["d"].watched_s) == (12540.0, 12540.0, 19800.0)
    assert all(v.running_live_s == 0 and v.running_spool_s == v.running_s for v in h.values())
    live = {r[0]: r[1:] for r in query(
        dsn, "SELECT agent_id, state, online, last_seq FROM live_state WHERE agent_id = ANY(%s)",
        ([a.agent, d.agent],))}
    assert live[a.agent] == ("idle", True, a.seq)
    assert live[d.agent][0] == "idle" and live[d.agent][2] == d.seq
