"""The database becomes unreachable (every connection cut, new ones refused) for a while under a
running `jishi-server ingest` process and a real agent: ingest stays up, backs off (a WARNING
naming the reason at each retry, delays growing to `retry_max_s`, no busy loop), acknowledges
nothing meanwhile (so the agent keeps every record in its spool, and the broker holds the
messages in ingest's persistent session); when the database is back everything is stored exactly
once and the machine-hours are those of the known schedule.

The short version of `bench/fault_outages.py db` (10 minutes by default). The duration does not
change the behaviour: ingest's retry delay doubles from `retry_initial_s` to `retry_max_s`
(30 s by default) and stays there, here 0.2 s to 2 s so the cap is reached after 4 retries and
most of the outage is spent at it, as in a 10-minute outage; the messages wait at the broker
(QoS 1, unacknowledged by ingest: up to `receive_maximum` in flight, the rest queued, 100,000 in
the test broker's `max_queued_messages`) and in the agent's spool, which only grows.

The database sits behind a TCP proxy (sim.devstack.TcpProxy) so that only this test's ingest
loses it: the session's shared PostgreSQL stays up for the test's own checks.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from sim.devstack import PostgresServer, TcpProxy
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, write_config
from tests.faults.common import (
    EDGE_ALLOWANCE_S,
    HEARTBEAT,
    PERIOD,
    Schedule,
    enrol,
    meter_toml,
    not_watching,
    outcome,
    progress,
    spool_meta,
    wait_until,
)
from tests.server.procs import IngestProc
from tests.server.procs import write_config as ingest_config

OUTAGE_S = 12.0
RETRY_MAX_S = 2.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_database_unreachable_ingest_backs_off_and_nothing_is_lost(pg_server: PostgresServer, pg_dsn: str,
                                                                  mqtt_broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    agent_id = f"db-{tag}"
    proxy = TcpProxy(pg_server.port).start()
    proxied = pg_dsn.replace(f":{pg_server.port}/", f":{proxy.port}/")
    assert proxied != pg_dsn
    icfg = ingest_config(tmp_path / "ingest.toml", proxied, mqtt_broker, f"ing-{tag}", f"g-{tag}",
                         retry_initial_s=0.2, retry_max_s=RETRY_MAX_S)
    ingest = IngestProc(icfg)
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=mqtt_broker, detectors=meter_toml(meter),
                           running="power", period=PERIOD, heartbeat=HEARTBEAT)
        enrol(pg_dsn, tmp_path, agent_id)
        agent = AgentProc(cfg)
        schedule = Schedule(meter)
        try:
            ingest.start()
            wait_until(lambda: "subscribed to" in ingest.output(), 20, "ingest subscribed on the broker")
            schedule.start()
            agent.start()
            wait_until(lambda: progress(pg_dsn, agent_id)[0] >= 10, 30, "records flowing")
            log_from = len(ingest.output())
            proxy.cut()
            cut_at = spool_meta(cfg)
            assert ingest.proc is not None
            cpu0, t0 = cpu_seconds(ingest.proc.pid), time.monotonic()
            time.sleep(OUTAGE_S)
            cpu = cpu_seconds(ingest.proc.pid) - cpu0
            elapsed = time.monotonic() - t0
            assert ingest.alive, ingest.output()[-3000:]
            during = spool_meta(cfg)
            assert during["next_seq"] > cut_at["next_seq"] + 20, "the agent kept recording"
            assert during["acked"] <= progress(pg_dsn, agent_id)[0] < during["next_seq"] - 20, \
                "nothing can be acknowledged (nor stored) while the database is unreachable"
            proxy.restore()
            wait_until(lambda: progress(pg_dsn, agent_id)[0] >= during["next_seq"] - 1, 60,
                       "the outage's records stored")
            time.sleep(1.5)
            schedule.stop()
            assert agent.stop() == 0
            last = spool_meta(cfg)["next_seq"] - 1
            wait_until(lambda: progress(pg_dsn, agent_id) == (last, last), 30, f"all {last} records derived")
            wait_until(lambda: spool_meta(cfg)["acked"] >= last - 4, 10, "the agent heard the acks")
            log = ingest.output()[log_from:]
        finally:
            schedule.stop()
            if agent.alive():
                agent.kill()
            ingest.stop()
            proxy.stop()
    # backed off, saying why: delays grow to the cap, a WARNING per retry, not a busy loop
    delays = [float(d) for d in re.findall(r"database unavailable \(.+?\); retrying in ([0-9.]+) s", log)]
    assert len(delays) >= 3, log[-3000:]
    assert delays[:4] == sorted(delays[:4]) and max(delays) == RETRY_MAX_S, delays
    assert len(delays) <= 4 + elapsed / RETRY_MAX_S * 2 + 4, f"{len(delays)} retries in {elapsed:.0f} s"
    assert cpu < 0.25 * elapsed, f"ingest used {cpu:.1f} s of CPU in {elapsed:.0f} s of outage"
    assert "Traceback" not in ingest.output() and "Traceback" not in agent.text()
    got = outcome(pg_dsn, agent_id)
    assert got["records"] == got["distinct"] == last, "records lost or stored twice"
    assert got["gaps"] == [] and got["quarantine"] == []
    t_first, t_last = got["coverage"][0][2], got["coverage"][-1][3]
    assert not_watching(got["coverage"], t_first, t_last) == []
    truth = schedule.running_s(t_first, t_last)
    allowance = EDGE_ALLOWANCE_S * schedule.switches(t_first, t_last) + 0.5
    assert abs(got["running_s"] - truth) <= allowance, (got["running_s"], truth)
    print(f"database unreachable {elapsed:.0f} s: {len(delays)} retries (delays {delays[:6]}...), ingest CPU "
          f"{cpu:.2f} s; {last} records stored once; running {got['running_s']:.1f} s vs {truth:.1f} s true")
