"""Gateway mode end to end: ONE agent process watches eight instruments whose power meters share one
RS-485 bus (eight Modbus addresses on one pseudo-terminal), through the real Mosquitto and the real
ingest into the database. Each instrument must keep its own key, chain, spool and MQTT identity,
and its recorded states must follow its own meter only."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from server.ingest.service import Ingest
from tests.agent.helpers import AgentProc, cli, wait_until
from tests.agent.rs485_bus import Rs485Bus
from tests.server.helpers import query, settings_for, wait_for

N = 8
IDLE_W, RUNNING_W = 40.0, 900.0

pytestmark = pytest.mark.slow


def gateway_toml(tag: str, bus: Rs485Bus, broker: Any) -> str:
    text = f"""
[gateway]
id = "gw-{tag}"

[agent]
unit = "u-{tag}"
data_dir = "data"
sample_period_s = 0.1
heartbeat_s = 0.5

[mqtt]
host = "{broker.host}"
port = {broker.port}
backoff_min_s = 0.2
backoff_max_s = 1.0
connect_timeout_s = 3

[state]
confirm_s = 0
post_run_s = 0
"""
    for addr in range(1, N + 1):
        text += f"""
[[instrument]]
id = "gw-{tag}-{addr}"
instrument = "i-{tag}-{addr}"
[instrument.mqtt]
username = "user-{tag}-{addr}"
[instrument.state]
running = "power"
[instrument.detectors.power]
kind = "power_meter"
port = "{bus.port}"
slave = {addr}
timeout_s = 0.2
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""
    return text


def spool(path: Path) -> dict[str, str]:
    """The spool's meta table, read-only; empty while the agent is still creating it."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {k: str(v) for k, v in db.execute("SELECT key, value FROM meta")}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def test_gateway_eight_meters_on_one_bus(pg_dsn: str, mqtt_broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    ids = [f"gw-{tag}-{a}" for a in range(1, N + 1)]
    with Rs485Bus(list(range(1, N + 1)), IDLE_W) as bus:
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(gateway_toml(tag, bus, mqtt_broker))
        out = cli("keygen", "--config", str(cfg))  # every instrument's key, each in its own data dir
        assert out.returncode == 0, out.stderr
        keys = {(tmp_path / "data" / i / "agent.key").read_text() for i in ids}
        assert len(keys) == N
        out = cli("enroll", "--config", str(cfg))
        assert out.returncode == 0, out.stderr
        docs = json.loads(out.stdout)
        assert [d["agent"] for d in docs] == ids and len({d["key_id"] for d in docs}) == N

        query(pg_dsn, "INSERT INTO organisations (id, name) VALUES (%s, 'Gateway Univ') RETURNING 1", (f"o-{tag}",))
        query(pg_dsn, "INSERT INTO units (id, org_id, name) VALUES (%s, %s, 'u') RETURNING 1", (f"u-{tag}", f"o-{tag}"))
        for d in docs:
            query(pg_dsn, "INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i') RETURNING 1",
                  (d["instrument"], d["unit"]))
            query(pg_dsn, "INSERT INTO agents (id, instrument_id) VALUES (%s, %s) RETURNING 1",
                  (d["agent"], d["instrument"]))
            query(pg_dsn, "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s) RETURNING 1",
                  (d["key_id"], d["agent"], d["public_key"]))
        s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}")
        s.mqtt.share_group = f"g-{tag}"
        ing = Ingest(s).start()
        gateway = AgentProc(cfg)
        spools = {i: tmp_path / "data" / i / "spool.db" for i in ids}

        def hold(polls: int) -> None:  # each meter asked `polls` more times: the state held, heartbeats went
            start = dict(bus.requests)
            wait_until(lambda: all(bus.requests[a] >= start[a] + polls for a in start), 30, f"{polls} polls each")

        def states(want: dict[str, str]) -> bool:
            return all(spool(p).get("last_state", "").startswith(want[i]) for i, p in spools.items())

        try:
            assert ing.wait_connected()
            gateway.start()
            wait_until(lambda: states(dict.fromkeys(ids, "idle")), 30, "every instrument idle")
            hold(5)
            running = {ids[a - 1] for a in range(1, N + 1, 2)}  # addresses 1, 3, 5, 7
            for a in range(1, N + 1, 2):
                bus.set(a, RUNNING_W)
            wait_until(lambda: states({i: "running" if i in running else "idle" for i in ids}), 30,
                       "odd addresses running, even ones still idle")
            hold(5)
            for a in range(1, N + 1, 2):
                bus.set(a, IDLE_W)
            wait_until(lambda: states(dict.fromkeys(ids, "idle")), 30, "every instrument idle again")
            hold(5)
            assert gateway.stop() == 0
            last = {i: int(spool(p)["next_seq"]) - 1 for i, p in spools.items()}
            out = cli("status", "--json", "--config", str(cfg))  # every instrument, from its own spool
            assert out.returncode == 0, out.stderr
            assert {d["agent"]: d["next_seq"] - 1 for d in json.loads(out.stdout)} == last

            def stored() -> bool:
                rows = dict(query(pg_dsn, "SELECT agent_id, watermark FROM agent_progress WHERE agent_id = ANY(%s)",
                                  (ids,)))
                return all(rows.get(i) == last[i] for i in ids)

            wait_for(stored, 60, what="every instrument's records stored")
        finally:
            if gateway.alive():
                gateway.kill()
            ing.stop()
        assert all(bus.requests[a] >= 18 for a in range(1, N + 1)), bus.requests

    # every record of every instrument stored once, each chain verified with its own key: nothing refused
    for i in ids:
        n = query(pg_dsn, "SELECT count(*), count(DISTINCT seq) FROM records r JOIN agent_progress p "
                  "USING (agent_no) WHERE p.agent_id = %s", (i,))
        assert n == [(last[i], last[i])], i
    assert query(pg_dsn, "SELECT agent_id, reason FROM quarantine WHERE agent_id = ANY(%s)", (ids,)) == []
    # each instrument's state followed its own meter, not its neighbours' on the bus
    wait_for(lambda: query(pg_dsn, "SELECT count(DISTINCT agent_id) FROM usage_segments WHERE agent_id = ANY(%s)",
                           (ids,))[0][0] == N, 30, what="segments derived for every instrument")
    segs = query(pg_dsn, "SELECT agent_id, state FROM usage_segments WHERE agent_id = ANY(%s)", (ids,))
    ran = {a for a, st in segs if st == "running"}
    assert ran == running, segs
    # its own MQTT identity: client id = agent id, its own username (the broker's log says who connected)
    log = Path(mqtt_broker.logfile).read_text(errors="replace")
    for a, i in enumerate(ids, start=1):
        assert re.search(rf" as {re.escape(i)} \(.*u'user-{tag}-{a}'\)", log), f"{i} did not connect as itself"
    text = gateway.text()
    assert "Traceback" not in text
    assert all(f"[{i}]" in text for i in ids)  # one log, each line says which instrument spoke


def test_gateway_kill9_keeps_every_chain_whole(mqtt_broker: Any, tmp_path: Path) -> None:
    """kill -9 of the one gateway process, twice: each instrument's chain continues from its own
    spool, nothing lost or reused, each signed with its own key, each with its own boots."""
    from tests.agent.helpers import Collector

    tag = uuid.uuid4().hex[:6]
    ids = [f"gk-{tag}-{a}" for a in (1, 2, 3)]
    with Rs485Bus([1, 2, 3], IDLE_W) as bus:
        text = gateway_toml(tag, bus, mqtt_broker).split("[[instrument]]")[0]
        text = text.replace(f'unit = "u-{tag}"\n', "")
        for a, i in enumerate(ids, start=1):
            text += f"""
[[instrument]]
id = "{i}"
unit = "u-{i}"
instrument = "i-{i}"
[instrument.state]
running = "power"
[instrument.detectors.power]
kind = "power_meter"
port = "{bus.port}"
slave = {a}
timeout_s = 0.2
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(text)
        assert cli("keygen", "--config", str(cfg)).returncode == 0
        collectors = [Collector(mqtt_broker, tmp_path / "data" / i, i, persistent=True) for i in ids]
        gateway = AgentProc(cfg)
        try:
            def polls(n: int) -> None:
                start = dict(bus.requests)
                wait_until(lambda: all(bus.requests[a] >= start[a] + n for a in start), 30, f"{n} polls each")

            for round_ in range(3):
                gateway.start()
                polls(8)
                bus.set(2, RUNNING_W if round_ % 2 == 0 else IDLE_W)  # only instrument 2 changes
                polls(8)
                if round_ < 2:
                    gateway.kill()
                else:
                    assert gateway.stop() == 0
            last = {i: int(spool(tmp_path / "data" / i / "spool.db")["next_seq"]) - 1 for i in ids}
            for c in collectors:
                c.wait_for(lambda c: max(c.records or [0]) >= last[c.agent_id], 30, what=f"{c.agent_id} all records")
                recs = c.check_complete_chain()
                assert {r["boot"] for r in recs} == {1, 2, 3}, c.agent_id
                assert not c.errors, c.errors
            states = {c.agent_id: {r["state"] for r in c.by_type("state")} for c in collectors}
            assert "running" in states[ids[1]] and "running" not in states[ids[0]] | states[ids[2]], states
        finally:
            if gateway.alive():
                gateway.kill()
            for c in collectors:
                c.close()
